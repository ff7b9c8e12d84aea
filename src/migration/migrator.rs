//! [`Migrator`]: runs the reads and writes a context's step calls for.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MigrationStep;
use crate::context::Context;
use crate::observe::Outcome;
use crate::store::{FlagHandle, FlagStore, MigrationDecision};

type Call<I, O, E> = Box<dyn Fn(&I) -> Result<O, E> + Send + Sync>;
type Compare<T> = Box<dyn Fn(&T, &T) -> bool + Send + Sync>;

/// Which store an operation went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The store being migrated from.
    Old,
    /// The store being migrated to.
    New,
}

impl Origin {
    /// `old` or `new`, as in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Old => "old",
            Origin::New => "new",
        }
    }

    /// The other store.
    pub const fn other(self) -> Origin {
        match self {
            Origin::Old => Origin::New,
            Origin::New => Origin::Old,
        }
    }
}

/// A read or a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Read,
    Write,
}

/// How the reads of a step that reads both stores (`shadow`, `live`) run.
/// Writes always run one after the other, the authoritative store first,
/// and the other only when the first succeeded: a store never holds a
/// write the authoritative one refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Order {
    /// The old store's read, then the new store's (the default).
    #[default]
    OldFirst,
    /// The new store's read, then the old store's.
    NewFirst,
    /// Both at once, the new store's on a scoped thread: the latency of
    /// the slower, plus a thread's start (tens of microseconds).
    Parallel,
}

/// A missing part of a [`MigratorBuilder`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the migrator for flag {flag:?} needs `{missing}`")]
pub struct MigratorError {
    flag: String,
    missing: &'static str,
}

/// Builds a [`Migrator`]: [`Migrator::builder`].
pub struct MigratorBuilder<R, W, T, U, E> {
    store: Arc<FlagStore>,
    flag: String,
    read_old: Option<Call<R, T, E>>,
    read_new: Option<Call<R, T, E>>,
    write_old: Option<Call<W, U, E>>,
    write_new: Option<Call<W, U, E>>,
    compare: Option<Compare<T>>,
    order: Order,
    time_every: u32,
}

impl<R, W, T, U, E> MigratorBuilder<R, W, T, U, E> {
    /// Reads from the old store.
    #[must_use]
    pub fn read_old(mut self, read: impl Fn(&R) -> Result<T, E> + Send + Sync + 'static) -> Self {
        self.read_old = Some(Box::new(read));
        self
    }

    /// Reads from the new store.
    #[must_use]
    pub fn read_new(mut self, read: impl Fn(&R) -> Result<T, E> + Send + Sync + 'static) -> Self {
        self.read_new = Some(Box::new(read));
        self
    }

    /// Writes to the old store.
    #[must_use]
    pub fn write_old(mut self, write: impl Fn(&W) -> Result<U, E> + Send + Sync + 'static) -> Self {
        self.write_old = Some(Box::new(write));
        self
    }

    /// Writes to the new store.
    #[must_use]
    pub fn write_new(mut self, write: impl Fn(&W) -> Result<U, E> + Send + Sync + 'static) -> Self {
        self.write_new = Some(Box::new(write));
        self
    }

    /// Whether two reads agree (`old`, `new`), for the steps that compare
    /// (`shadow`, `live`). Without it reads are not compared.
    #[must_use]
    pub fn compare(mut self, agree: impl Fn(&T, &T) -> bool + Send + Sync + 'static) -> Self {
        self.compare = Some(Box::new(agree));
        self
    }

    /// How reads of both stores run ([`Order`]; old first by default).
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Times one operation in `every` on each thread (64 by default; 1
    /// times every one; 0 is taken as 1). Timing costs a clock read per
    /// store called plus one, more than deciding the step, so the latency
    /// histograms are sampled: unbiased, at a 64th of the samples. Reads,
    /// writes, errors and mismatches are always counted in full, and a
    /// flag whose guard judges latency has every operation timed, so its
    /// guard gets all the evidence.
    #[must_use]
    pub fn time_every(mut self, every: u32) -> Self {
        self.time_every = every.max(1);
        self
    }

    /// The migrator, once the four operations are given.
    pub fn build(self) -> Result<Migrator<R, W, T, U, E>, MigratorError> {
        let missing = |missing| MigratorError { flag: self.flag.clone(), missing };
        let read_old = self.read_old.ok_or_else(|| missing("read_old"))?;
        let read_new = self.read_new.ok_or_else(|| missing("read_new"))?;
        let write_old = self.write_old.ok_or_else(|| missing("write_old"))?;
        let write_new = self.write_new.ok_or_else(|| missing("write_new"))?;
        Ok(Migrator {
            handle: self.store.handle(&self.flag),
            read_old,
            read_new,
            write_old,
            write_new,
            compare: self.compare,
            order: self.order,
            time_every: self.time_every,
        })
    }
}

impl<R, W, T, U, E> fmt::Debug for MigratorBuilder<R, W, T, U, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigratorBuilder")
            .field("flag", &self.flag)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// Runs a data migration's reads and writes as each context's
/// [`MigrationStep`] says ([module docs](super)), returns the
/// authoritative store's result, and counts what both stores did.
///
/// `R` is what a read takes (a key), `T` what it returns; `W` what a
/// write takes (a record), `U` what it returns; `E` the stores' error.
///
/// Deciding the step does not allocate, lock or wait; counting is a few
/// relaxed atomic adds. The failure of the store that is not
/// authoritative never fails the call: it is counted (in the metrics'
/// `flagstone_migration_errors_total`), and a failed write there leaves
/// that store behind, which the counts make visible.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use flagstone::{Context, FlagStore};
/// use flagstone::migration::Migrator;
///
/// let store = Arc::new(FlagStore::from_json(r#"{ "version": 1, "flags": { "users-split": {
///     "enabled": true, "migration": true, "bucket_by": "tenant",
///     "stages": [ { "name": "everyone", "step": "dualwrite" } ], "stage": "everyone" } } }"#)?);
/// let (old, new) = (Arc::new(Mutex::new(HashMap::new())), Arc::new(Mutex::new(HashMap::new())));
/// let (o1, o2, n1, n2) = (old.clone(), old.clone(), new.clone(), new.clone());
/// let users = Migrator::builder(store, "users-split")
///     .read_old(move |id: &u32| Ok::<_, String>(o1.lock().unwrap().get(id).cloned()))
///     .read_new(move |id: &u32| Ok(n1.lock().unwrap().get(id).cloned()))
///     .write_old(move |(id, name): &(u32, String)| { o2.lock().unwrap().insert(*id, name.clone()); Ok(()) })
///     .write_new(move |(id, name): &(u32, String)| { n2.lock().unwrap().insert(*id, name.clone()); Ok(()) })
///     .compare(|a, b| a == b)
///     .build()?;
///
/// let ctx = Context::new().tenant("acme");
/// users.write(&ctx, &(7, "Ada Lovelace".to_owned()))?; // dualwrite: both stores
/// assert_eq!(users.read(&ctx, &7)?, Some("Ada Lovelace".to_owned())); // from the old
/// assert_eq!(new.lock().unwrap().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Migrator<R, W, T, U, E> {
    handle: FlagHandle,
    read_old: Call<R, T, E>,
    read_new: Call<R, T, E>,
    write_old: Call<W, U, E>,
    write_new: Call<W, U, E>,
    compare: Option<Compare<T>>,
    order: Order,
    time_every: u32,
}

impl Migrator<(), (), (), (), ()> {
    /// A builder for a migrator of `flag`, a migration flag of `store`.
    /// A flag the store does not have (yet) puts every context at `off`.
    pub fn builder<R, W, T, U, E>(
        store: Arc<FlagStore>,
        flag: &str,
    ) -> MigratorBuilder<R, W, T, U, E> {
        MigratorBuilder {
            store,
            flag: flag.to_owned(),
            read_old: None,
            read_new: None,
            write_old: None,
            write_new: None,
            compare: None,
            order: Order::default(),
            time_every: 64,
        }
    }
}

impl<R, W, T, U, E> Migrator<R, W, T, U, E> {
    /// The step `ctx` is at now.
    pub fn step(&self, ctx: &Context<'_>) -> MigrationStep {
        self.handle.migration_step(ctx)
    }

    /// Writes `input` as the context's step says: the authoritative store
    /// first (old before `live`, new from it), then the other one, only if
    /// the first succeeded and the step writes both. Returns the
    /// authoritative store's result.
    pub fn write(&self, ctx: &Context<'_>, input: &W) -> Result<U, E> {
        self.handle.with_migration_decision(ctx, |decision| self.write_as(decision, ctx, input))
    }

    fn write_as(
        &self,
        decision: &MigrationDecision<'_>,
        ctx: &Context<'_>,
        input: &W,
    ) -> Result<U, E> {
        let step = decision.step;
        let clock = Clock::start(decision.time_every(self.time_every));
        let (first, second) = (step.authoritative(), step.authoritative().other());
        let write = |origin| match origin {
            Origin::Old => &self.write_old,
            Origin::New => &self.write_new,
        };
        let result = write(first)(input);
        let took = clock.lap();
        let other = (result.is_ok() && step.writes(second)).then(|| write(second)(input).is_err());
        let other_took = clock.lap();
        if let Some(counts) = decision.counts() {
            counts.call(step, first, Operation::Write, result.is_err(), took);
            if let Some(failed) = other {
                counts.followed(step, second, Operation::Write, failed, other_took);
            }
        }
        self.record(decision, ctx, result.is_err(), took);
        result
    }

    /// The authoritative call's outcome, for the flag's guard (its error
    /// and latency evidence) and outcome counts, when it has a guard.
    fn record(
        &self,
        decision: &MigrationDecision<'_>,
        ctx: &Context<'_>,
        failed: bool,
        took: Option<Duration>,
    ) {
        let outcome = if failed { Outcome::Error } else { Outcome::Success };
        decision.record(ctx, outcome);
        if let Some(took) = took {
            decision.record(ctx, Outcome::Latency(took));
        }
    }
}

impl<R, W, T, U, E> Migrator<R, W, T, U, E>
where
    R: Sync,
    T: Send,
    E: Send,
{
    /// Reads `input` as the context's step says, and returns the
    /// authoritative store's answer. At `shadow` and `live` both stores
    /// are read (in the builder's [`Order`]) and, when both answered,
    /// compared; a mismatch is counted, and is evidence for the flag's
    /// guard (`max_mismatch_rate`).
    pub fn read(&self, ctx: &Context<'_>, input: &R) -> Result<T, E> {
        self.handle.with_migration_decision(ctx, |decision| self.read_as(decision, ctx, input))
    }

    fn read_as(
        &self,
        decision: &MigrationDecision<'_>,
        ctx: &Context<'_>,
        input: &R,
    ) -> Result<T, E> {
        let step = decision.step;
        let clock = Clock::start(decision.time_every(self.time_every));
        if !step.compares() {
            let (origin, read) = if step.reads_new() {
                (Origin::New, &self.read_new)
            } else {
                (Origin::Old, &self.read_old)
            };
            let result = read(input);
            let took = clock.lap();
            if let Some(counts) = decision.counts() {
                counts.call(step, origin, Operation::Read, result.is_err(), took);
            }
            self.record(decision, ctx, result.is_err(), took);
            return result;
        }
        let ((old, old_took), (new, new_took)) = match self.order {
            Order::OldFirst => {
                let old = ((self.read_old)(input), clock.lap());
                (old, ((self.read_new)(input), clock.lap()))
            }
            Order::NewFirst => {
                let new = ((self.read_new)(input), clock.lap());
                (((self.read_old)(input), clock.lap()), new)
            }
            Order::Parallel => std::thread::scope(|scope| {
                let timing = u32::from(clock.on());
                let new = scope.spawn(move || {
                    let clock = Clock::start(timing);
                    ((self.read_new)(input), clock.lap())
                });
                let old = ((self.read_old)(input), clock.lap());
                match new.join() {
                    Ok(new) => (old, new),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }),
        };
        let mismatched = match (&self.compare, &old, &new) {
            (Some(agree), Ok(o), Ok(n)) => Some(!agree(o, n)),
            _ => None,
        };
        let ((result, took), (other, other_took)) = match step.authoritative() {
            Origin::Old => ((old, old_took), (new, new_took)),
            Origin::New => ((new, new_took), (old, old_took)),
        };
        if let Some(counts) = decision.counts() {
            let first = step.authoritative();
            counts.call(step, first, Operation::Read, result.is_err(), took);
            counts.followed(step, first.other(), Operation::Read, other.is_err(), other_took);
            if let Some(mismatched) = mismatched {
                counts.compared(step, mismatched);
            }
        }
        if let Some(mismatched) = mismatched {
            decision.record_comparison(mismatched);
        }
        self.record(decision, ctx, result.is_err(), took);
        result
    }
}

impl<R, W, T, U, E> fmt::Debug for Migrator<R, W, T, U, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrator")
            .field("flag", &self.handle.key())
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Operations this thread starts before it times the next one.
    static OPERATIONS: Cell<u32> = const { Cell::new(0) };
}

/// An operation's stopwatch, running on one operation in `every`.
struct Clock {
    last: Cell<Option<Instant>>,
}

impl Clock {
    /// Starts timing this operation if it is this thread's turn (`every`
    /// 1: always; 0: never).
    #[inline]
    fn start(every: u32) -> Self {
        let on = match every {
            0 => false,
            1 => true,
            every => OPERATIONS
                .try_with(|left| {
                    // A countdown, not a division: one in `every` is timed.
                    let n = left.get();
                    let due = n <= 1;
                    left.set(if due { every } else { n - 1 });
                    due
                })
                .unwrap_or(false),
        };
        Self { last: Cell::new(on.then(Instant::now)) }
    }

    fn on(&self) -> bool {
        self.last.get().is_some()
    }

    /// The time since the start or the last lap, when timing.
    #[inline]
    fn lap(&self) -> Option<Duration> {
        let last = self.last.get()?;
        let now = Instant::now();
        self.last.set(Some(now));
        Some(now.saturating_duration_since(last))
    }
}
