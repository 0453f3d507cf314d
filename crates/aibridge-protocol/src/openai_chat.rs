//! OpenAI Chat Completions (`POST /chat/completions`): a stream is `data:` chunks closed by
//! `data: [DONE]`, an error mid-stream is a `data: {"error":…}` chunk (then `[DONE]`), usage only
//! comes when asked for (`stream_options.include_usage`), tool calls arrive as indexed deltas.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::errors::{Dialect, ErrorKind};
use crate::observe::{
    Observation, ObserveStream, OpenBlock, OpenBlocks, ToolCall, Usage, contains, extra_counts,
    int, last_user_text_in_messages, positive_counts, string,
};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::splice::{Members, append_to_array, insert_first, offset_in, splice};
use crate::sse::SseEvent;
use crate::tools::{ToolOutcome, ToolSpec, inject_parallel_off, rendered_values, summed_usage};

pub(crate) struct Rules;

impl WireRules for Rules {
    fn name(&self) -> &'static str {
        "chat_completions"
    }

    fn path(&self) -> &'static str {
        "/chat/completions"
    }

    fn dialect(&self) -> Dialect {
        Dialect::OpenAi
    }

    fn prepare_body(&self, summary: &RequestSummary, body: Bytes) -> Result<Bytes, BodyRefused> {
        // Usage is only in a chat stream when asked for; the gateway always needs it.
        if summary.stream {
            Ok(ensure_stream_usage(&body)?.into())
        } else {
            Ok(body)
        }
    }

    fn render_tool(&self, tool: &ToolSpec) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description_text(),
                "parameters": tool.object_schema(),
                "strict": false,
            },
        })
    }

    fn inject_rendered(&self, body: &[u8], tools: &[u8]) -> Result<Vec<u8>, BadRequest> {
        inject_parallel_off(body, tools)
    }

    fn continue_with(
        &self,
        request: &[u8],
        response: &Value,
        outcomes: &[ToolOutcome],
    ) -> Result<Vec<u8>, BadRequest> {
        let mut messages = vec![response["choices"][0]["message"].clone()];
        messages.extend(outcomes.iter().map(|outcome| {
            let content = if outcome.is_error {
                json!({"error": true, "message": outcome.text}).to_string()
            } else {
                outcome.text.clone()
            };
            json!({"role": "tool", "tool_call_id": outcome.call_id, "content": content})
        }));
        append_to_array(request, "messages", &rendered_values(&messages))
    }

    fn combine_answers(&self, earlier: &[Value], mut last: Value) -> Value {
        let mut text: String = earlier
            .iter()
            .filter_map(|answer| answer["choices"][0]["message"]["content"].as_str())
            .collect();
        if let Some(own) = last["choices"][0]["message"]["content"].as_str() {
            text.push_str(own);
        }
        let usage = summed_usage(earlier, &last);
        if !text.is_empty()
            && let Some(message) = last["choices"][0]["message"].as_object_mut()
        {
            message.insert("content".into(), Value::String(text));
        }
        last["usage"] = usage;
        last
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
        // Read into borrowed fields (the message text skipped, not built); a body of another
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
            usage: response.get("usage").filter(|u| u.is_object()).map(usage),
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

    fn stream_observer(&self) -> Box<dyn ObserveStream> {
        Box::<StreamWatch>::default()
    }

    fn is_terminal(&self, event: &SseEvent) -> bool {
        event.raw().trim_ascii_end().ends_with(b"[DONE]") && event.data().trim() == "[DONE]"
    }

    fn is_error_report(&self, event: &SseEvent) -> bool {
        contains(event.raw(), b"{\"error\"")
            && serde_json::from_str::<Value>(&event.data())
                .is_ok_and(|data| data.get("error").is_some())
    }

    fn error_frames(&self, message: &str, _: Option<&SseEvent>) -> Bytes {
        Dialect::OpenAi.stream_error_frames(ErrorKind::Api, message)
    }

    fn close_after_error_report(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"data: [DONE]\n\n"))
    }

    fn stream_loop(&self) -> Option<Box<dyn crate::stream_loop::StreamLoop>> {
        Some(Box::new(ChatLoop::default()))
    }
}

/// A blocking Chat Completions response: what the record keeps of it.
#[derive(serde::Deserialize)]
struct BlockingBody<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<UsageBody>,
    #[serde(borrow, default)]
    choices: Vec<BodyChoice<'a>>,
}

#[derive(serde::Deserialize)]
struct BodyChoice<'a> {
    #[serde(borrow)]
    message: Option<BodyMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct BodyMessage<'a> {
    #[serde(borrow, default)]
    tool_calls: Option<Vec<BodyCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct BodyCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<BodyFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct BodyFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl BlockingBody<'_> {
    fn observation(self) -> Observation {
        let mut observation = Observation {
            response_id: self.id.map(Cow::into_owned),
            model: self.model.map(Cow::into_owned),
            usage: self.usage.map(UsageBody::usage),
            ..Observation::default()
        };
        let calls = self
            .choices
            .into_iter()
            .filter_map(|choice| choice.message?.tool_calls)
            .flatten();
        for call in calls {
            let (name, arguments) = call
                .function
                .map(|function| (function.name, function.arguments))
                .unwrap_or_default();
            observation.tool_calls.push(ToolCall {
                id: call.id.map(Cow::into_owned),
                name: name.map(Cow::into_owned).unwrap_or_default(),
                input: arguments.map(Cow::into_owned).unwrap_or_default(),
            });
        }
        observation
    }
}

/// The Chat Completions stream of an inner loop: every chunk under the first iteration's id,
/// the gateway's tool calls left out, each continued iteration's finish, usage chunk and
/// `[DONE]` held back, and the final usage chunk carrying every iteration's usage.
#[derive(Debug, Default)]
pub(crate) struct ChatLoop {
    id: Option<Value>,
    /// This iteration's text, for the continuation.
    text: String,
    /// This iteration's tool calls by their index: (id, name, arguments).
    calls: std::collections::BTreeMap<u64, (Option<String>, String, String)>,
    /// Held back: the finish chunk and the usage chunk of this iteration.
    finish: Option<Value>,
    usage_chunk: Option<Value>,
    usage_before: Value,
}

impl ChatLoop {
    fn frame(data: &Value) -> Bytes {
        crate::sse::encode_event(None, &data.to_string())
    }
}

impl crate::stream_loop::StreamLoop for ChatLoop {
    fn relay(&mut self, event: &SseEvent) -> Vec<Bytes> {
        if event.data().trim() == "[DONE]" {
            return Vec::new();
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data()) else {
            return vec![event.raw().clone()];
        };
        let id = self.id.get_or_insert_with(|| chunk["id"].clone()).clone();
        // Unchanged (the first iteration's id, no call of the gateway's): relayed as it came.
        let as_came = chunk["id"] == id;
        chunk["id"] = id;
        if chunk["usage"].is_object() && chunk["choices"].as_array().is_none_or(Vec::is_empty) {
            self.usage_chunk = Some(chunk);
            return Vec::new();
        }
        let Some(choice) = chunk["choices"].get_mut(0) else {
            return vec![Self::frame(&chunk)];
        };
        if let Some(text) = choice["delta"]["content"].as_str() {
            self.text.push_str(text);
        }
        let mut kept = Vec::new();
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let index = call["index"].as_u64().unwrap_or(0);
            let entry = self.calls.entry(index).or_default();
            if let Some(id) = call["id"].as_str() {
                entry.0 = Some(id.to_string());
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.1.push_str(name);
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.2.push_str(arguments);
            }
            if !crate::stream_loop::is_gateway_tool(&entry.1) {
                kept.push(call);
            }
        }
        let had_calls = choice["delta"].get("tool_calls").is_some();
        if had_calls {
            if kept.is_empty() {
                if let Some(delta) = choice["delta"].as_object_mut() {
                    delta.remove("tool_calls");
                }
            } else {
                choice["delta"]["tool_calls"] = Value::Array(kept);
            }
        }
        if !choice["finish_reason"].is_null() {
            self.finish = Some(chunk);
            return Vec::new();
        }
        let empty = choice["delta"].as_object().is_some_and(|delta| {
            delta.is_empty() || (had_calls && delta.keys().all(|k| k == "role"))
        });
        if empty && had_calls {
            return Vec::new();
        }
        if as_came && !had_calls {
            return vec![event.raw().clone()];
        }
        vec![Self::frame(&chunk)]
    }

    fn end_iteration(&mut self) -> crate::stream_loop::IterationEnd {
        let calls: Vec<ToolCall> = std::mem::take(&mut self.calls)
            .into_values()
            .map(|(id, name, input)| ToolCall { id, name, input })
            .collect();
        let text = std::mem::take(&mut self.text);
        let usage_now = self
            .usage_chunk
            .as_ref()
            .map(|chunk| chunk["usage"].clone())
            .unwrap_or(Value::Null);
        let total = crate::tools::sum_usage(&[&self.usage_before, &usage_now]);
        let ours = !calls.is_empty()
            && calls
                .iter()
                .all(|call| crate::stream_loop::is_gateway_tool(&call.name));
        if ours {
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    json!({
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.input},
                    })
                })
                .collect();
            let content = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            let answer = json!({
                "choices": [{"message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}],
                "usage": usage_now,
            });
            self.usage_before = total;
            self.finish = None;
            self.usage_chunk = None;
            return crate::stream_loop::IterationEnd::Continue { answer, calls };
        }
        let mut end = Vec::new();
        if let Some(finish) = self.finish.take() {
            end.push(Self::frame(&finish));
        }
        if let Some(mut usage) = self.usage_chunk.take() {
            usage["usage"] = total;
            end.push(Self::frame(&usage));
        }
        end.push(Bytes::from_static(b"data: [DONE]\n\n"));
        crate::stream_loop::IterationEnd::Finish(end)
    }

    fn keep_alive(&self) -> Bytes {
        // An SSE comment: SDKs skip it, proxies see traffic.
        Bytes::from_static(b": keep-alive\n\n")
    }

    fn error_frames(&mut self, message: &str) -> Bytes {
        Dialect::OpenAi.stream_error_frames(ErrorKind::Api, message)
    }
}

fn usage(usage: &Value) -> Usage {
    let cached = int(&usage["prompt_tokens_details"]["cached_tokens"]);
    Usage {
        input: int(&usage["prompt_tokens"]).saturating_sub(cached).max(0),
        output: int(&usage["completion_tokens"]),
        cache_read: cached,
        cache_write: 0,
        extra: extra_counts([
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
        ]),
    }
}

/// A response's `usage`, read without building a `Value`: the counts [`usage`] reads. A count
/// of another type fails the typed read, and the caller reads the object as a `Value` instead,
/// where such a count is 0.
#[derive(serde::Deserialize)]
struct UsageBody {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(serde::Deserialize)]
struct PromptDetails {
    cached_tokens: Option<i64>,
    audio_tokens: Option<i64>,
}

#[derive(serde::Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<i64>,
    audio_tokens: Option<i64>,
    accepted_prediction_tokens: Option<i64>,
    rejected_prediction_tokens: Option<i64>,
}

impl UsageBody {
    fn usage(self) -> Usage {
        let prompt = self.prompt_tokens_details.as_ref();
        let completion = self.completion_tokens_details.as_ref();
        let cached = prompt.and_then(|p| p.cached_tokens).unwrap_or(0);
        Usage {
            input: self
                .prompt_tokens
                .unwrap_or(0)
                .saturating_sub(cached)
                .max(0),
            output: self.completion_tokens.unwrap_or(0),
            cache_read: cached,
            cache_write: 0,
            extra: positive_counts([
                ("prompt_audio", prompt.and_then(|p| p.audio_tokens)),
                (
                    "completion_reasoning",
                    completion.and_then(|c| c.reasoning_tokens),
                ),
                ("completion_audio", completion.and_then(|c| c.audio_tokens)),
                (
                    "completion_accepted_prediction",
                    completion.and_then(|c| c.accepted_prediction_tokens),
                ),
                (
                    "completion_rejected_prediction",
                    completion.and_then(|c| c.rejected_prediction_tokens),
                ),
            ]),
        }
    }
}

#[derive(Debug, Default)]
struct StreamWatch {
    observation: Observation,
    /// Tool calls by their index in the choice.
    open: OpenBlocks,
}

impl ObserveStream for StreamWatch {
    fn observe(&mut self, event: &SseEvent) {
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
            self.observation.model = string(&chunk["model"]);
        }
        if chunk["usage"].is_object() {
            self.observation.usage = Some(usage(&chunk["usage"]));
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = call["index"].as_u64().unwrap_or(0);
                let entry = self.open.0.entry(index).or_insert_with(|| OpenBlock::Tool {
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

    fn finish(mut self: Box<Self>) -> Observation {
        self.open.close_all(&mut self.observation);
        self.observation
    }
}

/// Makes a streaming request ask for usage (`stream_options.include_usage = true`) so the
/// gateway always learns the token counts. Always a byte splice: everything the client wrote
/// other than that one member stays exactly as it was (key order, number spelling, spacing).
pub fn ensure_stream_usage(body: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let members: Members<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
    let Some(options) = members.get("stream_options") else {
        let open = body
            .iter()
            .position(|b| *b == b'{')
            .ok_or(BadRequest::NotAnObject)?;
        return Ok(insert_first(
            body,
            open,
            br#""stream_options":{"include_usage":true}"#,
        ));
    };
    let start = offset_in(body, options);
    let span = start..start + options.get().len();
    match options.get().as_bytes().first() {
        Some(b'n') => Ok(splice(body, span, br#"{"include_usage":true}"#)),
        Some(b'{') => {
            let inner: Members<'_> = serde_json::from_str(options.get())
                .map_err(|e| BadRequest::NotJson(e.to_string()))?;
            match inner.get("include_usage") {
                Some(value) if value.get() == "true" => Ok(body.to_vec()),
                Some(value) => {
                    let at = offset_in(body, value);
                    Ok(splice(body, at..at + value.get().len(), b"true"))
                }
                None => Ok(insert_first(body, start, br#""include_usage":true"#)),
            }
        }
        _ => Err(BadRequest::InvalidStreamOptions),
    }
}

#[cfg(test)]
mod loop_tests {
    use super::ChatLoop;
    use crate::stream_loop::{IterationEnd, StreamLoop};
    use crate::test_support::events;
    use serde_json::{Value, json};

    fn data(value: Value) -> String {
        format!("data: {value}\n\n")
    }

    #[test]
    fn two_iterations_are_one_stream_under_one_id() {
        // The API's loop alone, and as the gateway runs it (passing events until a gateway call).
        two_iterations_are_one_stream_under_one_id_with(Box::new(ChatLoop::default()));
        two_iterations_are_one_stream_under_one_id_with(
            crate::Api::OpenAiChat.stream_loop().unwrap(),
        );
    }

    fn two_iterations_are_one_stream_under_one_id_with(mut looped: Box<dyn StreamLoop>) {
        let first = [
            data(json!({"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Adding. "},"finish_reason":null}]})),
            data(json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"bmcp_t_add","arguments":""}}]},"finish_reason":null}]})),
            data(json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":2}"}}]},"finish_reason":null}]})),
            data(json!({"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
            data(json!({"id":"c1","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}})),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let last = [
            data(json!({"id":"c2","choices":[{"index":0,"delta":{"role":"assistant","content":"It is 2."},"finish_reason":null}]})),
            data(json!({"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})),
            data(json!({"id":"c2","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}})),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let mut client: Vec<bytes::Bytes> = Vec::new();
        for event in events(&first) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Continue { answer, calls } = looped.end_iteration() else {
            panic!("the gateway's call")
        };
        assert_eq!(calls[0].name, "bmcp_t_add");
        assert_eq!(calls[0].input, "{\"a\":2}");
        assert_eq!(answer["choices"][0]["message"]["content"], "Adding. ");
        for event in events(&last) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Finish(end) = looped.end_iteration() else {
            panic!("last")
        };
        client.extend(end);
        let text: String = client
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert!(!text.contains("bmcp_"), "{text}");
        assert_eq!(text.matches("[DONE]").count(), 1);
        assert_eq!(text.matches("finish_reason\":\"").count(), 1, "{text}");
        let chunks: Vec<Value> = events(&text)
            .iter()
            .filter_map(|e| serde_json::from_str(&e.data()).ok())
            .collect();
        assert!(chunks.iter().all(|c| c["id"] == "c1"), "one id: {text}");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["total_tokens"], 37, "{usage}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Api;
    use crate::test_support::observe_stream;
    use serde_json::json;

    const API: Api = Api::OpenAiChat;

    #[test]
    fn prompt_is_the_last_user_message() {
        let chat = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]});
        assert_eq!(
            API.prompt(chat.to_string().as_bytes()).as_deref(),
            Some("hi")
        );
        assert_eq!(API.prompt(b"{}"), None);
    }

    #[test]
    fn blocking_and_stream() {
        let body = json!({
            "id": "chatcmpl-1",
            "choices": [{"message": {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60},
                      "completion_tokens_details": {"reasoning_tokens": 8}}
        });
        let seen = API.observe_body(body.to_string().as_bytes());
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
        let seen = observe_stream(API, stream);
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
    fn garbage_is_ignored() {
        assert_eq!(API.observe_body(b"<html>"), Observation::default());
    }

    fn usage_forced(body: &str) -> String {
        String::from_utf8(ensure_stream_usage(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn stream_usage_is_spliced_in_without_touching_the_rest() {
        let body = r#"{"model":"gpt-x", "stream":true,"messages":[{"role":"user","content":"hi"}],"n":1.50}"#;
        assert_eq!(
            usage_forced(body),
            r#"{"stream_options":{"include_usage":true},"model":"gpt-x", "stream":true,"messages":[{"role":"user","content":"hi"}],"n":1.50}"#
        );
        assert_eq!(
            usage_forced(" { } "),
            r#" {"stream_options":{"include_usage":true} } "#
        );
    }

    #[test]
    fn stream_usage_already_on_is_left_alone_and_off_is_turned_on() {
        let on = r#"{"model":"m","stream_options":{"include_usage":true}}"#;
        assert_eq!(usage_forced(on), on);
        let off: Value = serde_json::from_str(&usage_forced(
            r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
        ))
        .unwrap();
        assert_eq!(
            off["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert_eq!(
            ensure_stream_usage(br#"{"model":"m","stream_options":5}"#),
            Err(BadRequest::InvalidStreamOptions)
        );
    }

    /// Review item 5: every case is a splice; nothing else of the body is re-encoded.
    #[test]
    fn stream_usage_is_spliced_in_every_case() {
        let rest = r#""z":1,"n":1.50,"big":12345678901234567890123,"a":"é""#;
        for (options, expected) in [
            (
                r#"{"other":true}"#,
                r#"{"include_usage":true,"other":true}"#,
            ),
            (r#"{ }"#, r#"{"include_usage":true }"#),
            (r#"null"#, r#"{"include_usage":true}"#),
            (
                r#"{"include_usage": false, "x":2.0}"#,
                r#"{"include_usage": true, "x":2.0}"#,
            ),
            (r#"{"include_usage":null}"#, r#"{"include_usage":true}"#),
        ] {
            let body = format!(r#"{{{rest}, "stream_options": {options}}}"#);
            assert_eq!(
                usage_forced(&body),
                format!(r#"{{{rest}, "stream_options": {expected}}}"#),
                "{options}"
            );
        }
        let null_once = usage_forced(r#"{"stream_options":null,"model":"m"}"#);
        assert_eq!(
            null_once.matches("stream_options").count(),
            1,
            "no second key: {null_once}"
        );
    }
}
