//! AWS Bedrock with a pool of credentials: the client speaks Anthropic Messages to
//! `/bedrock/v1/messages`, the gateway signs InvokeModel (SigV4, checked by the fake Bedrock
//! with its own implementation) or sends a Bedrock API key, and fails over by exception name.

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply, bedrock_secret_for};
use serde_json::{Value, json};

use crate::common::*;

const MODEL_ID: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
const INVOKE_PATH: &str = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke";

/// A gateway whose `bedrock` provider has, in order: access keys AKIDK0 (with `k0_secret`) and
/// AKIDK1, then the API key `bedrock-key-2`.
async fn start(mock: &MockUpstream, k0_secret: &str, extra: &str) -> Gateway {
    let config = format!(
        r#"
[[providers]]
name = "bedrock"
type = "bedrock"
region = "us-east-1"
base_url = "{url}"
models = {{ "claude-sonnet-4-5" = "{MODEL_ID}" }}
credentials = [
  {{ access_key_id = "AKIDK0", secret_access_key = "{k0_secret}" }},
  {{ access_key_id = "AKIDK1", secret_access_key = "{k1}", session_token = "session-1" }},
  {{ api_key = "bedrock-key-2" }},
]
{extra}"#,
        url = mock.url(),
        k1 = bedrock_secret_for("AKIDK1"),
    );
    Gateway::start_with_config(Some(&config), &[] as &[(&str, &str)]).await
}

async fn start_ok(mock: &MockUpstream) -> Gateway {
    start(mock, &bedrock_secret_for("AKIDK0"), "").await
}

fn ask(gw: &Gateway, stream: bool) -> reqwest::RequestBuilder {
    client()
        .post(gw.url("/bedrock/v1/messages"))
        .header("x-api-key", "abk_gateway_token")
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,files-api-2025-04-14",
        )
        .json(&messages_body(stream))
}

/// The Bedrock invocations the mock saw (key checks left out).
fn invocations(mock: &MockUpstream) -> Vec<aibridge_mock::SeenRequest> {
    mock.requests()
        .into_iter()
        .filter(|seen| seen.path.starts_with("/model/"))
        .collect()
}

fn text_of_stream(body: &str) -> String {
    body.split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|event| event["type"] == "content_block_delta")
        .filter_map(|event| event["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_signed_invocation_answers_in_the_anthropic_shape_blocking_and_streamed() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;

    let response = ask(&gw, false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from aibridge-mock.");
    let seen = invocations(&mock);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key, "AKIDK0", "signed with the first credential");
    assert_eq!(
        seen[0].path, INVOKE_PATH,
        "model mapped, `:` percent-encoded"
    );
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(
        sent["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14"])
    );
    assert!(
        sent.get("model").is_none() && sent.get("stream").is_none(),
        "{sent}"
    );
    let headers: Vec<&str> = seen[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !headers.contains(&"anthropic-beta"),
        "moved into the body: {headers:?}"
    );
    assert!(
        !headers.contains(&"x-api-key"),
        "the client's token stays here"
    );

    let response = ask(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = response.text().await.unwrap();
    let types = sse_event_types(&body);
    assert_eq!(
        types.first().map(String::as_str),
        Some("message_start"),
        "{body}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("message_stop"),
        "{body}"
    );
    assert_eq!(text_of_stream(&body), "Hello from aibridge-mock.");
    assert!(
        invocations(&mock)[1]
            .path
            .ends_with("/invoke-with-response-stream"),
        "{:?}",
        invocations(&mock)[1].path
    );
    // The record names the credential by its hint, never a secret.
    let records = wait_for_ended(&gw, None, 2).await;
    let hint = records[0]["key_hint"].as_str().unwrap();
    assert_eq!(
        hint,
        gw.keys("bedrock").await[0]["hint"],
        "the access key id, masked"
    );
    assert!(
        !hint.contains("AKIDK0") && !hint.contains("secret"),
        "{hint}"
    );
    // Usage of both, blocking and streamed, counted for that credential.
    let report: Value = client()
        .get(gw.url("/api/v1/usage?by=key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report:#}");
    assert_eq!(rows[0]["group"], hint);
    assert_eq!(rows[0]["requests"], 2);
    assert!(
        rows[0]["input_tokens"].as_i64().unwrap() >= 2 * 11,
        "{report:#}"
    );
    assert!(rows[0]["output_tokens"].as_i64().unwrap() > 0, "{report:#}");
}

#[tokio::test]
async fn throttling_cools_the_credential_and_the_next_one_serves() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    mock.script("AKIDK0", vec![Reply::exception("ThrottlingException")]);
    for stream in [false, true] {
        let response = ask(&gw, stream).send().await.unwrap();
        assert_eq!(response.status(), 200, "stream={stream}");
        let _ = response.text().await.unwrap();
    }
    let keys: Vec<String> = invocations(&mock).into_iter().map(|s| s.key).collect();
    assert_eq!(
        keys,
        ["AKIDK0", "AKIDK1", "AKIDK1"],
        "k0 rests: the stream goes to k1 at once"
    );
    let states = gw.keys("bedrock").await;
    assert_eq!(states[0]["state"], "cooling", "{states:#?}");
    let remaining = states[0]["cooldown_remaining_secs"].as_f64().unwrap();
    assert!(remaining > 50.0, "60 s without a hint: {:#?}", states[0]);
    assert_eq!(states[1]["state"], "valid");
}

#[tokio::test]
async fn a_refused_signature_disables_the_credential_by_name_without_a_check() {
    let mock = MockUpstream::start().await.unwrap();
    // Credential 0's secret is wrong: the fake Bedrock recomputes the signature and refuses it.
    let gw = start(&mock, "not-the-secret", "").await;
    let response = ask(&gw, false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let keys: Vec<String> = invocations(&mock).into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["AKIDK0", "AKIDK1"]);
    assert!(
        !mock
            .requests()
            .iter()
            .any(|s| s.path == "/foundation-models"),
        "the exception's name is enough: no check of the credential"
    );
    assert_eq!(
        gw.key_states("bedrock").await,
        ["disabled", "valid", "valid"]
    );
    let records = wait_for_ended(&gw, None, 1).await;
    let attempt = &records[0]["attempts"][0];
    assert_eq!(attempt["status"], 403);
    assert_eq!(attempt["key_check"], "named", "{attempt}");
    assert!(
        !gw.logs().contains("not-the-secret"),
        "no secret in the logs"
    );

    // An expired session token and an unknown key id are refused by name too; the API key
    // (bearer) serves when both access keys are out.
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    mock.script(
        "AKIDK0",
        vec![Reply::exception("UnrecognizedClientException")],
    );
    mock.script("AKIDK1", vec![Reply::exception("ExpiredTokenException")]);
    let response = ask(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        text_of_stream(&response.text().await.unwrap()),
        "Hello from aibridge-mock."
    );
    let seen = invocations(&mock);
    assert_eq!(seen.last().unwrap().key, "bedrock-key-2");
    let authorization = seen
        .last()
        .unwrap()
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(authorization, "Bearer bedrock-key-2");
    assert_eq!(
        gw.key_states("bedrock").await,
        ["disabled", "disabled", "valid"]
    );
}

#[tokio::test]
async fn errors_that_are_not_the_credentials_are_relayed_in_the_anthropic_dialect() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    for (exception, status, kind) in [
        ("AccessDeniedException", 403, "permission_error"),
        ("ModelNotReadyException", 429, "overloaded_error"),
        ("ValidationException", 400, "invalid_request_error"),
        ("InternalServerException", 500, "api_error"),
    ] {
        mock.reset();
        mock.script("AKIDK0", vec![Reply::exception(exception)]);
        let out = Outcome::of(ask(&gw, false).send().await.unwrap()).await;
        assert_eq!(out.status, status, "{exception}: {}", out.body);
        let body: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(body["type"], "error", "{exception}: {body}");
        assert_eq!(body["error"]["type"], kind, "{exception}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "Bedrock's message: {body}"
        );
        assert_eq!(invocations(&mock).len(), 1, "{exception}: no failover");
        assert_eq!(gw.key_states("bedrock").await[0], "valid", "{exception}");
    }
}

#[tokio::test]
async fn an_exhausted_pool_and_a_mid_stream_exception() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    for key in ["AKIDK0", "AKIDK1", "bedrock-key-2"] {
        mock.script(
            key,
            vec![Reply::exception("ThrottlingException").header("retry-after", "20")],
        );
    }
    let out = Outcome::of(ask(&gw, false).send().await.unwrap()).await;
    assert_eq!(out.status, 429, "{}", out.body);
    let body: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let retry_after: u64 = out.retry_after.unwrap().parse().unwrap();
    assert!((15..=20).contains(&retry_after), "{retry_after}");

    // After the first event, an exception frame is Anthropic's SSE error event.
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    mock.script(
        "AKIDK0",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::ErrorEvent)],
    );
    let response = ask(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let types = sse_event_types(&body);
    assert_eq!(
        types.first().map(String::as_str),
        Some("message_start"),
        "{body}"
    );
    assert_eq!(types.last().map(String::as_str), Some("error"), "{body}");
    let error = sse_data_of(&body, "error").unwrap();
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"].is_string(), "{error}");
    assert_eq!(
        invocations(&mock).len(),
        1,
        "no failover after the first event"
    );
}

#[tokio::test]
async fn an_unmapped_model_is_the_clients_mistake() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_ok(&mock).await;
    let mut body = messages_body(false);
    body["model"] = json!("claude-unknown");
    let out = Outcome::of(
        client()
            .post(gw.url("/bedrock/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.status, 400, "{}", out.body);
    let error: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-unknown")
    );
    assert!(invocations(&mock).is_empty());
}

#[tokio::test]
async fn models_count_tokens_and_a_refused_credential_that_comes_back() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(
        &mock,
        &bedrock_secret_for("AKIDK0"),
        "[key_pool]\nprobe_initial_interval = \"1s\"\n",
    )
    .await;
    // The model list is the configured models, answered by the gateway.
    let models: Value = client()
        .get(gw.url("/bedrock/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4-5"]);
    assert!(mock.requests().is_empty(), "nothing asked of Bedrock");

    // count_tokens is Bedrock's CountTokens for the mapped model, in Anthropic's shape.
    let counted: Value = client()
        .post(gw.url("/bedrock/v1/messages/count_tokens"))
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counted, json!({"input_tokens": 11}));
    let seen = &mock.requests()[0];
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    assert_eq!(seen.key, "AKIDK0");

    // A credential refused by name is disabled, then re-validated in the background
    // (`GET /foundation-models`, signed) and back in rotation.
    mock.script(
        "AKIDK0",
        vec![Reply::exception("UnrecognizedClientException")],
    );
    assert_eq!(ask(&gw, false).send().await.unwrap().status(), 200);
    assert_eq!(gw.key_states("bedrock").await[0], "disabled");
    let mut states = Vec::new();
    for _ in 0..100 {
        states = gw.key_states("bedrock").await;
        if states[0] == "valid" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(states, ["valid", "valid", "valid"]);
    let probe = mock
        .requests()
        .into_iter()
        .find(|s| s.path == "/foundation-models")
        .expect("the credential was re-validated");
    assert_eq!(probe.key, "AKIDK0");
    assert_eq!(probe.method, "GET");
}

#[tokio::test]
async fn mcp_tools_run_through_bedrock_and_the_metrics_name_the_provider() {
    use aibridge_mock::mcp::{McpMock, McpMockOptions};
    let mcp = McpMock::new(McpMockOptions::default())
        .start()
        .await
        .unwrap();
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(
        &mock,
        &bedrock_secret_for("AKIDK0"),
        &format!(
            "[[mcp_servers]]\nname = \"tools\"\nurl = \"{}\"\ntool_deny = \"^(secret|noop)\"\n",
            mcp.url()
        ),
    )
    .await;
    // Iteration 1 calls the gateway's tool; iteration 2 (a continuation, signed anew) answers.
    for stream in [false, true] {
        mock.reset();
        mock.script(
            "AKIDK0",
            vec![Reply::tool_call("bmcp_tools_add", json!({"a": 2, "b": 3})).with_text("Adding. ")],
        );
        let response = ask(&gw, stream).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = if stream {
            text_of_stream(&response.text().await.unwrap())
        } else {
            let body: Value = response.json().await.unwrap();
            body["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|block| block["text"].as_str())
                .collect()
        };
        assert_eq!(text, "Adding. Hello from aibridge-mock.", "stream={stream}");
        let seen = invocations(&mock);
        assert_eq!(seen.len(), 2, "stream={stream}");
        let first: Value = serde_json::from_str(&seen[0].body).unwrap();
        assert!(
            first["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|tool| tool["name"] == "bmcp_tools_add"),
            "injected into the InvokeModel body: {first}"
        );
        let continuation: Value = serde_json::from_str(&seen[1].body).unwrap();
        let result = &continuation["messages"][2]["content"][0];
        assert_eq!(result["type"], "tool_result", "{continuation}");
        assert_eq!(result["content"], "5");
        assert!(continuation.get("model").is_none(), "still Bedrock's body");
    }
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("aibridge_requests_total{")
                && line.contains("provider=\"bedrock\"")
                && line.contains("route=\"/v1/messages\"")
                && line.ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "aibridge_mcp_tool_calls_total{server=\"tools\",tool=\"add\",outcome=\"ok\"} 2"
        ),
        "{metrics}"
    );
}
