//! A point-in-time read of a store's counters, and its exports.

use std::collections::BTreeMap;
use std::time::Duration;

/// How many latency buckets a histogram has: the bounds of
/// [`LATENCY_BOUNDS`] and one for everything slower.
pub const LATENCY_BUCKETS: usize = 16;

/// The upper bounds of the latency buckets: 250 µs doubling up to 4.096 s
/// (log-scale, so one histogram serves a cache hit and a slow query alike).
pub const LATENCY_BOUNDS: [Duration; LATENCY_BUCKETS - 1] = {
    let mut bounds = [Duration::ZERO; LATENCY_BUCKETS - 1];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = Duration::from_micros(250 << i);
        i += 1;
    }
    bounds
};

/// The bucket a latency falls in: the first whose bound it does not exceed.
#[inline]
pub(crate) fn latency_bucket(latency: Duration) -> usize {
    // In units of the first bound, rounded up: bucket k holds q <= 2^k.
    let q = latency.as_micros().div_ceil(250);
    let q = u64::try_from(q).unwrap_or(u64::MAX);
    let k = if q <= 1 { 0 } else { (u64::BITS - (q - 1).leading_zeros()) as usize };
    k.min(LATENCY_BUCKETS - 1)
}

/// What [`FlagStore::metrics`](crate::FlagStore::metrics) read: evaluations
/// and outcomes per flag and stage, since the store was made.
///
/// Series that have counted nothing are left out. Counts are totals, as a
/// Prometheus counter is; [`Metrics::since`] gives the change between two
/// reads.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore, Outcome};
/// use std::time::Duration;
///
/// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "new-checkout": {
///     "enabled": true, "stages": [ { "name": "canary", "percent": 100 } ], "stage": "canary"
/// } } }"#)?;
/// let ctx = Context::new().user("u-42");
/// assert!(store.is_enabled("new-checkout", &ctx));
/// store.record("new-checkout", &ctx, Outcome::Latency(Duration::from_millis(3)));
///
/// let metrics = store.metrics();
/// assert_eq!(metrics.evaluations_of("new-checkout", "canary"), 1);
/// assert!(metrics.to_prometheus().contains(
///     r#"flagstone_evaluations_total{feature_flag_key="new-checkout",stage="canary",feature_flag_result_variant="",result="on"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub(crate) evaluations: Vec<EvaluationCount>,
    pub(crate) outcomes: Vec<OutcomeCount>,
    pub(crate) guards: Vec<GuardEvidence>,
    pub(crate) guard_trips: Vec<GuardTripCount>,
    pub(crate) version: u64,
    pub(crate) stepped_back: Vec<SteppedBack>,
    pub(crate) migrations: Vec<crate::migration::MigrationCount>,
}

/// A stage a guard stepped back on the serving version (cleared when a new
/// version is applied): what the fleet controller counts as a trip.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SteppedBack {
    /// The flag's key.
    pub flag: String,
    /// The stage the guard stepped back.
    pub stage: String,
}

/// What a flag's guard saw in its current window, at its last look: the
/// evidence the fleet controller sums over instances.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuardEvidence {
    /// The flag's key.
    pub flag: String,
    /// The stage the guard watches.
    pub stage: &'static str,
    /// What it compares the stage with.
    pub control_group: super::ControlGroup,
    /// The stage's units.
    pub exposed: super::evidence::UnitRates,
    /// The control's units.
    pub control: super::evidence::UnitRates,
}

/// How many times guards tripped on a flag's stage, on this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardTripCount {
    /// The flag's key.
    pub flag: String,
    /// The stage tripped on.
    pub stage: String,
    /// How many trips.
    pub count: u64,
}

/// Evaluations of one flag that fell in one stage (or group) with one variant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvaluationCount {
    /// The flag's key; empty for keys the store has never known (typos),
    /// and for the `retired` totals.
    pub flag: String,
    /// The stage that exposed the context, `on` for a flag without stages,
    /// or `off`, `excluded`, `not-exposed`, `held-back`, `prerequisite`,
    /// `override` (a local override answered) or `unknown`; `retired` (with an
    /// empty flag) for the counts of flag keys the store has forgotten
    /// (no kept config, handle or override holds them any more).
    pub stage: &'static str,
    /// The variant handed out; `None` for contexts not exposed, flags
    /// without variants, and `is_enabled` (which does not pick one).
    pub variant: Option<&'static str>,
    /// Whether the flag was on.
    pub enabled: bool,
    /// How many evaluations.
    pub count: u64,
}

/// Outcomes recorded for one flag and one group: a stage that exposes the
/// context (or `on`), or `not-exposed` for everyone else.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutcomeCount {
    /// The flag's key; empty for the `retired` totals.
    pub flag: String,
    /// The exposing stage, `on`, or `not-exposed`.
    pub stage: &'static str,
    /// [`Outcome::Success`](crate::Outcome::Success) recorded.
    pub successes: u64,
    /// [`Outcome::Error`](crate::Outcome::Error) recorded.
    pub errors: u64,
    /// [`Outcome::Latency`](crate::Outcome::Latency) recorded.
    pub latency: Latency,
}

/// A latency histogram with the fixed buckets of [`LATENCY_BOUNDS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Samples per bucket (not cumulative); the last is above every bound.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// The sum of the samples.
    pub sum: Duration,
}

impl Latency {
    /// How many samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a.wrapping_add(*b))
    }
}

impl OutcomeCount {
    /// Errors over successes and errors; 0 with no samples.
    pub fn error_rate(&self) -> f64 {
        let total = self.successes + self.errors;
        if total == 0 { 0.0 } else { self.errors as f64 / total as f64 }
    }
}

impl Metrics {
    /// Evaluation counts, ordered by flag, stage, variant and result.
    pub fn evaluations(&self) -> &[EvaluationCount] {
        &self.evaluations
    }

    /// Outcome counts, ordered by flag and stage.
    pub fn outcomes(&self) -> &[OutcomeCount] {
        &self.outcomes
    }

    /// The evaluations of `flag` in `stage` (a stage name or group label),
    /// whatever their variant.
    pub fn evaluations_of(&self, flag: &str, stage: &str) -> u64 {
        self.evaluations
            .iter()
            .filter(|e| e.flag == flag && e.stage == stage)
            .map(|e| e.count)
            .sum()
    }

    /// What each guard saw at its last look.
    pub fn guards(&self) -> &[GuardEvidence] {
        &self.guards
    }

    /// Guard trips on this instance, by flag and stage.
    pub fn guard_trips(&self) -> &[GuardTripCount] {
        &self.guard_trips
    }

    /// The version of the config serving when these were read (0 when
    /// none was; [`FlagStore::metrics`](crate::FlagStore::metrics) sets it).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The stages guards stepped back on the serving version.
    pub fn stepped_back(&self) -> &[SteppedBack] {
        &self.stepped_back
    }

    /// What the migrators of the store's migration flags did, by flag,
    /// stage and step ([`crate::migration`]).
    pub fn migrations(&self) -> &[crate::migration::MigrationCount] {
        &self.migrations
    }

    /// What migrators did for `flag` in `stage` at `step`, if anything.
    pub fn migration_of(
        &self,
        flag: &str,
        stage: &str,
        step: crate::MigrationStep,
    ) -> Option<&crate::migration::MigrationCount> {
        self.migrations.iter().find(|m| m.flag == flag && m.stage == stage && m.step == step)
    }

    /// The outcomes recorded for `flag` in `stage` (or `not-exposed`).
    pub fn outcomes_of(&self, flag: &str, stage: &str) -> Option<&OutcomeCount> {
        self.outcomes.iter().find(|o| o.flag == flag && o.stage == stage)
    }

    /// What changed since an earlier read of the same store: the counts
    /// added in between (series that added nothing are left out).
    pub fn since(&self, earlier: &Metrics) -> Metrics {
        let before: BTreeMap<_, _> = earlier
            .evaluations
            .iter()
            .map(|e| ((e.flag.as_str(), e.stage, e.variant, e.enabled), e.count))
            .collect();
        let evaluations = self
            .evaluations
            .iter()
            .filter_map(|e| {
                let was = before.get(&(e.flag.as_str(), e.stage, e.variant, e.enabled)).copied();
                let count = e.count.saturating_sub(was.unwrap_or(0));
                (count > 0).then(|| EvaluationCount { count, ..e.clone() })
            })
            .collect();
        let before: BTreeMap<_, _> =
            earlier.outcomes.iter().map(|o| ((o.flag.as_str(), o.stage), o)).collect();
        let outcomes = self
            .outcomes
            .iter()
            .filter_map(|o| {
                let Some(was) = before.get(&(o.flag.as_str(), o.stage)) else {
                    return Some(o.clone());
                };
                let mut latency = o.latency.clone();
                for (now, then) in latency.buckets.iter_mut().zip(was.latency.buckets) {
                    *now = now.saturating_sub(then);
                }
                latency.sum = latency.sum.saturating_sub(was.latency.sum);
                let delta = OutcomeCount {
                    flag: o.flag.clone(),
                    stage: o.stage,
                    successes: o.successes.saturating_sub(was.successes),
                    errors: o.errors.saturating_sub(was.errors),
                    latency,
                };
                let empty = delta.successes == 0 && delta.errors == 0 && delta.latency.count() == 0;
                (!empty).then_some(delta)
            })
            .collect();
        Metrics {
            evaluations,
            outcomes,
            guards: self.guards.clone(),
            guard_trips: self.guard_trips.clone(),
            version: self.version,
            stepped_back: self.stepped_back.clone(),
            migrations: self
                .migrations
                .iter()
                .map(|m| {
                    let was = earlier
                        .migrations
                        .iter()
                        .find(|e| e.flag == m.flag && e.stage == m.stage && e.step == m.step);
                    was.map_or_else(|| m.clone(), |was| m.minus(was))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let us = Duration::from_micros;
        assert_eq!(latency_bucket(Duration::ZERO), 0);
        assert_eq!(latency_bucket(us(250)), 0);
        assert_eq!(latency_bucket(us(251)), 1);
        assert_eq!(latency_bucket(us(500)), 1);
        assert_eq!(latency_bucket(us(501)), 2);
        assert_eq!(latency_bucket(Duration::from_millis(3)), 4); // 2 ms < 3 ms <= 4 ms
        assert_eq!(latency_bucket(LATENCY_BOUNDS[14]), 14);
        assert_eq!(latency_bucket(Duration::from_secs(5)), 15);
        assert_eq!(latency_bucket(Duration::MAX), 15);
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            assert_eq!(latency_bucket(*bound), i);
            assert_eq!(latency_bucket(*bound + Duration::from_nanos(1000)), i + 1);
        }
    }
}
