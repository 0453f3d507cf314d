//! What the gateway records about an exchange, read from the bodies it relays: the prompt, token
//! usage, the tool calls the model made and its thoughts.
//!
//! Streams are observed event by event as they are relayed. Only the events that can carry
//! something worth recording are parsed; text deltas, the bulk of a stream, are skipped after a
//! cheap look at the event type.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::SseEvent;

/// Token counts of one upstream response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens not read from the cache.
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// Provider-specific counts (reasoning tokens, web searches, cache tiers, …).
    pub extra: BTreeMap<String, i64>,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as JSON text, as the model produced them.
    pub input: String,
}

/// Text the model produced while thinking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thought {
    pub content: String,
    /// `thinking` (Anthropic), `reasoning_summary` (OpenAI Responses).
    pub source: &'static str,
}

/// Everything observed in one upstream response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub response_id: Option<String>,
    pub usage: Option<Usage>,
    pub tool_calls: Vec<ToolCall>,
    pub thoughts: Vec<Thought>,
}

/// The three bridged APIs, as far as their bodies are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    AnthropicMessages,
    OpenAiChat,
    OpenAiResponses,
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// The user's prompt: the text of the last user message (or input) of a request body.
pub fn prompt_of(shape: ApiShape, body: &[u8]) -> Option<String> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let last_user_content = |list: &Value| {
        list.as_array()?
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| m["content"].clone())
    };
    let content = match shape {
        ApiShape::AnthropicMessages | ApiShape::OpenAiChat => {
            last_user_content(&request["messages"])?
        }
        ApiShape::OpenAiResponses => match &request["input"] {
            Value::String(text) => return Some(text.clone()),
            items => last_user_content(items)?,
        },
    };
    match content {
        Value::String(text) => Some(text),
        // Content parts: the last text part (`text`, `input_text`).
        Value::Array(parts) => parts
            .iter()
            .rev()
            .find(|p| matches!(p["type"].as_str(), Some("text" | "input_text")))
            .and_then(|p| string(&p["text"])),
        _ => None,
    }
}

/// Reads a complete (non-streaming) response body.
pub fn observe_body(shape: ApiShape, body: &[u8]) -> Observation {
    let Ok(response) = serde_json::from_slice::<Value>(body) else {
        return Observation::default();
    };
    match shape {
        ApiShape::AnthropicMessages => {
            let mut observation = Observation {
                response_id: string(&response["id"]),
                usage: response.get("usage").map(anthropic_usage),
                ..Observation::default()
            };
            for block in response["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("tool_use" | "server_tool_use") => observation.tool_calls.push(ToolCall {
                        id: string(&block["id"]),
                        name: string(&block["name"]).unwrap_or_default(),
                        input: block["input"].to_string(),
                    }),
                    Some("thinking") => {
                        push_thought(&mut observation, &block["thinking"], "thinking")
                    }
                    _ => {}
                }
            }
            observation
        }
        ApiShape::OpenAiChat => {
            let mut observation = Observation {
                response_id: string(&response["id"]),
                usage: response
                    .get("usage")
                    .filter(|u| u.is_object())
                    .map(chat_usage),
                ..Observation::default()
            };
            for choice in response["choices"].as_array().into_iter().flatten() {
                for call in choice["message"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    observation.tool_calls.push(ToolCall {
                        id: string(&call["id"]),
                        name: string(&call["function"]["name"]).unwrap_or_default(),
                        input: string(&call["function"]["arguments"]).unwrap_or_default(),
                    });
                }
            }
            observation
        }
        ApiShape::OpenAiResponses => observe_response_object(&response),
    }
}

fn push_thought(observation: &mut Observation, text: &Value, source: &'static str) {
    if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
        observation.thoughts.push(Thought {
            content: text.to_string(),
            source,
        });
    }
}

fn anthropic_usage(usage: &Value) -> Usage {
    let mut extra = BTreeMap::new();
    let mut add = |name: &str, value: &Value| {
        if let Some(n) = value.as_i64().filter(|n| *n > 0) {
            extra.insert(name.to_string(), n);
        }
    };
    add(
        "web_search_requests",
        &usage["server_tool_use"]["web_search_requests"],
    );
    add(
        "cache_ephemeral_1h_input",
        &usage["cache_creation"]["ephemeral_1h_input_tokens"],
    );
    add(
        "cache_ephemeral_5m_input",
        &usage["cache_creation"]["ephemeral_5m_input_tokens"],
    );
    Usage {
        input: int(&usage["input_tokens"]),
        output: int(&usage["output_tokens"]),
        cache_read: int(&usage["cache_read_input_tokens"]),
        cache_write: int(&usage["cache_creation_input_tokens"]),
        extra,
    }
}

fn chat_usage(usage: &Value) -> Usage {
    let cached = int(&usage["prompt_tokens_details"]["cached_tokens"]);
    let mut extra = BTreeMap::new();
    for (name, value) in [
        (
            "prompt_audio",
            &usage["prompt_tokens_details"]["audio_tokens"],
        ),
        (
            "completion_reasoning",
            &usage["completion_tokens_details"]["reasoning_tokens"],
        ),
        (
            "completion_audio",
            &usage["completion_tokens_details"]["audio_tokens"],
        ),
        (
            "completion_accepted_prediction",
            &usage["completion_tokens_details"]["accepted_prediction_tokens"],
        ),
        (
            "completion_rejected_prediction",
            &usage["completion_tokens_details"]["rejected_prediction_tokens"],
        ),
    ] {
        if let Some(n) = value.as_i64().filter(|n| *n > 0) {
            extra.insert(name.to_string(), n);
        }
    }
    Usage {
        input: (int(&usage["prompt_tokens"]) - cached).max(0),
        output: int(&usage["completion_tokens"]),
        cache_read: cached,
        cache_write: 0,
        extra,
    }
}

fn responses_usage(usage: &Value) -> Usage {
    let cached = int(&usage["input_tokens_details"]["cached_tokens"]);
    let mut extra = BTreeMap::new();
    if let Some(n) = usage["output_tokens_details"]["reasoning_tokens"]
        .as_i64()
        .filter(|n| *n > 0)
    {
        extra.insert("output_reasoning".to_string(), n);
    }
    Usage {
        input: (int(&usage["input_tokens"]) - cached).max(0),
        output: int(&usage["output_tokens"]),
        cache_read: cached,
        cache_write: 0,
        extra,
    }
}

fn observe_response_object(response: &Value) -> Observation {
    let mut observation = Observation {
        response_id: string(&response["id"]),
        usage: response
            .get("usage")
            .filter(|u| u.is_object())
            .map(responses_usage),
        ..Observation::default()
    };
    for item in response["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("function_call") => observation.tool_calls.push(ToolCall {
                id: string(&item["call_id"]),
                name: string(&item["name"]).unwrap_or_default(),
                input: string(&item["arguments"]).unwrap_or_default(),
            }),
            Some("custom_tool_call") => observation.tool_calls.push(ToolCall {
                id: string(&item["call_id"]),
                name: string(&item["name"]).unwrap_or_default(),
                input: string(&item["input"]).unwrap_or_default(),
            }),
            Some("reasoning") => {
                for part in item["summary"].as_array().into_iter().flatten() {
                    push_thought(&mut observation, &part["text"], "reasoning_summary");
                }
            }
            _ => {}
        }
    }
    observation
}

/// A content block being streamed.
#[derive(Debug)]
enum OpenBlock {
    Tool {
        id: Option<String>,
        name: String,
        input: String,
    },
    Thinking(String),
}

/// Watches a stream as it is relayed and keeps what is worth recording, so that even a stream
/// that breaks off or is abandoned has its usage so far.
#[derive(Debug)]
pub struct StreamObserver {
    shape: ApiShape,
    observation: Observation,
    /// Anthropic blocks by index; OpenAI chat tool calls by index.
    open: BTreeMap<u64, OpenBlock>,
}

impl StreamObserver {
    pub fn new(shape: ApiShape) -> Self {
        Self {
            shape,
            observation: Observation::default(),
            open: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, event: &SseEvent) {
        match self.shape {
            ApiShape::AnthropicMessages => self.observe_anthropic(event),
            ApiShape::OpenAiChat => self.observe_chat(event),
            ApiShape::OpenAiResponses => self.observe_responses(event),
        }
    }

    fn observe_anthropic(&mut self, event: &SseEvent) {
        let kind = event.event_type();
        let is_block_delta = kind == Some("content_block_delta");
        if is_block_delta && self.open.is_empty() {
            // A text delta, the common case: nothing to record.
            return;
        }
        if !matches!(
            kind,
            Some(
                "message_start"
                    | "content_block_start"
                    | "content_block_delta"
                    | "content_block_stop"
                    | "message_delta"
            )
        ) {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data()) else {
            return;
        };
        let index = data["index"].as_u64().unwrap_or(0);
        match kind {
            Some("message_start") => {
                let message = &data["message"];
                self.observation.response_id = string(&message["id"]);
                self.observation.usage = message.get("usage").map(anthropic_usage);
            }
            Some("content_block_start") => {
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use" | "server_tool_use") => {
                        self.open.insert(
                            index,
                            OpenBlock::Tool {
                                id: string(&block["id"]),
                                name: string(&block["name"]).unwrap_or_default(),
                                input: String::new(),
                            },
                        );
                    }
                    Some("thinking") => {
                        self.open.insert(index, OpenBlock::Thinking(String::new()));
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => match (self.open.get_mut(&index), &data["delta"]) {
                (Some(OpenBlock::Tool { input, .. }), delta) => {
                    input.push_str(delta["partial_json"].as_str().unwrap_or(""));
                }
                (Some(OpenBlock::Thinking(text)), delta) => {
                    text.push_str(delta["thinking"].as_str().unwrap_or(""));
                }
                (None, _) => {}
            },
            Some("content_block_stop") => self.close_block(index),
            Some("message_delta") => {
                // Cumulative counts: they replace what message_start said.
                let delta = &data["usage"];
                let usage = self.observation.usage.get_or_insert_with(Usage::default);
                usage.output = int(&delta["output_tokens"]).max(usage.output);
                for (field, target) in [
                    ("input_tokens", &mut usage.input),
                    ("cache_read_input_tokens", &mut usage.cache_read),
                    ("cache_creation_input_tokens", &mut usage.cache_write),
                ] {
                    if let Some(n) = delta[field].as_i64() {
                        *target = n;
                    }
                }
            }
            _ => {}
        }
    }

    fn close_block(&mut self, index: u64) {
        match self.open.remove(&index) {
            Some(OpenBlock::Tool { id, name, input }) => {
                let input = if input.trim().is_empty() {
                    "{}".to_string()
                } else {
                    input
                };
                self.observation
                    .tool_calls
                    .push(ToolCall { id, name, input });
            }
            Some(OpenBlock::Thinking(text)) if !text.is_empty() => {
                self.observation.thoughts.push(Thought {
                    content: text,
                    source: "thinking",
                });
            }
            _ => {}
        }
    }

    fn observe_chat(&mut self, event: &SseEvent) {
        let raw = event.raw();
        let first = self.observation.response_id.is_none();
        let interesting = first
            || contains(raw, b"\"tool_calls\"")
            || contains(raw, b"\"usage\":{")
            || contains(raw, b"\"usage\": {");
        if !interesting {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data()) else {
            return;
        };
        if first {
            self.observation.response_id = string(&chunk["id"]);
        }
        if chunk["usage"].is_object() {
            self.observation.usage = Some(chat_usage(&chunk["usage"]));
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = call["index"].as_u64().unwrap_or(0);
                let entry = self.open.entry(index).or_insert_with(|| OpenBlock::Tool {
                    id: None,
                    name: String::new(),
                    input: String::new(),
                });
                if let OpenBlock::Tool { id, name, input } = entry {
                    if let Some(new_id) = call["id"].as_str() {
                        *id = Some(new_id.to_string());
                    }
                    name.push_str(call["function"]["name"].as_str().unwrap_or(""));
                    input.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
            }
        }
    }

    fn observe_responses(&mut self, event: &SseEvent) {
        let kind = event.event_type();
        if !matches!(
            kind,
            Some(
                "response.created"
                    | "response.completed"
                    | "response.failed"
                    | "response.incomplete"
            )
        ) {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data()) else {
            return;
        };
        let response = &data["response"];
        if kind == Some("response.created") {
            self.observation.response_id = string(&response["id"]);
        } else {
            self.observation = observe_response_object(response);
        }
    }

    /// What was seen, including tool calls whose stream never closed their block.
    pub fn finish(mut self) -> Observation {
        let open: Vec<u64> = self.open.keys().copied().collect();
        for index in open {
            self.close_block(index);
        }
        self.observation
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SseDecoder;
    use serde_json::json;

    fn events(text: &str) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        decoder.push(text.as_bytes());
        std::iter::from_fn(|| decoder.next_event()).collect()
    }

    fn observe_stream(shape: ApiShape, text: &str) -> Observation {
        let mut observer = StreamObserver::new(shape);
        for event in events(text) {
            observer.observe(&event);
        }
        observer.finish()
    }

    #[test]
    fn prompts_are_the_last_user_text() {
        let anthropic = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "tool_result", "content": "x"}, {"type": "text", "text": "second"}]}
        ]});
        assert_eq!(
            prompt_of(
                ApiShape::AnthropicMessages,
                anthropic.to_string().as_bytes()
            )
            .as_deref(),
            Some("second")
        );
        let chat = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]});
        assert_eq!(
            prompt_of(ApiShape::OpenAiChat, chat.to_string().as_bytes()).as_deref(),
            Some("hi")
        );
        let responses = json!({"input": "plain"});
        assert_eq!(
            prompt_of(ApiShape::OpenAiResponses, responses.to_string().as_bytes()).as_deref(),
            Some("plain")
        );
        let items = json!({"input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "item"}]}]});
        assert_eq!(
            prompt_of(ApiShape::OpenAiResponses, items.to_string().as_bytes()).as_deref(),
            Some("item")
        );
        assert_eq!(prompt_of(ApiShape::OpenAiChat, b"{}"), None);
    }

    #[test]
    fn anthropic_blocking_body() {
        let body = json!({
            "id": "msg_1", "type": "message",
            "content": [
                {"type": "thinking", "thinking": "let me think"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.rs"}}
            ],
            "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 7, "server_tool_use": {"web_search_requests": 2},
                      "cache_creation": {"ephemeral_1h_input_tokens": 3, "ephemeral_5m_input_tokens": 4}}
        });
        let seen = observe_body(ApiShape::AnthropicMessages, body.to_string().as_bytes());
        assert_eq!(seen.response_id.as_deref(), Some("msg_1"));
        let usage = seen.usage.unwrap();
        assert_eq!(
            (
                usage.input,
                usage.output,
                usage.cache_read,
                usage.cache_write
            ),
            (12, 30, 100, 7)
        );
        assert_eq!(usage.extra["web_search_requests"], 2);
        assert_eq!(usage.extra["cache_ephemeral_1h_input"], 3);
        assert_eq!(usage.extra["cache_ephemeral_5m_input"], 4);
        assert_eq!(
            seen.tool_calls,
            [ToolCall {
                id: Some("toolu_1".into()),
                name: "read_file".into(),
                input: r#"{"path":"a.rs"}"#.into()
            }]
        );
        assert_eq!(
            seen.thoughts,
            [Thought {
                content: "let me think".into(),
                source: "thinking"
            }]
        );
    }

    #[test]
    fn anthropic_stream_with_tool_use_and_thinking() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"usage\":{\"input_tokens\":50,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"yes\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"bash\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"cmd\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"ls\\\"}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":42}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let seen = observe_stream(ApiShape::AnthropicMessages, stream);
        assert_eq!(seen.response_id.as_deref(), Some("msg_2"));
        let usage = seen.usage.unwrap();
        assert_eq!((usage.input, usage.output, usage.cache_read), (50, 42, 5));
        assert_eq!(
            seen.tool_calls,
            [ToolCall {
                id: Some("toolu_9".into()),
                name: "bash".into(),
                input: r#"{"cmd":"ls"}"#.into()
            }]
        );
        assert_eq!(
            seen.thoughts,
            [Thought {
                content: "hmm yes".into(),
                source: "thinking"
            }]
        );
    }

    #[test]
    fn an_abandoned_anthropic_stream_keeps_the_usage_seen_so_far() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
        let usage = observe_stream(ApiShape::AnthropicMessages, stream)
            .usage
            .unwrap();
        assert_eq!((usage.input, usage.output), (9, 1));
    }

    #[test]
    fn chat_blocking_and_stream() {
        let body = json!({
            "id": "chatcmpl-1",
            "choices": [{"message": {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60},
                      "completion_tokens_details": {"reasoning_tokens": 8}}
        });
        let seen = observe_body(ApiShape::OpenAiChat, body.to_string().as_bytes());
        let usage = seen.usage.unwrap();
        assert_eq!((usage.input, usage.output, usage.cache_read), (40, 20, 60));
        assert_eq!(usage.extra["completion_reasoning"], 8);
        assert_eq!(seen.tool_calls[0].name, "get");
        assert_eq!(seen.tool_calls[0].input, "{\"a\":1}");

        let stream = concat!(
            "data: {\"id\":\"chatcmpl-2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_7\",\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"q\\\":\"}}]}}]}\n\n",
            "data: {\"id\":\"chatcmpl-2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"x\\\"}\"}}]}}]}\n\n",
            "data: {\"id\":\"chatcmpl-2\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":6,\"total_tokens\":17}}\n\n",
            "data: [DONE]\n\n",
        );
        let seen = observe_stream(ApiShape::OpenAiChat, stream);
        assert_eq!(seen.response_id.as_deref(), Some("chatcmpl-2"));
        let usage = seen.usage.unwrap();
        assert_eq!((usage.input, usage.output), (11, 6));
        assert_eq!(
            seen.tool_calls,
            [ToolCall {
                id: Some("call_7".into()),
                name: "search".into(),
                input: r#"{"q":"x"}"#.into()
            }]
        );
    }

    #[test]
    fn responses_blocking_and_stream() {
        let response = json!({
            "id": "resp_1", "object": "response",
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
                {"type": "function_call", "call_id": "call_a", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "custom_tool_call", "call_id": "call_b", "name": "apply_patch", "input": "*** Begin Patch"}
            ],
            "usage": {"input_tokens": 30, "output_tokens": 9, "input_tokens_details": {"cached_tokens": 10},
                      "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 39}
        });
        let seen = observe_body(ApiShape::OpenAiResponses, response.to_string().as_bytes());
        let usage = seen.usage.clone().unwrap();
        assert_eq!((usage.input, usage.output, usage.cache_read), (20, 9, 10));
        assert_eq!(usage.extra["output_reasoning"], 4);
        let names: Vec<_> = seen.tool_calls.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["shell", "apply_patch"]);
        assert_eq!(
            seen.thoughts,
            [Thought {
                content: "plan".into(),
                source: "reasoning_summary"
            }]
        );

        let stream = format!(
            "event: response.created\ndata: {}\n\nevent: response.output_text.delta\ndata: {{\"delta\":\"x\"}}\n\nevent: response.completed\ndata: {}\n\n",
            json!({"type": "response.created", "response": {"id": "resp_1", "output": []}}),
            json!({"type": "response.completed", "response": response}),
        );
        assert_eq!(observe_stream(ApiShape::OpenAiResponses, &stream), seen);
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(
            observe_body(ApiShape::OpenAiChat, b"<html>"),
            Observation::default()
        );
        let seen = observe_stream(
            ApiShape::AnthropicMessages,
            "event: message_start\ndata: {broken\n\n",
        );
        assert_eq!(seen, Observation::default());
    }
}
