//! Anthropic routes of the mock, over a real socket.

use std::time::{Duration, Instant};

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn msg_body(n_messages: usize, stream: bool) -> Value {
    let messages: Vec<Value> = (0..n_messages)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .collect();
    json!({"model": "claude-test", "max_tokens": 64, "messages": messages, "stream": stream})
}

async fn post_messages(mock: &MockUpstream, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Splits an SSE chunk into (event name, data JSON); asserts it is exactly one event.
fn one_event(chunk: &[u8]) -> (String, Value) {
    let text = std::str::from_utf8(chunk).unwrap();
    assert!(
        text.ends_with("\n\n"),
        "chunk not one whole event: {text:?}"
    );
    let body = &text[..text.len() - 2];
    assert!(
        !body.contains("\n\n"),
        "chunk holds several events: {text:?}"
    );
    let mut lines = body.lines();
    let event = lines
        .next()
        .unwrap()
        .strip_prefix("event: ")
        .unwrap()
        .to_owned();
    let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
    assert!(lines.next().is_none());
    (event, serde_json::from_str(data).unwrap())
}

#[tokio::test]
async fn default_blocking_success_body() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = post_messages(&mock, "k1", &msg_body(3, false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["request-id"], "req_mock_1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "id": "msg_mock_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "Hello from aibridge-mock."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 13,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 10
            }
        })
    );
    // stream_deltas also drives the blocking output count.
    mock.script("k1", vec![Reply::ok().stream_deltas(2)]);
    let body: Value = post_messages(&mock, "k1", &msg_body(1, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["id"], "msg_mock_2");
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn streaming_sends_each_event_as_its_own_chunk() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::ok().stream_deltas(3).event_delay_ms(40)]);
    let started = Instant::now();
    let mut resp = post_messages(&mock, "k", &msg_body(2, true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push(started.elapsed());
        events.push(one_event(&chunk));
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // Flushed one by one: 8 pauses of 40 ms between the first and the last event.
    let spread = arrivals[8] - arrivals[0];
    assert!(spread >= Duration::from_millis(300), "spread {spread:?}");
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_mock_1");
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["input_tokens"], 12);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let text: String = events[3..6]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Hello from aibridge");
    assert_eq!(
        events[6].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[7].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 6}
        })
    );
    assert_eq!(events[8].1, json!({"type": "message_stop"}));
}

#[tokio::test]
async fn streaming_default_has_five_deltas_and_raw_ping() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = post_messages(&mock, "", &msg_body(1, true)).await;
    let text = resp.text().await.unwrap();
    assert_eq!(text.matches("event: content_block_delta\n").count(), 5);
    assert!(text.contains("event: ping\ndata: {\"type\": \"ping\"}\n\n"));
    assert!(text.contains("\"usage\":{\"output_tokens\":10}"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn fail_after_events_with_error_event_ends_cleanly() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![Reply::ok().fail_after_events(4, MidStreamFailure::ErrorEvent)],
    );
    let mut resp = post_messages(&mock, "k", &msg_body(1, true)).await;
    assert_eq!(resp.status(), 200);
    let mut events = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        events.push(one_event(&chunk));
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[4].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[tokio::test]
async fn fail_after_events_with_cut_breaks_the_body() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::ok().fail_after_events(2, MidStreamFailure::Cut),
            Reply::ok().fail_after_events(0, MidStreamFailure::Cut),
        ],
    );
    let mut resp = post_messages(&mock, "k", &msg_body(1, true)).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(one_event(&first).0, "message_start");
    let second = resp.chunk().await.unwrap().unwrap();
    assert_eq!(one_event(&second).0, "content_block_start");
    let err = resp.chunk().await.unwrap_err();
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );

    // Cut before any event: headers arrive, the body read fails.
    let resp = post_messages(&mock, "k", &msg_body(1, true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.is_err());

    // The mock is still serving afterwards.
    let resp = post_messages(&mock, "k", &msg_body(1, false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.hits("k"), 3);
}

#[tokio::test]
async fn fail_after_beyond_the_last_event_is_a_full_stream() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::ok()
                .stream_deltas(1)
                .fail_after_events(7, MidStreamFailure::Cut),
        ],
    );
    let text = post_messages(&mock, "k", &msg_body(1, true))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("event: ").count(), 7);
    assert!(text.ends_with("data: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn scripts_are_consumed_in_order_then_the_then_reply() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::status(429).header("retry-after", "5"),
            Reply::status(529),
            Reply::ok(),
        ],
    );
    mock.then("k", Reply::status(401));
    let body = msg_body(1, false);

    let r = post_messages(&mock, "k", &body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"].as_str().unwrap().len() > 3);

    let r = post_messages(&mock, "k", &body).await;
    assert_eq!(r.status(), 529);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"],
        json!({"type": "overloaded_error", "message": "Overloaded"})
    );

    let r = post_messages(&mock, "k", &body).await;
    assert_eq!(r.status(), 200);

    for _ in 0..2 {
        let r = post_messages(&mock, "k", &body).await;
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    // Another key is unaffected.
    assert_eq!(post_messages(&mock, "other", &body).await.status(), 200);
    assert_eq!(mock.hits("k"), 5);
    assert_eq!(mock.hits("other"), 1);

    // script() replaces the queue but keeps `then`.
    mock.script("k", vec![Reply::status(500)]);
    assert_eq!(post_messages(&mock, "k", &body).await.status(), 500);
    assert_eq!(post_messages(&mock, "k", &body).await.status(), 401);
}

#[tokio::test]
async fn error_types_per_status() {
    let mock = MockUpstream::start().await.unwrap();
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ];
    mock.script("k", cases.iter().map(|(s, _)| Reply::status(*s)).collect());
    for (status, ty) in cases {
        let r = post_messages(&mock, "k", &msg_body(1, true)).await;
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], ty, "status {status}");
    }
}

#[tokio::test]
async fn raw_body_overrides() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::status(400).body(r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#),
            Reply::ok().body(r#"{"custom":true}"#),
            Reply::ok().body("event: message_stop\ndata: {}\n\n"),
        ],
    );
    let r = post_messages(&mock, "k", &msg_body(1, false)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "prompt is too long");
    let r = post_messages(&mock, "k", &msg_body(1, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"custom":true}"#);
    let r = post_messages(&mock, "k", &msg_body(1, true)).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.text().await.unwrap(), "event: message_stop\ndata: {}\n\n");
}

#[tokio::test]
async fn validation_errors_are_400_and_still_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let url = format!("{}/v1/messages", mock.url());
    let cases: [(&str, &str); 5] = [
        (
            r#"{"model":"m","messages":[]}"#,
            "max_tokens: Field required",
        ),
        (r#"{"max_tokens":5,"messages":[]}"#, "model: Field required"),
        (
            r#"{"model":"m","max_tokens":5}"#,
            "messages: Field required",
        ),
        (
            r#"{"model":7,"max_tokens":5,"messages":[]}"#,
            "model: Input should be a valid string",
        ),
        (
            r#"{"model":"m","max_tokens":"5","messages":[]}"#,
            "max_tokens: Input should be a valid integer",
        ),
    ];
    for (body, message) in cases {
        let r = c
            .post(&url)
            .header("x-api-key", "bad")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        );
    }
    let r = c
        .post(&url)
        .header("x-api-key", "bad")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON")
    );

    let seen = mock.requests();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0].body, r#"{"model":"m","messages":[]}"#);
    assert_eq!(seen[5].body, "not json");
    assert_eq!(mock.hits("bad"), 6);

    // A scripted error wins over validation (like auth before validation), and consumes its step.
    mock.script("bad", vec![Reply::status(401)]);
    let r = c
        .post(&url)
        .header("x-api-key", "bad")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("x-api-key", "bad")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn delay_ms_waits_before_headers() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::ok().delay_ms(300)]);
    let started = Instant::now();
    let r = post_messages(&mock, "k", &msg_body(1, false)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    let r = post_messages(&mock, "k", &msg_body(1, false)).await;
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn models_and_count_tokens() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let r = c
        .get(format!("{}/v1/models?limit=20", mock.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            "data": [{
                "type": "model",
                "id": "claude-mock-1",
                "display_name": "Claude Mock 1",
                "created_at": "2025-01-01T00:00:00Z"
            }],
            "has_more": false,
            "first_id": "claude-mock-1",
            "last_id": "claude-mock-1"
        })
    );
    let v: Value = c
        .get(format!("{}/v1/models/claude-sonnet-4-5", mock.url()))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "model");
    assert_eq!(v["id"], "claude-sonnet-4-5");

    let r = c
        .post(format!("{}/v1/messages/count_tokens", mock.url()))
        .header("x-api-key", "k")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"input_tokens": 14})
    );

    let r = c
        .post(format!("{}/v1/messages/count_tokens", mock.url()))
        .header("x-api-key", "k")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let seen = mock.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].query.as_deref(), Some("limit=20"));
    assert_eq!(seen[1].path, "/v1/models/claude-sonnet-4-5");
    assert_eq!(seen[1].query, None);
    assert_eq!(seen[2].path, "/v1/messages/count_tokens");
}

#[tokio::test]
async fn every_route_consumes_a_step_and_unknown_is_404() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("probe", vec![Reply::status(401), Reply::status(403)]);
    let c = client();
    let r = c
        .get(format!("{}/v1/models", mock.url()))
        .header("x-api-key", "probe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let r = c
        .post(format!("{}/v1/messages/count_tokens", mock.url()))
        .header("x-api-key", "probe")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "permission_error"
    );

    let r = c
        .get(format!("{}/v1/nope", mock.url()))
        .header("x-api-key", "probe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"type": "error", "error": {"type": "not_found_error", "message": "Not found"}})
    );
    // Wrong method on a known path is a 404 too.
    let r = c
        .get(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", "probe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(mock.hits("probe"), 4);
}

#[tokio::test]
async fn seen_keys_from_x_api_key_and_bearer() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let url = format!("{}/v1/messages", mock.url());
    let body = msg_body(1, false);
    c.post(&url)
        .header("x-api-key", "sk-ant-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    c.post(&url)
        .bearer_auth("sk-bearer-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    c.post(&url)
        .header("x-api-key", "sk-wins")
        .bearer_auth("sk-loses")
        .json(&body)
        .send()
        .await
        .unwrap();
    c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(mock.seen_keys(), ["sk-ant-1", "sk-bearer-2", "sk-wins", ""]);
    assert_eq!(mock.hits(""), 1);

    // Scripts for the empty key apply to key-less requests.
    mock.script("", vec![Reply::status(401)]);
    assert_eq!(c.post(&url).json(&body).send().await.unwrap().status(), 401);

    let seen = mock.requests();
    let first = &seen[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/messages");
    assert!(
        first
            .headers
            .contains(&("x-api-key".to_owned(), "sk-ant-1".to_owned()))
    );
    assert!(
        first
            .headers
            .contains(&("content-type".to_owned(), "application/json".to_owned()))
    );
    assert!(first.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(serde_json::from_str::<Value>(&first.body).unwrap(), body);
    assert!(
        seen[1]
            .headers
            .contains(&("authorization".to_owned(), "Bearer sk-bearer-2".to_owned()))
    );

    mock.reset();
    assert!(mock.requests().is_empty());
    assert!(mock.seen_keys().is_empty());
    // reset forgot the script of "" too.
    assert_eq!(c.post(&url).json(&body).send().await.unwrap().status(), 200);
    assert_eq!(mock.seen_keys(), [""]);
}

#[tokio::test]
async fn json_keys_come_in_the_providers_order() {
    let mock = MockUpstream::start().await.unwrap();
    let text = post_messages(&mock, "k", &msg_body(1, false))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with(r#"{"id":"msg_mock_1","type":"message","content":[{"type":"text","text":"Hello from aibridge-mock."}],"#),
        "{text}"
    );
    let text = post_messages(&mock, "k", &msg_body(1, true))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_2\",\"type\":\"message\","),
        "{text}"
    );
    let text = client()
        .get(format!("{}/v1/nope", mock.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        r#"{"type":"error","error":{"type":"not_found_error","message":"Not found"}}"#
    );
}
