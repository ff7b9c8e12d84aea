//! Time, injected: schedules are evaluated against a [`Clock`] that tests can
//! replace, and guards measure their windows on the same clock's monotonic
//! side, so a wall-clock step never stretches or shrinks a window.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time: wall time for schedules, monotonic time for
/// windows.
///
/// Flag evaluation reads [`Clock::now_millis`] only for flags with a
/// scheduled stage (`start_at`), and at most once per evaluation. Guards
/// read [`Clock::monotonic_millis`], which never goes backwards when the
/// wall clock is stepped.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z (negative before it).
    fn now_millis(&self) -> i64;

    /// Milliseconds on a clock that only moves forward, from an arbitrary
    /// start. The default is the process's monotonic clock, whatever
    /// [`Clock::now_millis`] says; a simulated clock moves both together.
    fn monotonic_millis(&self) -> i64 {
        process_monotonic_millis()
    }
}

/// Milliseconds of the process's monotonic clock since its first reading.
fn process_monotonic_millis() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// The system's wall clock, and the process's monotonic clock; the default.
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
/// [`ManualClock::advance`] moves wall time and monotonic time together, as
/// time passing does; [`ManualClock::set`] moves only wall time, as an
/// operator or NTP stepping the clock does. Share it with the store as an
/// `Arc<ManualClock>` and move it from the test.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flagstone::{Clock, FlagStore, ManualClock};
///
/// let clock = Arc::new(ManualClock::from_rfc3339("2026-12-01T01:59:00Z")?);
/// let store = FlagStore::new().with_clock(clock.clone());
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now_millis(), 1_796_090_400_000);
/// assert_eq!(clock.monotonic_millis(), 60_000);
/// # drop(store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
    monotonic: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `millis` since the Unix epoch, its monotonic side
    /// at 0.
    pub fn new(millis: i64) -> Self {
        Self { millis: AtomicI64::new(millis), monotonic: AtomicI64::new(0) }
    }

    /// A clock standing at an RFC 3339 time, such as `2026-12-01T02:00:00Z`.
    pub fn from_rfc3339(time: &str) -> Result<Self, TimeError> {
        parse_rfc3339_millis(time).map(Self::new).map_err(TimeError)
    }

    /// Moves wall time to `millis` since the Unix epoch (backwards too);
    /// monotonic time does not move.
    pub fn set(&self, millis: i64) {
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// Moves wall time and monotonic time forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::Relaxed);
        self.monotonic.fetch_add(by, Ordering::Relaxed);
    }

    /// Where wall time stands, in milliseconds since the Unix epoch.
    pub fn now_millis_value(&self) -> i64 {
        self.millis.load(Ordering::Relaxed)
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_millis(&self) -> i64 {
        self.now_millis_value()
    }

    #[inline]
    fn monotonic_millis(&self) -> i64 {
        self.monotonic.load(Ordering::Relaxed)
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now_millis(&self) -> i64 {
        (**self).now_millis()
    }

    #[inline]
    fn monotonic_millis(&self) -> i64 {
        (**self).monotonic_millis()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_millis(&self) -> i64 {
        (**self).now_millis()
    }

    #[inline]
    fn monotonic_millis(&self) -> i64 {
        (**self).monotonic_millis()
    }
}

/// A time that is not a strict RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

/// Parses a strict RFC 3339 timestamp (`2026-12-01T02:00:00Z`,
/// `2026-12-01T03:00:00.5+01:00`) into milliseconds since the Unix epoch.
///
/// Strict: the extended format only (`20261201T020000Z` is ISO 8601, not
/// RFC 3339), offsets within ±23:59, no bracketed time zone names. A leap
/// second (`:60`) is read as the second before it.
pub(crate) fn parse_rfc3339_millis(time: &str) -> Result<i64, String> {
    parse_rfc3339(time).map_err(|why| format!("{time:?} is not an RFC 3339 time ({why})"))
}

/// [`parse_rfc3339_millis`] without the message (it allocates none).
pub(crate) fn parse_rfc3339(time: &str) -> Result<i64, &'static str> {
    let b = time.as_bytes();
    let digits = |at: usize, n: usize| -> Result<i64, &'static str> {
        let part = b.get(at..at + n).ok_or("too short")?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err("expected YYYY-MM-DDTHH:MM:SS with an offset");
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let expect = |at: usize, what: &[u8]| match b.get(at) {
        Some(c) if what.contains(c) => Ok(()),
        _ => Err("expected YYYY-MM-DDTHH:MM:SS with an offset"),
    };
    let year = digits(0, 4)?;
    expect(4, b"-")?;
    let month = digits(5, 2)?;
    expect(7, b"-")?;
    let day = digits(8, 2)?;
    expect(10, b"Tt")?;
    let hour = digits(11, 2)?;
    expect(13, b":")?;
    let minute = digits(14, 2)?;
    expect(16, b":")?;
    let second = digits(17, 2)?;
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return Err("a fraction needs digits");
        }
        // Digits past nanoseconds are below the resolution: dropped.
        for (i, d) in b[start..end].iter().take(9).enumerate() {
            nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
        }
        at = end;
    }
    let offset_secs = match b.get(at) {
        Some(b'Z' | b'z') if b.len() == at + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == at + 6 => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            expect(at + 3, b":")?;
            if h > 23 || m > 59 {
                return Err("an offset is within -23:59..=+23:59");
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        None => return Err("missing the offset (Z or +HH:MM)"),
        _ => return Err("expected Z or +HH:MM at the end"),
    };
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 60 {
        return Err("a field is out of range");
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&day) {
        return Err("no such day");
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset_secs;
    Ok(seconds * 1000 + nanos / 1_000_000)
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC
/// (`2026-12-01T02:00:00Z`, with `.sss` when there are milliseconds).
pub(crate) fn format_rfc3339_millis(millis: i64) -> String {
    let (days, rest) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (rest / 1000, rest % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let year = if (0..=9999).contains(&year) { format!("{year:04}") } else { format!("{year:+}") };
    if ms == 0 {
        format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

/// The date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`): exact for every year RFC 3339 can write.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_rfc3339_millis("1970-01-01T01:00:00.5+01:00"), Ok(500));
        assert_eq!(parse_rfc3339_millis("1970-01-01t00:00:00.123456789z"), Ok(123));
        assert_eq!(parse_rfc3339_millis("1969-12-31T23:00:00-01:00"), Ok(0));
        assert!(parse_rfc3339_millis("2026-12-01 02:00").is_err());
        assert!(parse_rfc3339_millis("tomorrow").is_err());
    }

    #[test]
    fn only_strict_rfc3339_is_accepted() {
        for bad in [
            "20261201T020000Z",
            "2026-12-01T02:00:00+24:00",
            "2026-12-01T02:00:00+01:60",
            "2026-12-01T02:00:00Z[Europe/Berlin]",
            "2026-12-01T02:00:00+01:00[Europe/Berlin]",
            "2026-12-01T02:00:00",
            "2026-12-01T02:00Z",
            "2026-02-30T02:00:00Z",
            "2026-13-01T02:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T02:00:00.Z",
            "+2026-12-01T02:00:00Z",
            "2026-12-01T02:00:00Z ",
            "2026-12-01T02:00:00+0100",
        ] {
            assert!(parse_rfc3339_millis(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(parse_rfc3339_millis("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000));
        assert_eq!(parse_rfc3339_millis("0000-01-01T00:00:00Z"), Ok(-62_167_219_200_000));
        assert_eq!(
            parse_rfc3339_millis("2016-12-31T23:59:60Z"),
            parse_rfc3339_millis("2016-12-31T23:59:59Z")
        );
    }

    #[test]
    fn times_format_back_to_what_they_parse_from() {
        for time in [
            "1970-01-01T00:00:00Z",
            "2026-12-01T02:00:00Z",
            "2024-02-29T23:59:59.250Z",
            "1969-07-20T20:17:40Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
        ] {
            let millis = parse_rfc3339_millis(time).expect(time);
            assert_eq!(format_rfc3339_millis(millis), time);
        }
    }

    #[test]
    fn the_system_clock_is_after_2020_and_monotonic_time_never_goes_back() {
        assert!(SystemClock.now_millis() > 1_577_836_800_000);
        let a = SystemClock.monotonic_millis();
        let b = SystemClock.monotonic_millis();
        assert!(b >= a);
    }

    #[test]
    fn a_manual_clock_steps_wall_time_without_moving_monotonic_time() {
        let clock = ManualClock::new(10_000);
        clock.advance(Duration::from_secs(2));
        clock.set(0);
        assert_eq!((clock.now_millis(), clock.monotonic_millis()), (0, 2_000));
    }
}
