//! Who may see the dashboard, and the CSRF token of every form.
//!
//! - `AIBRIDGE_AUTH=tokens`: `/ui/login` takes an admin gateway token (checked as the operator
//!   API checks one) and starts a session: 256 random bits in the cookie `aibridge_session`
//!   (`HttpOnly; SameSite=Strict; Path=/ui`, `Secure` when the request came over HTTPS through
//!   a proxy that says so). Only the session id's SHA-256 is kept, in this process's memory,
//!   with the hash of the token that opened it; a session ends after 12 hours, at logout, or
//!   as soon as its token is revoked or loses its admin right (checked on every page). A
//!   request without a live session is sent to `/ui/login` (303).
//! - `AIBRIDGE_AUTH=none`: no login. The gateway's same-origin rule (`ingress/mod.rs`) already
//!   refuses requests a browser sends from another origin, and each browser gets a random
//!   `aibridge_csrf` cookie (the same attributes) that its forms' tokens are bound to.
//!
//! A form's CSRF token is `HMAC-SHA256(process key, purpose ‖ binding)`, hex: the binding is
//! the session's hash, or the `aibridge_csrf` cookie for the login form and in `none` mode. It
//! is compared in constant time; a POST without the right one gets 403. The process key is
//! random at start, so tokens, like sessions, belong to one process: behind a load balancer
//! with several replicas the dashboard needs sticky sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use maud::html;
use sha2::{Digest, Sha256};

use super::Ui;
use super::layout;
use crate::config::AuthMode;
use crate::error::GatewayError;
use crate::intake::auth::token_hash;

pub(super) const SESSION_COOKIE: &str = "aibridge_session";
pub(super) const CSRF_COOKIE: &str = "aibridge_csrf";
/// The form field of the CSRF token.
pub(super) const CSRF_FIELD: &str = "csrf";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Live sessions are bounded (each needs an admin token, so this is only a backstop).
const MAX_SESSIONS: usize = 10_000;
/// The dashboard's forms are a token and a CSRF field.
const MAX_FORM_BYTES: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// The dashboard's sessions and the key of its CSRF tokens.
#[derive(Debug)]
pub(super) struct Sessions {
    key: [u8; 32],
    /// By the SHA-256 of the session id.
    live: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    /// The hash of the admin token that opened it (as the database stores tokens).
    token_hash: String,
    expires: Instant,
}

/// What a page knows of its viewer: put in the request by [`require_access`].
#[derive(Debug, Clone)]
pub(super) struct Access {
    /// The CSRF token for the page's forms.
    pub csrf: String,
    /// The user whose admin token opened the session; `None` with `AIBRIDGE_AUTH=none`.
    pub user: Option<String>,
}

/// What a CSRF token is bound to.
enum Binding<'a> {
    Session(&'a [u8; 32]),
    /// The browser's `aibridge_csrf` cookie: the login form, and every form in `none` mode.
    Browser(&'a str),
}

impl Sessions {
    pub(super) fn new() -> Self {
        let mut key = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            // Not expected on any supported system; UUIDs come from the thread's generator.
            tracing::error!(error = %e, "no randomness from the system for the dashboard's key");
            key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        Self {
            key,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, binding: &Binding<'_>) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        match binding {
            Binding::Session(hash) => {
                mac.update(b"session\0");
                mac.update(hash.as_slice());
            }
            Binding::Browser(cookie) => {
                mac.update(b"browser\0");
                mac.update(cookie.as_bytes());
            }
        }
        mac
    }

    fn csrf(&self, binding: &Binding<'_>) -> String {
        hex(&self.mac(binding).finalize().into_bytes())
    }

    /// Constant time (`verify_slice`).
    fn csrf_ok(&self, binding: &Binding<'_>, presented: Option<&str>) -> bool {
        presented
            .and_then(unhex)
            .is_some_and(|bytes| self.mac(binding).verify_slice(&bytes).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session; its id (for the cookie) is returned, only its hash is kept.
    fn open(&self, user: String, token_hash: String) -> Result<String, getrandom::Error> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id)?;
        let id = hex(&id);
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(hash, _)| *hash)
        {
            live.remove(&oldest);
        }
        live.insert(
            sha256(&id),
            Session {
                user,
                token_hash,
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(id)
    }

    fn close(&self, hash: &[u8; 32]) {
        self.lock().remove(hash);
    }
}

impl Ui {
    /// The live session the request's cookie names: (its hash, its user).
    async fn session(&self, headers: &HeaderMap) -> Option<([u8; 32], String)> {
        let hash = sha256(cookie(headers, SESSION_COOKIE)?);
        let session = {
            let mut live = self.sessions.lock();
            match live.get(&hash) {
                Some(session) if session.expires > Instant::now() => session.clone(),
                Some(_) => {
                    live.remove(&hash);
                    return None;
                }
                None => return None,
            }
        };
        // The token behind it must still be a live admin token.
        let found = self
            .app
            .recorder
            .store()
            .token_by_hash(&session.token_hash, crate::time::now_millis())
            .await;
        match found {
            Ok(Some(token)) if token.admin => {}
            Ok(_) => {
                tracing::info!(user = %session.user, "dashboard session ended: its token is revoked or no longer an admin's");
                self.sessions.close(&hash);
                return None;
            }
            // The database is down: the session was checked at login and has not expired, and
            // the health page is what the operator needs now.
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-check a dashboard session's token");
            }
        }
        Some((hash, session.user))
    }
}

/// Every page's gate (a route layer): a live session in `tokens` mode (else 303 to the login
/// page), the browser's CSRF cookie in `none` mode (set on the answer when new), and on a POST
/// the form's CSRF token (else 403). Puts the page's [`Access`] in the request.
pub(super) async fn require_access(
    State(ui): State<Arc<Ui>>,
    request: Request,
    next: Next,
) -> Response {
    let session;
    let browser;
    let (binding, user, set_cookie) = match ui.app.config.auth {
        AuthMode::Tokens => {
            let Some(found) = ui.session(request.headers()).await else {
                return to_login(request.headers());
            };
            session = found;
            (Binding::Session(&session.0), Some(session.1.clone()), None)
        }
        AuthMode::None => {
            let set_cookie;
            (browser, set_cookie) = match browser_binding(request.headers()) {
                Ok(found) => found,
                Err(response) => return *response,
            };
            (Binding::Browser(&browser), None, set_cookie)
        }
    };
    let access = Access {
        csrf: ui.sessions.csrf(&binding),
        user,
    };
    let mut request = if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let form = match read_form(body).await {
            Ok(form) => form,
            Err(response) => return response,
        };
        if !ui.sessions.csrf_ok(&binding, field(&form.1, CSRF_FIELD)) {
            tracing::warn!(path = %parts.uri.path(), "dashboard form refused: missing or wrong CSRF token");
            return layout::error_page(
                StatusCode::FORBIDDEN,
                Some(&access),
                "Forbidden",
                "The form's security token is missing or out of date. Reload the page and try again.",
            );
        }
        Request::from_parts(parts, Body::from(form.0))
    } else {
        request
    };
    request.extensions_mut().insert(access);
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /ui/login`: the form (tokens mode); straight to the keys with a live session or
/// without tokens.
pub(super) async fn login_form(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if ui.app.config.auth == AuthMode::None || ui.session(&headers).await.is_some() {
        return layout::see_other("/ui/keys");
    }
    login_page(&ui, &headers, StatusCode::OK, None)
}

/// The login page, with the browser's CSRF cookie (set now if it has none).
fn login_page(ui: &Ui, headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let (browser, set_cookie) = match browser_binding(headers) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let csrf = ui.sessions.csrf(&Binding::Browser(&browser));
    let body = html! {
        @if let Some(problem) = problem {
            p.problem role="alert" { (problem) }
        }
        form #login method="post" action="/ui/login" {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
            label for="token" { "Admin gateway token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Log in" }
        }
        p.hint { "An admin token, as made by " code { "aibridge token create --user NAME --admin" } ". The session lasts 12 hours." }
    };
    let mut response = layout::respond(
        status,
        layout::page("Log in", None, layout::Nav::None, false, body),
    );
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /ui/login`: an admin token starts a session.
pub(super) async fn login(State(ui): State<Arc<Ui>>, headers: HeaderMap, body: Bytes) -> Response {
    if ui.app.config.auth == AuthMode::None {
        return layout::see_other("/ui/keys");
    }
    if body.len() > MAX_FORM_BYTES {
        return layout::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "Too large",
            "That form is too large.",
        );
    }
    let form = parse_form(&body);
    let csrf_ok = browser_cookie(&headers).is_some_and(|browser| {
        ui.sessions
            .csrf_ok(&Binding::Browser(browser), field(&form, CSRF_FIELD))
    });
    if !csrf_ok {
        return login_page(
            &ui,
            &headers,
            StatusCode::FORBIDDEN,
            Some("The login form had expired. Enter the token again."),
        );
    }
    let token = field(&form, "token").unwrap_or("").trim();
    // Checked exactly as the operator API checks a token.
    let mut as_api = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        as_api.insert(header::AUTHORIZATION, value);
    }
    let identity = match ui.app.auth.identify_admin(&as_api).await {
        Ok(identity) => identity,
        Err(GatewayError::NotAdmin) => {
            return login_page(
                &ui,
                &headers,
                StatusCode::FORBIDDEN,
                Some("That token is not an admin token."),
            );
        }
        Err(GatewayError::TokenStore(e)) => {
            tracing::warn!(error = %e, "dashboard login: cannot check the token");
            return login_page(
                &ui,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("The token cannot be checked now (the database does not answer)."),
            );
        }
        Err(_) => {
            return login_page(
                &ui,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("That token is not valid."),
            );
        }
    };
    let id = match ui.sessions.open(identity.user.clone(), token_hash(token)) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a dashboard session");
            return layout::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Unavailable",
                "A session cannot be started now.",
            );
        }
    };
    tracing::info!(user = %identity.user, "dashboard session started");
    let mut response = layout::see_other("/ui/keys");
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        secure_attribute(&headers)
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `POST /ui/logout` (behind [`require_access`], so with the CSRF token): ends the session.
pub(super) async fn logout(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        ui.sessions.close(&sha256(id));
    }
    if ui.app.config.auth == AuthMode::None {
        return layout::see_other("/ui/keys");
    }
    let mut response = layout::see_other("/ui/login");
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie());
    response
}

/// Where a request without a live session goes; a stale cookie is dropped.
fn to_login(headers: &HeaderMap) -> Response {
    let mut response = layout::see_other("/ui/login");
    if cookie(headers, SESSION_COOKIE).is_some() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_session_cookie());
    }
    response
}

fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static("aibridge_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The browser's `aibridge_csrf` cookie, if it is one this gateway could have made.
fn browser_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, CSRF_COOKIE)
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh `aibridge_csrf` value and its `Set-Cookie`; `None` without randomness.
fn new_browser_cookie(headers: &HeaderMap) -> Option<(String, HeaderValue)> {
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no randomness for a dashboard cookie");
        return None;
    }
    let value = hex(&bytes);
    let cookie = format!(
        "{CSRF_COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict{}",
        secure_attribute(headers)
    );
    let cookie = HeaderValue::from_str(&cookie).ok()?;
    Some((value, cookie))
}

/// The browser's `aibridge_csrf` cookie, or a new one with its `Set-Cookie`.
fn browser_binding(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), Box<Response>> {
    if let Some(value) = browser_cookie(headers) {
        return Ok((value.to_string(), None));
    }
    match new_browser_cookie(headers) {
        Some((value, cookie)) => Ok((value, Some(cookie))),
        None => Err(Box::new(layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "Unavailable",
            "The dashboard cannot serve this page now.",
        ))),
    }
}

/// `; Secure` when a proxy in front says the request came over HTTPS (the gateway itself
/// serves plain HTTP). A forged header only keeps the cookie off plain HTTP.
fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let forwarded_proto = text("x-forwarded-proto").is_some_and(|v| {
        v.split(',')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    });
    let forwarded = text("forwarded").is_some_and(|v| {
        v.split([';', ','])
            .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
    });
    if forwarded_proto || forwarded {
        "; Secure"
    } else {
        ""
    }
}

/// A cookie's value by name, from every `Cookie` header.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
}

/// A form body, bounded; the bytes are kept for the handler.
async fn read_form(body: Body) -> Result<(Bytes, Vec<(String, String)>), Response> {
    match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => {
            let form = parse_form(&bytes);
            Ok((bytes, form))
        }
        Err(_) => Err(layout::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "Too large",
            "That form is too large.",
        )),
    }
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn csrf_tokens_are_bound_to_their_session_or_browser() {
        let sessions = Sessions::new();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let token = sessions.csrf(&Binding::Session(&a));
        assert!(sessions.csrf_ok(&Binding::Session(&a), Some(&token)));
        assert!(!sessions.csrf_ok(&Binding::Session(&b), Some(&token)));
        assert!(!sessions.csrf_ok(&Binding::Browser("x"), Some(&token)));
        assert!(!sessions.csrf_ok(&Binding::Session(&a), None));
        assert!(!sessions.csrf_ok(&Binding::Session(&a), Some("zz")));
        assert!(!sessions.csrf_ok(&Binding::Session(&a), Some(&token[..62])));
        let other_process = Sessions::new();
        assert!(!other_process.csrf_ok(&Binding::Session(&a), Some(&token)));
    }

    #[test]
    fn sessions_keep_only_the_hash_of_their_id() {
        let sessions = Sessions::new();
        let id = sessions.open("ops".into(), "h".into()).unwrap();
        assert_eq!(id.len(), 64);
        let live = sessions.lock();
        assert!(live.contains_key(&sha256(&id)));
        assert!(!format!("{live:?}").contains(&id));
    }

    #[test]
    fn cookies_and_the_secure_attribute() {
        let h = headers(&[("cookie", "a=1; aibridge_session=abc ;b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(secure_attribute(&h), "");
        let proxied = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(secure_attribute(&proxied), "; Secure");
        let forwarded = headers(&[("forwarded", "for=1.2.3.4;proto=https")]);
        assert_eq!(secure_attribute(&forwarded), "; Secure");
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0g"), None);
    }
}
