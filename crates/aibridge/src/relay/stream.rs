//! Relays an upstream SSE stream to the client event by event.
//!
//! The commit point is the first complete upstream event: until it arrives nothing has been sent
//! to the client, so a failure is still answered with a proper HTTP error. From then on each
//! event is forwarded (its exact bytes) as soon as its terminating blank line is in, and a
//! failure — a broken connection, silence longer than the idle bound, a stream that ends before
//! its terminal event, the gateway shutting down — reaches the client as the dialect's SSE error
//! frame rather than as a silently truncated 200. Once the API's terminal event is in, the relay
//! ends: whatever the upstream sends after it cannot turn a complete stream into a failure.

use std::collections::VecDeque;
use std::time::Duration;

use aibridge_protocol::{Api, SseDecoder, SseEvent};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyDataStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{answer, answer_headers};
use crate::error::{GatewayError, TransportError};
use crate::intake::Payer;
use crate::record::{Outcome, StreamRecording};
use crate::upstream::client::{UpstreamBody, UpstreamResponse};

/// The largest single event relayed (a Responses `response.completed` carries the whole
/// response); a stream whose event grows past it without ending is cut rather than buffered.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

const OVERSIZED: &str = "an upstream event grew past 64 MiB without ending";

/// How long a stream may keep the client waiting, and what ends it early.
#[derive(Debug, Clone)]
pub struct StreamBounds {
    /// The first event must be in by then (it bounds the response head too, upstream).
    pub first_event_by: Instant,
    /// Longest silence between two events.
    pub idle: Duration,
    /// Cancelled when the gateway's shutdown deadline passes: open streams are cut.
    pub cut: CancellationToken,
}

/// Why the relay read nothing more.
enum Read {
    Chunk(Bytes),
    Failed(TransportError),
    Ended,
    Silent,
    Cut,
}

type UpstreamBytes = BodyDataStream<UpstreamBody>;

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
    bounds: StreamBounds,
}

impl Relay {
    /// The next piece of the upstream body, waiting no longer than `until`.
    async fn read(&mut self, until: Instant) -> Read {
        tokio::select! {
            () = self.bounds.cut.cancelled() => Read::Cut,
            read = tokio::time::timeout_at(until, self.upstream.next()) => match read {
                Ok(Some(Ok(chunk))) => Read::Chunk(chunk),
                Ok(Some(Err(e))) => Read::Failed(e),
                Ok(None) => Read::Ended,
                Err(_) => Read::Silent,
            },
        }
    }

    fn take_events(&mut self) {
        // Nothing after the terminal event is relayed or observed.
        while !self.saw_terminal
            && let Some(event) = self.decoder.next_event()
        {
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

    /// The stream is complete: the record says how, and the relay is over.
    fn complete(&mut self) {
        self.finished = true;
        let outcome = if self.saw_upstream_error {
            Outcome::UpstreamError
        } else {
            Outcome::Completed
        };
        self.recording.finish(outcome, None, None);
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
            if self.saw_terminal {
                self.complete();
                return None;
            }
            let idle = self.bounds.idle;
            match self.read(Instant::now() + idle).await {
                Read::Chunk(chunk) => {
                    self.decoder.push(&chunk);
                    self.take_events();
                    if self.decoder.is_over(MAX_EVENT_BYTES) {
                        // The complete events before it still go first.
                        let frames = self.cut_short(OVERSIZED);
                        self.ready.push_back(frames);
                    }
                }
                Read::Failed(e) => {
                    let message = format!("upstream stream failed: {e}");
                    return Some(self.cut_short(&message));
                }
                Read::Ended => {
                    return Some(
                        self.cut_short("upstream stream ended before the response was complete"),
                    );
                }
                Read::Silent => {
                    let message =
                        format!("upstream stream sent nothing for {}s", idle.as_secs_f64());
                    return Some(self.cut_short(&message));
                }
                Read::Cut => {
                    return Some(self.cut_short("the gateway is shutting down"));
                }
            }
        }
    }
}

/// Waits for the first upstream event, then answers 200 with a body that relays the rest.
pub async fn relay(
    response: UpstreamResponse,
    api: Api,
    payer: Payer,
    recording: StreamRecording,
    bounds: StreamBounds,
) -> Result<Response, GatewayError> {
    let mut headers = answer_headers(response.headers(), payer);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of the gateway not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));

    let waiting = Instant::now();
    let mut relay = Relay {
        upstream: response.bytes_stream(),
        decoder: SseDecoder::new(),
        ready: VecDeque::new(),
        api,
        last_event: None,
        saw_upstream_error: false,
        recording,
        saw_terminal: false,
        finished: false,
        bounds,
    };
    while relay.ready.is_empty() {
        let error = match relay.read(relay.bounds.first_event_by).await {
            Read::Chunk(chunk) => {
                relay.decoder.push(&chunk);
                relay.take_events();
                if !relay.ready.is_empty() || !relay.decoder.is_over(MAX_EVENT_BYTES) {
                    continue;
                }
                GatewayError::UpstreamStreamFailed(OVERSIZED.into())
            }
            Read::Failed(e) => GatewayError::UpstreamStreamFailed(e.to_string()),
            Read::Ended => {
                GatewayError::UpstreamStreamFailed("the stream ended without any event".into())
            }
            Read::Silent => GatewayError::UpstreamTimeout,
            Read::Cut => GatewayError::ShuttingDown,
        };
        return Err(relay.fail_before_first_event(error));
    }
    relay.recording.committed(waiting.elapsed());

    let body = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(frame), relay))
    });
    Ok(answer(StatusCode::OK, headers, Body::from_stream(body)))
}
