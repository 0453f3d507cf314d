//! Bedrock's answers in the shape the relay expects of an Anthropic upstream: its error bodies
//! (`{"message": …}` with the exception's name in `x-amzn-ErrorType`) as Anthropic errors, and
//! its event stream as Anthropic SSE, converted frame by frame as the bytes arrive.

use std::time::Duration;

use aibridge_protocol::bedrock::{self as wire, EventStreamToSse};
use futures_util::StreamExt as _;
use http::{HeaderValue, header};

use super::client::{UpstreamBody, UpstreamResponse};
use crate::error::{Failure, TransportError};

/// Longest error body read to find Bedrock's message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// How long an error body may take to arrive.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(5);

/// The content type of Bedrock's streaming answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// `response` as the relay of an Anthropic route reads it.
pub async fn adapt(response: UpstreamResponse) -> UpstreamResponse {
    let status = response.status();
    if !status.is_success() {
        return error_as_anthropic(response).await;
    }
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(EVENT_STREAM));
    if !streaming {
        // A blocking answer already is an Anthropic Messages body.
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    let mut converter = EventStreamToSse::new();
    let sse = http_body_util::BodyDataStream::new(body).map(move |chunk| {
        converter
            .push(&chunk?)
            .map_err(|e| TransportError::new(Failure::Body, Some(&e)))
    });
    UpstreamResponse::from_parts(parts, UpstreamBody::from_stream(sse))
}

async fn error_as_anthropic(mut response: UpstreamResponse) -> UpstreamResponse {
    let status = response.status();
    let mut body = Vec::new();
    let _ = tokio::time::timeout(ERROR_BODY_WAIT, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > ERROR_BODY_LIMIT {
                break;
            }
        }
    })
    .await;
    let converted = wire::error_body(status, response.headers(), &body);
    let mut answer = UpstreamResponse::new(status, converted);
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for name in [
        header::RETRY_AFTER,
        header::HeaderName::from_static("x-amzn-requestid"),
    ] {
        if let Some(value) = response.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    answer
}
