use serde::Deserialize;
use serde_json::Value;

/// The fields of a bridged request body that the gateway itself needs. Everything else in the
/// body is forwarded byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    pub model: String,
    pub stream: bool,
    /// OpenAI Responses `background: true` (not supported by the gateway).
    pub background: bool,
}

/// Why a request body cannot be bridged. The messages are meant for the API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("request body is empty; expected a JSON object")]
    Empty,
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("`model` is required")]
    MissingModel,
    #[error("`model` must be a non-empty string")]
    InvalidModel,
    #[error("`stream` must be a boolean")]
    InvalidStream,
    #[error("`background` must be a boolean")]
    InvalidBackground,
    #[error("`stream_options` must be an object")]
    InvalidStreamOptions,
    #[error("`{0}` must be an array")]
    NotAnArray(String),
}

/// Why a request body cannot be bridged: a client mistake, or something the gateway does not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    #[error(transparent)]
    Bad(#[from] BadRequest),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Only the two fields are materialised; serde skips the rest without allocating.
#[derive(Deserialize)]
struct Peek {
    model: Option<Value>,
    stream: Option<Value>,
    background: Option<Value>,
}

/// Reads `model` and `stream` from a raw JSON request body, validating their types.
pub fn summarize_request(body: &[u8]) -> Result<RequestSummary, BadRequest> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(BadRequest::Empty),
        // serde would happily read a struct from a JSON array; the APIs want an object.
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_slice::<Value>(body) {
                Ok(_) => BadRequest::NotAnObject,
                Err(e) => BadRequest::NotJson(e.to_string()),
            });
        }
    }
    let peek: Peek =
        serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
    let model = match peek.model {
        None | Some(Value::Null) => return Err(BadRequest::MissingModel),
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        Some(_) => return Err(BadRequest::InvalidModel),
    };
    let stream = optional_bool(peek.stream).ok_or(BadRequest::InvalidStream)?;
    let background = optional_bool(peek.background).ok_or(BadRequest::InvalidBackground)?;
    Ok(RequestSummary {
        model,
        stream,
        background,
    })
}

/// `Some(false)` when absent or null, `None` when not a boolean.
fn optional_bool(value: Option<Value>) -> Option<bool> {
    match value {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(b),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream_and_ignores_unknown_fields() {
        let body = br#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}],"unknown":{"a":[1,2]}}"#;
        assert_eq!(
            summarize_request(body),
            Ok(RequestSummary {
                model: "claude-x".into(),
                stream: true,
                background: false
            })
        );
    }

    #[test]
    fn stream_defaults_to_false() {
        let got = summarize_request(br#" {"model":"m"}"#).unwrap();
        assert!(!got.stream);
    }

    #[test]
    fn rejects_each_bad_shape_with_its_own_error() {
        assert_eq!(summarize_request(b""), Err(BadRequest::Empty));
        assert_eq!(summarize_request(b"  \n"), Err(BadRequest::Empty));
        assert_eq!(summarize_request(b"[1,2]"), Err(BadRequest::NotAnObject));
        assert_eq!(
            summarize_request(b"\"model\""),
            Err(BadRequest::NotAnObject)
        );
        assert!(matches!(
            summarize_request(b"{\"model\":"),
            Err(BadRequest::NotJson(_))
        ));
        assert!(matches!(
            summarize_request(b"nope"),
            Err(BadRequest::NotJson(_))
        ));
        assert_eq!(summarize_request(b"{}"), Err(BadRequest::MissingModel));
        assert_eq!(
            summarize_request(br#"{"model":null}"#),
            Err(BadRequest::MissingModel)
        );
        assert_eq!(
            summarize_request(br#"{"model":5}"#),
            Err(BadRequest::InvalidModel)
        );
        assert_eq!(
            summarize_request(br#"{"model":" "}"#),
            Err(BadRequest::InvalidModel)
        );
        assert_eq!(
            summarize_request(br#"{"model":"m","stream":"yes"}"#),
            Err(BadRequest::InvalidStream)
        );
    }

    #[test]
    fn background_is_read_and_checked() {
        assert!(
            summarize_request(br#"{"model":"m","background":true}"#)
                .unwrap()
                .background
        );
        assert_eq!(
            summarize_request(br#"{"model":"m","background":1}"#),
            Err(BadRequest::InvalidBackground)
        );
    }

    #[test]
    fn not_json_message_says_where() {
        let err = summarize_request(b"{\"model\": \"m\",}").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
