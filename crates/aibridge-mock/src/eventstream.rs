//! AWS event-stream framing (`application/vnd.amazon.eventstream`, Bedrock's streaming body),
//! encoded and decoded with the real codec of `aws-smithy-eventstream`.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use aws_smithy_types::str_bytes::StrBytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;

/// One frame with string headers (the only kind Bedrock sends) and `payload`.
pub(crate) fn frame(headers: &[(&'static str, &str)], payload: &[u8]) -> Bytes {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            Header::new(
                *name,
                HeaderValue::String(StrBytes::from((*value).to_owned())),
            )
        })
        .collect();
    let message = Message::new_from_parts(headers, Bytes::copy_from_slice(payload));
    let mut out = Vec::with_capacity(payload.len() + 128);
    match write_message_to(&message, &mut out) {
        Ok(()) => Bytes::from(out),
        Err(e) => {
            // Only oversized headers or payloads fail to encode; the mock's never are.
            tracing::warn!(error = %e, "aibridge-mock: event-stream frame not encoded");
            Bytes::new()
        }
    }
}

/// One decoded event-stream frame (see [`decode_event_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamFrame {
    /// The frame's headers in order. String values as they are; other types in a readable form
    /// (integers and booleans as text, byte arrays in base64).
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl EventStreamFrame {
    /// The value of header `name` (e.g. `:message-type`, `:event-type`, `:exception-type`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload parsed as JSON.
    pub fn payload_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// For a Bedrock `chunk` event: the base64-decoded `bytes` of its payload (the model's own
    /// event, e.g. one Anthropic stream event's JSON). `None` for other frames.
    pub fn chunk_bytes(&self) -> Option<Vec<u8>> {
        if self.header(":event-type") != Some("chunk") {
            return None;
        }
        let payload = self.payload_json()?;
        BASE64.decode(payload.get("bytes")?.as_str()?).ok()
    }

    /// [`EventStreamFrame::chunk_bytes`] parsed as JSON.
    pub fn chunk_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.chunk_bytes()?).ok()
    }
}

/// Why an event-stream body did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamError {
    /// Byte offset of the frame that failed.
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event-stream frame at byte {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for EventStreamError {}

/// Splits a whole `application/vnd.amazon.eventstream` body into its frames with
/// `aws-smithy-eventstream`'s decoder (lengths and CRCs checked). A body that ends inside a frame
/// is an error.
pub fn decode_event_stream(mut bytes: &[u8]) -> Result<Vec<EventStreamFrame>, EventStreamError> {
    let total = bytes.len();
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let offset = total - bytes.len();
        let message = read_message_from(&mut bytes).map_err(|e| EventStreamError {
            offset,
            message: e.to_string(),
        })?;
        frames.push(EventStreamFrame {
            headers: message
                .headers()
                .iter()
                .map(|h| (h.name().as_str().to_owned(), header_text(h.value())))
                .collect(),
            payload: message.payload().to_vec(),
        });
    }
    Ok(frames)
}

fn header_text(value: &HeaderValue) -> String {
    match value {
        HeaderValue::String(s) => s.as_str().to_owned(),
        HeaderValue::Bool(b) => b.to_string(),
        HeaderValue::Byte(n) => n.to_string(),
        HeaderValue::Int16(n) => n.to_string(),
        HeaderValue::Int32(n) => n.to_string(),
        HeaderValue::Int64(n) => n.to_string(),
        HeaderValue::ByteArray(b) => BASE64.encode(b),
        HeaderValue::Uuid(u) => format!("{u:032x}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = frame(
            &[(":event-type", "chunk"), (":message-type", "event")],
            br#"{"bytes":"eyJhIjoxfQ=="}"#,
        )
        .to_vec();
        body.extend_from_slice(&frame(&[(":message-type", "exception")], b"{}"));
        let frames = decode_event_stream(&body).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].header(":event-type"), Some("chunk"));
        assert_eq!(frames[0].chunk_json(), Some(serde_json::json!({"a": 1})));
        assert_eq!(frames[1].header(":message-type"), Some("exception"));
        assert_eq!(frames[1].chunk_bytes(), None);
        let err = decode_event_stream(&body[..body.len() - 1]).unwrap_err();
        assert!(err.offset > 0, "{err}");
    }
}
