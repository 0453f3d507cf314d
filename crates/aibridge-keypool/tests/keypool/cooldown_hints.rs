//! Cooldown hints (spec §3.6 ParseRetryAfter, extended by PRODUCT.md item 1) and the marking rules
//! for upstream statuses (spec §3.5 MarkKeyOnStatus, with 401/403 disabling per PRODUCT.md item 2).

use std::time::Duration;

use crate::common::{fixture, fixture_with, headers, secs, start};
use aibridge_keypool::{
    CooldownPolicy, CooldownSource, DisableReason, KeyState, ProbePolicy, Verdict, cooldown_hint,
};

type Hint = Option<(Duration, CooldownSource)>;
type HeaderPairs = &'static [(&'static str, &'static str)];

fn hint(pairs: &[(&str, &str)]) -> Hint {
    cooldown_hint(&headers(pairs), start())
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A time `offset_secs` from the test start, as an RFC 3339 UTC string.
fn rfc3339_at(offset_secs: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(crate::common::START_SECS as i64 + offset_secs)
            .unwrap();
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A time `offset_secs` from the test start, as an HTTP-date.
fn http_date_at(offset_secs: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + Duration::from_secs(
            u64::try_from(crate::common::START_SECS as i64 + offset_secs).unwrap(),
        );
    httpdate::fmt_http_date(at)
}

// ---- ParseRetryAfter table (headers_test.go) ----

#[test]
fn parse_retry_after_table() {
    use CooldownSource::{RetryAfter, RetryAfterMs};
    // The reference's "nil response" row has no counterpart: there is always a header map.
    let cases: &[(&str, HeaderPairs, Hint)] = &[
        ("no headers", &[], None),
        (
            "ms 2500",
            &[("retry-after-ms", "2500")],
            Some((millis(2500), RetryAfterMs)),
        ),
        (
            "ms padded",
            &[("retry-after-ms", " 1500 ")],
            Some((millis(1500), RetryAfterMs)),
        ),
        ("ms negative", &[("retry-after-ms", "-100")], None),
        (
            "seconds 60",
            &[("Retry-After", "60")],
            Some((secs(60), RetryAfter)),
        ),
        (
            "seconds padded",
            &[("Retry-After", " 30 ")],
            Some((secs(30), RetryAfter)),
        ),
        ("seconds zero", &[("Retry-After", "0")], None),
        ("seconds negative", &[("Retry-After", "-5")], None),
        (
            "ms wins over seconds",
            &[("retry-after-ms", "1500"), ("Retry-After", "30")],
            Some((millis(1500), RetryAfterMs)),
        ),
        (
            "invalid ms falls back",
            &[("retry-after-ms", "invalid"), ("Retry-After", "10")],
            Some((secs(10), RetryAfter)),
        ),
        (
            "zero ms falls back",
            &[("retry-after-ms", "0"), ("Retry-After", "5")],
            Some((secs(5), RetryAfter)),
        ),
        (
            "both zero",
            &[("retry-after-ms", "0"), ("Retry-After", "0")],
            None,
        ),
        // Deviation from the reference (PRODUCT.md item 1): fractional seconds are accepted;
        // the reference rejected "1.5" and fell back to the 60 s default.
        (
            "fractional seconds",
            &[("Retry-After", "1.5")],
            Some((millis(1500), RetryAfter)),
        ),
    ];
    for (name, pairs, expected) in cases {
        assert_eq!(hint(pairs), *expected, "{name}");
    }
}

#[test]
fn header_names_are_case_insensitive() {
    assert_eq!(
        hint(&[("RETRY-AFTER-MS", "250")]),
        Some((millis(250), CooldownSource::RetryAfterMs))
    );
    assert_eq!(
        hint(&[("retry-AFTER", "7")]),
        Some((secs(7), CooldownSource::RetryAfter))
    );
}

#[test]
fn non_numbers_are_not_usable() {
    for value in ["inf", "NaN", "abc", ""] {
        assert_eq!(hint(&[("retry-after-ms", value)]), None, "ms {value:?}");
        assert_eq!(hint(&[("Retry-After", value)]), None, "seconds {value:?}");
    }
}

#[test]
fn fractional_values_keep_sub_second_precision() {
    assert_eq!(
        hint(&[("Retry-After", "0.25")]),
        Some((millis(250), CooldownSource::RetryAfter))
    );
    assert_eq!(
        hint(&[("retry-after-ms", "0.5")]),
        Some((Duration::from_micros(500), CooldownSource::RetryAfterMs))
    );
}

// ---- Retry-After as an HTTP-date ----

#[test]
fn http_date_in_the_future_is_relative_to_now() {
    assert_eq!(
        hint(&[("Retry-After", &http_date_at(120))]),
        Some((secs(120), CooldownSource::RetryAfter))
    );
}

#[test]
fn http_date_in_the_past_or_now_is_not_usable() {
    assert_eq!(hint(&[("Retry-After", &http_date_at(-30))]), None);
    assert_eq!(hint(&[("Retry-After", &http_date_at(0))]), None);
    let (cooldown, source) = CooldownPolicy::default()
        .cooldown_for(&headers(&[("Retry-After", &http_date_at(-30))]), start());
    assert_eq!((cooldown, source), (secs(60), CooldownSource::Default));
}

// ---- Anthropic reset headers ----

#[test]
fn anthropic_reset_of_the_exhausted_limit() {
    let requests_reset = rfc3339_at(30);
    let tokens_reset = rfc3339_at(50);
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &requests_reset),
            ("anthropic-ratelimit-tokens-remaining", "12000"),
            ("anthropic-ratelimit-tokens-reset", &tokens_reset),
        ]),
        Some((secs(30), CooldownSource::RateLimitReset)),
        "the non-exhausted tokens limit is ignored"
    );
}

#[test]
fn anthropic_longest_reset_among_exhausted_limits() {
    let input_reset = rfc3339_at(45);
    let output_reset = rfc3339_at(20);
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-reset", &input_reset),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            ("anthropic-ratelimit-output-tokens-reset", &output_reset),
        ]),
        Some((secs(45), CooldownSource::RateLimitReset))
    );
}

#[test]
fn anthropic_reset_with_offset_and_fraction() {
    // 22:13:21.5Z written in +01:00.
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2023-11-14T23:13:21.5+01:00"
            ),
        ]),
        Some((millis(1500), CooldownSource::RateLimitReset))
    );
}

#[test]
fn reset_headers_without_an_exhausted_limit_give_nothing() {
    let reset = rfc3339_at(30);
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", &reset),
        ]),
        None
    );
}

#[test]
fn reset_headers_without_remaining_headers_take_the_longest() {
    let requests_reset = rfc3339_at(20);
    let tokens_reset = rfc3339_at(40);
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-requests-reset", &requests_reset),
            ("anthropic-ratelimit-tokens-reset", &tokens_reset),
        ]),
        Some((secs(40), CooldownSource::RateLimitReset))
    );
}

#[test]
fn reset_in_the_past_is_not_usable() {
    let reset = rfc3339_at(-5);
    assert_eq!(
        hint(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &reset),
        ]),
        None
    );
}

#[test]
fn retry_after_takes_precedence_over_reset_headers() {
    let reset = rfc3339_at(300);
    assert_eq!(
        hint(&[
            ("Retry-After", "12"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &reset),
        ]),
        Some((secs(12), CooldownSource::RetryAfter))
    );
}

// ---- OpenAI reset headers ----

#[test]
fn openai_reset_durations() {
    let cases = [
        ("6m0s", secs(360)),
        ("1s", secs(1)),
        ("20ms", millis(20)),
        ("1m30.5s", millis(90_500)),
    ];
    for (value, expected) in cases {
        assert_eq!(
            hint(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", value),
            ]),
            Some((expected, CooldownSource::RateLimitReset)),
            "{value}"
        );
    }
}

#[test]
fn openai_reset_of_the_exhausted_limit_only() {
    assert_eq!(
        hint(&[
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "10m"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6s"),
        ]),
        Some((secs(6), CooldownSource::RateLimitReset))
    );
    assert_eq!(
        hint(&[
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "10m"),
        ]),
        None
    );
    assert_eq!(
        hint(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "soon"),
        ]),
        None,
        "unparsable reset"
    );
}

// ---- Policy: default and cap ----

#[test]
fn policy_defaults() {
    let policy = CooldownPolicy::default();
    assert_eq!(policy.default, secs(60));
    assert_eq!(policy.max, secs(3600));
    let probe = ProbePolicy::default();
    assert_eq!(probe.initial, secs(60));
    assert_eq!(probe.max, secs(3600));
}

#[test]
fn hints_are_capped_at_max() {
    let policy = CooldownPolicy::default();
    assert_eq!(
        policy.cooldown_for(&headers(&[("Retry-After", "7200")]), start()),
        (secs(3600), CooldownSource::RetryAfter)
    );
    assert_eq!(
        policy.cooldown_for(&headers(&[("Retry-After", &http_date_at(86_400))]), start()),
        (secs(3600), CooldownSource::RetryAfter)
    );
    assert_eq!(
        policy.cooldown_for(&headers(&[("retry-after-ms", "1e300")]), start()),
        (secs(3600), CooldownSource::RetryAfterMs),
        "absurd values saturate, then are capped"
    );
    let tight = CooldownPolicy {
        default: secs(60),
        max: secs(30),
    };
    assert_eq!(
        tight.cooldown_for(&headers(&[("Retry-After", "45")]), start()),
        (secs(30), CooldownSource::RetryAfter)
    );
    assert_eq!(
        tight.cooldown_for(&headers(&[]), start()),
        (secs(30), CooldownSource::Default),
        "the default is capped too"
    );
}

#[test]
fn zero_policy_values_fall_back_to_built_in_ones() {
    let zero = CooldownPolicy {
        default: Duration::ZERO,
        max: Duration::ZERO,
    };
    assert_eq!(
        zero.cooldown_for(&headers(&[]), start()),
        (secs(60), CooldownSource::Default),
        "a 429 must always cool the key"
    );
}

#[tokio::test]
async fn cap_applies_when_marking() {
    let policy = CooldownPolicy {
        default: secs(60),
        max: secs(120),
    };
    let f = fixture_with(1, policy, ProbePolicy::default());
    let outcome = f.cool(0, "600").await;
    assert_eq!(
        outcome.verdict,
        Verdict::RateLimited {
            cooldown: secs(120),
            source: CooldownSource::RetryAfter
        }
    );
    f.advance(secs(120));
    assert_eq!(f.state(0).await, KeyState::Valid);
}

// ---- Longest cooldown wins, also when the shorter one arrives later ----

#[tokio::test]
async fn shorter_cooldown_arriving_later_does_not_shorten() {
    let f = fixture(1);
    f.cool(0, "60").await;
    f.advance(secs(20));
    assert!(!f.cool(0, "10").await.transitioned);
    assert_eq!(f.snapshot(0).await.cooldown_remaining, Some(secs(40)));
    assert_eq!(
        f.record(0).await.cooldown_source,
        Some(CooldownSource::RetryAfter)
    );
    f.advance(secs(39));
    assert_eq!(f.state(0).await, KeyState::Cooling);
    f.advance(secs(1));
    assert_eq!(f.state(0).await, KeyState::Valid);
}

#[tokio::test]
async fn longer_cooldown_arriving_later_extends() {
    let f = fixture(1);
    f.mark(0, 429, &[("retry-after-ms", "10000")]).await;
    f.advance(secs(5));
    f.mark(0, 429, &[]).await;
    assert_eq!(f.snapshot(0).await.cooldown_remaining, Some(secs(60)));
    assert_eq!(
        f.record(0).await.cooldown_source,
        Some(CooldownSource::Default),
        "source follows the deadline that was kept"
    );
}

// ---- MarkKeyOnStatus (keymark_test.go) ----

#[tokio::test]
async fn status_429_with_retry_after_is_valid_again_after_exactly_that() {
    let f = fixture(1);
    let outcome = f.mark(0, 429, &[("Retry-After", "5")]).await;
    assert!(outcome.verdict.is_failover());
    assert!(outcome.transitioned);
    assert_eq!(f.state(0).await, KeyState::Cooling);
    f.advance(secs(5) - Duration::from_micros(1));
    assert_eq!(f.state(0).await, KeyState::Cooling, "1 µs before");
    f.advance(Duration::from_micros(1));
    assert_eq!(f.state(0).await, KeyState::Valid, "exactly 5 s");
}

#[tokio::test]
async fn status_429_with_retry_after_ms() {
    let f = fixture(1);
    let outcome = f.mark(0, 429, &[("retry-after-ms", "1500")]).await;
    assert_eq!(
        outcome.verdict,
        Verdict::RateLimited {
            cooldown: millis(1500),
            source: CooldownSource::RetryAfterMs
        }
    );
    assert_eq!(f.snapshot(0).await.cooldown_remaining, Some(millis(1500)));
    f.advance(millis(1499));
    assert_eq!(f.state(0).await, KeyState::Cooling);
    f.advance(millis(1));
    assert_eq!(f.state(0).await, KeyState::Valid);
}

#[tokio::test]
async fn status_429_without_headers_cools_for_the_default() {
    let f = fixture(1);
    let outcome = f.mark(0, 429, &[]).await;
    assert_eq!(
        outcome.verdict,
        Verdict::RateLimited {
            cooldown: secs(60),
            source: CooldownSource::Default
        }
    );
    assert_eq!(f.snapshot(0).await.last_status, Some(429));
    f.advance(secs(59));
    assert_eq!(f.state(0).await, KeyState::Cooling);
    f.advance(secs(1));
    assert_eq!(f.state(0).await, KeyState::Valid);
}

#[tokio::test]
async fn status_401_and_403_disable_the_key() {
    for (status, reason) in [
        (401, DisableReason::Unauthorized),
        (403, DisableReason::Forbidden),
    ] {
        let f = fixture(1);
        let outcome = f.mark(0, status, &[("Retry-After", "5")]).await;
        assert!(outcome.verdict.is_failover(), "{status}");
        assert!(outcome.transitioned, "{status}");
        assert_eq!(outcome.verdict, Verdict::Rejected { reason });
        let snapshot = f.snapshot(0).await;
        assert_eq!(snapshot.state, KeyState::Disabled, "{status}");
        assert_eq!(snapshot.disabled_reason, Some(reason));
        assert_eq!(snapshot.last_status, Some(status));
        f.advance(secs(3600 * 24));
        assert_eq!(f.state(0).await, KeyState::Disabled, "{status}: no expiry");
    }
    assert_eq!(DisableReason::Unauthorized.as_str(), "unauthorized");
    assert_eq!(DisableReason::Forbidden.as_str(), "forbidden");
}

#[tokio::test]
async fn other_statuses_are_not_key_specific() {
    for status in [200, 500, 529, 400, 404] {
        let f = fixture(1);
        let outcome = f.mark(0, status, &[("Retry-After", "5")]).await;
        assert_eq!(outcome.verdict, Verdict::NotKeySpecific, "{status}");
        assert!(!outcome.verdict.is_failover(), "{status}");
        assert!(!outcome.transitioned, "{status}");
        let snapshot = f.snapshot(0).await;
        assert_eq!(snapshot.state, KeyState::Valid, "{status}");
        assert_eq!(snapshot.last_status, None, "{status}");
    }
}

#[tokio::test]
async fn disabled_wins_over_429() {
    let f = fixture(2);
    // Cooling first, then rejected: disabled.
    f.cool(0, "30").await;
    assert!(f.disable(0).await.transitioned);
    // Rejected first, then 429: still disabled, 429 changes nothing.
    f.disable(1).await;
    assert!(!f.cool(1, "30").await.transitioned);
    f.advance(secs(31));
    assert_eq!(f.state(0).await, KeyState::Disabled);
    assert_eq!(f.state(1).await, KeyState::Disabled);
    assert_eq!(f.record(1).await.cooldown_until, None);
}
