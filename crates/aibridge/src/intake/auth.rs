//! Who is calling and who pays. The contract's rule: a gateway token in the client's normal auth
//! header (`x-api-key` / `Authorization: Bearer`) means the central key pool pays; a gateway
//! token in `X-AIBridge-Token` means BYOK: the client's own provider credential is forwarded.

use std::sync::Arc;

use aibridge_store::{Store, StoreError};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::AuthMode;
use crate::error::GatewayError;

/// Header that carries the gateway token on BYOK requests. Never forwarded upstream.
pub const GATEWAY_TOKEN_HEADER: &str = "x-aibridge-token";

/// The user every request is attributed to when `AIBRIDGE_AUTH=none`.
pub const LOCAL_USER: &str = "local";

/// Prefix of every gateway token, so that leaked tokens are recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "abk_";

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
    pub admin: bool,
    pub payer: Payer,
}

/// A user as a valid gateway token identifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub admin: bool,
}

/// Resolves gateway tokens to users.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    async fn identify(&self, token: &str) -> Result<Option<Identity>, StoreError>;
}

/// Tokens as issued by `aibridge token create`: looked up by the hash of the secret on every
/// request, so a revoked token stops working at once, also across processes.
#[derive(Debug)]
pub struct StoredTokens(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl TokenVerifier for StoredTokens {
    async fn identify(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let found = self
            .0
            .token_by_hash(&token_hash(token), crate::time::now_millis())
            .await?;
        Ok(found.map(|t| Identity {
            user: t.user,
            admin: t.admin,
        }))
    }
}

/// What is stored of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token secret: the prefix and 256 bits from the operating system's generator.
pub fn new_token_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
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
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        byok_only: bool,
    ) -> Result<Caller, GatewayError> {
        // The header's presence decides who pays, whatever its value (also in `none` mode).
        let byok_header = headers.get(GATEWAY_TOKEN_HEADER);
        let payer = if byok_header.is_some() || byok_only {
            Payer::Byok
        } else {
            Payer::Pool
        };
        let identity = match self.mode {
            AuthMode::None => Identity {
                user: LOCAL_USER.to_string(),
                admin: true,
            },
            AuthMode::Tokens => {
                let token = match payer {
                    Payer::Byok => byok_header.map(token_text).transpose()?,
                    Payer::Pool => normal_auth_token(headers)?,
                };
                self.verify(token).await?
            }
        };
        Ok(Caller {
            user: identity.user,
            admin: identity.admin,
            payer,
        })
    }

    /// For the operator API: a token in the normal auth header that belongs to an admin.
    pub async fn identify_admin(&self, headers: &HeaderMap) -> Result<Identity, GatewayError> {
        let identity = match self.mode {
            AuthMode::None => {
                return Ok(Identity {
                    user: LOCAL_USER.to_string(),
                    admin: true,
                });
            }
            AuthMode::Tokens => self.verify(normal_auth_token(headers)?).await?,
        };
        if identity.admin {
            Ok(identity)
        } else {
            Err(GatewayError::NotAdmin)
        }
    }

    async fn verify(&self, token: Option<&str>) -> Result<Identity, GatewayError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(GatewayError::MissingToken)?;
        self.tokens
            .identify(token)
            .await
            .map_err(GatewayError::TokenStore)?
            .ok_or(GatewayError::InvalidToken)
    }
}

/// The token in the client's normal auth header: `x-api-key` unless it is empty, else
/// `Authorization: Bearer`.
fn normal_auth_token(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    match headers.get("x-api-key").map(token_text).transpose()? {
        Some(key) if !key.is_empty() => Ok(Some(key)),
        _ => Ok(bearer(headers)),
    }
}

/// A token header's text; one that is not visible ASCII cannot be a gateway token.
fn token_text(value: &HeaderValue) -> Result<&str, GatewayError> {
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| GatewayError::InvalidToken)
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
    struct TwoTokens;

    #[async_trait::async_trait]
    impl TokenVerifier for TwoTokens {
        async fn identify(&self, token: &str) -> Result<Option<Identity>, StoreError> {
            Ok(match token {
                "abk_good" => Some(Identity {
                    user: "alice".into(),
                    admin: false,
                }),
                "abk_admin" => Some(Identity {
                    user: "root".into(),
                    admin: true,
                }),
                _ => None,
            })
        }
    }

    use crate::test_support::headers;

    fn auth(mode: AuthMode) -> Authenticator {
        Authenticator::new(mode, Arc::new(TwoTokens))
    }

    #[tokio::test]
    async fn none_mode_is_local_and_the_header_decides_who_pays() {
        let auth = auth(AuthMode::None);
        let pool = auth
            .identify(&headers(&[("x-api-key", "anything")]), false)
            .await
            .unwrap();
        assert_eq!((pool.user.as_str(), pool.payer), ("local", Payer::Pool));
        let byok = auth
            .identify(&headers(&[("x-aibridge-token", "whatever")]), false)
            .await
            .unwrap();
        assert_eq!(byok.payer, Payer::Byok);
    }

    #[tokio::test]
    async fn tokens_mode_reads_the_token_where_it_travels() {
        let auth = auth(AuthMode::Tokens);
        let via_key = auth
            .identify(&headers(&[("x-api-key", "abk_good")]), false)
            .await
            .unwrap();
        assert_eq!(
            via_key,
            Caller {
                user: "alice".into(),
                admin: false,
                payer: Payer::Pool
            }
        );
        let via_bearer = auth
            .identify(&headers(&[("authorization", "Bearer abk_good")]), false)
            .await
            .unwrap();
        assert_eq!(via_bearer.payer, Payer::Pool);
        let byok = auth
            .identify(
                &headers(&[("x-aibridge-token", "abk_good"), ("x-api-key", "sk-user")]),
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            byok,
            Caller {
                user: "alice".into(),
                admin: false,
                payer: Payer::Byok
            }
        );
    }

    #[tokio::test]
    async fn tokens_mode_refuses_missing_and_unknown_tokens() {
        let auth = auth(AuthMode::Tokens);
        assert!(matches!(
            auth.identify(&headers(&[]), false).await,
            Err(GatewayError::MissingToken)
        ));
        assert!(matches!(
            auth.identify(&headers(&[("x-api-key", "abk_bad")]), false)
                .await,
            Err(GatewayError::InvalidToken)
        ));
        assert!(matches!(
            auth.identify(&headers(&[("x-aibridge-token", "")]), false)
                .await,
            Err(GatewayError::MissingToken)
        ));
    }

    /// Review item 13.
    #[tokio::test]
    async fn an_empty_api_key_header_leaves_the_bearer_token_and_odd_bytes_still_mean_byok() {
        let auth = auth(AuthMode::Tokens);
        let caller = auth
            .identify(
                &headers(&[("x-api-key", ""), ("authorization", "Bearer abk_good")]),
                false,
            )
            .await
            .unwrap();
        assert_eq!((caller.user.as_str(), caller.payer), ("alice", Payer::Pool));

        let mut odd = HeaderMap::new();
        odd.insert(
            GATEWAY_TOKEN_HEADER,
            HeaderValue::from_bytes(b"abk_\xff").unwrap(),
        );
        assert!(matches!(
            auth.identify(&odd, false).await,
            Err(GatewayError::InvalidToken)
        ));
        let none = self::auth(AuthMode::None);
        assert_eq!(
            none.identify(&odd, false).await.unwrap().payer,
            Payer::Byok,
            "in none mode the header's presence selects BYOK"
        );
    }

    #[tokio::test]
    async fn byok_only_providers_take_the_token_from_the_gateway_header_only() {
        let auth = auth(AuthMode::Tokens);
        let copilot = headers(&[
            ("x-aibridge-token", "abk_good"),
            ("authorization", "Bearer ghu_x"),
        ]);
        let caller = auth.identify(&copilot, true).await.unwrap();
        assert_eq!(
            caller,
            Caller {
                user: "alice".into(),
                admin: false,
                payer: Payer::Byok
            }
        );
        assert!(matches!(
            auth.identify(&headers(&[("authorization", "Bearer abk_good")]), true)
                .await,
            Err(GatewayError::MissingToken)
        ));
    }

    #[tokio::test]
    async fn only_admins_reach_the_operator_api() {
        let auth = auth(AuthMode::Tokens);
        let admin = auth
            .identify_admin(&headers(&[("authorization", "Bearer abk_admin")]))
            .await;
        assert_eq!(admin.unwrap().user, "root");
        assert!(matches!(
            auth.identify_admin(&headers(&[("authorization", "Bearer abk_good")]))
                .await,
            Err(GatewayError::NotAdmin)
        ));
        assert!(matches!(
            auth.identify_admin(&headers(&[])).await,
            Err(GatewayError::MissingToken)
        ));
        assert!(auth_none_is_admin().await);
    }

    async fn auth_none_is_admin() -> bool {
        auth(AuthMode::None)
            .identify_admin(&HeaderMap::new())
            .await
            .is_ok_and(|i| i.admin)
    }

    #[test]
    fn token_secrets_are_prefixed_random_and_only_their_hash_is_kept() {
        let a = new_token_secret().unwrap();
        let b = new_token_secret().unwrap();
        assert!(a.starts_with("abk_") && a.len() == 4 + 64, "{a}");
        assert_ne!(a, b);
        let hash = token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[4..]));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
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
