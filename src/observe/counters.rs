//! Sharded counters: where evaluations and outcomes are counted.
//!
//! Every series (a flag × group × variant of evaluations, or a flag × group
//! block of outcome cells) gets a number when a config is compiled, fixed for
//! the life of the store. A [`Counters`] table holds one `AtomicU64` per
//! series per shard. Reading sums the shards; that is the cold side.
//!
//! Evaluation tables are *exclusive*: a thread claims a shard of its own the
//! first time it counts (two per core, process-wide, given back when the
//! thread ends), and as the only writer of that shard it adds with a plain
//! load and store, not a locked read-modify-write, so two cores counting
//! the same flag neither contend nor fence. Threads beyond the shards share
//! one overflow shard with atomic adds. Outcome tables are *shared*: fewer
//! shards, atomic adds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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
    /// Held back by a guard from the newest stage: its control group.
    HeldBack,
    /// Off because a flag it requires is off.
    Prerequisite,
    /// Answered by a local override (on or off), never a guard's evidence.
    Override(bool),
    Unknown,
}

impl Group {
    /// Whether the evaluations of the group are on.
    pub(crate) fn enabled(self) -> bool {
        matches!(self, Group::Exposed(_) | Group::Override(true))
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Group::Exposed(name) => name,
            Group::Off => "off",
            Group::Excluded => "excluded",
            Group::NotExposed => "not-exposed",
            Group::HeldBack => "held-back",
            Group::Prerequisite => "prerequisite",
            Group::Override(_) => "override",
            Group::Unknown => "unknown",
        }
    }
}

/// What a series counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SeriesKey {
    /// Evaluations of `flag` that fell in `group`, handing out `variant`.
    Evaluations { flag: Arc<str>, group: Group, variant: Option<&'static str> },
    /// The [`OUTCOME_CELLS`] cells of outcomes recorded for `flag` × `group`.
    Outcomes { flag: Arc<str>, group: Group },
}

impl SeriesKey {
    pub(crate) fn flag(&self) -> &Arc<str> {
        match self {
            SeriesKey::Evaluations { flag, .. } | SeriesKey::Outcomes { flag, .. } => flag,
        }
    }
}

/// Cells of an outcome block: successes, errors, latency sum (ns), then the
/// latency buckets.
pub(crate) const OUTCOME_CELLS: u32 = 3 + super::metrics::LATENCY_BUCKETS as u32;
pub(crate) const SUCCESSES: u32 = 0;
pub(crate) const ERRORS: u32 = 1;
pub(crate) const LATENCY_SUM: u32 = 2;
pub(crate) const LATENCY_BUCKET_0: u32 = 3;

/// The numbering of one generation of counter tables: each series' first
/// cell, handed out once and never moved. Evaluation cells and outcome
/// cells are numbered apart, as they live in different tables.
///
/// The series of a flag key the store forgets are moved to `dead`: their
/// cells still hold counts (a request may still count into an old
/// snapshot), which are read as the store's retired totals, and a key that
/// comes back gets new cells. A store starts a new generation when dead
/// cells outnumber live ones, so churning keys cost no more than live ones.
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    /// By flag, then by what the series counts: a short list per flag,
    /// searched in order (a flag has a few dozen series), so numbering
    /// 100,000 flags touches 100,000 small lists, not one table of millions
    /// of entries that misses cache on every insert, nor allocates a hash
    /// table per flag.
    flags: foldhash::HashMap<Arc<str>, Vec<(Series, u32)>>,
    /// Live series, over all flags.
    live: usize,
    /// Series of forgotten keys, with their first cell.
    pub(crate) dead: Vec<(SeriesKey, u32)>,
    /// Evaluation cells numbered so far (chunks handed out included).
    pub(crate) evaluation_cells: u32,
    /// Outcome cells numbered so far.
    pub(crate) outcome_cells: u32,
    /// The chunks evaluation cells are numbered from: hot ones (the cells
    /// a shortcut check counts in) apart from the rest, so that the cells
    /// checks of neighbouring flags touch share cache lines.
    hot: Chunk,
    cold: Chunk,
}

/// A run of evaluation cells numbered one at a time: 8 cells (a cache
/// line) at first, twice as many each time up to [`Chunk::MOST`], so a
/// small config's table stays small and a large one's hot cells lie in
/// long runs that an adjacent-line prefetch does not spill into cold ones.
#[derive(Debug, Default)]
struct Chunk {
    next: u32,
    end: u32,
    size: u32,
}

impl Chunk {
    /// 256 cells: 2 KB.
    const MOST: u32 = 256;

    /// The next cell of the chunk, taking a new chunk from `cells` when it
    /// is used up.
    fn take(&mut self, cells: &mut u32) -> u32 {
        if self.next >= self.end {
            self.size = self.size.saturating_mul(2).clamp(8, Self::MOST);
            self.next = *cells;
            *cells = cells.saturating_add(self.size);
            self.end = *cells;
        }
        let id = self.next;
        self.next = self.next.saturating_add(1);
        id
    }
}

/// A [`SeriesKey`] without its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Series {
    Evaluations { group: Group, variant: Option<&'static str> },
    Outcomes { group: Group },
}

impl Series {
    fn split(key: SeriesKey) -> (Arc<str>, Series) {
        match key {
            SeriesKey::Evaluations { flag, group, variant } => {
                (flag, Series::Evaluations { group, variant })
            }
            SeriesKey::Outcomes { flag, group } => (flag, Series::Outcomes { group }),
        }
    }

    fn of(self, flag: &Arc<str>) -> SeriesKey {
        let flag = flag.clone();
        match self {
            Series::Evaluations { group, variant } => {
                SeriesKey::Evaluations { flag, group, variant }
            }
            Series::Outcomes { group } => SeriesKey::Outcomes { flag, group },
        }
    }
}

impl Numbering {
    /// The first cell of `key`'s series, numbering it if it is new.
    pub(crate) fn id(&mut self, key: SeriesKey) -> u32 {
        let (flag, series) = Series::split(key);
        // A plain flag has six series, a staged one a few more.
        self.flag(&flag, 8).number(series, false)
    }

    /// Makes room for the series lists of `flags` flags at once (those of a
    /// first config), not by doubling the table as they come.
    pub(crate) fn reserve_flags(&mut self, flags: usize) {
        self.flags.reserve(flags.saturating_sub(self.flags.len()));
    }

    /// The series of `flag`, numbered through one lookup of it; room is
    /// made for `series` of them at once when the flag is new.
    pub(crate) fn flag(&mut self, flag: &Arc<str>, series: usize) -> FlagNumbering<'_> {
        let Numbering { flags, live, evaluation_cells, outcome_cells, hot, cold, .. } = self;
        let ids = flags.entry(flag.clone()).or_insert_with(|| Vec::with_capacity(series));
        let fresh = ids.is_empty();
        FlagNumbering { ids, fresh, live, evaluation_cells, outcome_cells, hot, cold }
    }

    /// Every live series and its first cell (the cold side: metrics).
    pub(crate) fn series(&self) -> impl Iterator<Item = (SeriesKey, u32)> + '_ {
        self.flags
            .iter()
            .flat_map(|(flag, ids)| ids.iter().map(move |&(series, id)| (series.of(flag), id)))
    }

    /// Moves every series of `flag` to the dead ones.
    pub(crate) fn forget(&mut self, flag: &str) {
        if let Some((flag, ids)) = self.flags.remove_entry(flag) {
            self.live -= ids.len();
            self.dead.extend(ids.into_iter().map(|(series, id)| (series.of(&flag), id)));
        }
    }

    /// Whether dead series outnumber live ones enough to start afresh.
    pub(crate) fn worth_compacting(&self) -> bool {
        self.dead.len() > self.live.max(256)
    }
}

/// One flag's part of a [`Numbering`], borrowed from it by
/// [`Numbering::flag`].
pub(crate) struct FlagNumbering<'n> {
    ids: &'n mut Vec<(Series, u32)>,
    /// The flag had no series when borrowed: what it is asked for is new
    /// unless asked twice, which a caller of a fresh flag never does (a
    /// flag's groups and variants are distinct), so nothing is searched.
    fresh: bool,
    live: &'n mut usize,
    evaluation_cells: &'n mut u32,
    outcome_cells: &'n mut u32,
    hot: &'n mut Chunk,
    cold: &'n mut Chunk,
}

impl FlagNumbering<'_> {
    /// The first cell of the flag's evaluations in `group` handing out
    /// `variant`; `hot` for a series most checks of
    /// the flag count in, numbered among the other flags' hot cells.
    pub(crate) fn evaluations(
        &mut self,
        group: Group,
        variant: Option<&'static str>,
        hot: bool,
    ) -> u32 {
        self.number(Series::Evaluations { group, variant }, hot)
    }

    /// The first cell of the flag's outcome block in `group`.
    pub(crate) fn outcomes(&mut self, group: Group) -> u32 {
        self.number(Series::Outcomes { group }, false)
    }

    fn number(&mut self, series: Series, hot: bool) -> u32 {
        let known = || self.ids.iter().find(|(s, _)| *s == series).map(|&(_, id)| id);
        if self.fresh {
            debug_assert!(known().is_none(), "{series:?} asked twice of a fresh flag");
        } else if let Some(id) = known() {
            return id;
        }
        let id = match series {
            Series::Evaluations { .. } => {
                let chunk = if hot { &mut *self.hot } else { &mut *self.cold };
                chunk.take(self.evaluation_cells)
            }
            Series::Outcomes { .. } => {
                let id = *self.outcome_cells;
                *self.outcome_cells = id.saturating_add(OUTCOME_CELLS);
                id
            }
        };
        self.ids.push((series, id));
        *self.live += 1;
        id
    }
}

/// The counters a compiled config counts into: evaluations in
/// [`shards`] exclusive shards (and the overflow shard), outcomes in a
/// quarter as many shared ones (an outcome block is 19 cells, and
/// outcomes are recorded once per request rather than once per check).
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) evaluations: Counters,
    pub(crate) outcomes: Counters,
}

impl Tables {
    pub(crate) fn new(evaluation_cells: usize, outcome_cells: usize) -> Self {
        Self {
            evaluations: Counters::exclusive(evaluation_cells),
            outcomes: Counters::with_shards(outcome_cells, (shards() / 4).max(1)),
        }
    }
}

/// Two shards per core, rounded up to a power of two, at least 4 and at
/// most [`MAX_SHARDS`]. A service counts from more threads than it has
/// cores: its workers, and also its main thread and the odd background
/// thread, each of which keeps its shard for as long as it lives. With one
/// shard per core, a main thread that checked a flag at start-up left one
/// worker of a 2-core machine counting in the overflow shard, a locked add
/// per count (a 10-flag request by handle on 2 threads kept 67% of one
/// thread's per-thread throughput, 92–99% with two shards per core). A
/// shard no thread counts in costs only its zeroed cells.
///
/// Past 8 cores the cap leaves fewer than two per core, and from 16 on
/// fewer than a worker per core plus a main thread: there, threads past
/// the 16th to claim one count with locked adds in the overflow shard.
pub(crate) fn shards() -> usize {
    static SHARDS: OnceLock<usize> = OnceLock::new();
    *SHARDS.get_or_init(|| shard_count(std::thread::available_parallelism().map_or(4, |n| n.get())))
}

/// [`shards`] for a machine of `cores` cores.
fn shard_count(cores: usize) -> usize {
    (cores.min(MAX_SHARDS) * 2).next_power_of_two().clamp(4, MAX_SHARDS)
}

/// One table of sharded counters, indexed by cell number.
#[derive(Debug)]
pub(crate) struct Counters {
    shards: Box<[Shard]>,
    cells: usize,
    /// Shards `0..shards()` belong to the threads that claimed them, and the
    /// last one is the overflow; otherwise threads share shards.
    exclusive: bool,
}

#[derive(Debug)]
struct Shard(Box<[AtomicU64]>);

impl Counters {
    /// A zeroed table of `cells` cells in `shards` shards (rounded up to a
    /// power of two).
    pub(crate) fn with_shards(cells: usize, shards: usize) -> Self {
        Self::build(cells, shards.next_power_of_two(), false)
    }

    /// A zeroed table with a shard for each claimable shard and one for
    /// overflow.
    pub(crate) fn exclusive(cells: usize) -> Self {
        Self::build(cells, shards() + 1, true)
    }

    fn build(cells: usize, shards: usize, exclusive: bool) -> Self {
        // Zeroed by the allocator: a large table is fresh zero pages, so
        // compiling it costs no writes, and the cells of flags never
        // counted in (most, in a config of 100,000) cost no memory.
        let shard = || Shard(bytemuck::zeroed_slice_box(cells + 2 * PAD));
        Self { shards: (0..shards).map(|_| shard()).collect(), cells, exclusive }
    }

    #[inline]
    fn cell(&self, shard: usize, cell: u32) -> Option<&AtomicU64> {
        self.shards.get(shard)?.0.get(PAD.saturating_add(cell as usize))
    }

    /// How many cells the table holds.
    pub(crate) fn cells(&self) -> usize {
        self.cells
    }

    /// Adds `n` to a cell in this thread's shard. A cell out of range (which
    /// a compiled config never hands out) is ignored rather than panicking.
    #[inline]
    pub(crate) fn add(&self, cell: u32, n: u64) {
        let claimed = claimed_shard();
        if self.exclusive
            && let Some(shard) = claimed
        {
            // This thread is the shard's only writer: a plain load and store
            // lose nothing. Relaxed: a counter orders nothing, and a shard's
            // next owner sees these stores through its claim (acquire).
            if let Some(counter) = self.cell(shard, cell) {
                counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            }
            return;
        }
        let shard = match claimed {
            Some(shard) if !self.exclusive => shard & (self.shards.len() - 1),
            // The overflow shard of an exclusive table; the first shard of
            // a shared one.
            _ if self.exclusive => self.shards.len() - 1,
            _ => 0,
        };
        if let Some(counter) = self.cell(shard, cell) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum of a cell over the shards.
    pub(crate) fn read(&self, cell: u32) -> u64 {
        (0..self.shards.len())
            .filter_map(|shard| self.cell(shard, cell))
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

/// Which shards threads own, process-wide.
static OWNED: [AtomicBool; MAX_SHARDS] = [const { AtomicBool::new(false) }; MAX_SHARDS];

/// A thread's claim on a shard, given back when the thread ends.
struct Claim(Option<usize>);

impl Claim {
    #[cold]
    fn new() -> Self {
        let free = OWNED.iter().take(shards()).position(|owned| {
            // Acquire: the previous owner's counts happen before ours.
            owned.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        });
        Claim(free)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(owned) = self.0.and_then(|shard| OWNED.get(shard)) {
            // Release: our counts happen before the next owner's.
            owned.store(false, Ordering::Release);
        }
    }
}

/// The shard this thread owns, claimed on its first count or snapshot;
/// `None` when every shard is taken (or the thread is being torn down).
#[inline]
pub(crate) fn claimed_shard() -> Option<usize> {
    thread_local! {
        static CLAIM: Claim = Claim::new();
    }
    CLAIM.try_with(|claim| claim.0).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_numbered_once_and_outcomes_take_a_block() {
        let mut series = Numbering::default();
        let eval =
            |f: &str| SeriesKey::Evaluations { flag: f.into(), group: Group::Off, variant: None };
        let out = |f: &str| SeriesKey::Outcomes { flag: f.into(), group: Group::NotExposed };
        assert_eq!(series.id(eval("f")), 0);
        assert_eq!(series.id(out("f")), 0);
        assert_eq!(series.id(eval("f")), 0);
        assert_eq!(series.id(eval("g")), 1);
        assert_eq!(series.id(out("g")), OUTCOME_CELLS);
    }

    #[test]
    fn hot_cells_are_numbered_apart_in_growing_chunks() {
        let mut series = Numbering::default();
        let flags: Vec<Arc<str>> = (0..1000).map(|f| format!("f{f}").into()).collect();
        let (mut hot, mut cold) = (Vec::new(), Vec::new());
        for flag in &flags {
            let mut flag = series.flag(flag, 4);
            cold.push(flag.evaluations(Group::Off, None, false));
            hot.push(flag.evaluations(Group::NotExposed, None, true));
            hot.push(flag.evaluations(Group::Exposed("on"), None, true));
            cold.push(flag.evaluations(Group::Excluded, None, false));
        }
        // Numbered once: asking again gives the same cell.
        assert_eq!(series.flag(&flags[7], 4).evaluations(Group::NotExposed, None, true), hot[14]);
        let off =
            SeriesKey::Evaluations { flag: flags[7].clone(), group: Group::Off, variant: None };
        assert_eq!(series.id(off), cold[14]);
        // Every cell once, and little left over at the ends of chunks.
        let mut all = [hot.clone(), cold.clone()].concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
        assert!((4000..4000 + 2 * Chunk::MOST).contains(&series.evaluation_cells));
        // The first chunk is one cache line; the hot cells lie in runs of
        // whole chunks (8, 16, ... 256 cells, then 256 at a time: 12 of
        // them for 2,000 cells), never interleaved with cold ones.
        assert_eq!(cold[..2], [0, 1]);
        assert_eq!(hot[..8], [8, 9, 10, 11, 12, 13, 14, 15]);
        let runs = 1 + hot.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(runs <= 12, "{runs} runs of hot cells");
    }

    #[test]
    fn a_forgotten_flag_keeps_its_cells_dead_and_comes_back_on_new_ones() {
        let mut series = Numbering::default();
        let eval =
            |f: &str| SeriesKey::Evaluations { flag: f.into(), group: Group::Off, variant: None };
        assert_eq!(series.id(eval("f")), 0);
        series.forget("f");
        assert_eq!(series.dead, [(eval("f"), 0)]);
        assert_eq!(series.id(eval("f")), 1);
    }

    #[test]
    fn counts_from_more_threads_than_shards_all_land() {
        for counters in [Counters::with_shards(4, 4), Counters::exclusive(4)] {
            // More threads than shards: some own one, the rest overflow.
            let threads = 2 * shards() + 3;
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..1000 {
                            counters.add(2, 1);
                        }
                    });
                }
            });
            assert_eq!(counters.read(2), threads as u64 * 1000);
            assert_eq!(counters.read(1), 0);
            counters.add(99, 1); // out of range: ignored
        }
    }

    #[test]
    fn two_shards_per_core_at_least_4_at_most_16() {
        let table = [
            (1, 4),
            (2, 4),
            (3, 8),
            (4, 8),
            (5, 16),
            (8, 16),
            (9, 16),
            (16, 16),
            (1000, 16),
            (usize::MAX, 16),
        ];
        for (cores, shards) in table {
            assert_eq!(shard_count(cores), shards, "{cores} cores");
        }
        // Up to 15 cores, a service's main thread (which keeps the shard it
        // claimed at start-up) and a worker per core each own one: the
        // workers count without atomics.
        for cores in 1..=15 {
            assert!(shard_count(cores) > cores, "{cores} cores");
        }
        // The evaluation table has the overflow shard beside them.
        assert_eq!(Counters::exclusive(1).shards.len(), shards() + 1);
    }

    #[test]
    fn a_shard_passes_to_the_next_thread_with_its_counts() {
        let counters = Counters::exclusive(1);
        for _ in 0..(3 * MAX_SHARDS) {
            std::thread::scope(|s| {
                s.spawn(|| counters.add(0, 10));
            });
        }
        assert_eq!(counters.read(0), 30 * MAX_SHARDS as u64);
    }
}
