//! The route table: which endpoint of which API dialect a request is for, and the per-dialect body
//! generators behind it.
//!
//! Adding a route = one row in [`ROUTES`] plus (for a new endpoint) a generator in the dialect's module.

use http::{HeaderMap, Method};
use serde_json::Value;

use crate::body::{Ctx, Endpoint, Outcome};
use crate::{anthropic, bedrock, openai};

/// The API dialect of a route: decides the success bodies, the error JSON and the SSE framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Anthropic,
    OpenAi,
    /// Amazon Bedrock's paths (`/model/{id}/...`, `/foundation-models`), answered by
    /// [`crate::bedrock`] (authenticated, event-stream framing).
    Bedrock,
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

/// Resolves a request: Bedrock's paths first (they collide with no other), then [`ROUTES`].
pub(crate) fn resolve(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    if let Some(op) = bedrock::resolve(method, path) {
        return Route {
            dialect: Dialect::Bedrock,
            endpoint: Endpoint::Bedrock(op),
        };
    }
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

impl Dialect {
    /// The provider's error JSON for `status`, with `message` or a default one.
    pub(crate) fn error_body(self, status: u16, message: Option<&str>) -> Value {
        match self {
            Dialect::Anthropic => anthropic::error_body(status, message),
            Dialect::OpenAi => openai::error_body(status, message),
            Dialect::Bedrock => bedrock::error_body(status, message),
        }
    }

    /// Name of the response header carrying the request id.
    pub(crate) fn request_id_header(self) -> &'static str {
        match self {
            Dialect::Anthropic => "request-id",
            Dialect::OpenAi => "x-request-id",
            Dialect::Bedrock => "x-amzn-requestid",
        }
    }

    /// The request id of request `seq`.
    pub(crate) fn request_id(self, seq: u64) -> String {
        match self {
            Dialect::Anthropic | Dialect::OpenAi => format!("req_mock_{seq}"),
            Dialect::Bedrock => bedrock::request_id(seq),
        }
    }

    /// Generates the success (or validation error) for `endpoint`. Bedrock's operations are
    /// answered by [`bedrock::respond`] instead (their responses need more than a JSON or SSE
    /// body); here they get Bedrock's 404.
    pub(crate) fn respond(self, endpoint: &Endpoint, ctx: &Ctx<'_>) -> Outcome {
        match self {
            Dialect::Anthropic => anthropic::respond(endpoint, ctx),
            Dialect::OpenAi => openai::respond(endpoint, ctx),
            Dialect::Bedrock => Outcome::Json {
                status: 404,
                body: bedrock::error_body(404, None),
            },
        }
    }
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
        let r = resolve(&Method::POST, "/model/m%3A0/count-tokens", &none);
        assert_eq!(
            (r.dialect, r.endpoint),
            (
                Dialect::Bedrock,
                Endpoint::Bedrock(crate::body::Op::CountTokens)
            )
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
}
