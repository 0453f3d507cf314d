//! What every dialect's body generator shares: the endpoint being served, the request's inputs,
//! the deterministic text and token counts, and JSON/SSE encoding in the providers' key order.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::Value;

use crate::reply::ToolCallReply;

/// A Bedrock operation, from the request's method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `POST /model/{modelId}/invoke` (`stream: false`) or `.../invoke-with-response-stream`.
    Invoke { model: String, stream: bool },
    /// `POST /model/{modelId}/count-tokens`.
    CountTokens,
    /// `GET /foundation-models`.
    ListFoundationModels,
    /// Any other method or path under `/model/`: Bedrock's 404.
    Unknown,
}

/// What a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `GET /v1/models` (shape per dialect).
    ListModels,
    /// `GET /v1/models/{id}` (shape per dialect).
    GetModel(String),
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// No such route: the dialect's 404.
    NotFound,
    /// A Bedrock operation (answered by [`crate::bedrock::respond`]).
    Bedrock(Op),
}

/// Per-request inputs of the body generators.
pub(crate) struct Ctx<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Sequence number of the request (1-based, reset by `reset`): ids are `..._mock_<seq>`.
    pub seq: u64,
    pub body: &'a [u8],
    /// Effective number of text deltas (also the base of the output token count).
    pub deltas: usize,
    /// Answer a success with this tool call instead of the text.
    pub tool_call: Option<&'a ToolCallReply>,
}

/// A scripted tool call, ready to encode.
pub(crate) struct ToolCall<'a> {
    pub name: &'a str,
    pub arguments: &'a Value,
    /// The arguments' compact JSON (what OpenAI sends as a string).
    pub arguments_json: String,
    /// The text part before the call, if any (an empty one counts as none).
    pub text: Option<&'a str>,
    /// Process-wide unique number for the call's ids: clients pair tool results with calls by id,
    /// so ids must not repeat across requests, resets or mocks.
    pub id: u64,
}

static NEXT_TOOL_ID: AtomicU64 = AtomicU64::new(1);

impl<'a> ToolCall<'a> {
    pub(crate) fn new(call: &'a ToolCallReply) -> Self {
        Self {
            name: &call.name,
            arguments: &call.arguments,
            arguments_json: call.arguments.to_string(),
            text: call.text.as_deref().filter(|t| !t.is_empty()),
            id: NEXT_TOOL_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The arguments' JSON in `deltas` pieces, at least 2 (so clients must reassemble them).
    pub(crate) fn argument_pieces(&self, deltas: usize) -> Vec<&str> {
        split(&self.arguments_json, deltas.max(2))
    }
}

/// `s` cut at char boundaries into `n` pieces of near-equal length (fewer when `s` has fewer
/// chars, at least one); their concatenation is `s`.
pub(crate) fn split(s: &str, n: usize) -> Vec<&str> {
    let starts: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    let n = n.clamp(1, starts.len().max(1));
    let mut pieces = Vec::with_capacity(n);
    let mut from = 0;
    for k in 1..=n {
        let to = starts.get(k * starts.len() / n).copied().unwrap_or(s.len());
        pieces.push(s.get(from..to).unwrap_or_default());
        from = to;
    }
    pieces
}

/// What a generator produced.
pub(crate) enum Outcome {
    /// A JSON response (success or a validation error).
    Json { status: u16, body: Value },
    /// A streaming success: one SSE frame per event, and the frame to send instead of the rest
    /// on a mid-stream `ErrorEvent` failure (`error_frame(events_already_sent)`).
    Stream {
        frames: Vec<Bytes>,
        error_frame: fn(usize) -> Bytes,
    },
}

/// Input tokens of a request with `items` messages/input items: `10 + items`.
pub(crate) fn input_tokens(items: usize) -> u64 {
    10 + items as u64
}

/// Output tokens of a success with `deltas` text deltas: `2 * deltas`.
pub(crate) fn output_tokens(deltas: usize) -> u64 {
    2 * deltas as u64
}

/// The text pieces of the deltas: cycles over these five, whose concatenation is [`TEXT`].
pub(crate) const PIECES: [&str; 5] = ["Hello", " from", " aibridge", "-mock", "."];

/// The text of a blocking success.
pub(crate) const TEXT: &str = "Hello from aibridge-mock.";

/// Text of delta `i` (0-based).
pub(crate) fn piece(i: usize) -> &'static str {
    PIECES[i % PIECES.len()]
}

/// Fixed `created` timestamp (seconds) of generated objects.
pub(crate) const CREATED: u64 = 1_735_689_600;

/// Parses a request body as a JSON object, or gives the problem.
pub(crate) fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("Input should be a valid dictionary or object".to_owned()),
        Err(e) => Err(format!("Invalid JSON: {e}")),
    }
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn sse_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {}\n\n", ordered_json(data)))
}

/// Keys written first in every object, in this order, like the real providers do (`id`, then
/// `type`/`object`); the other keys follow alphabetically.
const FIRST_KEYS: [&str; 3] = ["id", "type", "object"];

/// Compact JSON with [`FIRST_KEYS`] first in each object (serde_json's maps are sorted).
pub(crate) fn ordered_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_ordered(value, &mut out);
    // serde_json writes UTF-8 only; the fallback is never taken.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// serde_json's compact encoding of a string or scalar (its escaping), appended to `out`.
fn write_json<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing a string or a scalar to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_ordered(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let first = FIRST_KEYS
                .iter()
                .filter_map(|k| map.get_key_value(*k))
                .map(|(k, v)| (k.as_str(), v));
            let rest = map
                .iter()
                .filter(|(k, _)| !FIRST_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v));
            for (i, (k, v)) in first.chain(rest).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(k, out);
                out.push(b':');
                write_ordered(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_ordered(v, out);
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

/// `data: <payload>\n\n`.
pub(crate) fn sse_data(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_json_puts_id_type_object_first() {
        let v = serde_json::json!({"b": 1, "type": "t", "a": [{"z": null, "id": "x"}], "id": "i", "object": "o"});
        assert_eq!(
            ordered_json(&v),
            r#"{"id":"i","type":"t","object":"o","a":[{"id":"x","z":null}],"b":1}"#
        );
        let s = serde_json::json!({"q": "a\"b\n"});
        assert_eq!(ordered_json(&s), s.to_string());
    }

    #[test]
    fn usage_rule() {
        assert_eq!(input_tokens(3), 13);
        assert_eq!(output_tokens(5), 10);
        let text: String = (0..5).map(piece).collect();
        assert_eq!(text, TEXT);
    }

    #[test]
    fn split_keeps_chars_whole() {
        assert_eq!(split("abcde", 2), ["ab", "cde"]);
        assert_eq!(split("abc", 5), ["a", "b", "c"]);
        assert_eq!(split("", 3), [""]);
        assert_eq!(split("héé", 2), ["h", "éé"]);
        assert_eq!(split("{}", 0), ["{}"]);
    }
}
