//! Anthropic Messages specifics: upstream errors kept or wrapped in the dialect, header and
//! byte fidelity, BYOK bearer tokens, and no secret in logs or answers.

use crate::common::*;
use aibridge_mock::{MockUpstream, Reply};

const API: TestApi = TestApi::Messages;

fn anthropic_error(body: &str) -> (String, String) {
    let error = API.error(body);
    (error.kind, error.message)
}

#[tokio::test]
async fn non_key_errors_are_relayed_without_failover() {
    // 500, 529 and 400 are the upstream's answer, not the key's fault.
    for (status, kind) in [
        (500, "api_error"),
        (529, "overloaded_error"),
        (400, "invalid_request_error"),
    ] {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(status).header("retry-after", "7")]);
            let gw = start_pool(&mock.url(), "k0,k1").await;
            let out = API.call(&gw, stream).await;
            assert_eq!(out.status, status, "stream={stream}: {}", out.body);
            assert_eq!(
                out.retry_after.as_deref(),
                Some("7"),
                "upstream Retry-After relayed"
            );
            let (got_kind, _) = anthropic_error(&out.body);
            assert_eq!(got_kind, kind);
            assert_eq!(mock.seen_keys(), ["k0"], "{status} stream={stream}");
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
    for stream in STREAMING {
        let out = API.call(&gw, stream).await;
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
    let out = API.call(&gw, false).await;
    assert_eq!(out.status, 502);
    let (kind, message) = anthropic_error(&out.body);
    assert_eq!(kind, "api_error");
    assert!(
        message.contains("HTTP 502") && message.contains("bad gateway"),
        "{message}"
    );
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

/// Actor headers (spec §8.5), off by default: with `send_actor_headers = true` the upstream
/// learns which user a pool-paid request is for; a client can never set them itself.
#[tokio::test]
async fn actor_headers_name_the_user_only_when_asked_and_never_from_the_client() {
    for on in [false, true] {
        let mock = MockUpstream::start().await.unwrap();
        let env = pool_env(&mock.url(), "k0");
        let config = format!("send_actor_headers = {on}\n");
        let gw = Gateway::start_with_config(Some(&config), &env).await;
        let response = API
            .request(&gw, false)
            .header("x-ai-bridge-actor-id", "someone-else")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen = &mock.requests()[0];
        let actor: Vec<_> = seen
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-ai-bridge-actor"))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if on {
            assert_eq!(
                actor,
                [
                    ("x-ai-bridge-actor-id", "local"),
                    ("x-ai-bridge-actor-metadata-username", "local")
                ]
            );
        } else {
            assert!(actor.is_empty(), "{actor:?}");
        }
    }
}
