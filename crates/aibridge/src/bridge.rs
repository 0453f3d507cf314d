//! Bridged routes: the request is read and checked, sent upstream through the failover loop, and
//! the answer relayed — blocking bodies whole, streams event by event.

use std::sync::Arc;

use aibridge_keypool::PoolKey;
use aibridge_protocol::{
    ApiShape, Dialect, ErrorKind, RequestSummary, ensure_stream_usage, observe_body, prompt_of,
    summarize_request,
};
use aibridge_store::{CredentialKind, NewInterception, RequestKind};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::auth::{Caller, Payer};
use crate::client::ClientInfo;
use crate::error::{GatewayError, describe_transport_error};
use crate::failover::{Failed, Served, UpstreamCall};
use crate::provider::Provider;
use crate::recorder::{Ending, Recording};
use crate::server::AppState;
use crate::stream_relay::{self, StreamKind, StreamRecording};

/// Response header that names the gateway's id for the request (also in every log line).
pub const REQUEST_ID_HEADER: &str = "x-aibridge-request-id";

/// Upstream error bodies are read up to this size before relaying; larger ones are cut.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// The bridged APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgedApi {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// OpenAI `POST /chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /responses`.
    Responses,
}

impl BridgedApi {
    /// How its bodies are read for the record.
    fn shape(self) -> ApiShape {
        match self {
            Self::Messages => ApiShape::AnthropicMessages,
            Self::ChatCompletions => ApiShape::OpenAiChat,
            Self::Responses => ApiShape::OpenAiResponses,
        }
    }

    fn stream_kind(self) -> StreamKind {
        match self {
            Self::Messages => StreamKind::AnthropicMessages,
            Self::ChatCompletions => StreamKind::OpenAiChat,
            Self::Responses => StreamKind::OpenAiResponses,
        }
    }

    /// The body to send upstream: the client's bytes, adjusted only where the API requires.
    fn prepare_body(self, summary: &RequestSummary, body: Bytes) -> Result<Bytes, GatewayError> {
        match self {
            Self::Messages => Ok(body),
            // Usage is only in a chat stream when asked for; the gateway always needs it.
            Self::ChatCompletions if summary.stream => Ok(ensure_stream_usage(&body)?.into()),
            Self::ChatCompletions => Ok(body),
            Self::Responses if summary.background => Err(GatewayError::NotImplemented(
                "background requests are not supported by aibridge",
            )),
            Self::Responses => Ok(body),
        }
    }
}

/// Everything a bridged handler needs from the incoming request.
pub struct Incoming {
    pub meta: RequestMeta,
    pub body: Body,
}

/// The incoming request without its body.
pub struct RequestMeta {
    pub request_id: String,
    pub headers: HeaderMap,
    pub query: Option<String>,
}

pub async fn handle(
    state: &Arc<AppState>,
    provider: &Arc<Provider>,
    api: BridgedApi,
    upstream_path: &str,
    incoming: Incoming,
) -> Result<Response, GatewayError> {
    let Intake { caller, meta, body } = intake(state, provider, incoming).await?;
    let summary = summarize_request(&body)?;
    let body = api.prepare_body(&summary, body)?;
    let span = tracing::info_span!(
        "bridge",
        request_id = %meta.request_id,
        provider = %provider.name,
        model = %summary.model,
        stream = summary.stream,
        user = %caller.user,
        payer = ?caller.payer,
    );
    let recording = begin_recording(state, provider, &meta, &caller, || NewRequest {
        kind: RequestKind::Bridged,
        method: "POST",
        route: upstream_path,
        model: Some(summary.model.clone()),
        streaming: summary.stream,
        client: crate::client::identify(&meta.headers, &body),
        prompt: prompt_of(api.shape(), &body),
    })
    .await?;
    let call = UpstreamCall {
        client: &state.client,
        provider,
        method: Method::POST,
        url: provider.upstream_url(upstream_path, meta.query.as_deref()),
        headers: crate::headers::forwardable(&meta.headers, caller.payer),
        body,
        payer: caller.payer,
        timeout: (!summary.stream).then_some(state.config.upstream.request_timeout),
    };
    in_request_span(span, relay(call, api, recording)).await
}

/// What the record of a new request says about it.
pub struct NewRequest<'a> {
    pub kind: RequestKind,
    pub method: &'a str,
    pub route: &'a str,
    pub model: Option<String>,
    pub streaming: bool,
    pub client: ClientInfo,
    pub prompt: Option<String>,
}

/// Writes the start of the request's record before anything goes upstream: a request that
/// cannot be recorded is refused (503) rather than served unrecorded. `describe` is only called
/// when recording is on, so a gateway that records nothing does none of that work.
pub async fn begin_recording<'a>(
    state: &AppState,
    provider: &Provider,
    meta: &RequestMeta,
    caller: &Caller,
    describe: impl FnOnce() -> NewRequest<'a>,
) -> Result<Recording, GatewayError> {
    if !state.recorder.enabled() {
        return Ok(Recording::new(
            state.recorder.clone(),
            meta.request_id.clone(),
            None,
        ));
    }
    let request = describe();
    let record = NewInterception {
        id: meta.request_id.clone(),
        user: caller.user.clone(),
        kind: request.kind,
        provider_type: provider.kind.as_str().to_string(),
        provider_name: provider.name.clone(),
        method: request.method.to_string(),
        route: request.route.to_string(),
        model: request.model,
        streaming: request.streaming,
        client: Some(request.client.client.to_string()),
        session_id: request.client.session_id,
        user_agent: request.client.user_agent,
        credential: match caller.payer {
            Payer::Pool => CredentialKind::Pool,
            Payer::Byok => CredentialKind::Byok,
        },
        started_at: crate::recorder::now_millis(),
    };
    let id = record.id.clone();
    state
        .recorder
        .begin(record)
        .await
        .map_err(GatewayError::RecordingUnavailable)?;
    Ok(Recording::new(state.recorder.clone(), id, request.prompt))
}

/// A request that got past the checks every route makes.
pub struct Intake {
    pub caller: Caller,
    pub meta: RequestMeta,
    pub body: Bytes,
}

/// Who is calling and who pays, and the body read within the size limit.
pub async fn intake(
    state: &AppState,
    provider: &Provider,
    incoming: Incoming,
) -> Result<Intake, GatewayError> {
    let Incoming { meta, body } = incoming;
    let caller = state
        .auth
        .identify(&meta.headers, !provider.kind.has_key_pool())
        .await?;
    let body = read_body(body, &meta.headers, state.config.max_request_body_bytes).await?;
    Ok(Intake { caller, meta, body })
}

/// Runs a request's upstream work inside its span and logs how a failed one was answered.
pub async fn in_request_span(
    span: tracing::Span,
    work: impl Future<Output = Result<Response, GatewayError>>,
) -> Result<Response, GatewayError> {
    work.instrument(span.clone()).await.inspect_err(|e| {
        tracing::info!(parent: &span, status = e.status().as_u16(), error = %e, "request failed")
    })
}

/// Sends the call (failing over between pool keys), relays the upstream's answer, and records
/// every attempt, what the answer said, and how the request ended.
async fn relay(
    call: UpstreamCall<'_>,
    api: BridgedApi,
    mut recording: Recording,
) -> Result<Response, GatewayError> {
    let Served {
        response,
        key,
        attempts,
    } = match call.send().await {
        Ok(served) => served,
        Err(Failed { error, attempts }) => {
            recording.failed(&error, &attempts);
            return Err(error);
        }
    };
    recording.attempts(&attempts);
    let ending = |status: u16, outcome: &'static str, error: Option<String>| Ending {
        status: Some(status),
        outcome,
        key_hint: key.as_ref().map(PoolKey::hint),
        attempts: attempts.len() as u32,
        error,
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let relayed = relay_error(response, call.provider.kind.dialect(), call.payer).await;
        recording.end(ending(status, "upstream_error", None));
        return Ok(relayed);
    }
    if is_event_stream(response.headers()) {
        let recording =
            StreamRecording::new(recording, api.shape(), ending(status, "completed", None));
        return stream_relay::relay(response, api.stream_kind(), recording).await;
    }
    match relay_blocking(response).await {
        Ok((relayed, body)) => {
            if recording.is_active() {
                recording.observation(observe_body(api.shape(), &body));
            }
            recording.end(ending(status, "completed", None));
            Ok(relayed)
        }
        Err(error) => {
            recording.end(ending(
                error.status().as_u16(),
                "gateway_error",
                Some(error.to_string()),
            ));
            Err(error)
        }
    }
}

/// Reads the request body up to `limit` bytes; above it, 413.
pub async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        if declared.is_some_and(|len| len <= (limit + MAX_DISCARDED_BODY) as u64) {
            discard(body).await;
        }
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| GatewayError::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                discard(body).await;
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// How much of an oversized body is read and thrown away before answering 413.
const MAX_DISCARDED_BODY: usize = 64 * 1024 * 1024;

/// Reads the rest of a refused body (bounded in size and time) so the client can finish sending
/// and read the 413, instead of seeing a broken pipe.
async fn discard(mut body: Body) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MAX_DISCARDED_BODY {
                break;
            }
        }
    })
    .await;
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// Upstream response headers worth passing on to the client.
const RELAYED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "request-id",
    "x-request-id",
    "retry-after",
    "retry-after-ms",
];

fn copy_relayed_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = from.get(*name) {
            to.insert(*name, value.clone());
        }
    }
}

/// The answer and its body, which is also observed for the record.
async fn relay_blocking(response: reqwest::Response) -> Result<(Response, Bytes), GatewayError> {
    let status = response.status();
    let mut headers = HeaderMap::new();
    copy_relayed_headers(response.headers(), &mut headers);
    let body = response.bytes().await.map_err(|e| {
        if e.is_timeout() {
            GatewayError::UpstreamTimeout
        } else {
            GatewayError::UpstreamUnreachable(describe_transport_error(&e))
        }
    })?;
    let mut out = Response::new(Body::from(body.clone()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok((out, body))
}

/// Relays a non-success upstream answer with its status and `Retry-After`. Bodies already in the
/// caller's dialect (and every BYOK body) pass unchanged; anything else, such as an HTML page
/// from a proxy, is wrapped into a dialect-shaped error so SDKs can parse it.
async fn relay_error(response: reqwest::Response, dialect: Dialect, payer: Payer) -> Response {
    let status = response.status();
    let mut headers = HeaderMap::new();
    copy_relayed_headers(response.headers(), &mut headers);
    if !headers.contains_key(header::RETRY_AFTER)
        && let Some(secs) = retry_after_ms_as_secs(response.headers())
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    let body = read_capped(response, MAX_ERROR_BODY).await;
    let body = if payer == Payer::Byok || dialect.is_error_body(&body) {
        body
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let message = if snippet.trim().is_empty() {
            format!("upstream returned HTTP {}", status.as_u16())
        } else {
            format!(
                "upstream returned HTTP {}: {}",
                status.as_u16(),
                snippet.trim()
            )
        };
        dialect.error_body(ErrorKind::for_status(status), &message)
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// `retry-after-ms` (OpenAI's convention) as whole seconds, rounded up.
fn retry_after_ms_as_secs(headers: &HeaderMap) -> Option<u64> {
    let ms: f64 = headers
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (ms.is_finite() && ms > 0.0).then(|| (ms / 1000.0).ceil() as u64)
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_ms_rounds_up() {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after_ms_as_secs(&h), Some(2));
        h.insert("retry-after-ms", HeaderValue::from_static("-3"));
        assert_eq!(retry_after_ms_as_secs(&h), None);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_by_declared_length_and_by_actual_size() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        let err = read_body(Body::from("hello world"), &h, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTooLarge { limit: 10 }));
        let err = read_body(Body::from("hello world"), &HeaderMap::new(), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTooLarge { limit: 10 }));
        let ok = read_body(Body::from("hello"), &HeaderMap::new(), 10)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"hello");
    }
}
