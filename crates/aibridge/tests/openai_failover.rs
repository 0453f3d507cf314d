//! Spec §9.2 and §9.3 for the OpenAI bridges (`/openai/v1/chat/completions` and
//! `/openai/v1/responses`), blocking and streaming, plus Copilot (BYOK only).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use common::*;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    Chat,
    Responses,
}

const APIS: [Api; 2] = [Api::Chat, Api::Responses];
const STREAMING: [bool; 2] = [false, true];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/openai/v1/chat/completions",
            Api::Responses => "/openai/v1/responses",
        }
    }

    fn body(self, stream: bool) -> Value {
        match self {
            Api::Chat => json!({
                "model": "gpt-5",
                "stream": stream,
                "messages": [{"role": "user", "content": "Say hello"}],
            }),
            Api::Responses => json!({"model": "gpt-5", "stream": stream, "input": "Say hello"}),
        }
    }
}

async fn start_openai(mock: &MockUpstream, keys: &str) -> Gateway {
    let base = format!("{}/v1", mock.url());
    Gateway::start(&[
        ("AIBRIDGE_OPENAI_KEYS", keys),
        ("AIBRIDGE_OPENAI_BASE_URL", &base),
    ])
    .await
}

struct Outcome {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn call(gw: &Gateway, api: Api, stream: bool) -> Outcome {
    let response = client()
        .post(gw.url(api.path()))
        .bearer_auth("abk_gateway_token")
        .json(&api.body(stream))
        .send()
        .await
        .unwrap();
    Outcome {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: response.text().await.unwrap(),
    }
}

fn data_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

fn assert_success(out: &Outcome, api: Api, stream: bool) {
    assert_eq!(out.status, 200, "{api:?} stream={stream}: {}", out.body);
    match (api, stream) {
        (Api::Chat, false) => {
            let v: Value = serde_json::from_str(&out.body).unwrap();
            assert_eq!(v["object"], "chat.completion");
            assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
        }
        (Api::Responses, false) => {
            let v: Value = serde_json::from_str(&out.body).unwrap();
            assert_eq!(v["object"], "response");
            assert_eq!(v["status"], "completed");
        }
        (Api::Chat, true) => {
            let data = data_lines(&out.body);
            assert_eq!(data.last(), Some(&"[DONE]"), "{}", out.body);
            assert!(!out.body.contains("\"error\""), "{}", out.body);
        }
        (Api::Responses, true) => {
            let events = sse_event_types(&out.body);
            assert_eq!(events.first().map(String::as_str), Some("response.created"));
            assert_eq!(
                events.last().map(String::as_str),
                Some("response.completed"),
                "{events:?}"
            );
        }
    }
}

fn openai_error(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    v["error"].clone()
}

#[tokio::test]
async fn single_valid_key_and_failover_after_429_401_403() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            let gw = start_openai(&mock, "k0").await;
            assert_success(&call(&gw, api, stream).await, api, stream);
            assert_eq!(mock.seen_keys(), ["k0"]);

            for (status, state) in [(429, "cooling"), (401, "disabled"), (403, "disabled")] {
                let mock = MockUpstream::start().await.unwrap();
                mock.script("k0", vec![Reply::status(status).header("retry-after", "5")]);
                let gw = start_openai(&mock, "k0,k1").await;
                let out = call(&gw, api, stream).await;
                assert_success(&out, api, stream);
                assert_eq!(out.retry_after, None);
                assert_eq!(mock.seen_keys(), ["k0", "k1"], "{api:?} {stream} {status}");
                assert_eq!(gw.key_states("openai").await, [state, "valid"]);
                let auth: Vec<_> = mock
                    .requests()
                    .iter()
                    .map(|r| {
                        r.headers
                            .iter()
                            .find(|(n, _)| n == "authorization")
                            .unwrap()
                            .1
                            .clone()
                    })
                    .collect();
                assert_eq!(
                    auth,
                    ["Bearer k0", "Bearer k1"],
                    "pool key as Bearer, token never sent"
                );
            }
        }
    }
}

#[tokio::test]
async fn exhaustion_in_openai_shape() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(429).header("retry-after", "5")]);
            // OpenAI's own convention: milliseconds, honoured first.
            mock.script(
                "k1",
                vec![Reply::status(429).header("retry-after-ms", "2500")],
            );
            mock.script("k2", vec![Reply::status(429).header("retry-after", "10")]);
            let gw = start_openai(&mock, "k0,k1,k2").await;
            let out = call(&gw, api, stream).await;
            assert_eq!(out.status, 429, "{}", out.body);
            assert_eq!(out.retry_after.as_deref(), Some("3"), "ceil of k1's 2.5 s");
            let error = openai_error(&out.body);
            assert_eq!(error["type"], "rate_limit_error");
            assert_eq!(error["code"], "rate_limit_exceeded");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("all configured keys are rate-limited")
            );

            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(401)]);
            mock.script("k1", vec![Reply::status(403)]);
            let gw = start_openai(&mock, "k0,k1").await;
            let out = call(&gw, api, stream).await;
            assert_eq!(out.status, 502);
            assert_eq!(out.retry_after, None);
            let error = openai_error(&out.body);
            assert_eq!(error["type"], "api_error");
            assert_eq!(error["code"], "server_error");
        }
    }
}

#[tokio::test]
async fn server_errors_are_relayed_without_failover() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(500).header("retry-after", "4")]);
            let gw = start_openai(&mock, "k0,k1").await;
            let out = call(&gw, api, stream).await;
            assert_eq!(out.status, 500);
            assert_eq!(out.retry_after.as_deref(), Some("4"));
            openai_error(&out.body);
            assert_eq!(mock.seen_keys(), ["k0"]);
            assert_eq!(gw.key_states("openai").await, ["valid", "valid"]);
        }
    }
}

#[tokio::test]
async fn byok_gets_one_attempt_with_the_users_bearer_token() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script(
                "user-byok",
                vec![Reply::status(429).header("retry-after", "5")],
            );
            let gw = start_openai(&mock, "k0,k1").await;
            let response = client()
                .post(gw.url(api.path()))
                .header("x-aibridge-token", "abk_gateway_token")
                .bearer_auth("user-byok")
                .json(&api.body(stream))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "5");
            assert_eq!(
                openai_error(&response.text().await.unwrap())["code"],
                "rate_limit_exceeded"
            );
            assert_eq!(mock.seen_keys(), ["user-byok"]);
            assert_eq!(gw.key_states("openai").await, ["valid", "valid"]);
        }
    }
}

#[tokio::test]
async fn a_key_cooled_by_chat_is_skipped_by_responses() {
    // §9.3 TestKeyPool_StateSharing (bridged part).
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429).header("retry-after", "60")]);
    let gw = start_openai(&mock, "k0,k1").await;
    assert_success(&call(&gw, Api::Chat, false).await, Api::Chat, false);
    assert_success(
        &call(&gw, Api::Responses, false).await,
        Api::Responses,
        false,
    );
    assert_success(&call(&gw, Api::Responses, true).await, Api::Responses, true);
    assert_eq!(mock.seen_keys(), ["k0", "k1", "k1", "k1"]);
    assert_eq!(gw.key_states("openai").await, ["cooling", "valid"]);
}

#[tokio::test]
async fn streaming_chat_always_asks_for_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_openai(&mock, "k0").await;
    let out = call(&gw, Api::Chat, true).await;
    assert_success(&out, Api::Chat, true);
    let sent: Value = serde_json::from_str(&mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        sent["messages"][0]["content"], "Say hello",
        "the rest of the body is intact"
    );
    let usage_chunk = data_lines(&out.body)
        .into_iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|chunk| chunk["usage"].is_object());
    assert!(
        usage_chunk.is_some(),
        "the client sees the usage chunk: {}",
        out.body
    );
}

#[tokio::test]
async fn chat_mid_stream_failures_end_with_an_error_chunk_and_done() {
    for how in [MidStreamFailure::ErrorEvent, MidStreamFailure::Cut] {
        let mock = MockUpstream::start().await.unwrap();
        mock.script("k0", vec![Reply::ok().fail_after_events(2, how)]);
        let gw = start_openai(&mock, "k0,k1").await;
        let out = call(&gw, Api::Chat, true).await;
        assert_eq!(out.status, 200);
        let data = data_lines(&out.body);
        assert_eq!(data.last(), Some(&"[DONE]"), "{how:?}: {}", out.body);
        let error: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
        assert!(
            error["error"]["message"].is_string(),
            "{how:?}: {}",
            out.body
        );
        let error_chunks = data.iter().filter(|d| d.starts_with("{\"error\"")).count();
        assert_eq!(
            error_chunks, 1,
            "one error report, not the upstream's plus the gateway's: {}",
            out.body
        );
        assert_eq!(
            data.iter().filter(|d| **d == "[DONE]").count(),
            1,
            "{}",
            out.body
        );
        if how == MidStreamFailure::Cut {
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("upstream stream failed: response body failed: "),
                "{message}"
            );
        }
        assert_eq!(
            mock.seen_keys(),
            ["k0"],
            "no failover after the first chunk"
        );
    }
}

#[tokio::test]
async fn responses_stream_errors_reach_the_client() {
    // An upstream `event: error` is relayed as is.
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(2, MidStreamFailure::ErrorEvent)],
    );
    let gw = start_openai(&mock, "k0").await;
    let out = call(&gw, Api::Responses, true).await;
    assert_eq!(out.status, 200);
    assert_eq!(
        sse_event_types(&out.body).last().map(String::as_str),
        Some("error"),
        "{}",
        out.body
    );

    // `response.failed` too, unchanged.
    let failed = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"output\":[]}}\n\n";
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![
            Reply::ok()
                .header("content-type", "text/event-stream")
                .body(failed),
        ],
    );
    let gw = start_openai(&mock, "k0").await;
    let out = call(&gw, Api::Responses, true).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.body, failed, "relayed byte for byte");

    // A cut connection becomes an `error` event that continues the sequence numbers.
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::Cut)],
    );
    let gw = start_openai(&mock, "k0").await;
    let out = call(&gw, Api::Responses, true).await;
    let events = sse_event_types(&out.body);
    assert_eq!(
        events.last().map(String::as_str),
        Some("error"),
        "{}",
        out.body
    );
    let error = sse_data_of(&out.body, "error").unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "server_error");
    assert_eq!(error["sequence_number"], 3, "{error}");
}

#[tokio::test]
async fn responses_bytes_pass_through_verbatim() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_openai(&mock, "k0").await;
    // Codex sends items the SDK types do not know (reasoning without id, encrypted content).
    let raw = r#"{"model":"gpt-5-codex","input":[{"type":"reasoning","summary":[],"encrypted_content":"gAAAA=="},{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"include":["reasoning.encrypted_content"],"store":false,"x_unknown":1.50}"#;
    let response = client()
        .post(gw.url("/openai/v1/responses"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.requests()[0].body, raw);
}

#[tokio::test]
async fn background_responses_get_501() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_openai(&mock, "k0").await;
    let response = client()
        .post(gw.url("/openai/v1/responses"))
        .json(&json!({"model": "gpt-5", "input": "x", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 501);
    let error = openai_error(&response.text().await.unwrap());
    assert!(error["message"].as_str().unwrap().contains("background"));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn bad_input_is_answered_in_openai_shape() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_openai(&mock, "k0").await;
    for (path, body, status) in [
        ("/openai/v1/chat/completions", "{nope", 400),
        ("/openai/v1/chat/completions", r#"{"messages":[]}"#, 400),
        ("/openai/v1/responses", r#"{"model":"m","stream":1}"#, 400),
        (
            "/openai/v1/chat/completions",
            r#"{"model":"m","stream":true,"stream_options":7}"#,
            400,
        ),
        ("/openai/v1/completions", r#"{"model":"m"}"#, 404),
        ("/openai/chat/completions", r#"{"model":"m"}"#, 404),
    ] {
        let response = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path} {body}");
        let error = openai_error(&response.text().await.unwrap());
        assert_eq!(error["type"], "invalid_request_error", "{path} {body}");
        let expected_code = if status == 404 {
            "not_found"
        } else {
            "invalid_request"
        };
        assert_eq!(error["code"], expected_code, "{path} {body}");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn copilot_is_byok_only_and_forwards_its_headers() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_copilot(&mock).await;
    let response = client()
        .post(gw.url("/copilot/chat/completions"))
        .bearer_auth("ghu_user_copilot_token")
        .header("editor-version", "vscode/1.99.0")
        .header("copilot-integration-id", "vscode-chat")
        .json(&Api::Chat.body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &mock.requests()[0];
    assert_eq!(seen.key, "ghu_user_copilot_token");
    assert_eq!(seen.path, "/v1/chat/completions");
    let header = |name: &str| {
        seen.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("editor-version").as_deref(), Some("vscode/1.99.0"));
    assert_eq!(
        header("copilot-integration-id").as_deref(),
        Some("vscode-chat")
    );

    // Keys in the config are refused: Copilot has no central pool.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aibridge"))
        .args(["check-config", "--config"])
        .arg({
            let path = std::env::temp_dir().join(format!("copilot-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, "[[providers]]\ntype = \"copilot\"\nkeys = [\"k\"]\n").unwrap();
            path
        })
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("copilot providers take no keys"));
}
