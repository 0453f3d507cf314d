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

#[derive(Deserialize)]
struct StreamOptionsPeek {
    stream_options: Option<Value>,
}

/// Makes an OpenAI Chat Completions streaming request ask for usage
/// (`stream_options.include_usage = true`) so the gateway always learns the token counts.
/// The common case — no `stream_options` — is a byte splice that leaves the rest of the body
/// exactly as the client wrote it; otherwise only `stream_options` is rewritten.
pub fn ensure_stream_usage(body: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let peek: StreamOptionsPeek =
        serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
    match peek.stream_options {
        None | Some(Value::Null) => {
            let Some(open) = body.iter().position(|b| *b == b'{') else {
                return Err(BadRequest::NotAnObject);
            };
            let rest = &body[open + 1..];
            let empty_object = rest.iter().all(|b| b.is_ascii_whitespace() || *b == b'}');
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            if !empty_object {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            Ok(out)
        }
        Some(Value::Object(options))
            if options.get("include_usage") == Some(&Value::Bool(true)) =>
        {
            Ok(body.to_vec())
        }
        Some(Value::Object(_)) => {
            let mut value: Value =
                serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
            value["stream_options"]["include_usage"] = Value::Bool(true);
            Ok(value.to_string().into_bytes())
        }
        Some(_) => Err(BadRequest::InvalidStreamOptions),
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

    fn usage_forced(body: &str) -> String {
        String::from_utf8(ensure_stream_usage(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn stream_usage_is_spliced_in_without_touching_the_rest() {
        let body = r#"{"model":"gpt-x", "stream":true,"messages":[{"role":"user","content":"hi"}],"n":1.50}"#;
        assert_eq!(
            usage_forced(body),
            r#"{"stream_options":{"include_usage":true},"model":"gpt-x", "stream":true,"messages":[{"role":"user","content":"hi"}],"n":1.50}"#
        );
        assert_eq!(
            usage_forced(" { } "),
            r#" {"stream_options":{"include_usage":true} } "#
        );
    }

    #[test]
    fn stream_usage_already_on_is_left_alone_and_off_is_turned_on() {
        let on = r#"{"model":"m","stream_options":{"include_usage":true}}"#;
        assert_eq!(usage_forced(on), on);
        let off: Value = serde_json::from_str(&usage_forced(
            r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
        ))
        .unwrap();
        assert_eq!(
            off["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert_eq!(
            ensure_stream_usage(br#"{"model":"m","stream_options":5}"#),
            Err(BadRequest::InvalidStreamOptions)
        );
    }

    #[test]
    fn not_json_message_says_where() {
        let err = summarize_request(b"{\"model\": \"m\",}").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
