//! Which client headers travel upstream (spec §8.4).

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::auth::{Caller, GATEWAY_TOKEN_HEADER, Payer};

/// Hop-by-hop headers (RFC 9110 §7.6.1), with `keep-alive` (see `is_hop_by_hop`): they describe
/// one connection and never travel past a proxy, in either direction.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive"
}

/// Request headers the HTTP client sets itself, or that belong to the gateway.
const NOT_FORWARDED: &[HeaderName] = &[
    header::HOST,
    header::ACCEPT_ENCODING,
    header::CONTENT_LENGTH,
    // The gateway's own cookies are nobody else's business.
    header::COOKIE,
];

/// Headers that scope the credential they travel with: never sent with a pool key, where a
/// client's organization would make the provider reject the key (and the gateway disable it).
const CREDENTIAL_SCOPES: &[&str] = &["openai-organization", "openai-project"];

/// Headers that tell the upstream who the request is for: only the gateway sets them, never a
/// client.
const ACTOR_PREFIX: &str = "x-ai-bridge-actor";

/// The headers an upstream call carries: [`forwardable`], and with `actor_headers` on a
/// pool-paid request, who it is for (spec §8.5): `X-AI-Bridge-Actor-ID` and the user name as
/// metadata, so the provider's abuse and usage views can tell the gateway's users apart.
pub fn upstream_headers(client: &HeaderMap, caller: &Caller, actor_headers: bool) -> HeaderMap {
    let mut out = forwardable(client, caller.payer);
    if actor_headers
        && caller.payer == Payer::Pool
        && let Ok(user) = HeaderValue::from_str(&caller.user)
    {
        out.insert("x-ai-bridge-actor-id", user.clone());
        out.insert("x-ai-bridge-actor-metadata-username", user);
    }
    out
}

/// Headers some servers and proxies take as a different URL or method than the one requested:
/// with a pool key attached they would reach what the passthrough allow-list keeps out.
const REWRITING: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The client's headers minus hop-by-hop, transport and gateway headers; on pool requests the
/// client's auth headers (which hold the gateway token) are dropped too. Everything else —
/// `anthropic-version`, `anthropic-beta`, `user-agent`, `content-type`, … — is kept.
pub fn forwardable(client: &HeaderMap, payer: Payer) -> HeaderMap {
    let connection_listed: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        let drop = is_hop_by_hop(name)
            || NOT_FORWARDED.contains(name)
            || REWRITING.contains(&name.as_str())
            || name.as_str().starts_with(ACTOR_PREFIX)
            || name.as_str() == GATEWAY_TOKEN_HEADER
            || connection_listed
                .iter()
                .any(|listed| listed == name.as_str())
            || (payer == Payer::Pool
                && (name == header::AUTHORIZATION
                    || name.as_str() == "x-api-key"
                    || CREDENTIAL_SCOPES.contains(&name.as_str())));
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Appends the client's address to the `X-Forwarded-For` chain it brought, if any.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: Option<SocketAddr>) {
    let Some(client) = client else { return };
    let ip = client.ip().to_string();
    let chain = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .chain(std::iter::once(ip.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "gateway.local"),
            ("connection", "keep-alive, x-custom-hop"),
            ("keep-alive", "timeout=5"),
            ("x-custom-hop", "1"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("x-api-key", "abk_token"),
            ("authorization", "Bearer abk_token"),
            ("x-aibridge-token", "abk_token"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "tools-2024-04-04"),
            ("user-agent", "claude-cli/1.0"),
            ("content-type", "application/json"),
            ("cookie", "session=1"),
            ("x-original-url", "/v1/files"),
            ("x-http-method-override", "DELETE"),
            ("openai-organization", "org-client"),
            ("x-ai-bridge-actor-id", "spoofed"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn pool_requests_drop_the_gateway_token_everywhere() {
        let out = forwardable(&client_headers(), Payer::Pool);
        assert_eq!(
            names(&out),
            [
                "anthropic-beta",
                "anthropic-version",
                "content-type",
                "user-agent"
            ]
        );
    }

    #[test]
    fn byok_requests_keep_the_users_credential_but_not_the_gateway_token() {
        let out = forwardable(&client_headers(), Payer::Byok);
        assert_eq!(
            out["openai-organization"], "org-client",
            "BYOK keeps its scope"
        );
        assert_eq!(out["x-api-key"], "abk_token");
        assert_eq!(out["authorization"], "Bearer abk_token");
        assert!(out.get("x-aibridge-token").is_none());
        assert!(out.get("x-custom-hop").is_none());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, Some("127.0.0.9:5000".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        append_forwarded_for(&mut h, Some("[::1]:1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, ::1");
    }

    #[test]
    fn actor_headers_come_from_the_gateway_only() {
        let pool = Caller {
            user: "alice".into(),
            admin: false,
            payer: Payer::Pool,
        };
        let out = upstream_headers(&client_headers(), &pool, true);
        assert_eq!(out["x-ai-bridge-actor-id"], "alice");
        assert_eq!(out["x-ai-bridge-actor-metadata-username"], "alice");
        let off = upstream_headers(&client_headers(), &pool, false);
        assert!(
            off.get("x-ai-bridge-actor-id").is_none(),
            "off: the client's is dropped too"
        );
        let byok = Caller {
            payer: Payer::Byok,
            ..pool
        };
        let out = upstream_headers(&client_headers(), &byok, true);
        assert!(
            out.get("x-ai-bridge-actor-id").is_none(),
            "only pool-paid requests"
        );
    }
}
