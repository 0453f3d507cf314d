//! Who is calling and who pays. The contract's rule: a gateway token in the client's normal auth
//! header (`x-api-key` / `Authorization: Bearer`) means the central key pool pays; a gateway
//! token in `X-AIBridge-Token` means BYOK: the client's own provider credential is forwarded.

use std::sync::Arc;

use http::HeaderMap;

use crate::config::AuthMode;
use crate::error::GatewayError;

/// Header that carries the gateway token on BYOK requests. Never forwarded upstream.
pub const GATEWAY_TOKEN_HEADER: &str = "x-aibridge-token";

/// The user every request is attributed to when `AIBRIDGE_AUTH=none`.
pub const LOCAL_USER: &str = "local";

/// Whose provider credential an upstream call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payer {
    /// A key from the provider's pool, with failover.
    Pool,
    /// The client's own credential, forwarded as is; exactly one attempt.
    Byok,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub payer: Payer,
}

/// Resolves gateway tokens to users.
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    fn user_for(&self, token: &str) -> Option<String>;
}

/// The verifier while no token has been issued: every token is unknown, so `tokens` mode
/// refuses every request with 401 rather than letting anyone through.
#[derive(Debug, Default)]
pub struct NoTokensIssued;

impl TokenVerifier for NoTokensIssued {
    fn user_for(&self, _token: &str) -> Option<String> {
        None
    }
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    mode: AuthMode,
    tokens: Arc<dyn TokenVerifier>,
}

impl Authenticator {
    pub fn new(mode: AuthMode, tokens: Arc<dyn TokenVerifier>) -> Self {
        Self { mode, tokens }
    }

    /// `byok_only` is for providers without a pool (Copilot): the client's auth header is its
    /// provider credential, so the gateway token can only travel in `X-AIBridge-Token`.
    pub fn identify(&self, headers: &HeaderMap, byok_only: bool) -> Result<Caller, GatewayError> {
        let byok_token = header_str(headers, GATEWAY_TOKEN_HEADER);
        let payer = if byok_token.is_some() || byok_only {
            Payer::Byok
        } else {
            Payer::Pool
        };
        let user = match self.mode {
            AuthMode::None => LOCAL_USER.to_string(),
            AuthMode::Tokens => {
                let token = match payer {
                    Payer::Byok => byok_token,
                    Payer::Pool => header_str(headers, "x-api-key").or_else(|| bearer(headers)),
                }
                .filter(|t| !t.is_empty())
                .ok_or(GatewayError::MissingToken)?;
                self.tokens
                    .user_for(token)
                    .ok_or(GatewayError::InvalidToken)?
            }
        };
        Ok(Caller { user, payer })
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[derive(Debug)]
    struct OneToken;
    impl TokenVerifier for OneToken {
        fn user_for(&self, token: &str) -> Option<String> {
            (token == "abk_good").then(|| "alice".to_string())
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    impl Authenticator {
        fn identify_pool(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
            self.identify(headers, false)
        }
    }

    #[test]
    fn byok_only_providers_take_the_token_from_the_gateway_header_only() {
        let auth = Authenticator::new(AuthMode::Tokens, Arc::new(OneToken));
        let copilot = headers(&[
            ("x-aibridge-token", "abk_good"),
            ("authorization", "Bearer ghu_x"),
        ]);
        let caller = auth.identify(&copilot, true).unwrap();
        assert_eq!(
            caller,
            Caller {
                user: "alice".into(),
                payer: Payer::Byok
            }
        );
        assert!(matches!(
            auth.identify(&headers(&[("authorization", "Bearer abk_good")]), true),
            Err(GatewayError::MissingToken)
        ));
        let open = Authenticator::new(AuthMode::None, Arc::new(NoTokensIssued));
        assert_eq!(
            open.identify(&headers(&[]), true).unwrap().payer,
            Payer::Byok
        );
    }

    #[test]
    fn none_mode_is_local_and_header_decides_who_pays() {
        let auth = Authenticator::new(AuthMode::None, Arc::new(NoTokensIssued));
        let pool = auth
            .identify_pool(&headers(&[("x-api-key", "anything")]))
            .unwrap();
        assert_eq!(
            pool,
            Caller {
                user: "local".into(),
                payer: Payer::Pool
            }
        );
        let byok = auth
            .identify_pool(&headers(&[("x-aibridge-token", "whatever")]))
            .unwrap();
        assert_eq!(byok.payer, Payer::Byok);
    }

    #[test]
    fn tokens_mode_reads_the_token_where_it_travels() {
        let auth = Authenticator::new(AuthMode::Tokens, Arc::new(OneToken));
        let via_key = auth
            .identify_pool(&headers(&[("x-api-key", "abk_good")]))
            .unwrap();
        assert_eq!(
            via_key,
            Caller {
                user: "alice".into(),
                payer: Payer::Pool
            }
        );
        let via_bearer = auth
            .identify_pool(&headers(&[("authorization", "Bearer abk_good")]))
            .unwrap();
        assert_eq!(via_bearer.payer, Payer::Pool);
        let byok = auth
            .identify_pool(&headers(&[
                ("x-aibridge-token", "abk_good"),
                ("x-api-key", "sk-user"),
            ]))
            .unwrap();
        assert_eq!(
            byok,
            Caller {
                user: "alice".into(),
                payer: Payer::Byok
            }
        );
    }

    #[test]
    fn tokens_mode_refuses_missing_and_unknown_tokens() {
        let auth = Authenticator::new(AuthMode::Tokens, Arc::new(OneToken));
        assert!(matches!(
            auth.identify_pool(&headers(&[])),
            Err(GatewayError::MissingToken)
        ));
        assert!(matches!(
            auth.identify_pool(&headers(&[("x-api-key", "abk_bad")])),
            Err(GatewayError::InvalidToken)
        ));
        // BYOK with the provider key but no gateway token in X-AIBridge-Token's place.
        assert!(matches!(
            auth.identify_pool(&headers(&[("x-aibridge-token", "")])),
            Err(GatewayError::MissingToken)
        ));
        let nobody = Authenticator::new(AuthMode::Tokens, Arc::new(NoTokensIssued));
        assert!(matches!(
            nobody.identify_pool(&headers(&[("x-api-key", "abk_good")])),
            Err(GatewayError::InvalidToken)
        ));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  tok ")])),
            Some("tok")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), None);
    }
}
