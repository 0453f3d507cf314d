//! The upstream's answer on its way back to the client: blocking bodies whole (`blocking`),
//! streams event by event with an explicit commit point (`stream`), passthrough and BYOK answers
//! as they come (`passthrough`).

pub mod blocking;
pub mod passthrough;
pub mod stream;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use crate::intake::Payer;
use crate::intake::headers::is_hop_by_hop;

/// The client's answer: status, headers, body.
fn answer(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Headers of a pool-paid answer that reach the client: what the SDKs need to read it, the
/// upstream's request id, and its retry advice. The rest (rate-limit counters of the pool's key,
/// cookies) is the pool's business.
const POOL_ANSWER_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "retry-after-ms",
    "request-id",
    "x-request-id",
];

/// The upstream's headers as the client gets them: a BYOK answer is the client's own and keeps
/// every header but the hop-by-hop ones; a pool answer keeps [`POOL_ANSWER_HEADERS`].
pub fn answer_headers(upstream: &HeaderMap, payer: Payer) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let keep = match payer {
            Payer::Byok => !is_hop_by_hop(name),
            Payer::Pool => POOL_ANSWER_HEADERS.contains(&name.as_str()),
        };
        if keep {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn byok_keeps_every_end_to_end_header_and_pool_answers_only_the_listed_ones() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("x-should-retry", "false"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("request-id", "req_1"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
        ] {
            upstream.insert(name, HeaderValue::from_static(value));
        }
        let byok = answer_headers(&upstream, Payer::Byok);
        assert_eq!(byok["x-should-retry"], "false");
        assert_eq!(byok["anthropic-ratelimit-requests-remaining"], "0");
        assert_eq!(byok["request-id"], "req_1");
        assert_eq!(byok["content-length"], "12");
        for gone in ["connection", "transfer-encoding"] {
            assert!(!byok.contains_key(gone), "{gone}");
        }
        let pool = answer_headers(&upstream, Payer::Pool);
        let mut names: Vec<_> = pool.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "request-id"]);
    }
}
