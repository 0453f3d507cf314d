use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// The error dialect of the API a client is speaking. Every error the gateway itself produces is
/// rendered in the caller's dialect so SDKs parse it like a provider error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `{"type":"error","error":{"type":…,"message":…}}`
    Anthropic,
    /// `{"error":{"message":…,"type":…,"param":null,"code":…}}`
    OpenAi,
}

/// Provider-neutral classes of error; each dialect names them its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
    Overloaded,
    /// The gateway cannot take requests right now (shutting down, store unavailable).
    Unavailable,
}

impl ErrorKind {
    /// The kind a provider means by an HTTP status, used when an upstream error body cannot be
    /// read and has to be re-rendered.
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Authentication,
            403 => Self::Permission,
            404 => Self::NotFound,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimit,
            503 => Self::Unavailable,
            529 => Self::Overloaded,
            400..=499 => Self::InvalidRequest,
            _ => Self::Api,
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimit => "rate_limit_error",
            Self::Api => "api_error",
            Self::Overloaded | Self::Unavailable => "overloaded_error",
        }
    }

    /// OpenAI's (`type`, `code`) pair.
    fn openai_type_and_code(self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest => ("invalid_request_error", "invalid_request"),
            Self::Authentication => ("authentication_error", "invalid_api_key"),
            Self::Permission => ("permission_error", "forbidden"),
            Self::NotFound => ("invalid_request_error", "not_found"),
            Self::RequestTooLarge => ("invalid_request_error", "request_too_large"),
            Self::RateLimit => ("rate_limit_error", "rate_limit_exceeded"),
            Self::Api => ("api_error", "server_error"),
            Self::Overloaded => ("server_error", "service_unavailable"),
            Self::Unavailable => ("api_error", "service_unavailable"),
        }
    }
}

impl Dialect {
    /// JSON error body for a plain HTTP error response.
    pub fn error_body(self, kind: ErrorKind, message: &str) -> Bytes {
        let value = match self {
            Self::Anthropic => json!({
                "type": "error",
                "error": { "type": kind.anthropic_type(), "message": message },
            }),
            Self::OpenAi => {
                let (kind, code) = kind.openai_type_and_code();
                json!({
                    "error": { "message": message, "type": kind, "param": null, "code": code },
                })
            }
        };
        Bytes::from(value.to_string())
    }

    /// The SSE frame that tells a client, after the stream has started, that it failed.
    /// Anthropic: an `event: error` frame. OpenAI: a `data: {"error":…}` frame followed by
    /// `data: [DONE]`, as OpenAI-compatible clients expect the stream to be closed that way.
    pub fn stream_error_frames(self, kind: ErrorKind, message: &str) -> Bytes {
        let body = self.error_body(kind, message);
        let body = String::from_utf8_lossy(&body);
        match self {
            Self::Anthropic => crate::encode_event(Some("error"), &body),
            Self::OpenAi => {
                let mut frames = crate::encode_event(None, &body).to_vec();
                frames.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(frames)
            }
        }
    }

    /// Whether `body` already is an error object in this dialect, so it can be relayed verbatim.
    pub fn is_error_body(self, body: &[u8]) -> bool {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let error = &value["error"];
        match self {
            Self::Anthropic => value["type"] == "error" && error["type"].is_string(),
            Self::OpenAi => error["message"].is_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn anthropic_body_has_outer_type_error() {
        let body = parse(&Dialect::Anthropic.error_body(ErrorKind::RateLimit, "slow down"));
        assert_eq!(
            body,
            json!({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})
        );
    }

    #[test]
    fn openai_body_has_type_and_code() {
        let body = parse(&Dialect::OpenAi.error_body(ErrorKind::Api, "boom"));
        assert_eq!(
            body,
            json!({"error":{"message":"boom","type":"api_error","param":null,"code":"server_error"}})
        );
        let body = parse(&Dialect::OpenAi.error_body(ErrorKind::RateLimit, "x"));
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn status_maps_to_provider_kinds() {
        assert_eq!(
            ErrorKind::for_status(StatusCode::BAD_REQUEST),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            ErrorKind::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ErrorKind::RequestTooLarge
        );
        assert_eq!(
            ErrorKind::for_status(StatusCode::from_u16(529).unwrap()),
            ErrorKind::Overloaded
        );
        assert_eq!(
            ErrorKind::for_status(StatusCode::BAD_GATEWAY),
            ErrorKind::Api
        );
        assert_eq!(
            ErrorKind::for_status(StatusCode::UNPROCESSABLE_ENTITY),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn stream_error_frames_per_dialect() {
        let a = Dialect::Anthropic.stream_error_frames(ErrorKind::Overloaded, "Overloaded");
        assert_eq!(
            &a[..],
            b"event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
        );
        let o = Dialect::OpenAi.stream_error_frames(ErrorKind::Api, "cut");
        let text = std::str::from_utf8(&o).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(text.ends_with("\n\ndata: [DONE]\n\n"), "{text}");
    }

    #[test]
    fn recognises_error_bodies_of_its_own_dialect_only() {
        let ant = br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#;
        let oai = br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#;
        assert!(Dialect::Anthropic.is_error_body(ant));
        assert!(!Dialect::Anthropic.is_error_body(oai));
        assert!(Dialect::OpenAi.is_error_body(oai));
        assert!(!Dialect::OpenAi.is_error_body(b"<html>502</html>"));
    }
}
