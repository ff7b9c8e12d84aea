//! A migrator's counts: per stage × step × origin × operation, in
//! relaxed atomics, read by [`FlagStore::metrics`](crate::FlagStore::metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{MigrationStep, Operation, Origin};
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
struct StageCounts {
    steps: [StepCounts; 6],
}

/// A migrator's counts, by the stage label its contexts fell in.
#[derive(Debug)]
pub(crate) struct MigrationCounts {
    pub(crate) flag: Box<str>,
    /// Stage labels are interned (`&'static`) and few: a linear scan by
    /// address finds one; a new label copies the list once.
    stages: ArcSwap<Vec<(&'static str, Arc<StageCounts>)>>,
    grow: Mutex<()>,
}

impl MigrationCounts {
    pub(crate) fn new(flag: &str) -> Self {
        Self { flag: flag.into(), stages: ArcSwap::default(), grow: Mutex::new(()) }
    }

    /// Runs `f` on the counts of `stage`, made on first use.
    fn with_stage<R>(&self, stage: &'static str, f: impl FnOnce(&StageCounts) -> R) -> R {
        let same = |s: &&'static str| std::ptr::eq(*s, stage) || *s == stage;
        {
            let list = self.stages.load();
            if let Some((_, counts)) = list.iter().find(|(s, _)| same(s)) {
                return f(counts);
            }
        }
        let _grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let list = self.stages.load_full();
        if let Some((_, counts)) = list.iter().find(|(s, _)| same(s)) {
            return f(counts);
        }
        let counts = Arc::new(StageCounts::default());
        let mut grown = Vec::clone(&list);
        grown.push((stage, counts.clone()));
        self.stages.store(Arc::new(grown));
        f(&counts)
    }

    /// Counts one call of one side.
    pub(crate) fn call(
        &self,
        stage: &'static str,
        step: MigrationStep,
        origin: Origin,
        operation: Operation,
        failed: bool,
        took: Duration,
    ) {
        self.with_stage(stage, |stage| {
            let side = &stage.steps[step.index()].sides[origin as usize][operation as usize];
            side.calls.fetch_add(1, Ordering::Relaxed);
            if failed {
                side.errors.fetch_add(1, Ordering::Relaxed);
            }
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            side.nanos.fetch_add(nanos, Ordering::Relaxed);
            side.buckets[latency_bucket(took)].fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Counts one comparison of reads.
    pub(crate) fn compared(&self, stage: &'static str, step: MigrationStep, mismatched: bool) {
        self.with_stage(stage, |stage| {
            let counts = &stage.steps[step.index()];
            counts.comparisons.fetch_add(1, Ordering::Relaxed);
            if mismatched {
                counts.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Everything counted so far, added to `out`.
    pub(crate) fn read_into(&self, out: &mut Vec<MigrationCount>) {
        for (stage, counts) in self.stages.load().iter() {
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
                let count = MigrationCount {
                    flag: self.flag.to_string(),
                    stage,
                    step,
                    old: side(Origin::Old),
                    new: side(Origin::New),
                    comparisons: c.comparisons.load(Ordering::Relaxed),
                    mismatches: c.mismatches.load(Ordering::Relaxed),
                };
                if count.is_empty() {
                    continue;
                }
                match out
                    .iter_mut()
                    .find(|m| m.flag == count.flag && m.stage == *stage && m.step == step)
                {
                    Some(existing) => existing.add(&count),
                    None => out.push(count),
                }
            }
        }
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
    fn add(&mut self, other: &OperationCount) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (a, b) in self.latency.buckets.iter_mut().zip(&other.latency.buckets) {
            *a += b;
        }
        self.latency.sum += other.latency.sum;
    }

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

    fn is_empty(&self) -> bool {
        self.comparisons == 0
            && [&self.old, &self.new].iter().all(|o| o.reads.calls == 0 && o.writes.calls == 0)
    }

    fn add(&mut self, other: &MigrationCount) {
        for (mine, theirs) in [(&mut self.old, &other.old), (&mut self.new, &other.new)] {
            mine.reads.add(&theirs.reads);
            mine.writes.add(&theirs.writes);
        }
        self.comparisons += other.comparisons;
        self.mismatches += other.mismatches;
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
