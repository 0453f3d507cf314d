//! How long a rate-limited key rests: reading the provider's hints, and the policy around them.

use std::time::Duration;

use http::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clock::Timestamp;

/// Cooldown applied when the provider gives no usable hint (spec §3.2).
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Upper bound on any cooldown, so a bogus hint cannot bench a key for days.
const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// Anthropic limits that come with a `-reset`/`-remaining` header pair.
const ANTHROPIC_LIMITS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];
/// OpenAI limits that come with a `reset`/`remaining` header pair.
const OPENAI_LIMITS: [&str; 2] = ["requests", "tokens"];

/// How long a key cools down after a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// Used when the provider gives no usable hint (60 s).
    pub default: Duration,
    /// Every cooldown, hinted or default, is capped at this (1 h).
    pub max: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        Self {
            default: DEFAULT_COOLDOWN,
            max: DEFAULT_MAX_COOLDOWN,
        }
    }
}

/// Where a cooldown came from, recorded with the mark so operators can see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownSource {
    /// The `retry-after-ms` header.
    RetryAfterMs,
    /// The `Retry-After` header (seconds or HTTP-date).
    RetryAfter,
    /// A provider rate-limit reset header of an exhausted limit.
    RateLimitReset,
    /// No usable hint: the policy's default.
    Default,
}

impl CooldownSource {
    /// Stable lowercase name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryAfterMs => "retry_after_ms",
            Self::RetryAfter => "retry_after",
            Self::RateLimitReset => "rate_limit_reset",
            Self::Default => "default",
        }
    }

    /// The source named by [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::RetryAfterMs,
            Self::RetryAfter,
            Self::RateLimitReset,
            Self::Default,
        ]
        .into_iter()
        .find(|source| source.as_str() == text)
    }
}

/// Reads the provider's hint, in this order (first usable wins; a value <= 0 or unparsable is
/// "not usable" and falls through):
///  1. `retry-after-ms`: float milliseconds (whitespace trimmed), > 0.
///  2. `Retry-After`: integer seconds, fractional seconds ("1.5"), or an HTTP-date relative to
///     `now` (a date in the past is not usable).
///  3. The reset header of the exhausted limit: Anthropic `anthropic-ratelimit-*-reset` (RFC 3339
///     times) paired with `anthropic-ratelimit-*-remaining`, OpenAI `x-ratelimit-reset-*` (Go-style
///     durations such as "6m0s") paired with `x-ratelimit-remaining-*`. A limit is exhausted when
///     its remaining count is 0; the longest reset among exhausted limits wins. When no remaining
///     header exists at all the longest reset present is used; when remaining headers exist but
///     none is 0, this step gives nothing.
///
/// Returns None when no usable hint exists. Header names are case-insensitive.
pub fn cooldown_hint(headers: &HeaderMap, now: Timestamp) -> Option<(Duration, CooldownSource)> {
    if let Some(d) = header_str(headers, "retry-after-ms").and_then(parse_retry_after_ms) {
        return Some((d, CooldownSource::RetryAfterMs));
    }
    if let Some(d) = header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some((d, CooldownSource::RetryAfter));
    }
    rate_limit_reset(headers, now).map(|d| (d, CooldownSource::RateLimitReset))
}

impl CooldownPolicy {
    /// hint (capped at max) or default (source Default). Always > 0.
    pub fn cooldown_for(&self, headers: &HeaderMap, now: Timestamp) -> (Duration, CooldownSource) {
        let (wanted, source) = cooldown_hint(headers, now)
            .unwrap_or((self.effective_default(), CooldownSource::Default));
        (wanted.min(self.effective_max()), source)
    }

    /// A zero default would make a 429 a no-op, so it falls back to the built-in one.
    fn effective_default(&self) -> Duration {
        if self.default.is_zero() {
            DEFAULT_COOLDOWN
        } else {
            self.default
        }
    }

    /// A zero cap would make every cooldown zero, so it falls back to the built-in one.
    fn effective_max(&self) -> Duration {
        if self.max.is_zero() {
            DEFAULT_MAX_COOLDOWN
        } else {
            self.max
        }
    }
}

/// The header's value as trimmed text, if present and valid visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    positive_number(value).and_then(|ms| duration_from_secs_f64(ms / 1000.0))
}

/// Seconds (integer or fractional) or an HTTP-date in the future.
fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    if let Some(secs) = positive_number(value) {
        return duration_from_secs_f64(secs);
    }
    let date = Timestamp::from_system_time(httpdate::parse_http_date(value).ok()?);
    non_zero(date.saturating_duration_since(now))
}

/// A finite number > 0. Rejects "inf"/"NaN", which Rust's float parser would accept.
fn positive_number(value: &str) -> Option<f64> {
    let number: f64 = value.parse().ok()?;
    (number.is_finite() && number > 0.0).then_some(number)
}

/// Rounds to whole nanoseconds (so 1.5 s stays exactly 1.5 s); huge values saturate, the policy
/// caps them anyway. Values that round to zero are not usable.
fn duration_from_secs_f64(secs: f64) -> Option<Duration> {
    const NANOS_PER_SEC: f64 = 1e9;
    let nanos = (secs * NANOS_PER_SEC).round();
    let duration = if nanos >= u64::MAX as f64 {
        Duration::MAX
    } else {
        // In range and non-negative: the cast is exact for integral values below u64::MAX.
        Duration::from_nanos(nanos as u64)
    };
    non_zero(duration)
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// One rate limit as reported by the provider's headers.
struct LimitReport {
    /// Time until the limit resets, when the header is present and usable.
    reset_in: Option<Duration>,
    /// Whether the provider sent a `remaining` header for this limit.
    remaining_reported: bool,
    /// Whether that header said nothing is left.
    exhausted: bool,
}

impl LimitReport {
    fn new(reset_in: Option<Duration>, remaining: Option<&str>) -> Self {
        Self {
            reset_in,
            remaining_reported: remaining.is_some(),
            exhausted: remaining.and_then(|v| v.parse::<u64>().ok()) == Some(0),
        }
    }
}

fn rate_limit_reset(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let anthropic = ANTHROPIC_LIMITS.iter().map(|limit| {
        LimitReport::new(
            header_str(headers, &format!("anthropic-ratelimit-{limit}-reset"))
                .and_then(|v| parse_rfc3339_from_now(v, now)),
            header_str(headers, &format!("anthropic-ratelimit-{limit}-remaining")),
        )
    });
    let openai = OPENAI_LIMITS.iter().map(|limit| {
        LimitReport::new(
            header_str(headers, &format!("x-ratelimit-reset-{limit}"))
                .and_then(parse_go_duration)
                .and_then(non_zero),
            header_str(headers, &format!("x-ratelimit-remaining-{limit}")),
        )
    });
    let reports: Vec<LimitReport> = anthropic.chain(openai).collect();

    let any_remaining_reported = reports.iter().any(|r| r.remaining_reported);
    reports
        .iter()
        // Without remaining counts we cannot tell which limit was hit, so any reset counts.
        .filter(|r| !any_remaining_reported || r.exhausted)
        .filter_map(|r| r.reset_in)
        .max()
}

fn parse_rfc3339_from_now(value: &str, now: Timestamp) -> Option<Duration> {
    let reset_at = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    let micros = u64::try_from(reset_at.unix_timestamp_nanos() / 1000).ok()?;
    non_zero(Timestamp::from_unix_micros(micros).saturating_duration_since(now))
}

/// Parses Go's `time.Duration` text form as OpenAI sends it: one or more `<decimal><unit>` parts
/// with units h, m, s, ms, us/µs, ns ("6m0s", "20ms", "1m30.5s"); a bare "0" is zero.
/// Signs are rejected: a negative reset is not a usable hint.
fn parse_go_duration(value: &str) -> Option<Duration> {
    if value.is_empty() {
        return None;
    }
    if value == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = value;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after_number) = rest.split_at(number_len);
        let (unit_nanos, unit_len) = go_duration_unit(after_number)?;
        total_nanos = total_nanos.checked_add(scaled_decimal(number, unit_nanos)?)?;
        rest = &after_number[unit_len..];
    }
    let nanos = u64::try_from(total_nanos).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The unit at the start of `text`: (nanoseconds per unit, byte length of the unit).
fn go_duration_unit(text: &str) -> Option<(u128, usize)> {
    const UNITS: [(&str, u128); 8] = [
        // Two-letter units first so "ms" is not read as "m" followed by garbage.
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| text.starts_with(unit))
        .map(|(unit, nanos)| (*nanos, unit.len()))
}

/// `number` (digits with at most one '.') times `unit_nanos`, in exact integer arithmetic;
/// fractions finer than a nanosecond are dropped.
fn scaled_decimal(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if fraction.contains('.') {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole_value.checked_mul(unit_nanos)?;
    let mut place = unit_nanos;
    for digit in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        total = total.checked_add(u128::from(digit - b'0') * place)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("6m0s", Some(Duration::from_secs(360))),
            ("1s", Some(Duration::from_secs(1))),
            ("20ms", Some(Duration::from_millis(20))),
            ("1m30.5s", Some(Duration::from_millis(90_500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1h2m3s", Some(Duration::from_secs(3723))),
            ("500us", Some(Duration::from_micros(500))),
            ("500µs", Some(Duration::from_micros(500))),
            ("7ns", Some(Duration::from_nanos(7))),
            (".5s", Some(Duration::from_millis(500))),
            ("0", Some(Duration::ZERO)),
            ("0s", Some(Duration::ZERO)),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("1x", None),
            ("s", None),
            ("1.2.3s", None),
            ("1s ", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_go_duration(input),
                expected,
                "parse_go_duration({input:?})"
            );
        }
    }
}
