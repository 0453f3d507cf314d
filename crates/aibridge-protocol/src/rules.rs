//! The questions every bridged API's module answers, one implementation per API.

use bytes::Bytes;
use serde_json::Value;

use crate::errors::Dialect;
use crate::observe::{Observation, ObserveStream, Usage};
use crate::request::{BadRequest, BodyRefused, RequestSummary};
use crate::sse::SseEvent;
use crate::stream_loop::StreamLoop;
use crate::tools::{ToolOutcome, ToolSpec};

/// What one API's module answers. Implemented once per API by a unit struct.
pub(crate) trait WireRules: Sync {
    fn name(&self) -> &'static str;
    fn path(&self) -> &'static str;
    fn dialect(&self) -> Dialect;
    /// The body to send upstream: the client's bytes, adjusted only where the API requires.
    fn prepare_body(&self, summary: &RequestSummary, body: Bytes) -> Result<Bytes, BodyRefused>;
    /// A tool in this API's request shape.
    fn render_tool(&self, tool: &ToolSpec) -> Value;
    /// The body with `tools` (rendered, comma-joined) added after the client's own (kept byte
    /// for byte) and parallel tool calls turned off, so each answer calls at most one tool.
    fn inject_rendered(&self, body: &[u8], tools: &[u8]) -> Result<Vec<u8>, BadRequest>;
    /// The next iteration's request: `request` with the model's answer (`response`, a blocking
    /// body) and the outcome of each tool it called appended to the conversation.
    fn continue_with(
        &self,
        request: &[u8],
        response: &Value,
        outcomes: &[ToolOutcome],
    ) -> Result<Vec<u8>, BadRequest>;
    /// One blocking answer out of an inner loop's: the last one, with the text the earlier
    /// ones produced before its own content, and `usage` summed over all of them.
    fn combine_answers(&self, earlier: &[Value], last: Value) -> Value;
    /// How this API's streams join into one for an inner loop, where it has been built.
    fn stream_loop(&self) -> Option<Box<dyn StreamLoop>> {
        None
    }
    /// The user's prompt in a request body.
    fn prompt(&self, body: &[u8]) -> Option<String>;
    /// What a blocking response body says.
    fn observe_body(&self, body: &[u8]) -> Observation;
    /// The token counts of a response's `usage` object.
    fn usage(&self, usage: &Value) -> Usage;
    /// The token counts of the `usage` object that starts `object` (whatever follows it is
    /// ignored). APIs with typed counts override this; `None` when the object is not one
    /// their types read, and the caller reads it as a `Value` instead.
    fn usage_of_object(&self, object: &[u8]) -> Option<Usage> {
        let _ = object;
        None
    }
    fn stream_observer(&self) -> Box<dyn ObserveStream>;
    /// Whether this event ends the stream (nothing after it matters).
    fn is_terminal(&self, event: &SseEvent) -> bool;
    /// Whether the upstream reported an error in this event.
    fn is_error_report(&self, event: &SseEvent) -> bool;
    /// The frames that end a stream the gateway has to cut short; `last` is the last event
    /// relayed.
    fn error_frames(&self, message: &str, last: Option<&SseEvent>) -> Bytes;
    /// After the upstream's own error report was relayed, what is still owed to close the
    /// stream (chat's `[DONE]`), if anything.
    fn close_after_error_report(&self) -> Option<Bytes> {
        None
    }
}
