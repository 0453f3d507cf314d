//! OpenAI Responses (`POST /responses`): bodies pass byte for byte (Codex sends items the SDK
//! types do not know); a stream is named events ending in `response.completed` (or `.failed`,
//! `.incomplete`, `error`), each with a `sequence_number` that an error frame the gateway adds
//! must continue; the finished response object carries the usage and output items.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::errors::Dialect;
use crate::observe::{
    Observation, ObserveStream, ToolCall, Usage, extra_counts, int, last_user_text, push_thought,
    string,
};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::splice::{append_to_array, members, set_member};
use crate::sse::{SseEvent, encode_event};
use crate::tools::{ToolOutcome, ToolSpec, inject_parallel_off, prepend_earlier, rendered_values};

pub(crate) struct Rules;

impl WireRules for Rules {
    fn name(&self) -> &'static str {
        "responses"
    }

    fn path(&self) -> &'static str {
        "/responses"
    }

    fn dialect(&self) -> Dialect {
        Dialect::OpenAi
    }

    fn prepare_body(&self, summary: &RequestSummary, body: Bytes) -> Result<Bytes, BodyRefused> {
        if summary.background {
            return Err(BodyRefused::Unsupported(
                "background requests are not supported by aibridge",
            ));
        }
        Ok(body)
    }

    fn render_tool(&self, tool: &ToolSpec) -> Value {
        json!({
            "type": "function",
            "name": tool.name,
            "description": tool.description_text(),
            "parameters": tool.object_schema(),
            "strict": false,
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
        // A text input is the conversation's first user message.
        let input = members(request)?
            .get("input")
            .map(|raw| raw.get().to_string());
        let request = match input {
            Some(text) if text.starts_with('"') => set_member(
                request,
                "input",
                format!(r#"[{{"role":"user","content":{text}}}]"#).as_bytes(),
            )?,
            _ => request.to_vec(),
        };
        let mut items: Vec<Value> = response["output"].as_array().cloned().unwrap_or_default();
        items.extend(outcomes.iter().map(|outcome| {
            let output = if outcome.is_error {
                format!("invocation error: {}", outcome.text)
            } else {
                outcome.text.clone()
            };
            json!({"type": "function_call_output", "call_id": outcome.call_id, "output": output})
        }));
        append_to_array(&request, "input", &rendered_values(&items))
    }

    fn combine_answers(&self, earlier: &[Value], last: Value) -> Value {
        prepend_earlier(earlier, last, "output", "message")
    }

    fn prompt(&self, body: &[u8]) -> Option<String> {
        let request: Value = serde_json::from_slice(body).ok()?;
        match &request["input"] {
            Value::String(text) => Some(text.clone()),
            items => last_user_text(items),
        }
    }

    fn usage(&self, value: &Value) -> Usage {
        usage(value)
    }

    fn observe_body(&self, body: &[u8]) -> Observation {
        serde_json::from_slice::<Value>(body)
            .map(|response| observe_response_object(&response))
            .unwrap_or_default()
    }

    fn stream_observer(&self) -> Box<dyn ObserveStream> {
        Box::<StreamWatch>::default()
    }

    fn is_terminal(&self, event: &SseEvent) -> bool {
        matches!(
            event.event_type(),
            Some("response.completed" | "response.failed" | "response.incomplete" | "error")
        )
    }

    fn is_error_report(&self, event: &SseEvent) -> bool {
        matches!(event.event_type(), Some("error" | "response.failed"))
    }

    /// An `error` event whose `sequence_number` continues the last one relayed.
    fn error_frames(&self, message: &str, last: Option<&SseEvent>) -> Bytes {
        let sequence_number = last
            .and_then(|event| serde_json::from_str::<Value>(&event.data()).ok())
            .and_then(|data| data["sequence_number"].as_u64())
            .map(|n| n + 1);
        let data = serde_json::json!({
            "type": "error",
            "code": "server_error",
            "message": message,
            "param": null,
            "sequence_number": sequence_number,
        });
        encode_event(Some("error"), &data.to_string())
    }

    fn stream_loop(&self) -> Option<Box<dyn crate::stream_loop::StreamLoop>> {
        Some(Box::new(ResponsesLoop::default()))
    }
}

/// The Responses stream of an inner loop: one `response.created` / `response.in_progress` (the
/// first iteration's), `sequence_number` counting on across iterations, output items numbered on
/// (`output_index`), the gateway's function calls left out, each continued iteration's
/// `response.completed` held back, and the final one carrying every visible output item and the
/// usage of every iteration.
#[derive(Debug, Default)]
pub(crate) struct ResponsesLoop {
    iteration: u32,
    sequence: u64,
    /// Client `output_index` of the next visible item.
    next_output: u64,
    /// This iteration's items: upstream `output_index` → client index (`None`: the gateway's).
    outputs: std::collections::BTreeMap<u64, Option<u64>>,
    /// Visible items of every iteration, done, in client order.
    visible: Vec<Value>,
    first_id: Option<Value>,
    completed: Option<Value>,
    usage_before: Value,
}

impl ResponsesLoop {
    /// `data` as the client's next event; `event` as it came when nothing in it changes (a
    /// first iteration before any call of the gateway's).
    fn emit(&mut self, event: &SseEvent, kind: &str, data: Value) -> Bytes {
        if data["sequence_number"].as_u64() == Some(self.sequence) {
            self.sequence += 1;
            return event.raw().clone();
        }
        self.numbered(kind, data)
    }

    /// `data` as the client's next event, numbered on.
    fn numbered(&mut self, kind: &str, mut data: Value) -> Bytes {
        data["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        encode_event(Some(kind), &data.to_string())
    }
}

impl crate::stream_loop::StreamLoop for ResponsesLoop {
    fn relay(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data()) else {
            return vec![event.raw().clone()];
        };
        let kind = event.event_type().unwrap_or("").to_string();
        match kind.as_str() {
            "response.created" => {
                self.iteration += 1;
                self.outputs.clear();
                self.completed = None;
                if self.iteration > 1 {
                    return Vec::new();
                }
                self.first_id = Some(data["response"]["id"].clone());
                vec![self.emit(event, &kind, data)]
            }
            "response.in_progress" if self.iteration > 1 => Vec::new(),
            "response.completed" => {
                self.completed = Some(data);
                Vec::new()
            }
            _ => {
                let Some(upstream) = data["output_index"].as_u64() else {
                    return vec![self.emit(event, &kind, data)];
                };
                if kind == "response.output_item.added" {
                    let item = &data["item"];
                    let ours = item["type"] == "function_call"
                        && item["name"]
                            .as_str()
                            .is_some_and(crate::stream_loop::is_gateway_tool);
                    let client = (!ours).then(|| {
                        self.next_output += 1;
                        self.next_output - 1
                    });
                    self.outputs.insert(upstream, client);
                }
                match self.outputs.get(&upstream).copied().flatten() {
                    Some(client) => {
                        if kind == "response.output_item.done" {
                            self.visible.push(data["item"].clone());
                        }
                        if client == upstream {
                            vec![self.emit(event, &kind, data)]
                        } else {
                            data["output_index"] = Value::from(client);
                            // Renumbered: never the event as it came.
                            data["sequence_number"] = Value::Null;
                            vec![self.emit(event, &kind, data)]
                        }
                    }
                    None => Vec::new(),
                }
            }
        }
    }

    fn end_iteration(&mut self) -> crate::stream_loop::IterationEnd {
        let Some(mut completed) = self.completed.take() else {
            return crate::stream_loop::IterationEnd::Finish(Vec::new());
        };
        let response = completed["response"].clone();
        let observed = observe_response_object(&response);
        let calls = observed.tool_calls;
        let usage_now = response["usage"].clone();
        let total = crate::tools::sum_usage(&[&self.usage_before, &usage_now]);
        let ours = !calls.is_empty()
            && calls
                .iter()
                .all(|call| crate::stream_loop::is_gateway_tool(&call.name));
        if ours {
            self.usage_before = total;
            return crate::stream_loop::IterationEnd::Continue {
                answer: response,
                calls,
            };
        }
        if self.iteration > 1 {
            if let Some(id) = &self.first_id {
                completed["response"]["id"] = id.clone();
            }
            completed["response"]["output"] = Value::Array(std::mem::take(&mut self.visible));
            completed["response"]["usage"] = total;
        }
        crate::stream_loop::IterationEnd::Finish(vec![
            self.numbered("response.completed", completed),
        ])
    }

    fn keep_alive(&self) -> Bytes {
        // An SSE comment: SDKs skip it, and it takes no sequence number.
        Bytes::from_static(b": keep-alive\n\n")
    }

    fn error_frames(&mut self, message: &str) -> Bytes {
        let data = serde_json::json!({
            "type": "error",
            "code": "server_error",
            "message": message,
            "param": null,
            "sequence_number": self.sequence,
        });
        encode_event(Some("error"), &data.to_string())
    }
}

fn usage(usage: &Value) -> Usage {
    let cached = int(&usage["input_tokens_details"]["cached_tokens"]);
    Usage {
        input: (int(&usage["input_tokens"]) - cached).max(0),
        output: int(&usage["output_tokens"]),
        cache_read: cached,
        cache_write: 0,
        extra: extra_counts([(
            "output_reasoning",
            &usage["output_tokens_details"]["reasoning_tokens"],
        )]),
    }
}

fn observe_response_object(response: &Value) -> Observation {
    let mut observation = Observation {
        response_id: string(&response["id"]),
        model: string(&response["model"]),
        usage: response.get("usage").filter(|u| u.is_object()).map(usage),
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

/// The finished response object in the terminal event carries everything; before it, only the
/// id is kept.
#[derive(Debug, Default)]
struct StreamWatch {
    observation: Observation,
}

impl ObserveStream for StreamWatch {
    fn observe(&mut self, event: &SseEvent) {
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
            self.observation.model = string(&response["model"]);
        } else {
            self.observation = observe_response_object(response);
        }
    }

    fn finish(self: Box<Self>) -> Observation {
        self.observation
    }
}

#[cfg(test)]
mod loop_tests {
    use super::ResponsesLoop;
    use crate::stream_loop::{IterationEnd, StreamLoop};
    use crate::test_support::events;
    use serde_json::{Value, json};

    fn sse(data: Value) -> String {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    }

    #[test]
    fn two_iterations_are_one_response_to_the_client() {
        // The API's loop alone, and as the gateway runs it (passing events until a gateway call).
        two_iterations_are_one_response_to_the_client_with(Box::new(ResponsesLoop::default()));
        two_iterations_are_one_response_to_the_client_with(
            crate::Api::OpenAiResponses.stream_loop().unwrap(),
        );
    }

    fn two_iterations_are_one_response_to_the_client_with(mut looped: Box<dyn StreamLoop>) {
        let call = json!({"type":"function_call","id":"fc_1","call_id":"call_1","name":"bmcp_t_add","arguments":"{\"a\":2}"});
        let first = [
            sse(json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","output":[]}})),
            sse(json!({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1"}})),
            sse(json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"m1","content":[]}})),
            sse(json!({"type":"response.output_text.delta","sequence_number":3,"output_index":0,"item_id":"m1","content_index":0,"delta":"Adding. "})),
            sse(json!({"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":{"type":"message","id":"m1","content":[{"type":"output_text","text":"Adding. "}]}})),
            sse(json!({"type":"response.output_item.added","sequence_number":5,"output_index":1,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"bmcp_t_add","arguments":""}})),
            sse(json!({"type":"response.function_call_arguments.delta","sequence_number":6,"output_index":1,"item_id":"fc_1","delta":"{\"a\":2}"})),
            sse(json!({"type":"response.output_item.done","sequence_number":7,"output_index":1,"item":call})),
            sse(json!({"type":"response.completed","sequence_number":8,"response":{"id":"resp_1","output":[{"type":"message","id":"m1","content":[{"type":"output_text","text":"Adding. "}]}, call],"usage":{"input_tokens":10,"output_tokens":3,"total_tokens":13}}})),
        ]
        .concat();
        let last = [
            sse(json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_2","output":[]}})),
            sse(json!({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_2"}})),
            sse(json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"m2","content":[]}})),
            sse(json!({"type":"response.output_text.delta","sequence_number":3,"output_index":0,"item_id":"m2","content_index":0,"delta":"It is 2."})),
            sse(json!({"type":"response.output_item.done","sequence_number":4,"output_index":0,"item":{"type":"message","id":"m2","content":[{"type":"output_text","text":"It is 2."}]}})),
            sse(json!({"type":"response.completed","sequence_number":5,"response":{"id":"resp_2","output":[{"type":"message","id":"m2"}],"usage":{"input_tokens":20,"output_tokens":4,"total_tokens":24}}})),
        ]
        .concat();
        let mut client: Vec<bytes::Bytes> = Vec::new();
        for event in events(&first) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Continue { answer, calls } = looped.end_iteration() else {
            panic!("the gateway's call")
        };
        assert_eq!(calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(answer["id"], "resp_1");
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
        let seen: Vec<Value> = events(&text)
            .iter()
            .map(|e| serde_json::from_str(&e.data()).unwrap())
            .collect();
        let sequence: Vec<u64> = seen
            .iter()
            .map(|d| d["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(
            sequence,
            (0..seen.len() as u64).collect::<Vec<_>>(),
            "{text}"
        );
        assert_eq!(
            seen.iter()
                .filter(|d| d["type"] == "response.created")
                .count(),
            1
        );
        let outputs: Vec<u64> = seen
            .iter()
            .filter_map(|d| d["output_index"].as_u64())
            .collect();
        assert_eq!(outputs, [0, 0, 0, 1, 1, 1], "{text}");
        let completed = seen.last().unwrap();
        assert_eq!(completed["type"], "response.completed");
        assert_eq!(completed["response"]["id"], "resp_1");
        assert_eq!(completed["response"]["output"].as_array().unwrap().len(), 2);
        assert_eq!(completed["response"]["usage"]["total_tokens"], 37);
    }
}

#[cfg(test)]
mod tests {
    use crate::observe::Thought;
    use crate::test_support::observe_stream;
    use crate::{Api, SseDecoder};
    use serde_json::json;

    const API: Api = Api::OpenAiResponses;

    #[test]
    fn prompt_is_the_input_text_or_the_last_user_item() {
        let responses = json!({"input": "plain"});
        assert_eq!(
            API.prompt(responses.to_string().as_bytes()).as_deref(),
            Some("plain")
        );
        let items = json!({"input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "item"}]}]});
        assert_eq!(
            API.prompt(items.to_string().as_bytes()).as_deref(),
            Some("item")
        );
    }

    #[test]
    fn blocking_and_stream() {
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
        let seen = API.observe_body(response.to_string().as_bytes());
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
        assert_eq!(observe_stream(API, &stream), seen);
    }

    #[test]
    fn error_frame_continues_the_sequence_number() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"event: response.output_text.delta\ndata: {\"sequence_number\":7}\n\n");
        let last = decoder.next_event().unwrap();
        let frame = API.stream_error_frames("cut", Some(&last));
        let mut decoder = SseDecoder::new();
        decoder.push(&frame);
        let event = decoder.next_event().unwrap();
        assert_eq!(event.event_type(), Some("error"));
        let data: serde_json::Value = serde_json::from_str(&event.data()).unwrap();
        assert_eq!(data["sequence_number"], 8);
        assert_eq!(data["message"], "cut");
    }
}
