//! What an upstream response means for the key that got it (spec §3.5, PRODUCT.md item 2).

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::clock::Timestamp;
use crate::cooldown::{CooldownPolicy, CooldownSource};

/// Why a key was taken out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableReason {
    /// Upstream answered 401: the key is unknown or revoked.
    Unauthorized,
    /// Upstream answered 403: the key lacks permission.
    Forbidden,
}

impl DisableReason {
    /// Stable lowercase name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
        }
    }
}

/// What an upstream status means for the key that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not the key's fault (2xx, 400, 404, 5xx, 529, ...): no failover, key untouched.
    NotKeySpecific,
    /// 429: cool the key down for `cooldown`, try the next key.
    RateLimited {
        /// How long the key rests (already capped by the policy).
        cooldown: Duration,
        /// Which hint decided the cooldown.
        source: CooldownSource,
    },
    /// 401/403: take the key out of rotation until a probe or an operator re-enables it.
    Rejected {
        /// Which status rejected the key.
        reason: DisableReason,
    },
}

impl Verdict {
    /// True when the caller should retry the request with the next key.
    pub fn is_failover(&self) -> bool {
        !matches!(self, Self::NotKeySpecific)
    }
}

/// Maps an upstream status (and, for 429, its hint headers) to a [`Verdict`]. 5xx and 529 are
/// deliberately not key failures: they belong to the circuit breaker.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    now: Timestamp,
    policy: &CooldownPolicy,
) -> Verdict {
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let (cooldown, source) = policy.cooldown_for(headers, now);
            Verdict::RateLimited { cooldown, source }
        }
        StatusCode::UNAUTHORIZED => Verdict::Rejected {
            reason: DisableReason::Unauthorized,
        },
        StatusCode::FORBIDDEN => Verdict::Rejected {
            reason: DisableReason::Forbidden,
        },
        _ => Verdict::NotKeySpecific,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_unix_micros(1_700_000_000_000_000)
    }

    #[test]
    fn only_429_401_403_are_key_specific() {
        let policy = CooldownPolicy::default();
        let headers = HeaderMap::new();
        for code in [200, 201, 400, 404, 408, 409, 500, 502, 503, 529] {
            let status = StatusCode::from_u16(code).unwrap();
            let verdict = classify(status, &headers, now(), &policy);
            assert_eq!(verdict, Verdict::NotKeySpecific, "status {code}");
            assert!(!verdict.is_failover(), "status {code}");
        }
        let rate_limited = classify(StatusCode::TOO_MANY_REQUESTS, &headers, now(), &policy);
        assert_eq!(
            rate_limited,
            Verdict::RateLimited {
                cooldown: Duration::from_secs(60),
                source: CooldownSource::Default
            }
        );
        assert!(rate_limited.is_failover());
        let unauthorized = classify(StatusCode::UNAUTHORIZED, &headers, now(), &policy);
        assert_eq!(
            unauthorized,
            Verdict::Rejected {
                reason: DisableReason::Unauthorized
            }
        );
        assert!(unauthorized.is_failover());
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &headers, now(), &policy),
            Verdict::Rejected {
                reason: DisableReason::Forbidden
            }
        );
    }

    #[test]
    fn rejection_ignores_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "5".parse().unwrap());
        assert_eq!(
            classify(
                StatusCode::UNAUTHORIZED,
                &headers,
                now(),
                &CooldownPolicy::default()
            ),
            Verdict::Rejected {
                reason: DisableReason::Unauthorized
            }
        );
    }
}
