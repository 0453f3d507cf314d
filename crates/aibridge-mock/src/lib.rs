//! aibridge-mock: a fake upstream provider (Anthropic, OpenAI and Amazon Bedrock dialects) on a real
//! socket, for tests, benchmarks and `aibridge demo`.
//!
//! Each request is attributed to a *key* (`x-api-key`, else `Authorization: Bearer <key>`, else "";
//! on Bedrock routes the SigV4 access key id, else the bearer API key) and answered by the next
//! [`Reply`] of that key's script (then its `then` reply, then [`Reply::default`], a success).
//! Every request except the control API (`/_mock/...`) is recorded as a [`SeenRequest`] and
//! counted per key.
//!
//! Load mode ([`MockOptions`], the binary's `--latency-ms`, `--stream-events`, `--event-delay-ms`
//! and `--no-record`): server-wide defaults for benchmarks. [`MockUpstream::start`] and
//! [`MockUpstream::start_on`] use [`MockOptions::default`], which changes nothing.
//!
//! Deterministic usage numbers: `input_tokens` = 10 + number of messages (OpenAI responses: of input
//! items, a string input counting as 1); `output_tokens` = 2 × the number of text deltas
//! (`stream_deltas`, or 5 when 0), for blocking and streaming successes alike. The streaming
//! `message_start` carries `output_tokens: 1`, the final `message_delta` the full output count.
//! The text is "Hello from aibridge-mock." (deltas cycle over "Hello", " from", " aibridge",
//! "-mock", ".").
//!
//! Tool calls: a success whose reply sets [`Reply::tool_call`] ([`ToolCallReply`]; scripted as
//! `"tool_call": {"name": .., "arguments": {..}, "text": ..}`) answers with a call of that tool in
//! the route's wire format instead of the text: Anthropic `tool_use` (`stop_reason: "tool_use"`),
//! Chat Completions `tool_calls` (`finish_reason: "tool_calls"`), Responses `function_call`. The
//! optional `text` comes first. Streamed, the arguments' JSON is split over `stream_deltas`
//! delta events (at least 2), the text over `stream_deltas` deltas. Call ids (`toolu_mock_<n>`,
//! `call_mock_<n>`, `fc_mock_<n>`) are unique in the process.
//!
//! Amazon Bedrock (Anthropic models), on the same listener:
//! - `POST /model/{modelId}/invoke`: the body is an Anthropic Messages body with
//!   `"anthropic_version": "bedrock-2023-05-31"` and without `model`/`stream` (otherwise a 400
//!   `ValidationException` worded like Bedrock's, e.g. `Malformed input request: #: extraneous
//!   key [model] is not permitted, please reformat your input and try again.`). Success: the
//!   Anthropic Message (id `msg_bdrk_mock_<seq>`, `model` = the percent-decoded model id, the
//!   usual text, usage and tool calls) with `x-amzn-bedrock-input-token-count`,
//!   `x-amzn-bedrock-output-token-count` and `x-amzn-bedrock-invocation-latency`.
//! - `POST /model/{modelId}/invoke-with-response-stream`: `application/vnd.amazon.eventstream`,
//!   one frame per Anthropic stream event (the `/v1/messages` events), each with headers
//!   `:event-type: chunk`, `:content-type: application/json`, `:message-type: event` and payload
//!   `{"bytes": <base64 of the event's JSON>, "p": <padding>}`; the last event (`message_stop`)
//!   carries `amazon-bedrock-invocationMetrics` (`inputTokenCount`, `outputTokenCount`,
//!   `firstByteLatency` = the delay before the headers, `invocationLatency` = that plus
//!   `event_delay_ms` per later frame). A mid-stream `ErrorEvent` failure sends an exception frame
//!   (`:exception-type` = the reply's `exception` in lowerCamel case, default
//!   `internalServerException`; `:message-type: exception`; payload `{"message": ..}`) and ends;
//!   `Cut` aborts the connection. [`decode_event_stream`] splits such a body into frames.
//! - `POST /model/{modelId}/count-tokens`: `{"input": {"invokeModel": {"body": <base64 invoke
//!   body>}}}` (or `{"input": {"converse": {"messages": [..]}}}`) → `{"inputTokens": 10 + messages}`.
//! - `GET /foundation-models`: `{"modelSummaries": [..]}` listing [`BEDROCK_MODELS`] (provider
//!   `Anthropic`), authenticated and scripted like the rest.
//!
//! Bedrock authentication is verified before the script (a refused request is recorded and counted
//! but consumes no scripted reply): SigV4 (`AWS4-HMAC-SHA256`, service `bedrock`, any region) is
//! recomputed from the request as received, the secret of every access key id being
//! [`bedrock_secret_for`] (`"<id>-secret"`); a mismatch is a 403 `InvalidSignatureException`, so
//! is an `x-amz-date` more than 15 minutes off (`Signature expired: ..`); a key id starting with
//! `UNKNOWN` is `UnrecognizedClientException`, a session token (`x-amz-security-token`) starting
//! with `expired` is `ExpiredTokenException`, no Authorization is
//! `MissingAuthenticationTokenException`, a garbled one `IncompleteSignatureException`. A Bedrock
//! API key (`Authorization: Bearer <key>`) is accepted unless it starts with `bad` (403
//! `AccessDeniedException`, body `{"Message": "Authentication failed: Please make sure your API
//! Key is valid."}`, capitalised as Bedrock does). Errors carry `x-amzn-ErrorType:
//! <Name>:http://internal.amazon.com/coral/com.amazon.bedrock/` (`com.amazon.coral.service` for
//! the authentication exceptions) and `{"message": ..}`; a scripted error status answers with its
//! Bedrock exception (429 `ThrottlingException`, 400 `ValidationException`, 403
//! `AccessDeniedException`, 404 `ResourceNotFoundException`, 408 `ModelTimeoutException`, 424
//! `ModelErrorException`, 500 `InternalServerException`, 503 `ServiceUnavailableException`) unless
//! [`Reply::exception`] names another. Request ids (`x-amzn-RequestId`) are UUID-shaped:
//! `00000000-0000-4000-8000-<seq as 12 hex digits>`.

mod anthropic;
mod bedrock;
mod body;
mod eventstream;
mod exceptions;
pub mod mcp;
mod openai;
mod reply;
mod route;
mod sigv4;
mod sse;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use bedrock::{BEDROCK_ANTHROPIC_VERSION, BEDROCK_MODELS};
pub use eventstream::{EventStreamError, EventStreamFrame, decode_event_stream};
pub use reply::{DEFAULT_DELTAS, MidStreamFailure, Reply, SeenRequest, ToolCallReply};
pub use sigv4::bedrock_secret_for;

use body::{Ctx, Endpoint, Outcome};

/// Server-wide settings of a mock, for load tests. The default is the plain test mock: no added
/// latency, the replies' own stream settings, every request recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    /// Added to every response's delay before its headers (on top of a reply's own `delay_ms`),
    /// errors included; the control API is not delayed.
    pub latency_ms: u64,
    /// Text deltas of a streaming success whose reply leaves `stream_deltas` at 0
    /// (0 here too = [`DEFAULT_DELTAS`]).
    pub stream_events: usize,
    /// Pause between SSE events for replies that leave `event_delay_ms` at 0.
    pub event_delay_ms: u64,
    /// Keep a [`SeenRequest`] per request. Off, [`MockUpstream::requests`] and `/_mock/requests`
    /// stay empty (memory stays flat under load); the per-key counts ([`MockUpstream::hits`],
    /// `/_mock/stats`) and scripts work either way.
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            stream_events: 0,
            event_delay_ms: 0,
            record: true,
        }
    }
}

impl MockOptions {
    /// See [`MockOptions::latency_ms`].
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// See [`MockOptions::stream_events`].
    pub fn stream_events(mut self, n: usize) -> Self {
        self.stream_events = n;
        self
    }

    /// See [`MockOptions::event_delay_ms`].
    pub fn event_delay_ms(mut self, ms: u64) -> Self {
        self.event_delay_ms = ms;
        self
    }

    /// See [`MockOptions::record`].
    pub fn record(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    /// The reply actually served: the server-wide stream settings fill what `reply` leaves at 0.
    fn apply(&self, reply: &mut Reply) {
        if reply.stream_deltas == 0 {
            reply.stream_deltas = self.stream_events;
        }
        if reply.event_delay_ms == 0 {
            reply.event_delay_ms = self.event_delay_ms;
        }
    }
}

/// Largest request body read (bigger ones get a 413 in the provider's shape).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long `shutdown` waits for in-flight responses before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct KeyScript {
    queue: VecDeque<Reply>,
    then: Option<Reply>,
}

#[derive(Debug, Default)]
struct MockState {
    scripts: HashMap<String, KeyScript>,
    requests: Vec<SeenRequest>,
    /// Requests per key since start/reset, recorded or not.
    hits: HashMap<String, u64>,
    /// Number of requests since start/reset (ids are `..._mock_<seq>`).
    seq: u64,
}

impl MockState {
    /// Counts a request of `key` and records `seen` (when recording). Returns the request's
    /// sequence number.
    fn count(&mut self, key: &str, seen: Option<SeenRequest>) -> u64 {
        self.seq += 1;
        match self.hits.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.hits.insert(key.to_owned(), 1);
            }
        }
        self.requests.extend(seen);
        self.seq
    }

    /// Counts and records a request of `key` and takes its reply. Returns the request's sequence
    /// number.
    fn take(&mut self, key: &str, seen: Option<SeenRequest>) -> (u64, Reply) {
        let seq = self.count(key, seen);
        let reply = match self.scripts.get_mut(key) {
            Some(script) => match script.queue.pop_front() {
                Some(step) => step,
                None => script.then.clone().unwrap_or_default(),
            },
            None => Reply::default(),
        };
        (seq, reply)
    }

    fn reset(&mut self) {
        *self = MockState::default();
    }
}

/// What every handler shares: the mutable state and the fixed options.
#[derive(Debug, Default)]
struct Inner {
    state: Mutex<MockState>,
    options: MockOptions,
}

type Shared = Arc<Inner>;

fn lock(inner: &Inner) -> MutexGuard<'_, MockState> {
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Body of `GET /_mock/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MockStats {
    /// Requests since start/reset (control API excluded).
    pub requests: u64,
    /// Requests per key since start/reset.
    pub hits: HashMap<String, u64>,
}

/// A running mock upstream. Dropping it shuts the server down.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves on it in one spawned task.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, MockOptions::default()).await
    }

    /// Binds `addr` and serves on it with server-wide `options` (load mode).
    pub async fn start_with(addr: SocketAddr, options: MockOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::new(Inner {
            state: Mutex::new(MockState::default()),
            options,
        });
        let app = router(Arc::clone(&state));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // Resolves on send and when the sender is dropped.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "aibridge-mock server error");
            }
        });
        tracing::debug!(%addr, "aibridge-mock listening");
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the key's queue of replies.
    pub fn script(&self, key: &str, steps: Vec<Reply>) {
        let mut state = lock(&self.state);
        state.scripts.entry(key.to_owned()).or_default().queue = steps.into();
    }

    /// The reply for every request of the key once its queue is empty.
    pub fn then(&self, key: &str, reply: Reply) {
        let mut state = lock(&self.state);
        state.scripts.entry(key.to_owned()).or_default().then = Some(reply);
    }

    /// Every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state).requests.clone()
    }

    /// The key of each recorded request, in arrival order.
    pub fn seen_keys(&self) -> Vec<String> {
        lock(&self.state)
            .requests
            .iter()
            .map(|r| r.key.clone())
            .collect()
    }

    /// Number of requests with this key since start/reset (counted even when not recording).
    pub fn hits(&self, key: &str) -> usize {
        let n = lock(&self.state).hits.get(key).copied().unwrap_or(0);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Request counts since start/reset, as served by `GET /_mock/stats`.
    pub fn stats(&self) -> MockStats {
        stats_of(&lock(&self.state))
    }

    /// The server-wide options this mock runs with.
    pub fn options(&self) -> &MockOptions {
        &self.state.options
    }

    /// Forgets scripts and recorded requests.
    pub fn reset(&self) {
        lock(&self.state).reset();
    }

    /// Stops the server: no new connections; in-flight responses get a few seconds to finish.
    /// Resolves once the server task has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/_mock/script", post(control_script))
        .route("/_mock/requests", get(control_requests))
        .route("/_mock/reset", post(control_reset))
        .route("/_mock/stats", get(control_stats))
        .fallback(mock_handler)
        .with_state(state)
}

/// Body of `POST /_mock/script`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScriptRequest {
    key: String,
    #[serde(default)]
    steps: Vec<Reply>,
    #[serde(default)]
    then: Option<Reply>,
}

async fn control_script(State(state): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<ScriptRequest>(&body) {
        Ok(req) => {
            let mut state = lock(&state);
            let script = state.scripts.entry(req.key).or_default();
            script.queue = req.steps.into();
            script.then = req.then;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("bad script: {e}\n"),
        )
            .into_response(),
    }
}

async fn control_requests(State(state): State<Shared>) -> Response {
    let requests = lock(&state).requests.clone();
    axum::Json(requests).into_response()
}

async fn control_reset(State(state): State<Shared>) -> Response {
    lock(&state).reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn control_stats(State(state): State<Shared>) -> Response {
    let stats = stats_of(&lock(&state));
    axum::Json(stats).into_response()
}

fn stats_of(state: &MockState) -> MockStats {
    MockStats {
        requests: state.seq,
        hits: state.hits.clone(),
    }
}

/// `s` trimmed, borrowing when it can.
fn trimmed(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

/// The key of a request: `x-api-key`, else `Authorization: Bearer <key>`, else "". Borrowed from
/// the headers unless they are not UTF-8.
fn key_of(headers: &HeaderMap) -> Cow<'_, str> {
    if let Some(v) = headers.get("x-api-key") {
        let key = trimmed(String::from_utf8_lossy(v.as_bytes()));
        if !key.is_empty() {
            return key;
        }
    }
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = trimmed(String::from_utf8_lossy(v.as_bytes()));
        if let Some(scheme) = v.get(..7)
            && scheme.eq_ignore_ascii_case("bearer ")
        {
            return match v {
                Cow::Borrowed(b) => Cow::Borrowed(b.get(7..).unwrap_or_default().trim()),
                Cow::Owned(o) => Cow::Owned(o.get(7..).unwrap_or_default().trim().to_owned()),
            };
        }
    }
    Cow::Borrowed("")
}

async fn mock_handler(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (body, too_large) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => (b, false),
        Err(e) => {
            tracing::debug!(error = %e, "aibridge-mock: request body not read");
            (Bytes::new(), true)
        }
    };
    let route = route::resolve(&parts.method, parts.uri.path(), &parts.headers);
    // Bedrock authenticates for real, before the script: a refused request is counted and
    // recorded but consumes no scripted reply.
    let admitted = match route.endpoint {
        Endpoint::Bedrock(_) => Some(bedrock::admit(
            &sigv4::Signed {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                body: &body,
            },
            too_large,
            time::OffsetDateTime::now_utc(),
        )),
        _ => None,
    };
    let key: Cow<'_, str> = match &admitted {
        Some(Ok(caller)) => Cow::Borrowed(&caller.key),
        Some(Err(rejection)) => Cow::Borrowed(&rejection.key),
        None => key_of(&parts.headers),
    };
    let seen = state
        .options
        .record
        .then(|| seen_request(&parts, &key, &body));
    let caller = match &admitted {
        Some(Err(rejection)) => {
            let seq = lock(&state).count(&key, seen);
            if state.options.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(state.options.latency_ms)).await;
            }
            let mut response = rejection.response();
            set_request_id(&mut response, route.dialect, seq);
            return response;
        }
        Some(Ok(caller)) => Some(caller),
        None => None,
    };
    let (seq, mut reply) = lock(&state).take(&key, seen);
    state.options.apply(&mut reply);
    let delay = reply.delay_ms.saturating_add(state.options.latency_ms);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let ctx = Ctx {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        seq,
        body: &body,
        deltas: reply.deltas(),
        tool_call: reply.tool_call.as_ref(),
    };
    let mut response = match (&route.endpoint, &caller) {
        (Endpoint::Bedrock(op), Some(caller)) => bedrock::respond(op, &ctx, &reply, caller, delay),
        _ => respond(&route, &ctx, &reply, too_large),
    };
    set_request_id(&mut response, route.dialect, seq);
    add_scripted_headers(&mut response, &reply);
    if reply.body_delay_ms > 0 {
        return in_two_halves(response, Duration::from_millis(reply.body_delay_ms)).await;
    }
    response
}

/// The response with its body's second half sent `pause` after the first.
async fn in_two_halves(response: Response, pause: Duration) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let first = bytes.slice(..bytes.len() / 2);
    let rest = bytes.slice(bytes.len() / 2..);
    let halves = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(first) }),
        futures_util::stream::once(async move {
            tokio::time::sleep(pause).await;
            Ok(rest)
        }),
    );
    Response::from_parts(parts, Body::from_stream(halves))
}

fn seen_request(parts: &http::request::Parts, key: &str, body: &[u8]) -> SeenRequest {
    SeenRequest {
        key: key.to_owned(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

fn set_request_id(response: &mut Response, dialect: route::Dialect, seq: u64) {
    if let Ok(v) = HeaderValue::from_str(&dialect.request_id(seq)) {
        response
            .headers_mut()
            .insert(dialect.request_id_header(), v);
    }
}

/// The reply's headers: the first scripted value of a name replaces a generated header; later
/// ones are appended.
fn add_scripted_headers(response: &mut Response, reply: &Reply) {
    let headers = response.headers_mut();
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in &reply.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            tracing::warn!(%name, "aibridge-mock: invalid scripted header skipped");
            continue;
        };
        if replaced.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            replaced.push(name);
        }
    }
}

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// The response of an Anthropic or OpenAI route (request id and scripted headers not yet added).
fn respond(route: &route::Route, ctx: &Ctx<'_>, reply: &Reply, too_large: bool) -> Response {
    let dialect = route.dialect;
    if !reply.is_success() {
        let status = StatusCode::from_u16(reply.effective_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let text = reply
            .body
            .clone()
            .unwrap_or_else(|| body::ordered_json(&dialect.error_body(status.as_u16(), None)));
        plain(status, JSON, text)
    } else if too_large {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            JSON,
            body::ordered_json(&dialect.error_body(413, None)),
        )
    } else {
        match dialect.respond(&route.endpoint, ctx) {
            Outcome::Json { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                match (&reply.body, status == StatusCode::OK) {
                    (Some(raw), true) => plain(status, JSON, raw.clone()),
                    _ => plain(status, JSON, body::ordered_json(&body)),
                }
            }
            Outcome::Stream {
                frames,
                error_frame,
            } => {
                let body = match &reply.body {
                    Some(raw) => Body::from(raw.clone()),
                    None => sse::body(
                        sse::plan(frames, error_frame, reply),
                        Duration::from_millis(reply.event_delay_ms),
                    ),
                };
                let mut response = Response::new(body);
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
        }
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_x_api_key_then_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(key_of(&h), "");
        h.insert("authorization", HeaderValue::from_static("Bearer sk-b"));
        assert_eq!(key_of(&h), "sk-b");
        h.insert("x-api-key", HeaderValue::from_static("sk-a"));
        assert_eq!(key_of(&h), "sk-a");
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(key_of(&basic), "");
    }

    #[test]
    fn script_then_default() {
        let mut st = MockState::default();
        let seen = |k: &str| SeenRequest {
            key: k.to_owned(),
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: vec![],
            body: String::new(),
        };
        st.scripts.entry("k".into()).or_default().queue =
            vec![Reply::status(429), Reply::status(500)].into();
        st.scripts.entry("k".into()).or_default().then = Some(Reply::status(401));
        assert_eq!(st.take("k", Some(seen("k"))), (1, Reply::status(429)));
        assert_eq!(st.take("k", Some(seen("k"))), (2, Reply::status(500)));
        assert_eq!(st.take("k", Some(seen("k"))), (3, Reply::status(401)));
        assert_eq!(st.take("k", Some(seen("k"))), (4, Reply::status(401)));
        assert_eq!(st.take("other", Some(seen("other"))), (5, Reply::ok()));
        assert_eq!(st.requests.len(), 5);
        // A request refused before its script (Bedrock authentication) counts but takes nothing.
        st.scripts.entry("b".into()).or_default().queue = vec![Reply::status(429)].into();
        assert_eq!(st.count("b", Some(seen("b"))), 6);
        assert_eq!(st.take("b", None), (7, Reply::status(429)));
        assert_eq!(st.hits.get("b"), Some(&2));
        assert_eq!(st.requests.len(), 6);
    }
}
