//! The cooldown hint parsers read whatever a provider (or a broken proxy) puts in the headers
//! without panicking, and what they return is bounded by the policy.

use std::time::Duration;

use aibridge_keypool::{CooldownPolicy, cooldown_hint};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use crate::common::start;

const HINTS: [&str; 6] = [
    "retry-after-ms",
    "retry-after",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
];

proptest! {
    #[test]
    fn any_header_value_is_read_without_panicking_and_capped(
        values in proptest::collection::vec(("[ -~]{0,40}", 0usize..HINTS.len()), 0..6),
        remaining in proptest::option::of(0u32..5),
    ) {
        let mut headers = HeaderMap::new();
        for (value, which) in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(HINTS[which], value);
            }
        }
        if let Some(n) = remaining {
            headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(n));
        }
        let _ = cooldown_hint(&headers, start());
        let policy = CooldownPolicy::default();
        let (cooldown, _) = policy.cooldown_for(&headers, start());
        prop_assert!(cooldown <= Duration::from_secs(3600));
        prop_assert!(!cooldown.is_zero());
    }

    #[test]
    fn retry_after_seconds_are_taken_as_given(secs in 1u64..3600) {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from(secs));
        prop_assert_eq!(
            cooldown_hint(&headers, start()).map(|(d, _)| d),
            Some(Duration::from_secs(secs))
        );
    }

    #[test]
    fn retry_after_ms_keeps_its_fractions(ms in 1u32..3_600_000, frac in 0u32..1000) {
        let mut headers = HeaderMap::new();
        let text = format!("{ms}.{frac:03}");
        headers.insert("retry-after-ms", HeaderValue::from_str(&text).unwrap());
        let got = cooldown_hint(&headers, start()).map(|(d, _)| d).unwrap();
        let want = Duration::from_secs_f64(text.parse::<f64>().unwrap() / 1000.0);
        prop_assert!(got.abs_diff(want) < Duration::from_micros(2), "{got:?} vs {want:?}");
    }
}
