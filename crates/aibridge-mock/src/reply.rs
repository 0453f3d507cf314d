//! The scripted behaviour of one request ([`Reply`]) and what the mock recorded ([`SeenRequest`]).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// What the mock does for one request of a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Reply {
    /// HTTP status. 0 or 200 = success (a realistic body for the route). Any other status = an error
    /// response whose body is the provider's error JSON for that status (Anthropic shape on Anthropic
    /// routes: `{"type":"error","error":{"type":<type for status>,"message":...}}`; OpenAI shape on
    /// OpenAI routes; Bedrock's `{"message":...}` with `x-amzn-ErrorType` on Bedrock routes) unless
    /// `body` is set. 0 with an [`exception`](Reply::exception) and no `fail_after_events` is an
    /// error with the exception's status.
    pub status: u16,
    /// Extra response headers, e.g. `[("retry-after","5")]`.
    pub headers: Vec<(String, String)>,
    /// Raw body to send instead of the generated one (error statuses only or success override).
    pub body: Option<String>,
    /// Wait this long before sending the response headers (ms).
    pub delay_ms: u64,
    /// Blocking answers: the body's first half goes with the headers, the rest this long after
    /// (ms). Left out of the JSON when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub body_delay_ms: u64,
    /// Streaming successes: number of text delta events (default 0 means 5).
    pub stream_deltas: usize,
    /// Streaming successes: the pause between consecutive SSE events (ms).
    pub event_delay_ms: u64,
    /// Streaming successes: after this many SSE events have been sent, fail.
    pub fail_after_events: Option<usize>,
    /// How to fail: `ErrorEvent` = send the provider's mid-stream error event and end the stream
    /// cleanly; `Cut` = abort the connection abruptly (no terminating chunk).
    pub failure: MidStreamFailure,
    /// A success answers with a call of this tool (in the route's wire format, blocking or
    /// streamed) instead of the usual text. Ignored on errors and when `body` is set. Left out of
    /// the JSON when unset, so text replies serialize as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCallReply>,
    /// Bedrock routes: the exception an error answers with (`x-amzn-ErrorType`, e.g.
    /// `ThrottlingException`, `ServiceQuotaExceededException`, `ExpiredTokenException`; the
    /// status's default exception when unset), and the `:exception-type` of a streaming success's
    /// mid-stream `ErrorEvent` failure (sent in lowerCamel case; `internalServerException` when
    /// unset). Either case of the first letter is accepted. Other routes ignore the name but
    /// honour the status it implies. Left out of the JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// The tool call a success answers with (see [`Reply::tool_call`]). Scripted as
/// `"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}, "text": "Let me check."}`
/// (`arguments` defaults to `{}`, `text` to none).
///
/// Streamed, the arguments' JSON comes in `stream_deltas` pieces (at least 2) and the text in
/// `stream_deltas` pieces (fewer when it is shorter); usage follows the usual rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCallReply {
    /// The tool's name.
    pub name: String,
    /// The call's arguments: a JSON object (scripts with anything else are rejected).
    #[serde(default = "empty_object", deserialize_with = "object")]
    pub arguments: Value,
    /// A text part before the call (none when absent or empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Tool arguments are an object on every API (Anthropic's `input`, OpenAI's parsed `arguments`).
fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    let map = serde_json::Map::<String, Value>::deserialize(deserializer)?;
    Ok(Value::Object(map))
}

/// How a streaming success fails after [`Reply::fail_after_events`] events.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MidStreamFailure {
    /// The provider's mid-stream error event, then a clean end of the stream.
    #[default]
    ErrorEvent,
    /// The connection is aborted: the body ends without its terminating chunk.
    Cut,
}

/// Number of text deltas (and the base of the usage numbers) when `stream_deltas` is 0.
pub const DEFAULT_DELTAS: usize = 5;

impl Reply {
    /// A success with a realistic body for the route.
    pub fn ok() -> Self {
        Self::default()
    }

    /// An error response with this status (the provider's error JSON for it).
    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            ..Self::default()
        }
    }

    /// A success that calls the tool `name` with `arguments` (a JSON object) instead of answering
    /// with text.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            tool_call: Some(ToolCallReply {
                name: name.into(),
                arguments,
                text: None,
            }),
            ..Self::default()
        }
    }

    /// A Bedrock error: the exception `name` with its status (`ThrottlingException` and
    /// `ModelNotReadyException` 429; `ServiceQuotaExceededException` and `ValidationException`
    /// 400; `AccessDeniedException`, `ExpiredTokenException`, `UnrecognizedClientException` 403;
    /// `ResourceNotFoundException` 404; `ModelTimeoutException` 408; `ModelErrorException` 424;
    /// `InternalServerException` 500; `ServiceUnavailableException` 503; other names 400).
    pub fn exception(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            status: crate::exceptions::exception_status(&name),
            exception: Some(name),
            ..Self::default()
        }
    }

    /// Names the Bedrock exception of this reply without touching its status: the exception of
    /// an error (`Reply::status(400).with_exception("ModelErrorException")`), or the
    /// `:exception-type` of a streaming success's mid-stream failure
    /// (`Reply::ok().fail_after_events(3, MidStreamFailure::ErrorEvent).with_exception("throttlingException")`).
    pub fn with_exception(mut self, name: impl Into<String>) -> Self {
        self.exception = Some(name.into());
        self
    }

    /// The text part before the tool call of a [`Reply::tool_call`] (no effect without one).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        if let Some(call) = &mut self.tool_call {
            call.text = Some(text.into());
        }
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends this raw body instead of the generated one.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Waits this long before sending the response headers.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// Sends a blocking answer's body in two halves, the second this long after the first.
    pub fn body_delay_ms(mut self, ms: u64) -> Self {
        self.body_delay_ms = ms;
        self
    }

    /// Number of text delta events of a streaming success (0 = 5).
    pub fn stream_deltas(mut self, n: usize) -> Self {
        self.stream_deltas = n;
        self
    }

    /// Pause between consecutive SSE events.
    pub fn event_delay_ms(mut self, ms: u64) -> Self {
        self.event_delay_ms = ms;
        self
    }

    /// After `n` SSE events, fail the stream `how`.
    pub fn fail_after_events(mut self, n: usize, how: MidStreamFailure) -> Self {
        self.fail_after_events = Some(n);
        self.failure = how;
        self
    }

    /// The status this reply answers with: `status`; when 0, the status of its `exception` if it
    /// has one and no `fail_after_events` (an error), else 200.
    pub fn effective_status(&self) -> u16 {
        match (&self.exception, self.status) {
            (Some(name), 0) if self.fail_after_events.is_none() => {
                crate::exceptions::exception_status(name)
            }
            (_, 0) => 200,
            (_, status) => status,
        }
    }

    /// True when this reply is a success (its [`effective_status`](Reply::effective_status) is
    /// 200).
    pub fn is_success(&self) -> bool {
        self.effective_status() == 200
    }

    /// The effective number of text deltas (`stream_deltas`, or 5 when 0).
    pub fn deltas(&self) -> usize {
        if self.stream_deltas == 0 {
            DEFAULT_DELTAS
        } else {
            self.stream_deltas
        }
    }
}

/// One request the mock received (control API requests excluded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenRequest {
    /// From `x-api-key`, else `Authorization: Bearer <key>`, else "". Bedrock routes: the SigV4
    /// credential's access key id, else the bearer API key (also when authentication failed).
    pub key: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// Lossy UTF-8.
    pub body: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
