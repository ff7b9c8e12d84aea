//! Sharded counters: where evaluations and outcomes are counted.
//!
//! Every series (a flag × group × variant of evaluations, or a flag × group
//! block of outcome cells) gets a number when a config is compiled, fixed for
//! the life of the store. A [`Counters`] table holds one `AtomicU64` per
//! series per shard, and a thread always adds to its own shard: two cores
//! counting the same flag write to different cache lines, so they never
//! contend. Reading sums the shards; that is the cold side.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most shards a table has: enough for the cores of one service, few
/// enough that memory stays `shards × series × 8` bytes.
const MAX_SHARDS: usize = 16;
/// Empty cells before and after each shard's cells, so that no two shards
/// share a cache line (or the line pair that adjacent-line prefetch pulls).
const PAD: usize = 16;

/// The fixed labels of the groups a context can fall in for a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Group {
    /// Exposed by a stage (its name), or `on` for a flag without stages.
    Exposed(&'static str),
    Off,
    Excluded,
    NotExposed,
    Unknown,
}

impl Group {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Group::Exposed(name) => name,
            Group::Off => "off",
            Group::Excluded => "excluded",
            Group::NotExposed => "not-exposed",
            Group::Unknown => "unknown",
        }
    }
}

/// What a series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SeriesKey {
    /// Evaluations of `flag` that fell in `group`, handing out `variant`.
    Evaluations { flag: &'static str, group: Group, variant: Option<&'static str> },
    /// The [`OUTCOME_CELLS`] cells of outcomes recorded for `flag` × `group`.
    Outcomes { flag: &'static str, group: Group },
}

/// Cells of an outcome block: successes, errors, latency sum (ns), then the
/// latency buckets.
pub(crate) const OUTCOME_CELLS: u32 = 3 + super::metrics::LATENCY_BUCKETS as u32;
pub(crate) const SUCCESSES: u32 = 0;
pub(crate) const ERRORS: u32 = 1;
pub(crate) const LATENCY_SUM: u32 = 2;
pub(crate) const LATENCY_BUCKET_0: u32 = 3;

/// The series of one store, numbered for its life: evaluation cells and
/// outcome cells are numbered apart, as they live in different tables.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) ids: HashMap<SeriesKey, u32>,
    /// Evaluation cells numbered so far.
    pub(crate) evaluation_cells: u32,
    /// Outcome cells numbered so far.
    pub(crate) outcome_cells: u32,
}

impl Series {
    /// The first cell of `key`'s series, numbering it if it is new.
    pub(crate) fn id(&mut self, key: SeriesKey) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let (cells, width) = match key {
            SeriesKey::Evaluations { .. } => (&mut self.evaluation_cells, 1),
            SeriesKey::Outcomes { .. } => (&mut self.outcome_cells, OUTCOME_CELLS),
        };
        let id = *cells;
        *cells = cells.saturating_add(width);
        self.ids.insert(key, id);
        id
    }
}

/// The counters a compiled config counts into: evaluations in one shard
/// per core, outcomes in a quarter as many (an outcome block is 19 cells,
/// and outcomes are recorded once per request rather than once per check).
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) evaluations: Counters,
    pub(crate) outcomes: Counters,
}

impl Tables {
    pub(crate) fn new(evaluation_cells: usize, outcome_cells: usize) -> Self {
        let shards = shards();
        Self {
            evaluations: Counters::with_shards(evaluation_cells, shards),
            outcomes: Counters::with_shards(outcome_cells, (shards / 4).max(1)),
        }
    }
}

/// One shard per core, rounded up to a power of two, at most [`MAX_SHARDS`].
fn shards() -> usize {
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        cores.next_power_of_two().min(MAX_SHARDS)
    })
}

/// One table of sharded counters, indexed by cell number.
#[derive(Debug)]
pub(crate) struct Counters {
    shards: Box<[Shard]>,
    cells: usize,
}

#[derive(Debug)]
struct Shard(Box<[AtomicU64]>);

impl Counters {
    /// A zeroed table of `cells` cells in `shards` shards (rounded up to a
    /// power of two).
    pub(crate) fn with_shards(cells: usize, shards: usize) -> Self {
        let shards = shards.next_power_of_two();
        let shard = || Shard((0..cells + 2 * PAD).map(|_| AtomicU64::new(0)).collect());
        Self { shards: (0..shards).map(|_| shard()).collect(), cells }
    }

    /// How many cells the table holds.
    pub(crate) fn cells(&self) -> usize {
        self.cells
    }

    /// Adds `n` to a cell in this thread's shard. A cell out of range (which
    /// a compiled config never hands out) is ignored rather than panicking.
    #[inline]
    pub(crate) fn add(&self, cell: u32, n: u64) {
        let shard = shard_index() & (self.shards.len() - 1);
        if let Some(Shard(cells)) = self.shards.get(shard)
            && let Some(counter) = cells.get(PAD + cell as usize)
        {
            // Relaxed: a counter orders nothing; readers sum whatever has landed.
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum of a cell over the shards.
    pub(crate) fn read(&self, cell: u32) -> u64 {
        self.shards
            .iter()
            .filter_map(|Shard(cells)| cells.get(PAD + cell as usize))
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

/// This thread's shard number: handed out round-robin on a thread's first
/// count, so the first threads of a process get shards of their own.
#[inline]
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    // `try_with` fails only while the thread is being torn down; shard 0 is
    // as good as any then.
    SHARD
        .try_with(|shard| {
            let mut index = shard.get();
            if index == usize::MAX {
                index = NEXT.fetch_add(1, Ordering::Relaxed);
                shard.set(index);
            }
            index
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_numbered_once_and_outcomes_take_a_block() {
        let mut series = Series::default();
        let eval = SeriesKey::Evaluations { flag: "f", group: Group::Off, variant: None };
        let out = SeriesKey::Outcomes { flag: "f", group: Group::NotExposed };
        assert_eq!(series.id(eval), 0);
        assert_eq!(series.id(out), 0);
        assert_eq!(series.id(eval), 0);
        let next = SeriesKey::Evaluations { flag: "g", group: Group::Off, variant: None };
        assert_eq!(series.id(next), 1);
        let out2 = SeriesKey::Outcomes { flag: "g", group: Group::NotExposed };
        assert_eq!(series.id(out2), OUTCOME_CELLS);
    }

    #[test]
    fn counts_from_many_threads_all_land() {
        let counters = Counters::with_shards(4, 4);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counters.add(2, 1);
                    }
                });
            }
        });
        assert_eq!(counters.read(2), 6000);
        assert_eq!(counters.read(1), 0);
        counters.add(99, 1); // out of range: ignored
    }
}
