//! AWS Bedrock's InvokeModel for Anthropic models, as the client's Anthropic Messages request
//! becomes it and its answer comes back: the body Bedrock takes, the model id in the path, the
//! exception name that says what went wrong, and the event stream turned into the Anthropic SSE
//! the client expects, event by event.

use std::collections::BTreeMap;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::errors::{Dialect, ErrorKind};
use crate::request::BadRequest;

/// The `anthropic_version` InvokeModel requires in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Top-level fields of an Anthropic Messages body that InvokeModel takes; it refuses any other
/// ("extraneous key is not permitted"), so the rest is left out.
const ACCEPTED_FIELDS: &[&str] = &[
    "anthropic_beta",
    "anthropic_version",
    "max_tokens",
    "messages",
    "stop_sequences",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

/// `anthropic-beta` flags Bedrock accepts (it refuses a request naming any other).
const ACCEPTED_BETAS: &[&str] = &[
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "computer-use-2025-11-24",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "fine-grained-tool-streaming-2025-05-14",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "token-efficient-tools-2025-02-19",
    "tool-examples-2025-10-29",
    "tool-search-tool-2025-10-19",
];

/// The InvokeModel body of a client's Messages `body`: `model` and `stream` out (the path says
/// them), `anthropic_version` set, the accepted `anthropic-beta` flags (from the client's
/// headers) in `anthropic_beta`, fields Bedrock refuses left out. Values are kept byte for byte.
pub fn invoke_body(body: &[u8], headers: &HeaderMap) -> Result<Vec<u8>, BadRequest> {
    let fields: BTreeMap<&str, &RawValue> =
        serde_json::from_slice(body).map_err(|_| BadRequest::NotAnObject)?;
    let mut out: BTreeMap<&str, &RawValue> = fields
        .into_iter()
        .filter(|(name, _)| ACCEPTED_FIELDS.contains(name))
        .collect();
    let version = format!("\"{ANTHROPIC_VERSION}\"");
    let version = RawValue::from_string(version).map_err(|_| BadRequest::NotAnObject)?;
    out.insert("anthropic_version", &version);
    let betas: Vec<&str> = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|flag| ACCEPTED_BETAS.contains(flag))
        .collect();
    let betas = serde_json::value::to_raw_value(&betas).map_err(|_| BadRequest::NotAnObject)?;
    if !betas.get().eq("[]") {
        out.insert("anthropic_beta", &betas);
    } else {
        out.remove("anthropic_beta");
    }
    serde_json::to_vec(&out).map_err(|_| BadRequest::NotAnObject)
}

/// The path of InvokeModel (or its streaming form) for `model_id`, percent-encoded as sent;
/// the signature covers exactly these bytes.
pub fn invoke_path(model_id: &str, stream: bool) -> String {
    let action = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!("/model/{}/{action}", encode_segment(model_id))
}

/// The path of CountTokens for `model_id`.
pub fn count_tokens_path(model_id: &str) -> String {
    format!("/model/{}/count-tokens", encode_segment(model_id))
}

/// CountTokens' body for an InvokeModel body.
pub fn count_tokens_body(invoke_body: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(invoke_body);
    serde_json::json!({"input": {"invokeModel": {"body": encoded}}})
        .to_string()
        .into_bytes()
}

/// An Anthropic `count_tokens` answer from CountTokens' `{"inputTokens": N}`.
pub fn count_tokens_answer(body: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let tokens = value["inputTokens"].as_u64()?;
    Some(
        serde_json::json!({"input_tokens": tokens})
            .to_string()
            .into_bytes(),
    )
}

/// Every byte but the unreserved ones percent-encoded, as AWS encodes a path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What an error answer's exception name means for the credential that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionClass {
    /// Throttling or a quota: the credential cools down.
    Throttled,
    /// The credential itself is refused (unknown, expired, badly signed): disabled at once.
    CredentialRefused,
    /// Anything else (a model not enabled, a bad request, the service's own trouble): relayed.
    Other,
}

/// The exception name of an error answer: `x-amzn-ErrorType`, without what follows a `:`.
pub fn exception_name(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("x-amzn-errortype")?.to_str().ok()?;
    let name = value.split(':').next().unwrap_or(value).trim();
    (!name.is_empty()).then_some(name)
}

/// What `name` (an exception name, upper or lower camel case) says about the credential.
pub fn classify_exception(name: &str) -> ExceptionClass {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => ExceptionClass::Throttled,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "expiredtokenexception"
        | "incompletesignatureexception" => ExceptionClass::CredentialRefused,
        _ => ExceptionClass::Other,
    }
}

/// The kind of error an exception name is, for the client's Anthropic dialect.
fn error_kind(name: &str, status: StatusCode) -> ErrorKind {
    match classify_exception(name) {
        ExceptionClass::Throttled => ErrorKind::RateLimit,
        ExceptionClass::CredentialRefused => ErrorKind::Authentication,
        ExceptionClass::Other => match name.to_ascii_lowercase().as_str() {
            "accessdeniedexception" => ErrorKind::Permission,
            "validationexception" => ErrorKind::InvalidRequest,
            "resourcenotfoundexception" => ErrorKind::NotFound,
            "serviceunavailableexception" | "modelnotreadyexception" => ErrorKind::Overloaded,
            "internalserverexception" | "modelstreamerrorexception" | "modeltimeoutexception" => {
                ErrorKind::Api
            }
            _ => ErrorKind::for_status(status),
        },
    }
}

/// Bedrock's error answer (`{"message": …}`) as an Anthropic error body, with Bedrock's message.
pub fn error_body(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let name = exception_name(headers).unwrap_or("");
    let message = message_of(body).unwrap_or_else(|| {
        if name.is_empty() {
            format!("Bedrock answered HTTP {}", status.as_u16())
        } else {
            name.to_string()
        }
    });
    Dialect::Anthropic.error_body(error_kind(name, status), &message)
}

fn message_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    ["message", "Message"]
        .iter()
        .find_map(|field| value[field].as_str().map(str::to_string))
}

/// Turns Bedrock's event stream (`application/vnd.amazon.eventstream`) into the Anthropic SSE
/// a Messages client reads: each `chunk` event's payload (`{"bytes": base64 of an Anthropic
/// event}`) becomes `event: <type>\ndata: <json>\n\n`; an exception frame becomes Anthropic's
/// `event: error`, after which nothing more is read.
#[derive(Debug, Default)]
pub struct EventStreamToSse {
    decoder: MessageFrameDecoder,
    buffer: BytesMut,
    over: bool,
}

/// A stream that cannot be read as Bedrock's event stream.
#[derive(Debug, thiserror::Error)]
#[error("the Bedrock event stream is malformed: {0}")]
pub struct MalformedEventStream(String);

impl EventStreamToSse {
    pub fn new() -> Self {
        Self::default()
    }

    /// The SSE of every complete frame in what has arrived so far (with `chunk`).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, MalformedEventStream> {
        if self.over {
            return Ok(Bytes::new());
        }
        self.buffer.extend_from_slice(chunk);
        let mut sse = BytesMut::new();
        while !self.over {
            match self.decoder.decode_frame(&mut self.buffer) {
                Ok(DecodedFrame::Complete(message)) => {
                    sse.extend_from_slice(&self.frame_to_sse(&message)?);
                }
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => return Err(MalformedEventStream(e.to_string())),
            }
        }
        Ok(sse.freeze())
    }

    /// Whether part of a frame is still waiting for the rest.
    pub fn has_partial_frame(&self) -> bool {
        !self.over && !self.buffer.is_empty()
    }

    fn frame_to_sse(&mut self, message: &Message) -> Result<Bytes, MalformedEventStream> {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_string()),
                    _ => None,
                })
        };
        match header(":message-type").as_deref() {
            Some("event") => {}
            Some("exception") | Some("error") => {
                self.over = true;
                let name = header(":exception-type")
                    .or_else(|| header(":error-code"))
                    .unwrap_or_default();
                let message = message_of(message.payload())
                    .or_else(|| header(":error-message"))
                    .unwrap_or_else(|| name.clone());
                let kind = error_kind(&name, StatusCode::INTERNAL_SERVER_ERROR);
                return Ok(Dialect::Anthropic.stream_error_frames(kind, &message));
            }
            other => {
                return Err(MalformedEventStream(format!(
                    "a frame of message type {other:?}"
                )));
            }
        }
        if header(":event-type").as_deref() != Some("chunk") {
            // Not an answer's part (none other is defined for InvokeModel): skipped.
            return Ok(Bytes::new());
        }
        #[derive(serde::Deserialize)]
        struct Chunk {
            bytes: String,
        }
        let chunk: Chunk = serde_json::from_slice(message.payload())
            .map_err(|e| MalformedEventStream(format!("a chunk's payload: {e}")))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(chunk.bytes.as_bytes())
            .map_err(|e| MalformedEventStream(format!("a chunk's bytes: {e}")))?;
        let data = String::from_utf8(data)
            .map_err(|_| MalformedEventStream("a chunk is not UTF-8".to_string()))?;
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let typed: Typed<'_> = serde_json::from_str(&data)
            .map_err(|e| MalformedEventStream(format!("a chunk's event: {e}")))?;
        Ok(crate::sse::encode_event(Some(&typed.kind), &data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::Header;

    fn frame(message_type: &str, extra: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut message = Message::new(Bytes::copy_from_slice(payload)).add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_string().into()),
        ));
        for (name, value) in extra {
            message = message.add_header(Header::new(
                name.to_string(),
                HeaderValue::String(value.to_string().into()),
            ));
        }
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }

    fn chunk(event: &Value) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        frame(
            "event",
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
            ],
            serde_json::json!({ "bytes": bytes }).to_string().as_bytes(),
        )
    }

    #[test]
    fn the_body_bedrock_takes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14, files-api-2025-04-14"
                .parse()
                .unwrap(),
        );
        let body = br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"Hi  there"}],"temperature":0.70}"#;
        let out: Value = serde_json::from_slice(&invoke_body(body, &headers).unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "anthropic_version": "bedrock-2023-05-31",
                "anthropic_beta": ["interleaved-thinking-2025-05-14"],
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Hi  there"}],
                "temperature": 0.70
            })
        );
        let raw = String::from_utf8(invoke_body(body, &HeaderMap::new()).unwrap()).unwrap();
        assert!(raw.contains("0.70"), "values byte for byte: {raw}");
        assert!(!raw.contains("anthropic_beta"), "{raw}");
        assert!(invoke_body(b"[1]", &headers).is_err());
    }

    #[test]
    fn model_ids_are_encoded_in_the_path() {
        assert_eq!(
            invoke_path("anthropic.claude-sonnet-4-5-20250929-v1:0", false),
            "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
        );
        assert_eq!(
            invoke_path("arn:aws:bedrock:us-east-1:1:inference-profile/x", true),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/invoke-with-response-stream"
        );
    }

    #[test]
    fn exceptions_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
                .parse()
                .unwrap(),
        );
        assert_eq!(exception_name(&headers), Some("ThrottlingException"));
        assert_eq!(
            classify_exception("ThrottlingException"),
            ExceptionClass::Throttled
        );
        assert_eq!(
            classify_exception("serviceQuotaExceededException"),
            ExceptionClass::Throttled
        );
        for refused in [
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
            "IncompleteSignatureException",
        ] {
            assert_eq!(
                classify_exception(refused),
                ExceptionClass::CredentialRefused
            );
        }
        for other in [
            "AccessDeniedException",
            "ModelNotReadyException",
            "ValidationException",
        ] {
            assert_eq!(classify_exception(other), ExceptionClass::Other);
        }
        let body = error_body(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(
            body["error"]["message"],
            "Too many requests, please wait before trying again."
        );
    }

    #[test]
    fn event_stream_becomes_anthropic_sse_split_anywhere() {
        let start = serde_json::json!({"type": "message_start", "message": {"id": "msg_1"}});
        let stop = serde_json::json!({"type": "message_stop"});
        let mut stream = chunk(&start);
        stream.extend(chunk(&stop));
        let mut sse = Vec::new();
        let mut converter = EventStreamToSse::new();
        // One byte at a time: frames split at any point come out whole.
        for byte in &stream {
            sse.extend_from_slice(&converter.push(std::slice::from_ref(byte)).unwrap());
        }
        assert!(!converter.has_partial_frame());
        assert_eq!(
            String::from_utf8(sse).unwrap(),
            format!("event: message_start\ndata: {start}\n\nevent: message_stop\ndata: {stop}\n\n")
        );
    }

    #[test]
    fn an_exception_frame_is_the_anthropic_error_event() {
        let mut stream = chunk(&serde_json::json!({"type": "message_start", "message": {}}));
        stream.extend(frame(
            "exception",
            &[(":exception-type", "throttlingException")],
            br#"{"message":"slow down"}"#,
        ));
        stream.extend(chunk(&serde_json::json!({"type": "message_stop"})));
        let sse = EventStreamToSse::new().push(&stream).unwrap();
        let text = String::from_utf8(sse.to_vec()).unwrap();
        let error = text.split("event: error\ndata: ").nth(1).unwrap();
        let error: Value = serde_json::from_str(error.trim_end()).unwrap();
        assert_eq!(error["error"]["type"], "rate_limit_error", "{text}");
        assert_eq!(error["error"]["message"], "slow down");
        assert!(
            !text.contains("message_stop"),
            "nothing after the error: {text}"
        );
        assert!(
            EventStreamToSse::new()
                .push(b"\0\0\0\x10garbage-garbage")
                .is_err()
        );
    }
}
