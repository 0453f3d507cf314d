//! OpenAI Chat Completions (`POST /chat/completions`): a stream is `data:` chunks closed by
//! `data: [DONE]`, an error mid-stream is a `data: {"error":…}` chunk (then `[DONE]`), usage only
//! comes when asked for (`stream_options.include_usage`), tool calls arrive as indexed deltas.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::errors::{Dialect, ErrorKind};
use crate::observe::{
    Observation, ObserveStream, OpenBlock, OpenBlocks, ToolCall, Usage, contains, extra_counts,
    int, last_user_text, string,
};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::splice::{Members, append_to_array, insert_first, offset_in, set_member, splice};
use crate::sse::SseEvent;
use crate::tools::{ToolOutcome, ToolSpec, rendered, rendered_values, summed_usage};

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

    fn inject_tools(&self, body: &[u8], tools: &[ToolSpec]) -> Result<Vec<u8>, BadRequest> {
        let items = rendered(tools, |tool| {
            json!({
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description_text(),
                    "parameters": tool.object_schema(),
                    "strict": false,
                },
            })
        });
        let body = append_to_array(body, "tools", &items)?;
        set_member(&body, "parallel_tool_calls", b"false")
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

    fn prompt(&self, request: &Value) -> Option<String> {
        last_user_text(&request["messages"])
    }

    fn usage(&self, value: &Value) -> Usage {
        usage(value)
    }

    fn observe_body(&self, response: &Value) -> Observation {
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
}

fn usage(usage: &Value) -> Usage {
    let cached = int(&usage["prompt_tokens_details"]["cached_tokens"]);
    Usage {
        input: (int(&usage["prompt_tokens"]) - cached).max(0),
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
