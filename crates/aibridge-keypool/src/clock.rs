//! Time source for every key-state rule, injectable so tests control it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock instant, microseconds since the Unix epoch. Wall clock (not `Instant`) so that
/// deadlines can later be shared across replicas through Redis.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Builds a timestamp from microseconds since the Unix epoch (the stored form).
    pub const fn from_unix_micros(us: u64) -> Self {
        Self(us)
    }

    /// Microseconds since the Unix epoch, the form a shared store persists.
    pub const fn as_unix_micros(self) -> u64 {
        self.0
    }

    /// Converts a system time; instants before the epoch become the epoch itself.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => Self(duration_to_micros_saturating(since_epoch)),
            Err(_) => Self(0),
        }
    }

    /// Converts back to a system time, e.g. to format an HTTP date.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }

    /// `self + d`, saturating at the largest representable instant instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_to_micros_saturating(d)))
    }

    /// self - earlier, zero if earlier is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Whole microseconds of `d` (sub-microsecond rest dropped), saturating at `u64::MAX`.
fn duration_to_micros_saturating(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Source of "now" for deriving key states.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The real wall clock, used in production.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// Test clock, advanced by hand. Cloning shares the same time (Arc inside).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock frozen at `start` until advanced or set.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now_micros: Arc::new(AtomicU64::new(start.as_unix_micros())),
        }
    }

    /// Moves time forward by `d` for every clone of this clock.
    pub fn advance(&self, d: Duration) {
        let step = duration_to_micros_saturating(d);
        // fetch_update never fails here because the closure always returns Some.
        let _ = self
            .now_micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                Some(current.saturating_add(step))
            });
    }

    /// Jumps to `t` (backwards too) for every clone of this clock.
    pub fn set(&self, t: Timestamp) {
        self.now_micros.store(t.as_unix_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.now_micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_through_system_time() {
        let t = Timestamp::from_unix_micros(1_700_000_000_123_456);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
    }

    #[test]
    fn timestamp_before_epoch_is_zero() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from_system_time(before).as_unix_micros(), 0);
    }

    #[test]
    fn saturating_arithmetic() {
        let t = Timestamp::from_unix_micros(10);
        assert_eq!(
            t.saturating_add(Duration::from_micros(5)).as_unix_micros(),
            15
        );
        assert_eq!(
            t.saturating_add(Duration::MAX).as_unix_micros(),
            u64::MAX,
            "adding a huge duration must not overflow"
        );
        let later = Timestamp::from_unix_micros(25);
        assert_eq!(
            later.saturating_duration_since(t),
            Duration::from_micros(15)
        );
        assert_eq!(t.saturating_duration_since(later), Duration::ZERO);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(Timestamp::from_unix_micros(1_000_000));
        let clone = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clone.now().as_unix_micros(), 2_500_000);
        clone.set(Timestamp::from_unix_micros(42));
        assert_eq!(clock.now().as_unix_micros(), 42);
    }

    #[test]
    fn system_clock_is_after_2020() {
        let year_2020 = Timestamp::from_unix_micros(1_577_836_800_000_000);
        assert!(SystemClock.now() > year_2020);
    }
}
