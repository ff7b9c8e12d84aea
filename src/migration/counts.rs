//! Migration counts: per flag × stage × step × origin × operation, in
//! relaxed atomics, resolved per stage when a config is compiled and read
//! by [`FlagStore::metrics`](crate::FlagStore::metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{MigrationStep, Operation, Origin};
use crate::eval::Reason;
use crate::observe::{LATENCY_BUCKETS, Latency, latency_bucket};

/// What one side (old or new) of one operation (read or write) did.
#[derive(Debug, Default)]
struct SideCounts {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

/// One step's counts within a stage.
#[derive(Debug, Default)]
struct StepCounts {
    /// By origin (old, new), then operation (read, write).
    sides: [[SideCounts; 2]; 2],
    comparisons: AtomicU64,
    mismatches: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct StageCounts {
    steps: [StepCounts; 6],
}

impl StageCounts {
    /// Counts one call of the authoritative side; its latency when it was
    /// timed.
    #[inline]
    pub(crate) fn call(
        &self,
        step: MigrationStep,
        origin: Origin,
        operation: Operation,
        failed: bool,
        took: Option<Duration>,
    ) {
        let side = self.side(step, origin, operation);
        side.calls.fetch_add(1, Ordering::Relaxed);
        self.fail_and_time(side, failed, took);
    }

    /// Counts the other side's call of an operation whose authoritative
    /// call was counted. Its calls are not counted but derived when read
    /// ([`Registry::read`]): a compared read calls both stores, and a
    /// write calls the other store exactly when the authoritative one
    /// succeeded. One atomic add less per dual operation.
    #[inline]
    pub(crate) fn followed(
        &self,
        step: MigrationStep,
        origin: Origin,
        operation: Operation,
        failed: bool,
        took: Option<Duration>,
    ) {
        self.fail_and_time(self.side(step, origin, operation), failed, took);
    }

    #[inline]
    fn side(&self, step: MigrationStep, origin: Origin, operation: Operation) -> &SideCounts {
        &self.steps[step.index()].sides[origin as usize][operation as usize]
    }

    #[inline]
    fn fail_and_time(&self, side: &SideCounts, failed: bool, took: Option<Duration>) {
        if failed {
            side.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(took) = took {
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            side.nanos.fetch_add(nanos, Ordering::Relaxed);
            side.buckets[latency_bucket(took)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one comparison of reads.
    #[inline]
    pub(crate) fn compared(&self, step: MigrationStep, mismatched: bool) {
        let counts = &self.steps[step.index()];
        counts.comparisons.fetch_add(1, Ordering::Relaxed);
        if mismatched {
            counts.mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A migration flag's counts, resolved when its config is compiled: one
/// per stage in effect and one per other group, so an operation finds
/// its counts by the decision alone (no lookup per request).
#[derive(Clone, Debug)]
pub(crate) struct FlagCounts {
    stages: Box<[Arc<StageCounts>]>,
    /// By [`group`]: the labels of contexts no stage decides.
    groups: [Arc<StageCounts>; GROUPS.len()],
}

/// The labels of decisions that are not a stage, in [`group`]'s order.
const GROUPS: [&str; 8] =
    ["unknown", "off", "excluded", "on", "not-exposed", "held-back", "prerequisite", "override"];

fn group(reason: Reason<'static>) -> usize {
    match reason {
        Reason::UnknownFlag => 0,
        Reason::KillSwitch => 1,
        Reason::Excluded { .. } => 2,
        Reason::Enabled | Reason::Stage { .. } => 3,
        Reason::NotExposed => 4,
        Reason::HeldBack { .. } => 5,
        Reason::Prerequisite { .. } => 6,
        Reason::Override { .. } => 7,
    }
}

impl FlagCounts {
    /// The counts of the group a decision put the context in.
    #[inline]
    pub(crate) fn of(&self, reason: Reason<'static>) -> &StageCounts {
        match reason {
            Reason::Stage { index, .. } if index < self.stages.len() => &self.stages[index],
            reason => &self.groups[group(reason)],
        }
    }
}

/// Every migration count of a store, by flag key and group label; kept
/// for the store's life (a flag's stages are few, and a count is never
/// lost when a config drops a stage).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    counts: BTreeMap<(Arc<str>, &'static str), Arc<StageCounts>>,
}

impl Registry {
    fn get(&mut self, flag: &Arc<str>, label: &'static str) -> Arc<StageCounts> {
        self.counts.entry((flag.clone(), label)).or_default().clone()
    }

    /// The counts of a migration flag's stages (interned names) and groups.
    pub(crate) fn flag(&mut self, flag: &Arc<str>, stages: &[&'static str]) -> FlagCounts {
        FlagCounts {
            stages: stages.iter().map(|name| self.get(flag, name)).collect(),
            groups: GROUPS.map(|label| self.get(flag, label)),
        }
    }

    /// Everything counted so far, by flag, stage and step.
    pub(crate) fn read(&self) -> Vec<MigrationCount> {
        let mut out = Vec::new();
        for ((flag, stage), counts) in &self.counts {
            for step in MigrationStep::ALL {
                let c = &counts.steps[step.index()];
                let side = |origin: Origin| {
                    let read = |op: Operation| {
                        let s = &c.sides[origin as usize][op as usize];
                        let mut latency = Latency::default();
                        for (b, a) in latency.buckets.iter_mut().zip(&s.buckets) {
                            *b = a.load(Ordering::Relaxed);
                        }
                        latency.sum = Duration::from_nanos(s.nanos.load(Ordering::Relaxed));
                        OperationCount {
                            calls: s.calls.load(Ordering::Relaxed),
                            errors: s.errors.load(Ordering::Relaxed),
                            latency,
                        }
                    };
                    OriginCount { reads: read(Operation::Read), writes: read(Operation::Write) }
                };
                let mut count = MigrationCount {
                    flag: flag.to_string(),
                    stage,
                    step,
                    old: side(Origin::Old),
                    new: side(Origin::New),
                    comparisons: c.comparisons.load(Ordering::Relaxed),
                    mismatches: c.mismatches.load(Ordering::Relaxed),
                };
                count.derive_followed_calls();
                if !count.is_empty() {
                    out.push(count);
                }
            }
        }
        out
    }
}

/// What a migration's operations did for one flag, stage and step (all
/// the [`Migrator`](super::Migrator)s of the flag together).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationCount {
    /// The flag's key.
    pub flag: String,
    /// The stage the contexts fell in (or `not-exposed`, `off`, ...).
    pub stage: &'static str,
    /// Their step.
    pub step: MigrationStep,
    /// The old store's side.
    pub old: OriginCount,
    /// The new store's side.
    pub new: OriginCount,
    /// Reads of both stores compared.
    pub comparisons: u64,
    /// Comparisons that disagreed.
    pub mismatches: u64,
}

/// One store's reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginCount {
    /// Its reads.
    pub reads: OperationCount,
    /// Its writes.
    pub writes: OperationCount,
}

/// Calls of one side for one operation: how many, how many failed, and
/// how long they took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationCount {
    /// Calls.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Their latency.
    pub latency: Latency,
}

impl OperationCount {
    fn sub(&mut self, other: &OperationCount) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.errors = self.errors.saturating_sub(other.errors);
        for (a, b) in self.latency.buckets.iter_mut().zip(&other.latency.buckets) {
            *a = a.saturating_sub(*b);
        }
        self.latency.sum = self.latency.sum.saturating_sub(other.latency.sum);
    }
}

impl MigrationCount {
    /// The mismatches over the comparisons; 0 with none.
    pub fn mismatch_rate(&self) -> f64 {
        if self.comparisons == 0 { 0.0 } else { self.mismatches as f64 / self.comparisons as f64 }
    }

    /// The side of `origin`.
    pub fn origin(&self, origin: Origin) -> &OriginCount {
        match origin {
            Origin::Old => &self.old,
            Origin::New => &self.new,
        }
    }

    /// The calls of the side that is not authoritative, which
    /// [`StageCounts::followed`] does not count: as many reads as the
    /// authoritative side's where the step compares, and as many writes as
    /// the authoritative side's that succeeded where it writes both.
    fn derive_followed_calls(&mut self) {
        let step = self.step;
        let (authoritative, other) = match step.authoritative() {
            Origin::Old => (&self.old, &mut self.new),
            Origin::New => (&self.new, &mut self.old),
        };
        if step.compares() {
            other.reads.calls = authoritative.reads.calls;
        }
        if step.writes(step.authoritative().other()) {
            other.writes.calls =
                authoritative.writes.calls.saturating_sub(authoritative.writes.errors);
        }
    }

    fn is_empty(&self) -> bool {
        self.comparisons == 0
            && [&self.old, &self.new].iter().all(|o| o.reads.calls == 0 && o.writes.calls == 0)
    }

    /// This count minus `earlier`'s (saturating).
    pub(crate) fn minus(&self, earlier: &MigrationCount) -> MigrationCount {
        let mut out = self.clone();
        for (mine, theirs) in [(&mut out.old, &earlier.old), (&mut out.new, &earlier.new)] {
            mine.reads.sub(&theirs.reads);
            mine.writes.sub(&theirs.writes);
        }
        out.comparisons = out.comparisons.saturating_sub(earlier.comparisons);
        out.mismatches = out.mismatches.saturating_sub(earlier.mismatches);
        out
    }
}
