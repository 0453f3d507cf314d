//! The inner agentic loop of a bridged request with MCP tools injected.
//!
//! Blocking (`blocking`): while the model calls only the gateway's tools, they are called and
//! the conversation continues; the client gets one answer (the earlier iterations' text first,
//! usage summed).
//!
//! Streaming (`stream`), live: the upstream streams of every iteration
//! relayed as one stream while they arrive (the API's `StreamLoop` leaves out the gateway's own
//! tool calls and the continued iterations' ends, and numbers on), the gateway's tools called
//! between iterations with keep-alive frames while they run, each continuation through a fresh
//! walk of the key pool. Before the first event a failure is a plain HTTP error; after it, the
//! dialect's SSE error event.
//!
//! The response body drives the loop (`LoopStream`, on the connection's own task): the upstream
//! is read only as fast as the client reads, and a client that leaves drops the loop (its record
//! says so).

use std::sync::Arc;
use std::time::Duration;

use aibridge_protocol::{Api, IterationEnd, Observation, SseDecoder, ToolOutcome};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, header};
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::intake::Payer;
use crate::mcp::tools::{McpTools, TOOL_PREFIX};
use crate::provider::Provider;
use crate::record::{Outcome, Recording};
use crate::relay::blocking::{relay_blocking, relay_error};
use crate::state::AppState;
use crate::upstream::apidump::DumpSubject;
use crate::upstream::{CallDeadline, CallDump, UpstreamCall};

/// The gateway's tool prefix as it starts a JSON string: an answer without it calls none of
/// the gateway's tools.
const QUOTED_TOOL_PREFIX: &[u8] = b"\"bmcp_";

/// How often a keep-alive frame goes out while the gateway's tools run.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What the loop hands the handler and then the body.
enum Frame {
    Bytes(Bytes),
    /// Before the first event: the answer is a whole response (the upstream's error relayed).
    Answer(Response),
    /// Before the first event: the gateway's own error.
    Failed(GatewayError),
}

/// The parts of a bridged call the loop owns.
pub struct LoopCall {
    pub url: Box<reqwest::Url>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub payer: Payer,
    pub model: String,
    pub request_id: String,
}

pub async fn stream(
    state: Arc<AppState>,
    provider: Arc<Provider>,
    api: Api,
    call: LoopCall,
    recording: Recording,
    tools: Arc<McpTools>,
) -> Result<Response, GatewayError> {
    let frames = Frames::default();
    let mut looped = LoopStream {
        run: Box::pin(run(
            state,
            provider,
            api,
            call,
            recording,
            tools,
            frames.clone(),
        )),
        frames,
        done: false,
    };
    match looped.next().await {
        Some(Frame::Bytes(first)) => {
            let rest = looped.filter_map(|frame| async move {
                match frame {
                    Frame::Bytes(bytes) => Some(Ok::<_, std::convert::Infallible>(bytes)),
                    _ => None,
                }
            });
            let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
            let mut response = Response::new(Body::from_stream(body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        }
        Some(Frame::Answer(response)) => Ok(response),
        Some(Frame::Failed(error)) => Err(error),
        None => Err(GatewayError::ShuttingDown),
    }
}

/// Where the loop puts its next frame for the response body.
#[derive(Clone, Default)]
struct Frames(Arc<std::sync::Mutex<Option<Frame>>>);

impl Frames {
    /// Hands `frame` to the body and waits until the body asks for the next one. A client that
    /// leaves drops the loop where it waits (its record ends in `Recording`'s `Drop`).
    async fn send(&self, frame: Frame) -> bool {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(frame);
        }
        YieldOnce(false).await;
        true
    }

    fn take(&self) -> Option<Frame> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Pending once, so that the body's poll returns the frame just handed over; the next poll of
/// the body resumes the loop.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        std::task::Poll::Pending
    }
}

/// The loop as the response body's stream: polled by the connection's own task, so the
/// upstream is read only as fast as the client reads and no frame crosses between tasks.
struct LoopStream {
    run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    frames: Frames,
    done: bool,
}

impl futures_util::Stream for LoopStream {
    type Item = Frame;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Frame>> {
        if self.done {
            return std::task::Poll::Ready(self.frames.take());
        }
        match self.run.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                self.done = true;
                std::task::Poll::Ready(self.frames.take())
            }
            // Either the loop handed a frame over (and yields), or it waits for the upstream,
            // a tool or a timer, which wake this task.
            std::task::Poll::Pending => match self.frames.take() {
                Some(frame) => std::task::Poll::Ready(Some(frame)),
                None => std::task::Poll::Pending,
            },
        }
    }
}

/// `frames` as one piece; `frames` is left empty for the next chunk.
fn joined(frames: &mut Vec<Bytes>) -> Bytes {
    if frames.len() == 1 {
        return frames.pop().unwrap_or_default();
    }
    let mut whole = bytes::BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in frames.drain(..) {
        whole.extend_from_slice(&frame);
    }
    whole.freeze()
}

/// Sends `frame`; false when the client has gone.
async fn send(frames: &Frames, bytes: Bytes) -> bool {
    frames.send(Frame::Bytes(bytes)).await
}

async fn run(
    state: Arc<AppState>,
    provider: Arc<Provider>,
    api: Api,
    mut call: LoopCall,
    mut recording: Recording,
    tools: Arc<McpTools>,
    frames: Frames,
) {
    let Some(mut looped) = api.stream_loop() else {
        let _ = frames
            .send(Frame::Failed(GatewayError::NotImplemented(
                "this API has no streaming inner loop",
            )))
            .await;
        return;
    };
    let upstream = &state.config.upstream;
    let mut committed = false;
    for iteration in 1..=tools.max_iterations {
        if iteration > 1 {
            recording.next_iteration();
        }
        let attempt = UpstreamCall {
            client: &state.client,
            provider: &provider,
            method: Method::POST,
            url: call.url.clone(),
            headers: call.headers.clone(),
            body: call.body.clone(),
            payer: call.payer,
            deadline: CallDeadline::Head(upstream.first_byte_timeout),
            is_key_check: false,
            dump: state.apidump.as_ref().map(|dump| CallDump {
                dump,
                subject: DumpSubject::Model(&call.model),
                request_id: &call.request_id,
            }),
        };
        // Boxed: inline, the call's state would make the loop's own several KB larger, and
        // that state is copied whole into the loop's box.
        let served = match Box::pin(attempt.send(&mut recording)).await {
            Ok(served) => served,
            Err(error) => {
                if committed {
                    let _ = send(&frames, looped.error_frames(&error.to_string())).await;
                } else {
                    let _ = frames.send(Frame::Failed(error)).await;
                }
                return;
            }
        };
        let status = served.response.status();
        if !status.is_success() {
            if committed {
                let message = format!(
                    "upstream returned HTTP {} in a later iteration",
                    status.as_u16()
                );
                recording.end(Outcome::UpstreamError, Some(200), Some(message.clone()));
                let _ = send(&frames, looped.error_frames(&message)).await;
            } else {
                let relayed = relay_error(
                    served.response,
                    api.dialect(),
                    call.payer,
                    upstream.stream_idle_timeout,
                )
                .await;
                recording.end(Outcome::UpstreamError, Some(status.as_u16()), None);
                let _ = frames.send(Frame::Answer(relayed)).await;
            }
            return;
        }
        // This iteration's stream, event by event.
        let mut upstream_bytes = served.response.bytes_stream();
        let mut decoder = SseDecoder::new();
        let mut observer = api.stream_observer();
        let first_by = served.sent_at + upstream.first_byte_timeout;
        let mut ended = false;
        let mut out = Vec::new();
        while !ended {
            let until = if committed {
                Instant::now() + upstream.stream_idle_timeout
            } else {
                first_by
            };
            let chunk = tokio::select! {
                () = state.cut_streams.cancelled() => Err("the gateway is shutting down".to_string()),
                read = tokio::time::timeout_at(until, upstream_bytes.next()) => match read {
                    Ok(Some(Ok(chunk))) => Ok(chunk),
                    Ok(Some(Err(e))) => Err(format!("upstream stream failed: {e}")),
                    Ok(None) => Err("upstream stream ended before the response was complete".to_string()),
                    Err(_) => Err("upstream stream sent nothing in time".to_string()),
                },
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(message) => {
                    recording.observation(observer.finish());
                    if committed {
                        recording.end(Outcome::StreamFailed, Some(200), Some(message.clone()));
                        let _ = send(&frames, looped.error_frames(&message)).await;
                    } else {
                        let error = GatewayError::UpstreamStreamFailed(message);
                        recording.failed(&error);
                        let _ = frames.send(Frame::Failed(error)).await;
                    }
                    return;
                }
            };
            decoder.push(&chunk);
            // What this chunk's events come to for the client, sent together: one hand-off to
            // the response body per upstream read, not per event.
            out.clear();
            let mut upstream_error = false;
            while let Some(event) = decoder.next_event() {
                observer.observe(&event);
                if api.is_error_report(&event) {
                    // The upstream's own error: relayed as it came, and the stream is over.
                    out.push(event.raw().clone());
                    upstream_error = true;
                    break;
                }
                let terminal = api.is_terminal(&event);
                looped.relay_into(&event, &mut out);
                if terminal {
                    ended = true;
                    break;
                }
            }
            if upstream_error {
                recording.observation(observer.finish());
                recording.end(Outcome::UpstreamError, Some(200), None);
                if !committed {
                    recording.answered(200);
                }
                let _ = send(&frames, joined(&mut out)).await;
                return;
            }
            if !out.is_empty() {
                if !committed {
                    committed = true;
                    recording.answered(200);
                }
                if !send(&frames, joined(&mut out)).await {
                    recording.observation(observer.finish());
                    recording.client_left(Some(200));
                    return;
                }
            }
        }
        recording.observation(observer.finish());
        match looped.end_iteration() {
            IterationEnd::Finish(end) => {
                for frame in end {
                    if !send(&frames, frame).await {
                        recording.client_left(Some(200));
                        return;
                    }
                }
                recording.end(Outcome::Completed, Some(200), None);
                return;
            }
            IterationEnd::Continue { answer, calls } => {
                let mut outcomes = Vec::with_capacity(calls.len());
                for tool_call in calls {
                    let running = tools.run(&tool_call.name, &tool_call.input);
                    tokio::pin!(running);
                    let mut ticks =
                        tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
                    let (result, run) = loop {
                        tokio::select! {
                            result = &mut running => break result,
                            _ = ticks.tick() => {
                                if !send(&frames, looped.keep_alive()).await {
                                    recording.client_left(Some(200));
                                    return;
                                }
                            }
                        }
                    };
                    if let (Some(server), Some(tool)) = (&result.server, &result.tool) {
                        state.metrics.mcp_tool_call(server, tool, !result.is_error);
                    }
                    recording.tool_run(
                        tool_call.id.clone(),
                        &tool_call.name,
                        &tool_call.input,
                        run,
                    );
                    outcomes.push(ToolOutcome {
                        call_id: tool_call.id.unwrap_or_default(),
                        text: result.text,
                        is_error: result.is_error,
                    });
                }
                match api.continue_with(&call.body, &answer, &outcomes) {
                    Ok(next) => call.body = next,
                    Err(error) => {
                        let message = error.to_string();
                        recording.end(Outcome::GatewayError, Some(200), Some(message.clone()));
                        let _ = send(&frames, looped.error_frames(&message)).await;
                        return;
                    }
                }
            }
        }
    }
    let error = GatewayError::InnerLoopLimit(tools.max_iterations);
    recording.end(Outcome::GatewayError, Some(200), Some(error.to_string()));
    let _ = send(&frames, looped.error_frames(&error.to_string())).await;
}

/// The inner agentic loop of a blocking request with MCP tools: while the model calls only the
/// gateway's tools, they are called and the conversation continues — each iteration through a
/// fresh walk of the key pool, so a continuation fails over on its own. The client gets one
/// answer: the earlier iterations' text first, usage summed.
pub async fn blocking(
    state: &AppState,
    mut call: UpstreamCall<'_>,
    api: Api,
    mut recording: Recording,
    tools: &McpTools,
) -> Result<Response, GatewayError> {
    let idle = state.config.upstream.stream_idle_timeout;
    let mut earlier: Vec<serde_json::Value> = Vec::new();
    for iteration in 1..=tools.max_iterations {
        if iteration > 1 {
            recording.next_iteration();
        }
        let served = call.send(&mut recording).await?;
        let response = served.response;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let relayed = relay_error(response, api.dialect(), call.payer, idle).await;
            recording.end(Outcome::UpstreamError, Some(status), None);
            return Ok(relayed);
        }
        let reading = Instant::now();
        let read = relay_blocking(response, call.payer).await;
        recording.waited(reading.elapsed());
        let (relayed, body) = match read {
            Ok(read) => read,
            Err(error) => {
                recording.failed(&error);
                return Err(error);
            }
        };
        // Most answers call none of the gateway's tools: without its prefix in the body, the
        // answer is read as any other (only its usage when nothing is recorded).
        let mentions_ours = memchr::memmem::find(&body, QUOTED_TOOL_PREFIX).is_some();
        let observation = if mentions_ours || recording.is_recorded() {
            api.observe_body(&body)
        } else {
            Observation {
                usage: api.usage_of_body(&body),
                ..Observation::default()
            }
        };
        let calls = if mentions_ours {
            observation.tool_calls.clone()
        } else {
            Vec::new()
        };
        recording.observation(observation);
        let ours = !calls.is_empty() && calls.iter().all(|c| c.name.starts_with(TOOL_PREFIX));
        // Parsed whole only when the loop goes on: it is the next request's assistant turn.
        let answer = if ours {
            serde_json::from_slice::<serde_json::Value>(&body).ok()
        } else {
            None
        };
        let Some(answer) = answer else {
            // The client's to handle (its own tool, or no tool): the loop is over.
            if earlier.is_empty() {
                recording.end(Outcome::Completed, Some(status), None);
                return Ok(relayed);
            }
            let last = serde_json::from_slice(&body).unwrap_or_default();
            let combined = api.combine_answers(&earlier, last);
            recording.end(Outcome::Completed, Some(status), None);
            return Ok(combined_answer(relayed, &combined));
        };
        let mut outcomes = Vec::with_capacity(calls.len());
        for tool_call in calls {
            let (result, run) = tools.run(&tool_call.name, &tool_call.input).await;
            if let (Some(server), Some(tool)) = (&result.server, &result.tool) {
                state.metrics.mcp_tool_call(server, tool, !result.is_error);
            }
            recording.tool_run(tool_call.id.clone(), &tool_call.name, &tool_call.input, run);
            tracing::info!(
                tool = %tool_call.name,
                is_error = result.is_error,
                duration_ms = result.duration.as_secs_f64() * 1000.0,
                "MCP tool called"
            );
            outcomes.push(ToolOutcome {
                call_id: tool_call.id.unwrap_or_default(),
                text: result.text,
                is_error: result.is_error,
            });
        }
        call.body = api.continue_with(&call.body, &answer, &outcomes)?;
        earlier.push(answer);
    }
    let error = GatewayError::InnerLoopLimit(tools.max_iterations);
    recording.failed(&error);
    Err(error)
}

/// The answer an inner loop gives the client: the last upstream answer's status and headers,
/// with the combined body.
fn combined_answer(relayed: Response, combined: &serde_json::Value) -> Response {
    let (mut parts, _) = relayed.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = serde_json::to_vec(combined).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}
