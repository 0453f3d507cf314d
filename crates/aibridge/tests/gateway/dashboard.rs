//! The operator dashboard (`/ui/`) on the real binary: each page's content against what a few
//! requests through the mock left (a cooling key, a disabled key, a request with two attempts,
//! an MCP tool call), access in `tokens` mode (login, sessions, logout, a revoked token), the
//! CSRF token of every form, `none` mode's same-origin rule, the embedded assets, and what no
//! page may ever show (a key, a token, a session id).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aibridge_mock::mcp::{McpMock, McpMockOptions};
use aibridge_mock::{MockUpstream, Reply};
use regex::Regex;
use serde_json::{Value, json};

use crate::common::*;

const A0: &str = "sk-ant-dashboard-key-000000000A0";
const A1: &str = "sk-ant-dashboard-key-000000000A1";
const O0: &str = "sk-proj-dashboard-key-00000000O0";
const O1: &str = "sk-proj-dashboard-key-00000000O1";

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// Every page a dashboard user can open (beyond one request's page).
const PAGES: [&str; 8] = [
    "/ui",
    "/ui/",
    "/ui/keys",
    "/ui/usage",
    "/ui/usage?by=model&since=30d",
    "/ui/requests",
    "/ui/requests?status=200",
    "/ui/health",
];

fn hint(key: &str) -> String {
    aibridge_keypool::mask_secret(key)
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// a browser without JavaScript

/// Keeps cookies as a browser does (for the dashboard's path), follows no redirect.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Sent with every request (e.g. `Origin`).
    headers: Vec<(String, String)>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(gw: &Gateway) -> Self {
        Browser {
            base: gw.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish());
        self.send(request).await
    }

    async fn send(&mut self, mut request: reqwest::RequestBuilder) -> Page {
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if !self.cookies.is_empty() {
            let cookie: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header("cookie", cookie.join("; "));
        }
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                attributes.contains("Path=/ui"),
                "every cookie is the dashboard's: {set}"
            );
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// An HTML page with `status` and every header a dashboard page must have.
    fn assert_html(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), "text/html; charset=utf-8");
        self.assert_security_headers();
        assert!(self.body.starts_with("<!DOCTYPE html>"), "{}", self.body);
        self
    }

    fn assert_security_headers(&self) {
        assert_eq!(self.header("content-security-policy"), CSP);
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        assert_eq!(self.header("referrer-policy"), "same-origin");
        assert_eq!(self.header("cache-control"), "no-store");
    }

    fn assert_redirect(&self, to: &str) {
        assert_eq!(self.status, 303, "{}", self.body);
        assert_eq!(self.header("location"), to);
        self.assert_security_headers();
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with(&format!("{name}=")))
    }

    /// No secret anywhere in the page: none of `secrets`, and nothing that looks like a key.
    fn assert_no_secrets(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(
                !self.body.contains(secret),
                "a secret ({}…) is on the page",
                &secret[..8]
            );
        }
        let key = Regex::new(r"sk-[A-Za-z0-9_-]{6,}").unwrap();
        assert!(
            !key.is_match(&self.body),
            "a key is on the page: {:?}",
            key.find(&self.body)
        );
        assert!(
            !self.body.contains("abk_"),
            "a gateway token is on the page"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// reading the HTML (maud's output: double-quoted attributes, no nesting of the same element
// within the parts read here)

/// Each `<tag …class="… class …"…>…</tag>`, whole.
fn elements<'a>(html: &'a str, tag: &str, class: &str) -> Vec<&'a str> {
    let open = Regex::new(&format!(
        r#"<{tag}\b[^>]*\bclass="(?:[^"]*\s)?{}(?:\s[^"]*)?"[^>]*>"#,
        regex::escape(class)
    ))
    .unwrap();
    open.find_iter(html)
        .map(|m| {
            let close = format!("</{tag}>");
            let end = html[m.start()..]
                .find(&close)
                .map_or(html.len(), |at| m.start() + at + close.len());
            &html[m.start()..end]
        })
        .collect()
}

/// The `<tag id="id">…</tag>`, whole (`None` when there is none).
fn by_id<'a>(html: &'a str, tag: &str, id: &str) -> Option<&'a str> {
    let open = Regex::new(&format!(
        r#"<{tag}\b[^>]*\bid="{}"[^>]*>"#,
        regex::escape(id)
    ))
    .unwrap();
    let m = open.find(html)?;
    let close = format!("</{tag}>");
    let end = html[m.start()..]
        .find(&close)
        .map_or(html.len(), |at| m.start() + at + close.len());
    Some(&html[m.start()..end])
}

fn must_have<'a>(html: &'a str, tag: &str, id: &str) -> &'a str {
    by_id(html, tag, id).unwrap_or_else(|| panic!("no <{tag} id=\"{id}\"> in\n{html}"))
}

/// An attribute of the fragment's first tag.
fn attr(fragment: &str, name: &str) -> Option<String> {
    let first_tag = &fragment[..fragment.find('>').unwrap_or(fragment.len())];
    Regex::new(&format!(r#"\s{}="([^"]*)""#, regex::escape(name)))
        .unwrap()
        .captures(first_tag)
        .map(|c| unescape(&c[1]))
}

/// The text of the first `<td class="… class …">` of a row.
fn cell(row: &str, class: &str) -> String {
    let td = elements(row, "td", class);
    let td = td
        .first()
        .unwrap_or_else(|| panic!("no td.{class} in {row}"));
    text(td)
}

/// Every cell's text, in order.
fn cells(row: &str) -> Vec<String> {
    Regex::new(r"(?s)<t[dh]\b[^>]*>(.*?)</t[dh]>")
        .unwrap()
        .captures_iter(row)
        .map(|c| text(&c[1]))
        .collect()
}

/// Text without tags, entities decoded.
fn text(fragment: &str) -> String {
    let stripped = Regex::new(r"<[^>]*>").unwrap().replace_all(fragment, "");
    unescape(stripped.trim())
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The CSRF token of the page's first form that has one.
fn csrf_of(html: &str) -> String {
    let re = Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#).unwrap();
    re.captures(html)
        .unwrap_or_else(|| panic!("no CSRF token in {html}"))[1]
        .to_string()
}

/// The `tr.key` of a provider's key.
fn key_row<'a>(rows: &[&'a str], provider: &str, index: usize) -> &'a str {
    rows.iter()
        .find(|row| {
            attr(row, "data-provider").as_deref() == Some(provider)
                && attr(row, "data-index") == Some(index.to_string())
        })
        .unwrap_or_else(|| panic!("no key {provider}/{index} in {rows:#?}"))
}

// ---------------------------------------------------------------------------------------------
// gateways

async fn start(mock: &MockUpstream, config: Option<&str>, env: &[(&str, &str)]) -> Gateway {
    let openai_base = format!("{}/v1", mock.url());
    let anthropic_keys = format!("{A0},{A1}");
    let openai_keys = format!("{O0},{O1}");
    let mut all = vec![
        ("AIBRIDGE_ANTHROPIC_KEYS", anthropic_keys.as_str()),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", &mock.url()),
        ("AIBRIDGE_OPENAI_KEYS", openai_keys.as_str()),
        ("AIBRIDGE_OPENAI_BASE_URL", openai_base.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<Vec<_>>();
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Gateway::start_with_config(config, &all).await
}

/// Creates a user and a token for them with the CLI; returns the token.
fn token_for(gw: &Gateway, user: &str, admin: bool) -> String {
    let (ok, _, err) = gw.cli(&["user", "create", user]);
    assert!(ok || err.contains("already exists"), "{err}");
    let mut args = vec!["token", "create", "--user", user];
    if admin {
        args.push("--admin");
    }
    let (ok, out, err) = gw.cli(&args);
    assert!(ok, "{err}");
    out.trim().to_string()
}

fn message(model: &str, prompt: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    })
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn dashboard_keys_page_shows_state_countdown_and_counts_and_reenables_with_csrf() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(A0, vec![Reply::status(429).header("retry-after", "120")]);
    // The request's 401, then the key's own check: the key is rejected, so disabled.
    mock.script(O0, vec![Reply::status(401), Reply::status(401)]);
    let gw = start(&mock, None, &[]).await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(TestApi::Chat.call(&gw, false).await.status, 200);

    let mut browser = Browser::new(&gw);
    let page = browser.get("/ui/keys").await;
    page.assert_html(200);
    page.assert_no_secrets(&[A0, A1, O0, O1]);
    for id in ["nav-keys", "nav-usage", "nav-requests", "nav-health"] {
        assert!(by_id(&page.body, "a", id).is_some(), "nav link {id}");
    }
    assert!(
        by_id(&page.body, "form", "logout").is_none(),
        "nothing to log out of without tokens"
    );
    let table = must_have(&page.body, "table", "keys");
    let rows = elements(table, "tr", "key");
    assert_eq!(rows.len(), 4, "{table}");

    // The cooling key: its hint, a countdown from the 120 s the upstream asked.
    let a0 = key_row(&rows, "anthropic", 0);
    assert_eq!(attr(a0, "data-state").unwrap(), "cooling");
    assert_eq!(attr(a0, "data-hint").unwrap(), hint(A0));
    let countdown = elements(a0, "span", "countdown");
    assert_eq!(countdown.len(), 1, "{a0}");
    let until: i64 = attr(countdown[0], "data-until-ms")
        .unwrap()
        .parse()
        .unwrap();
    let left = until - now_ms();
    assert!(
        (100_000..=121_000).contains(&left),
        "until {until}: {left} ms left"
    );
    let seconds: i64 = text(countdown[0]).parse().unwrap();
    assert!((100..=120).contains(&seconds), "{seconds}");
    assert_eq!(cell(a0, "last-status"), "429");
    assert_eq!(cell(a0, "failovers"), "1 / 0 / 0");
    assert_eq!(cell(a0, "served"), "0");
    assert_eq!(elements(a0, "form", "reenable").len(), 1);
    assert_eq!(elements(a0, "button", "reenable").len(), 1);

    // The key that served the request after it.
    let a1 = key_row(&rows, "anthropic", 1);
    assert_eq!(attr(a1, "data-state").unwrap(), "valid");
    assert_eq!(cell(a1, "served"), "1");
    assert_eq!(cell(a1, "cooldown"), "—");
    assert!(
        elements(a1, "form", "reenable").is_empty(),
        "a valid key has no button"
    );

    // The disabled key, and why.
    let o0 = key_row(&rows, "openai", 0);
    assert_eq!(attr(o0, "data-state").unwrap(), "disabled");
    assert_eq!(attr(o0, "data-hint").unwrap(), hint(O0));
    assert_eq!(cell(o0, "reason"), "unauthorized");
    // Only a disabled key's button asks first (a cooling one comes back by itself anyway).
    let question = attr(elements(o0, "form", "reenable")[0], "data-confirm").unwrap();
    assert!(
        question.contains(&hint(O0)) && question.contains("unauthorized"),
        "{question}"
    );
    assert_eq!(
        attr(elements(a0, "form", "reenable")[0], "data-confirm"),
        None
    );
    assert_eq!(cell(o0, "failovers"), "0 / 1 / 0");
    assert_eq!(cell(key_row(&rows, "openai", 1), "served"), "1");
    let pools = must_have(&page.body, "table", "pools");
    assert_eq!(elements(pools, "tr", "pool").len(), 2);

    // Re-enabling takes the page's CSRF token, and only that.
    let csrf = csrf_of(&page.body);
    let form = elements(a0, "form", "reenable")[0];
    let action = attr(form, "action").unwrap();
    assert_eq!(action, "/ui/keys/anthropic/0/enable");
    assert_eq!(attr(form, "method").unwrap(), "post");
    browser.post(&action, &[]).await.assert_html(403);
    let wrong = "0".repeat(64);
    browser
        .post(&action, &[("csrf", &wrong)])
        .await
        .assert_html(403);
    // The same token from a browser without this one's cookie is worth nothing.
    Browser::new(&gw)
        .post(&action, &[("csrf", &csrf)])
        .await
        .assert_html(403);
    assert_eq!(gw.key_states("anthropic").await, ["cooling", "valid"]);
    browser
        .post(&action, &[("csrf", &csrf)])
        .await
        .assert_redirect("/ui/keys");
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
    browser
        .post("/ui/keys/openai/0/enable", &[("csrf", &csrf)])
        .await
        .assert_redirect("/ui/keys");
    assert_eq!(gw.key_states("openai").await, ["valid", "valid"]);
    for unknown in ["/ui/keys/anthropic/2/enable", "/ui/keys/nowhere/0/enable"] {
        browser
            .post(unknown, &[("csrf", &csrf)])
            .await
            .assert_html(404);
    }

    let page = browser.get("/ui/keys").await;
    page.assert_html(200);
    let rows = elements(&page.body, "tr", "key");
    let a0 = key_row(&rows, "anthropic", 0);
    assert_eq!(attr(a0, "data-state").unwrap(), "valid");
    assert_eq!(cell(a0, "re-enabled"), "1");
    assert!(elements(&page.body, "form", "reenable").is_empty());
    assert!(elements(&page.body, "span", "countdown").is_empty());
}

#[tokio::test]
async fn dashboard_requests_are_listed_filtered_paged_and_shown_one_by_one() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(A0, vec![Reply::status(429).header("retry-after", "60")]);
    mock.script(
        A1,
        vec![Reply::default(), Reply::default(), Reply::status(500)],
    );
    let gw = start(&mock, None, &[]).await;
    let long_prompt = format!(
        "<script>alert('x')</script> {} END-OF-PROMPT",
        "lorem ipsum ".repeat(60)
    );
    let first = post_messages(&gw, &message("claude-sonnet-4-5", &long_prompt)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        500
    );
    let records = wait_for_ended(&gw, None, 3).await;
    let api_ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let failed = records.iter().find(|r| r["status"] == 500).unwrap()["id"]
        .as_str()
        .unwrap();
    let two_attempts = api_ids[2];

    let mut browser = Browser::new(&gw);
    let ids_on = |page: &Page| -> Vec<String> {
        let table = must_have(&page.body, "table", "requests");
        elements(table, "tr", "request")
            .iter()
            .map(|row| attr(row, "data-id").unwrap())
            .collect()
    };
    let page = browser.get("/ui/requests").await;
    page.assert_html(200);
    page.assert_no_secrets(&[A0, A1]);
    assert_eq!(
        ids_on(&page),
        api_ids,
        "newest first, as the API lists them"
    );
    for row in elements(&page.body, "tr", "request") {
        let id = attr(row, "data-id").unwrap();
        let link = elements(row, "a", "request-link");
        assert_eq!(attr(link[0], "href").unwrap(), format!("/ui/requests/{id}"));
    }
    let form = must_have(&page.body, "form", "request-filters");
    for name in ["user", "status", "outcome", "since", "until"] {
        assert!(
            form.contains(&format!("<input type=\"text\" name=\"{name}\"")),
            "{name} in {form}"
        );
    }
    assert!(by_id(&page.body, "a", "next-page").is_none());

    // Filters.
    for (query, expected) in [
        ("status=500", vec![failed]),
        ("outcome=upstream_error", vec![failed]),
        ("user=local&since=1h", api_ids.clone()),
        ("user=nobody", vec![]),
        ("until=2020-01-01", vec![]),
    ] {
        let page = browser.get(&format!("/ui/requests?{query}")).await;
        page.assert_html(200);
        assert_eq!(ids_on(&page), expected, "{query}");
    }
    let bad = browser.get("/ui/requests?status=abc").await;
    bad.assert_html(400);
    assert!(bad.body.contains("not an HTTP status"), "{}", bad.body);

    // Pages of two, by the API's cursor.
    let page = browser.get("/ui/requests?limit=2").await;
    page.assert_html(200);
    assert_eq!(ids_on(&page), api_ids[..2]);
    let next = attr(must_have(&page.body, "a", "next-page"), "href").unwrap();
    assert!(
        next.contains("limit=2") && next.contains("cursor="),
        "{next}"
    );
    let page = browser.get(&next).await;
    page.assert_html(200);
    assert_eq!(ids_on(&page), api_ids[2..]);
    assert!(
        by_id(&page.body, "a", "next-page").is_none(),
        "the last page"
    );

    // One request: both attempts, its usage, its prompt.
    let page = browser.get(&format!("/ui/requests/{two_attempts}")).await;
    page.assert_html(200);
    page.assert_no_secrets(&[A0, A1]);
    let attempts = elements(must_have(&page.body, "table", "attempts"), "tr", "attempt");
    assert_eq!(attempts.len(), 2);
    assert_eq!(cell(attempts[0], "key"), hint(A0));
    assert_eq!(cell(attempts[0], "status"), "429");
    assert_eq!(cell(attempts[0], "verdict"), "rate_limited");
    assert_eq!(cell(attempts[1], "key"), hint(A1));
    assert_eq!(cell(attempts[1], "status"), "200");
    assert_eq!(cell(attempts[1], "verdict"), "no failover");
    let duration = Regex::new(r"^\d+ ms$").unwrap();
    for attempt in &attempts {
        assert!(duration.is_match(&cell(attempt, "duration")), "{attempt}");
    }
    let iterations = must_have(&page.body, "table", "iterations");
    assert_eq!(elements(iterations, "tr", "iteration").len(), 1);
    let tools = must_have(&page.body, "table", "tool-calls");
    assert!(tools.contains("No tool calls."), "{tools}");
    // The prompt: a preview cut at 500 characters, the whole of it folded, all escaped.
    let preview = text(elements(&page.body, "p", "prompt-preview")[0]);
    assert_eq!(preview.chars().count(), 501, "{preview}");
    assert!(preview.ends_with('…') && !preview.contains("END-OF-PROMPT"));
    let details = must_have(&page.body, "details", "prompt");
    assert!(text(details).contains(&long_prompt), "{details}");
    assert!(!page.body.contains("<script>alert"), "escaped");
    assert!(page.body.contains("&lt;script&gt;alert"));

    // The failed one says so.
    let page = browser.get(&format!("/ui/requests/{failed}")).await;
    page.assert_html(200);
    assert!(page.body.contains("upstream_error"));

    for unknown in ["/ui/requests/nope", "/ui/requests/%3Cb%3Ex"] {
        let page = browser.get(unknown).await;
        page.assert_html(404);
        assert!(!page.body.contains("<b>x"), "{}", page.body);
    }
    let page = browser.get("/ui/nowhere").await;
    page.assert_html(404);

    // Without a breaker or an MCP server, the health page says so.
    let health = browser.get("/ui/health").await;
    health.assert_html(200);
    assert!(text(must_have(&health.body, "section", "breakers")).contains("Not configured"));
    assert!(text(must_have(&health.body, "section", "mcp")).contains("None configured"));
}

#[tokio::test]
async fn dashboard_usage_page_totals_chart_and_csv_match_the_api() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock, None, &[]).await;
    for (model, prompt) in [
        ("claude-a", "one"),
        ("claude-a", "two two"),
        ("claude-b", "three three three"),
    ] {
        assert_eq!(
            post_messages(&gw, &message(model, prompt)).await.status(),
            200
        );
    }
    wait_for_ended(&gw, None, 3).await;
    let api: Value = client()
        .get(gw.url("/api/v1/usage?by=model&since=7d"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let numbers = |row: &Value| -> Vec<String> {
        [
            "requests",
            "failed_requests",
            "failovers",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
        ]
        .iter()
        .map(|field| row[field].as_i64().unwrap().to_string())
        .collect()
    };
    let total_tokens: i64 = [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|f| api["totals"][f].as_i64().unwrap())
    .sum();
    assert!(total_tokens > 0);

    let mut browser = Browser::new(&gw);
    let page = browser.get("/ui/usage?by=model").await;
    page.assert_html(200);
    must_have(&page.body, "form", "usage-filters");
    let table = must_have(&page.body, "table", "usage-rows");
    let rows = elements(table, "tr", "usage-row");
    let api_rows = api["rows"].as_array().unwrap();
    assert_eq!(rows.len(), api_rows.len());
    for (row, expected) in rows.iter().zip(api_rows) {
        assert_eq!(attr(row, "data-group").unwrap(), expected["group"]);
        let shown = cells(row);
        assert_eq!(shown[0], expected["group"]);
        assert_eq!(shown[1..8], numbers(expected)[..]);
    }
    let totals = cells(must_have(&page.body, "tr", "usage-totals"));
    assert_eq!(totals[1..8], numbers(&api["totals"])[..]);
    assert_eq!(totals[8], total_tokens.to_string());

    // The chart: a container for uPlot, and its data in the page (one day, two models).
    must_have(&page.body, "div", "usage-chart");
    assert!(page.body.contains("/ui/assets/uPlot.iife.min.js?v="));
    let data = must_have(&page.body, "script", "usage-data");
    assert_eq!(attr(data, "type").unwrap(), "application/json");
    let data: Value = serde_json::from_str(&text(data)).unwrap();
    let today = now_ms() / 86_400_000 * 86_400;
    assert_eq!(data["days"], json!([today]));
    let series = data["series"].as_array().unwrap();
    let mut labels: Vec<&str> = series
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    labels.sort_unstable();
    assert_eq!(labels, ["claude-a", "claude-b"]);
    let charted: i64 = series
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap())
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(charted, total_tokens);

    // The CSV of the same query.
    let csv_link = attr(must_have(&page.body, "a", "usage-csv"), "href").unwrap();
    assert_eq!(csv_link, "/ui/usage.csv?since=7d&by=model");
    let csv = browser.get(&csv_link).await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        csv.header("content-disposition"),
        "attachment; filename=\"aibridge-usage-by-model.csv\""
    );
    csv.assert_security_headers();
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "model,requests,failed_requests,failovers,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens"
    );
    assert_eq!(lines.len(), 1 + api_rows.len());
    for (line, expected) in lines[1..].iter().zip(api_rows) {
        let mut fields = vec![expected["group"].as_str().unwrap().to_string()];
        fields.extend(numbers(expected));
        assert_eq!(*line, fields.join(","));
    }

    // By user (the default) and an empty period.
    let page = browser.get("/ui/usage").await;
    page.assert_html(200);
    let rows = elements(&page.body, "tr", "usage-row");
    assert_eq!(rows.len(), 1);
    assert_eq!(attr(rows[0], "data-group").unwrap(), "local");
    let empty = browser
        .get("/ui/usage?since=2020-01-01&until=2020-01-02&by=day")
        .await;
    empty.assert_html(200);
    assert!(elements(&empty.body, "tr", "usage-row").is_empty());
    assert_eq!(cells(must_have(&empty.body, "tr", "usage-totals"))[1], "0");
    let data = must_have(&empty.body, "script", "usage-data");
    assert_eq!(
        serde_json::from_str::<Value>(&text(data)).unwrap()["days"],
        json!([])
    );

    // Bad queries.
    let bad = browser.get("/ui/usage?by=team").await;
    bad.assert_html(400);
    assert!(bad.body.contains("not one of"), "{}", bad.body);
    let bad = browser.get("/ui/usage.csv?since=last+week").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn dashboard_health_page_and_a_tool_call_run_by_the_gateway() {
    let mcp = McpMock::new(McpMockOptions::default())
        .start()
        .await
        .unwrap();
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        A0,
        vec![Reply::tool_call("bmcp_tools_add", json!({"a": 2, "b": 3}))],
    );
    let config = format!(
        "[[mcp_servers]]\nname = \"tools\"\nurl = \"{}?secret=s3cr3t-in-url\"\n\n\
         [circuit_breaker]\nfailure_threshold = 3\n",
        mcp.url()
    );
    let gw = start(&mock, Some(&config), &[]).await;
    let response = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let records = wait_for_ended(&gw, None, 1).await;
    let id = records[0]["id"].as_str().unwrap();

    let mut browser = Browser::new(&gw);
    let page = browser.get(&format!("/ui/requests/{id}")).await;
    page.assert_html(200);
    let calls = elements(
        must_have(&page.body, "table", "tool-calls"),
        "tr",
        "tool-call",
    );
    assert_eq!(calls.len(), 1, "{}", page.body);
    assert_eq!(cell(calls[0], "name"), "bmcp_tools_add");
    assert_eq!(cell(calls[0], "injected"), "yes");
    assert_eq!(cell(calls[0], "server"), "tools");
    assert_eq!(cell(calls[0], "tool"), "add");
    assert_eq!(cell(calls[0], "result"), "5");
    let iterations = must_have(&page.body, "table", "iterations");
    assert_eq!(
        elements(iterations, "tr", "iteration").len(),
        2,
        "two upstream answers"
    );

    let page = browser.get("/ui/health").await;
    page.assert_html(200);
    page.assert_no_secrets(&[A0, A1, O0, O1, "s3cr3t-in-url"]);
    let providers = must_have(&page.body, "section", "providers");
    let rows = elements(providers, "tr", "provider");
    assert_eq!(rows.len(), 2);
    let anthropic = rows
        .iter()
        .find(|r| attr(r, "data-provider").as_deref() == Some("anthropic"))
        .unwrap();
    assert_eq!(cells(anthropic)[3..], ["2", "2", "0", "0"]);

    let breakers = elements(
        must_have(&page.body, "section", "breakers"),
        "tr",
        "breaker",
    );
    assert_eq!(breakers.len(), 1);
    assert_eq!(attr(breakers[0], "data-state").unwrap(), "closed");
    assert!(cells(breakers[0]).contains(&"claude-sonnet-4-5".to_string()));

    let servers = elements(must_have(&page.body, "section", "mcp"), "tr", "mcp-server");
    assert_eq!(servers.len(), 1);
    assert_eq!(attr(servers[0], "data-server").unwrap(), "tools");
    assert!(
        attr(servers[0], "data-tools")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            >= 2
    );
    assert!(
        text(servers[0]).contains("add as bmcp_tools_add"),
        "{}",
        servers[0]
    );

    let key_state = must_have(&page.body, "section", "key-state");
    assert!(text(key_state).contains("memory"));
    assert!(key_state.contains("data-health=\"ok\""));
    let database = must_have(&page.body, "section", "database");
    assert!(text(database).contains("sqlite"));
    assert!(database.contains("data-health=\"ok\""));

    let overhead = must_have(&page.body, "section", "overhead");
    let route = elements(overhead, "tr", "overhead")
        .into_iter()
        .find(|row| row.contains("/v1/messages"))
        .unwrap_or_else(|| panic!("{overhead}"));
    assert_eq!(cells(route)[..3], ["anthropic", "/v1/messages", "1"]);
    let p50: f64 = cell(route, "p50").parse().unwrap();
    let p99: f64 = cell(route, "p99").parse().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");
    assert_eq!(cells(must_have(overhead, "tr", "overhead-all"))[1], "1");
}

#[tokio::test]
async fn dashboard_in_tokens_mode_needs_an_admin_session() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock, None, &[("AIBRIDGE_AUTH", "tokens")]).await;
    let admin = token_for(&gw, "ops", true);
    let user = token_for(&gw, "alice", false);
    let served = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", &user)
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let records = wait_for_ended(&gw, Some(&admin), 1).await;
    let request_page = format!("/ui/requests/{}", records[0]["id"].as_str().unwrap());

    // No session: every page, and every form, sends to the login page.
    let mut browser = Browser::new(&gw);
    for path in PAGES
        .iter()
        .copied()
        .chain(["/ui/usage.csv", request_page.as_str(), "/ui/nowhere"])
    {
        browser.get(path).await.assert_redirect("/ui/login");
    }
    for path in ["/ui/keys/anthropic/0/enable", "/ui/logout"] {
        browser.post(path, &[]).await.assert_redirect("/ui/login");
    }
    // A token is for the API: it does not open the pages.
    let mut bearer = Browser::new(&gw).with_header("authorization", &format!("Bearer {admin}"));
    bearer.get("/ui/keys").await.assert_redirect("/ui/login");
    // The assets are open: the login page needs them.
    assert_eq!(browser.get("/ui/assets/dashboard.css").await.status, 200);

    // The login form, with a CSRF token bound to this browser's cookie.
    let login = browser.get("/ui/login").await;
    login.assert_html(200);
    let form = must_have(&login.body, "form", "login");
    assert!(form.contains("name=\"token\""), "{form}");
    assert!(form.contains("type=\"submit\""), "{form}");
    let cookie = login.set_cookie("aibridge_csrf").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let csrf = csrf_of(&login.body);
    let no_session = |page: &Page| assert!(page.set_cookie("aibridge_session").is_none());

    let refused = browser.post("/ui/login", &[("token", &admin)]).await;
    refused.assert_html(403);
    no_session(&refused);
    let elsewhere = Browser::new(&gw)
        .post("/ui/login", &[("token", &admin), ("csrf", &csrf)])
        .await;
    elsewhere.assert_html(403);
    no_session(&elsewhere);
    let not_admin = browser
        .post("/ui/login", &[("token", &user), ("csrf", &csrf)])
        .await;
    not_admin.assert_html(403);
    assert!(not_admin.body.contains("not an admin token"));
    no_session(&not_admin);
    let invalid = browser
        .post(
            "/ui/login",
            &[("token", "abk_not_a_token"), ("csrf", &csrf)],
        )
        .await;
    invalid.assert_html(401);
    no_session(&invalid);
    for page in [&refused, &not_admin, &invalid] {
        page.assert_no_secrets(&[&admin, &user]);
    }

    // An admin token starts a session: only a cookie, never shown.
    let ok = browser
        .post("/ui/login", &[("token", &admin), ("csrf", &csrf)])
        .await;
    ok.assert_redirect("/ui/keys");
    let cookie = ok.set_cookie("aibridge_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let session = browser.cookies["aibridge_session"].clone();
    assert_eq!(session.len(), 64);
    assert!(!session.contains(&admin) && !cookie.contains(&admin));
    for path in PAGES.iter().copied().chain([request_page.as_str()]) {
        let page = browser.get(path).await;
        page.assert_html(200);
        page.assert_no_secrets(&[&admin, &user, &session, A0, A1, O0, O1]);
        let logout = must_have(&page.body, "form", "logout");
        assert!(text(logout).contains("ops"), "{logout}");
    }
    let csv = browser.get("/ui/usage.csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.body.contains("\nalice,1,"), "{}", csv.body);
    browser.get("/ui/login").await.assert_redirect("/ui/keys");
    // The session is not an API credential.
    let api = browser.get("/api/v1/keys").await;
    assert_eq!(api.status, 401);

    // Forms need the session's CSRF token; the login page's is not it.
    let page = browser.get("/ui/keys").await;
    let page_csrf = csrf_of(&page.body);
    assert_ne!(page_csrf, csrf);
    browser
        .post("/ui/keys/anthropic/0/enable", &[])
        .await
        .assert_html(403);
    browser
        .post("/ui/keys/anthropic/0/enable", &[("csrf", &csrf)])
        .await
        .assert_html(403);
    browser
        .post("/ui/keys/anthropic/0/enable", &[("csrf", &page_csrf)])
        .await
        .assert_redirect("/ui/keys");

    // Behind a proxy that says HTTPS, the cookie is Secure.
    let mut proxied = Browser::new(&gw).with_header("x-forwarded-proto", "https");
    let login = proxied.get("/ui/login").await;
    assert!(
        login
            .set_cookie("aibridge_csrf")
            .unwrap()
            .contains("; Secure")
    );
    let ok = proxied
        .post(
            "/ui/login",
            &[("token", &admin), ("csrf", &csrf_of(&login.body))],
        )
        .await;
    ok.assert_redirect("/ui/keys");
    assert!(
        ok.set_cookie("aibridge_session")
            .unwrap()
            .contains("; Secure")
    );

    // Logout: CSRF-checked; then the cookie is gone and the session with it.
    browser.post("/ui/logout", &[]).await.assert_html(403);
    browser.get("/ui/keys").await.assert_html(200);
    let out = browser.post("/ui/logout", &[("csrf", &page_csrf)]).await;
    out.assert_redirect("/ui/login");
    assert!(
        out.set_cookie("aibridge_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!browser.cookies.contains_key("aibridge_session"));
    let mut replay = Browser::new(&gw);
    replay
        .cookies
        .insert("aibridge_session".into(), session.clone());
    replay.get("/ui/keys").await.assert_redirect("/ui/login");

    // Revoking the admin token ends the sessions it opened, at once.
    proxied.get("/ui/health").await.assert_html(200);
    let (ok, list, err) = gw.cli(&["token", "list"]);
    assert!(ok, "{err}");
    let id = list
        .lines()
        .find(|line| line.split('\t').nth(1) == Some("ops"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let (ok, _, err) = gw.cli(&["token", "revoke", &id]);
    assert!(ok, "{err}");
    proxied.get("/ui/health").await.assert_redirect("/ui/login");
}

#[tokio::test]
async fn dashboard_without_tokens_is_open_to_the_same_origin_only() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(A0, vec![Reply::status(429).header("retry-after", "60")]);
    let gw = start(&mock, None, &[]).await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    let host = gw.base.trim_start_matches("http://").to_string();

    let mut browser = Browser::new(&gw);
    for path in PAGES {
        let page = browser.get(path).await;
        page.assert_html(200);
        page.assert_no_secrets(&[A0, A1, O0, O1]);
    }
    // No login without tokens.
    browser.get("/ui/login").await.assert_redirect("/ui/keys");
    let csrf = csrf_of(&browser.get("/ui/keys").await.body);
    let cookie = browser.cookies["aibridge_csrf"].clone();

    // The browser's own origin.
    let mut same = Browser::new(&gw).with_header("origin", &gw.base);
    same.get("/ui/keys").await.assert_html(200);
    let mut fetch_same = Browser::new(&gw).with_header("sec-fetch-site", "same-origin");
    fetch_same.get("/ui/usage").await.assert_html(200);

    // Another origin, a cross-site fetch, a rebound name: refused before any page.
    let foreign = [
        ("origin", "http://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        (
            "host",
            format!("evil.example:{}", host.rsplit(':').next().unwrap()),
        ),
    ];
    for (name, value) in &foreign {
        let mut evil = Browser::new(&gw).with_header(name, value);
        let page = evil.get("/ui/keys").await;
        assert_eq!(page.status, 403, "{name}: {value}");
        // Even with this browser's cookie and token, a foreign form is refused.
        evil.cookies.insert("aibridge_csrf".into(), cookie.clone());
        let post = evil
            .post("/ui/keys/anthropic/0/enable", &[("csrf", &csrf)])
            .await;
        assert_eq!(post.status, 403, "{name}: {value}");
    }
    assert_eq!(gw.key_states("anthropic").await, ["cooling", "valid"]);

    // Forms still need the token.
    browser
        .post("/ui/keys/anthropic/0/enable", &[])
        .await
        .assert_html(403);
    same.post("/ui/keys/anthropic/0/enable", &[("csrf", &csrf)])
        .await
        .assert_html(403);
    browser
        .post("/ui/keys/anthropic/0/enable", &[("csrf", &csrf)])
        .await
        .assert_redirect("/ui/keys");
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
    // Nothing to log out of.
    browser
        .post("/ui/logout", &[("csrf", &csrf)])
        .await
        .assert_redirect("/ui/keys");
}

#[tokio::test]
async fn dashboard_assets_are_embedded_typed_and_cached() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock, None, &[]).await;
    let mut browser = Browser::new(&gw);
    let reference = Regex::new(r#"\b(?:src|href|action)="([^"]*)""#).unwrap();
    let scripts = Regex::new(r"<script\b([^>]*)>").unwrap();
    let mut assets = Vec::new();
    for path in ["/ui/keys", "/ui/usage", "/ui/requests", "/ui/health"] {
        let page = browser.get(path).await;
        page.assert_html(200);
        for found in reference.captures_iter(&page.body) {
            let url = unescape(&found[1]);
            assert!(
                url.starts_with('/') && !url.starts_with("//"),
                "{path} refers outside the gateway: {url}"
            );
            if url.starts_with("/ui/assets/") && !assets.contains(&url) {
                assets.push(url);
            }
        }
        assert!(!page.body.contains("<style"), "no inline style");
        assert!(!page.body.contains(" style="), "no inline style");
        for script in scripts.captures_iter(&page.body) {
            assert!(
                script[1].contains("src=\"/ui/assets/")
                    || script[1].contains("type=\"application/json\""),
                "only the gateway's scripts: {}",
                &script[0]
            );
        }
    }
    assets.sort();
    let names: Vec<&str> = assets
        .iter()
        .map(|url| {
            url.trim_start_matches("/ui/assets/")
                .split('?')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "dashboard.css",
            "dashboard.js",
            "favicon.svg",
            "uPlot.iife.min.js",
            "uPlot.min.css"
        ]
    );
    for url in &assets {
        let asset = browser.get(url).await;
        assert_eq!(asset.status, 200, "{url}");
        let expected = if url.contains(".css") {
            "text/css; charset=utf-8"
        } else if url.contains(".svg") {
            "image/svg+xml"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(asset.header("content-type"), expected, "{url}");
        assert_eq!(
            asset.header("cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(asset.header("x-content-type-options"), "nosniff");
        assert!(!asset.body.is_empty());
    }
    let uplot = browser.get("/ui/assets/uPlot.iife.min.js").await;
    assert!(
        uplot
            .body
            .starts_with("/*! https://github.com/leeoniya/uPlot (v1.6.32) */"),
        "{}",
        &uplot.body[..80]
    );
    let licence = browser.get("/ui/assets/uPlot.LICENSE").await;
    assert_eq!(licence.header("content-type"), "text/plain; charset=utf-8");
    assert!(licence.body.contains("The MIT License"));
    assert_eq!(browser.get("/ui/assets/nope.js").await.status, 404);
    assert_eq!(browser.get("/ui/assets/..%2Fmain.rs").await.status, 404);
}
