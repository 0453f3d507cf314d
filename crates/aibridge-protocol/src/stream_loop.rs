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
    fn error_frames(&self, message: &str) -> Bytes;
}

/// Whether `name` is one of the gateway's own tools.
pub fn is_gateway_tool(name: &str) -> bool {
    name.starts_with(GATEWAY_TOOL_PREFIX)
}

/// Prefix of every tool the gateway injects (`bmcp_<server>_<tool>`).
pub const GATEWAY_TOOL_PREFIX: &str = "bmcp_";
