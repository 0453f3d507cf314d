//! MCP tool injection and the inner agentic loop on blocking requests, across the three APIs:
//! the real binary, a real MCP server (rmcp, in aibridge-mock) and the fake model answering with
//! tool calls in each API's own format.

use aibridge_mock::mcp::{McpMock, McpMockOptions, McpMockServer};
use aibridge_mock::{MockUpstream, Reply};
use serde_json::{Value, json};

use crate::common::*;

async fn mcp_server() -> McpMockServer {
    McpMock::new(McpMockOptions::default())
        .start()
        .await
        .unwrap()
}

async fn start(api: TestApi, mock: &MockUpstream, mcp: &McpMockServer, extra: &str) -> Gateway {
    let config = format!(
        "[[mcp_servers]]\nname = \"tools\"\nurl = \"{}\"\ntool_deny = \"^(secret|noop)\"\n{extra}",
        mcp.url()
    );
    let (keys, base) = match api {
        TestApi::Messages => ("AIBRIDGE_ANTHROPIC_KEYS", "AIBRIDGE_ANTHROPIC_BASE_URL"),
        TestApi::Chat | TestApi::Responses => ("AIBRIDGE_OPENAI_KEYS", "AIBRIDGE_OPENAI_BASE_URL"),
    };
    let base_url = match api {
        TestApi::Messages => mock.url(),
        _ => format!("{}/v1", mock.url()),
    };
    Gateway::start_with_config(
        Some(&config),
        &[(keys, "k0,k1".to_string()), (base, base_url)],
    )
    .await
}

/// The model's answer calling `tool` with `arguments`, in `api`'s blocking format.
fn tool_call_answer(api: TestApi, id: &str, tool: &str, arguments: Value) -> String {
    let usage_in = 10;
    match api {
        TestApi::Messages => json!({
            "id": "msg_tool", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me add. "},
                {"type": "tool_use", "id": id, "name": tool, "input": arguments}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": usage_in, "output_tokens": 5}
        }),
        TestApi::Chat => json!({
            "id": "chatcmpl-tool", "object": "chat.completion", "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me add. ",
                "tool_calls": [{"id": id, "type": "function", "function": {"name": tool, "arguments": arguments.to_string()}}]
            }}],
            "usage": {"prompt_tokens": usage_in, "completion_tokens": 5, "total_tokens": 15}
        }),
        TestApi::Responses => json!({
            "id": "resp_tool", "object": "response", "model": "gpt-5", "status": "completed",
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me add. "}]},
                {"type": "function_call", "call_id": id, "name": tool, "arguments": arguments.to_string()}
            ],
            "usage": {"input_tokens": usage_in, "output_tokens": 5, "total_tokens": 15}
        }),
    }
    .to_string()
}

fn upstream_bodies(mock: &MockUpstream, api: TestApi) -> Vec<Value> {
    let path = match api {
        TestApi::Messages => "/v1/messages",
        TestApi::Chat => "/v1/chat/completions",
        TestApi::Responses => "/v1/responses",
    };
    mock.requests()
        .iter()
        .filter(|seen| seen.path == path)
        .map(|seen| serde_json::from_str(&seen.body).unwrap())
        .collect()
}

/// The text the client got, whatever the API.
fn answer_text(api: TestApi, body: &Value) -> String {
    match api {
        TestApi::Messages => body["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect(),
        TestApi::Chat => body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        TestApi::Responses => body["output"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|item| item["content"].as_array().into_iter().flatten())
            .filter_map(|part| part["text"].as_str())
            .collect(),
    }
}

/// The tool names the upstream was offered.
fn offered(api: TestApi, body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| match api {
            TestApi::Chat => t["function"]["name"].as_str().unwrap().to_string(),
            _ => t["name"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[tokio::test]
async fn the_gateway_runs_the_tools_the_model_calls_and_the_client_gets_one_answer() {
    for api in APIS {
        let mcp = mcp_server().await;
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            "k0",
            vec![Reply::ok().body(tool_call_answer(
                api,
                "call_1",
                "bmcp_tools_add",
                json!({"a": 2, "b": 3}),
            ))],
        );
        let gw = start(api, &mock, &mcp, "").await;
        let response = api.request(&gw, false).send().await.unwrap();
        assert_eq!(response.status(), 200, "{api:?}");
        let body: Value = response.json().await.unwrap();
        let text = answer_text(api, &body);
        assert!(
            text.starts_with("Let me add. "),
            "{api:?}: earlier text first: {text}"
        );
        assert!(
            text.len() > "Let me add. ".len(),
            "{api:?}: then the final answer: {text}"
        );

        let sent = upstream_bodies(&mock, api);
        assert_eq!(sent.len(), 2, "{api:?}: one continuation");
        let tools = offered(api, &sent[0]);
        assert!(
            tools.contains(&"bmcp_tools_add".to_string()),
            "{api:?}: {tools:?}"
        );
        assert!(tools.contains(&"bmcp_tools_fail".to_string()));
        assert!(
            !tools.iter().any(|t| t.contains("secret")),
            "denied: {tools:?}"
        );
        let continuation = sent[1].to_string();
        assert!(continuation.contains("call_1"), "{api:?}: {continuation}");
        assert!(
            continuation.contains("\"5\"") || continuation.contains(":\"5\""),
            "{api:?}: the tool's result goes back to the model: {continuation}"
        );
        match api {
            TestApi::Messages => {
                assert_eq!(sent[0]["tool_choice"]["disable_parallel_tool_use"], true);
                assert_eq!(body["usage"]["input_tokens"], 10 + 10 + 3, "summed: {body}");
            }
            TestApi::Chat | TestApi::Responses => {
                assert_eq!(sent[0]["parallel_tool_calls"], false);
            }
        }
        let calls = mcp.mock().calls();
        assert_eq!(calls.len(), 1, "{api:?}");
        // One record: the tool the gateway ran, with where it lives and what it gave.
        let records = wait_for_ended(&gw, None, 1).await;
        let runs: Vec<&Value> = records[0]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|call| call["injected"] == true)
            .collect();
        assert_eq!(runs.len(), 1, "{api:?}: {:#}", records[0]);
        assert_eq!(runs[0]["name"], "bmcp_tools_add");
        assert_eq!(runs[0]["tool_call_id"], "call_1");
        let run = &runs[0]["run"];
        assert_eq!(run["server_name"], "tools");
        assert_eq!(run["server_url"], mcp.url());
        assert_eq!(run["tool_name"], "add");
        assert_eq!(run["result"], "5");
        assert!(run["error"].is_null());
        // Metrics count the call by the tool's own name.
        let metrics = client()
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(
                "aibridge_mcp_tool_calls_total{server=\"tools\",tool=\"add\",outcome=\"ok\"} 1"
            ),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_continuation_fails_over_on_its_own_and_tool_errors_go_back_to_the_model() {
    let api = TestApi::Messages;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    // Iteration 1 on k0 calls the failing tool; iteration 2 gets 429 on k0, then k1 answers.
    mock.script(
        "k0",
        vec![
            Reply::ok().body(tool_call_answer(
                api,
                "call_9",
                "bmcp_tools_fail",
                json!({}),
            )),
            Reply::status(429).header("retry-after", "30"),
        ],
    );
    let gw = start(api, &mock, &mcp, "").await;
    let response = api.request(&gw, false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["k0", "k0", "k1"]);
    let sent = upstream_bodies(&mock, api);
    let result = &sent[1]["messages"][2]["content"][0];
    assert_eq!(result["tool_use_id"], "call_9");
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(
        sent[2]["messages"], sent[1]["messages"],
        "the same continuation on k1"
    );
    assert_eq!(gw.key_states("anthropic").await, ["cooling", "valid"]);
    // One record: three attempts numbered through both iterations.
    let records = wait_for_ended(&gw, None, 1).await;
    let attempts = records[0]["attempts"].as_array().unwrap();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3], "{:#}", records[0]);
    let run = &records[0]["tool_calls"][0]["run"];
    assert_eq!(run["tool_name"], "fail");
    assert!(run["result"].is_null() && run["error"].is_string(), "{run}");
}

#[tokio::test]
async fn client_tools_and_unknown_bmcp_tools_and_the_iteration_bound() {
    let api = TestApi::Chat;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    // A client tool: relayed as it came.
    let client_call = tool_call_answer(api, "call_c", "client_search", json!({"q": "x"}));
    mock.script("k0", vec![Reply::ok().body(client_call.clone())]);
    let gw = start(api, &mock, &mcp, "[mcp]\nmax_iterations = 2\n").await;
    let response = api.request(&gw, false).send().await.unwrap();
    let relayed: Value = response.json().await.unwrap();
    assert_eq!(
        relayed,
        serde_json::from_str::<Value>(&client_call).unwrap()
    );
    assert!(mcp.mock().calls().is_empty());

    // A denied tool called anyway: a tool error for the model, not a call.
    mock.reset();
    mock.script(
        "k0",
        vec![Reply::ok().body(tool_call_answer(
            api,
            "call_s",
            "bmcp_tools_secret_lookup",
            json!({}),
        ))],
    );
    let response = api.request(&gw, false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let sent = upstream_bodies(&mock, api);
    let result = sent[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        result["content"].as_str().unwrap().contains("not found"),
        "{result}"
    );
    assert!(
        mcp.mock().calls().is_empty(),
        "a denied tool is never called"
    );
    // Its record shows the call the gateway answered, with no server and the error.
    let records = wait_for_ended(&gw, None, 2).await;
    let denied = find_tool_call(&records, "bmcp_tools_secret_lookup");
    assert_eq!(denied["injected"], true, "{denied}");
    assert_eq!(denied["tool_call_id"], "call_s");
    assert_eq!(denied["run"]["server_name"], "", "{denied}");
    assert_eq!(denied["run"]["tool_name"], "bmcp_tools_secret_lookup");
    assert!(
        denied["run"]["error"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{denied}"
    );

    // An answer calling the client's tool and the gateway's at once is the client's: relayed,
    // the gateway's call not run but recorded as such.
    mock.reset();
    let mixed = json!({
        "id": "chatcmpl-mixed", "object": "chat.completion", "model": "gpt-5",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [
                {"id": "call_m1", "type": "function", "function": {"name": "client_search", "arguments": "{}"}},
                {"id": "call_m2", "type": "function", "function": {"name": "bmcp_tools_add", "arguments": "{\"a\":1,\"b\":2}"}}
            ]
        }}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    });
    mock.script("k0", vec![Reply::ok().body(mixed.to_string())]);
    let relayed: Value = api
        .request(&gw, false)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(relayed, mixed);
    assert!(mcp.mock().calls().is_empty());
    let records = wait_for_ended(&gw, None, 3).await;
    let not_run = find_tool_call(&records, "call_m2");
    assert_eq!(not_run["injected"], true, "{not_run}");
    assert!(not_run["run"].is_null(), "{not_run}");
    assert_eq!(find_tool_call(&records, "call_m1")["injected"], false);

    // The model keeps calling: past max_iterations the client gets a 502 in its dialect.
    mock.reset();
    let again = tool_call_answer(api, "call_a", "bmcp_tools_add", json!({"a": 1, "b": 1}));
    mock.script(
        "k0",
        vec![Reply::ok().body(again.clone()), Reply::ok().body(again)],
    );
    let out = Outcome::of(api.request(&gw, false).send().await.unwrap()).await;
    assert_eq!(out.status, 502, "{}", out.body);
    let error: Value = serde_json::from_str(&out.body).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_iterations")
    );
    assert_eq!(
        upstream_bodies(&mock, api).len(),
        2,
        "no more upstream calls than the bound"
    );
}

/// The tool call named `name` (or with that call id) among `records`' tool calls.
fn find_tool_call(records: &[Value], name: &str) -> Value {
    records
        .iter()
        .flat_map(|record| record["tool_calls"].as_array().cloned().unwrap_or_default())
        .find(|call| call["name"] == name || call["tool_call_id"] == name)
        .unwrap_or_else(|| panic!("no tool call {name} in {records:#?}"))
}

#[tokio::test]
async fn a_server_down_at_start_never_stops_the_gateway() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mock = MockUpstream::start().await.unwrap();
    let config =
        format!("[[mcp_servers]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n");
    let gw = Gateway::start_with_config(Some(&config), &pool_env(&mock.url(), "k0")).await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    let sent = upstream_bodies(&mock, TestApi::Messages);
    assert!(
        sent[0].get("tools").is_none(),
        "nothing to inject: {}",
        sent[0]
    );
    assert!(
        gw.logs().contains("MCP server not listed at start"),
        "{}",
        gw.logs()
    );
}

/// The first iteration of a stream, calling the gateway's `add` tool.
fn streamed_tool_call() -> String {
    let sse = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    [
        sse("message_start", json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}})),
        sse("content_block_start", json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
        sse("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me add. "}})),
        sse("content_block_stop", json!({"type":"content_block_stop","index":0})),
        sse("content_block_start", json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bmcp_tools_add","input":{}}})),
        sse("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 2, \"b\": 3}"}})),
        sse("content_block_stop", json!({"type":"content_block_stop","index":1})),
        sse("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}})),
        sse("message_stop", json!({"type":"message_stop"})),
    ]
    .concat()
}

#[tokio::test]
async fn a_stream_with_a_tool_call_is_one_live_stream_to_the_client() {
    let api = TestApi::Messages;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().body(streamed_tool_call())]);
    let gw = start(api, &mock, &mcp, "").await;
    let response = api.request(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let kinds = sse_event_types(&text);
    assert_eq!(
        kinds.iter().filter(|k| *k == "message_start").count(),
        1,
        "{text}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "message_stop").count(),
        1,
        "{text}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
    assert!(
        !text.contains("bmcp_"),
        "the gateway's call is not shown: {text}"
    );
    assert!(text.contains("Let me add. "), "{text}");
    let starts: Vec<u64> = text
        .split("\n\n")
        .filter(|frame| frame.starts_with("event: content_block_start"))
        .map(|frame| {
            let data: Value = serde_json::from_str(frame.split("data: ").nth(1).unwrap()).unwrap();
            data["index"].as_u64().unwrap()
        })
        .collect();
    assert!(starts.len() >= 2, "{text}");
    assert_eq!(
        starts,
        (0..starts.len() as u64).collect::<Vec<_>>(),
        "numbered on: {text}"
    );
    let delta = sse_data_of(&text, "message_delta").unwrap();
    assert!(
        delta["usage"]["input_tokens"].as_u64().unwrap() > 10,
        "summed: {delta}"
    );
    let sent = upstream_bodies(&mock, api);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1]["messages"][2]["content"][0]["tool_use_id"],
        "toolu_1"
    );
    assert_eq!(sent[1]["messages"][2]["content"][0]["content"], "5");
    assert_eq!(
        sent[1]["messages"][1]["content"][1]["input"],
        json!({"a": 2, "b": 3})
    );
}

#[tokio::test]
async fn a_later_iteration_that_fails_ends_the_stream_with_an_error_event() {
    let api = TestApi::Messages;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().body(streamed_tool_call()), Reply::status(500)],
    );
    let gw = start(api, &mock, &mcp, "").await;
    let response = api.request(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200, "committed at the first event");
    let text = response.text().await.unwrap();
    assert_eq!(
        sse_event_types(&text).last().map(String::as_str),
        Some("error"),
        "never a truncated 200: {text}"
    );
}

#[tokio::test]
async fn a_chat_stream_with_a_tool_call_is_one_live_stream_to_the_client() {
    let api = TestApi::Chat;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    let chunk = |value: Value| format!("data: {value}\n\n");
    let first = [
        chunk(json!({"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me add. "},"finish_reason":null}]})),
        chunk(json!({"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"bmcp_tools_add","arguments":"{\"a\":2,"}}]},"finish_reason":null}]})),
        chunk(json!({"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"b\":3}"}}]},"finish_reason":null}]})),
        chunk(json!({"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
        chunk(json!({"id":"c1","object":"chat.completion.chunk","model":"gpt-5","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}})),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    mock.script("k0", vec![Reply::ok().body(first)]);
    let gw = start(api, &mock, &mcp, "").await;
    let response = api.request(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("bmcp_"), "{text}");
    assert_eq!(text.matches("data: [DONE]").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let chunks: Vec<Value> = data_lines(&text)
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(chunks.iter().all(|c| c["id"] == "c1"), "one id: {text}");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(
        content.starts_with("Let me add. ") && content.len() > 12,
        "{content}"
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 10,
        "summed: {usage}"
    );
    let sent = upstream_bodies(&mock, api);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1]["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "5"})
    );
}

#[tokio::test]
async fn a_responses_stream_with_a_tool_call_is_one_live_stream_to_the_client() {
    let api = TestApi::Responses;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    let sse = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    };
    let call = json!({"type":"function_call","id":"fc_1","call_id":"call_1","name":"bmcp_tools_add","arguments":"{\"a\":2,\"b\":3}","status":"completed"});
    let message = json!({"type":"message","id":"m1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"Let me add. ","annotations":[]}]});
    let first = [
        sse(json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}})),
        sse(json!({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}})),
        sse(json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"m1","role":"assistant","status":"in_progress","content":[]}})),
        sse(json!({"type":"response.output_text.delta","sequence_number":3,"output_index":0,"item_id":"m1","content_index":0,"delta":"Let me add. "})),
        sse(json!({"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":message})),
        sse(json!({"type":"response.output_item.added","sequence_number":5,"output_index":1,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"bmcp_tools_add","arguments":"","status":"in_progress"}})),
        sse(json!({"type":"response.function_call_arguments.delta","sequence_number":6,"output_index":1,"item_id":"fc_1","delta":"{\"a\":2,\"b\":3}"})),
        sse(json!({"type":"response.output_item.done","sequence_number":7,"output_index":1,"item":call})),
        sse(json!({"type":"response.completed","sequence_number":8,"response":{"id":"resp_1","object":"response","status":"completed","output":[message, call],"usage":{"input_tokens":10,"output_tokens":3,"total_tokens":13}}})),
    ]
    .concat();
    mock.script("k0", vec![Reply::ok().body(first)]);
    let gw = start(api, &mock, &mcp, "").await;
    let response = api.request(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("bmcp_"), "{text}");
    let events: Vec<Value> = data_lines(&text)
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let sequence: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequence,
        (0..events.len() as u64).collect::<Vec<_>>(),
        "{text}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "response.created")
            .count(),
        1
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{text}");
    assert_eq!(last["response"]["id"], "resp_1");
    assert!(last["response"]["usage"]["input_tokens"].as_u64().unwrap() > 10);
    let sent = upstream_bodies(&mock, api);
    assert_eq!(sent.len(), 2);
    let input = sent[1]["input"].as_array().unwrap();
    assert_eq!(
        input.last().unwrap(),
        &json!({"type": "function_call_output", "call_id": "call_1", "output": "5"})
    );
}

#[tokio::test]
async fn a_client_that_leaves_a_looped_stream_ends_its_record() {
    let api = TestApi::Messages;
    let mcp = mcp_server().await;
    let mock = MockUpstream::start().await.unwrap();
    // Iteration 1 calls the gateway's tool; iteration 2 streams slowly (200 ms per event).
    mock.script(
        "k0",
        vec![
            Reply::tool_call("bmcp_tools_add", json!({"a": 2, "b": 3})).with_text("Adding. "),
            Reply::ok().stream_deltas(50).event_delay_ms(200),
        ],
    );
    let gw = start(api, &mock, &mcp, "").await;
    let mut response = api.request(&gw, true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Read until the second iteration's text has begun, then go away.
    let mut seen = String::new();
    while !seen.contains("Hello") {
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    let records = wait_for_ended(&gw, None, 1).await;
    assert_eq!(
        records[0]["outcome"], "client_disconnected",
        "{:#}",
        records[0]
    );
    assert_eq!(records[0]["status"], 200, "the client had its 200");
    let runs: Vec<&Value> = records[0]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|call| call["injected"] == true)
        .collect();
    assert_eq!(runs.len(), 1, "the tool's run is kept: {:#}", records[0]);
    assert_eq!(runs[0]["run"]["result"], "5");
}
