//! The gateway recording to the real PostgreSQL of this machine (AIBRIDGE_TEST_POSTGRES_URL).
//! Outside CI the tests skip with a printed reason when the variable is unset; in CI (CI=true)
//! a missing variable or server fails them. Each test works in a schema of its own.

use std::time::Duration;

use crate::common::*;
use aibridge_mock::{MockUpstream, Reply};
use serde_json::Value;

async fn gateway_on(schema: &PgSchema, mock: &MockUpstream, auth: &str) -> Gateway {
    let url = schema.url();
    let mock_url = mock.url();
    Gateway::start(&[
        ("AIBRIDGE_DATABASE_URL", url.as_str()),
        ("AIBRIDGE_AUTH", auth),
        (
            "AIBRIDGE_ANTHROPIC_KEYS",
            "sk-ant-pool-key-00000000000A,sk-ant-pool-key-00000000000B",
        ),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ])
    .await
}

#[tokio::test]
async fn users_tokens_and_usage_live_in_postgres_and_survive_a_restart() {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "sk-ant-pool-key-00000000000A",
        vec![Reply::status(429).header("retry-after", "60")],
    );
    let gw = gateway_on(&schema, &mock, "tokens").await;
    assert!(gw.cli(&["user", "create", "dana"]).0);
    let (ok, token, err) = gw.cli(&["token", "create", "--user", "dana"]);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    for stream in [false, true] {
        let response = client()
            .post(gw.url("/anthropic/v1/messages"))
            .header("x-api-key", &token)
            .json(&messages_body(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    assert!(
        gw.terminate().await.success(),
        "SIGTERM flushes the records"
    );

    let gw = gateway_on(&schema, &mock, "tokens").await;
    let (ok, out, err) = gw.cli(&["usage", "--by", "user", "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let row = &report["rows"][0];
    assert_eq!(row["group"], "dana");
    assert_eq!(row["requests"], 2);
    assert_eq!(
        row["failovers"], 1,
        "only the first request found key A rate-limited"
    );
    assert_eq!(row["input_tokens"], 22);
    assert_eq!(row["output_tokens"], 20);
    // The token still works after the restart.
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", &token)
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_request_that_cannot_be_recorded_is_refused_with_503() {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway_on(&schema, &mock, "none").await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );

    // The database loses the table records are written to.
    psql(
        &schema.admin_url,
        &format!("DROP TABLE {}.interceptions CASCADE", schema.name),
    );
    // A request admitted before any commit failed goes on (its start waits in memory for the
    // database); the commit that carries it fails, and from then on requests are refused.
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    // The key listing commits what is queued before it reads (its own read then fails).
    client().get(gw.url("/api/v1/keys")).send().await.unwrap();
    let requests_before = mock.requests().len();
    for (path, body) in [
        ("/anthropic/v1/messages", messages_body(false)),
        (
            "/openai/v1/chat/completions",
            serde_json::json!({"model": "m", "messages": []}),
        ),
    ] {
        let response = client()
            .post(gw.url(path))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{path}");
        let error: Value = response.json().await.unwrap();
        let message = if path.starts_with("/anthropic") {
            assert_eq!(error["type"], "error");
            assert_eq!(error["error"]["type"], "overloaded_error");
            error["error"]["message"].as_str().unwrap().to_string()
        } else {
            error["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains("cannot be recorded"), "{message}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        mock.requests().len(),
        requests_before,
        "nothing went upstream unrecorded"
    );
}
