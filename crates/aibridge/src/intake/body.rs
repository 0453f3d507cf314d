//! The request body, read once within its size limit.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use crate::error::GatewayError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
