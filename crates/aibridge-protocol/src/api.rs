//! The bridged APIs. Everything one API's wire format decides lives in its own module
//! (`anthropic_messages`, `openai_chat`, `openai_responses`); [`Api`] is the one type the gateway
//! holds, and [`Api::rules`] the one place that names every API. Adding an API is one module and
//! one variant.

use bytes::Bytes;
use serde_json::Value;

use crate::errors::Dialect;
use crate::observe::{Observation, StreamObserver};
use crate::request::{BodyRefused, RequestSummary};
use crate::rules::WireRules;
use crate::sse::SseEvent;
use crate::{anthropic_messages, openai_chat, openai_responses};

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

    /// The user's prompt: the text of the last user message (or input) of a request body.
    pub fn prompt(self, body: &[u8]) -> Option<String> {
        let request: Value = serde_json::from_slice(body).ok()?;
        self.rules().prompt(&request)
    }

    /// Reads a complete (non-streaming) response body.
    pub fn observe_body(self, body: &[u8]) -> Observation {
        match serde_json::from_slice::<Value>(body) {
            Ok(response) => self.rules().observe_body(&response),
            Err(_) => Observation::default(),
        }
    }

    /// A watcher for a stream of this API, fed each relayed event.
    pub fn stream_observer(self) -> StreamObserver {
        StreamObserver::new(self.rules().stream_observer())
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
