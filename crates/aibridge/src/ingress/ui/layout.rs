//! What every dashboard page shares: the document around it (head, navigation, logout), the
//! HTML and redirect answers, error pages, and the small formatting helpers.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::assets;
use super::auth::{Access, CSRF_FIELD};
use crate::time::now_millis;

/// The page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Keys,
    Usage,
    Requests,
    Health,
    None,
}

/// A whole page. Without `access` (the login page, errors before it is known) there is no
/// navigation; `chart` loads uPlot.
pub(super) fn page(
    title: &str,
    access: Option<&Access>,
    current: Nav,
    chart: bool,
    body: Markup,
) -> Markup {
    let here = |nav: Nav| (nav == current).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · aibridge" }
                link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
                link rel="stylesheet" href=(assets::url("dashboard.css"));
                @if chart {
                    link rel="stylesheet" href=(assets::url("uPlot.min.css"));
                    script src=(assets::url("uPlot.iife.min.js")) defer {}
                }
                script src=(assets::url("dashboard.js")) defer {}
            }
            // The server's clock, so that countdowns run right on a browser whose clock is off.
            body data-now-ms=(now_millis()) {
                header.top {
                    a.brand href="/ui/keys" { "aibridge" }
                    @if let Some(access) = access {
                        nav {
                            a #nav-keys href="/ui/keys" aria-current=[here(Nav::Keys)] { "Keys" }
                            a #nav-usage href="/ui/usage" aria-current=[here(Nav::Usage)] { "Usage" }
                            a #nav-requests href="/ui/requests" aria-current=[here(Nav::Requests)] { "Requests" }
                            a #nav-health href="/ui/health" aria-current=[here(Nav::Health)] { "Health" }
                        }
                        @if let Some(user) = &access.user {
                            form #logout method="post" action="/ui/logout" {
                                span.who { (user) }
                                input type="hidden" name=(CSRF_FIELD) value=(access.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An HTML answer.
pub(super) fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

/// 303 to a path of the dashboard.
pub(super) fn see_other(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

/// A page that says what went wrong.
pub(super) fn error_page(
    status: StatusCode,
    access: Option<&Access>,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        p.problem role="alert" { (message) }
        p { a href="/ui/keys" { "Back to the dashboard" } }
    };
    respond(status, page(title, access, Nav::None, false, body))
}

/// A page whose data could not be read (the database or the key-state store failed).
pub(super) fn unavailable(access: &Access, what: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %error, "dashboard: cannot read {what}");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(access),
        "Unavailable",
        &format!("Cannot read {what} now: {error}"),
    )
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
pub(super) fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A `<time>` of Unix milliseconds, shown in UTC.
pub(super) fn time_cell(ms: i64) -> Markup {
    let iso = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    html! { time datetime=(iso) { (utc(ms)) } }
}

/// An optional value, or a dash.
pub(super) fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// Milliseconds as text: `850 ms`, `12.3 s`.
pub(super) fn duration_ms(ms: i64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        let secs = ms as f64 / 1000.0;
        format!("{secs:.1} s")
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(super) fn truncate(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (format!("{}…", &text[..at]), true),
        None => (text.to_string(), false),
    }
}

/// One URL path segment: unreserved characters as they are, everything else percent-encoded.
pub(super) fn path_segment(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// A query string (without `?`) of the non-empty pairs.
pub(super) fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if !value.is_empty() {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// JSON for a `<script type="application/json">`: `<`, `>` and `&` (only ever inside strings)
/// as `\u` escapes, so no text can end the element or be read as markup.
pub(super) fn script_json(value: &serde_json::Value) -> PreEscaped<String> {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00:00");
        assert_eq!(truncate("héllo", 2), ("hé…".to_string(), true));
        assert_eq!(truncate("hi", 2), ("hi".to_string(), false));
        assert_eq!(path_segment("a b/c-d"), "a%20b%2Fc-d");
        assert_eq!(
            query([("a", "1"), ("b", ""), ("c", "x y&z")]),
            "a=1&c=x+y%26z"
        );
        let json = serde_json::json!({"m": "</script><b>&"});
        let text = script_json(&json).0;
        assert!(!text.contains('<') && !text.contains('&'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, json);
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_345), "12.3 s");
    }
}
