//! Which AI client sent a request, and its session, guessed from headers (spec §8.6) for the
//! request record.

use http::header::{AsHeaderName, USER_AGENT};
use http::{HeaderMap, HeaderName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client: &'static str,
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
}

const ORIGINATOR: HeaderName = HeaderName::from_static("originator");
const CURSOR_VERSION: HeaderName = HeaderName::from_static("x-cursor-client-version");

fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// User-Agent prefixes (lower-cased) and the header that carries each client's session id.
const BY_USER_AGENT: &[(&str, &str, Option<&str>)] = &[
    ("mux/", "Mux", Some("x-mux-workspace-id")),
    ("claude", "Claude Code", Some("x-claude-code-session-id")),
    ("codex", "Codex", Some("session_id")),
    ("zed/", "Zed", None),
    (
        "githubcopilotchat/",
        "Copilot VS Code",
        Some("x-interaction-id"),
    ),
    ("copilot/", "Copilot CLI", Some("x-client-session-id")),
    ("kilo-code/", "Kilo Code", Some("x-kilocode-taskid")),
    ("roo-code/", "Roo Code", None),
    ("coder-agents/", "Coder Agents", Some("x-coder-chat-id")),
    ("charm crush/", "Crush", None),
];

/// Every client the gateway tells apart, `Unknown` first: the values of the metrics' `client`
/// label, indexed by [`client_index`].
pub const CLIENT_NAMES: [&str; 12] = [
    "Unknown",
    "Mux",
    "Claude Code",
    "Codex",
    "Zed",
    "Copilot VS Code",
    "Copilot CLI",
    "Kilo Code",
    "Roo Code",
    "Coder Agents",
    "Crush",
    "Cursor",
];

/// The client and the header that carries its session id, from `User-Agent`, `originator` and
/// Cursor's version header. Compares without allocating: it runs for every request.
fn classify(headers: &HeaderMap) -> (&'static str, Option<&'static str>) {
    let agent = header(headers, USER_AGENT).unwrap_or("").as_bytes();
    let known = BY_USER_AGENT.iter().find(|(prefix, ..)| {
        agent.len() >= prefix.len() && agent[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    });
    if let Some((_, client, session)) = known {
        return (client, *session);
    }
    let originator = header(headers, ORIGINATOR).unwrap_or("");
    if originator.eq_ignore_ascii_case("kilo-code") {
        ("Kilo Code", Some("x-kilocode-taskid"))
    } else if originator.eq_ignore_ascii_case("roo-code") {
        ("Roo Code", None)
    } else if headers.contains_key(CURSOR_VERSION) {
        ("Cursor", None)
    } else {
        ("Unknown", None)
    }
}

/// The client's position in [`CLIENT_NAMES`].
pub fn client_index(headers: &HeaderMap) -> usize {
    let (client, _) = classify(headers);
    CLIENT_NAMES
        .iter()
        .position(|name| *name == client)
        .unwrap_or(0)
}

/// Guesses the client (see `classify`); the session id comes from the client's own header, or
/// for Claude Code from the body's `metadata.user_id` (a JSON object's `session_id`, or the
/// legacy `…_session_<uuid>` suffix).
pub fn identify(headers: &HeaderMap, body: &[u8]) -> ClientInfo {
    let user_agent = header(headers, USER_AGENT).map(str::to_string);
    let (client, session_header) = classify(headers);
    let mut session_id = session_header
        .and_then(|h| header(headers, h))
        .map(str::to_string);
    if session_id.is_none() && client == "Claude Code" {
        session_id = claude_session_from_body(body);
    }
    ClientInfo {
        client,
        session_id,
        user_agent,
    }
}

fn claude_session_from_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        user_id: Option<String>,
    }
    let user_id = serde_json::from_slice::<Peek>(body)
        .ok()?
        .metadata?
        .user_id?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&user_id)
        && let Some(session) = value["session_id"].as_str()
    {
        return Some(session.to_string()).filter(|s| !s.is_empty());
    }
    user_id
        .rsplit_once("_session_")
        .map(|(_, session)| session.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::headers;

    #[test]
    fn clients_by_user_agent_and_their_sessions() {
        let got = identify(
            &headers(&[
                ("user-agent", "claude-cli/2.0.1 (external, cli)"),
                ("x-claude-code-session-id", "s-1"),
            ]),
            b"{}",
        );
        assert_eq!(got.client, "Claude Code");
        assert_eq!(got.session_id.as_deref(), Some("s-1"));
        assert_eq!(
            got.user_agent.as_deref(),
            Some("claude-cli/2.0.1 (external, cli)")
        );

        let codex = identify(
            &headers(&[("user-agent", "codex_cli_rs/0.50"), ("session_id", "c-9")]),
            b"",
        );
        assert_eq!(
            (codex.client, codex.session_id.as_deref()),
            ("Codex", Some("c-9"))
        );
        assert_eq!(
            identify(&headers(&[("x-cursor-client-version", "1.2")]), b"").client,
            "Cursor"
        );
        assert_eq!(
            identify(&headers(&[("originator", "roo-code")]), b"").client,
            "Roo Code"
        );
        assert_eq!(
            identify(&headers(&[("user-agent", "Claude-CLI/2.0")]), b"").client,
            "Claude Code",
            "case does not matter"
        );
        for (client, ua) in [
            ("Zed", "zed/0.1"),
            ("Crush", "Charm Crush/1"),
            ("Unknown", "x"),
        ] {
            let index = client_index(&headers(&[("user-agent", ua)]));
            assert_eq!(CLIENT_NAMES[index], client);
        }
        let unknown = identify(&headers(&[("user-agent", "python-httpx/0.27")]), b"");
        assert_eq!((unknown.client, unknown.session_id), ("Unknown", None));
    }

    #[test]
    fn claude_code_session_from_the_body() {
        let ua = headers(&[("user-agent", "claude-cli/1.0")]);
        let json_id =
            br#"{"metadata":{"user_id":"{\"device_id\":\"d\",\"session_id\":\"sess-json\"}"}}"#;
        assert_eq!(
            identify(&ua, json_id).session_id.as_deref(),
            Some("sess-json")
        );
        let legacy = br#"{"metadata":{"user_id":"user_abc_account__session_1234-5678"}}"#;
        assert_eq!(
            identify(&ua, legacy).session_id.as_deref(),
            Some("1234-5678")
        );
        assert_eq!(
            identify(&ua, br#"{"metadata":{"user_id":"plain"}}"#).session_id,
            None
        );
    }
}
