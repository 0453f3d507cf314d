//! Blocking answers: a success read whole and relayed, an error relayed with its status and
//! `Retry-After`, in the caller's dialect.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use aibridge_protocol::{Dialect, ErrorKind};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{answer, answer_headers};
use crate::error::GatewayError;
use crate::intake::Payer;
use crate::upstream::client::UpstreamResponse;

/// Upstream error bodies are read up to this size before relaying; larger ones are cut.
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// A success read whole, relayed with its status and headers, and handed back for the record.
pub async fn relay_blocking(
    response: UpstreamResponse,
    payer: Payer,
) -> Result<(Response, Bytes), GatewayError> {
    let status = response.status();
    let headers = answer_headers(response.headers(), payer);
    let body = response
        .bytes()
        .await
        .map_err(|e| GatewayError::from_transport(&e))?;
    Ok((answer(status, headers, Body::from(body.clone())), body))
}

/// Work that is finished even if whoever awaits it goes away: dropped before it finished, it
/// sets `dropped` and runs on as a task of its own instead of being cancelled.
pub struct FinishedIfDropped<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    dropped: Arc<AtomicBool>,
}

impl<T: Send + 'static> FinishedIfDropped<T> {
    pub fn new(work: impl Future<Output = T> + Send + 'static, dropped: Arc<AtomicBool>) -> Self {
        Self {
            work: Some(Box::pin(work)),
            dropped,
        }
    }
}

impl<T: Send + 'static> Future for FinishedIfDropped<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            // Polled again after it finished: it never finishes twice.
            return Poll::Pending;
        };
        let output = ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishedIfDropped<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        self.dropped.store(true, Ordering::Release);
        // Outside a runtime (it is shutting down) the work is dropped, and what it owns ends
        // as dropped things do (a recording ends as the client's leaving).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                work.await;
            });
        }
    }
}

/// Relays a non-success upstream answer. A BYOK answer is the client's own: status, headers and
/// body exactly as they came. A pool answer keeps its status and `Retry-After` (from
/// `retry-after-ms` when that is all there is); a body already in the caller's dialect passes
/// unchanged, anything else, such as an HTML page from a proxy, is wrapped into a dialect-shaped
/// error so SDKs can parse it.
pub async fn relay_error(
    response: UpstreamResponse,
    dialect: Dialect,
    payer: Payer,
    idle: Duration,
) -> Response {
    if payer == Payer::Byok {
        return super::passthrough::relay(response, idle);
    }
    let status = response.status();
    let mut headers = answer_headers(response.headers(), payer);
    if !headers.contains_key(header::RETRY_AFTER)
        && let Some(secs) = retry_after_ms_as_secs(response.headers())
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    let body = read_capped(response, MAX_ERROR_BODY).await;
    let body = if dialect.is_error_body(&body) {
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
    answer(status, headers, Body::from(body))
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

async fn read_capped(mut response: UpstreamResponse, cap: usize) -> Bytes {
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

    #[tokio::test]
    async fn dropped_work_runs_on_and_knows_it_was_dropped() {
        let (started, has_started) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finished, has_finished) = tokio::sync::oneshot::channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let seen = dropped.clone();
        let work = FinishedIfDropped::new(
            async move {
                let _ = started.send(());
                let _ = released.await;
                let _ = finished.send(seen.load(Ordering::Acquire));
            },
            dropped,
        );
        let waiting = tokio::spawn(work);
        has_started.await.unwrap();
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert!(has_finished.await.unwrap(), "finished, told it was dropped");
    }

    #[tokio::test]
    async fn awaited_work_finishes_in_place() {
        let dropped = Arc::new(AtomicBool::new(false));
        let seen = dropped.clone();
        let work = FinishedIfDropped::new(async move { seen.load(Ordering::Acquire) }, dropped);
        assert!(!work.await, "not told it was dropped");
    }

    #[test]
    fn retry_after_ms_rounds_up() {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after_ms_as_secs(&h), Some(2));
        h.insert("retry-after-ms", HeaderValue::from_static("-3"));
        assert_eq!(retry_after_ms_as_secs(&h), None);
    }
}
