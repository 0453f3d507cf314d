//! Scripted tool calls, answered in each API's wire format (blocking and streamed), over a real
//! socket.

use std::time::{Duration, Instant};

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply, ToolCallReply};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(mock: &MockUpstream, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.url()))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// (event, data) of each chunk of a named-event SSE body, each chunk being exactly one event.
async fn named_events(mut resp: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let text = std::str::from_utf8(&chunk).unwrap();
        let body = text.strip_suffix("\n\n").unwrap();
        let (event, data) = body.split_once('\n').unwrap();
        assert!(!data.contains('\n'), "{text:?}");
        out.push((
            event.strip_prefix("event: ").unwrap().to_owned(),
            serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
        ));
    }
    out
}

/// The `data:` payloads of an SSE body, each chunk being exactly one event.
async fn data_chunks(mut resp: reqwest::Response) -> Vec<String> {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
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

fn weather_args() -> Value {
    json!({"city": "Paris", "units": "celsius", "days": [1, 2], "detail": {"wind": true}})
}

fn messages_body(stream: bool) -> Value {
    json!({"model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": "weather?"}], "stream": stream})
}

fn chat_body(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "weather?"}], "stream": stream});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn responses_body(stream: bool) -> Value {
    json!({"model": "gpt-test", "input": "weather?", "stream": stream})
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

#[tokio::test]
async fn anthropic_blocking_tool_use() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args()).with_text("Let me check."),
            Reply::tool_call("get_weather", weather_args()),
        ],
    );
    let r = post(&mock, "/v1/messages", "k", &messages_body(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "msg_mock_1");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 10);
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0], json!({"type": "text", "text": "Let me check."}));
    assert_eq!(content[1]["type"], "tool_use");
    assert_eq!(content[1]["name"], "get_weather");
    assert_eq!(content[1]["input"], weather_args());
    let first_id = content[1]["id"].as_str().unwrap().to_owned();
    assert!(first_id.starts_with("toolu_"), "{first_id}");

    // Without text: the tool_use block alone, with a fresh id.
    let v: Value = post(&mock, "/v1/messages", "k", &messages_body(false))
        .await
        .json()
        .await
        .unwrap();
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["input"], weather_args());
    assert!(content[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_ne!(content[0]["id"], first_id.as_str());
    assert_eq!(v["stop_reason"], "tool_use");
}

#[tokio::test]
async fn anthropic_streamed_tool_use_with_text() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args())
                .with_text("Let me check.")
                .stream_deltas(3),
        ],
    );
    let r = post(&mock, "/v1/messages", "k", &messages_body(true)).await;
    assert_eq!(r.status(), 200);
    let events = named_events(r).await;
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
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(events[0].1["message"]["content"], json!([]));
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..6]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Let me check.");
    assert_eq!(events[6].1["index"], 0);

    let start = &events[7].1;
    assert_eq!(start["index"], 1);
    let block = &start["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    let pieces: Vec<&str> = events[8..11]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 1);
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(pieces.iter().all(|p| !p.is_empty()));
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(input, weather_args());
    assert_eq!(
        events[11].1,
        json!({"type": "content_block_stop", "index": 1})
    );
    assert_eq!(
        events[12].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 6}
        })
    );
}

#[tokio::test]
async fn anthropic_streamed_tool_use_alone() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::tool_call("noop", json!({}))]);
    let events = named_events(post(&mock, "/v1/messages", "k", &messages_body(true)).await).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    // `{}` has two chars: two pieces, the least a tool-call stream sends.
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[1].1["index"], 0);
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "noop");
    let json: String = events[3..5]
        .iter()
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(json, "{}");
    assert_eq!(events[6].1["delta"]["stop_reason"], "tool_use");
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

#[tokio::test]
async fn chat_blocking_tool_calls() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args()),
            Reply::tool_call("get_weather", weather_args()).with_text("Checking."),
        ],
    );
    let r = post(&mock, "/v1/chat/completions", "k", &chat_body(false, false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], Value::Null);
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments = calls[0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(arguments).unwrap(),
        weather_args()
    );
    assert_eq!(v["usage"]["completion_tokens"], 10);
    let first_id = calls[0]["id"].clone();

    let v: Value = post(&mock, "/v1/chat/completions", "k", &chat_body(false, false))
        .await
        .json()
        .await
        .unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_ne!(message["tool_calls"][0]["id"], first_id);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

/// A streamed chat completion put back together: (content, tool calls as (id, name, argument
/// pieces), finish reason, usage chunk).
#[derive(Debug, Default)]
struct ChatStream {
    content: Option<String>,
    calls: Vec<(String, String, Vec<String>)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

fn reassemble_chat(chunks: &[String]) -> ChatStream {
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let mut out = ChatStream::default();
    for chunk in &chunks[..chunks.len() - 1] {
        let c: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        if c["usage"].is_object() {
            out.usage = Some(c["usage"].clone());
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        assert!(out.finish_reason.is_none(), "a chunk after the finish");
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str() {
            out.content.get_or_insert_default().push_str(text);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
            if let Some(id) = call["id"].as_str() {
                assert_eq!(index, out.calls.len());
                assert_eq!(call["type"], "function");
                let name = call["function"]["name"].as_str().unwrap();
                out.calls.push((id.to_owned(), name.to_owned(), Vec::new()));
            }
            let piece = call["function"]["arguments"].as_str().unwrap();
            if !piece.is_empty() {
                out.calls[index].2.push(piece.to_owned());
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_owned());
        }
    }
    out
}

#[tokio::test]
async fn chat_streamed_tool_call_alone_with_usage() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::tool_call("get_weather", weather_args())]);
    let r = post(&mock, "/v1/chat/completions", "k", &chat_body(true, true)).await;
    assert_eq!(r.status(), 200);
    let chunks = data_chunks(r).await;
    // opening chunk (role + call), 5 argument pieces, finish chunk, usage chunk, [DONE]
    assert_eq!(chunks.len(), 1 + 5 + 1 + 1 + 1);
    let first: Value = serde_json::from_str(&chunks[0]).unwrap();
    let delta = &first["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant");
    assert_eq!(delta["content"], Value::Null);
    let opening = &delta["tool_calls"][0];
    assert_eq!(opening["index"], 0);
    assert_eq!(opening["type"], "function");
    assert_eq!(opening["function"]["arguments"], "");
    for chunk in &chunks[1..6] {
        let c: Value = serde_json::from_str(chunk).unwrap();
        let call = &c["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call.as_object().unwrap().len(), 2, "{call}");
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"].as_object().unwrap().len(), 1, "{call}");
    }

    let s = reassemble_chat(&chunks);
    assert_eq!(s.content, None);
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(s.calls.len(), 1);
    let (id, name, pieces) = &s.calls[0];
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(name, "get_weather");
    assert!(pieces.len() >= 2);
    let arguments: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(arguments, weather_args());
    let usage = s.usage.unwrap();
    assert_eq!(usage["prompt_tokens"], 11);
    assert_eq!(usage["completion_tokens"], 10);
}

#[tokio::test]
async fn chat_streamed_tool_call_with_text_without_usage() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args())
                .with_text("Checking the weather.")
                .stream_deltas(2),
        ],
    );
    let chunks =
        data_chunks(post(&mock, "/v1/chat/completions", "k", &chat_body(true, false)).await).await;
    // role chunk, 2 content pieces, call opening, 2 argument pieces, finish chunk, [DONE]
    assert_eq!(chunks.len(), 1 + 2 + 1 + 2 + 1 + 1);
    assert!(chunks.iter().all(|c| !c.contains("usage")));
    let first: Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(first["choices"][0]["delta"].get("tool_calls").is_none());
    let opening: Value = serde_json::from_str(&chunks[3]).unwrap();
    let call = &opening["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "");

    let s = reassemble_chat(&chunks);
    assert_eq!(s.content.as_deref(), Some("Checking the weather."));
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    let (_, name, pieces) = &s.calls[0];
    assert_eq!(name, "get_weather");
    assert_eq!(pieces.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&pieces.concat()).unwrap(),
        weather_args()
    );
    assert_eq!(s.usage, None);
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

#[tokio::test]
async fn responses_blocking_function_call() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args()).with_text("Let me check."),
            Reply::tool_call("get_weather", weather_args()),
        ],
    );
    let r = post(&mock, "/v1/responses", "k", &responses_body(false)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 10);
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output[0]["content"][0]["type"], "output_text");
    assert_eq!(output[0]["content"][0]["text"], "Let me check.");
    let call = &output[1];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, weather_args());
    let first_call_id = call["call_id"].clone();

    let v: Value = post(&mock, "/v1/responses", "k", &responses_body(false))
        .await
        .json()
        .await
        .unwrap();
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "function_call");
    assert_ne!(output[0]["call_id"], first_call_id);
}

/// Checks the shared framing of a Responses stream: `type` = event name, `sequence_number`
/// strictly increasing from 0.
fn check_sequence(events: &[(String, Value)]) {
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "{name}");
    }
}

#[tokio::test]
async fn responses_streamed_function_call_with_text() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k",
        vec![
            Reply::tool_call("get_weather", weather_args())
                .with_text("Let me check.")
                .stream_deltas(3),
        ],
    );
    let r = post(&mock, "/v1/responses", "k", &responses_body(true)).await;
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
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    check_sequence(&events);
    for (_, data) in &events[2..10] {
        assert_eq!(data["output_index"], 0);
    }
    let text: String = events[4..7]
        .iter()
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Let me check.");
    assert_eq!(events[7].1["text"], "Let me check.");

    let added = &events[10].1;
    assert_eq!(added["output_index"], 1);
    let item = &added["item"];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["status"], "in_progress");
    assert_eq!(item["arguments"], "");
    assert_eq!(item["name"], "get_weather");
    let item_id = item["id"].as_str().unwrap();
    assert!(item_id.starts_with("fc_"), "{item_id}");
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    let arguments: String = events[11..14]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["item_id"], item_id);
            assert_eq!(d["output_index"], 1);
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        weather_args()
    );
    let done = &events[14].1;
    assert_eq!(done["item_id"], item_id);
    assert_eq!(done["output_index"], 1);
    assert_eq!(done["arguments"], arguments.as_str());
    let item_done = &events[15].1;
    assert_eq!(item_done["output_index"], 1);
    assert_eq!(item_done["item"]["status"], "completed");
    assert_eq!(item_done["item"]["arguments"], arguments.as_str());
    assert_eq!(item_done["item"]["call_id"], item["call_id"]);

    let response = &events[16].1["response"];
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"].as_array().unwrap().len(), 2);
    assert_eq!(response["output"][0]["content"][0]["text"], "Let me check.");
    assert_eq!(response["output"][1], item_done["item"]);
    assert_eq!(response["usage"]["output_tokens"], 6);
}

#[tokio::test]
async fn responses_streamed_function_call_alone() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k", vec![Reply::tool_call("get_weather", weather_args())]);
    let events = named_events(post(&mock, "/v1/responses", "k", &responses_body(true)).await).await;
    check_sequence(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| {
            assert_eq!(d["output_index"], 0);
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(deltas.len(), 5);
    assert_eq!(
        serde_json::from_str::<Value>(&deltas.concat()).unwrap(),
        weather_args()
    );
    for (_, data) in &events[2..events.len() - 1] {
        assert_eq!(data["output_index"], 0);
    }
    let output = &events.last().unwrap().1["response"]["output"];
    assert_eq!(output.as_array().unwrap().len(), 1);
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["name"], "get_weather");
}

// ---------------------------------------------------------------------------------------------
// Scripting and the other reply settings

#[tokio::test]
async fn tool_call_scripted_over_the_control_api() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let r = c
        .post(format!("{}/_mock/script", mock.url()))
        .json(&json!({
            "key": "k",
            "steps": [
                {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}, "text": "Sure."}},
                {"tool_call": {"name": "noop"}}
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let v: Value = post(&mock, "/v1/messages", "k", &messages_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], "Sure.");
    assert_eq!(v["content"][1]["input"], json!({"city": "Paris"}));
    // `arguments` defaults to `{}`.
    let v: Value = post(&mock, "/v1/chat/completions", "k", &chat_body(false, false))
        .await
        .json()
        .await
        .unwrap();
    let function = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(function["name"], "noop");
    assert_eq!(function["arguments"], "{}");

    // Arguments that are not an object are a bad script.
    let r = c
        .post(format!("{}/_mock/script", mock.url()))
        .json(&json!({"key": "k", "steps": [{"tool_call": {"name": "x", "arguments": "[1]"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The builder and the JSON form are the same reply.
    let reply: Reply = serde_json::from_value(json!({
        "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}, "text": "Sure."}
    }))
    .unwrap();
    assert_eq!(
        reply,
        Reply::tool_call("get_weather", json!({"city": "Paris"})).with_text("Sure.")
    );
    assert_eq!(
        reply.tool_call,
        Some(ToolCallReply {
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
            text: Some("Sure.".into()),
        })
    );
}

#[tokio::test]
async fn tool_call_keeps_failures_delays_headers_and_raw_bodies() {
    let mock = MockUpstream::start().await.unwrap();
    let call = || Reply::tool_call("get_weather", weather_args());
    mock.script(
        "k",
        vec![
            call().fail_after_events(4, MidStreamFailure::ErrorEvent),
            call().fail_after_events(3, MidStreamFailure::Cut),
            call()
                .delay_ms(200)
                .event_delay_ms(30)
                .header("x-scripted", "yes"),
            call().body(r#"{"raw":true}"#),
            Reply::status(429).with_text("ignored"),
        ],
    );

    // Error event in the middle of the arguments.
    let events = named_events(post(&mock, "/v1/messages", "k", &messages_body(true)).await).await;
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
    assert_eq!(events[3].1["delta"]["type"], "input_json_delta");

    // Cut after three events: the body breaks.
    let mut r = post(&mock, "/v1/responses", "k", &responses_body(true)).await;
    assert_eq!(r.status(), 200);
    for _ in 0..3 {
        assert!(r.chunk().await.unwrap().is_some());
    }
    assert!(r.chunk().await.is_err());

    // Delays and headers.
    let started = Instant::now();
    let r = post(&mock, "/v1/chat/completions", "k", &chat_body(true, false)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.headers()["x-scripted"], "yes");
    let chunks = data_chunks(r).await;
    assert!(started.elapsed() >= Duration::from_millis(200 + 30 * 7));
    let s = reassemble_chat(&chunks);
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        serde_json::from_str::<Value>(&s.calls[0].2.concat()).unwrap(),
        weather_args()
    );

    // A raw body wins over the tool call; errors stay errors.
    let r = post(&mock, "/v1/chat/completions", "k", &chat_body(false, false)).await;
    assert_eq!(r.text().await.unwrap(), r#"{"raw":true}"#);
    let r = post(&mock, "/v1/chat/completions", "k", &chat_body(false, false)).await;
    assert_eq!(r.status(), 429);
}
