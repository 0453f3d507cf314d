//! Wire-level pieces of the provider APIs that aibridge relays: the little it must read from a
//! request body, error bodies in each provider's dialect, SSE framing, and what is recorded from
//! bodies and streams.
//!
//! Each bridged API's wire rules live in one module (`anthropic_messages`, `openai_chat`,
//! `openai_responses`), reached through [`Api`]. Pure and IO-free. Request and response bodies
//! are kept as raw bytes everywhere else so that fields aibridge does not model survive
//! untouched; this crate only peeks into them.

mod anthropic_messages;
mod api;
pub mod bedrock;
mod errors;
mod observe;
mod openai_chat;
mod openai_responses;
mod request;
mod rules;
mod splice;
mod sse;
mod stream_loop;
mod tools;

pub use api::{Api, RenderedTools};
pub use errors::{Dialect, ErrorKind};
pub use observe::{Observation, StreamObserver, Thought, ToolCall, Usage};
pub use openai_chat::ensure_stream_usage;
pub use request::{BadRequest, BodyRefused, RequestSummary, summarize_request};
pub use sse::{SseDecoder, SseEvent, encode_event};
pub use stream_loop::{GATEWAY_TOOL_PREFIX, IterationEnd, StreamLoop, is_gateway_tool};
pub use tools::{ToolOutcome, ToolSpec, sum_usage};

#[cfg(test)]
mod test_support {
    use crate::{Api, Observation, SseDecoder, SseEvent};

    /// Every complete event of `text`.
    pub fn events(text: &str) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        decoder.push(text.as_bytes());
        std::iter::from_fn(|| decoder.next_event()).collect()
    }

    /// Feeds every event of `text` to a fresh observer of `api`.
    pub fn observe_stream(api: Api, text: &str) -> Observation {
        let mut observer = api.stream_observer();
        for event in events(text) {
            observer.observe(&event);
        }
        observer.finish()
    }
}
