//! Back-off bookkeeping for the background re-validation of disabled keys (PRODUCT.md item 2).
//! The probe itself (an authenticated model-list call) lives with the providers; this module only
//! decides when the next one is due.

use std::time::Duration;

/// First probe one minute after a key is disabled (PRODUCT.md: "1 min doubling to 1 h").
const DEFAULT_INITIAL_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait between two probes of a still-rejected key.
const DEFAULT_MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);

/// Back-off of the background re-validation of disabled keys: first probe `initial` after the key
/// was disabled, doubling after each still-rejected probe, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Delay before the first probe, and the starting interval (60 s).
    pub initial: Duration,
    /// Cap on the doubling interval (1 h).
    pub max: Duration,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        Self {
            initial: DEFAULT_INITIAL_PROBE_INTERVAL,
            max: DEFAULT_MAX_PROBE_INTERVAL,
        }
    }
}

impl ProbePolicy {
    /// The first interval. A zero one would never grow by doubling and make the prober spin, so
    /// it falls back to the built-in value.
    pub(crate) fn first_interval(&self) -> Duration {
        if self.initial.is_zero() {
            DEFAULT_INITIAL_PROBE_INTERVAL
        } else {
            self.initial
        }
    }

    /// The interval after one more rejection: doubled, capped at `max`, never below the first
    /// interval (so a `max` configured below `initial` cannot make probes spin).
    pub(crate) fn interval_after_rejection(&self, current: Duration) -> Duration {
        current
            .saturating_mul(2)
            .min(self.max)
            .max(self.first_interval())
    }
}

/// Result of one probe of a disabled key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The key works again.
    Healthy,
    /// 401/403 again.
    StillRejected,
    /// Network error, 429, 5xx: try again after the same interval.
    Inconclusive,
}

impl ProbeOutcome {
    /// Stable name, for a check's result shared between replicas.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::StillRejected => "still_rejected",
            Self::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Healthy, Self::StillRejected, Self::Inconclusive]
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_doubles_up_to_max() {
        let policy = ProbePolicy::default();
        assert_eq!(
            policy.interval_after_rejection(Duration::from_secs(60)),
            Duration::from_secs(120)
        );
        assert_eq!(
            policy.interval_after_rejection(Duration::from_secs(1920)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            policy.interval_after_rejection(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            policy.interval_after_rejection(Duration::MAX),
            Duration::from_secs(3600),
            "doubling must saturate, not overflow"
        );
    }
}
