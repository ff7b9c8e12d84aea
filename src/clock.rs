//! Time, injected: schedules are evaluated against a [`Clock`] that tests can
//! replace.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time, in milliseconds since the Unix epoch.
///
/// Flag evaluation reads the clock only for flags with a scheduled stage
/// (`start_at`), and at most once per evaluation.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z (negative before it).
    fn now_millis(&self) -> i64;
}

/// The system's wall clock; the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }
}

/// A clock that moves only when told to, for tests and simulations.
///
/// Share it with the store as an `Arc<ManualClock>` and move it from the test.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flagstone::{FlagStore, ManualClock};
///
/// let clock = Arc::new(ManualClock::from_rfc3339("2026-12-01T01:59:00Z")?);
/// let store = FlagStore::new().with_clock(clock.clone());
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now_millis_value(), 1_796_090_400_000);
/// # drop(store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `millis` since the Unix epoch.
    pub fn new(millis: i64) -> Self {
        Self { millis: AtomicI64::new(millis) }
    }

    /// A clock standing at an RFC 3339 time, such as `2026-12-01T02:00:00Z`.
    pub fn from_rfc3339(time: &str) -> Result<Self, crate::Error> {
        parse_rfc3339_millis(time)
            .map(Self::new)
            .map_err(|message| crate::Error::invalid(vec![crate::Problem::new("(clock)", message)]))
    }

    /// Moves the clock to `millis` since the Unix epoch.
    pub fn set(&self, millis: i64) {
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::Relaxed);
    }

    /// Where the clock stands, in milliseconds since the Unix epoch.
    pub fn now_millis_value(&self) -> i64 {
        self.millis.load(Ordering::Relaxed)
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_millis(&self) -> i64 {
        self.now_millis_value()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now_millis(&self) -> i64 {
        (**self).now_millis()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_millis(&self) -> i64 {
        (**self).now_millis()
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch.
pub(crate) fn parse_rfc3339_millis(time: &str) -> Result<i64, String> {
    time.parse::<jiff::Timestamp>()
        .map(|ts| ts.as_millisecond())
        .map_err(|e| format!("{time:?} is not an RFC 3339 time ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_rfc3339_millis("1970-01-01T01:00:00.5+01:00"), Ok(500));
        assert!(parse_rfc3339_millis("2026-12-01 02:00").is_err());
        assert!(parse_rfc3339_millis("tomorrow").is_err());
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now_millis() > 1_577_836_800_000);
    }
}
