//! Identity and recording end to end: users and gateway tokens made with the CLI, requests from
//! two users through the real binary, then the usage report (CLI and API) and the request
//! records must show exactly what happened.

use std::time::Duration;

use crate::common::*;
use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Creates a user and a token for them with the CLI; returns the token.
fn token_for(gw: &Gateway, user: &str, admin: bool) -> String {
    let (ok, _, err) = gw.cli(&["user", "create", user]);
    assert!(ok || err.contains("already exists"), "{err}");
    let mut args = vec!["token", "create", "--user", user, "--label", "test"];
    if admin {
        args.push("--admin");
    }
    let (ok, out, err) = gw.cli(&args);
    assert!(ok, "{err}");
    let token = out.trim().to_string();
    assert!(
        token.starts_with("abk_") && token.len() == 68,
        "stdout is only the token: {out:?}"
    );
    token
}

async fn start_tokens_gateway(mock: &MockUpstream) -> Gateway {
    let base = format!("{}/v1", mock.url());
    Gateway::start(&[
        ("AIBRIDGE_AUTH", "tokens"),
        (
            "AIBRIDGE_ANTHROPIC_KEYS",
            "sk-ant-pool-key-00000000000A,sk-ant-pool-key-00000000000B",
        ),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", &mock.url()),
        ("AIBRIDGE_OPENAI_KEYS", "sk-openai-pool-key-000000001"),
        ("AIBRIDGE_OPENAI_BASE_URL", &base),
    ])
    .await
}

async fn admin_get(gw: &Gateway, token: &str, path: &str) -> Value {
    let response = client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn usage_rows(report: &Value) -> Vec<(String, i64, i64, i64, i64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_string(),
                r["requests"].as_i64().unwrap(),
                r["failovers"].as_i64().unwrap(),
                r["input_tokens"].as_i64().unwrap(),
                r["output_tokens"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_users_are_recorded_and_reported_exactly() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "sk-ant-pool-key-00000000000A",
        vec![Reply::status(429).header("retry-after", "60")],
    );
    let gw = start_tokens_gateway(&mock).await;
    let alice = token_for(&gw, "alice", false);
    let bob = token_for(&gw, "bob", false);
    let admin = token_for(&gw, "ops", true);

    // alice: a blocking message that fails over from key A to key B (2 messages → 12 input).
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [
        {"role": "user", "content": "first"}, {"role": "user", "content": "What is 2+2?"}]});
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", &alice)
        .header("anthropic-version", "2023-06-01")
        .header("user-agent", "claude-cli/2.0.1 (external, cli)")
        .header("x-claude-code-session-id", "sess-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // bob: a streaming chat completion (1 message → 11 prompt tokens, 7 deltas → 14 output).
    mock.script(
        "sk-openai-pool-key-000000001",
        vec![Reply::ok().stream_deltas(7)],
    );
    let response = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .bearer_auth(&bob)
        .json(&json!({"model": "gpt-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    let items = wait_for_ended(&gw, Some(&admin), 2).await;
    // Newest first.
    let (bobs, alices) = (&items[0], &items[1]);
    assert_eq!(alices["user"], "alice");
    assert_eq!(alices["provider_name"], "anthropic");
    assert_eq!(alices["model"], "claude-sonnet-4-5");
    assert_eq!(alices["streaming"], false);
    assert_eq!(alices["credential"], "pool");
    assert_eq!(alices["client"], "Claude Code");
    assert_eq!(alices["session_id"], "sess-42");
    assert_eq!(alices["status"], 200);
    assert_eq!(alices["outcome"], "completed");
    assert_eq!(
        alices["key_hint"], "sk-a...000B",
        "the key that actually served it"
    );
    let attempts: Vec<_> = alices["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["number"].as_i64().unwrap(),
                a["key_hint"].clone(),
                a["status"].clone(),
                a["failover_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (1, json!("sk-a...000A"), json!(429), json!("rate_limited")),
            (2, json!("sk-a...000B"), json!(200), Value::Null),
        ]
    );
    assert_eq!(alices["attempts"][0]["cooldown_ms"], 60_000);
    assert_eq!(alices["usage"][0]["input"], 12);
    assert_eq!(alices["usage"][0]["output"], 10);
    assert_eq!(alices["prompts"], json!(["What is 2+2?"]));

    assert_eq!(bobs["user"], "bob");
    assert_eq!(bobs["streaming"], true);
    assert_eq!(bobs["outcome"], "completed");
    assert_eq!(bobs["usage"][0]["input"], 11);
    assert_eq!(bobs["usage"][0]["output"], 14);
    assert_eq!(bobs["key_hint"], "sk-o...0001");

    // The same numbers from the API and the CLI.
    let report = admin_get(&gw, &admin, "/api/v1/usage?by=user").await;
    let expected = vec![
        ("alice".to_string(), 1, 1, 12, 10),
        ("bob".to_string(), 1, 0, 11, 14),
    ];
    assert_eq!(usage_rows(&report), expected);
    assert_eq!(report["totals"]["requests"], 2);
    let (ok, out, err) = gw.cli(&["usage", "--by", "user", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(usage_rows(&serde_json::from_str(&out).unwrap()), expected);
    let (ok, out, _) = gw.cli(&["usage", "--by", "key"]);
    assert!(ok);
    assert!(
        out.contains("sk-a...000B") && out.contains("TOTAL"),
        "{out}"
    );
    let report = admin_get(&gw, &admin, "/api/v1/usage?by=user&user=bob").await;
    assert_eq!(usage_rows(&report), [("bob".to_string(), 1, 0, 11, 14)]);

    // Key health shows how many requests each key served.
    let keys = admin_get(&gw, &admin, "/api/v1/keys").await;
    let anthropic = keys["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "anthropic")
        .unwrap();
    assert_eq!(anthropic["keys"][0]["requests_served"], 0);
    assert_eq!(anthropic["keys"][1]["requests_served"], 1);

    // Group names are those of `aibridge usage --by`; anything else is a 400.
    let response = client()
        .get(gw.url("/api/v1/usage?by=colour"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "invalid query parameter by: `colour` is not one of user, model, key, day, provider"
    );
    let report = admin_get(&gw, &admin, "/api/v1/usage?by=provider").await;
    assert_eq!(
        usage_rows(&report)
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>(),
        ["anthropic", "openai"]
    );

    // Non-admins do not reach the operator API.
    let response = client()
        .get(gw.url("/api/v1/usage"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_tokens_gateway(&mock).await;
    let token = token_for(&gw, "carol", false);
    assert_eq!(post_with_token(&gw, &token).await, 200);
    let (_, list, _) = gw.cli(&["token", "list"]);
    let id = list
        .lines()
        .find(|l| l.contains("carol"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !list.contains(&token[4..]),
        "token list never shows secrets"
    );
    let (ok, _, err) = gw.cli(&["token", "revoke", &id]);
    assert!(ok, "{err}");
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", &token)
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        mock.requests().len(),
        1,
        "the revoked request never went upstream"
    );
}

async fn post_with_token(gw: &Gateway, token: &str) -> u16 {
    client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", token)
        .json(&messages_body(false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_abandoned_stream_still_records_the_usage_seen_so_far() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().stream_deltas(20).event_delay_ms(200)],
    );
    let gw = start_pool(&mock.url(), "k0").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(body);

    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["outcome"], "client_disconnected", "{record:#}");
    assert_eq!(record["user"], "local");
    // message_start carried input_tokens (10 + 1 message) and output 1.
    assert_eq!(record["usage"][0]["input"], 11, "{record:#}");
    assert_eq!(record["usage"][0]["output"], 1);
}

#[tokio::test]
async fn mid_stream_failures_and_exhaustion_are_recorded_as_such() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::Cut)],
    );
    let gw = start_pool(&mock.url(), "k0").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert!(response.text().await.unwrap().contains("event: error"));
    mock.script("k0", vec![Reply::status(429).header("retry-after", "30")]);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        429
    );

    let items = wait_for_ended(&gw, None, 2).await;
    assert_eq!(items[1]["outcome"], "stream_failed", "{items:#?}");
    assert_eq!(
        items[1]["status"], 200,
        "the client got a 200 stream that ended in an error event"
    );
    assert_eq!(items[1]["usage"][0]["input"], 11);
    assert!(
        items[1]["error"]
            .as_str()
            .unwrap()
            .contains("upstream stream failed")
    );
    assert_eq!(items[0]["outcome"], "exhausted");
    assert_eq!(items[0]["status"], 429);
    assert_eq!(items[0]["attempts"][0]["failover_reason"], "rate_limited");
}

#[tokio::test]
async fn byok_and_passthrough_requests_are_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(401)]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = client()
        .get(gw.url("/anthropic/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-aibridge-token", "t")
        .header("x-api-key", "sk-user-own-key-0000000009")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let items = wait_for_ended(&gw, None, 2).await;
    let (byok, passthrough) = (&items[0], &items[1]);
    assert_eq!(passthrough["kind"], "passthrough");
    assert_eq!(passthrough["method"], "GET");
    assert_eq!(passthrough["route"], "/v1/models");
    assert_eq!(passthrough["status"], 200);
    assert_eq!(passthrough["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(
        passthrough["attempts"][0]["failover_reason"],
        "unauthorized"
    );
    assert_eq!(byok["credential"], "byok");
    assert!(
        byok["key_hint"].is_null(),
        "no pool key served a BYOK request"
    );
    assert_eq!(byok["attempts"].as_array().unwrap().len(), 1);
    let all = serde_json::to_string(&items).unwrap();
    assert!(
        !all.contains("sk-user-own-key"),
        "the user's key is not recorded"
    );
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let mock = MockUpstream::start().await.unwrap();
    let file = std::env::temp_dir().join(format!("aibridge-restart-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", file.display());
    let mock_url = mock.url();
    let env = [
        ("AIBRIDGE_DATABASE_URL", url.as_str()),
        ("AIBRIDGE_ANTHROPIC_KEYS", "k0"),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ];
    let gw = Gateway::start(&env).await;
    for _ in 0..3 {
        assert_eq!(
            post_messages(&gw, &messages_body(false)).await.status(),
            200
        );
    }
    // SIGTERM flushes the recorder before exiting.
    assert!(gw.terminate().await.success());

    let gw = Gateway::start(&env).await;
    let report: Value = get_json(&gw, "/api/v1/usage?by=model").await;
    assert_eq!(report["rows"][0]["group"], "claude-sonnet-4-5");
    assert_eq!(report["rows"][0]["requests"], 3);
    assert_eq!(report["rows"][0]["input_tokens"], 33);
    drop(gw);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

/// A blocking Messages request whose client stops waiting after `patience`.
async fn give_up_after(gw: &Gateway, patience: Duration) {
    let impatient = reqwest::Client::builder()
        .timeout(patience)
        .build()
        .unwrap();
    let result = impatient
        .post(gw.url("/anthropic/v1/messages"))
        .json(&messages_body(false))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
}

#[tokio::test]
async fn a_blocking_request_the_client_gave_up_on_is_still_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().delay_ms(1500)]);
    let gw = start_pool(&mock.url(), "k0").await;
    give_up_after(&gw, Duration::from_millis(300)).await;

    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["outcome"], "client_disconnected", "{record:#}");
    assert_eq!(
        record["prompts"],
        json!(["Say hello"]),
        "the prompt is kept"
    );
}

/// The answer's head has come, its body is still arriving when the client gives up: the rest
/// is read anyway, so the record keeps the usage and the status the upstream answered with.
#[tokio::test]
async fn a_blocking_answer_the_client_left_during_is_read_to_the_end() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().body_delay_ms(1500)]);
    let gw = start_pool(&mock.url(), "k0").await;
    give_up_after(&gw, Duration::from_millis(500)).await;

    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["outcome"], "client_disconnected", "{record:#}");
    assert_eq!(record["status"], 200, "{record:#}");
    assert_eq!(
        record["usage"][0]["input"], 11,
        "the usage is kept: {record:#}"
    );
    assert!(
        record["duration_ms"].as_i64().unwrap() >= 1400,
        "ended when the body had come, not when the client left: {record:#}"
    );
}

/// The operator API answers with the request served just before it, without waiting for the
/// writer's next batch (records wait up to 20 ms for company): the listing and the usage
/// report commit what is queued first.
#[tokio::test]
async fn the_operator_api_sees_a_request_served_just_before() {
    let mock = MockUpstream::start().await.unwrap();
    let mock_url = mock.url();
    let gw = Gateway::start(&[
        ("AIBRIDGE_ANTHROPIC_KEYS", "k0"),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ])
    .await;
    for round in 1..=3 {
        let response = post_messages(&gw, &messages_body(false)).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();

        let page: Value = get_json(&gw, "/api/v1/interceptions").await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), round, "{page}");
        assert_eq!(items[0]["outcome"], "completed", "{page}");

        let usage: Value = get_json(&gw, "/api/v1/usage?since=1h&by=user").await;
        assert_eq!(usage["rows"][0]["requests"], round, "{usage}");
    }
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let mock = MockUpstream::start().await.unwrap();
    let mock_url = mock.url();
    let gw = Gateway::start(&[
        ("AIBRIDGE_RECORDING", "off"),
        ("AIBRIDGE_ANTHROPIC_KEYS", "k0"),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ])
    .await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(post_messages(&gw, &messages_body(true)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page: Value = get_json(&gw, "/api/v1/interceptions").await;
    assert_eq!(page["items"], json!([]), "nothing recorded");
    assert_eq!(mock.requests().len(), 2, "but everything served");
}

/// Review item 4: each attempt is recorded as it ends, so a client that goes away while the
/// next key is being tried still leaves the failover visible.
#[tokio::test]
async fn a_failover_before_the_client_gave_up_is_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "key-first-1",
        vec![Reply::status(429).header("retry-after", "30")],
    );
    mock.script("key-second-2", vec![Reply::ok().delay_ms(1500)]);
    let gw = start_pool(&mock.url(), "key-first-1,key-second-2").await;
    give_up_after(&gw, Duration::from_millis(500)).await;

    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["outcome"], "client_disconnected", "{record:#}");
    assert_eq!(record["attempts"][0]["key_hint"], "ke...-1");
    assert_eq!(record["attempts"][0]["status"], 429, "{record:#}");
    assert_eq!(record["attempts"][0]["failover_reason"], "rate_limited");
    assert_eq!(record["attempt_count"], 1, "{record:#}");
}
