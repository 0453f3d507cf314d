//! Every error the gateway answers with itself, mapped to an HTTP status and rendered in the
//! caller's dialect in exactly one place (`GatewayError::into_response`).

use aibridge_keypool::{Exhausted, StoreError};
use aibridge_protocol::{BadRequest, BodyRefused, Dialect, ErrorKind};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use crate::outcome::Outcome;

/// Why a request looks like a browser's from somewhere else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Foreign {
    #[error("cross-origin requests are refused (Origin {0})")]
    Origin(String),
    #[error("cross-site requests are refused (Sec-Fetch-Site: cross-site)")]
    CrossSite,
    #[error("requests for host `{0}` are refused: the gateway listens on loopback only")]
    Host(String),
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(#[from] BadRequest),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("route not supported: {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error(
        "a gateway token is required: send it as the API key (x-api-key or Authorization: Bearer), or in X-AIBridge-Token to use your own provider key"
    )]
    MissingToken,
    #[error("the gateway token is not valid")]
    InvalidToken,
    #[error("this API needs an admin gateway token")]
    NotAdmin,
    #[error("cannot check the gateway token: {0}")]
    TokenStore(aibridge_store::StoreError),
    #[error("the request cannot be recorded, so it is refused: {0}")]
    RecordingUnavailable(aibridge_store::StoreError),
    #[error("{0}")]
    Database(aibridge_store::StoreError),
    #[error("invalid query parameter {0}")]
    BadQuery(String),
    #[error("the path {0} cannot be forwarded upstream")]
    BadPath(String),
    #[error(
        "provider `{provider}` has no central keys configured; send your own provider key with the X-AIBridge-Token header"
    )]
    NoPool { provider: String },
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("{0}")]
    KeyState(#[from] StoreError),
    #[error("upstream request failed: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream response failed before the first event: {0}")]
    UpstreamStreamFailed(String),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Foreign(#[from] Foreign),
    #[error("circuit breaker is open")]
    CircuitOpen { retry_after: std::time::Duration },
    #[error(
        "the model kept calling the gateway's tools: stopped after {0} upstream calls (mcp.max_iterations)"
    )]
    InnerLoopLimit(u32),
    #[error(
        "model `{model}` is not served by provider `{provider}`: it is not in its `models` and it has no `default_model`"
    )]
    UnmappedModel { provider: String, model: String },
    #[error("{0}")]
    Signing(#[from] crate::bedrock::SigningFailed),
}

impl From<BodyRefused> for GatewayError {
    fn from(refused: BodyRefused) -> Self {
        match refused {
            BodyRefused::Bad(bad) => Self::BadRequest(bad),
            BodyRefused::Unsupported(what) => Self::NotImplemented(what),
        }
    }
}

impl GatewayError {
    /// A call or a body read that failed in transport: 504 when it ran out of time, 502
    /// otherwise.
    pub fn from_transport(error: &TransportError) -> Self {
        if error.is_timeout() {
            Self::UpstreamTimeout
        } else {
            Self::UpstreamUnreachable(error.to_string())
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BodyRead(_) | Self::UnmappedModel { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::MissingToken | Self::InvalidToken | Self::NoPool { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::Exhausted(Exhausted::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Self::Exhausted(Exhausted::AllDisabled) => StatusCode::BAD_GATEWAY,
            Self::KeyState(_)
            | Self::TokenStore(_)
            | Self::RecordingUnavailable(_)
            | Self::Database(_)
            | Self::ShuttingDown
            | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadQuery(_) | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::NotAdmin | Self::Foreign(_) => StatusCode::FORBIDDEN,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::UpstreamUnreachable(_)
            | Self::UpstreamStreamFailed(_)
            | Self::InnerLoopLimit(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_)
            | Self::BodyRead(_)
            | Self::MethodNotAllowed { .. }
            | Self::UnmappedModel { .. }
            | Self::NotImplemented(_) => ErrorKind::InvalidRequest,
            Self::Signing(_) => ErrorKind::Api,
            Self::BodyTooLarge { .. } => ErrorKind::RequestTooLarge,
            Self::RouteNotFound { .. } => ErrorKind::NotFound,
            Self::MissingToken | Self::InvalidToken | Self::NoPool { .. } => {
                ErrorKind::Authentication
            }
            Self::Exhausted(Exhausted::RateLimited { .. }) => ErrorKind::RateLimit,
            Self::Exhausted(Exhausted::AllDisabled)
            | Self::InnerLoopLimit(_)
            | Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout
            | Self::UpstreamStreamFailed(_) => ErrorKind::Api,
            Self::KeyState(_)
            | Self::TokenStore(_)
            | Self::RecordingUnavailable(_)
            | Self::Database(_)
            | Self::ShuttingDown => ErrorKind::Unavailable,
            Self::BadQuery(_) | Self::BadPath(_) => ErrorKind::InvalidRequest,
            Self::NotAdmin | Self::Foreign(_) => ErrorKind::Permission,
            Self::CircuitOpen { .. } => ErrorKind::Overloaded,
        }
    }

    /// How a request answered with this error ended: refused before any upstream call for a
    /// client's mistake or an open breaker, exhausted, or the gateway's own failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Exhausted(_) => Outcome::Exhausted,
            Self::BadRequest(_)
            | Self::BodyTooLarge { .. }
            | Self::BodyRead(_)
            | Self::RouteNotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::NotAdmin
            | Self::BadQuery(_)
            | Self::BadPath(_)
            | Self::NoPool { .. }
            | Self::NotImplemented(_)
            | Self::Foreign(_)
            | Self::UnmappedModel { .. }
            | Self::CircuitOpen { .. } => Outcome::Rejected,
            Self::TokenStore(_)
            | Self::RecordingUnavailable(_)
            | Self::Database(_)
            | Self::KeyState(_)
            | Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout
            | Self::UpstreamStreamFailed(_)
            | Self::InnerLoopLimit(_)
            | Self::Signing(_)
            | Self::ShuttingDown => Outcome::GatewayError,
        }
    }

    /// Seconds for `Retry-After`, when the client should come back later.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Exhausted(e) => e.retry_after_header_secs(),
            Self::CircuitOpen { retry_after } => Some(ceil_secs(*retry_after)),
            _ => None,
        }
    }

    pub fn into_response(self, dialect: Dialect) -> Response {
        let body = dialect.error_body(self.kind(), &self.to_string());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Whole seconds, rounded up (at least 1: a `Retry-After: 0` would invite an immediate retry).
fn ceil_secs(duration: std::time::Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

/// What kind of failure ended an upstream call or the read of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Body,
    Request,
}

/// A call or a body read that failed in transport. Its text says what failed and the innermost
/// cause (the one that says why), never the URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{description}")]
pub struct TransportError {
    failure: Failure,
    description: String,
}

impl TransportError {
    pub fn new(failure: Failure, cause: Option<&(dyn std::error::Error + 'static)>) -> Self {
        let what = match failure {
            Failure::Connect => "could not connect",
            Failure::Timeout => "timed out",
            Failure::Body => "response body failed",
            Failure::Request => "request failed",
        };
        let description = match cause.map(innermost).filter(|text| !text.is_empty()) {
            Some(cause) => format!("{what}: {cause}"),
            None => what.to_string(),
        };
        Self {
            failure,
            description,
        }
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// Ran out of time (the call's deadline or the connect timeout).
    pub fn is_timeout(&self) -> bool {
        self.failure == Failure::Timeout
    }
}

/// The text of the last error in `error`'s chain of sources.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(cause) = last.source() {
        last = cause;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn rate_limited_exhaustion_is_429_with_ceiled_retry_after() {
        let err = GatewayError::Exhausted(Exhausted::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        let response = err.into_response(Dialect::Anthropic);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = body_json(response).await;
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("all configured keys are rate-limited")
        );
    }

    #[tokio::test]
    async fn exhaustion_with_a_usable_key_has_no_retry_after() {
        let err = GatewayError::Exhausted(Exhausted::RateLimited {
            retry_after: Duration::ZERO,
        });
        let response = err.into_response(Dialect::OpenAi);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn all_disabled_is_502_api_error() {
        let response =
            GatewayError::Exhausted(Exhausted::AllDisabled).into_response(Dialect::Anthropic);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(body_json(response).await["error"]["type"], "api_error");
    }

    #[tokio::test]
    async fn an_open_breaker_is_503_overloaded_in_each_dialect() {
        let open = || GatewayError::CircuitOpen {
            retry_after: Duration::from_millis(12_300),
        };
        let anthropic = open().into_response(Dialect::Anthropic);
        assert_eq!(anthropic.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(anthropic.headers()[header::RETRY_AFTER], "13");
        let body = body_json(anthropic).await;
        assert_eq!(body["error"]["type"], "overloaded_error");
        assert_eq!(body["error"]["message"], "circuit breaker is open");
        let body = body_json(open().into_response(Dialect::OpenAi)).await;
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], "service_unavailable");
        assert_eq!(body["error"]["message"], "circuit breaker is open");
    }

    #[test]
    fn client_mistakes_are_4xx() {
        assert_eq!(
            GatewayError::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            GatewayError::BadRequest(BadRequest::MissingModel).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            GatewayError::MissingToken.status(),
            StatusCode::UNAUTHORIZED
        );
        let not_found = GatewayError::RouteNotFound {
            method: "GET".into(),
            path: "/x".into(),
        };
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert_eq!(not_found.to_string(), "route not supported: GET /x");
    }
}
