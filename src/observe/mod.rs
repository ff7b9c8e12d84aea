//! Observability: what each stage of a release is doing, and guards that
//! step a stage back on their own.
//!
//! - **Usage.** Every evaluation is counted per flag × stage (or `off`,
//!   `excluded`, `not-exposed`, `unknown`) × variant, in per-thread shards
//!   of atomic counters: two cores on one flag never write the same cache
//!   line, and counting never allocates. [`FlagStore::metrics`] sums the
//!   shards into a [`Metrics`], which renders as Prometheus text.
//! - **Outcomes.** [`FlagStore::record`] attributes an [`Outcome`] to the
//!   group the context falls in for a flag (the stage that exposes it, or
//!   `not-exposed`), without the caller tracking which that is. Latency
//!   goes into a fixed log-scale histogram ([`LATENCY_BOUNDS`]).
//! - **Guards.** A flag's [`Guard`](crate::config::Guard) compares its
//!   newest stage's error rate with the not-exposed group's, and steps the
//!   stage back on this instance when it runs away ([`GuardTrip`]).
//! - **Change events.** Every applied config, rollback and guard trip is a
//!   [`StoreEvent`] with its [`diff`](crate::diff::diff), for listeners
//!   given to [`FlagStore::on_event`] and, with the `tracing` feature, for
//!   `tracing` (never per evaluation).
//!
//! [`FlagStore::metrics`]: crate::FlagStore::metrics
//! [`FlagStore::record`]: crate::FlagStore::record
//! [`FlagStore::on_event`]: crate::FlagStore::on_event

pub(crate) mod counters;
mod events;
pub(crate) mod guard;
mod metrics;
#[cfg(feature = "metrics")]
mod metrics_crate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use events::{ChangeCause, ConfigChange, GuardTrip, StoreEvent};
pub(crate) use metrics::latency_bucket;
pub use metrics::{
    EvaluationCount, LATENCY_BOUNDS, LATENCY_BUCKETS, Latency, Metrics, OutcomeCount,
};
#[cfg(feature = "metrics")]
pub use metrics_crate::export_to_metrics;

use counters::{
    Counters, ERRORS, Group, LATENCY_BUCKET_0, LATENCY_SUM, SUCCESSES, Series, SeriesKey, Tables,
};

/// A function told of a store's events.
pub(crate) type Listener = Arc<dyn Fn(&StoreEvent) + Send + Sync>;

/// What happened to a request (or a unit of work) that checked a flag, for
/// [`FlagStore::record`](crate::FlagStore::record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Error,
    /// It took this long.
    Latency(Duration),
}

/// The counting side of a store, kept with its writer: the series, the
/// counter tables not yet folded, and the totals of those that were.
#[derive(Debug)]
pub(crate) struct Observe {
    pub(crate) enabled: bool,
    pub(crate) series: Series,
    /// Every table a compiled config may still count into; the last one is
    /// the newest.
    tables: Vec<Arc<Tables>>,
    /// Totals of tables no config counts into any more, by cell.
    folded: Totals,
    /// The previous read of [`Observe::delta`].
    last: Metrics,
}

impl Observe {
    pub(crate) fn new() -> Self {
        Self {
            enabled: true,
            series: Series::default(),
            tables: Vec::new(),
            folded: Totals::default(),
            last: Metrics::default(),
        }
    }

    /// The series to number a config's counters in; `None` when the store
    /// does not count.
    pub(crate) fn series(&mut self) -> Option<&mut Series> {
        self.enabled.then_some(&mut self.series)
    }

    /// The tables a config compiled against the current series counts into:
    /// the newest, or bigger ones when the series outgrew them. Tables grow
    /// by doubling, so a store holds at most about twice what it needs.
    pub(crate) fn tables(&mut self) -> Option<Arc<Tables>> {
        if !self.enabled {
            return None;
        }
        let (evaluations, outcomes) =
            (self.series.evaluation_cells as usize, self.series.outcome_cells as usize);
        if let Some(newest) = self.tables.last()
            && newest.evaluations.cells() >= evaluations
            && newest.outcomes.cells() >= outcomes
        {
            return Some(newest.clone());
        }
        let grow = |needed: usize, had: Option<usize>| had.map_or(needed, |h| needed.max(h * 2));
        let tables = Arc::new(Tables::new(
            grow(evaluations, self.tables.last().map(|t| t.evaluations.cells())).max(64),
            grow(outcomes, self.tables.last().map(|t| t.outcomes.cells())).max(64),
        ));
        self.tables.push(tables.clone());
        Some(tables)
    }

    /// Sums every table per cell, folding away those no config can count
    /// into any more (only this list still holds them).
    fn totals(&mut self) -> Totals {
        let mut totals = self.folded.clone();
        let mut kept = Vec::with_capacity(self.tables.len());
        for tables in self.tables.drain(..) {
            // A count of 1: no compiled config holds the tables, so no reader
            // can add to them again; what they hold now is final.
            let retired = Arc::strong_count(&tables) == 1;
            totals.add(&tables);
            if retired {
                self.folded.add(&tables);
            } else {
                kept.push(tables);
            }
        }
        self.tables = kept;
        totals
    }

    /// Reads every series into a [`Metrics`].
    pub(crate) fn read(&mut self) -> Metrics {
        let totals = self.totals();
        let eval = |id: u32| totals.evaluations.get(id as usize).copied().unwrap_or(0);
        let cell = |id: u32| totals.outcomes.get(id as usize).copied().unwrap_or(0);
        let mut evaluations = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        for (&key, &id) in &self.series.ids {
            match key {
                SeriesKey::Evaluations { flag, group, variant } => {
                    let count = eval(id);
                    if count > 0 {
                        let enabled = matches!(group, Group::Exposed(_));
                        evaluations.insert(
                            (flag, group.label(), variant, enabled),
                            EvaluationCount { flag, stage: group.label(), variant, enabled, count },
                        );
                    }
                }
                SeriesKey::Outcomes { flag, group } => {
                    let mut latency = Latency::default();
                    for (i, bucket) in latency.buckets.iter_mut().enumerate() {
                        *bucket = cell(id + LATENCY_BUCKET_0 + i as u32);
                    }
                    latency.sum = Duration::from_nanos(cell(id + LATENCY_SUM));
                    let o = OutcomeCount {
                        flag,
                        stage: group.label(),
                        successes: cell(id + SUCCESSES),
                        errors: cell(id + ERRORS),
                        latency,
                    };
                    if o.successes > 0 || o.errors > 0 || o.latency.count() > 0 {
                        outcomes.insert((flag, group.label()), o);
                    }
                }
            }
        }
        Metrics {
            evaluations: evaluations.into_values().collect(),
            outcomes: outcomes.into_values().collect(),
        }
    }

    /// What changed since the previous call.
    pub(crate) fn delta(&mut self) -> Metrics {
        let now = self.read();
        let delta = now.since(&self.last);
        self.last = now;
        delta
    }
}

/// Per-cell sums of counter tables.
#[derive(Clone, Debug, Default)]
struct Totals {
    evaluations: Vec<u64>,
    outcomes: Vec<u64>,
}

impl Totals {
    fn add(&mut self, tables: &Tables) {
        fn add(into: &mut Vec<u64>, table: &Counters) {
            if into.len() < table.cells() {
                into.resize(table.cells(), 0);
            }
            for (cell, total) in into.iter_mut().enumerate().take(table.cells()) {
                *total = total.wrapping_add(table.read(cell as u32));
            }
        }
        add(&mut self.evaluations, &tables.evaluations);
        add(&mut self.outcomes, &tables.outcomes);
    }
}

/// Hands an event to the listeners and, with the `tracing` feature, to
/// `tracing`, with OpenTelemetry's feature-flag attribute names.
#[cold]
pub(crate) fn emit(listeners: &[Listener], event: &StoreEvent) {
    #[cfg(feature = "tracing")]
    trace_event(event);
    for listener in listeners {
        listener(event);
    }
}

#[cfg(feature = "tracing")]
fn trace_event(event: &StoreEvent) {
    match event {
        StoreEvent::Changed(change) => {
            tracing::info!(
                target: "flagstone",
                cause = %change.cause,
                from = change.from,
                feature_flag.version = change.to,
                changes = change.changes.len(),
                "flag config changed"
            );
            for c in &change.changes {
                tracing::info!(
                    target: "flagstone",
                    change = %c.kind,
                    feature_flag.key = c.flag.as_deref().unwrap_or(""),
                    feature_flag.version = change.to,
                    "flag changed"
                );
            }
        }
        StoreEvent::GuardTripped(trip) => {
            tracing::warn!(
                target: "flagstone",
                stage = %trip.stage,
                feature_flag.key = %trip.flag,
                feature_flag.version = trip.version,
                stage_error_rate = trip.stage_error_rate,
                stage_samples = trip.stage_samples,
                baseline_error_rate = trip.baseline_error_rate,
                baseline_samples = trip.baseline_samples,
                "{trip}"
            );
        }
    }
}
