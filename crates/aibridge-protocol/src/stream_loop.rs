//! An inner loop's stream as the client sees it: one continuous stream made of the upstream
//! streams of every iteration, the gateway's own tool calls and each continued iteration's end
//! left out, indexes kept consistent, usage summed in the final event. Each API renders it its
//! own way (`Api::stream_loop`).

use bytes::Bytes;
use serde_json::Value;

use crate::observe::ToolCall;
use crate::sse::SseEvent;

/// How an iteration's upstream stream ended.
#[derive(Debug)]
pub enum IterationEnd {
    /// Every call the model made is the gateway's: the loop goes on with `answer` (the
    /// iteration's answer rebuilt as a blocking body) and its `calls`; nothing of the
    /// iteration's end reached the client.
    Continue { answer: Value, calls: Vec<ToolCall> },
    /// The last iteration: these frames end the client's stream.
    Finish(Vec<Bytes>),
}

/// One API's way of joining an inner loop's streams.
pub trait StreamLoop: Send + std::fmt::Debug {
    /// The frames for the client of one upstream event of the current iteration.
    fn relay(&mut self, event: &SseEvent) -> Vec<Bytes>;
    /// The current iteration's stream has ended with its terminal event.
    fn end_iteration(&mut self) -> IterationEnd;
    /// A frame that keeps the client's connection alive while the gateway's tools run.
    fn keep_alive(&self) -> Bytes;
    /// The frames that end the client's stream with an error after it has begun (numbered on
    /// where the API numbers its events).
    fn error_frames(&mut self, message: &str) -> Bytes;
    /// Whether `event` may begin a call of one of the gateway's tools. Until one does, the first
    /// iteration's events reach the client as they came ([`PassingLoop`]); a false `true` only
    /// costs speed, a false `false` would show the client a gateway call.
    fn may_call_gateway_tool(&self, event: &SseEvent) -> bool {
        GATEWAY_TOOL_FINDER.find(event.raw()).is_some()
    }
    /// [`StreamLoop::relay`] into `out`, for callers that gather a chunk's frames.
    fn relay_into(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        out.extend(self.relay(event));
    }
}

/// Built once: a search for the prefix runs on every event of a stream with tools injected.
static GATEWAY_TOOL_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(GATEWAY_TOOL_PREFIX));

/// Most answers call none of the gateway's tools, and until one does, the client's stream is
/// the upstream's byte for byte. This wrapper relays the first iteration's events as they came,
/// keeping them aside (a clone of their bytes), and hands them to the API's loop only when an
/// event may call a gateway tool (or an error needs the loop's numbering): a request whose
/// injected tools are not called costs a substring search per event, not a parse. The events
/// kept aside are bounded ([`PASSED_BYTES`]); past that, the API's loop reads every event, as it
/// keeps less of each.
#[derive(Debug)]
pub struct PassingLoop {
    inner: Box<dyn StreamLoop>,
    /// Whether the events so far went out as they came.
    passing: bool,
    /// Those events, for the loop to catch up on, and their size.
    passed: Vec<SseEvent>,
    passed_bytes: usize,
}

/// The most event bytes a stream keeps aside while it passes (per stream: 1,000 open streams
/// hold at most 64 MiB more than without tools).
const PASSED_BYTES: usize = 64 * 1024;

impl PassingLoop {
    pub fn new(inner: Box<dyn StreamLoop>) -> Self {
        Self {
            inner,
            passing: true,
            passed: Vec::with_capacity(16),
            passed_bytes: 0,
        }
    }

    /// The API's loop, having seen every event so far (its output for them is what already
    /// went out, since nothing diverged).
    fn caught_up(&mut self) -> &mut dyn StreamLoop {
        if self.passing {
            self.passing = false;
            for event in std::mem::take(&mut self.passed) {
                let _already_sent = self.inner.relay(&event);
            }
        }
        self.inner.as_mut()
    }
}

impl StreamLoop for PassingLoop {
    fn relay(&mut self, event: &SseEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.relay_into(event, &mut out);
        out
    }

    fn relay_into(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) {
        if self.passing
            && self.passed_bytes + event.raw().len() <= PASSED_BYTES
            && !self.inner.may_call_gateway_tool(event)
        {
            self.passed_bytes += event.raw().len();
            self.passed.push(event.clone());
            out.push(event.raw().clone());
            return;
        }
        self.caught_up().relay_into(event, out);
    }

    fn end_iteration(&mut self) -> IterationEnd {
        if self.passing {
            // A single iteration without the gateway's tools: its end already went out.
            self.passed.clear();
            return IterationEnd::Finish(Vec::new());
        }
        self.inner.end_iteration()
    }

    fn keep_alive(&self) -> Bytes {
        self.inner.keep_alive()
    }

    fn error_frames(&mut self, message: &str) -> Bytes {
        self.caught_up().error_frames(message)
    }

    fn may_call_gateway_tool(&self, event: &SseEvent) -> bool {
        self.inner.may_call_gateway_tool(event)
    }
}

/// Whether `name` is one of the gateway's own tools.
pub fn is_gateway_tool(name: &str) -> bool {
    name.starts_with(GATEWAY_TOOL_PREFIX)
}

/// Prefix of every tool the gateway injects (`bmcp_<server>_<tool>`).
pub const GATEWAY_TOOL_PREFIX: &str = "bmcp_";

#[cfg(test)]
mod tests {
    use super::IterationEnd;
    use crate::Api;
    use crate::test_support::events;
    use serde_json::{Value, json};

    fn sse(data: Value) -> String {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    }

    /// Everything the client gets of `stream` as the first and only iteration.
    fn relayed(api: Api, stream: &str) -> String {
        let mut looped = api.stream_loop().unwrap();
        let mut client = Vec::new();
        for event in events(stream) {
            client.extend(looped.relay(&event));
        }
        let IterationEnd::Finish(end) = looped.end_iteration() else {
            panic!("none of the gateway's tools was called")
        };
        client.extend(end);
        String::from_utf8(client.concat()).unwrap()
    }

    #[test]
    fn a_client_tool_call_passes_byte_for_byte() {
        let stream = [
            sse(json!({"type":"message_start","message":{"id":"msg_1","content":[],"usage":{"input_tokens":5}}})),
            sse(json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}})),
            sse(json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}})),
            sse(json!({"type":"content_block_stop","index":0})),
            sse(json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}})),
            sse(json!({"type":"message_stop"})),
        ]
        .concat();
        assert_eq!(relayed(Api::AnthropicMessages, &stream), stream);
    }

    #[test]
    fn text_that_names_a_gateway_tool_hands_over_without_changing_the_stream() {
        // "bmcp_" in a text delta sends the rest through the API's loop, which has to agree
        // with what already went out as it came.
        let stream = [
            sse(json!({"type":"message_start","message":{"id":"msg_1","content":[],"usage":{"input_tokens":5}}})),
            sse(json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
            sse(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I could call "}})),
            sse(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"bmcp_t_add."}})),
            sse(json!({"type":"content_block_stop","index":0})),
            sse(json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}})),
            sse(json!({"type":"message_stop"})),
        ]
        .concat();
        let client = relayed(Api::AnthropicMessages, &stream);
        let kinds: Vec<String> = events(&client)
            .iter()
            .map(|e| e.event_type().unwrap_or("").to_string())
            .collect();
        assert_eq!(kinds.len(), 7, "{client}");
        assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
        assert!(client.contains("I could call "), "{client}");
    }

    #[test]
    fn a_stream_longer_than_the_bound_is_handed_over_unchanged() {
        let delta = |n: usize| {
            sse(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":format!("word {n} ")}}),
            )
        };
        let mut stream = vec![
            sse(
                json!({"type":"message_start","message":{"id":"msg_1","content":[],"usage":{"input_tokens":5}}}),
            ),
            sse(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
        ];
        let mut n = 0;
        while stream.iter().map(String::len).sum::<usize>() < 2 * super::PASSED_BYTES {
            stream.push(delta(n));
            n += 1;
        }
        stream.extend([
            sse(json!({"type":"content_block_stop","index":0})),
            sse(json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":n}})),
            sse(json!({"type":"message_stop"})),
        ]);
        let stream = stream.concat();
        assert_eq!(relayed(Api::AnthropicMessages, &stream), stream);
    }

    #[test]
    fn an_error_after_passed_events_is_numbered_on() {
        let stream = [
            sse(json!({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","output":[]}})),
            sse(json!({"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1"}})),
            sse(json!({"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"m1","content":[]}})),
            sse(json!({"type":"response.output_text.delta","sequence_number":3,"output_index":0,"item_id":"m1","content_index":0,"delta":"Hi"})),
        ]
        .concat();
        let mut looped = Api::OpenAiResponses.stream_loop().unwrap();
        let mut client = Vec::new();
        for event in events(&stream) {
            client.extend(looped.relay(&event));
        }
        assert_eq!(String::from_utf8(client.concat()).unwrap(), stream);
        let error = looped.error_frames("upstream went away");
        let error = events(std::str::from_utf8(&error).unwrap());
        let data: Value = serde_json::from_str(&error[0].data()).unwrap();
        assert_eq!(data["type"], "error");
        assert_eq!(data["sequence_number"], 4, "{data}");
    }

    #[test]
    fn a_chat_call_of_a_gateway_tool_goes_to_the_loop() {
        let chunk = |delta: Value| {
            format!(
                "data: {}\n\n",
                json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":delta,"finish_reason":null}]})
            )
        };
        let stream = [
            chunk(json!({"role":"assistant","content":""})),
            chunk(json!({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"bmcp_t_add","arguments":""}}]})),
            chunk(json!({"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]})),
            format!("data: {}\n\n", json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let mut looped = Api::OpenAiChat.stream_loop().unwrap();
        let mut client = Vec::new();
        for event in events(&stream) {
            client.extend(looped.relay(&event));
        }
        let client = String::from_utf8(client.concat()).unwrap();
        assert!(!client.contains("bmcp"), "{client}");
        let IterationEnd::Continue { calls, .. } = looped.end_iteration() else {
            panic!("the gateway's tool was called")
        };
        assert_eq!(calls[0].name, "bmcp_t_add");
    }
}
