//! Relays an upstream SSE stream to the client event by event.
//!
//! The commit point is the first complete upstream event: until it arrives nothing has been sent
//! to the client, so a failure is still answered with a proper HTTP error. From then on each
//! event is forwarded (its exact bytes) as soon as its terminating blank line is in, and a
//! failure — a broken connection, a read timeout, a stream that ends before its terminal event —
//! reaches the client as the dialect's SSE error frame rather than as a silently truncated 200.

use std::collections::VecDeque;

use aibridge_protocol::{Api, SseDecoder, SseEvent};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::{GatewayError, describe_transport_error};
use crate::record::{Outcome, StreamRecording};

type UpstreamBytes = BoxStream<'static, reqwest::Result<Bytes>>;

struct Relay {
    upstream: UpstreamBytes,
    decoder: SseDecoder,
    ready: VecDeque<Bytes>,
    api: Api,
    last_event: Option<SseEvent>,
    saw_terminal: bool,
    saw_upstream_error: bool,
    recording: StreamRecording,
    finished: bool,
}

impl Relay {
    fn take_events(&mut self) {
        while let Some(event) = self.decoder.next_event() {
            if self.api.is_terminal(&event) {
                self.saw_terminal = true;
            }
            if self.api.is_error_report(&event) {
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
            Outcome::StreamFailed,
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
            Outcome::UpstreamError
        } else {
            Outcome::StreamFailed
        };
        self.recording
            .finish(outcome, None, Some(message.to_string()));
        let last = self.last_event.as_ref();
        // The client already knows what went wrong when the last thing it got was the upstream's
        // own error report: only the closing frame is still owed, not a second error.
        let reported = last.is_some_and(|event| self.api.is_error_report(event));
        reported
            .then(|| self.api.close_after_error_report())
            .flatten()
            .unwrap_or_else(|| self.api.stream_error_frames(message, last))
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
                        Outcome::UpstreamError
                    } else {
                        Outcome::Completed
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
    api: Api,
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
        api,
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
