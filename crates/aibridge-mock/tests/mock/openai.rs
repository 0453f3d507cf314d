//! OpenAI routes of the mock (chat completions, responses, models, errors), over a real socket.

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(mock: &MockUpstream, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, each chunk being exactly one event.
async fn data_chunks(mut resp: reqwest::Response) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let text = std::str::from_utf8(&chunk).unwrap();
        let payload = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!payload.contains('\n'), "{text:?}");
        out.push(payload.to_owned());
    }
    out
}

/// (event, data) of each chunk of a named-event SSE body.
async fn named_events(mut resp: reqwest::Response) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let text = std::str::from_utf8(&chunk).unwrap();
        let body = text.strip_suffix("\n\n").unwrap();
        let (event, data) = body.split_once('\n').unwrap();
        out.push((
            event.strip_prefix("event: ").unwrap().to_owned(),
            serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
        ));
    }
    out
}

fn chat_body(n: usize, stream: bool, include_usage: bool) -> Value {
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let mut body = json!({"model": "gpt-test", "messages": messages, "stream": stream});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn chat_blocking_body() {
    let mock = MockUpstream::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/chat/completions",
        "sk-o",
        &chat_body(2, false, false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req_mock_1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "chatcmpl-mock-1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello from aibridge-mock.", "refusal": null, "annotations": []})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 22);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(mock.seen_keys(), ["sk-o"]);
}

#[tokio::test]
async fn chat_streaming_with_usage_ends_with_done() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::ok().stream_deltas(2).event_delay_ms(10)]);
    let r = post(
        &mock,
        "/v1/chat/completions",
        "k",
        &chat_body(1, true, true),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let chunks = data_chunks(r).await;
    // role chunk, 2 deltas, finish chunk, usage chunk, [DONE]
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks[5], "[DONE]");
    let parsed: Vec<Value> = chunks[..5]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    for c in &parsed {
        assert_eq!(c["id"], "chatcmpl-mock-1");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test");
    }
    assert!(chunks[0].starts_with(r#"{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","#));
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(parsed[0]["usage"], Value::Null);
    assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "Hello");
    assert_eq!(parsed[2]["choices"][0]["delta"]["content"], " from");
    assert_eq!(parsed[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(parsed[4]["choices"], json!([]));
    assert_eq!(parsed[4]["usage"]["prompt_tokens"], 11);
    assert_eq!(parsed[4]["usage"]["completion_tokens"], 4);
    assert_eq!(parsed[4]["usage"]["total_tokens"], 15);
}

#[tokio::test]
async fn chat_streaming_without_usage_has_no_usage_chunk() {
    let mock = MockUpstream::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/chat/completions",
        "k",
        &chat_body(1, true, false),
    )
    .await;
    let chunks = data_chunks(r).await;
    assert_eq!(chunks.len(), 1 + 5 + 1 + 1);
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    assert!(chunks.iter().all(|c| !c.contains("usage")));
}

#[tokio::test]
async fn chat_mid_stream_failures() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::ok().fail_after_events(2, MidStreamFailure::ErrorEvent),
            Reply::ok().fail_after_events(1, MidStreamFailure::Cut),
        ],
    );
    let chunks = data_chunks(
        post(
            &mock,
            "/v1/chat/completions",
            "k",
            &chat_body(1, true, true),
        )
        .await,
    )
    .await;
    assert_eq!(chunks.len(), 3);
    let err: Value = serde_json::from_str(&chunks[2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(!chunks.contains(&"[DONE]".to_owned()));

    let mut r = post(
        &mock,
        "/v1/chat/completions",
        "k",
        &chat_body(1, true, true),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    assert!(r.chunk().await.is_err());
}

#[tokio::test]
async fn chat_validation_and_error_shapes() {
    let mock = MockUpstream::start().await.unwrap();
    let r = post(&mock, "/v1/chat/completions", "k", &json!({"model": "m"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter"
        }})
    );
    mock.script(
        "k",
        vec![
            Reply::status(401),
            Reply::status(429).header("retry-after", "2"),
            Reply::status(500),
        ],
    );
    let body = chat_body(1, true, false);
    let r = post(&mock, "/v1/chat/completions", "k", &body).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = post(&mock, "/v1/chat/completions", "k", &body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );
    let r = post(&mock, "/v1/chat/completions", "k", &body).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test]
async fn responses_blocking_body() {
    let mock = MockUpstream::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/responses",
        "k",
        &json!({"model": "gpt-test", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "resp_mock_1");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(
        v["output"],
        json!([{
            "id": "msg_mock_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello from aibridge-mock.", "annotations": [], "logprobs": []}]
        }])
    );
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 21);

    let v: Value = post(
        &mock,
        "/v1/responses",
        "k",
        &json!({"model": "gpt-test", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["usage"]["input_tokens"], 13);
}

#[tokio::test]
async fn responses_streaming_sequence() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::ok().stream_deltas(3)]);
    let r = post(
        &mock,
        "/v1/responses",
        "k",
        &json!({"model": "gpt-test", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = named_events(r).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["id"], "resp_mock_1");
    assert_eq!(events[4].1["delta"], "Hello");
    assert_eq!(events[7].1["text"], "Hello from aibridge");
    let done = &events[10].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "Hello from aibridge"
    );
    assert_eq!(done["usage"]["input_tokens"], 11);
    assert_eq!(done["usage"]["output_tokens"], 6);
}

#[tokio::test]
async fn responses_mid_stream_error_event() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::ErrorEvent)],
    );
    let r = post(
        &mock,
        "/v1/responses",
        "k",
        &json!({"model": "m", "input": "hi", "stream": true}),
    )
    .await;
    let events = named_events(r).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].0, "error");
    assert_eq!(events[3].1["type"], "error");
    assert_eq!(events[3].1["code"], "server_error");
    assert_eq!(events[3].1["sequence_number"], 3);
}

#[tokio::test]
async fn models_and_404_follow_the_dialect() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    // Bearer without anthropic-version: OpenAI shape.
    let v: Value = c
        .get(format!("{}/v1/models", mock.url()))
        .bearer_auth("sk-o")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [{"id": "gpt-mock-1", "object": "model", "created": 1_735_689_600, "owned_by": "aibridge-mock"}]})
    );
    // Bearer with anthropic-version: Anthropic shape.
    let v: Value = c
        .get(format!("{}/v1/models", mock.url()))
        .bearer_auth("sk-a")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);

    let r = c
        .get(format!("{}/v1/models/gpt-4o", mock.url()))
        .bearer_auth("sk-o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["object"], "model");

    let r = c
        .post(format!("{}/v1/chat/nope", mock.url()))
        .bearer_auth("sk-o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": {"message": "Invalid URL (POST /v1/chat/nope)", "type": "invalid_request_error", "param": null, "code": null}})
    );
    assert_eq!(mock.seen_keys(), ["sk-o", "sk-a", "sk-o", "sk-o"]);
}
