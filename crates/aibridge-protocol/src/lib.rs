//! Wire-level pieces of the provider APIs that aibridge relays: the little it must read from a
//! request body, error bodies in each provider's dialect, and SSE framing.
//!
//! Pure and IO-free. Request and response bodies are kept as raw bytes everywhere else so that
//! fields aibridge does not model survive untouched; this crate only peeks into them.

mod errors;
mod observe;
mod request;
mod sse;

pub use errors::{Dialect, ErrorKind};
pub use observe::{
    ApiShape, Observation, StreamObserver, Thought, ToolCall, Usage, observe_body, prompt_of,
};
pub use request::{BadRequest, RequestSummary, ensure_stream_usage, summarize_request};
pub use sse::{SseDecoder, SseEvent, encode_event};
