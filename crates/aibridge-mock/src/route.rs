//! The route table: which endpoint of which API dialect a request is for, and the per-dialect body
//! generators behind it.
//!
//! Adding a route = one row in [`ROUTES`] plus (for a new endpoint) a generator in the dialect's module.

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::{anthropic, openai};

/// The API dialect of a route: decides the success bodies, the error JSON and the SSE framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Anthropic,
    OpenAi,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Get,
    Post,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Messages,
    CountTokens,
    ListModels,
    GetModel,
    ChatCompletions,
    Responses,
}

struct RouteDef {
    method: M,
    /// Exact path, or a prefix ending in `/` followed by one `{id}` segment when `has_id`.
    path: &'static str,
    has_id: bool,
    /// `None`: the path is shared by several providers; the dialect comes from the request headers.
    dialect: Option<Dialect>,
    kind: Kind,
}

const ROUTES: &[RouteDef] = &[
    RouteDef {
        method: M::Post,
        path: "/v1/messages",
        has_id: false,
        dialect: Some(Dialect::Anthropic),
        kind: Kind::Messages,
    },
    RouteDef {
        method: M::Post,
        path: "/v1/messages/count_tokens",
        has_id: false,
        dialect: Some(Dialect::Anthropic),
        kind: Kind::CountTokens,
    },
    RouteDef {
        method: M::Get,
        path: "/v1/models",
        has_id: false,
        dialect: None,
        kind: Kind::ListModels,
    },
    RouteDef {
        method: M::Get,
        path: "/v1/models/",
        has_id: true,
        dialect: None,
        kind: Kind::GetModel,
    },
    RouteDef {
        method: M::Post,
        path: "/v1/chat/completions",
        has_id: false,
        dialect: Some(Dialect::OpenAi),
        kind: Kind::ChatCompletions,
    },
    RouteDef {
        method: M::Post,
        path: "/v1/responses",
        has_id: false,
        dialect: Some(Dialect::OpenAi),
        kind: Kind::Responses,
    },
];

/// A resolved request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub dialect: Dialect,
    pub endpoint: Endpoint,
}

/// Dialect of a request to a path several providers share (`/v1/models`, unknown paths):
/// OpenAI only when the request authenticates with `Authorization: Bearer` and carries neither
/// `anthropic-version` nor `x-api-key`; Anthropic otherwise.
fn shared_dialect(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        return Dialect::Anthropic;
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() > 7
                && v.get(..7)
                    .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        });
    if bearer {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    }
}

/// Resolves a request against [`ROUTES`].
pub(crate) fn resolve(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    let m = if method == Method::GET {
        Some(M::Get)
    } else if method == Method::POST {
        Some(M::Post)
    } else {
        None
    };
    for def in ROUTES {
        if Some(def.method) != m {
            continue;
        }
        let id = if def.has_id {
            match path.strip_prefix(def.path) {
                Some(rest) if !rest.is_empty() && !rest.contains('/') => Some(rest.to_owned()),
                _ => continue,
            }
        } else if path == def.path {
            None
        } else {
            continue;
        };
        let dialect = def.dialect.unwrap_or_else(|| shared_dialect(headers));
        let endpoint = match def.kind {
            Kind::Messages => Endpoint::Messages,
            Kind::CountTokens => Endpoint::CountTokens,
            Kind::ListModels => Endpoint::ListModels,
            Kind::GetModel => Endpoint::GetModel(id.unwrap_or_default()),
            Kind::ChatCompletions => Endpoint::ChatCompletions,
            Kind::Responses => Endpoint::Responses,
        };
        return Route { dialect, endpoint };
    }
    // Unknown path: OpenAI-only path families get OpenAI's 404, everything else by headers.
    let dialect = if path.starts_with("/v1/chat/")
        || path.starts_with("/v1/responses/")
        || path.starts_with("/v1/completions")
        || path.starts_with("/v1/embeddings")
    {
        Dialect::OpenAi
    } else {
        shared_dialect(headers)
    };
    Route {
        dialect,
        endpoint: Endpoint::NotFound,
    }
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

impl Dialect {
    /// The provider's error JSON for `status`, with `message` or a default one.
    pub(crate) fn error_body(self, status: u16, message: Option<&str>) -> Value {
        match self {
            Dialect::Anthropic => anthropic::error_body(status, message),
            Dialect::OpenAi => openai::error_body(status, message),
        }
    }

    /// Name of the response header carrying the request id.
    pub(crate) fn request_id_header(self) -> &'static str {
        match self {
            Dialect::Anthropic => "request-id",
            Dialect::OpenAi => "x-request-id",
        }
    }

    /// Generates the success (or validation error) for `endpoint`.
    pub(crate) fn respond(self, endpoint: &Endpoint, ctx: &Ctx<'_>) -> Outcome {
        match self {
            Dialect::Anthropic => anthropic::respond(endpoint, ctx),
            Dialect::OpenAi => openai::respond(endpoint, ctx),
        }
    }
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
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn resolves_the_route_table() {
        let none = HeaderMap::new();
        let r = resolve(&Method::POST, "/v1/messages", &none);
        assert_eq!(
            (r.dialect, r.endpoint),
            (Dialect::Anthropic, Endpoint::Messages)
        );
        let r = resolve(&Method::POST, "/v1/messages/count_tokens", &none);
        assert_eq!(r.endpoint, Endpoint::CountTokens);
        let r = resolve(&Method::GET, "/v1/models/claude-x", &none);
        assert_eq!(r.endpoint, Endpoint::GetModel("claude-x".into()));
        let r = resolve(&Method::GET, "/v1/models/a/b", &none);
        assert_eq!(r.endpoint, Endpoint::NotFound);
        let r = resolve(&Method::GET, "/v1/messages", &none);
        assert_eq!(
            (r.dialect, r.endpoint),
            (Dialect::Anthropic, Endpoint::NotFound)
        );
        let r = resolve(
            &Method::POST,
            "/v1/chat/completions",
            &headers(&[("x-api-key", "k")]),
        );
        assert_eq!(
            (r.dialect, r.endpoint),
            (Dialect::OpenAi, Endpoint::ChatCompletions)
        );
        let r = resolve(&Method::POST, "/v1/responses", &none);
        assert_eq!(
            (r.dialect, r.endpoint),
            (Dialect::OpenAi, Endpoint::Responses)
        );
    }

    #[test]
    fn shared_paths_pick_the_dialect_from_headers() {
        let list = |h: &HeaderMap| resolve(&Method::GET, "/v1/models", h).dialect;
        assert_eq!(list(&HeaderMap::new()), Dialect::Anthropic);
        assert_eq!(list(&headers(&[("x-api-key", "k")])), Dialect::Anthropic);
        assert_eq!(
            list(&headers(&[("authorization", "Bearer k")])),
            Dialect::OpenAi
        );
        assert_eq!(
            list(&headers(&[
                ("authorization", "Bearer k"),
                ("anthropic-version", "2023-06-01")
            ])),
            Dialect::Anthropic
        );
        assert_eq!(
            list(&headers(&[("authorization", "Basic k")])),
            Dialect::Anthropic
        );
    }

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
}
