//! Anthropic Messages (`POST /v1/messages`): its stream ends with `message_stop` (or an
//! `error` event), errors are `event: error` frames, usage arrives in `message_start` and the
//! cumulative `message_delta`, tool calls and thinking are content blocks.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::errors::{Dialect, ErrorKind};
use crate::observe::{
    Observation, ObserveStream, OpenBlock, OpenBlocks, ToolCall, Usage, extra_counts, int,
    last_user_text_in_messages, positive_counts, push_thought, string,
};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::splice::{ObjectEdit, append_to_array, set_member};
use crate::sse::SseEvent;
use crate::tools::{ToolOutcome, ToolSpec, prepend_earlier, rendered_values};

pub(crate) struct Rules;

impl WireRules for Rules {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn path(&self) -> &'static str {
        "/v1/messages"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Anthropic
    }

    fn prepare_body(&self, _: &RequestSummary, body: Bytes) -> Result<Bytes, BodyRefused> {
        Ok(body)
    }

    fn render_tool(&self, tool: &ToolSpec) -> Value {
        json!({
            "name": tool.name,
            "description": tool.description_text(),
            "input_schema": tool.object_schema(),
        })
    }

    fn inject_rendered(&self, body: &[u8], tools: &[u8]) -> Result<Vec<u8>, BadRequest> {
        #[derive(serde::Deserialize)]
        struct Choice<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        let mut edit = ObjectEdit::new(body)?;
        edit.append_to_array("tools", tools)?;
        match edit.get("tool_choice") {
            None => edit.set(
                "tool_choice",
                br#"{"type":"auto","disable_parallel_tool_use":true}"#,
            ),
            Some(choice) if choice.get().starts_with('{') => {
                let kind = serde_json::from_str::<Choice<'_>>(choice.get())
                    .ok()
                    .and_then(|choice| choice.kind);
                // `none` forbids tools altogether: nothing to make serial.
                if kind.as_deref() != Some("none") {
                    let edited = set_member(
                        choice.get().as_bytes(),
                        "disable_parallel_tool_use",
                        b"true",
                    )?;
                    edit.replace(choice, edited);
                }
            }
            Some(_) => {}
        }
        Ok(edit.finish())
    }

    fn continue_with(
        &self,
        request: &[u8],
        response: &Value,
        outcomes: &[ToolOutcome],
    ) -> Result<Vec<u8>, BadRequest> {
        let assistant = json!({"role": "assistant", "content": response["content"]});
        let results: Vec<Value> = outcomes
            .iter()
            .map(|outcome| {
                json!({
                    "type": "tool_result",
                    "tool_use_id": outcome.call_id,
                    "content": outcome.text,
                    "is_error": outcome.is_error,
                })
            })
            .collect();
        let user = json!({"role": "user", "content": results});
        append_to_array(request, "messages", &rendered_values(&[assistant, user]))
    }

    fn combine_answers(&self, earlier: &[Value], last: Value) -> Value {
        prepend_earlier(earlier, last, "content", "text")
    }

    fn prompt(&self, body: &[u8]) -> Option<String> {
        last_user_text_in_messages(body)
    }

    fn usage(&self, value: &Value) -> Usage {
        usage(value)
    }

    fn usage_of_object(&self, object: &[u8]) -> Option<Usage> {
        crate::observe::leading::<UsageBody>(object).map(UsageBody::usage)
    }

    fn observe_body(&self, body: &[u8]) -> Observation {
        // Read into borrowed fields (the text blocks skipped, not built); a body of another
        // shape is read whole.
        if let Ok(response) = serde_json::from_slice::<BlockingBody<'_>>(body) {
            return response.observation();
        }
        let Ok(response) = serde_json::from_slice::<Value>(body) else {
            return Observation::default();
        };
        let response = &response;
        let mut observation = Observation {
            response_id: string(&response["id"]),
            model: string(&response["model"]),
            usage: response.get("usage").map(usage),
            ..Observation::default()
        };
        for block in response["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("tool_use" | "server_tool_use") => observation.tool_calls.push(ToolCall {
                    id: string(&block["id"]),
                    name: string(&block["name"]).unwrap_or_default(),
                    input: block["input"].to_string(),
                }),
                Some("thinking") => push_thought(&mut observation, &block["thinking"], "thinking"),
                _ => {}
            }
        }
        observation
    }

    fn stream_observer(&self) -> Box<dyn ObserveStream> {
        Box::<StreamWatch>::default()
    }

    fn is_terminal(&self, event: &SseEvent) -> bool {
        matches!(event.event_type(), Some("message_stop" | "error"))
    }

    fn is_error_report(&self, event: &SseEvent) -> bool {
        event.event_type() == Some("error")
    }

    fn error_frames(&self, message: &str, _: Option<&SseEvent>) -> Bytes {
        Dialect::Anthropic.stream_error_frames(ErrorKind::Api, message)
    }

    fn stream_loop(&self) -> Option<Box<dyn crate::stream_loop::StreamLoop>> {
        Some(Box::new(MessagesLoop::default()))
    }
}

fn usage(usage: &Value) -> Usage {
    Usage {
        input: int(&usage["input_tokens"]),
        output: int(&usage["output_tokens"]),
        cache_read: int(&usage["cache_read_input_tokens"]),
        cache_write: int(&usage["cache_creation_input_tokens"]),
        extra: extra_counts([
            (
                "web_search_requests",
                &usage["server_tool_use"]["web_search_requests"],
            ),
            (
                "cache_ephemeral_1h_input",
                &usage["cache_creation"]["ephemeral_1h_input_tokens"],
            ),
            (
                "cache_ephemeral_5m_input",
                &usage["cache_creation"]["ephemeral_5m_input_tokens"],
            ),
        ]),
    }
}

#[derive(Debug, Default)]
struct StreamWatch {
    observation: Observation,
    open: OpenBlocks,
}

impl ObserveStream for StreamWatch {
    // Read into borrowed fields, not a `Value`: this runs for every event of every stream.
    fn observe(&mut self, event: &SseEvent) {
        let kind = event.event_type();
        if matches!(kind, Some("content_block_delta" | "content_block_stop"))
            && self.open.0.is_empty()
        {
            // A text block's delta or end, the common case: nothing to record.
            return;
        }
        let data = event.data();
        match kind {
            Some("message_start") => {
                let Ok(start) = serde_json::from_str::<MessageStart<'_>>(&data) else {
                    return;
                };
                let message = start.message;
                self.observation.response_id = message.id.map(Cow::into_owned);
                self.observation.model = message.model.map(Cow::into_owned);
                self.observation.usage = message.usage.as_ref().map(usage);
            }
            Some("content_block_start") => {
                let Ok(start) = serde_json::from_str::<BlockStart<'_>>(&data) else {
                    return;
                };
                let block = start.content_block;
                let open = match block.kind.as_ref() {
                    "tool_use" | "server_tool_use" => OpenBlock::Tool {
                        id: block.id.map(Cow::into_owned),
                        name: block.name.map(Cow::into_owned).unwrap_or_default(),
                        input: String::new(),
                    },
                    "thinking" => OpenBlock::Thinking(String::new()),
                    _ => return,
                };
                self.open.0.insert(start.index, open);
            }
            Some("content_block_delta") => {
                let Ok(delta) = serde_json::from_str::<IndexedDelta<'_>>(&data) else {
                    return;
                };
                let fields = delta.delta;
                match self.open.0.get_mut(&delta.index) {
                    Some(OpenBlock::Tool { input, .. }) => {
                        input.push_str(fields.partial_json.as_deref().unwrap_or(""));
                    }
                    Some(OpenBlock::Thinking(text)) => {
                        text.push_str(fields.thinking.as_deref().unwrap_or(""));
                    }
                    None => {}
                }
            }
            Some("content_block_stop") => {
                if let Ok(stop) = serde_json::from_str::<IndexOf>(&data) {
                    self.open.close(stop.index, &mut self.observation);
                }
            }
            Some("message_delta") => {
                let Ok(delta) = serde_json::from_str::<UsageOf>(&data) else {
                    return;
                };
                // Cumulative counts: they replace what message_start said.
                let delta = delta.usage.unwrap_or(Value::Null);
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

    fn finish(mut self: Box<Self>) -> Observation {
        self.open.close_all(&mut self.observation);
        self.observation
    }
}

#[cfg(test)]
mod tests {
    use crate::observe::Thought;
    use crate::test_support::observe_stream;
    use crate::{Api, ToolCall};
    use serde_json::json;

    const API: Api = Api::AnthropicMessages;

    #[test]
    fn prompt_is_the_last_user_text() {
        let body = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "tool_result", "content": "x"}, {"type": "text", "text": "second"}]}
        ]});
        assert_eq!(
            API.prompt(body.to_string().as_bytes()).as_deref(),
            Some("second")
        );
    }

    #[test]
    fn odd_shapes_are_read_whole_as_before() {
        // A message that is not an object: the borrowed read fails, the whole read finds the
        // last user text all the same.
        let body = r#"{"messages": [{"role": "user", "content": "first"}, "noise"]}"#;
        assert_eq!(API.prompt(body.as_bytes()).as_deref(), Some("first"));
        assert_eq!(API.prompt(b"not json"), None);
        // A tool's input is recorded compact, whatever the upstream's spacing.
        let body = r#"{"id": "msg_1", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": { "a" : [1, 2] }}]}"#;
        let seen = API.observe_body(body.as_bytes());
        assert_eq!(seen.tool_calls[0].input, r#"{"a":[1,2]}"#);
        // `content` that is not a list: read whole (no calls), the id kept.
        let seen = API.observe_body(br#"{"id": "msg_2", "content": "text"}"#);
        assert_eq!(seen.response_id.as_deref(), Some("msg_2"));
        assert!(seen.tool_calls.is_empty());
        // A count that is not an integer: read whole, where it counts 0 and the rest is kept.
        let body = r#"{"id": "msg_3", "usage": {"input_tokens": 1.5, "output_tokens": 5,
            "server_tool_use": {"web_search_requests": 1}}}"#;
        let usage = API.observe_body(body.as_bytes()).usage.unwrap();
        assert_eq!((usage.input, usage.output), (0, 5));
        assert_eq!(usage.extra.get("web_search_requests"), Some(&1));
    }

    #[test]
    fn blocking_body() {
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
        let seen = API.observe_body(body.to_string().as_bytes());
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
    fn stream_with_tool_use_and_thinking() {
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
        let seen = observe_stream(API, stream);
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
    fn an_abandoned_stream_keeps_the_usage_seen_so_far() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
        let usage = observe_stream(API, stream).usage.unwrap();
        assert_eq!((usage.input, usage.output), (9, 1));
    }

    #[test]
    fn a_broken_event_is_ignored() {
        let seen = observe_stream(API, "event: message_start\ndata: {broken\n\n");
        assert_eq!(seen, crate::Observation::default());
    }
}

/// The Anthropic Messages stream of an inner loop: one `message_start` (the first iteration's),
/// content blocks numbered on across iterations, the gateway's `tool_use` blocks and each
/// continued iteration's `message_delta` / `message_stop` left out, and the final
/// `message_delta` carrying the usage of every iteration.
///
/// Nothing is parsed into a `Value` unless the loop goes on or numbers differ: deltas are read
/// into borrowed fields, events whose numbering is the upstream's are relayed as they came, and
/// a first iteration that calls none of the gateway's tools ends with its own `message_delta`
/// and `message_stop`. Tools that are injected but not called cost little.
#[derive(Debug, Default)]
pub(crate) struct MessagesLoop {
    iteration: u32,
    /// Client index of the next content block.
    next_index: u64,
    /// This iteration's content blocks by upstream index.
    blocks: std::collections::BTreeMap<u64, LoopBlock>,
    /// Usage of the iterations so far, summed.
    usage_before: Value,
    /// This iteration's `message_start` data, and its held-back `message_delta` and
    /// `message_stop`.
    start: Option<String>,
    delta: Option<SseEvent>,
    stop: Option<SseEvent>,
}

/// One content block of the current iteration: where the client sees it, and what rebuilds it
/// for the next iteration's assistant turn (its start and its deltas).
#[derive(Debug)]
struct LoopBlock {
    /// The client's index; `None` for the gateway's own tool call (not shown).
    client: Option<u64>,
    is_tool_use: bool,
    name: Option<String>,
    /// The `content_block_start` event's data.
    start: String,
    /// Its `content_block_delta` events as they came: read only if the loop goes on.
    deltas: Vec<SseEvent>,
}

impl LoopBlock {
    /// The block as the model wrote it: its start with every delta applied.
    fn content(&self) -> Value {
        let mut block = serde_json::from_str::<Value>(&self.start)
            .map(|mut start| start["content_block"].take())
            .unwrap_or(Value::Null);
        let (mut text, mut thinking, mut input) = (String::new(), String::new(), None::<String>);
        for event in &self.deltas {
            let data = event.data();
            let Ok(delta) = serde_json::from_str::<DeltaEvent<'_>>(&data) else {
                continue;
            };
            let fields = delta.delta;
            match fields.kind.as_ref() {
                "text_delta" => text.push_str(fields.text.as_deref().unwrap_or("")),
                "thinking_delta" => thinking.push_str(fields.thinking.as_deref().unwrap_or("")),
                "signature_delta" => {
                    if let Some(signature) = fields.signature {
                        block["signature"] = Value::String(signature.into_owned());
                    }
                }
                "input_json_delta" => input
                    .get_or_insert_with(String::new)
                    .push_str(fields.partial_json.as_deref().unwrap_or("")),
                _ => {}
            }
        }
        for (field, more) in [("text", &text), ("thinking", &thinking)] {
            if !more.is_empty() {
                let whole = format!("{}{more}", block[field].as_str().unwrap_or(""));
                block[field] = Value::String(whole);
            }
        }
        if let Some(input) = input {
            block["input"] = if input.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_str(&input).unwrap_or(Value::Null)
            };
        }
        block
    }
}

/// The top-level `index` of a content block event, found without parsing the event: Anthropic
/// writes it before the delta or block, and inside a JSON string `"index":` cannot appear
/// unescaped. `None` sends the caller to a full read.
fn quick_index(data: &str) -> Option<u64> {
    let at = memchr::memmem::find(data.as_bytes(), b"\"index\":")?;
    let before = &data[..at];
    if before.contains("\"delta\"") || before.contains("\"content_block\"") {
        return None;
    }
    let digits = data[at + 8..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// A `content_block_delta`, read without building a `Value`.
#[derive(serde::Deserialize)]
struct DeltaEvent<'a> {
    #[serde(borrow)]
    delta: DeltaFields<'a>,
}

#[derive(serde::Deserialize)]
struct DeltaFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

/// A `content_block_start`: its index, and what kind of block it opens.
#[derive(serde::Deserialize)]
struct BlockStart<'a> {
    index: u64,
    #[serde(borrow)]
    content_block: BlockHead<'a>,
}

#[derive(serde::Deserialize)]
struct BlockHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// A response's `usage`, read without building a `Value` (a map of owned keys): the counts
/// [`usage`] reads. A count of another type (a float, a string) fails the typed read, and the
/// caller reads the body whole instead, where such a count is 0.
#[derive(serde::Deserialize)]
struct UsageBody {
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cache_read_input_tokens: Option<i64>,
    cache_creation_input_tokens: Option<i64>,
    server_tool_use: Option<ServerToolUse>,
    cache_creation: Option<CacheCreation>,
}

#[derive(serde::Deserialize)]
struct ServerToolUse {
    web_search_requests: Option<i64>,
}

#[derive(serde::Deserialize)]
struct CacheCreation {
    ephemeral_1h_input_tokens: Option<i64>,
    ephemeral_5m_input_tokens: Option<i64>,
}

impl UsageBody {
    fn usage(self) -> Usage {
        let cache_creation = self.cache_creation.as_ref();
        Usage {
            input: self.input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            cache_read: self.cache_read_input_tokens.unwrap_or(0),
            cache_write: self.cache_creation_input_tokens.unwrap_or(0),
            extra: positive_counts([
                (
                    "web_search_requests",
                    self.server_tool_use.and_then(|s| s.web_search_requests),
                ),
                (
                    "cache_ephemeral_1h_input",
                    cache_creation.and_then(|c| c.ephemeral_1h_input_tokens),
                ),
                (
                    "cache_ephemeral_5m_input",
                    cache_creation.and_then(|c| c.ephemeral_5m_input_tokens),
                ),
            ]),
        }
    }
}

/// A blocking Messages response: what the record keeps of it.
#[derive(serde::Deserialize)]
struct BlockingBody<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<UsageBody>,
    #[serde(borrow, default)]
    content: Vec<BodyBlock<'a>>,
}

#[derive(serde::Deserialize)]
struct BodyBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
}

impl BlockingBody<'_> {
    fn observation(self) -> Observation {
        let mut observation = Observation {
            response_id: self.id.map(Cow::into_owned),
            model: self.model.map(Cow::into_owned),
            usage: self.usage.map(UsageBody::usage),
            ..Observation::default()
        };
        for block in self.content {
            match block.kind.as_deref() {
                Some("tool_use" | "server_tool_use") => observation.tool_calls.push(ToolCall {
                    id: block.id.map(Cow::into_owned),
                    name: block.name.map(Cow::into_owned).unwrap_or_default(),
                    // As a parsed `Value` writes it (compact), whatever the upstream's spacing.
                    input: block
                        .input
                        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                        .unwrap_or(Value::Null)
                        .to_string(),
                }),
                Some("thinking") => {
                    if let Some(text) = block.thinking.filter(|t| !t.is_empty()) {
                        observation.thoughts.push(crate::observe::Thought {
                            content: text.into_owned(),
                            source: "thinking",
                        });
                    }
                }
                _ => {}
            }
        }
        observation
    }
}

/// A `content_block_delta` with its index.
#[derive(serde::Deserialize)]
struct IndexedDelta<'a> {
    index: u64,
    #[serde(borrow)]
    delta: DeltaFields<'a>,
}

/// A `message_start`: what the record keeps of it.
#[derive(serde::Deserialize)]
struct MessageStart<'a> {
    #[serde(borrow)]
    message: StartedMessage<'a>,
}

#[derive(serde::Deserialize)]
struct StartedMessage<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    usage: Option<Value>,
}

/// A `message_delta`'s usage.
#[derive(serde::Deserialize)]
struct UsageOf {
    usage: Option<Value>,
}

/// Any event's `index`.
#[derive(serde::Deserialize)]
struct IndexOf {
    index: u64,
}

impl MessagesLoop {
    fn frame(kind: &str, data: &Value) -> Bytes {
        crate::sse::encode_event(Some(kind), &data.to_string())
    }

    /// What the client gets of `event` (of block `index`, whose data is `data`): nothing for
    /// the gateway's own block, the event as it came when the client's index is the same, the
    /// event renumbered otherwise.
    fn forward(&self, event: &SseEvent, data: &str, index: u64) -> Vec<Bytes> {
        match self.blocks.get(&index).map(|block| block.client) {
            Some(None) => Vec::new(),
            Some(Some(client)) if client != index => {
                let kind = event.event_type().unwrap_or("");
                match set_member(data.as_bytes(), "index", client.to_string().as_bytes()) {
                    Ok(data) => vec![crate::sse::encode_event(
                        Some(kind),
                        &String::from_utf8_lossy(&data),
                    )],
                    Err(_) => vec![event.raw().clone()],
                }
            }
            _ => vec![event.raw().clone()],
        }
    }

    /// This iteration's usage: `message_start`'s, updated by the cumulative `message_delta`.
    fn usage_now(&self) -> Value {
        let mut usage = self
            .start
            .as_deref()
            .and_then(|start| serde_json::from_str::<Value>(start).ok())
            .map(|mut start| start["message"]["usage"].take())
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(Default::default()));
        let delta = self
            .delta
            .as_ref()
            .and_then(|delta| serde_json::from_str::<Value>(&delta.data()).ok());
        if let (Some(now), Some(Value::Object(later))) = (
            usage.as_object_mut(),
            delta.map(|mut delta| delta["usage"].take()),
        ) {
            // Within one stream the counts are cumulative: the latest wins per field.
            now.extend(later);
        }
        usage
    }
}

impl crate::stream_loop::StreamLoop for MessagesLoop {
    fn relay(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let kind = event.event_type().unwrap_or("");
        if !matches!(
            kind,
            "content_block_delta"
                | "content_block_stop"
                | "content_block_start"
                | "message_start"
                | "message_delta"
                | "message_stop"
        ) {
            return vec![event.raw().clone()];
        }
        let data = event.data();
        match kind {
            "content_block_delta" => {
                let index = match quick_index(&data) {
                    Some(index) => index,
                    None => match serde_json::from_str::<IndexOf>(&data) {
                        Ok(delta) => delta.index,
                        Err(_) => return vec![event.raw().clone()],
                    },
                };
                if let Some(block) = self.blocks.get_mut(&index) {
                    block.deltas.push(event.clone());
                }
                self.forward(event, &data, index)
            }
            "content_block_stop" => match serde_json::from_str::<IndexOf>(&data) {
                Ok(stop) => self.forward(event, &data, stop.index),
                Err(_) => vec![event.raw().clone()],
            },
            "content_block_start" => {
                let Ok(start) = serde_json::from_str::<BlockStart<'_>>(&data) else {
                    return vec![event.raw().clone()];
                };
                let is_tool_use = start.content_block.kind == "tool_use";
                let name = start.content_block.name.map(std::borrow::Cow::into_owned);
                let ours = is_tool_use
                    && name
                        .as_deref()
                        .is_some_and(crate::stream_loop::is_gateway_tool);
                let client = (!ours).then(|| {
                    self.next_index += 1;
                    self.next_index - 1
                });
                let index = start.index;
                self.blocks.insert(
                    index,
                    LoopBlock {
                        client,
                        is_tool_use,
                        name,
                        start: data.to_string(),
                        deltas: Vec::new(),
                    },
                );
                self.forward(event, &data, index)
            }
            "message_start" => {
                self.iteration += 1;
                self.blocks.clear();
                self.delta = None;
                self.stop = None;
                self.start = Some(data.into_owned());
                if self.iteration == 1 {
                    vec![event.raw().clone()]
                } else {
                    Vec::new()
                }
            }
            // Held back: the iteration's end decides.
            "message_delta" => {
                self.delta = Some(event.clone());
                Vec::new()
            }
            _ => {
                self.stop = Some(event.clone());
                Vec::new()
            }
        }
    }

    fn end_iteration(&mut self) -> crate::stream_loop::IterationEnd {
        let mut tool_uses = self.blocks.values().filter(|block| block.is_tool_use);
        let ours = tool_uses.clone().next().is_some()
            && tool_uses.all(|block| {
                block
                    .name
                    .as_deref()
                    .is_some_and(crate::stream_loop::is_gateway_tool)
            });
        if ours {
            let content: Vec<Value> = self.blocks.values().map(LoopBlock::content).collect();
            let calls: Vec<ToolCall> = content
                .iter()
                .filter(|block| block["type"] == "tool_use")
                .map(|block| ToolCall {
                    id: block["id"].as_str().map(str::to_string),
                    name: block["name"].as_str().unwrap_or("").to_string(),
                    input: block["input"].to_string(),
                })
                .collect();
            let usage_now = self.usage_now();
            let mut answer = self
                .start
                .as_deref()
                .and_then(|start| serde_json::from_str::<Value>(start).ok())
                .map(|mut start| start["message"].take())
                .unwrap_or_else(|| Value::Object(Default::default()));
            answer["content"] = Value::Array(content);
            self.usage_before = crate::tools::sum_usage(&[&self.usage_before, &usage_now]);
            answer["usage"] = usage_now;
            return crate::stream_loop::IterationEnd::Continue { answer, calls };
        }
        let stop = self.stop.take().map_or_else(
            || Self::frame("message_stop", &serde_json::json!({"type": "message_stop"})),
            SseEvent::into_raw,
        );
        if self.iteration <= 1
            && let Some(delta) = self.delta.take()
        {
            // A single iteration: its own end, as it came.
            return crate::stream_loop::IterationEnd::Finish(vec![delta.into_raw(), stop]);
        }
        let total = crate::tools::sum_usage(&[&self.usage_before, &self.usage_now()]);
        let mut delta = self
            .delta
            .take()
            .and_then(|delta| serde_json::from_str::<Value>(&delta.data()).ok())
            .unwrap_or_else(|| serde_json::json!({"type": "message_delta", "delta": {}}));
        delta["usage"] = total;
        crate::stream_loop::IterationEnd::Finish(vec![Self::frame("message_delta", &delta), stop])
    }

    fn keep_alive(&self) -> Bytes {
        Self::frame("ping", &serde_json::json!({"type": "ping"}))
    }

    fn error_frames(&mut self, message: &str) -> Bytes {
        Dialect::Anthropic.stream_error_frames(ErrorKind::Api, message)
    }
}

#[cfg(test)]
mod loop_tests {
    use super::MessagesLoop;
    use crate::stream_loop::{IterationEnd, StreamLoop};
    use crate::test_support::events;
    use serde_json::{Value, json};

    fn sse(kind: &str, data: Value) -> String {
        format!("event: {kind}\ndata: {data}\n\n")
    }

    fn tool_iteration() -> String {
        [
            sse("message_start", json!({"type":"message_start","message":{"id":"msg_1","role":"assistant","content":[],"usage":{"input_tokens":10,"output_tokens":1}}})),
            sse("content_block_start", json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
            sse("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Adding. "}})),
            sse("content_block_stop", json!({"type":"content_block_stop","index":0})),
            sse("content_block_start", json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bmcp_t_add","input":{}}})),
            sse("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 2"}})),
            sse("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", \"b\": 3}"}})),
            sse("content_block_stop", json!({"type":"content_block_stop","index":1})),
            sse("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}})),
            sse("message_stop", json!({"type":"message_stop"})),
        ]
        .concat()
    }

    fn final_iteration() -> String {
        [
            sse("message_start", json!({"type":"message_start","message":{"id":"msg_2","role":"assistant","content":[],"usage":{"input_tokens":20,"output_tokens":1}}})),
            sse("content_block_start", json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
            sse("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"It is 5."}})),
            sse("content_block_stop", json!({"type":"content_block_stop","index":0})),
            sse("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}})),
            sse("message_stop", json!({"type":"message_stop"})),
        ]
        .concat()
    }

    #[test]
    fn the_index_is_found_without_a_parse_or_left_to_one() {
        use super::quick_index;
        assert_eq!(
            quick_index(
                r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"x"}}"#
            ),
            Some(12)
        );
        assert_eq!(
            quick_index(r#"{"index": 3, "type":"content_block_stop"}"#),
            Some(3)
        );
        // An "index" only inside the delta, or text that quotes one: a full read decides.
        assert_eq!(
            quick_index(r#"{"type":"content_block_delta","delta":{"index":1},"index":2}"#),
            None
        );
        assert_eq!(
            quick_index(r#"{"type":"content_block_delta","delta":{"text":"\"index\":9"}}"#),
            None
        );
    }

    #[test]
    fn an_answer_without_the_gateways_tools_is_relayed_byte_for_byte() {
        // The API's loop alone, and as the gateway runs it (passing events until a gateway call).
        an_answer_without_the_gateways_tools_is_relayed_byte_for_byte_with(Box::new(
            MessagesLoop::default(),
        ));
        an_answer_without_the_gateways_tools_is_relayed_byte_for_byte_with(
            crate::Api::AnthropicMessages.stream_loop().unwrap(),
        );
    }

    fn an_answer_without_the_gateways_tools_is_relayed_byte_for_byte_with(
        mut looped: Box<dyn StreamLoop>,
    ) {
        let stream = final_iteration();
        let mut client = Vec::new();
        for event in events(&stream) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Finish(end) = looped.end_iteration() else {
            panic!("no tool call: the stream ends")
        };
        client.extend(end);
        let relayed: Vec<u8> = client.concat();
        assert_eq!(String::from_utf8(relayed).unwrap(), stream);
    }

    #[test]
    fn two_iterations_are_one_message_to_the_client() {
        // The API's loop alone, and as the gateway runs it (passing events until a gateway call).
        two_iterations_are_one_message_to_the_client_with(Box::new(MessagesLoop::default()));
        two_iterations_are_one_message_to_the_client_with(
            crate::Api::AnthropicMessages.stream_loop().unwrap(),
        );
    }

    fn two_iterations_are_one_message_to_the_client_with(mut looped: Box<dyn StreamLoop>) {
        let mut client = Vec::new();
        for event in events(&tool_iteration()) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Continue { answer, calls } = looped.end_iteration() else {
            panic!("the gateway's tool was called")
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id.as_deref(), Some("toolu_1"));
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].input).unwrap(),
            json!({"a": 2, "b": 3})
        );
        assert_eq!(
            answer["content"][0],
            json!({"type": "text", "text": "Adding. "})
        );
        assert_eq!(answer["content"][1]["input"], json!({"a": 2, "b": 3}));
        for event in events(&final_iteration()) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Finish(end) = looped.end_iteration() else {
            panic!("no tool call: the last iteration")
        };
        client.extend(end);
        let text: String = client
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let seen = events(&text);
        let kinds: Vec<&str> = seen.iter().map(|e| e.event_type().unwrap_or("")).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(
            !text.contains("bmcp_"),
            "the gateway's call is not shown: {text}"
        );
        let indexes: Vec<u64> = seen
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data()).ok()?["index"].as_u64())
            .collect();
        assert_eq!(indexes, [0, 0, 0, 1, 1, 1], "numbered on across iterations");
        let last_delta: Value = serde_json::from_str(&seen[7].data()).unwrap();
        assert_eq!(
            last_delta["usage"]["input_tokens"], 30,
            "summed: {last_delta}"
        );
        assert_eq!(last_delta["usage"]["output_tokens"], 11);
        assert_eq!(last_delta["delta"]["stop_reason"], "end_turn");
    }
}
