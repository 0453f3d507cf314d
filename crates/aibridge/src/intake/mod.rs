//! The checks every route makes before anything goes upstream: who is calling and who pays
//! (`auth`), which client headers may travel (`headers`), the body within its limit (`body`),
//! which AI client sent it (`client`, for the record), and, without tokens, whether a browser
//! sent it from elsewhere (`origin`).

pub mod auth;
pub mod body;
pub mod client;
pub mod headers;
pub mod origin;

pub use auth::{Caller, Payer};

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;

use crate::error::GatewayError;
use crate::provider::Provider;
use auth::Authenticator;

/// Response header that names the gateway's id for the request (also in every log line).
pub const REQUEST_ID_HEADER: &str = "x-aibridge-request-id";

/// A request as it arrives at a provider route.
pub struct Incoming {
    pub meta: RequestMeta,
    pub body: Body,
}

/// The incoming request without its body.
pub struct RequestMeta {
    pub request_id: String,
    /// When the gateway took the request: its duration and overhead count from here.
    pub received: std::time::Instant,
    pub headers: HeaderMap,
    pub query: Option<String>,
}

/// A request that got past the checks every route makes.
pub struct Intake {
    pub caller: Caller,
    pub meta: RequestMeta,
    pub body: Bytes,
}

/// Who is calling and who pays, and the body read within `body_limit`.
pub async fn intake(
    auth: &Authenticator,
    body_limit: usize,
    provider: &Provider,
    incoming: Incoming,
) -> Result<Intake, GatewayError> {
    let Incoming { meta, body } = incoming;
    let caller = auth
        .identify(&meta.headers, !provider.kind.has_key_pool())
        .await?;
    let body = body::read_body(body, &meta.headers, body_limit).await?;
    Ok(Intake { caller, meta, body })
}
