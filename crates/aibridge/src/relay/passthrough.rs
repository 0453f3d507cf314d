//! Passthrough answers: the upstream's status, headers and body, streamed as they arrive.

use axum::body::Body;
use axum::response::Response;

/// The upstream's status, headers (minus hop-by-hop) and body, streamed as it arrives.
pub fn relay(response: reqwest::Response) -> Response {
    let status = response.status();
    let mut headers = response.headers().clone();
    let hop_by_hop: Vec<_> = headers
        .keys()
        .filter(|name| crate::intake::headers::is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
