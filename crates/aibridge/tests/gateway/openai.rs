//! OpenAI specifics (`/openai/v1/chat/completions`, `/openai/v1/responses`): usage in chat
//! streams, mid-stream errors, byte fidelity, background requests, bad input, Copilot (BYOK only).

use crate::common::*;
use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use serde_json::{Value, json};

fn openai_error(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    v["error"].clone()
}

#[tokio::test]
async fn a_key_cooled_by_chat_is_skipped_by_responses() {
    // §9.3 TestKeyPool_StateSharing (bridged part).
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429).header("retry-after", "60")]);
    let gw = start_openai(&mock, "k0,k1").await;
    TestApi::Chat.assert_success(&TestApi::Chat.call(&gw, false).await, false);
    TestApi::Responses.assert_success(&TestApi::Responses.call(&gw, false).await, false);
    TestApi::Responses.assert_success(&TestApi::Responses.call(&gw, true).await, true);
    assert_eq!(mock.seen_keys(), ["k0", "k1", "k1", "k1"]);
    assert_eq!(gw.key_states("openai").await, ["cooling", "valid"]);
}

#[tokio::test]
async fn streaming_chat_always_asks_for_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_openai(&mock, "k0").await;
    let out = TestApi::Chat.call(&gw, true).await;
    TestApi::Chat.assert_success(&out, true);
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
        let out = TestApi::Chat.call(&gw, true).await;
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
    let out = TestApi::Responses.call(&gw, true).await;
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
    let out = TestApi::Responses.call(&gw, true).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.body, failed, "relayed byte for byte");

    // A cut connection becomes an `error` event that continues the sequence numbers.
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::Cut)],
    );
    let gw = start_openai(&mock, "k0").await;
    let out = TestApi::Responses.call(&gw, true).await;
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
        .json(&TestApi::Chat.body(false))
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
