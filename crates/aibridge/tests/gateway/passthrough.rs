//! Passthrough routes with key failover: spec §9.3's passthrough table for Anthropic and OpenAI,
//! byte-identical body replay, pool state shared with the bridged routes, the allow-list.

use crate::common::*;
use aibridge_mock::{MockUpstream, Reply};
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Provider {
    Anthropic,
    OpenAi,
}

const PROVIDERS: [Provider; 2] = [Provider::Anthropic, Provider::OpenAi];

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    fn models_path(self) -> &'static str {
        match self {
            Provider::Anthropic => "/anthropic/v1/models",
            Provider::OpenAi => "/openai/v1/models",
        }
    }

    async fn start(self, mock: &MockUpstream, keys: &str) -> Gateway {
        match self {
            Provider::Anthropic => start_pool(&mock.url(), keys).await,
            Provider::OpenAi => {
                let base = format!("{}/v1", mock.url());
                Gateway::start(&[
                    ("AIBRIDGE_OPENAI_KEYS", keys),
                    ("AIBRIDGE_OPENAI_BASE_URL", &base),
                ])
                .await
            }
        }
    }

    /// How this provider's SDK sends the gateway token.
    fn request(self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Provider::Anthropic => builder
                .header("x-api-key", "abk_token")
                .header("anthropic-version", "2023-06-01"),
            Provider::OpenAi => builder.bearer_auth("abk_token"),
        }
    }

    /// The header the pool key must arrive in upstream.
    fn seen_auth(self, request: &aibridge_mock::SeenRequest) -> Vec<String> {
        let name = match self {
            Provider::Anthropic => "x-api-key",
            Provider::OpenAi => "authorization",
        };
        request
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

async fn get_models(gw: &Gateway, provider: Provider) -> (u16, Option<String>, String) {
    let response = provider
        .request(client().get(gw.url(provider.models_path())))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, response.text().await.unwrap())
}

#[tokio::test]
async fn the_passthrough_failover_table() {
    // (case, keys, scripts, expected status, expected Retry-After, expected seen keys, states)
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, Reply)>,
        u16,
        Option<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "single_valid_key",
            "k0",
            vec![],
            200,
            None,
            vec!["k0"],
            vec!["valid"],
        ),
        (
            "failover_after_429",
            "k0,k1",
            vec![("k0", Reply::status(429).header("retry-after", "5"))],
            200,
            None,
            vec!["k0", "k1"],
            vec!["cooling", "valid"],
        ),
        (
            "failover_after_401",
            "k0,k1",
            vec![("k0", Reply::status(401))],
            200,
            None,
            vec!["k0", "k1"],
            vec!["disabled", "valid"],
        ),
        (
            "failover_after_403",
            "k0,k1",
            vec![("k0", Reply::status(403))],
            200,
            None,
            vec!["k0", "k1"],
            vec!["disabled", "valid"],
        ),
        (
            "all_keys_rate_limited",
            "k0,k1,k2",
            vec![
                ("k0", Reply::status(429).header("retry-after", "5")),
                ("k1", Reply::status(429).header("retry-after", "3")),
                ("k2", Reply::status(429).header("retry-after", "10")),
            ],
            429,
            Some("3"),
            vec!["k0", "k1", "k2"],
            vec!["cooling", "cooling", "cooling"],
        ),
        (
            "all_keys_unauthorized",
            "k0,k1",
            vec![("k0", Reply::status(401)), ("k1", Reply::status(401))],
            502,
            None,
            vec!["k0", "k1"],
            vec!["disabled", "disabled"],
        ),
        (
            "server_error_no_failover",
            "k0,k1",
            vec![("k0", Reply::status(500))],
            500,
            None,
            vec!["k0"],
            vec!["valid", "valid"],
        ),
    ];
    for provider in PROVIDERS {
        for (case, keys, scripts, status, retry_after, seen, states) in cases.clone() {
            let mock = MockUpstream::start().await.unwrap();
            for (key, reply) in scripts {
                mock.script(key, vec![reply]);
            }
            let gw = provider.start(&mock, keys).await;
            let (got_status, got_retry_after, body) = get_models(&gw, provider).await;
            let what = format!("{provider:?} {case}: {body}");
            assert_eq!(got_status, status, "{what}");
            assert_eq!(got_retry_after.as_deref(), retry_after, "{what}");
            assert_eq!(mock.seen_keys(), seen, "{what}");
            assert_eq!(gw.key_states(provider.name()).await, states, "{what}");
            let v: Value = serde_json::from_str(&body).unwrap();
            match (status, provider) {
                (200, _) => assert!(v["data"].is_array(), "{what}"),
                (_, Provider::Anthropic) => assert_eq!(v["type"], "error", "{what}"),
                (_, Provider::OpenAi) => assert!(v["error"]["message"].is_string(), "{what}"),
            }
            if case == "all_keys_rate_limited" {
                assert!(
                    body.contains("all configured keys are rate-limited"),
                    "{what}"
                );
            }
            // The pool key replaces the gateway token on every attempt.
            for (request, key) in mock.requests().iter().zip(&seen) {
                let expected = match provider {
                    Provider::Anthropic => key.to_string(),
                    Provider::OpenAi => format!("Bearer {key}"),
                };
                assert_eq!(provider.seen_auth(request), [expected], "{what}");
            }
        }
    }
}

#[tokio::test]
async fn byok_passthrough_is_one_attempt_with_the_users_credential() {
    for provider in PROVIDERS {
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            "user-byok",
            vec![Reply::status(429).header("retry-after", "5")],
        );
        let gw = provider.start(&mock, "k0,k1").await;
        let request = client()
            .get(gw.url(provider.models_path()))
            .header("x-aibridge-token", "abk_token");
        let request = match provider {
            Provider::Anthropic => request.header("x-api-key", "user-byok"),
            Provider::OpenAi => request.bearer_auth("user-byok"),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 429, "{provider:?}");
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(mock.seen_keys(), ["user-byok"]);
        assert!(
            !mock.requests()[0]
                .headers
                .iter()
                .any(|(n, _)| n == "x-aibridge-token")
        );
        assert_eq!(gw.key_states(provider.name()).await, ["valid", "valid"]);
    }
}

#[tokio::test]
async fn count_tokens_body_is_replayed_byte_for_byte_across_a_failover() {
    let mock = MockUpstream::start().await.unwrap();
    mock.then("k0", Reply::status(401));
    mock.script("k1", vec![Reply::status(429)]);
    let gw = start_pool(&mock.url(), "k0,k1,k2").await;
    let raw = r#"{"model":"claude-sonnet-4-5",  "messages":[{"role":"user","content":"count me \u00e9"}],"x_unknown":[1.50]}"#;
    let response = client()
        .post(gw.url("/anthropic/v1/messages/count_tokens?beta=true"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0);
    let seen: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|seen| !is_key_check(seen))
        .collect();
    assert_eq!(request_keys(&mock), ["k0", "k1", "k2"]);
    assert_eq!(checked_keys(&mock), ["k0"]);
    for request in &seen {
        assert_eq!(request.body, raw);
        assert_eq!(request.path, "/v1/messages/count_tokens");
        assert_eq!(request.query.as_deref(), Some("beta=true"));
        assert_eq!(request.method, "POST");
    }
}

#[tokio::test]
async fn pool_state_is_shared_between_bridged_and_passthrough_routes() {
    // Bridged 429 → the passthrough request skips the key (spec §9.3 TestKeyPool_StateSharing).
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429).header("retry-after", "60")]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(get_models(&gw, Provider::Anthropic).await.0, 200);
    assert_eq!(mock.seen_keys(), ["k0", "k1", "k1"]);

    // And the other way round: passthrough 401 → the bridged request skips the key.
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(401)]);
    let gw = Provider::OpenAi.start(&mock, "k0,k1").await;
    assert_eq!(get_models(&gw, Provider::OpenAi).await.0, 200);
    let response = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(
            &serde_json::json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["k0", "k1", "k1"]);
    assert_eq!(gw.key_states("openai").await, ["disabled", "valid"]);
}

#[tokio::test]
async fn routes_outside_the_allow_list_are_404_and_never_reach_the_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let base = format!("{}/v1", mock.url());
    let gw_openai = Gateway::start(&[
        ("AIBRIDGE_OPENAI_KEYS", "k0"),
        ("AIBRIDGE_OPENAI_BASE_URL", &base),
    ])
    .await;
    for (gw, path) in [
        (&gw, "/anthropic/v1/files"),
        (&gw, "/anthropic/v1/messages/batches"),
        (&gw_openai, "/openai/v1/files"),
        (&gw_openai, "/openai/v1/completions"),
        (&gw_openai, "/openai/v1/organization/admin_api_keys"),
    ] {
        let response = client()
            .get(gw.url(path))
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        let message = if path.starts_with("/anthropic") {
            assert_eq!(body["type"], "error", "{body}");
            body["error"]["message"].as_str().unwrap().to_string()
        } else {
            body["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.starts_with("route not supported: GET"), "{message}");
    }
    // Dot segments would leave the allowed subtree once a URL parser resolves them. HTTP clients
    // normalise them away before sending, so these go out on a raw socket, exactly as written.
    let addr = gw.base.trim_start_matches("http://").to_string();
    for path in [
        "/anthropic/v1/models/../files",
        "/anthropic/v1/models/%2e%2e/files",
        "/anthropic/v1/models/..%5Cfiles/x/.%2E/..",
    ] {
        let status_line = raw_get(&addr, path).await;
        assert!(
            status_line.starts_with("HTTP/1.1 404"),
            "{path}: {status_line}"
        );
    }
    assert!(mock.requests().is_empty());
}

/// Sends `GET <path>` byte for byte and returns the status line.
async fn raw_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn passthrough_keeps_query_method_headers_and_streams_the_answer_back() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().header("x-upstream-marker", "yes")]);
    let gw = start_pool(&mock.url(), "k0").await;
    let response = client()
        .get(gw.url("/anthropic/v1/models/claude-sonnet-4-5?beta=true"))
        .header("x-api-key", "abk_token")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "models-2025")
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-upstream-marker"],
        "yes",
        "upstream headers relayed"
    );
    assert!(response.headers().contains_key("x-aibridge-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "claude-sonnet-4-5");
    let seen = &mock.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/v1/models/claude-sonnet-4-5");
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    let header = |name: &str| {
        seen.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("anthropic-beta").as_deref(), Some("models-2025"));
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(header("x-api-key").as_deref(), Some("k0"));
    assert!(
        header("host").unwrap().starts_with("127.0.0.1:"),
        "Host is the upstream's"
    );

    // Any method on an allow-listed path: DELETE of a stored response reaches the upstream.
    let base = format!("{}/v1", mock.url());
    let gw = Gateway::start(&[
        ("AIBRIDGE_OPENAI_KEYS", "k9"),
        ("AIBRIDGE_OPENAI_BASE_URL", &base),
    ])
    .await;
    let response = client()
        .delete(gw.url("/openai/v1/responses/resp_123"))
        .send()
        .await
        .unwrap();
    let seen = mock.requests().pop().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str(), seen.key.as_str()),
        ("DELETE", "/v1/responses/resp_123", "k9")
    );
    // The mock has no stored responses: its 404 is relayed as is.
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn transport_errors_are_502_without_failover() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gw = start_pool(&dead, "k0,k1").await;
    let (status, _, body) = get_models(&gw, Provider::Anthropic).await;
    assert_eq!(status, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{v}"
    );
    assert_eq!(
        gw.key_states("anthropic").await,
        ["valid", "valid"],
        "not the key's fault"
    );
}

#[tokio::test]
async fn oversized_passthrough_bodies_get_413() {
    let mock = MockUpstream::start().await.unwrap();
    let env = pool_env(&mock.url(), "k0");
    let gw = Gateway::start_with_config(Some("max_request_body_bytes = 100\n"), &env).await;
    let response = client()
        .post(gw.url("/anthropic/v1/messages/count_tokens"))
        .header("anthropic-version", "2023-06-01")
        .body(vec![b'x'; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn copilot_passthrough_uses_the_callers_token() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_copilot(&mock).await;
    let response = client()
        .get(gw.url("/copilot/models"))
        .bearer_auth("ghu_user")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["ghu_user"]);
}
