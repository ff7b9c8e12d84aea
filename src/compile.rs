//! From a validated [`Config`] to the compiled snapshot that requests read.
//!
//! Everything a request would otherwise redo is done here, once per config:
//! salts become seeds, percentages become integer thresholds, cohort lists
//! become hashed sets shared by every stage that names them, stages past the
//! current one are dropped, variant weights become cumulative, and flag keys
//! go into a fast map. Evaluation (`eval.rs`) is then a walk over this data.

pub(crate) mod hot;
mod keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub(crate) use self::hot::Hot;
use self::hot::Kind;
use self::keys::KeyIndex;
use crate::bucket::{
    Murmur3Prefix, UNLEASH_VARIANT_SEED, bucket_seeded, holdback_seed, salt_seed, threshold,
    variant_point, variant_seed,
};
use crate::clock::{Clock, parse_rfc3339_millis};
use crate::config::{self, GuardAction};
use crate::context::Context;
use crate::eval::{Evaluation, Reason};
use crate::migration::MigrationStep;
use crate::observe::counters::{
    ERRORS, Group, LATENCY_BUCKET_0, LATENCY_SUM, Numbering, SUCCESSES, SeriesKey, Tables,
};
use crate::observe::guard::{GuardState, Report, Side};
use crate::observe::{Outcome, latency_bucket};
use crate::retained::Retained;

/// A stage without a percentage exposes all of its audience.
pub(crate) const NO_PERCENT: u32 = u32::MAX;
/// A stage without `start_at` is in effect at any time.
pub(crate) const NO_START: i64 = i64::MIN;
/// A slot whose flag is absent from this snapshot.
const NO_FLAG: u32 = u32::MAX;
/// Marks a key map entry of a flag absent from this config (one the store
/// knew before, or a handle's): the rest is its `unknown` counter.
const ABSENT: u32 = 1 << 31;

/// One config, compiled: what [`crate::FlagStore`] swaps in and requests read.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub(crate) version: u64,
    /// Which store's slots `by_slot` is indexed by (handles check it).
    pub(crate) store_id: u64,
    /// The store's slot epoch when this config was compiled: a handle whose
    /// slot was given out later looks its key up instead.
    pub(crate) slot_epoch: u64,
    pub(crate) flags: Box<[Flag]>,
    /// Each key's hot record: its flag's index, or absent with the
    /// `unknown` counter of a key the store knows but this config lacks.
    by_name: KeyIndex,
    /// The same, by slot.
    by_slot: Box<[Hot]>,
    pub(crate) cohorts: foldhash::HashMap<&'static str, Arc<Cohort>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where evaluations and outcomes are counted; `None` when the store
    /// does not count.
    pub(crate) counters: Option<Arc<Tables>>,
    /// The record of keys the store has never known (absent, with their
    /// `unknown` counter).
    unnamed: Hot,
}

/// A flag in evaluation form.
#[derive(Clone, Debug)]
pub(crate) struct Flag {
    pub(crate) key: Arc<str>,
    /// What `is_enabled` can answer without walking the stages.
    pub(crate) shortcut: Shortcut,
    pub(crate) enabled: bool,
    /// The unit and hashing of the flag's percentages and variants.
    pub(crate) hashing: Hashing,
    /// `xxh3_64(salt)`: the seed of the unit hash a guard keeps its
    /// per-unit evidence by (in either bucketing).
    pub(crate) seed: u64,
    pub(crate) exclude: Box<[Arc<Cohort>]>,
    /// `None`: no stages, on for everyone. Otherwise the stages up to and
    /// including the current one; later stages can never match.
    pub(crate) stages: Option<Box<[Stage]>>,
    /// The names of the stages after the current one, for explanations.
    pub(crate) later: Box<[&'static str]>,
    pub(crate) variants: Variants,
    /// The flag's counters.
    pub(crate) series: FlagSeries,
    pub(crate) guard: Option<Arc<GuardState>>,
    /// A local override, which beats everything the config says.
    pub(crate) forced: Option<Forced>,
    /// The guard's control group: who of the newest stage's new audience
    /// is held back.
    pub(crate) holdback: Option<Holdback>,
    /// Flags that must be on first.
    pub(crate) requires: Box<[Prerequisite]>,
    /// The value when on, for a flag without variants.
    pub(crate) value: Option<&'static serde_json::Value>,
    /// A data migration: stages are walked newest first (a context is at
    /// the step of the last stage that exposes it).
    pub(crate) migration: bool,
    /// A migration's counts per stage and group (set by the store).
    pub(crate) migration_counts: Option<Box<crate::migration::FlagCounts>>,
}

/// A prerequisite, resolved: the required flag's index in the snapshot,
/// whether it must be on or off, and the variants (any of them) it must
/// hand out.
#[derive(Clone, Debug)]
pub(crate) struct Prerequisite {
    pub(crate) index: u32,
    pub(crate) on: bool,
    pub(crate) variants: Box<[&'static str]>,
    pub(crate) key: &'static str,
}

/// A guard's holdback, compiled: the holdback bucket's seed and threshold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holdback {
    pub(crate) seed: u64,
    pub(crate) threshold: u32,
}

/// A compiled [`crate::Override`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forced {
    pub(crate) enabled: bool,
    pub(crate) variant: Option<&'static str>,
    /// Its evaluation cell and outcome block (`stage="override"`).
    pub(crate) cell: u32,
    pub(crate) block: u32,
}

/// The counter cells of a flag, numbered by the store's [`Numbering`].
///
/// Evaluations: `off`, `excluded`, `not-exposed`, then for each exposure
/// group (each stage, or the one group of a flag without stages) no variant
/// followed by each variant. Outcomes: `not-exposed`, then each exposure
/// group.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagSeries {
    evaluations: Box<[u32]>,
    pub(crate) outcomes: Box<[u32]>,
    /// `off`, `not-exposed`, and the first exposure group without a
    /// variant: the cells `is_enabled` counts in when a shortcut decides.
    pub(crate) off: u32,
    pub(crate) not_exposed: u32,
    pub(crate) first_exposed: u32,
    /// The evaluation cell and the outcome block of contexts a guard holds
    /// back (`NO_FLAG` without a holdback).
    held_back_cell: u32,
    pub(crate) held_back: u32,
    /// The evaluation cell of contexts a prerequisite keeps off.
    prerequisite_cell: u32,
}

const CELL_OFF: usize = 0;
const CELL_EXCLUDED: usize = 1;
const CELL_NOT_EXPOSED: usize = 2;
const CELL_EXPOSED: usize = 3;

/// The answer of `is_enabled` for the shapes most flags have, decided when
/// the config is compiled; `Walk` takes the general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shortcut {
    /// The kill switch: off for everyone.
    Off,
    /// No exclusions and a stage in effect that exposes everyone.
    On,
    /// No exclusions, and every stage in effect is a bare percentage: on
    /// exactly when the unit's bucket is below the largest threshold.
    Below(u32),
    /// One stage in effect, with no schedule and the flag's own bucketing,
    /// behind cohorts or exclusions: on when no exclusion matches, the
    /// stage's audience does and the unit's bucket is below its threshold
    /// (without stepping through the walk's reasons).
    Audience,
    /// Several stages with cohorts, or schedules: walk the stages.
    Walk,
}

#[derive(Clone, Debug)]
pub(crate) struct Stage {
    pub(crate) name: &'static str,
    /// Empty: everyone is in the audience.
    pub(crate) cohorts: Box<[Arc<Cohort>]>,
    pub(crate) threshold: u32,
    pub(crate) start_at: i64,
    /// The stage's own unit and hashing, when its `salt` or `bucket_by`
    /// is not the flag's.
    pub(crate) own: Option<Box<Hashing>>,
    /// The stage's own variants, handed to the contexts it exposes.
    pub(crate) variants: Option<Box<Variants>>,
    /// The position of its first evaluation cell in the flag's series.
    pub(crate) cells: u32,
    /// The migration step of the contexts it exposes (a migration flag's).
    pub(crate) step: MigrationStep,
}

#[derive(Clone, Debug)]
pub(crate) struct Variant {
    pub(crate) name: &'static str,
    /// The sum of the weights of this variant and every one before it.
    pub(crate) cumulative: u64,
    pub(crate) value: Option<&'static serde_json::Value>,
    /// Contexts in these cohorts get this variant, whatever the weights.
    pub(crate) pins: Box<[Arc<Cohort>]>,
}

/// A list of variants: the flag's, or a stage's.
#[derive(Clone, Debug, Default)]
pub(crate) struct Variants {
    pub(crate) list: Box<[Variant]>,
    /// The sum of the weights (the last cumulative weight).
    pub(crate) total: u64,
    /// Whether any variant pins cohorts.
    pub(crate) pinned: bool,
}

impl Variants {
    fn new(variants: &[config::Variant], cohorts: &CohortTable<'_>) -> Self {
        let mut total = 0u64;
        let list: Box<[Variant]> = variants
            .iter()
            .map(|v| {
                total += u64::from(v.weight);
                Variant {
                    name: intern(&v.name),
                    cumulative: total,
                    value: v.value.as_ref().map(intern_value),
                    pins: cohorts.resolve(&v.cohorts),
                }
            })
            .collect();
        let pinned = list.iter().any(|v| !v.pins.is_empty());
        Self { list, total, pinned }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

/// What a flag's (or a stage's) percentages count.
#[derive(Clone, Debug)]
pub(crate) enum Unit {
    Tenant,
    User,
    Region,
    Attr(Box<str>),
    /// The first of these the context has.
    FirstOf(Box<[Unit]>),
}

impl Unit {
    fn new(by: Option<&config::BucketBy>) -> Self {
        let one = |name: &str| match name {
            "user" => Unit::User,
            "tenant" => Unit::Tenant,
            "region" => Unit::Region,
            attr => Unit::Attr(attr.into()),
        };
        match by.map(config::BucketBy::names) {
            None | Some([]) => Unit::User,
            Some([name]) => one(name),
            Some(names) => Unit::FirstOf(names.iter().map(|n| one(n)).collect()),
        }
    }

    /// The `bucket_by` this unit was compiled from, as written.
    pub(crate) fn describe(&self) -> String {
        match self {
            Unit::Tenant => "tenant".to_owned(),
            Unit::User => "user".to_owned(),
            Unit::Region => "region".to_owned(),
            Unit::Attr(key) => key.to_string(),
            Unit::FirstOf(units) => {
                let names: Vec<String> = units.iter().map(Unit::describe).collect();
                format!("the first of [{}]", names.join(", "))
            }
        }
    }

    /// The context's value for this unit.
    #[inline(always)]
    pub(crate) fn of<'c>(&self, ctx: &Context<'c>) -> Option<&'c str> {
        match self {
            Unit::User => ctx.get_user(),
            Unit::Tenant => ctx.get_tenant(),
            Unit::Region => ctx.get_region(),
            Unit::Attr(key) => ctx.get_attr(key),
            Unit::FirstOf(units) => Unit::first_of(units, ctx),
        }
    }

    /// The first of `units` the context has (out of line: the single
    /// units are the hot path; a list holds only single units).
    #[inline(never)]
    fn first_of<'c>(units: &[Unit], ctx: &Context<'c>) -> Option<&'c str> {
        units.iter().find_map(|u| match u {
            Unit::FirstOf(_) => None,
            one => one.of(ctx),
        })
    }
}

/// How units become buckets and variant points: a unit, and a hash.
#[derive(Clone, Debug)]
pub(crate) struct Hashing {
    pub(crate) unit: Unit,
    kind: HashKind,
}

#[derive(Clone, Debug)]
enum HashKind {
    /// The spec of docs/bucketing.md.
    Xxh3 { seed: u64, variant_seed: u64 },
    /// Unleash's normalized MurmurHash3 of `"{group}:{unit}"`: the hash
    /// states after `"{group}:"`, for rollouts (seed 0) and variants.
    Unleash { rollout: Box<Murmur3Prefix>, variant: Box<Murmur3Prefix> },
}

impl Hashing {
    fn new(bucketing: config::Bucketing, salt: &str, unit: Unit) -> Self {
        let kind = match bucketing {
            config::Bucketing::Unleash => {
                let prefix = |seed| Box::new(Murmur3Prefix::new(salt.as_bytes(), seed).then(b":"));
                HashKind::Unleash { rollout: prefix(0), variant: prefix(UNLEASH_VARIANT_SEED) }
            }
            _ => HashKind::Xxh3 { seed: salt_seed(salt), variant_seed: variant_seed(salt) },
        };
        Self { unit, kind }
    }

    /// The number of buckets: 100,000, or Unleash's 100.
    pub(crate) fn buckets(&self) -> u32 {
        match self.kind {
            HashKind::Xxh3 { .. } => crate::bucket::BUCKETS,
            HashKind::Unleash { .. } => 100,
        }
    }

    /// The threshold of a validated percentage.
    fn threshold(&self, percent: f64) -> u32 {
        match self.kind {
            HashKind::Xxh3 { .. } => threshold(percent),
            // Whole percentages (validated): the bucket is Unleash's
            // normalized hash minus one, on when below the percentage.
            HashKind::Unleash { .. } => percent.round().clamp(0.0, 100.0) as u32,
        }
    }

    /// A unit's bucket, `0..buckets()`.
    #[inline]
    pub(crate) fn bucket(&self, unit: &str) -> u32 {
        match &self.kind {
            HashKind::Xxh3 { seed, .. } => bucket_seeded(*seed, unit),
            HashKind::Unleash { rollout, .. } => rollout.finish(unit.as_bytes()) % 100,
        }
    }

    /// The point in `0..total` that picks a unit's variant: the first
    /// variant whose cumulative weight is above it.
    #[inline]
    pub(crate) fn variant_point(&self, unit: &str, total: u64) -> u64 {
        match &self.kind {
            HashKind::Xxh3 { variant_seed: vseed, .. } => variant_point(*vseed, unit, total),
            HashKind::Unleash { variant, .. } => {
                u64::from(variant.finish(unit.as_bytes())).checked_rem(total).unwrap_or(0)
            }
        }
    }
}

/// A cohort in evaluation form; `None` criteria are not listed.
#[derive(Clone, Debug)]
pub(crate) struct Cohort {
    pub(crate) name: &'static str,
    /// The config it was compiled from: an identical one in the next
    /// version shares this compiled form.
    source: Arc<config::Cohort>,
    pub(crate) tenants: Option<NameSet>,
    pub(crate) users: Option<NameSet>,
    pub(crate) regions: Option<NameSet>,
    pub(crate) attributes: Box<[(Box<str>, NameSet)]>,
    pub(crate) rules: Box<[crate::rules::CompiledRule]>,
}

/// A set of names: a short list is scanned (faster than hashing a handful of
/// strings), a long one is hashed into the key index's table, where a name
/// of up to 15 bytes is hashed and compared as two words, with no call.
#[derive(Clone, Debug)]
pub(crate) enum NameSet {
    Few(Box<[Packed]>),
    Many(KeyIndex<()>),
}

pub(crate) const FEW: usize = 8;

/// A name with its bytes packed for comparing without a call: a name of up
/// to 16 bytes is equal to another exactly when their lengths and packed
/// words are.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    len: usize,
    words: (u64, u64),
    name: Box<str>,
}

/// Two words that, with the length, determine a string of up to 16 bytes:
/// overlapping loads from its start and its end.
#[inline(always)]
pub(crate) fn pack(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 8 {
        let (Some(head), Some(tail)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) else {
            return (0, 0);
        };
        (u64::from_le_bytes(*head), u64::from_le_bytes(*tail))
    } else if n >= 4 {
        let (Some(head), Some(tail)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) else {
            return (0, 0);
        };
        (u64::from(u32::from_le_bytes(*head)), u64::from(u32::from_le_bytes(*tail)))
    } else if let (Some(&first), Some(&mid), Some(&last)) = (b.first(), b.get(n / 2), b.last()) {
        (u64::from(first) | u64::from(mid) << 8 | u64::from(last) << 16, 0)
    } else {
        (0, 0)
    }
}

impl Packed {
    pub(crate) fn new(name: &str) -> Self {
        Self { len: name.len(), words: pack(name.as_bytes()), name: name.into() }
    }
}

/// Whether `name` is one of `names`, comparing words for short names.
#[inline]
fn packed_contains(names: &[Packed], name: &str) -> bool {
    let len = name.len();
    if len <= 16 {
        let words = pack(name.as_bytes());
        names.iter().any(|n| n.len == len && n.words == words)
    } else {
        names.iter().any(|n| n.len == len && *n.name == *name)
    }
}

impl NameSet {
    pub(crate) fn new<S: AsRef<str>>(names: &[S]) -> Self {
        if names.len() <= FEW {
            NameSet::Few(names.iter().map(|n| Packed::new(n.as_ref())).collect())
        } else {
            NameSet::Many(KeyIndex::sparse(names.iter().map(|n| (n.as_ref(), ()))))
        }
    }

    #[inline]
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::Few(names) => packed_contains(names, name),
            NameSet::Many(names) => names.get(name).is_some(),
        }
    }
}

/// Flag keys numbered for a store, so that a [`crate::FlagHandle`] finds its
/// flag in any snapshot by index instead of by hashing its key.
///
/// A key keeps its slot while a kept config, a live handle or an override
/// holds it; then the slot is freed, so a store that sees a new key in
/// every push does not grow with every key it ever saw. A freed slot given
/// to another key bumps the epoch: snapshots compiled before that search a
/// handle's key instead of trusting its slot.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    by_name: foldhash::HashMap<Arc<str>, u32>,
    entries: Vec<Option<SlotEntry>>,
    free: Vec<u32>,
    pub(crate) epoch: u64,
}

#[derive(Debug)]
struct SlotEntry {
    key: Arc<str>,
    /// How many kept configs have the key.
    held: u32,
    /// The handles' shared part, while one lives.
    handle: Weak<HandleSlot>,
    /// The epoch the slot was given to this key at.
    epoch: u64,
}

/// What the handles of one key share: its slot and key.
#[derive(Debug)]
pub(crate) struct HandleSlot {
    pub(crate) slot: u32,
    pub(crate) epoch: u64,
    pub(crate) key: Arc<str>,
}

impl Slots {
    /// The slot of `name`, given out now if it has none.
    pub(crate) fn slot(&mut self, name: &str) -> u32 {
        match self.by_name.get(name) {
            Some(&slot) => slot,
            None => self.give(name).0,
        }
    }

    /// Gives `name`, which has no slot, a free one or a new one; returns it
    /// and the store's copy of the key.
    fn give(&mut self, name: &str) -> (u32, Arc<str>) {
        let key: Arc<str> = name.into();
        let (slot, epoch) = match self.free.pop() {
            Some(slot) => {
                self.epoch += 1;
                (slot, self.epoch)
            }
            None => (u32::try_from(self.entries.len()).unwrap_or(NO_FLAG), self.epoch),
        };
        let entry = SlotEntry { key: key.clone(), held: 0, handle: Weak::new(), epoch };
        match self.entries.get_mut(slot as usize) {
            Some(free) => *free = Some(entry),
            None => self.entries.push(Some(entry)),
        }
        self.by_name.insert(key.clone(), slot);
        (slot, key)
    }

    /// The shared part of a handle to `name`.
    pub(crate) fn handle(&mut self, name: &str) -> Arc<HandleSlot> {
        let slot = self.slot(name);
        let Some(Some(entry)) = self.entries.get_mut(slot as usize) else {
            // Unreachable: `slot` just made the entry. A handle that finds
            // nothing is still correct (it searches by key).
            return Arc::new(HandleSlot { slot: NO_FLAG, epoch: u64::MAX, key: name.into() });
        };
        if let Some(shared) = entry.handle.upgrade() {
            return shared;
        }
        let shared = Arc::new(HandleSlot { slot, epoch: entry.epoch, key: entry.key.clone() });
        entry.handle = Arc::downgrade(&shared);
        shared
    }

    /// The slot of `name`, given out now if it has none, and the store's
    /// one copy of the key, shared by every config compiled.
    fn slot_and_key(&mut self, name: &str) -> (u32, Arc<str>) {
        match self.by_name.get_key_value(name) {
            Some((key, &slot)) => (slot, key.clone()),
            None => self.give(name),
        }
    }

    /// Every key with a slot, and its slot.
    fn keys(&self) -> impl Iterator<Item = (&Arc<str>, u32)> + '_ {
        self.by_name.iter().map(|(k, &slot)| (k, slot))
    }

    /// How many slots have been given out, free ones included.
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Counts one more (or one fewer) kept config holding each key.
    pub(crate) fn hold<'k>(&mut self, keys: impl Iterator<Item = &'k str>, more: bool) {
        if more {
            // Room for a first config's keys at once, not by doubling.
            self.by_name.reserve(keys.size_hint().0.saturating_sub(self.by_name.len()));
        }
        for key in keys {
            let slot = self.slot(key);
            if let Some(Some(entry)) = self.entries.get_mut(slot as usize) {
                entry.held = if more { entry.held + 1 } else { entry.held.saturating_sub(1) };
            }
        }
    }

    /// Frees the slot of every key no kept config and no live handle holds,
    /// unless `keep` says otherwise; returns the keys freed.
    pub(crate) fn reclaim(&mut self, keep: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let mut freed = Vec::new();
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            let unheld = entry
                .as_ref()
                .is_some_and(|e| e.held == 0 && e.handle.strong_count() == 0 && !keep(&e.key));
            if unheld && let Some(entry) = entry.take() {
                self.by_name.remove(&entry.key);
                self.free.push(u32::try_from(slot).unwrap_or(NO_FLAG));
                freed.push(entry.key);
            }
        }
        freed
    }
}

impl Compiled {
    pub(crate) fn empty(store_id: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            version: 0,
            store_id,
            slot_epoch: 0,
            flags: Box::new([]),
            by_name: KeyIndex::new(std::iter::empty()),
            by_slot: Box::new([]),
            cohorts: foldhash::HashMap::default(),
            clock,
            counters: None,
            unnamed: Hot::absent(NO_FLAG),
        }
    }

    /// Compiles a config that [`Config::validate`](crate::config::Config::validate)
    /// accepted. Given an invalid one, it still compiles without panicking
    /// (dangling cohort references are dropped), but the result is
    /// unspecified. Cohorts unchanged since `previous` share its compiled
    /// form.
    pub(crate) fn new(
        config: &Retained,
        previous: Option<(&Compiled, &Retained)>,
        slots: &mut Slots,
        mut numbering: Option<&mut Numbering>,
        overrides: &BTreeMap<String, crate::Override>,
        store_id: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cohorts = CohortTable(
            config
                .cohorts
                .iter()
                .map(|(name, c)| {
                    let shared = previous
                        .map(|(p, _)| p)
                        .and_then(|p| p.cohorts.get(name.as_str()))
                        .filter(|p| Arc::ptr_eq(&p.source, c))
                        .cloned();
                    (name.as_str(), shared.unwrap_or_else(|| Arc::new(Cohort::new(name, c))))
                })
                .collect(),
        );

        if let Some(numbering) = numbering.as_deref_mut() {
            numbering.reserve_flags(config.flags.len() + overrides.len());
        }
        let mut flags = Vec::with_capacity(config.flags.len() + overrides.len());
        // Every key this config answers for, by number: its flags, the
        // overrides it lacks, and the store's other keys (absent).
        let mut named: Vec<(Arc<str>, u32)> = Vec::with_capacity(config.flags.len());
        let mut slot_of = Vec::with_capacity(config.flags.len());
        for (key, flag) in &config.flags {
            let index = u32::try_from(flags.len()).unwrap_or(NO_FLAG);
            let (slot, shared) = slots.slot_and_key(key);
            slot_of.push(slot);
            named.push((shared.clone(), index));
            let mut compiled = Flag::new(shared, flag, &cohorts, numbering.as_deref_mut());
            if let Some(value) = overrides.get(key) {
                compiled.force(value, numbering.as_deref_mut());
            } else if let Some(before) = unchanged(key, flag, &cohorts, previous) {
                // The same flag exposing the same contexts: its guard keeps
                // the evidence of its window rather than start again.
                compiled.guard.clone_from(&before.guard);
            }
            flags.push(compiled);
        }
        // An override of a flag the config lacks adds it, so that a test
        // (or a service before its first config) can force any key.
        let plain = config::Flag::plain();
        for (key, value) in overrides.iter().filter(|(k, _)| !config.flags.contains_key(*k)) {
            let index = u32::try_from(flags.len()).unwrap_or(NO_FLAG);
            let (slot, key) = slots.slot_and_key(key);
            slot_of.push(slot);
            named.push((key.clone(), index));
            let mut compiled = Flag::new(key, &plain, &cohorts, numbering.as_deref_mut());
            compiled.force(value, numbering.as_deref_mut());
            flags.push(compiled);
        }
        let mut by_slot = vec![NO_FLAG; slots.len()].into_boxed_slice();
        for (index, slot) in slot_of.into_iter().enumerate() {
            if let Some(entry) = by_slot.get_mut(slot as usize) {
                *entry = u32::try_from(index).unwrap_or(NO_FLAG);
            }
        }
        // Keys the store holds (kept configs, handles, overrides) but this
        // config lacks are still found, so their `unknown` evaluations are
        // counted under their own key.
        let mut unknown = |flag: Arc<str>| {
            let key = SeriesKey::Evaluations { flag, group: Group::Unknown, variant: None };
            numbering.as_deref_mut().map_or(NO_FLAG, |s| s.id(key))
        };
        for (name, slot) in slots.keys() {
            if let Some(entry) = by_slot.get_mut(slot as usize)
                && *entry == NO_FLAG
            {
                let id = unknown(name.clone());
                *entry = ABSENT | id;
                named.push((name.clone(), ABSENT | id));
            }
        }
        let record = |value: u32| match value & ABSENT {
            0 => Hot::pending(value),
            _ => Hot::absent(value & !ABSENT),
        };
        let by_name = KeyIndex::new(named.iter().map(|(key, value)| (&**key, record(*value))));
        let by_slot = by_slot.iter().map(|&value| record(value)).collect();
        drop(named);
        // Prerequisites, by index: every flag is compiled by now. The
        // config's flags come first, in its order; the overrides it lacks
        // require nothing.
        for (flag, source) in flags.iter_mut().zip(config.flags.values()) {
            if source.requires.is_empty() {
                continue;
            }
            flag.requires = source
                .requires
                .iter()
                .filter_map(|r| {
                    let index =
                        by_name.get(&r.flag).map(|h| h.index).filter(|i| i & ABSENT == 0)?;
                    Some(Prerequisite {
                        index,
                        on: r.enabled,
                        variants: r.variant_names().map(intern).collect(),
                        key: intern(&r.flag),
                    })
                })
                .collect();
        }

        let unnamed = Hot::absent(unknown("".into()));
        let cohorts = cohorts.0.into_values().map(|c| (c.name, c)).collect();
        let mut compiled = Self {
            version: config.version,
            store_id,
            slot_epoch: slots.epoch,
            flags: flags.into(),
            by_name,
            by_slot,
            cohorts,
            clock,
            counters: None,
            unnamed,
        };
        compiled.refresh_records(None);
        compiled
    }

    /// Recomputes the hot records of every key (or of the flag at `only`)
    /// from the flags: called once they are compiled and their
    /// prerequisites resolved, and after a flag is changed in place.
    fn refresh_records(&mut self, only: Option<u32>) {
        let flags = &self.flags;
        for hot in self.by_name.records_mut().chain(self.by_slot.iter_mut()) {
            if hot.kind != Kind::Absent && only.is_none_or(|i| i == hot.index) {
                *hot = Hot::of(flags, hot.index);
            }
        }
    }

    /// Takes the first sample of every guard; called when the config is
    /// installed. Windows are measured on the clock's monotonic side.
    /// Starts the guards' first windows; with `restart`, also of guards
    /// carried over from the previous version (a new clock).
    pub(crate) fn start_guards(&self, restart: bool) {
        let Some(counters) = &self.counters else { return };
        let (now, wall) = (self.clock.monotonic_millis(), self.clock.now_millis());
        for flag in self.flags.iter() {
            if let Some(guard) = &flag.guard
                && (restart || !guard.started())
            {
                guard.start(flag, &counters.outcomes, now, wall);
            }
        }
    }

    /// What each guard saw at its last look.
    pub(crate) fn guard_evidence(&self) -> Vec<crate::observe::GuardEvidence> {
        self.flags
            .iter()
            .filter_map(|flag| {
                let e = flag.guard.as_ref()?.evidence()?;
                Some(crate::observe::GuardEvidence {
                    flag: flag.key.to_string(),
                    stage: e.stage,
                    control_group: e.control_group,
                    exposed: e.exposed,
                    control: e.control,
                })
            })
            .collect()
    }

    /// Whether any flag has a guard (and counting is on, which guards read).
    pub(crate) fn has_guards(&self) -> bool {
        self.counters.is_some() && self.flags.iter().any(|f| f.guard.is_some())
    }

    /// Looks at every guard: what each found worth telling (trips, with
    /// the index of the stage they step back from; starved groups; split
    /// mismatches). Windows run on monotonic time; which stages are in
    /// effect, on wall time.
    pub(crate) fn check_guards(&self) -> Vec<Report> {
        let Some(counters) = &self.counters else { return Vec::new() };
        let (now, wall) = (self.clock.monotonic_millis(), self.clock.now_millis());
        self.flags
            .iter()
            .filter_map(|flag| {
                Some(flag.guard.as_ref()?.check(flag, &counters.outcomes, now, wall))
            })
            .flatten()
            .collect()
    }

    /// The hot record of a key (absent if the store never knew it).
    #[inline]
    pub(crate) fn hot(&self, key: &str) -> &Hot {
        self.by_name.get(key).unwrap_or(&self.unnamed)
    }

    /// The hot record by slot.
    #[inline]
    pub(crate) fn hot_at(&self, slot: u32) -> &Hot {
        self.by_slot.get(slot as usize).unwrap_or(&self.unnamed)
    }

    /// A record's flag, or the `unknown` counter to count a miss in.
    #[inline]
    pub(crate) fn flag_of(&self, hot: &Hot) -> Result<&Flag, u32> {
        self.flags.get(hot.index as usize).ok_or(hot.off)
    }

    /// The flag by key, or the `unknown` counter to count a miss in.
    #[inline]
    pub(crate) fn lookup(&self, key: &str) -> Result<&Flag, u32> {
        self.flag_of(self.hot(key))
    }

    /// Gives each migration flag its counts, from the store's registry.
    pub(crate) fn attach_migrations(&mut self, registry: &mut crate::migration::Registry) {
        for flag in self.flags.iter_mut().filter(|f| f.migration) {
            let names: Vec<&'static str> = flag.stages.iter().flatten().map(|s| s.name).collect();
            flag.migration_counts = Some(Box::new(registry.flag(&flag.key, &names)));
        }
    }

    /// Whether the flag of a hot record is on for `ctx` (an absent one is
    /// off), counted: the common shapes from the record alone, the rest
    /// by walking the flag.
    #[inline]
    pub(crate) fn check(&self, hot: &Hot, ctx: &Context<'_>) -> bool {
        if hot.kind == Kind::Walk {
            return self.walk(hot, ctx);
        }
        let (on, cell) = hot.decide(ctx);
        if let Some(counters) = &self.counters {
            counters.evaluations.add(cell, 1);
        }
        on
    }

    #[inline]
    pub(crate) fn by_name(&self, key: &str) -> Option<&Flag> {
        self.lookup(key).ok()
    }

    /// [`Compiled::check`] of a flag its record cannot decide: walks the
    /// flag, counted (out of line, so that the records' path stays small).
    #[inline(never)]
    fn walk(&self, hot: &Hot, ctx: &Context<'_>) -> bool {
        let found = self.flag_of(hot);
        let Some(counters) = &self.counters else {
            return found.is_ok_and(|f| f.is_enabled(&self.flags, ctx, &*self.clock));
        };
        let (on, cell) = match found {
            Ok(flag) => flag.is_enabled_counted(&self.flags, ctx, &*self.clock),
            Err(unknown) => (false, unknown),
        };
        counters.evaluations.add(cell, 1);
        on
    }

    /// A looked-up flag's decision for `ctx` and the migration step it
    /// puts the context at (an absent flag: unknown, `Off`), counted as an
    /// evaluation.
    #[inline]
    pub(crate) fn migration(
        &self,
        found: Result<&Flag, u32>,
        ctx: &Context<'_>,
    ) -> (Reason<'static>, MigrationStep) {
        match found {
            Ok(flag) => {
                // A migration flag has no variants: its cell is the group's.
                let reason = flag.decide(&self.flags, ctx, &*self.clock);
                if let Some(counters) = &self.counters {
                    counters.evaluations.add(flag.evaluation_cell(reason, None), 1);
                }
                (reason, flag.step_of(reason, &*self.clock))
            }
            Err(unknown) => {
                if let Some(counters) = &self.counters {
                    counters.evaluations.add(unknown, 1);
                }
                (Reason::UnknownFlag, MigrationStep::Off)
            }
        }
    }

    /// Evaluates a looked-up flag for `ctx` in this snapshot (an absent flag
    /// is unknown), counted.
    #[inline]
    pub(crate) fn evaluate(
        &self,
        found: Result<&Flag, u32>,
        ctx: &Context<'_>,
    ) -> Evaluation<'static> {
        match found {
            Ok(flag) => {
                let reason = flag.decide(&self.flags, ctx, &*self.clock);
                let variant = if reason.exposes() { flag.variant_at(ctx, reason) } else { None };
                if let Some(counters) = &self.counters {
                    counters.evaluations.add(flag.evaluation_cell(reason, variant), 1);
                }
                flag.conclude_at(reason, variant)
            }
            Err(unknown) => {
                if let Some(counters) = &self.counters {
                    counters.evaluations.add(unknown, 1);
                }
                Evaluation::UNKNOWN
            }
        }
    }

    /// Counts an outcome in the group `ctx` falls in for `flag`.
    #[inline]
    pub(crate) fn record(&self, flag: &Flag, ctx: &Context<'_>, outcome: Outcome) {
        if self.counters.is_none() {
            return;
        }
        let reason = flag.decide(&self.flags, ctx, &*self.clock);
        self.record_decided(flag, reason, ctx, outcome);
    }

    /// [`Compiled::record`] for a context whose decision is known.
    #[inline]
    pub(crate) fn record_decided(
        &self,
        flag: &Flag,
        reason: Reason<'static>,
        ctx: &Context<'_>,
        outcome: Outcome,
    ) {
        let Some(counters) = &self.counters else { return };
        let counters = &counters.outcomes;
        let block = match reason {
            Reason::Stage { index, .. } => flag.series.outcomes.get(1 + index).copied(),
            Reason::Override { .. } => flag.forced.as_ref().map(|f| f.block),
            Reason::Enabled => flag.series.outcomes.get(1).copied(),
            Reason::HeldBack { .. } => Some(flag.series.held_back),
            _ => flag.series.outcomes.first().copied(),
        };
        if let Some(guard) = &flag.guard {
            let error = match outcome {
                Outcome::Success => Some(false),
                Outcome::Error => Some(true),
                _ => None,
            };
            // The unit's evidence: exposed by the watched stage, or in its
            // control group.
            let side = match reason {
                Reason::Stage { index, .. } if guard.watching() == Some(index) => {
                    Some(Side::Exposed)
                }
                Reason::HeldBack { .. } => Some(Side::Control),
                Reason::NotExposed if !guard.holds_back() => Some(Side::Control),
                _ => None,
            };
            if let (Some(error), Some(side), Some(unit)) = (error, side, flag.unit_of(ctx)) {
                guard.record(
                    side,
                    xxhash_rust::xxh3::xxh3_64_with_seed(unit.as_bytes(), flag.seed),
                    error,
                );
            }
        }
        let Some(block) = block.filter(|&b| b != NO_FLAG) else { return };
        match outcome {
            Outcome::Success => counters.add(block + SUCCESSES, 1),
            Outcome::Error => counters.add(block + ERRORS, 1),
            Outcome::Latency(latency) => {
                let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                counters.add(block + LATENCY_SUM, nanos);
                counters.add(block + LATENCY_BUCKET_0 + latency_bucket(latency) as u32, 1);
            }
        }
    }

    /// A guard's local decision: the flag steps back from stage `stage` (to
    /// the one before it), or turns off. Returns the flag's stage in effect
    /// afterwards, `None` when it is off; `None` overall when the flag has
    /// no such stage.
    #[cold]
    pub(crate) fn step_back(
        &mut self,
        key: &str,
        stage: usize,
        action: GuardAction,
    ) -> Option<Option<&'static str>> {
        let index = self.by_name.get(key)?.index;
        let flag = self.flags.get_mut(index as usize)?;
        let stages = flag.stages.as_deref()?;
        if action == GuardAction::Disable || stage == 0 {
            flag.enabled = false;
            flag.shortcut = flag.shortcut_now();
            self.refresh_records(Some(index));
            return Some(None);
        }
        let kept: Box<[Stage]> = stages.get(..stage)?.into();
        let dropped = stages.get(stage..)?.iter().map(|s| s.name);
        flag.later = dropped.chain(flag.later.iter().copied()).collect();
        let now_serving = kept.last().map(|s| s.name);
        flag.stages = Some(kept);
        flag.shortcut = flag.shortcut_now();
        self.refresh_records(Some(index));
        Some(now_serving)
    }
}

impl Compiled {
    /// Steps flags back as guards did before: each serves the named stage
    /// (one at or before its current one), or is off.
    #[cold]
    pub(crate) fn reapply_trips(&mut self, trips: &BTreeMap<String, Option<String>>) {
        for (key, stage) in trips {
            let keep = stage.as_deref().and_then(|name| {
                let stages = self.by_name(key)?.stages.as_deref()?;
                stages.iter().position(|s| s.name == name)
            });
            let _ = match keep {
                Some(index) => self.step_back(key, index + 1, GuardAction::RollbackStage),
                None => self.step_back(key, 0, GuardAction::Disable),
            };
        }
    }
}

impl Flag {
    fn new(
        key: Arc<str>,
        flag: &config::Flag,
        cohorts: &CohortTable<'_>,
        numbering: Option<&mut Numbering>,
    ) -> Self {
        let salt = flag.salt_or(&key);
        let hashing = Hashing::new(flag.bucketing, salt, Unit::new(flag.bucket_by.as_ref()));
        let variants = Variants::new(&flag.variants, cohorts);
        let stages: Option<Box<[Stage]>> = (!flag.stages.is_empty()).then(|| {
            let current = flag.current_stage().unwrap_or(0);
            // Each exposure group's cells: no variant, then its variants.
            let mut cells = CELL_EXPOSED as u32;
            flag.stages
                .iter()
                .take(current + 1)
                .map(|s| {
                    let own = (s.salt.is_some() || s.bucket_by.is_some()).then(|| {
                        let by = s.bucket_by.as_ref().or(flag.bucket_by.as_ref());
                        let salt = s.salt.as_deref().unwrap_or(salt);
                        Box::new(Hashing::new(flag.bucketing, salt, Unit::new(by)))
                    });
                    let stage_variants = (!s.variants.is_empty())
                        .then(|| Box::new(Variants::new(&s.variants, cohorts)));
                    let threshold = s
                        .percent
                        .map_or(NO_PERCENT, |p| own.as_deref().unwrap_or(&hashing).threshold(p));
                    let stage = Stage {
                        name: intern(&s.name),
                        cohorts: cohorts.resolve(&s.cohorts),
                        threshold,
                        start_at: s
                            .start_at
                            .as_deref()
                            .and_then(|t| parse_rfc3339_millis(t).ok())
                            .unwrap_or(NO_START),
                        cells,
                        variants: stage_variants,
                        own,
                        step: if flag.migration {
                            s.step.unwrap_or_default()
                        } else {
                            MigrationStep::Off
                        },
                    };
                    let listed = stage.variants.as_deref().unwrap_or(&variants).len();
                    cells += 1 + u32::try_from(listed).unwrap_or(0);
                    stage
                })
                .collect()
        });
        let later = match flag.current_stage() {
            Some(current) => {
                flag.stages.iter().skip(current + 1).map(|s| intern(&s.name)).collect()
            }
            None => Box::default(),
        };
        let exclude = cohorts.resolve(&flag.exclude);
        let holdback = flag
            .guard
            .as_ref()
            .and_then(|g| g.holdback)
            .map(|h| Holdback { seed: holdback_seed(salt), threshold: threshold(h) });
        let series = numbering
            .map(|numbering| {
                let prerequisites = !flag.requires.is_empty();
                FlagSeries::new(
                    &key,
                    stages.as_deref(),
                    &variants,
                    holdback.is_some(),
                    prerequisites,
                    numbering,
                )
            })
            .unwrap_or_default();
        let seed = salt_seed(salt);
        let mut compiled = Self {
            key,
            // Set below, from the rest.
            shortcut: Shortcut::Walk,
            enabled: flag.enabled,
            hashing,
            seed,
            exclude,
            stages,
            later,
            variants,
            series,
            guard: flag.guard.as_ref().map(|g| Arc::new(GuardState::new(g))),
            forced: None,
            holdback,
            // Resolved once every flag is compiled.
            requires: Box::default(),
            value: flag.value.as_ref().map(intern_value),
            migration: flag.migration,
            migration_counts: None,
        };
        compiled.shortcut = compiled.shortcut_now();
        compiled
    }

    /// What `is_enabled` can answer without walking, for the flag as it is
    /// now (compiled, overridden, or stepped back by a guard): never for an
    /// override (the walk starts with it) or a holdback (a held-back
    /// context is off whatever its rollout bucket).
    fn shortcut_now(&self) -> Shortcut {
        if self.forced.is_some() || self.holdback.is_some() {
            Shortcut::Walk
        } else {
            Shortcut::new(self.enabled, self.exclude.is_empty(), self.stages.as_deref())
        }
    }

    /// Applies a local override: the flag now answers it, whatever the
    /// config says (the walk starts with it; no shortcut skips it).
    pub(crate) fn force(&mut self, value: &crate::Override, numbering: Option<&mut Numbering>) {
        let (enabled, variant) = match value {
            crate::Override::On => (true, None),
            crate::Override::Off => (false, None),
            crate::Override::Variant(name) => (true, Some(intern(name))),
        };
        let (cell, block) = match numbering {
            Some(numbering) => {
                let (flag, group) = (self.key.clone(), Group::Override(enabled));
                (
                    numbering.id(SeriesKey::Evaluations { flag: flag.clone(), group, variant }),
                    numbering.id(SeriesKey::Outcomes { flag, group }),
                )
            }
            None => (NO_FLAG, NO_FLAG),
        };
        self.forced = Some(Forced { enabled, variant, cell, block });
        self.shortcut = self.shortcut_now();
    }

    /// The evaluation counter for a decision and the variant handed out.
    #[inline]
    pub(crate) fn evaluation_cell(&self, reason: Reason<'_>, variant: Option<usize>) -> u32 {
        let cell = match reason {
            Reason::KillSwitch => CELL_OFF,
            Reason::Excluded { .. } => CELL_EXCLUDED,
            Reason::Stage { index, .. } => {
                let Some(stage) = self.stages.as_deref().and_then(|s| s.get(index)) else {
                    return NO_FLAG;
                };
                stage.cells as usize + variant.map_or(0, |v| v + 1)
            }
            Reason::Enabled => CELL_EXPOSED + variant.map_or(0, |v| v + 1),
            Reason::Override { .. } => return self.forced.as_ref().map_or(NO_FLAG, |f| f.cell),
            Reason::HeldBack { .. } => return self.series.held_back_cell,
            Reason::Prerequisite { .. } => return self.series.prerequisite_cell,
            _ => CELL_NOT_EXPOSED,
        };
        self.series.evaluations.get(cell).copied().unwrap_or(NO_FLAG)
    }
}

impl FlagSeries {
    fn new(
        flag: &Arc<str>,
        stages: Option<&[Stage]>,
        variants: &Variants,
        held_back: bool,
        prerequisites: bool,
        numbering: &mut Numbering,
    ) -> Self {
        // Each exposure group and its variants: the stages', or `on`.
        fn of_stage<'v>(s: &'v Stage, variants: &'v Variants) -> (Group, &'v Variants) {
            (Group::Exposed(s.name), s.variants.as_deref().unwrap_or(variants))
        }
        let groups = || {
            let on = stages.is_none().then_some((Group::Exposed("on"), variants));
            stages.unwrap_or_default().iter().map(|s| of_stage(s, variants)).chain(on)
        };
        let exposures = groups().count();
        let listed: usize = groups().map(|(_, v)| v.list.len()).sum();
        // Off, excluded and not exposed, then each group and its variants;
        // an outcome block for not exposed and for each group.
        let (evaluated, blocks) = (3 + exposures + listed, 1 + exposures);
        let extra = 2 * usize::from(held_back) + usize::from(prerequisites);
        let mut numbering = numbering.flag(flag, evaluated + blocks + extra);
        // `not-exposed` and the first exposure group are the cells a
        // shortcut check counts in: hot, beside other flags' hot cells.
        let mut evaluations = Vec::with_capacity(evaluated);
        evaluations.extend([
            numbering.evaluations(Group::Off, None, false),
            numbering.evaluations(Group::Excluded, None, false),
            numbering.evaluations(Group::NotExposed, None, true),
        ]);
        for (i, (group, listed)) in groups().enumerate() {
            evaluations.push(numbering.evaluations(group, None, i == 0));
            evaluations.extend(
                listed.list.iter().map(|v| numbering.evaluations(group, Some(v.name), false)),
            );
        }
        let outcomes = std::iter::once(Group::NotExposed)
            .chain(groups().map(|(group, _)| group))
            .map(|group| numbering.outcomes(group))
            .collect();
        let (held_back_cell, held_back) = if held_back {
            (
                numbering.evaluations(Group::HeldBack, None, false),
                numbering.outcomes(Group::HeldBack),
            )
        } else {
            (NO_FLAG, NO_FLAG)
        };
        let prerequisite_cell = if prerequisites {
            numbering.evaluations(Group::Prerequisite, None, false)
        } else {
            NO_FLAG
        };
        let cell = |i: usize| evaluations.get(i).copied().unwrap_or(NO_FLAG);
        let (off, not_exposed, first_exposed) =
            (cell(CELL_OFF), cell(CELL_NOT_EXPOSED), cell(CELL_EXPOSED));
        Self {
            evaluations: evaluations.into(),
            outcomes,
            off,
            not_exposed,
            first_exposed,
            held_back_cell,
            held_back,
            prerequisite_cell,
        }
    }
}

impl Shortcut {
    pub(crate) fn new(enabled: bool, no_exclusions: bool, stages: Option<&[Stage]>) -> Self {
        if !enabled {
            return Shortcut::Off;
        }
        if let Some([stage]) = stages
            && stage.start_at == NO_START
            && stage.own.is_none()
            && !(no_exclusions && stage.cohorts.is_empty())
        {
            return Shortcut::Audience;
        }
        if !no_exclusions {
            return Shortcut::Walk;
        }
        let Some(stages) = stages else { return Shortcut::On };
        let bare = |s: &Stage| s.cohorts.is_empty() && s.start_at == NO_START && s.own.is_none();
        if stages.iter().any(|s| bare(s) && s.threshold == NO_PERCENT) {
            Shortcut::On
        } else if stages.iter().all(bare) {
            // Every stage buckets the same unit with the same seed, so the
            // union of their audiences is the largest of them.
            Shortcut::Below(stages.iter().map(|s| s.threshold).max().unwrap_or(0))
        } else {
            Shortcut::Walk
        }
    }
}

/// Every cohort of a config, compiled once and shared by the stages and
/// exclusions that name it.
struct CohortTable<'c>(foldhash::HashMap<&'c str, Arc<Cohort>>);

/// The previous version's compiled `key`, when it was compiled from the
/// very same flag (shared by the retained configs), every cohort the flag
/// names is unchanged, it has no prerequisites (whose changes would change
/// who it exposes) and no override: then it exposes the same contexts.
fn unchanged<'p>(
    key: &str,
    flag: &Arc<config::Flag>,
    cohorts: &CohortTable<'_>,
    previous: Option<(&'p Compiled, &Retained)>,
) -> Option<&'p Flag> {
    let (previous, previous_config) = previous?;
    let same = previous_config.flags.get(key).is_some_and(|p| Arc::ptr_eq(p, flag));
    let before = previous.by_name(key)?;
    let cohorts_same =
        flag.cohort_names().all(|name| match (cohorts.0.get(name), previous.cohorts.get(name)) {
            (Some(now), Some(then)) => Arc::ptr_eq(now, then),
            _ => false,
        });
    (same && cohorts_same && flag.requires.is_empty() && before.forced.is_none()).then_some(before)
}

impl CohortTable<'_> {
    fn resolve(&self, names: &[String]) -> Box<[Arc<Cohort>]> {
        names.iter().filter_map(|n| self.0.get(n.as_str()).cloned()).collect()
    }
}

impl Cohort {
    fn new(name: &str, cohort: &Arc<config::Cohort>) -> Self {
        let set = |list: &Option<Vec<String>>| list.as_deref().map(NameSet::new);
        Self {
            name: intern(name),
            source: cohort.clone(),
            tenants: set(&cohort.tenants),
            users: set(&cohort.users),
            regions: set(&cohort.regions),
            attributes: cohort
                .attributes
                .iter()
                .flatten()
                .map(|(k, values)| (k.as_str().into(), NameSet::new(values)))
                .collect(),
            // A rule that does not compile was refused by validation.
            rules: cohort
                .rules
                .iter()
                .flatten()
                .filter_map(|r| crate::rules::CompiledRule::new(r).ok())
                .collect(),
        }
    }
}

/// Interns a value for the life of the process, as [`intern`] does names:
/// evaluations hand out `&Value` without a reference count, and a value
/// that stays the same across versions is kept once.
fn intern_value(value: &serde_json::Value) -> &'static serde_json::Value {
    static VALUES: OnceLock<Mutex<HashMap<String, &'static serde_json::Value>>> = OnceLock::new();
    let values = VALUES.get_or_init(Mutex::default);
    let mut values = values.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = value.to_string();
    if let Some(&interned) = values.get(&key) {
        return interned;
    }
    let interned: &'static serde_json::Value = Box::leak(Box::new(value.clone()));
    values.insert(key, interned);
    interned
}

/// Interns a name for the life of the process.
///
/// Evaluation hands out stage, variant and cohort names as `&str` without
/// allocating and without touching a reference count (which would make
/// cores evaluating the same flag contend on one cache line). Each distinct
/// name is kept once, so memory grows with the number of distinct names ever
/// configured, not with the number of configs applied.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<foldhash::HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Mutex::default);
    // A panic elsewhere while holding the lock cannot leave the set invalid.
    let mut names = names.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&interned) = names.get(name) {
        return interned;
    }
    let interned: &'static str = Box::leak(name.into());
    names.insert(interned);
    interned
}

#[cfg(test)]
mod tests {

    #[test]
    fn packed_names_are_equal_exactly_when_their_bytes_are() {
        // Every string of up to 3 bytes over a small alphabet, and
        // strings of 4 to 17 bytes differing in one byte at every position.
        let alphabet = [b'a', b'b', 0, 0xff];
        let mut short: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=3 {
            let mut all = vec![Vec::new()];
            for _ in 0..len {
                all = all
                    .into_iter()
                    .flat_map(|p: Vec<u8>| {
                        alphabet.iter().map(move |&c| [p.clone(), vec![c]].concat())
                    })
                    .collect();
            }
            short.extend(all);
        }
        for a in &short {
            for b in &short {
                if a.len() == b.len() {
                    assert_eq!(pack(a) == pack(b), a == b, "{a:?} {b:?}");
                }
            }
        }
        for len in 4..=17 {
            let base: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            for at in 0..len {
                let mut other = base.clone();
                other[at] ^= 1;
                let fits = len <= 16;
                if fits {
                    assert_ne!(pack(&base), pack(&other), "len {len} at {at}");
                }
                let names = [Packed::new(std::str::from_utf8(&base).expect("ascii"))];
                assert!(packed_contains(&names, std::str::from_utf8(&base).expect("ascii")));
                assert!(!packed_contains(&names, std::str::from_utf8(&other).expect("ascii")));
            }
        }
    }
    use super::*;

    #[test]
    fn interning_returns_one_copy_per_name() {
        let a = intern(&String::from("canary"));
        let b = intern(&String::from("canary"));
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn slots_are_stable_and_dense() {
        let mut slots = Slots::default();
        assert_eq!(slots.slot("a"), 0);
        assert_eq!(slots.slot("b"), 1);
        assert_eq!(slots.slot("a"), 0);
    }

    #[test]
    fn unheld_slots_are_freed_and_given_to_new_keys_in_a_new_epoch() {
        let mut slots = Slots::default();
        slots.hold(["a", "b"].into_iter(), true);
        let handle = slots.handle("c");
        assert!(slots.reclaim(|_| false).is_empty(), "held and handled keys stay");
        slots.hold(["a"].into_iter(), false);
        assert_eq!(slots.reclaim(|_| false), [Arc::<str>::from("a")]);
        assert_eq!(slots.epoch, 0);
        assert_eq!(slots.slot("d"), 0, "a freed slot is reused");
        assert_eq!(slots.epoch, 1);
        drop(handle);
        assert_eq!(slots.reclaim(|k| k == "d"), [Arc::<str>::from("c")]);
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn name_sets_agree_whether_scanned_or_hashed() {
        let names: Vec<String> = (0..20).map(|i| format!("t-{i}")).collect();
        let few = NameSet::new(&names[..FEW]);
        let many = NameSet::new(&names);
        assert!(matches!(few, NameSet::Few(_)) && matches!(many, NameSet::Many(_)));
        for n in &names[..FEW] {
            assert!(few.contains(n) && many.contains(n));
        }
        assert!(!few.contains("t-19") && many.contains("t-19") && !many.contains("t-20"));
        // Long names, and names at the 16/17-byte edge, absent by one byte.
        let mut mixed = names.clone();
        mixed.extend(["sixteen-bytes-ab", "seventeen-bytes-a", "a", ""].map(String::from));
        mixed.extend((0..20).map(|i| format!("a-tenant-name-long-enough-{i}")));
        let many = NameSet::new(&mixed);
        for n in &mixed {
            assert!(many.contains(n), "{n:?}");
        }
        for absent in ["sixteen-bytes-aB", "seventeen-bytes-A", "b", "a-tenant-name-long-enough-20"]
        {
            assert!(!many.contains(absent), "{absent:?}");
        }
    }
}
