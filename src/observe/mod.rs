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
//! - **Exports.** [`Metrics::to_prometheus`] (sent with
//!   [`PROMETHEUS_CONTENT_TYPE`]) and, with feature `metrics`,
//!   `export_to_metrics` write one set of series: the same names, labels
//!   ([`FLAG_LABEL`], [`VARIANT_LABEL`]: OpenTelemetry's feature-flag
//!   attributes) and units (seconds).
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
pub mod evidence;
mod export;
pub(crate) mod guard;
mod metrics;
#[cfg(feature = "metrics")]
mod metrics_crate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use events::{
    ChangeCause, ConfigChange, ControlGroup, GuardMismatch, GuardStarved, GuardTrip, StoreEvent,
    TripCause,
};
pub use export::{FLAG_LABEL, PROMETHEUS_CONTENT_TYPE, VARIANT_LABEL};
pub(crate) use metrics::latency_bucket;
pub use metrics::{
    EvaluationCount, GuardEvidence, GuardTripCount, LATENCY_BOUNDS, LATENCY_BUCKETS, Latency,
    Metrics, OutcomeCount, SteppedBack,
};
#[cfg(feature = "metrics")]
pub use metrics_crate::export_to_metrics;

use counters::{
    Counters, ERRORS, LATENCY_BUCKET_0, LATENCY_SUM, Numbering, OUTCOME_CELLS, SUCCESSES,
    SeriesKey, Tables,
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

/// The counting side of a store, kept with its writer: the numbering of
/// series, the counter tables compiled configs count into, and the totals
/// of tables no config counts into any more.
#[derive(Debug)]
pub(crate) struct Observe {
    pub(crate) enabled: bool,
    /// Generations of numbering and tables, oldest first; the last one is
    /// the one new configs are compiled against.
    generations: Vec<Generation>,
    /// Totals of live series whose generation is gone.
    folded: foldhash::HashMap<SeriesKey, Vec<u64>>,
    /// Totals of the series of flag keys the store has forgotten.
    retired: Retired,
    /// The previous read of [`Observe::delta`].
    last: Metrics,
    /// Guard trips so far, by flag and stage.
    pub(crate) trips: BTreeMap<(String, String), u64>,
}

/// One numbering and the tables counted by it.
#[derive(Debug, Default)]
struct Generation {
    numbering: Numbering,
    /// Every table a compiled config may still count into; the last one is
    /// the newest.
    tables: Vec<Arc<Tables>>,
    /// Totals, by cell, of this generation's tables that no config counts
    /// into any more.
    folded: Totals,
}

/// What forgotten keys counted, summed over keys.
#[derive(Clone, Debug, Default)]
struct Retired {
    evaluations_on: u64,
    evaluations_off: u64,
    outcomes: Vec<u64>,
}

impl Retired {
    fn add(&mut self, key: &SeriesKey, cells: &[u64]) {
        match key {
            SeriesKey::Evaluations { group, .. } => {
                let n = cells.first().copied().unwrap_or(0);
                let counter = if group.enabled() {
                    &mut self.evaluations_on
                } else {
                    &mut self.evaluations_off
                };
                *counter = counter.wrapping_add(n);
            }
            SeriesKey::Outcomes { .. } => add_cells(&mut self.outcomes, cells),
        }
    }
}

fn add_cells(into: &mut Vec<u64>, cells: &[u64]) {
    if into.len() < cells.len() {
        into.resize(cells.len(), 0);
    }
    for (total, n) in into.iter_mut().zip(cells) {
        *total = total.wrapping_add(*n);
    }
}

fn width(key: &SeriesKey) -> u32 {
    match key {
        SeriesKey::Evaluations { .. } => 1,
        SeriesKey::Outcomes { .. } => OUTCOME_CELLS,
    }
}

impl Observe {
    pub(crate) fn new() -> Self {
        Self {
            enabled: true,
            generations: vec![Generation::default()],
            folded: foldhash::HashMap::default(),
            retired: Retired::default(),
            last: Metrics::default(),
            trips: BTreeMap::new(),
        }
    }

    fn current(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// The numbering to compile a config's counters against; `None` when
    /// the store does not count.
    pub(crate) fn numbering(&mut self) -> Option<&mut Numbering> {
        if !self.enabled {
            return None;
        }
        Some(&mut self.current().numbering)
    }

    /// Forgets the series of a flag key no kept config, handle or override
    /// holds: its counts go to the retired totals.
    pub(crate) fn forget(&mut self, flag: &str) {
        for generation in &mut self.generations {
            generation.numbering.forget(flag);
        }
        let gone: Vec<SeriesKey> =
            self.folded.keys().filter(|k| &**k.flag() == flag).cloned().collect();
        for key in gone {
            if let Some(cells) = self.folded.remove(&key) {
                self.retired.add(&key, &cells);
            }
        }
    }

    /// Starts a new generation when the current one holds more dead series
    /// than live ones: configs compiled from now on count into fresh
    /// tables, numbered densely; the old tables are read until no config
    /// counts into them, then folded.
    pub(crate) fn compact_if_worth(&mut self) {
        if self.enabled && self.current().numbering.worth_compacting() {
            self.generations.push(Generation::default());
        }
    }

    /// The tables a config compiled against the current numbering counts
    /// into: the newest, or bigger ones when the numbering outgrew them.
    /// Tables grow by doubling, so a store holds at most about twice what it
    /// needs.
    pub(crate) fn tables(&mut self) -> Option<Arc<Tables>> {
        if !self.enabled {
            return None;
        }
        let generation = self.current();
        let (evaluations, outcomes) = (
            generation.numbering.evaluation_cells as usize,
            generation.numbering.outcome_cells as usize,
        );
        if let Some(newest) = generation.tables.last()
            && newest.evaluations.cells() >= evaluations
            && newest.outcomes.cells() >= outcomes
        {
            return Some(newest.clone());
        }
        let grow = |needed: usize, had: Option<usize>| had.map_or(needed, |h| needed.max(h * 2));
        let tables = Arc::new(Tables::new(
            grow(evaluations, generation.tables.last().map(|t| t.evaluations.cells())).max(64),
            grow(outcomes, generation.tables.last().map(|t| t.outcomes.cells())).max(64),
        ));
        generation.tables.push(tables.clone());
        Some(tables)
    }

    /// Reads every series into a [`Metrics`], folding away the tables (and
    /// generations) no config can count into any more.
    pub(crate) fn read(&mut self) -> Metrics {
        type EvaluationKey = (Arc<str>, &'static str, Option<&'static str>, bool);
        let mut evaluations: BTreeMap<EvaluationKey, u64> = BTreeMap::new();
        let mut outcomes: BTreeMap<(Arc<str>, &'static str), Vec<u64>> = BTreeMap::new();
        let mut retired = self.retired.clone();
        let mut add = |key: &SeriesKey, cells: &[u64]| match key {
            SeriesKey::Evaluations { flag, group, variant } => {
                let enabled = group.enabled();
                let n = cells.first().copied().unwrap_or(0);
                let count = evaluations.entry((flag.clone(), group.label(), *variant, enabled));
                let count = count.or_default();
                *count = count.wrapping_add(n);
            }
            SeriesKey::Outcomes { flag, group } => {
                add_cells(outcomes.entry((flag.clone(), group.label())).or_default(), cells)
            }
        };
        for (key, cells) in &self.folded {
            add(key, cells);
        }
        let current = self.generations.len().saturating_sub(1);
        let mut kept = Vec::with_capacity(self.generations.len());
        for (i, mut generation) in std::mem::take(&mut self.generations).into_iter().enumerate() {
            let totals = generation.totals();
            let cells = |key: &SeriesKey, id: u32| -> Vec<u64> {
                let table = match key {
                    SeriesKey::Evaluations { .. } => &totals.evaluations,
                    SeriesKey::Outcomes { .. } => &totals.outcomes,
                };
                (id..id + width(key))
                    .map(|cell| table.get(cell as usize).copied().unwrap_or(0))
                    .collect()
            };
            let done = i != current && generation.tables.is_empty();
            for (key, id) in generation.numbering.series() {
                let values = cells(&key, id);
                add(&key, &values);
                if done {
                    add_cells(self.folded.entry(key).or_default(), &values);
                }
            }
            for (key, id) in &generation.numbering.dead {
                let values = cells(key, *id);
                retired.add(key, &values);
                if done {
                    self.retired.add(key, &values);
                }
            }
            if !done {
                kept.push(generation);
            }
        }
        self.generations = kept;

        let mut metrics = Metrics {
            guard_trips: self
                .trips
                .iter()
                .map(|((flag, stage), &count)| GuardTripCount {
                    flag: flag.clone(),
                    stage: stage.clone(),
                    count,
                })
                .collect(),
            ..Metrics::default()
        };
        for ((flag, stage, variant, enabled), count) in evaluations {
            if count > 0 {
                let flag = flag.to_string();
                metrics.evaluations.push(EvaluationCount { flag, stage, variant, enabled, count });
            }
        }
        for (enabled, count) in [(false, retired.evaluations_off), (true, retired.evaluations_on)] {
            if count > 0 {
                let (flag, stage, variant) = (String::new(), "retired", None);
                metrics.evaluations.push(EvaluationCount { flag, stage, variant, enabled, count });
            }
        }
        let retired_outcomes = (!retired.outcomes.is_empty())
            .then(|| (Arc::<str>::from(""), "retired", retired.outcomes));
        for (flag, stage, cells) in outcomes
            .into_iter()
            .map(|((flag, stage), cells)| (flag, stage, cells))
            .chain(retired_outcomes)
        {
            let cell = |i: u32| cells.get(i as usize).copied().unwrap_or(0);
            let mut latency = Latency::default();
            for (i, bucket) in latency.buckets.iter_mut().enumerate() {
                *bucket = cell(LATENCY_BUCKET_0 + i as u32);
            }
            latency.sum = Duration::from_nanos(cell(LATENCY_SUM));
            let o = OutcomeCount {
                flag: flag.to_string(),
                stage,
                successes: cell(SUCCESSES),
                errors: cell(ERRORS),
                latency,
            };
            if o.successes > 0 || o.errors > 0 || o.latency.count() > 0 {
                metrics.outcomes.push(o);
            }
        }
        metrics
    }

    /// What changed since the previous call.
    pub(crate) fn delta(&mut self) -> Metrics {
        let now = self.read();
        let delta = now.since(&self.last);
        self.last = now;
        delta
    }
}

impl Generation {
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
                exposed = trip.exposed_value,
                exposed_units = trip.exposed_units,
                control = trip.control_value,
                control_units = trip.control_units,
                "{trip}"
            );
        }
        StoreEvent::GuardStarved(starved) => {
            tracing::warn!(target: "flagstone", group = %starved.group, feature_flag.key = %starved.flag, "{}", starved);
        }
        StoreEvent::GuardMismatch(mismatch) => {
            tracing::warn!(target: "flagstone", control_share = mismatch.control_share, feature_flag.key = %mismatch.flag, "{}", mismatch);
        }
        // The updater traces its own events.
        StoreEvent::Update(_) => {}
    }
}
