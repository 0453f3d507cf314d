//! Relays an upstream SSE stream to the client event by event.
//!
//! The commit point is the first complete upstream event: until it arrives nothing has been sent
//! to the client, so a failure is still answered with a proper HTTP error. From then on each
//! event is forwarded (its exact bytes) as soon as its terminating blank line is in, and a
//! failure — a broken connection, a read timeout, a stream that ends before its terminal event —
//! reaches the client as the dialect's SSE error frame rather than as a silently truncated 200.

use std::collections::VecDeque;

use aibridge_protocol::{ApiShape, Dialect, ErrorKind, SseDecoder, SseEvent, StreamObserver};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::{GatewayError, describe_transport_error};
use crate::recorder::{Ending, Recording};

/// The streaming API being relayed: how its stream says it is complete, and how a failure is
/// told to its clients once the stream has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Ends with `event: message_stop` (or an upstream `event: error`).
    AnthropicMessages,
    /// Ends with `data: [DONE]`.
    OpenAiChat,
    /// Ends with `response.completed`, `response.failed`, `response.incomplete` or `error`.
    OpenAiResponses,
}

impl StreamKind {
    /// Whether the upstream itself reported an error in this event.
    fn is_error_report(self, event: &SseEvent) -> bool {
        match self {
            Self::AnthropicMessages => event.event_type() == Some("error"),
            Self::OpenAiChat => {
                event.raw().windows(8).any(|w| w == b"{\"error\"")
                    && serde_json::from_str::<serde_json::Value>(&event.data())
                        .is_ok_and(|data| data.get("error").is_some())
            }
            Self::OpenAiResponses => {
                matches!(event.event_type(), Some("error" | "response.failed"))
            }
        }
    }

    fn is_terminal(self, event: &SseEvent) -> bool {
        match self {
            Self::AnthropicMessages => matches!(event.event_type(), Some("message_stop" | "error")),
            Self::OpenAiChat => {
                event.raw().trim_ascii_end().ends_with(b"[DONE]") && event.data().trim() == "[DONE]"
            }
            Self::OpenAiResponses => matches!(
                event.event_type(),
                Some("response.completed" | "response.failed" | "response.incomplete" | "error")
            ),
        }
    }

    /// When the last relayed event already was the upstream's own error report, the client knows
    /// what went wrong: only the closing frame is still owed (chat's `[DONE]`), not a second error.
    fn close_after_upstream_error(self, last: Option<&SseEvent>) -> Option<Bytes> {
        let closes_with_done = self == Self::OpenAiChat;
        (closes_with_done && last.is_some_and(|event| self.is_error_report(event)))
            .then(|| Bytes::from_static(b"data: [DONE]\n\n"))
    }

    /// The frames that end a stream the gateway has to cut short. `last` is the last event
    /// relayed, from which the Responses API's sequence number continues.
    fn error_frames(self, message: &str, last: Option<&SseEvent>) -> Bytes {
        match self {
            Self::AnthropicMessages => {
                Dialect::Anthropic.stream_error_frames(ErrorKind::Api, message)
            }
            Self::OpenAiChat => Dialect::OpenAi.stream_error_frames(ErrorKind::Api, message),
            Self::OpenAiResponses => {
                let sequence_number = last
                    .and_then(|event| serde_json::from_str::<serde_json::Value>(&event.data()).ok())
                    .and_then(|data| data["sequence_number"].as_u64())
                    .map(|n| n + 1);
                let data = serde_json::json!({
                    "type": "error",
                    "code": "server_error",
                    "message": message,
                    "param": null,
                    "sequence_number": sequence_number,
                });
                aibridge_protocol::encode_event(Some("error"), &data.to_string())
            }
        }
    }
}

/// The record of a stream being relayed. It sees every event on its way to the client and ends
/// the record exactly once: when the stream completes or fails, or — when the client goes away
/// and the relay is dropped — with what was seen up to then.
#[derive(Debug)]
pub struct StreamRecording {
    recording: Recording,
    observer: Option<StreamObserver>,
    ending: Ending,
}

impl StreamRecording {
    /// `ending` is how the record ends if the stream completes; failures adjust it.
    pub fn new(recording: Recording, shape: ApiShape, ending: Ending) -> Self {
        let observer = recording.is_active().then(|| StreamObserver::new(shape));
        Self {
            recording,
            observer,
            ending,
        }
    }

    fn observe(&mut self, event: &SseEvent) {
        if let Some(observer) = &mut self.observer {
            observer.observe(event);
        }
    }

    fn finish(&mut self, outcome: &'static str, status: Option<u16>, error: Option<String>) {
        if self.recording.is_ended() {
            return;
        }
        if let Some(observer) = self.observer.take() {
            self.recording.observation(observer.finish());
        }
        let mut ending = self.ending.clone();
        ending.outcome = outcome;
        ending.status = status.or(ending.status);
        ending.error = error;
        self.recording.end(ending);
    }
}

impl Drop for StreamRecording {
    fn drop(&mut self) {
        self.finish(
            "client_disconnected",
            None,
            Some("the client closed the stream".into()),
        );
    }
}

type UpstreamBytes = BoxStream<'static, reqwest::Result<Bytes>>;

struct Relay {
    upstream: UpstreamBytes,
    decoder: SseDecoder,
    ready: VecDeque<Bytes>,
    kind: StreamKind,
    last_event: Option<SseEvent>,
    saw_terminal: bool,
    saw_upstream_error: bool,
    recording: StreamRecording,
    finished: bool,
}

impl Relay {
    fn take_events(&mut self) {
        while let Some(event) = self.decoder.next_event() {
            if self.kind.is_terminal(&event) {
                self.saw_terminal = true;
            }
            if self.kind.is_error_report(&event) {
                self.saw_upstream_error = true;
            }
            self.recording.observe(&event);
            self.ready.push_back(event.raw().clone());
            self.last_event = Some(event);
        }
    }

    /// Nothing reached the client yet: the error becomes a plain HTTP error response.
    fn fail_before_first_event(mut self, error: GatewayError) -> GatewayError {
        self.recording.finish(
            "stream_failed",
            Some(error.status().as_u16()),
            Some(error.to_string()),
        );
        error
    }

    /// Ends a stream that broke off or ended early with the API's own way of saying so.
    fn cut_short(&mut self, message: &str) -> Bytes {
        self.finished = true;
        tracing::warn!(
            error = message,
            "upstream stream did not complete after the first event"
        );
        let outcome = if self.saw_upstream_error {
            "upstream_error"
        } else {
            "stream_failed"
        };
        self.recording
            .finish(outcome, None, Some(message.to_string()));
        let last = self.last_event.as_ref();
        self.kind
            .close_after_upstream_error(last)
            .unwrap_or_else(|| self.kind.error_frames(message, last))
    }

    /// The next frame for the client, or `None` when the relay is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            if self.finished {
                return None;
            }
            match self.upstream.next().await {
                Some(Ok(chunk)) => {
                    self.decoder.push(&chunk);
                    self.take_events();
                }
                Some(Err(e)) => {
                    let message =
                        format!("upstream stream failed: {}", describe_transport_error(&e));
                    return Some(self.cut_short(&message));
                }
                None if self.saw_terminal && !self.decoder.has_partial_event() => {
                    self.finished = true;
                    let outcome = if self.saw_upstream_error {
                        "upstream_error"
                    } else {
                        "completed"
                    };
                    self.recording.finish(outcome, None, None);
                    return None;
                }
                None => {
                    return Some(
                        self.cut_short("upstream stream ended before the response was complete"),
                    );
                }
            }
        }
    }
}

/// Waits for the first upstream event, then answers 200 with a body that relays the rest.
pub async fn relay(
    response: reqwest::Response,
    kind: StreamKind,
    recording: StreamRecording,
) -> Result<Response, GatewayError> {
    let mut headers = HeaderMap::new();
    for name in ["content-type", "request-id", "x-request-id"] {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of the gateway not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));

    let mut relay = Relay {
        upstream: response.bytes_stream().boxed(),
        decoder: SseDecoder::new(),
        ready: VecDeque::new(),
        kind,
        last_event: None,
        saw_upstream_error: false,
        recording,
        saw_terminal: false,
        finished: false,
    };
    while relay.ready.is_empty() {
        match relay.upstream.next().await {
            Some(Ok(chunk)) => {
                relay.decoder.push(&chunk);
                relay.take_events();
            }
            Some(Err(e)) => {
                let error = GatewayError::UpstreamStreamFailed(describe_transport_error(&e));
                return Err(relay.fail_before_first_event(error));
            }
            None => {
                let error =
                    GatewayError::UpstreamStreamFailed("the stream ended without any event".into());
                return Err(relay.fail_before_first_event(error));
            }
        }
    }

    let body = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(frame), relay))
    });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = StatusCode::OK;
    *out.headers_mut() = headers;
    Ok(out)
}
