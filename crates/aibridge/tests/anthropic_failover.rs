//! Spec §9.2 and §9.3 for `POST /anthropic/v1/messages`, blocking and streaming, against the real
//! binary and the fake upstream on real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use aibridge_mock::{MockUpstream, Reply};
use common::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Blocking,
    Streaming,
}

const MODES: [Mode; 2] = [Mode::Blocking, Mode::Streaming];

impl Mode {
    fn stream(self) -> bool {
        matches!(self, Mode::Streaming)
    }
}

struct Outcome {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn run(gw: &Gateway, mode: Mode) -> Outcome {
    let response = post_messages(gw, &messages_body(mode.stream())).await;
    Outcome {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: response.text().await.unwrap(),
    }
}

/// A successful answer in the requested mode: the SSE sequence ends in message_stop, the JSON
/// body is a message.
fn assert_success(outcome: &Outcome, mode: Mode) {
    assert_eq!(outcome.status, 200, "body: {}", outcome.body);
    match mode {
        Mode::Blocking => {
            let v: Value = serde_json::from_str(&outcome.body).unwrap();
            assert_eq!(v["type"], "message");
            assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
        }
        Mode::Streaming => {
            let events = sse_event_types(&outcome.body);
            assert_eq!(
                events.first().map(String::as_str),
                Some("message_start"),
                "{events:?}"
            );
            assert_eq!(
                events.last().map(String::as_str),
                Some("message_stop"),
                "{events:?}"
            );
            assert!(!events.iter().any(|e| e == "error"), "{events:?}");
        }
    }
}

fn anthropic_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["type"], "error", "{body}");
    (
        v["error"]["type"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn single_valid_key() {
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        let gw = start_pool(&mock.url(), "k0").await;
        let out = run(&gw, mode).await;
        assert_success(&out, mode);
        assert_eq!(out.retry_after, None);
        assert_eq!(mock.seen_keys(), ["k0"], "{mode:?}");
        assert_eq!(gw.key_states("anthropic").await, ["valid"]);
    }
}

#[tokio::test]
async fn failover_after_429() {
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        mock.script("k0", vec![Reply::status(429).header("retry-after", "5")]);
        let gw = start_pool(&mock.url(), "k0,k1").await;
        let out = run(&gw, mode).await;
        assert_success(&out, mode);
        assert_eq!(out.retry_after, None, "{mode:?}");
        assert_eq!(mock.seen_keys(), ["k0", "k1"], "{mode:?}");
        assert_eq!(gw.key_states("anthropic").await, ["cooling", "valid"]);
        let k0 = &gw.keys("anthropic").await[0];
        let left = k0["cooldown_remaining_secs"].as_f64().unwrap();
        assert!(
            left > 3.0 && left <= 5.0,
            "cooldown follows Retry-After: {left}"
        );
        assert_eq!(k0["last_status"], 429);
    }
}

#[tokio::test]
async fn failover_after_401_and_403_disables_the_key() {
    for status in [401, 403] {
        for mode in MODES {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(status)]);
            let gw = start_pool(&mock.url(), "k0,k1").await;
            let out = run(&gw, mode).await;
            assert_success(&out, mode);
            assert_eq!(mock.seen_keys(), ["k0", "k1"], "{status} {mode:?}");
            assert_eq!(gw.key_states("anthropic").await, ["disabled", "valid"]);
            let reason = if status == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(gw.keys("anthropic").await[0]["disabled_reason"], reason);
        }
    }
}

#[tokio::test]
async fn all_keys_rate_limited_answers_429_with_the_soonest_cooldown() {
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        mock.script("k0", vec![Reply::status(429).header("retry-after", "5")]);
        mock.script("k1", vec![Reply::status(429).header("retry-after", "3")]);
        mock.script("k2", vec![Reply::status(429).header("retry-after", "10")]);
        let gw = start_pool(&mock.url(), "k0,k1,k2").await;
        let out = run(&gw, mode).await;
        assert_eq!(out.status, 429, "{mode:?}: {}", out.body);
        assert_eq!(out.retry_after.as_deref(), Some("3"));
        let (kind, message) = anthropic_error(&out.body);
        assert_eq!(kind, "rate_limit_error");
        assert!(
            message.contains("all configured keys are rate-limited"),
            "{message}"
        );
        assert_eq!(mock.seen_keys(), ["k0", "k1", "k2"]);
        assert_eq!(
            gw.key_states("anthropic").await,
            ["cooling", "cooling", "cooling"]
        );
    }
}

#[tokio::test]
async fn all_keys_unauthorized_answers_502_without_retry_after() {
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        mock.script("k0", vec![Reply::status(401)]);
        mock.script("k1", vec![Reply::status(401)]);
        let gw = start_pool(&mock.url(), "k0,k1").await;
        let out = run(&gw, mode).await;
        assert_eq!(out.status, 502, "{mode:?}: {}", out.body);
        assert_eq!(out.retry_after, None);
        let (kind, message) = anthropic_error(&out.body);
        assert_eq!(kind, "api_error");
        assert!(
            message.contains("all configured keys failed authentication"),
            "{message}"
        );
        assert_eq!(mock.seen_keys(), ["k0", "k1"]);
        assert_eq!(gw.key_states("anthropic").await, ["disabled", "disabled"]);

        // A later request does not reach the upstream at all.
        let again = run(&gw, mode).await;
        assert_eq!(again.status, 502);
        assert_eq!(mock.seen_keys().len(), 2);
    }
}

#[tokio::test]
async fn non_key_errors_are_relayed_without_failover() {
    // 500, 529 and 400 are the upstream's answer, not the key's fault.
    for (status, kind) in [
        (500, "api_error"),
        (529, "overloaded_error"),
        (400, "invalid_request_error"),
    ] {
        for mode in MODES {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(status).header("retry-after", "7")]);
            let gw = start_pool(&mock.url(), "k0,k1").await;
            let out = run(&gw, mode).await;
            assert_eq!(out.status, status, "{mode:?}: {}", out.body);
            assert_eq!(
                out.retry_after.as_deref(),
                Some("7"),
                "upstream Retry-After relayed"
            );
            let (got_kind, _) = anthropic_error(&out.body);
            assert_eq!(got_kind, kind);
            assert_eq!(mock.seen_keys(), ["k0"], "{status} {mode:?}");
            assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
        }
    }
}

#[tokio::test]
async fn upstream_error_type_and_message_are_kept() {
    let mock = MockUpstream::start().await.unwrap();
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
    mock.script(
        "k0",
        vec![Reply::status(400).body(body), Reply::status(400).body(body)],
    );
    let gw = start_pool(&mock.url(), "k0").await;
    for mode in MODES {
        let out = run(&gw, mode).await;
        assert_eq!(out.status, 400);
        let (kind, message) = anthropic_error(&out.body);
        assert_eq!(kind, "invalid_request_error");
        assert_eq!(
            message,
            "prompt is too long: 210000 tokens > 200000 maximum"
        );
    }
}

#[tokio::test]
async fn non_json_upstream_errors_are_wrapped_in_the_anthropic_shape() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::status(502).body("<html>bad gateway</html>")],
    );
    let gw = start_pool(&mock.url(), "k0").await;
    let out = run(&gw, Mode::Blocking).await;
    assert_eq!(out.status, 502);
    let (kind, message) = anthropic_error(&out.body);
    assert_eq!(kind, "api_error");
    assert!(
        message.contains("HTTP 502") && message.contains("bad gateway"),
        "{message}"
    );
}

#[tokio::test]
async fn byok_gets_one_attempt_and_the_upstream_answer_unchanged() {
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            "user-byok-key",
            vec![Reply::status(429).header("retry-after", "5")],
        );
        let gw = start_pool(&mock.url(), "k0,k1").await;
        let response = client()
            .post(gw.url("/anthropic/v1/messages"))
            .header("x-aibridge-token", "abk_anything")
            .header("x-api-key", "user-byok-key")
            .header("anthropic-version", "2023-06-01")
            .json(&messages_body(mode.stream()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{mode:?}");
        assert_eq!(response.headers()["retry-after"], "5");
        let (kind, _) = anthropic_error(&response.text().await.unwrap());
        assert_eq!(kind, "rate_limit_error");
        assert_eq!(mock.seen_keys(), ["user-byok-key"]);
        let seen = &mock.requests()[0];
        assert!(
            !seen
                .headers
                .iter()
                .any(|(name, _)| name == "x-aibridge-token"),
            "the gateway token must not travel upstream"
        );
        // The pool was not touched.
        assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
    }
}

#[tokio::test]
async fn byok_with_a_bearer_token_is_forwarded_as_is() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-aibridge-token", "abk_anything")
        .header("authorization", "Bearer user-oauth-token")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["user-oauth-token"]);
}

#[tokio::test]
async fn rate_limited_key_is_skipped_by_the_next_request() {
    // §9.3 TestAnthropic_KeyFailover: k0 always 429, k1 healthy.
    for mode in MODES {
        let mock = MockUpstream::start().await.unwrap();
        mock.then("k0", Reply::status(429).header("retry-after", "60"));
        let gw = start_pool(&mock.url(), "k0,k1").await;
        assert_success(&run(&gw, mode).await, mode);
        assert_success(&run(&gw, mode).await, mode);
        assert_eq!(mock.seen_keys(), ["k0", "k1", "k1"], "{mode:?}");
        assert_eq!(gw.key_states("anthropic").await, ["cooling", "valid"]);
    }
}

#[tokio::test]
async fn pool_key_replaces_the_gateway_token_and_client_headers_travel() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "sk-pool-key-0001").await;
    let response = client()
        .post(gw.url("/anthropic/v1/messages?beta=true"))
        .header("authorization", "Bearer abk_gateway_token")
        .header("x-api-key", "abk_gateway_token")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("user-agent", "claude-cli/2.0.0 (external, cli)")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-aibridge-request-id"));
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    let header = |name: &str| {
        seen.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("x-api-key"), ["sk-pool-key-0001"]);
    assert!(
        header("authorization").is_empty(),
        "the gateway token must not travel upstream"
    );
    assert_eq!(header("anthropic-version"), ["2023-06-01"]);
    assert_eq!(
        header("anthropic-beta"),
        ["interleaved-thinking-2025-05-14"]
    );
    assert_eq!(header("user-agent"), ["claude-cli/2.0.0 (external, cli)"]);
}

#[tokio::test]
async fn request_body_reaches_the_upstream_byte_for_byte() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429)]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    // Field order, spacing and fields the gateway does not model must survive, on every attempt.
    let raw = r#"{"max_tokens": 64, "model":"claude-x",  "messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u1"},"x_future_field":{"nested":[1,2.50,"\u00e9"]}}"#;
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| r.body == raw),
        "{:?}",
        seen.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn no_key_or_token_appears_in_logs_or_responses() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "sk-ant-secret-0000000000001",
        vec![Reply::status(429), Reply::status(401)],
    );
    mock.script("sk-ant-secret-0000000000002", vec![Reply::status(401)]);
    let gw = start_pool(
        &mock.url(),
        "sk-ant-secret-0000000000001,sk-ant-secret-0000000000002",
    )
    .await;
    let mut bodies = String::new();
    for _ in 0..2 {
        let response = post_messages(&gw, &messages_body(false)).await;
        bodies.push_str(&format!("{:?}", response.headers()));
        bodies.push_str(&response.text().await.unwrap());
    }
    let keys = client()
        .get(gw.url("/api/v1/keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [&bodies, &keys, &gw.logs()] {
        assert!(!text.contains("secret-000"), "leak in: {text}");
        assert!(!text.contains("abk_gateway_token"), "leak in: {text}");
    }
    assert!(
        gw.logs().contains("sk-a...0001"),
        "logs name keys by hint: {}",
        gw.logs()
    );
}
