//! Holds and windows: how long a stage must stay healthy, and when the
//! controller may enter one. Parsed once per decision from the config's
//! strings; the config's validation uses the same parsers, so a document
//! that validates never fails here.

use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::config::Window;

/// Parses a hold: `"90s"`, `"30m"`, `"2h"`, `"1h30m"` (jiff's friendly
/// format, or ISO 8601 `PT30M`); positive, at most 30 days.
pub fn parse_hold(text: &str) -> Result<Duration, String> {
    let signed: SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"90s\", \"30m\" or \"2h\""))?;
    if signed <= SignedDuration::ZERO {
        return Err(format!("{text:?} is not a positive duration"));
    }
    let duration = signed.unsigned_abs();
    if duration > Duration::from_secs(30 * 86_400) {
        return Err(format!("{text:?} is longer than 30 days"));
    }
    Ok(duration)
}

/// A window ready to test times against.
#[derive(Clone, Debug)]
pub struct OpenWindow {
    /// Bit `n` set: open on `n` days from Monday (every day when all set).
    days: u8,
    from: Time,
    to: Time,
    tz: TimeZone,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_bit(day: Weekday) -> u8 {
    1 << (day.to_monday_zero_offset() as u8)
}

fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time of day \"HH:MM\" (00:00 to 23:59)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

impl OpenWindow {
    /// Checks a window from a config; each problem with the field it is
    /// about (`days[2]`, `from`, `to`, `tz`).
    pub fn new(window: &Window) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut days = 0u8;
        for (i, day) in window.days.iter().enumerate() {
            match DAYS.iter().position(|d| d.eq_ignore_ascii_case(day)) {
                Some(n) => days |= 1 << n,
                None => problems.push((
                    format!("days[{i}]"),
                    format!("{day:?} is not a day: one of {}", DAYS.join(", ")),
                )),
            }
        }
        if window.days.is_empty() {
            days = 0x7f;
        }
        let from = parse_time(&window.from).map_err(|e| problems.push(("from".into(), e)));
        let to = parse_time(&window.to).map_err(|e| problems.push(("to".into(), e)));
        let tz = match window.tz.as_deref() {
            None => Ok(TimeZone::UTC),
            Some(name) => TimeZone::get(name).map_err(|_| {
                problems.push((
                    "tz".into(),
                    format!("{name:?} is not a time zone this machine knows (an IANA name such as \"Europe/Berlin\")"),
                ))
            }),
        };
        if let (Ok(from), Ok(to)) = (&from, &to)
            && from == to
        {
            problems.push(("to".into(), "is the same time as from: the window is empty".into()));
        }
        match (from, to, tz) {
            (Ok(from), Ok(to), Ok(tz)) if problems.is_empty() => Ok(Self { days, from, to, tz }),
            _ => Err(problems),
        }
    }

    /// Whether the window is open at `now`.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.tz.clone());
        let (day, time) = (local.weekday(), local.time());
        if self.from < self.to {
            self.days & day_bit(day) != 0 && self.from <= time && time < self.to
        } else {
            // Crosses midnight: opened today, or opened yesterday.
            (self.days & day_bit(day) != 0 && time >= self.from)
                || (self.days & day_bit(day.previous()) != 0 && time < self.to)
        }
    }

    /// When the window next opens after `now` (within eight days).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let today: Date = now.to_zoned(self.tz.clone()).date();
        (0..=8)
            .filter_map(|n| today.checked_add(jiff::Span::new().days(n)).ok())
            .filter(|date| self.days & day_bit(date.weekday()) != 0)
            .filter_map(|date| date.to_datetime(self.from).to_zoned(self.tz.clone()).ok())
            .map(|zoned| zoned.timestamp())
            .find(|&opens| opens > now)
    }
}

/// Whether `now` is in any of `windows` (always, when there are none), and
/// if not, when the first opens next.
pub fn open(windows: &[OpenWindow], now: Timestamp) -> Result<(), Option<Timestamp>> {
    if windows.is_empty() || windows.iter().any(|w| w.contains(now)) {
        return Ok(());
    }
    Err(windows.iter().filter_map(|w| w.next_open(now)).min())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn window(days: &[&str], from: &str, to: &str, tz: &str) -> OpenWindow {
        let mut w = Window::new(from, to, Some(tz));
        w.days = days.iter().map(|d| d.to_string()).collect();
        OpenWindow::new(&w).expect("window")
    }

    #[test]
    fn holds_parse_as_durations() {
        assert_eq!(parse_hold("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_hold("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_hold("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_hold("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_hold("0s").is_err());
        assert!(parse_hold("-5m").is_err());
        assert!(parse_hold("soon").unwrap_err().contains("\"soon\""));
        assert!(parse_hold("1000h").unwrap_err().contains("30 days"));
    }

    #[test]
    fn windows_follow_their_time_zone_and_days() {
        // 02:00-05:00 Berlin, Monday to Thursday. 2026-12-01 is a Tuesday;
        // Berlin is UTC+1 in December.
        let w = window(&["mon", "tue", "wed", "thu"], "02:00", "05:00", "Europe/Berlin");
        assert!(w.contains(at("2026-12-01T01:00:00Z")));
        assert!(w.contains(at("2026-12-01T03:59:59Z")));
        assert!(!w.contains(at("2026-12-01T04:00:00Z")));
        assert!(!w.contains(at("2026-12-01T00:59:59Z")));
        // Friday 03:00 Berlin: not a listed day.
        assert!(!w.contains(at("2026-12-04T02:00:00Z")));
        // Next opening after Thursday's window is Monday's.
        assert_eq!(w.next_open(at("2026-12-03T05:00:00Z")), Some(at("2026-12-07T01:00:00Z")));
        // In July Berlin is UTC+2.
        assert!(w.contains(at("2026-07-01T00:30:00Z")));
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let w = window(&["fri"], "22:00", "02:00", "UTC");
        assert!(w.contains(at("2026-12-04T23:00:00Z")));
        assert!(w.contains(at("2026-12-05T01:59:00Z")), "Saturday morning is Friday's night");
        assert!(!w.contains(at("2026-12-05T02:00:00Z")));
        assert!(!w.contains(at("2026-12-04T01:00:00Z")), "Friday morning is Thursday's night");
    }

    #[test]
    fn bad_windows_say_which_field() {
        let mut w = Window::new("25:00", "5:00", Some("Mars/Olympus"));
        w.days = vec!["funday".into()];
        let problems = OpenWindow::new(&w).expect_err("bad");
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["days[0]", "from", "to", "tz"]);
        let same = OpenWindow::new(&Window::new("02:00", "02:00", None)).expect_err("empty");
        assert!(same[0].1.contains("empty"), "{same:?}");
    }

    #[test]
    fn no_windows_is_always_open() {
        assert_eq!(open(&[], at("2026-12-01T12:00:00Z")), Ok(()));
        let w = window(&[], "02:00", "03:00", "UTC");
        assert_eq!(open(&[w], at("2026-12-01T12:00:00Z")), Err(Some(at("2026-12-02T02:00:00Z"))));
    }
}
