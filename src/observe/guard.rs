//! Guards: compare the newest stage's error rate with the not-exposed
//! group's over a sliding window, and say when to step back.
//!
//! Checks run off the request path (the store's guard thread, or
//! `FlagStore::check_guards`), at most once per [`GuardState::interval`] of
//! monotonic time. The window is built from cumulative counts sampled at
//! each check, so nothing is reset and no counter is shared with requests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use super::counters::{Counters, ERRORS, SUCCESSES};
use super::events::GuardTrip;
use crate::compile::Flag;
use crate::config::{Guard, GuardAction};

/// A guard of one compiled flag, shared by the snapshots of one version.
#[derive(Debug)]
pub(crate) struct GuardState {
    max_error_ratio: f64,
    min_samples: u64,
    window_ms: i64,
    pub(crate) action: GuardAction,
    next_check: AtomicI64,
    samples: Mutex<VecDeque<Sample>>,
}

/// Cumulative (errors, successes + errors) per outcome group at a time.
#[derive(Debug)]
struct Sample {
    at: i64,
    groups: Box<[(u64, u64)]>,
}

impl GuardState {
    pub(crate) fn new(guard: &Guard) -> Self {
        let window_ms = i64::try_from(guard.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            max_error_ratio: guard.max_error_ratio,
            min_samples: guard.min_samples,
            window_ms,
            action: guard.action,
            next_check: AtomicI64::new(i64::MIN),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// How often a guard looks: a twentieth of its window, at least 50 ms.
    fn interval(&self) -> i64 {
        (self.window_ms / 20).max(50)
    }

    /// Whether a check is due at `now`: one relaxed load, for the record path.
    #[inline]
    pub(crate) fn due(&self, now: i64) -> bool {
        now >= self.next_check.load(Ordering::Relaxed)
    }

    /// Takes the first sample, the start of the first window; called when
    /// the config is installed.
    pub(crate) fn start(&self, flag: &Flag, counters: &Counters, now: i64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.clear();
        samples.push_back(Sample { at: now, groups: read(flag, counters) });
        self.next_check.store(now.saturating_add(self.interval()), Ordering::Relaxed);
    }

    /// Samples the counts and compares the newest stage in effect with the
    /// not-exposed group over the window. `Some` when the guard trips: the
    /// index of the stage and what was seen.
    pub(crate) fn check(
        &self,
        flag: &Flag,
        counters: &Counters,
        now: i64,
        wall: i64,
    ) -> Option<(usize, GuardTrip)> {
        // Another thread is checking: it will see what this one would.
        let mut samples = self.samples.try_lock().ok()?;
        if !self.due(now) {
            return None;
        }
        self.next_check.store(now.saturating_add(self.interval()), Ordering::Relaxed);
        samples.push_back(Sample { at: now, groups: read(flag, counters) });
        // The window starts at the newest sample at least `window` old (or
        // the first one, while the config is younger than the window).
        let cutoff = now.saturating_sub(self.window_ms);
        while samples.len() > 2 && samples.get(1).is_some_and(|s| s.at <= cutoff) {
            samples.pop_front();
        }
        let (first, last) = (samples.front()?, samples.back()?);

        if !flag.enabled {
            return None;
        }
        let stages = flag.stages.as_deref()?;
        let index = stages.iter().rposition(|s| s.start_at <= wall)?;
        let stage = stages.get(index)?;
        let delta = |group: usize| {
            let (e0, n0) = first.groups.get(group).copied().unwrap_or_default();
            let (e1, n1) = last.groups.get(group).copied().unwrap_or_default();
            (e1.saturating_sub(e0), n1.saturating_sub(n0))
        };
        let (stage_errors, stage_samples) = delta(1 + index);
        let (baseline_errors, baseline_samples) = delta(0);
        if stage_samples < self.min_samples || baseline_samples < self.min_samples {
            return None;
        }
        let stage_rate = stage_errors as f64 / stage_samples as f64;
        let baseline_rate = baseline_errors as f64 / baseline_samples as f64;
        // A clean baseline counts as one error in its samples, so a single
        // stray error in the stage cannot trip an infinite ratio.
        let floor = baseline_rate.max(1.0 / baseline_samples as f64);
        if stage_rate <= self.max_error_ratio * floor {
            return None;
        }
        Some((
            index,
            GuardTrip {
                flag: flag.key.to_string(),
                stage: stage.name.to_owned(),
                action: self.action,
                version: 0,
                now_serving: None,
                stage_errors,
                stage_samples,
                stage_error_rate: stage_rate,
                baseline_errors,
                baseline_samples,
                baseline_error_rate: baseline_rate,
                max_error_ratio: self.max_error_ratio,
                window_secs: u64::try_from(self.window_ms / 1000).unwrap_or(0),
            },
        ))
    }
}

/// The cumulative (errors, outcomes) of each outcome group of a flag.
fn read(flag: &Flag, counters: &Counters) -> Box<[(u64, u64)]> {
    flag.series
        .outcomes
        .iter()
        .map(|&block| {
            let errors = counters.read(block + ERRORS);
            (errors, errors.wrapping_add(counters.read(block + SUCCESSES)))
        })
        .collect()
}
