//! Answers relayed as they come: the upstream's status, headers (minus hop-by-hop) and body,
//! streamed chunk by chunk, each chunk within the idle bound. Passthrough routes use it, and so
//! does every BYOK error (the client's own answer, unchanged).

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;

use super::{answer, answer_headers};
use crate::intake::Payer;
use crate::upstream::client::UpstreamResponse;

/// A body chunk did not come within the idle bound: the body ends with an error, so the client
/// sees a broken answer rather than one that looks complete.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
struct Silent(Duration);

pub fn relay(response: UpstreamResponse, idle: Duration) -> Response {
    let status = response.status();
    // Passthrough answers (model lists, stored responses) carry nothing of the key: every
    // end-to-end header travels, as for BYOK.
    let headers = answer_headers(response.headers(), Payer::Byok);
    let chunks = response.bytes_stream();
    let body = futures_util::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
            Ok(Some(Err(e))) => Some((Err(axum::Error::new(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(Silent(idle))), None)),
        }
    });
    answer(status, headers, Body::from_stream(body))
}
