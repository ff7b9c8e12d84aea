//! Guards: the newest stage's units against a control group, with an
//! always-valid test, off the request path.
//!
//! **Recording** (`FlagStore::record`, on request threads) adds an outcome
//! to the unit's slot in one of two fixed tables, exposed and control, with
//! one compare-and-swap: no allocation, no lock. A slot is a `u64`: the
//! unit's tag (24 bits of its hash), the window it counts in (8 bits), its
//! outcomes and its errors (16 bits each, saturating). A unit maps to a
//! 64-byte line of 8 slots; when all 8 hold other units of this window,
//! its outcome is not sampled. To keep that rare the guard samples units
//! by hash: when a window saw more than a quarter of a table's slots in
//! use, the next one takes half as many units (the same half on every
//! instance, and in both groups, so the split between them is unbiased).
//!
//! **Checking** (the store's guard thread, or `FlagStore::check_guards`)
//! sums each table into [`UnitRates`] and runs the tests of
//! [`evidence`](super::evidence): errors, latency (from the histograms of
//! the stage's and the control's outcome blocks), the sample ratio. Each
//! window (`window_secs` of monotonic time) starts afresh; a report (trip,
//! starved group, sample-ratio mismatch) is made once per window.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::counters::{Counters, LATENCY_BUCKET_0};
use super::events::{ControlGroup, GuardMismatch, GuardStarved, GuardTrip, TripCause};
use super::evidence::{
    ErrorRule, ErrorTest, LatencyTest, MIN_UNIT_OUTCOMES, UnitRates, mismatch_test,
    sample_ratio_mismatch,
};
use super::metrics::{LATENCY_BUCKETS, Latency};
use crate::compile::Flag;
use crate::config::{Guard, GuardAction};

/// Slots per table: 32 KiB.
const SLOTS: usize = 4096;
/// Slots a unit may take: one cache line.
const WAYS: usize = 8;
/// A window that used more of a table than this samples fewer units next.
const FULL: usize = SLOTS / 4;
/// The deepest sampling: one unit in 2^6.
const MAX_LEVEL: u32 = 6;

/// Which group an outcome counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Exposed by the stage the guard watches.
    Exposed,
    /// Held back from it, or (without a holdback) exposed by no stage.
    Control,
}

/// A guard of one compiled flag, shared by the snapshots of one version.
#[derive(Debug)]
pub(crate) struct GuardState {
    error_rules: Vec<ErrorRule>,
    latency: Option<(f64, f64)>,
    /// A migration's most mismatching reads allowed.
    max_mismatch: Option<f64>,
    /// This window's compared reads of the watched stage, and how many
    /// disagreed.
    comparisons: AtomicU64,
    mismatches: AtomicU64,
    confidence: f64,
    min_units: u64,
    window_ms: i64,
    holdback: Option<f64>,
    pub(crate) action: GuardAction,
    /// The window outcomes count in (mod 256, as slots store it).
    epoch: AtomicU32,
    /// The stage watched, `u32::MAX` for none: outcomes of other stages are
    /// not evidence.
    watching: AtomicU32,
    /// Units are sampled when their hash's top bits are below 64 >> level.
    level: AtomicU32,
    exposed: UnitTable,
    control: UnitTable,
    /// Outcomes not sampled because their line was full.
    pub(crate) dropped: AtomicU64,
    window: Mutex<Window>,
    started: AtomicBool,
}

/// What a check keeps between looks.
#[derive(Debug, Default)]
struct Window {
    /// Monotonic ms at which the window began.
    began: i64,
    number: u32,
    watching: Option<usize>,
    /// Cumulative latency buckets of the exposed and control blocks at the
    /// window's start.
    latency_start: Option<([u64; LATENCY_BUCKETS], [u64; LATENCY_BUCKETS])>,
    reported_trip: bool,
    reported_mismatch: bool,
    /// Groups starved in the last window (reported once until they recover).
    starved: [bool; 2],
    /// The evidence of the last look, for exports.
    last: Option<Evidence>,
    /// This window's tests (they keep their calibration between looks).
    error_tests: Vec<ErrorTest>,
    latency_test: Option<LatencyTest>,
}

/// What a guard saw at its last look, for exports and the controller.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Evidence {
    pub(crate) stage: &'static str,
    pub(crate) exposed: UnitRates,
    pub(crate) control: UnitRates,
    pub(crate) control_group: ControlGroup,
}

/// What a check found worth telling.
#[derive(Debug)]
pub(crate) enum Report {
    /// Trip: step back from this stage index.
    Trip(usize, GuardTrip),
    Starved(GuardStarved),
    Mismatch(GuardMismatch),
}

#[derive(Debug)]
struct UnitTable(Box<[AtomicU64]>);

impl UnitTable {
    fn new() -> Self {
        Self((0..SLOTS).map(|_| AtomicU64::new(0)).collect())
    }

    /// Counts an outcome for the unit of `hash` in window `epoch`.
    #[inline]
    fn add(&self, hash: u64, epoch: u32, error: bool) -> bool {
        let tag = ((hash >> 40) as u32 & 0x00ff_ffff) | 1;
        let line = (hash as usize & (SLOTS - 1)) & !(WAYS - 1);
        for slot in self.0.iter().skip(line).take(WAYS) {
            let mut seen = slot.load(Ordering::Relaxed);
            loop {
                let (t, e, outcomes, errors) = decode(seen);
                let new = if t == tag && e == epoch {
                    encode(
                        tag,
                        epoch,
                        outcomes.saturating_add(1),
                        errors.saturating_add(u16::from(error)),
                    )
                } else if t == 0 || e != epoch {
                    encode(tag, epoch, 1, u16::from(error))
                } else {
                    break; // another unit of this window: the next slot
                };
                match slot.compare_exchange_weak(seen, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(now) => seen = now,
                }
            }
        }
        false
    }

    /// The units of window `epoch` with enough outcomes to count as
    /// evidence, and how many units had any outcome.
    fn rates(&self, epoch: u32) -> (UnitRates, u64) {
        let (mut rates, mut seen) = (UnitRates::default(), 0);
        for slot in self.0.iter() {
            let (tag, e, outcomes, errors) = decode(slot.load(Ordering::Relaxed));
            if tag != 0 && e == epoch && outcomes > 0 {
                seen += 1;
                if u64::from(outcomes) >= MIN_UNIT_OUTCOMES {
                    rates.add(u64::from(outcomes), u64::from(errors));
                }
            }
        }
        (rates, seen)
    }

    /// Empties the slots of every other window (a new window begins).
    fn clear_except(&self, epoch: u32) {
        for slot in self.0.iter() {
            let seen = slot.load(Ordering::Relaxed);
            let (tag, e, ..) = decode(seen);
            if tag != 0 && e != epoch {
                let _ = slot.compare_exchange(seen, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[inline]
fn encode(tag: u32, epoch: u32, outcomes: u16, errors: u16) -> u64 {
    (u64::from(tag) << 40)
        | (u64::from(epoch & 0xff) << 32)
        | (u64::from(outcomes) << 16)
        | u64::from(errors)
}

#[inline]
fn decode(v: u64) -> (u32, u32, u16, u16) {
    ((v >> 40) as u32, ((v >> 32) & 0xff) as u32, (v >> 16) as u16, v as u16)
}

impl GuardState {
    pub(crate) fn new(guard: &Guard) -> Self {
        let window_ms = i64::try_from(guard.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut error_rules = Vec::new();
        if let Some(ratio) = guard.max_error_ratio {
            error_rules.push(ErrorRule::Ratio(ratio));
        }
        if let Some(increase) = guard.max_error_increase {
            error_rules.push(ErrorRule::Increase(increase));
        }
        Self {
            error_rules,
            latency: guard.latency.as_ref().map(|l| (l.quantile, l.max_ratio)),
            max_mismatch: guard.max_mismatch_rate,
            comparisons: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            confidence: guard.confidence,
            min_units: guard.min_units,
            window_ms: window_ms.max(1),
            holdback: guard.holdback.map(|h| h / 100.0),
            action: guard.action,
            epoch: AtomicU32::new(0),
            watching: AtomicU32::new(u32::MAX),
            level: AtomicU32::new(0),
            exposed: UnitTable::new(),
            control: UnitTable::new(),
            dropped: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
            started: AtomicBool::new(false),
        }
    }

    /// Whether the guard's first window has started.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether the guard compares with held-back units (or with the
    /// contexts no stage exposes).
    pub(crate) fn holds_back(&self) -> bool {
        self.holdback.is_some()
    }

    /// The stage index the guard watches, if any.
    #[inline]
    /// Whether the guard judges latency (and so wants every operation
    /// a migrator runs timed).
    pub(crate) fn judges_latency(&self) -> bool {
        self.latency.is_some()
    }

    pub(crate) fn watching(&self) -> Option<usize> {
        let w = self.watching.load(Ordering::Relaxed);
        (w != u32::MAX).then_some(w as usize)
    }

    /// Counts an outcome of the unit with `hash` in its group: one
    /// compare-and-swap, for the request path.
    #[inline]
    pub(crate) fn record(&self, side: Side, hash: u64, error: bool) {
        let level = self.level.load(Ordering::Relaxed);
        if level > 0 && (hash >> 58) >= (64 >> level) {
            return;
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        let table = match side {
            Side::Exposed => &self.exposed,
            Side::Control => &self.control,
        };
        if !table.add(hash, epoch, error) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a compared read of the watched stage (a migration's shadow
    /// or live step): two relaxed adds, for the request path.
    #[inline]
    pub(crate) fn record_comparison(&self, mismatched: bool) {
        if self.max_mismatch.is_some() {
            self.comparisons.fetch_add(1, Ordering::Relaxed);
            if mismatched {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the first window; called when the config is installed (and
    /// again when the clock is replaced).
    pub(crate) fn start(&self, flag: &Flag, counters: &Counters, now: i64, wall: i64) {
        let mut window = self.lock();
        *window = Window::default();
        self.started.store(true, Ordering::Relaxed);
        self.begin(&mut window, flag, counters, now, wall);
    }

    /// Begins a new window at `now`: new epoch, the stage in effect, the
    /// latency baselines.
    fn begin(&self, window: &mut Window, flag: &Flag, counters: &Counters, now: i64, wall: i64) {
        window.began = now;
        window.number = window.number.wrapping_add(1);
        window.watching = newest(flag, wall);
        window.latency_start = window.watching.map(|stage| {
            (
                buckets(counters, flag.series.outcomes.get(1 + stage)),
                buckets(counters, self.control_block(flag)),
            )
        });
        window.reported_trip = false;
        window.reported_mismatch = false;
        window.error_tests = self
            .error_rules
            .iter()
            .map(|r| ErrorTest::new(*r, self.confidence, self.min_units))
            .collect();
        window.latency_test = self
            .latency
            .map(|(q, ratio)| LatencyTest::new(q, ratio, self.confidence, self.min_units));
        let epoch = window.number & 0xff;
        self.comparisons.store(0, Ordering::Relaxed);
        self.mismatches.store(0, Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.watching.store(window.watching.map_or(u32::MAX, |s| s as u32), Ordering::Relaxed);
        self.exposed.clear_except(epoch);
        self.control.clear_except(epoch);
    }

    fn control_block<'f>(&self, flag: &'f Flag) -> Option<&'f u32> {
        if self.holds_back() { Some(&flag.series.held_back) } else { flag.series.outcomes.first() }
    }

    /// What the last look saw.
    pub(crate) fn evidence(&self) -> Option<Evidence> {
        self.lock().last.clone()
    }

    /// Looks at the evidence now: a new window when the last one is over
    /// (or the stage in effect changed), then the tests.
    pub(crate) fn check(
        &self,
        flag: &Flag,
        counters: &Counters,
        now: i64,
        wall: i64,
    ) -> Vec<Report> {
        let mut reports = Vec::new();
        // Another thread is checking: it will see what this one would.
        let Ok(mut window) = self.window.try_lock() else { return reports };
        if !self.started.load(Ordering::Relaxed) {
            drop(window);
            self.start(flag, counters, now, wall);
            return reports;
        }
        let epoch = window.number & 0xff;
        let over = now.saturating_sub(window.began) >= self.window_ms;
        if over || newest(flag, wall) != window.watching {
            if over
                && let Some(stage) = window.watching.and_then(|s| flag.stages.as_deref()?.get(s))
            {
                // A group that saw nothing for the whole window: say so, once.
                for (i, (rates, group)) in [
                    (self.exposed.rates(epoch), "exposed"),
                    (
                        self.control.rates(epoch),
                        if self.holds_back() { "held-back" } else { "not-exposed" },
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    let starved = rates.1 == 0;
                    if starved && !window.starved[i] {
                        reports.push(Report::Starved(GuardStarved {
                            flag: flag.key.to_string(),
                            stage: stage.name.to_owned(),
                            group: group.to_owned(),
                            window_secs: u64::try_from(self.window_ms / 1000).unwrap_or(0),
                        }));
                    }
                    window.starved[i] = starved;
                }
                // Sampling for the next window, from how full this one got.
                let used = self.exposed.rates(epoch).1.max(self.control.rates(epoch).1) as usize;
                let level = self.level.load(Ordering::Relaxed);
                if used > FULL && level < MAX_LEVEL {
                    self.level.store(level + 1, Ordering::Relaxed);
                } else if used < FULL / 4 && level > 0 {
                    self.level.store(level - 1, Ordering::Relaxed);
                }
            }
            self.begin(&mut window, flag, counters, now, wall);
            return reports;
        }
        let Some(index) = window.watching else { return reports };
        let Some(stage) = flag.stages.as_deref().and_then(|s| s.get(index)) else { return reports };
        if !flag.enabled {
            return reports;
        }
        let ((exposed, exposed_seen), (control, control_seen)) =
            (self.exposed.rates(epoch), self.control.rates(epoch));
        let control_group =
            if self.holds_back() { ControlGroup::HeldBack } else { ControlGroup::NotExposed };
        window.last = Some(Evidence { stage: stage.name, exposed, control, control_group });

        // Groups that are not what the holdback says they are decide nothing.
        if let Some(holdback) = self.holdback {
            let split = sample_ratio_mismatch(exposed_seen, control_seen, holdback);
            if split.mismatch {
                if !window.reported_mismatch {
                    window.reported_mismatch = true;
                    reports.push(Report::Mismatch(GuardMismatch {
                        flag: flag.key.to_string(),
                        stage: stage.name.to_owned(),
                        exposed_units: exposed_seen,
                        control_units: control_seen,
                        control_share: split.control_share,
                        expected_share: holdback,
                    }));
                }
                return reports;
            }
        }
        if window.reported_trip {
            return reports;
        }
        let window_secs = u64::try_from(self.window_ms / 1000).unwrap_or(0);
        let trip = |cause: TripCause,
                    c: super::evidence::Comparison,
                    exposed_n: u64,
                    control_n: u64| GuardTrip {
            flag: flag.key.to_string(),
            stage: stage.name.to_owned(),
            action: self.action,
            version: 0,
            now_serving: None,
            cause,
            control: control_group,
            exposed_units: exposed_n,
            control_units: control_n,
            exposed_value: c.exposed,
            control_value: c.control,
            lower: c.lower,
            confidence: self.confidence,
            window_secs,
        };
        for (rule, test) in self.error_rules.iter().zip(window.error_tests.iter_mut()) {
            let c = test.check(&exposed, &control);
            if c.regressed {
                window.reported_trip = true;
                reports.push(Report::Trip(
                    index,
                    trip(TripCause::Errors(*rule), c, exposed.units, control.units),
                ));
                return reports;
            }
        }
        if let Some(max_rate) = self.max_mismatch {
            let (n, k) =
                (self.comparisons.load(Ordering::Relaxed), self.mismatches.load(Ordering::Relaxed));
            let test = mismatch_test(n, k, max_rate, self.confidence, self.min_units);
            if test.regressed {
                window.reported_trip = true;
                let c = super::evidence::Comparison {
                    exposed: test.rate,
                    control: max_rate,
                    difference: test.rate - max_rate,
                    lower: test.log_likelihood_ratio,
                    upper: f64::INFINITY,
                    regressed: true,
                    enough: true,
                };
                reports
                    .push(Report::Trip(index, trip(TripCause::Mismatches { max_rate }, c, n, 0)));
                return reports;
            }
        }
        let Window { latency_start, latency_test, reported_trip, .. } = &mut *window;
        if let (Some((quantile, max_ratio)), Some((start_e, start_c)), Some(test)) =
            (self.latency, latency_start.as_ref(), latency_test.as_mut())
        {
            let now_e = buckets(counters, flag.series.outcomes.get(1 + index));
            let now_c = buckets(counters, self.control_block(flag));
            let (e, c) = (since(&now_e, start_e), since(&now_c, start_c));
            let cmp = test.check(&e, &c);
            if cmp.regressed {
                *reported_trip = true;
                let cause = TripCause::Latency { quantile, max_ratio };
                reports.push(Report::Trip(index, trip(cause, cmp, e.count(), c.count())));
            }
        }
        reports
    }
}

/// The newest stage in effect at wall time `wall`.
fn newest(flag: &Flag, wall: i64) -> Option<usize> {
    let stages = flag.stages.as_deref()?;
    stages.iter().rposition(|s| s.start_at == crate::compile::NO_START || s.start_at <= wall)
}

/// The cumulative latency buckets of an outcome block.
fn buckets(counters: &Counters, block: Option<&u32>) -> [u64; LATENCY_BUCKETS] {
    let mut out = [0u64; LATENCY_BUCKETS];
    if let Some(&block) = block {
        for (i, b) in out.iter_mut().enumerate() {
            *b = counters.read(block + LATENCY_BUCKET_0 + i as u32);
        }
    }
    out
}

fn since(now: &[u64; LATENCY_BUCKETS], then: &[u64; LATENCY_BUCKETS]) -> Latency {
    let mut latency = Latency::default();
    for (i, b) in latency.buckets.iter_mut().enumerate() {
        *b = now[i].saturating_sub(then[i]);
    }
    latency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_unit_and_start_over_in_a_new_window() {
        let table = UnitTable::new();
        for i in 0..10u64 {
            assert!(table.add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1, i % 2 == 0));
        }
        // One more unit, with one error in two outcomes.
        let other = (12_345u64 << 41) | 3;
        assert!(table.add(other, 1, true) && table.add(other, 1, false));
        // Units count as evidence from MIN_UNIT_OUTCOMES outcomes; all are seen.
        let (rates, seen) = table.rates(1);
        assert_eq!((rates.units, seen), (0, 11));
        for _ in 0..MIN_UNIT_OUTCOMES {
            table.add(other, 1, false);
        }
        let (rates, _) = table.rates(1);
        assert_eq!(rates.units, 1);
        assert!((rates.mean() - 1.0 / 12.0).abs() < 1e-12, "{}", rates.mean());
        assert_eq!(table.rates(2).1, 0);
        table.clear_except(2);
        assert_eq!(table.rates(1).1, 0);
    }

    #[test]
    fn a_full_line_drops_the_ninth_unit_and_says_so() {
        let table = UnitTable::new();
        // Nine units on one line (same low bits, different tags).
        let hash = |i: u64| (i << 41) | 8;
        for i in 1..=8 {
            assert!(table.add(hash(i), 1, false));
        }
        assert!(!table.add(hash(9), 1, false));
        assert!(table.add(hash(9), 2, false), "a new window takes stale slots");
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let (tag, epoch) = (5, 3);
        let v = encode(tag, epoch, u16::MAX, 7);
        assert_eq!(decode(v), (tag, epoch, u16::MAX, 7));
    }
}
