//! The bridged APIs. Everything one API's wire format decides lives in its own module
//! (`anthropic_messages`, `openai_chat`, `openai_responses`); [`Api`] is the one type the gateway
//! holds, and [`Api::rules`] the one place that names every API. Adding an API is one module and
//! one variant.

use bytes::Bytes;
use serde_json::Value;

use crate::errors::Dialect;
use crate::observe::{Observation, StreamObserver, Usage};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::sse::SseEvent;
use crate::stream_loop::StreamLoop;
use crate::tools::{ToolOutcome, ToolSpec};
use crate::{anthropic_messages, openai_chat, openai_responses};

/// Tools rendered in one API's request shape ([`Api::render_tools`]).
#[derive(Debug, Clone)]
pub struct RenderedTools {
    api: Api,
    joined: Vec<u8>,
}

impl RenderedTools {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
    }
}

/// An API the gateway bridges: parses enough of, observes for the record, and relays event by
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// OpenAI `POST /chat/completions` (and OpenAI-compatible upstreams).
    OpenAiChat,
    /// OpenAI `POST /responses`.
    OpenAiResponses,
}

impl Api {
    /// Every bridged API, for tables and tests.
    pub const ALL: [Api; 3] = [
        Api::AnthropicMessages,
        Api::OpenAiChat,
        Api::OpenAiResponses,
    ];

    fn rules(self) -> &'static dyn WireRules {
        match self {
            Self::AnthropicMessages => &anthropic_messages::Rules,
            Self::OpenAiChat => &openai_chat::Rules,
            Self::OpenAiResponses => &openai_responses::Rules,
        }
    }

    /// Stable name for logs, metrics and records (`messages`, `chat_completions`, `responses`).
    pub fn name(self) -> &'static str {
        self.rules().name()
    }

    /// Where the API is served, relative to the provider's base URL (and, for clients, to the
    /// provider's route prefix).
    pub fn path(self) -> &'static str {
        self.rules().path()
    }

    /// The error dialect its clients speak.
    pub fn dialect(self) -> Dialect {
        self.rules().dialect()
    }

    /// The body to send upstream, or why the request cannot be bridged.
    pub fn prepare_body(self, summary: &RequestSummary, body: Bytes) -> Result<Bytes, BodyRefused> {
        self.rules().prepare_body(summary, body)
    }

    /// `tools` in this API's request shape, ready to be injected into any number of requests.
    pub fn render_tools(self, tools: &[ToolSpec]) -> RenderedTools {
        let rules = self.rules();
        let items: Vec<Vec<u8>> = tools
            .iter()
            .map(|tool| serde_json::to_vec(&rules.render_tool(tool)).unwrap_or_default())
            .collect();
        RenderedTools {
            api: self,
            joined: items.join(&b','),
        }
    }

    /// The body with `tools` added after the client's own (kept byte for byte) and parallel
    /// tool calls turned off.
    pub fn inject_tools(self, body: &[u8], tools: &[ToolSpec]) -> Result<Bytes, BadRequest> {
        self.inject_rendered(body, &self.render_tools(tools))
    }

    /// [`Self::inject_tools`] with tools rendered beforehand ([`Self::render_tools`]).
    pub fn inject_rendered(self, body: &[u8], tools: &RenderedTools) -> Result<Bytes, BadRequest> {
        if tools.joined.is_empty() || tools.api != self {
            return Ok(Bytes::copy_from_slice(body));
        }
        self.rules()
            .inject_rendered(body, &tools.joined)
            .map(Bytes::from)
    }

    /// The next iteration's request of an inner loop: `request` with the model's blocking
    /// answer and each tool call's outcome appended to the conversation.
    pub fn continue_with(
        self,
        request: &[u8],
        response: &Value,
        outcomes: &[ToolOutcome],
    ) -> Result<Bytes, BadRequest> {
        self.rules()
            .continue_with(request, response, outcomes)
            .map(Bytes::from)
    }

    /// The blocking answer the client gets from an inner loop: the last upstream answer, the
    /// earlier ones' text before its own content, usage summed over all of them.
    pub fn combine_answers(self, earlier: &[Value], last: Value) -> Value {
        self.rules().combine_answers(earlier, last)
    }

    /// The user's prompt: the text of the last user message (or input) of a request body.
    pub fn prompt(self, body: &[u8]) -> Option<String> {
        self.rules().prompt(body)
    }

    /// Reads a complete (non-streaming) response body.
    pub fn observe_body(self, body: &[u8]) -> Observation {
        self.rules().observe_body(body)
    }

    /// Only the response's id, model and usage, for the metrics and traces when nothing else is
    /// recorded: the rest of the body is skipped without being built.
    pub fn observe_usage(self, body: &[u8]) -> Observation {
        #[derive(serde::Deserialize)]
        struct Peek {
            id: Option<String>,
            model: Option<String>,
            usage: Option<Value>,
        }
        match serde_json::from_slice::<Peek>(body) {
            Ok(peek) => Observation {
                response_id: peek.id,
                model: peek.model,
                usage: peek
                    .usage
                    .filter(Value::is_object)
                    .map(|usage| self.rules().usage(&usage)),
                ..Observation::default()
            },
            Err(_) => Observation::default(),
        }
    }

    /// Only the usage of a blocking response, as cheaply as it can be had: the object after the
    /// body's last `"usage":` key when that is one (it comes last, or nearly, in every API's
    /// body), else the peek of [`Self::observe_usage`]. For the metrics when nothing else of the
    /// body is needed.
    pub fn usage_of_body(self, body: &[u8]) -> Option<Usage> {
        let Some(object) = last_usage_object(body) else {
            return self.observe_usage(body).usage;
        };
        if let Some(usage) = self.rules().usage_of_object(object) {
            return Some(usage);
        }
        let tail = crate::observe::leading::<Value>(object).filter(Value::is_object);
        match tail {
            Some(usage) => Some(self.rules().usage(&usage)),
            None => self.observe_usage(body).usage,
        }
    }

    /// A watcher for a stream of this API, fed each relayed event.
    pub fn stream_observer(self) -> StreamObserver {
        StreamObserver::new(self.rules().stream_observer())
    }

    /// How this API's streams of an inner loop join into one for the client; `None` where the
    /// live loop does not exist yet for this API.
    pub fn stream_loop(self) -> Option<Box<dyn StreamLoop>> {
        let inner = self.rules().stream_loop()?;
        Some(Box::new(crate::stream_loop::PassingLoop::new(inner)))
    }

    /// Whether `event` ends the stream.
    pub fn is_terminal(self, event: &SseEvent) -> bool {
        self.rules().is_terminal(event)
    }

    /// Whether the upstream itself reported an error in `event`.
    pub fn is_error_report(self, event: &SseEvent) -> bool {
        self.rules().is_error_report(event)
    }

    /// The frames that end a stream the gateway has to cut short, after `last` was relayed.
    pub fn stream_error_frames(self, message: &str, last: Option<&SseEvent>) -> Bytes {
        self.rules().error_frames(message, last)
    }

    /// What still closes a stream whose last relayed event was the upstream's own error report.
    pub fn close_after_error_report(self) -> Option<Bytes> {
        self.rules().close_after_error_report()
    }
}

/// The bytes from the `{` of the value of the last `"usage":` key. Inside a JSON string the
/// quotes would be escaped, so this is a key (of the body, or of an object nested in it: the
/// caller checks the value is an object and falls back otherwise).
fn last_usage_object(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"usage\"";
    let at = memchr::memmem::rfind(body, KEY)?;
    let rest = &body[at + KEY.len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    rest.starts_with(b"{").then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::Api;

    #[test]
    fn the_usage_peek_agrees_with_the_whole_observation() {
        let bodies = [
            (
                Api::AnthropicMessages,
                r#"{"id":"msg_1","model":"claude-x","content":[{"type":"text","text":"hi \"usage\""}],"usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":1,"cache_creation_input_tokens":2}}"#,
            ),
            (
                Api::OpenAiChat,
                r#"{"id":"c1","model":"gpt-x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":6,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
            ),
            (
                Api::OpenAiResponses,
                r#"{"id":"r1","model":"gpt-x","output":[],"usage":{"input_tokens":7,"output_tokens":8,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":3}}}"#,
            ),
            (
                Api::OpenAiChat,
                r#"{"id":"c2","model":"gpt-x","usage":null}"#,
            ),
        ];
        for (api, body) in bodies {
            let whole = api.observe_body(body.as_bytes());
            let peek = api.observe_usage(body.as_bytes());
            assert_eq!(peek.response_id, whole.response_id, "{api:?}");
            assert_eq!(peek.model, whole.model, "{api:?}");
            assert_eq!(peek.usage, whole.usage, "{api:?}: {body}");
        }
        assert_eq!(
            Api::OpenAiChat.observe_usage(b"not json"),
            Default::default()
        );
    }

    fn spec() -> crate::ToolSpec {
        crate::ToolSpec {
            name: "bmcp_tools_add".into(),
            description: Some("Adds".into()),
            input_schema: serde_json::json!({"properties": {"a": {"type": "number"}}}),
        }
    }

    #[test]
    fn injected_tools_follow_the_clients_own_in_each_apis_shape() {
        let anthropic = Api::AnthropicMessages
            .inject_tools(
                br#"{"model":"m","tools":[{"name":"client_tool","input_schema":{"type":"object"}}],"messages":[]}"#,
                &[spec()],
            )
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&anthropic).unwrap();
        assert_eq!(body["tools"][0]["name"], "client_tool");
        assert_eq!(body["tools"][1]["name"], "bmcp_tools_add");
        assert_eq!(body["tools"][1]["input_schema"]["type"], "object", "added");
        assert_eq!(body["tool_choice"]["type"], "auto");
        assert_eq!(body["tool_choice"]["disable_parallel_tool_use"], true);
        let kept = br#"[{"name":"client_tool","input_schema":{"type":"object"}},"#;
        assert!(
            anthropic.windows(kept.len()).any(|w| w == kept),
            "the client's tool is kept byte for byte: {}",
            String::from_utf8_lossy(&anthropic)
        );
        let none = Api::AnthropicMessages
            .inject_tools(br#"{"tool_choice":{"type":"none"}}"#, &[spec()])
            .unwrap();
        let none: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(none["tool_choice"], serde_json::json!({"type": "none"}));

        let chat = Api::OpenAiChat
            .inject_tools(br#"{"model":"g","parallel_tool_calls":true}"#, &[spec()])
            .unwrap();
        let chat: serde_json::Value = serde_json::from_slice(&chat).unwrap();
        assert_eq!(chat["tools"][0]["type"], "function");
        assert_eq!(chat["tools"][0]["function"]["name"], "bmcp_tools_add");
        assert_eq!(chat["tools"][0]["function"]["strict"], false);
        assert_eq!(chat["parallel_tool_calls"], false);

        let responses = Api::OpenAiResponses
            .inject_tools(
                br#"{"model":"g","tools":[{"type":"web_search"}]}"#,
                &[spec()],
            )
            .unwrap();
        let responses: serde_json::Value = serde_json::from_slice(&responses).unwrap();
        assert_eq!(responses["tools"][0]["type"], "web_search");
        assert_eq!(responses["tools"][1]["name"], "bmcp_tools_add");
        assert_eq!(responses["tools"][1]["parameters"]["type"], "object");
        assert_eq!(responses["parallel_tool_calls"], false);

        assert!(
            Api::OpenAiChat
                .inject_tools(br#"{"tools":"nope"}"#, &[spec()])
                .is_err()
        );
    }

    fn outcomes() -> Vec<crate::ToolOutcome> {
        vec![
            crate::ToolOutcome {
                call_id: "call_1".into(),
                text: "3".into(),
                is_error: false,
            },
            crate::ToolOutcome {
                call_id: "call_2".into(),
                text: "the tool failed".into(),
                is_error: true,
            },
        ]
    }

    #[test]
    fn a_continuation_appends_the_answer_and_the_tool_outcomes() {
        use serde_json::{Value, json};
        let parse = |bytes: bytes::Bytes| serde_json::from_slice::<Value>(&bytes).unwrap();

        let answer = json!({"content": [{"type": "text", "text": "Let me add."}, {"type": "tool_use", "id": "call_1", "name": "bmcp_t_add", "input": {"a": 1}}]});
        let next = Api::AnthropicMessages
            .continue_with(
                br#"{"model":"m","messages":[{"role":"user","content":"add"}]}"#,
                &answer,
                &outcomes(),
            )
            .unwrap();
        let next = parse(next);
        assert_eq!(next["messages"].as_array().unwrap().len(), 3);
        assert_eq!(
            next["messages"][1],
            json!({"role": "assistant", "content": answer["content"]})
        );
        assert_eq!(next["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(next["messages"][2]["content"][0]["is_error"], false);
        assert_eq!(next["messages"][2]["content"][1]["is_error"], true);
        assert_eq!(
            next["messages"][2]["content"][1]["content"],
            "the tool failed"
        );

        let answer = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bmcp_t_add", "arguments": "{}"}}]}}]});
        let next = parse(
            Api::OpenAiChat
                .continue_with(
                    br#"{"model":"g","messages":[{"role":"user","content":"add"}]}"#,
                    &answer,
                    &outcomes(),
                )
                .unwrap(),
        );
        assert_eq!(next["messages"][1]["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            next["messages"][2],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "3"})
        );
        let error: Value =
            serde_json::from_str(next["messages"][3]["content"].as_str().unwrap()).unwrap();
        assert_eq!(error, json!({"error": true, "message": "the tool failed"}));

        let answer = json!({"output": [{"type": "function_call", "call_id": "call_1", "name": "bmcp_t_add", "arguments": "{}"}]});
        let next = parse(
            Api::OpenAiResponses
                .continue_with(
                    br#"{"model":"g","input":"add","previous_response_id":"resp_0"}"#,
                    &answer,
                    &outcomes(),
                )
                .unwrap(),
        );
        assert_eq!(next["input"][0], json!({"role": "user", "content": "add"}));
        assert_eq!(next["input"][1]["type"], "function_call");
        assert_eq!(
            next["input"][2],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "3"})
        );
        assert_eq!(
            next["input"][3]["output"],
            "invocation error: the tool failed"
        );
        assert_eq!(
            next["previous_response_id"], "resp_0",
            "kept as the client sent it"
        );
    }

    #[test]
    fn a_loops_answers_combine_into_one_with_usage_summed() {
        use serde_json::json;
        let first = json!({"content": [{"type": "text", "text": "Adding. "}, {"type": "tool_use", "id": "c"}], "usage": {"input_tokens": 10, "output_tokens": 3}});
        let last = json!({"id": "msg_2", "content": [{"type": "text", "text": "It is 3."}], "usage": {"input_tokens": 20, "output_tokens": 4}});
        let one = Api::AnthropicMessages.combine_answers(&[first], last);
        assert_eq!(one["id"], "msg_2");
        assert_eq!(
            one["content"],
            json!([{"type": "text", "text": "Adding. "}, {"type": "text", "text": "It is 3."}])
        );
        assert_eq!(
            one["usage"],
            json!({"input_tokens": 30, "output_tokens": 7})
        );

        let first = json!({"choices": [{"message": {"content": "Adding. "}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}});
        let last = json!({"choices": [{"message": {"content": "It is 3."}}], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}});
        let one = Api::OpenAiChat.combine_answers(&[first], last);
        assert_eq!(one["choices"][0]["message"]["content"], "Adding. It is 3.");
        assert_eq!(one["usage"]["total_tokens"], 17);

        let first = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "Adding."}]}, {"type": "function_call"}], "usage": {"input_tokens": 1, "output_tokens": 1}});
        let last = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "3"}]}], "usage": {"input_tokens": 2, "output_tokens": 2}});
        let one = Api::OpenAiResponses.combine_answers(&[first], last);
        assert_eq!(one["output"].as_array().unwrap().len(), 2);
        assert_eq!(one["output"][0]["content"][0]["text"], "Adding.");
        assert_eq!(one["usage"], json!({"input_tokens": 3, "output_tokens": 3}));
    }

    #[test]
    fn the_usage_scan_finds_the_body_usage_and_falls_back_when_unsure() {
        let cases = [
            // A tool's input with a `usage` key comes before the body's own.
            (
                Api::AnthropicMessages,
                r#"{"id":"m","content":[{"type":"tool_use","input":{"usage":{"input_tokens":99}}}],"usage" : {"input_tokens":3,"output_tokens":4}}"#,
            ),
            // Metadata after the usage, with a `usage` key of its own (a string): the peek.
            (
                Api::OpenAiResponses,
                r#"{"id":"r","output":[],"usage":{"input_tokens":7,"output_tokens":8},"metadata":{"usage":"mine"}}"#,
            ),
            // The text mentions it, quoted: escaped, so not a key.
            (
                Api::OpenAiChat,
                r#"{"id":"c","choices":[{"message":{"content":"the \"usage\": {} field"}}],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#,
            ),
            (Api::OpenAiChat, r#"{"id":"c","usage":null}"#),
            (Api::OpenAiChat, r#"not json"#),
            // Every count the typed reads know, and one they do not.
            (
                Api::AnthropicMessages,
                r#"{"id":"m","usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":5,"cache_creation_input_tokens":6,"server_tool_use":{"web_search_requests":2},"cache_creation":{"ephemeral_1h_input_tokens":1,"ephemeral_5m_input_tokens":5},"service_tier":"standard"}}"#,
            ),
            (
                Api::OpenAiChat,
                r#"{"id":"c","usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":2,"audio_tokens":1},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":1,"accepted_prediction_tokens":4,"rejected_prediction_tokens":5}}}"#,
            ),
            // Counts of other types fail the typed reads: read as a `Value`, where they are 0.
            (
                Api::AnthropicMessages,
                r#"{"id":"m","usage":{"input_tokens":3.5,"output_tokens":"4","cache_creation":null}}"#,
            ),
            (
                Api::OpenAiChat,
                r#"{"id":"c","usage":{"prompt_tokens":9,"completion_tokens":6.0,"prompt_tokens_details":[1]}}"#,
            ),
            // A cached count larger than the prompt's does not make the input negative.
            (
                Api::OpenAiChat,
                r#"{"id":"c","usage":{"prompt_tokens":-9223372036854775807,"prompt_tokens_details":{"cached_tokens":5}}}"#,
            ),
        ];
        for (api, body) in cases {
            assert_eq!(
                api.usage_of_body(body.as_bytes()),
                api.observe_body(body.as_bytes()).usage,
                "{api:?}: {body}"
            );
        }
    }
}
