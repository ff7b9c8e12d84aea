//! The flag store: one `ArcSwap` of the compiled snapshot.
//!
//! Readers `load()` the current snapshot and never lock. Writers serialize on
//! a mutex that readers never touch, compile the new config, check its
//! version, and `store` it. The last [`HISTORY`] applied snapshots are kept
//! for [`FlagStore::rollback`].

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::{Clock, SystemClock};
use crate::compile::{Compiled, Flag, HandleSlot, Hot, Slots};
use crate::config::{Config, GuardAction};
use crate::context::Context;
use crate::error::Error;
use crate::eval::Evaluation;
use crate::explain::Explanation;
use crate::migration::MigrationStep;
use crate::observe::counters;
use crate::observe::guard::Report;
use crate::observe::{
    ChangeCause, ConfigChange, GuardTrip, Listener, Metrics, Observe, Outcome, StoreEvent, emit,
};
use crate::retained::Retained;

/// Typed reads of a flag's JSON value, for the value getters.
mod values {
    use serde_json::Value;

    #[inline]
    pub(super) fn boolean(value: Option<&Value>, default: bool) -> bool {
        value.and_then(Value::as_bool).unwrap_or(default)
    }

    #[inline]
    pub(super) fn string<'a>(value: Option<&'static Value>, default: &'a str) -> &'a str {
        value.and_then(Value::as_str).unwrap_or(default)
    }

    #[inline]
    pub(super) fn integer(value: Option<&Value>, default: i64) -> i64 {
        value.and_then(Value::as_i64).unwrap_or(default)
    }

    #[inline]
    pub(super) fn float(value: Option<&Value>, default: f64) -> f64 {
        value.and_then(Value::as_f64).unwrap_or(default)
    }
}

/// How many applied configs a store keeps, the serving one included.
pub const HISTORY: usize = 16;

/// A lock-free, hot-swappable store of flags.
///
/// Share it as `Arc<FlagStore>` or `&'static FlagStore`: every check loads
/// the current compiled config without a lock, and [`FlagStore::apply_json`]
/// swaps a new one in without stopping readers. A config that fails to
/// parse, validate or pass the version check is refused with an [`Error`],
/// and the config before it keeps serving.
///
/// # Each thread's snapshot
///
/// Checks by key and by handle read the serving config through a cache
/// kept by each thread, one per store for up to four stores a thread
/// checks (a fifth takes a slower shared load). Every swap is seen by the
/// thread's next check. A thread that stops checking a store keeps the
/// last config it saw alive (its compiled flags, never the store itself)
/// until it checks that store again, another store takes its slot after
/// this one was dropped, or the thread exits. Dropping the store still
/// ends its writer and guard thread at once.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore};
///
/// let store = FlagStore::new();
/// let ctx = Context::new().tenant("acme");
/// assert!(!store.is_enabled("dark-mode", &ctx)); // an empty store: all off
///
/// store.apply_json(r#"{ "version": 1, "flags": { "dark-mode": { "enabled": true } } }"#)?;
/// assert!(store.is_enabled("dark-mode", &ctx));
///
/// // A bad push is refused; version 1 keeps serving.
/// assert!(store.apply_json(r#"{ "version": 2, "flags": { "dark-mode": {} } }"#).is_err());
/// assert_eq!(store.version(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FlagStore {
    shared: Arc<Shared>,
}

struct Shared {
    id: u64,
    /// The serving snapshot; in an `Arc` so a thread's cache of it
    /// ([`Shared::with_current`]) need not keep the rest of the store.
    current: Arc<ArcSwap<Compiled>>,
    /// The serving snapshot's pins, swapped in just before it: what
    /// [`FlagStore::snapshot`] hands out.
    pins: Arc<ArcSwap<Pins>>,
    writer: Mutex<Writer>,
    listeners: Mutex<Vec<(u64, Listener)>>,
    /// The guard thread's stop signal, once it runs.
    guard_thread: Mutex<Option<Arc<Signal>>>,
}

thread_local! {
    /// Each thread's last snapshot of each store it checked, revalidated
    /// with one relaxed load per check instead of `ArcSwap::load`'s debt
    /// slot (two locked instructions).
    static CACHED: RefCell<[Option<Cached>; CACHED_STORES]> =
        const { RefCell::new([None, None, None, None]) };
}

/// How many stores a thread caches a snapshot of; checks of more stores
/// on one thread take the plain load. A fixed array: caching never
/// allocates.
const CACHED_STORES: usize = 4;

/// One store's entry in a thread's cache.
struct Cached {
    id: u64,
    /// Whether the store still exists: entries of dropped stores go when
    /// the thread next caches a store.
    store: Weak<Shared>,
    snapshot: arc_swap::Cache<Arc<ArcSwap<Compiled>>, Arc<Compiled>>,
    pins: arc_swap::Cache<Arc<ArcSwap<Pins>>, Arc<Pins>>,
}

/// A [`Snapshot`]'s hold on a compiled config. Every config has one pin
/// per counter shard (two per core) and one for the threads beyond them,
/// each on cache lines of its own, so taking and dropping a snapshot moves
/// a reference count only the threads of one shard touch, not the
/// config's, which every core would (and bounce between them).
#[repr(align(128))]
struct Pin {
    compiled: Arc<Compiled>,
}

/// The pins of one config.
struct Pins {
    /// By the shard a thread owns ([`counters::claimed_shard`]).
    owned: Box<[Arc<Pin>]>,
    /// For threads that own no shard.
    overflow: Arc<Pin>,
}

impl Pins {
    fn of(compiled: &Arc<Compiled>) -> Self {
        let pin = || Arc::new(Pin { compiled: compiled.clone() });
        Pins { owned: (0..counters::shards()).map(|_| pin()).collect(), overflow: pin() }
    }

    /// This thread's pin.
    #[inline]
    fn mine(&self) -> &Arc<Pin> {
        counters::claimed_shard().and_then(|shard| self.owned.get(shard)).unwrap_or(&self.overflow)
    }
}

impl Shared {
    /// Runs `f` on the serving snapshot through this thread's cache of it:
    /// at most one cached snapshot per thread per store, for up to
    /// [`CACHED_STORES`] stores. It holds the snapshot (not the store)
    /// until the thread checks that store again, caches another store in
    /// its slot after this one was dropped, or exits. A re-entrant call
    /// (a `Clock` that checks a flag) takes the plain load.
    #[inline]
    fn with_current<R>(this: &Arc<Shared>, f: impl Fn(&Compiled) -> R) -> R {
        match Self::with_cached(this, |cached| f(cached.snapshot.load())) {
            Some(result) => result,
            None => f(&this.current.load()),
        }
    }

    /// A pin of the serving snapshot, through this thread's cache of the
    /// pins (as [`Shared::with_current`] caches the snapshot).
    #[inline]
    fn pin(this: &Arc<Shared>) -> Arc<Pin> {
        match Self::with_cached(this, |cached| cached.pins.load().mine().clone()) {
            Some(pin) => pin,
            None => this.pins.load().mine().clone(),
        }
    }

    /// Runs `f` on this thread's cache entry of the store; `None` when
    /// the thread has no slot for it or the call is re-entrant.
    #[inline]
    fn with_cached<R>(this: &Arc<Shared>, f: impl FnOnce(&mut Cached) -> R) -> Option<R> {
        CACHED
            .try_with(|cell| {
                let mut slots = cell.try_borrow_mut().ok()?;
                let mine = |c: &&mut Cached| c.id == this.id;
                // Found by reference, not by index: no second check of the
                // slot it was found in.
                if let Some(cached) = slots.iter_mut().flatten().find(mine) {
                    return Some(f(cached));
                }
                let index = Self::cache(this, &mut slots)?;
                Some(f(slots.get_mut(index)?.as_mut()?))
            })
            .ok()
            .flatten()
    }

    /// Caches the store in a free slot, or one of a store dropped since
    /// (out of line: once per thread and store).
    #[cold]
    #[inline(never)]
    fn cache(this: &Arc<Shared>, slots: &mut [Option<Cached>; CACHED_STORES]) -> Option<usize> {
        let free =
            slots.iter().position(|c| c.as_ref().is_none_or(|c| c.store.strong_count() == 0))?;
        *slots.get_mut(free)? = Some(Cached {
            id: this.id,
            store: Arc::downgrade(this),
            snapshot: arc_swap::Cache::new(this.current.clone()),
            pins: arc_swap::Cache::new(this.pins.clone()),
        });
        Some(free)
    }

    /// Serves `compiled`: its pins first, so a snapshot taken after a check
    /// saw it is never older.
    fn serve(&self, compiled: Arc<Compiled>) {
        self.pins.store(Arc::new(Pins::of(&compiled)));
        self.current.store(compiled);
    }
}

/// A flag and a condition variable: how a background thread is told to stop.
#[derive(Default)]
struct Signal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

struct Writer {
    slots: Slots,
    /// Applied snapshots, oldest first; the back one is serving.
    history: VecDeque<Applied>,
    /// The newest version ever applied: a rollback does not lower it, so a
    /// poller that fetches the rolled-back document again cannot undo the
    /// rollback.
    newest: Option<u64>,
    clock: Arc<dyn Clock>,
    observe: Observe,
    /// Local overrides, applied to every config compiled from now on.
    overrides: BTreeMap<String, Override>,
    /// Whether guards run on a background thread (or only when
    /// [`FlagStore::check_guards`] is called).
    guard_thread: bool,
    /// The counts of the store's migration flags.
    migrations: crate::migration::Registry,
}

/// A local answer for a flag that beats the pushed config, set with
/// [`FlagStore::set_override`]: for tests, for an operator pinning a flag on
/// one instance, or for a service before its first config arrives.
/// Evaluations show it as [`Reason::Override`](crate::Reason::Override).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Override {
    /// On for everyone.
    On,
    /// Off for everyone.
    Off,
    /// On for everyone, with this variant.
    Variant(String),
}

/// An applied config: compiled, and as written (for change events), with
/// the guard trips taken on it locally.
#[derive(Clone)]
struct Applied {
    compiled: Arc<Compiled>,
    config: Arc<Retained>,
    /// Flags a guard stepped back on this version: the stage each serves
    /// now, `None` when it is off.
    trips: BTreeMap<String, Option<String>>,
}

/// What a store decided locally, beyond the documents it was given: a
/// rollback (serving an older version than the newest applied) and guard
/// trips on the serving version. The updater persists it with its cache,
/// so that a restart does not undo it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decisions {
    /// The version serving.
    pub(crate) serving: u64,
    /// The newest version applied.
    pub(crate) newest: u64,
    /// Flags stepped back by a guard on the serving version, and the stage
    /// each serves (`None`: off).
    pub(crate) trips: BTreeMap<String, Option<String>>,
}

/// How often the guard thread looks at the guards.
const GUARD_TICK: Duration = Duration::from_millis(200);

impl FlagStore {
    /// An empty store: every flag is off (unknown) until a config is applied.
    pub fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let writer = Writer {
            slots: Slots::default(),
            history: VecDeque::new(),
            newest: None,
            clock,
            observe: Observe::new(),
            overrides: BTreeMap::new(),
            guard_thread: true,
            migrations: crate::migration::Registry::default(),
        };
        let empty = Arc::new(Compiled::empty(id, writer.clock.clone()));
        let shared = Shared {
            id,
            pins: Arc::new(ArcSwap::from_pointee(Pins::of(&empty))),
            current: Arc::new(ArcSwap::new(empty)),
            writer: Mutex::new(writer),
            listeners: Mutex::default(),
            guard_thread: Mutex::default(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// A store serving a JSON config: parsed, validated and compiled.
    #[cold]
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self, Error> {
        let store = Self::new();
        store.apply_json(json)?;
        Ok(store)
    }

    /// Replaces the clock that scheduled stages (`start_at`) are checked
    /// against; the system clock by default.
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.writer().clock = clock.clone();
        self.recompile(|c| {
            c.clock = clock.clone();
            // Guards sample by the clock: their windows start again on it.
            c.start_guards(true);
        });
        self
    }

    /// Checks guards only when [`FlagStore::check_guards`] is called, not on
    /// a background thread: for simulations on a [`ManualClock`](crate::ManualClock),
    /// which decide when time passes and when guards look.
    #[must_use]
    pub fn with_manual_guard_checks(self) -> Self {
        self.writer().guard_thread = false;
        self.shared.stop_guard_thread();
        self
    }

    /// Turns counting off: evaluations and outcomes are no longer counted
    /// ([`FlagStore::metrics`] stays empty) and guards never trip. Counting
    /// costs a few nanoseconds per check; see `BENCHMARKS.md`.
    #[must_use]
    pub fn without_metrics(self) -> Self {
        self.writer().observe.enabled = false;
        self.recompile(|c| c.counters = None);
        self
    }

    /// Changes every kept snapshot in place, and serves the changed one.
    fn recompile(&self, change: impl Fn(&mut Compiled)) {
        let mut writer = self.writer();
        for applied in writer.history.iter_mut() {
            let mut recompiled = Compiled::clone(&applied.compiled);
            change(&mut recompiled);
            applied.compiled = Arc::new(recompiled);
        }
        let serving = match writer.history.back() {
            Some(applied) => applied.compiled.clone(),
            None => Arc::new(Compiled::empty(self.shared.id, writer.clock.clone())),
        };
        self.shared.serve(serving);
    }

    /// Parses, validates and compiles a JSON config and swaps it in; returns
    /// its version.
    ///
    /// The version must be newer than every version this store has applied
    /// (a rollback does not lower that mark); otherwise the config is
    /// refused as stale. On any error the previous config keeps serving.
    pub fn apply_json(&self, json: impl AsRef<[u8]>) -> Result<u64, Error> {
        let config = Config::from_json(json)?;
        self.apply_valid(config)
    }

    /// Applies a JSON config whatever its version: the way back to an older
    /// document that is no longer in the history.
    pub fn force_apply_json(&self, json: impl AsRef<[u8]>) -> Result<u64, Error> {
        let config = Config::from_json(json)?;
        Ok(self.install(config, self.writer()))
    }

    /// Validates and applies a parsed config, with the same version check as
    /// [`FlagStore::apply_json`].
    #[cold]
    pub fn apply_config(&self, config: &Config) -> Result<u64, Error> {
        config.validate()?;
        self.apply_valid(config.clone())
    }

    /// The version check and the swap, for a config already validated.
    #[cold]
    fn apply_valid(&self, config: Config) -> Result<u64, Error> {
        let writer = self.writer();
        if let Some(newest) = writer.newest
            && config.version <= newest
        {
            let serving = writer.history.back().filter(|a| a.compiled.version == config.version);
            if let Some(serving) = serving
                && config.version == newest
                && !same_content(serving, &config)
            {
                return Err(Error::same_version(config.version));
            }
            return Err(Error::stale(config.version, newest));
        }
        Ok(self.install(config, writer))
    }

    #[cold]
    fn install(&self, config: Config, mut writer: MutexGuard<'_, Writer>) -> u64 {
        let w = &mut *writer;
        let version = config.version;
        let previous = w.history.back().cloned();
        let retained = Arc::new(Retained::new(config, previous.as_ref().map(|a| &*a.config)));
        w.slots.hold(retained.flags.keys().map(String::as_str), true);
        if w.history.len() == HISTORY
            && let Some(evicted) = w.history.pop_front()
        {
            w.slots.hold(evicted.config.flags.keys().map(String::as_str), false);
        }
        w.forget_unheld_keys();
        let compiled = self.compile(&retained, previous.as_ref(), w);
        let applied =
            Applied { compiled: Arc::new(compiled), config: retained, trips: BTreeMap::new() };
        w.newest = Some(w.newest.map_or(version, |n| n.max(version)));
        w.history.push_back(applied.clone());
        let guards = w.guard_thread && applied.compiled.has_guards();
        self.shared.serve(applied.compiled);
        drop(writer);
        if guards {
            self.shared.start_guard_thread();
        }
        let before = previous.map(|p| p.config);
        self.shared.changed(ChangeCause::Applied, before.as_deref(), &applied.config);
        version
    }

    #[cold]
    fn compile(&self, config: &Retained, previous: Option<&Applied>, w: &mut Writer) -> Compiled {
        let mut compiled = Compiled::new(
            config,
            previous.map(|a| (&*a.compiled, &*a.config)),
            &mut w.slots,
            w.observe.numbering(),
            &w.overrides,
            self.shared.id,
            w.clock.clone(),
        );
        compiled.counters = w.observe.tables();
        compiled.attach_migrations(&mut w.migrations);
        compiled.start_guards(false);
        compiled
    }

    /// Sets a local override of `flag`: from now on, on this store, it beats
    /// whatever the config says (and whatever configs are pushed later),
    /// until [`FlagStore::clear_override`]. A flag the config lacks is added.
    ///
    /// # Example
    ///
    /// ```
    /// use flagstone::{Context, FlagStore, Override, Reason};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "beta": { "enabled": false } } }"#)?;
    /// store.set_override("beta", Override::Variant("treatment".into()));
    /// let ev = store.evaluate("beta", &Context::new());
    /// assert_eq!((ev.enabled, ev.variant), (true, Some("treatment")));
    /// assert_eq!(ev.reason, Reason::Override { enabled: true });
    /// store.clear_override("beta");
    /// assert!(!store.is_enabled("beta", &Context::new()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_override(&self, flag: &str, value: Override) {
        let mut writer = self.writer();
        writer.overrides.insert(flag.to_owned(), value);
        self.recompile_serving(writer);
    }

    /// Removes the local override of `flag`; the config answers again.
    pub fn clear_override(&self, flag: &str) {
        let mut writer = self.writer();
        if writer.overrides.remove(flag).is_some() {
            writer.forget_unheld_keys();
            self.recompile_serving(writer);
        }
    }

    /// Removes every local override.
    pub fn clear_overrides(&self) {
        let mut writer = self.writer();
        if !writer.overrides.is_empty() {
            writer.overrides.clear();
            writer.forget_unheld_keys();
            self.recompile_serving(writer);
        }
    }

    /// The local overrides in force, by flag key.
    pub fn overrides(&self) -> BTreeMap<String, Override> {
        self.writer().overrides.clone()
    }

    /// Compiles the serving config again (with the overrides as they are
    /// now), keeping its version.
    #[cold]
    fn recompile_serving(&self, mut writer: MutexGuard<'_, Writer>) {
        let w = &mut *writer;
        let serving = w.history.back().cloned();
        let config = serving.as_ref().map_or_else(Arc::default, |a| a.config.clone());
        let mut compiled = self.compile(&config, serving.as_ref(), w);
        if let Some(serving) = &serving {
            compiled.reapply_trips(&serving.trips);
        }
        let compiled = Arc::new(compiled);
        // An empty store with overrides has no history: the override's
        // snapshot is served without entering it.
        if let Some(applied) = w.history.back_mut() {
            applied.compiled = compiled.clone();
        }
        self.shared.serve(compiled);
    }

    /// Steps back to the previously applied config; returns its version.
    ///
    /// Fails, changing nothing, when no earlier config is kept.
    pub fn rollback(&self) -> Result<u64, Error> {
        let mut writer = self.writer();
        if writer.history.len() < 2 {
            return Err(Error::no_history());
        }
        let dropped = writer.history.pop_back().ok_or_else(Error::no_history)?;
        writer.slots.hold(dropped.config.flags.keys().map(String::as_str), false);
        writer.forget_unheld_keys();
        let previous = writer.history.back().cloned().ok_or_else(Error::no_history)?;
        let version = previous.compiled.version;
        if writer.overrides.is_empty() {
            self.shared.serve(previous.compiled);
            drop(writer);
        } else {
            // Overrides set since that config was compiled still hold.
            self.recompile_serving(writer);
        }
        self.shared.changed(ChangeCause::RolledBack, Some(&dropped.config), &previous.config);
        Ok(version)
    }

    /// Registers a listener for the store's events: every config change
    /// with its diff (the audit log of a release) and every guard trip.
    ///
    /// Listeners run on the thread that caused the event (the one applying
    /// a config, or a request recording the outcome that tripped a guard),
    /// after the change is in place; keep them short.
    pub fn on_event(&self, listener: impl Fn(&StoreEvent) + Send + Sync + 'static) {
        self.subscribe(Arc::new(listener));
    }

    /// Registers a listener and returns its number, for [`FlagStore::unsubscribe`].
    pub(crate) fn subscribe(&self, listener: Listener) -> u64 {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        self.shared.listeners().push((id, listener));
        id
    }

    /// Removes a listener registered with [`FlagStore::subscribe`].
    pub(crate) fn unsubscribe(&self, id: u64) {
        self.shared.listeners().retain(|(i, _)| *i != id);
    }

    /// Runs every guard that is due, now, on the caller's thread, and
    /// applies what they decide. The store's guard thread does this a few
    /// times a second; call it yourself with
    /// [`FlagStore::with_manual_guard_checks`], in simulations that move a
    /// [`ManualClock`](crate::ManualClock).
    pub fn check_guards(&self) {
        self.shared.check_guards();
    }

    /// What this store decided on its own: see [`Decisions`].
    pub(crate) fn decisions(&self) -> Decisions {
        let w = self.writer();
        let serving = w.history.back();
        Decisions {
            serving: serving.map_or(0, |a| a.compiled.version),
            newest: w.newest.unwrap_or(0),
            trips: serving.map(|a| a.trips.clone()).unwrap_or_default(),
        }
    }

    /// Takes decisions made before a restart up again: versions up to
    /// `newest` are refused from now on, and when the serving version is the
    /// one the trips were taken on, its flags step back as they did.
    #[cold]
    pub(crate) fn restore(&self, decisions: &Decisions) {
        let mut writer = self.writer();
        writer.newest = Some(writer.newest.map_or(decisions.newest, |n| n.max(decisions.newest)));
        if decisions.trips.is_empty() {
            return;
        }
        let Some(back) = writer.history.back_mut() else { return };
        if back.compiled.version != decisions.serving {
            return;
        }
        let before = back.config.clone();
        let mut compiled = Compiled::clone(&back.compiled);
        compiled.reapply_trips(&decisions.trips);
        let mut config = Retained::clone(&back.config);
        for (key, stage) in &decisions.trips {
            step_config(&mut config, key, stage.as_deref());
        }
        back.compiled = Arc::new(compiled);
        back.config = Arc::new(config);
        back.trips.extend(decisions.trips.clone());
        let after = back.config.clone();
        self.shared.serve(back.compiled.clone());
        drop(writer);
        self.shared.changed(ChangeCause::Guard, Some(&before), &after);
    }

    /// Counts an outcome of `flag` for `ctx`, in the group `ctx` falls in:
    /// the stage that exposes it, or `not-exposed`. The caller does not
    /// track which that is.
    ///
    /// Does not allocate, lock or wait: the flag's
    /// [guard](crate::config::Guard) reads these counts off the request path.
    ///
    /// # Example
    ///
    /// ```
    /// use flagstone::{Context, FlagStore, Outcome};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "search-v2": {
    ///     "enabled": true, "bucket_by": "tenant",
    ///     "stages": [ { "name": "canary", "percent": 100 } ], "stage": "canary" } } }"#)?;
    /// let ctx = Context::new().tenant("acme");
    /// store.record("search-v2", &ctx, Outcome::Error);
    /// assert_eq!(store.metrics().outcomes_of("search-v2", "canary").map(|o| o.errors), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn record(&self, flag: &str, ctx: &Context<'_>, outcome: Outcome) {
        Shared::with_current(&self.shared, |current| {
            if let Ok(flag) = current.lookup(flag) {
                current.record(flag, ctx, outcome);
            }
        })
    }

    /// The store's counts so far: evaluations per flag × stage × variant,
    /// and outcomes per flag × stage ([`Metrics::to_prometheus`] renders
    /// them). Sums the per-thread shards; for exporters, not for requests.
    pub fn metrics(&self) -> Metrics {
        let mut writer = self.writer();
        let mut metrics = writer.observe.read();
        let current = self.shared.current.load();
        metrics.guards = current.guard_evidence();
        metrics.version = current.version;
        if let Some(serving) =
            writer.history.back().filter(|a| a.compiled.version == current.version)
        {
            metrics.stepped_back = stepped_back(serving);
        }
        metrics.migrations = writer.migrations.read();
        metrics
    }

    /// The counts added since the previous call of `metrics_delta` (since
    /// the store was made, the first time): for exporters that push deltas.
    pub fn metrics_delta(&self) -> Metrics {
        self.writer().observe.delta()
    }

    /// The version of the serving config; 0 for an empty store.
    pub fn version(&self) -> u64 {
        self.shared.current.load().version
    }

    /// The versions kept for rollback, oldest first; the last one is serving.
    pub fn history(&self) -> Vec<u64> {
        self.writer().history.iter().map(|a| a.compiled.version).collect()
    }

    /// Whether `flag` is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, flag: &str, ctx: &Context<'_>) -> bool {
        Shared::with_current(&self.shared, |current| current.check(current.hot(flag), ctx))
    }

    /// Whether `flag` is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, flag: &str, ctx: &Context<'_>) -> Evaluation<'_> {
        Shared::with_current(&self.shared, |current| current.evaluate(current.lookup(flag), ctx))
    }

    /// The migration step `ctx` is at for the migration flag `flag`
    /// ([`crate::migration`]): the step of the last stage in effect that
    /// exposes it; [`MigrationStep::Off`] when none does, and for a flag
    /// that is off, unknown or not a migration. Counted as an evaluation;
    /// does not allocate, lock or wait.
    ///
    /// # Example
    ///
    /// ```
    /// use flagstone::{Context, FlagStore, MigrationStep};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 1,
    ///   "cohorts": { "internal": { "tenants": ["acme"] } },
    ///   "flags": { "users-split": { "enabled": true, "migration": true, "bucket_by": "tenant",
    ///     "stages": [ { "name": "everyone", "step": "dualwrite" },
    ///                 { "name": "internal", "cohorts": ["internal"], "step": "live" } ],
    ///     "stage": "internal" } } }"#)?;
    /// assert_eq!(store.migration_step("users-split", &Context::new().tenant("acme")), MigrationStep::Live);
    /// assert_eq!(store.migration_step("users-split", &Context::new().tenant("t-9")), MigrationStep::DualWrite);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn migration_step(&self, flag: &str, ctx: &Context<'_>) -> MigrationStep {
        Shared::with_current(&self.shared, |current| current.migration(current.lookup(flag), ctx).1)
    }

    /// The variant of `flag` for `ctx`: `None` unless the context is exposed
    /// and the flag has variants.
    #[inline]
    pub fn variant(&self, flag: &str, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(flag, ctx).variant
    }

    /// The flag's value for `ctx` as a boolean: its variant's value (or
    /// the flag's) when on and a JSON boolean, else `default`.
    #[inline]
    pub fn bool_value(&self, flag: &str, ctx: &Context<'_>, default: bool) -> bool {
        values::boolean(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as a string, when on and a JSON string,
    /// else `default`.
    ///
    /// # Example
    ///
    /// ```
    /// use flagstone::{Context, FlagStore};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "banner": {
    ///     "enabled": true, "variants": [
    ///         { "name": "short", "weight": 1, "value": "Hello" } ] } } }"#)?;
    /// assert_eq!(store.str_value("banner", &Context::new().user("u-1"), "Hi"), "Hello");
    /// assert_eq!(store.str_value("missing", &Context::new(), "Hi"), "Hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn str_value<'a>(&self, flag: &str, ctx: &Context<'_>, default: &'a str) -> &'a str {
        values::string(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as an integer, when on and a JSON integer
    /// (that fits), else `default`.
    #[inline]
    pub fn i64_value(&self, flag: &str, ctx: &Context<'_>, default: i64) -> i64 {
        values::integer(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as a float, when on and a JSON number,
    /// else `default`.
    #[inline]
    pub fn f64_value(&self, flag: &str, ctx: &Context<'_>, default: f64) -> f64 {
        values::float(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx`, any JSON, when on and set, else `default`.
    #[inline]
    pub fn json_value<'a>(
        &self,
        flag: &str,
        ctx: &Context<'_>,
        default: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        self.value_of(flag, ctx).unwrap_or(default)
    }

    #[inline]
    fn value_of(&self, flag: &str, ctx: &Context<'_>) -> Option<&'static serde_json::Value> {
        Shared::with_current(&self.shared, |current| {
            current.evaluate(current.lookup(flag), ctx).value
        })
    }

    /// The serving config, held for as long as the snapshot lives: every
    /// check through it sees the same config, even across a swap.
    ///
    /// Take one per request, not one per process: a snapshot keeps its
    /// config alive.
    #[inline]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { pin: Shared::pin(&self.shared) }
    }

    /// A handle to `flag`, resolved once: checks through it skip hashing the
    /// key, and stay correct across swaps (a flag that a later config adds or
    /// removes is seen as such).
    pub fn handle(&self, flag: &str) -> FlagHandle {
        let slot = self.writer().slots.handle(flag);
        FlagHandle { shared: self.shared.clone(), at: slot.slot, epoch: slot.epoch, slot }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.shared.writer()
    }
}

impl Shared {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Writers hold the lock only for code that cannot leave the state
        // half-changed, so a poisoned lock is safe to take over.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn listeners(&self) -> MutexGuard<'_, Vec<(u64, Listener)>> {
        self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cold]
    fn changed(&self, cause: ChangeCause, before: Option<&Retained>, after: &Retained) {
        let listeners: Vec<Listener> = self.listeners().iter().map(|(_, l)| l.clone()).collect();
        if listeners.is_empty() && !cfg!(feature = "tracing") {
            return;
        }
        let empty = Retained::default();
        let before = before.unwrap_or(&empty);
        let change = ConfigChange {
            cause,
            from: before.version,
            to: after.version,
            changes: crate::diff::diff_retained(before, after),
        };
        emit(&listeners, &StoreEvent::Changed(change));
    }

    /// Starts the thread that checks this store's guards, unless it runs.
    /// It holds the store weakly and ends when the store is dropped.
    #[cold]
    fn start_guard_thread(self: &Arc<Self>) {
        let mut running = self.guard_thread.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return;
        }
        let signal = Arc::new(Signal::default());
        let (weak, stop) = (Arc::downgrade(self), signal.clone());
        let spawned = std::thread::Builder::new()
            .name("flagstone-guards".into())
            .spawn(move || guard_loop(&weak, &stop));
        // Without a thread (the system is out of them), guards run when
        // `check_guards` is called.
        if spawned.is_ok() {
            *running = Some(signal);
        }
    }

    /// Checks the serving config's guards and applies their trips.
    #[cold]
    fn check_guards(&self) {
        let current = self.current.load_full();
        for report in current.check_guards() {
            match report {
                Report::Trip(_, mut trip) if trip.action == GuardAction::Pause => {
                    trip.version = current.version;
                    trip.now_serving = None;
                    let key = (trip.flag.clone(), trip.stage.clone());
                    *writer_trips(&mut self.writer()).entry(key).or_default() += 1;
                    self.tell(&StoreEvent::GuardTripped(trip));
                }
                Report::Trip(stage, trip) => self.trip(&current, stage, trip),
                Report::Starved(starved) => self.tell(&StoreEvent::GuardStarved(starved)),
                Report::Mismatch(mismatch) => self.tell(&StoreEvent::GuardMismatch(mismatch)),
            }
        }
    }

    /// Tells the listeners of an updater's event (`tracing` skips it: the
    /// updater traces its own).
    #[cold]
    pub(crate) fn tell_update(&self, event: &crate::UpdateEvent) {
        self.tell(&StoreEvent::Update(event.clone()));
    }

    /// Tells the listeners (and `tracing`) of an event.
    #[cold]
    fn tell(&self, event: &StoreEvent) {
        let listeners: Vec<Listener> = self.listeners().iter().map(|(_, l)| l.clone()).collect();
        emit(&listeners, event);
    }

    /// Steps a flag back on a guard's word, unless the config changed since
    /// the guard looked (the new config gets its own guard).
    #[cold]
    fn trip(&self, seen: &Compiled, stage: usize, mut trip: GuardTrip) {
        let mut writer = self.writer();
        let Some(back) = writer.history.back_mut() else { return };
        if !std::ptr::eq(&*back.compiled, seen) {
            return;
        }
        let mut compiled = Compiled::clone(&back.compiled);
        let Some(now_serving) = compiled.step_back(&trip.flag, stage, trip.action) else { return };
        let mut config = Retained::clone(&back.config);
        step_config(&mut config, &trip.flag, now_serving);
        *writer_trips(&mut writer).entry((trip.flag.clone(), trip.stage.clone())).or_default() += 1;
        let Some(back) = writer.history.back_mut() else { return };
        let before = std::mem::replace(&mut back.config, Arc::new(config));
        back.compiled = Arc::new(compiled);
        back.trips.insert(trip.flag.clone(), now_serving.map(str::to_owned));
        self.serve(back.compiled.clone());
        let after = back.config.clone();
        drop(writer);
        trip.version = after.version;
        trip.now_serving = now_serving.map(str::to_owned);
        self.changed(ChangeCause::Guard, Some(&before), &after);
        let listeners: Vec<Listener> = self.listeners().iter().map(|(_, l)| l.clone()).collect();
        emit(&listeners, &StoreEvent::GuardTripped(trip));
    }
}

impl Shared {
    /// Tells the guard thread, if one runs, to end.
    fn stop_guard_thread(&self) {
        let signal = self.guard_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(signal) = signal {
            *signal.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            signal.wake.notify_all();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_guard_thread();
    }
}

/// The guard thread: every [`GUARD_TICK`], the store's guards, until the
/// store is gone.
fn guard_loop(store: &Weak<Shared>, signal: &Signal) {
    let mut stopped = signal.stopped.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        stopped = match signal.wake.wait_timeout(stopped, GUARD_TICK) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
        if *stopped {
            return;
        }
        drop(stopped);
        match store.upgrade() {
            Some(shared) => shared.check_guards(),
            None => return,
        }
        stopped = signal.stopped.lock().unwrap_or_else(|p| p.into_inner());
    }
}

/// Whether `offered` says what `applied` was applied from: its cohorts and
/// flags, once stepped back by the trips taken on it, are the ones kept.
fn same_content(applied: &Applied, offered: &Config) -> bool {
    let kept = &applied.config;
    let cohorts = kept.cohorts.len() == offered.cohorts.len()
        && offered
            .cohorts
            .iter()
            .all(|(name, c)| kept.cohorts.get(name).is_some_and(|k| **k == *c));
    cohorts
        && kept.flags.len() == offered.flags.len()
        && offered.flags.iter().all(|(key, flag)| {
            let Some(k) = kept.flags.get(key) else { return false };
            match applied.trips.get(key) {
                Some(serving) => {
                    let mut stepped = flag.clone();
                    step_flag(&mut stepped, serving.as_deref());
                    stepped == **k
                }
                None => **k == *flag,
            }
        })
}

/// The stages guards stepped back on an applied config: each trip keeps
/// the stage now serving (none: the flag was disabled), so the stage after
/// it is the one stepped back.
fn stepped_back(applied: &Applied) -> Vec<crate::observe::SteppedBack> {
    applied
        .trips
        .iter()
        .filter_map(|(key, now_serving)| {
            let stages = &applied.config.flags.get(key)?.stages;
            let next = match now_serving {
                Some(name) => stages.iter().position(|s| &s.name == name)? + 1,
                None => 0,
            };
            Some(crate::observe::SteppedBack {
                flag: key.clone(),
                stage: stages.get(next)?.name.clone(),
            })
        })
        .collect()
}

/// The store's count of guard trips, by flag and stage.
fn writer_trips<'w>(
    writer: &'w mut MutexGuard<'_, Writer>,
) -> &'w mut BTreeMap<(String, String), u64> {
    &mut writer.observe.trips
}

/// The config form of a local step back: `flag` now serves `stage`, or is
/// off.
fn step_config(config: &mut Retained, flag: &str, stage: Option<&str>) {
    if let Some(kept) = config.flags.get_mut(flag) {
        let mut changed = crate::config::Flag::clone(kept);
        step_flag(&mut changed, stage);
        *kept = Arc::new(changed);
    }
}

/// A flag as a guard's trip leaves it: serving `stage`, or off.
fn step_flag(flag: &mut crate::config::Flag, stage: Option<&str>) {
    match stage {
        Some(stage) => flag.stage = Some(stage.to_owned()),
        None => flag.enabled = false,
    }
}

impl Writer {
    /// Frees the slots (and forgets the series) of flag keys that no kept
    /// config, live handle or override holds any more.
    fn forget_unheld_keys(&mut self) {
        let overrides = &self.overrides;
        for key in self.slots.reclaim(|key| overrides.contains_key(key)) {
            self.observe.forget(&key);
        }
        self.observe.compact_if_worth();
    }
}

impl FlagStore {
    /// Hands an updater's event to the store's listeners.
    pub(crate) fn tell_update(&self, event: &crate::UpdateEvent) {
        self.shared.tell_update(event);
    }
}

impl Default for FlagStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("FlagStore")
            .field("version", &current.version)
            .field("flags", &current.flags.len())
            .finish_non_exhaustive()
    }
}

/// One consistent config for the whole of a request.
///
/// Every check through a snapshot sees the config that was serving when it
/// was taken, so a request never sees half of one config and half of the
/// next. Cheap to take and to clone: one reference count on a pin of the
/// config that only the threads of one counter shard touch, so snapshots
/// taken on many cores at once do not contend. `Send` and `Sync`, and
/// owned: it can be held across an `.await` and dropped on another thread.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore};
///
/// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "a": { "enabled": true } } }"#)?;
/// let snap = store.snapshot();
/// store.apply_json(r#"{ "version": 2, "flags": { "a": { "enabled": false } } }"#)?;
/// let ctx = Context::new();
/// assert!(snap.is_enabled("a", &ctx));   // the request's view is unchanged
/// assert!(!store.is_enabled("a", &ctx)); // new checks see version 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Snapshot {
    pin: Arc<Pin>,
}

impl Snapshot {
    #[inline]
    pub(crate) fn compiled(&self) -> &Compiled {
        &self.pin.compiled
    }

    /// The version of this snapshot's config.
    pub fn version(&self) -> u64 {
        self.compiled().version
    }

    /// Whether this snapshot's config has a flag by that key.
    pub fn contains(&self, flag: &str) -> bool {
        self.compiled().by_name(flag).is_some()
    }

    /// The keys of this snapshot's flags, in no particular order.
    pub fn flag_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.compiled().flags.iter().map(|f| &*f.key)
    }

    /// Whether `flag` is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, flag: &str, ctx: &Context<'_>) -> bool {
        self.compiled().check(self.compiled().hot(flag), ctx)
    }

    /// Counts an outcome of `flag` for `ctx`, as [`FlagStore::record`], in
    /// the group `ctx` falls in under *this snapshot's* config: the stage
    /// that served the request, even if a push landed since.
    #[inline]
    pub fn record(&self, flag: &str, ctx: &Context<'_>, outcome: Outcome) {
        if let Ok(found) = self.compiled().lookup(flag) {
            self.compiled().record(found, ctx, outcome);
        }
    }

    /// Whether `flag` is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, flag: &str, ctx: &Context<'_>) -> Evaluation<'_> {
        self.compiled().evaluate(self.compiled().lookup(flag), ctx)
    }

    /// The variant of `flag` for `ctx`.
    #[inline]
    pub fn variant(&self, flag: &str, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(flag, ctx).variant
    }

    /// The migration step of `ctx` for `flag` in this snapshot, as
    /// [`FlagStore::migration_step`].
    #[inline]
    pub fn migration_step(&self, flag: &str, ctx: &Context<'_>) -> MigrationStep {
        self.compiled().migration(self.compiled().lookup(flag), ctx).1
    }

    /// The flag's value for `ctx` as a boolean: its variant's value (or
    /// the flag's) when on and a JSON boolean, else `default`.
    #[inline]
    pub fn bool_value(&self, flag: &str, ctx: &Context<'_>, default: bool) -> bool {
        values::boolean(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as a string, when on and a JSON string,
    /// else `default`.
    ///
    /// # Example
    ///
    /// ```
    /// use flagstone::{Context, FlagStore};
    ///
    /// let store = FlagStore::from_json(r#"{ "version": 1, "flags": { "limits": {
    ///     "enabled": true, "value": { "rate": 100 } } } }"#)?;
    /// let snap = store.snapshot();
    /// assert_eq!(snap.str_value("limits", &Context::new(), "none"), "none"); // not a string
    /// assert_eq!(snap.json_value("limits", &Context::new(), &serde_json::Value::Null)["rate"], 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn str_value<'a>(&self, flag: &str, ctx: &Context<'_>, default: &'a str) -> &'a str {
        values::string(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as an integer, when on and a JSON integer
    /// (that fits), else `default`.
    #[inline]
    pub fn i64_value(&self, flag: &str, ctx: &Context<'_>, default: i64) -> i64 {
        values::integer(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx` as a float, when on and a JSON number,
    /// else `default`.
    #[inline]
    pub fn f64_value(&self, flag: &str, ctx: &Context<'_>, default: f64) -> f64 {
        values::float(self.value_of(flag, ctx), default)
    }

    /// The flag's value for `ctx`, any JSON, when on and set, else `default`.
    #[inline]
    pub fn json_value<'a>(
        &self,
        flag: &str,
        ctx: &Context<'_>,
        default: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        self.value_of(flag, ctx).unwrap_or(default)
    }

    #[inline]
    fn value_of(&self, flag: &str, ctx: &Context<'_>) -> Option<&'static serde_json::Value> {
        self.compiled().evaluate(self.compiled().lookup(flag), ctx).value
    }

    /// Why `flag` is on or off for `ctx`, step by step (allocates: for tools
    /// and debugging, not for requests).
    pub fn explain(&self, flag: &str, ctx: &Context<'_>) -> Explanation {
        self.compiled().explain(flag, ctx)
    }

    /// Whether stage `index` of `flag` has cohorts and whether it has a
    /// percentage, for integrations that name how a stage decided.
    #[cfg_attr(not(feature = "openfeature"), allow(dead_code))]
    pub(crate) fn stage_shape(&self, flag: &str, index: usize) -> Option<(bool, bool)> {
        let stage = self.compiled().by_name(flag)?.stages.as_deref()?.get(index)?;
        Some((!stage.cohorts.is_empty(), stage.threshold != crate::compile::NO_PERCENT))
    }

    /// The names of this snapshot's cohorts, in no particular order.
    pub fn cohort_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.compiled().cohorts.keys().copied()
    }

    /// Whether `ctx` is in the cohort named `cohort`; `None` when this
    /// config has no such cohort.
    pub fn in_cohort(&self, cohort: &str, ctx: &Context<'_>) -> Option<bool> {
        self.compiled().cohorts.get(cohort).map(|c| c.matches(ctx))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.compiled().version)
            .field("flags", &self.compiled().flags.len())
            .finish_non_exhaustive()
    }
}

/// A flag of one store, resolved once.
///
/// Checks through a handle load the serving config and find the flag by a
/// number fixed when the handle was made, without hashing the key. The
/// handle follows the store across swaps and rollbacks, and owns what it
/// needs, so it can live in a `static` or a long-lived struct.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore};
///
/// let store = FlagStore::new();
/// let checkout = store.handle("new-checkout"); // may come before the flag does
/// let ctx = Context::new().user("u-42");
/// assert!(!checkout.is_enabled(&ctx));
/// store.apply_json(r#"{ "version": 1, "flags": { "new-checkout": { "enabled": true } } }"#)?;
/// assert!(checkout.is_enabled(&ctx));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FlagHandle {
    shared: Arc<Shared>,
    /// The slot's number and epoch, copied out of `slot` (which holds it
    /// given out and keeps the key): a check reads them here, without a
    /// dependent load that misses cache when there are many handles.
    at: u32,
    epoch: u64,
    slot: Arc<HandleSlot>,
}

impl FlagHandle {
    /// The flag's key.
    pub fn key(&self) -> &str {
        &self.slot.key
    }

    /// Whether the flag is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, ctx: &Context<'_>) -> bool {
        Shared::with_current(&self.shared, |current| current.check(self.hot_in(current), ctx))
    }

    /// Whether the flag is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, ctx: &Context<'_>) -> Evaluation<'_> {
        Shared::with_current(&self.shared, |current| current.evaluate(self.flag_in(current), ctx))
    }

    /// The variant of the flag for `ctx`.
    #[inline]
    pub fn variant(&self, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(ctx).variant
    }

    /// The migration step of `ctx`, as [`FlagStore::migration_step`].
    #[inline]
    pub fn migration_step(&self, ctx: &Context<'_>) -> MigrationStep {
        Shared::with_current(&self.shared, |current| {
            current.migration(self.flag_in(current), ctx).1
        })
    }

    /// Runs a migrator's operation `f` on its decision for `ctx`, in the
    /// snapshot that decided (this thread's cached one, so outcomes count
    /// against the config that decided and no reference count moves).
    #[inline]
    pub(crate) fn with_migration_decision<R>(
        &self,
        ctx: &Context<'_>,
        f: impl Fn(&MigrationDecision<'_>) -> R,
    ) -> R {
        Shared::with_current(&self.shared, |compiled| {
            let found = self.flag_in(compiled);
            let (reason, step) = compiled.migration(found, ctx);
            f(&MigrationDecision { compiled, flag: found.ok(), reason, step })
        })
    }

    /// The flag's value for `ctx` as a boolean (see [`FlagStore::bool_value`]).
    #[inline]
    pub fn bool_value(&self, ctx: &Context<'_>, default: bool) -> bool {
        values::boolean(self.value_of(ctx), default)
    }

    /// The flag's value for `ctx` as a string (see [`FlagStore::str_value`]).
    #[inline]
    pub fn str_value<'a>(&self, ctx: &Context<'_>, default: &'a str) -> &'a str {
        values::string(self.value_of(ctx), default)
    }

    /// The flag's value for `ctx` as an integer (see [`FlagStore::i64_value`]).
    #[inline]
    pub fn i64_value(&self, ctx: &Context<'_>, default: i64) -> i64 {
        values::integer(self.value_of(ctx), default)
    }

    /// The flag's value for `ctx` as a float (see [`FlagStore::f64_value`]).
    #[inline]
    pub fn f64_value(&self, ctx: &Context<'_>, default: f64) -> f64 {
        values::float(self.value_of(ctx), default)
    }

    /// The flag's value for `ctx`, any JSON (see [`FlagStore::json_value`]).
    #[inline]
    pub fn json_value<'a>(
        &self,
        ctx: &Context<'_>,
        default: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        self.value_of(ctx).unwrap_or(default)
    }

    #[inline]
    fn value_of(&self, ctx: &Context<'_>) -> Option<&'static serde_json::Value> {
        Shared::with_current(&self.shared, |current| {
            current.evaluate(self.flag_in(current), ctx).value
        })
    }

    /// Whether the flag is on for `ctx` in a given snapshot: many flags of
    /// one request, one config, no hashing.
    #[inline]
    pub fn is_enabled_in(&self, snapshot: &Snapshot, ctx: &Context<'_>) -> bool {
        let compiled = snapshot.compiled();
        compiled.check(self.hot_in(compiled), ctx)
    }

    /// Evaluates the flag for `ctx` in a given snapshot.
    #[inline]
    pub fn evaluate_in<'s>(&self, snapshot: &'s Snapshot, ctx: &Context<'_>) -> Evaluation<'s> {
        let compiled = snapshot.compiled();
        compiled.evaluate(self.flag_in(compiled), ctx)
    }

    /// Counts an outcome of the flag for `ctx`, as [`FlagStore::record`].
    #[inline]
    pub fn record(&self, ctx: &Context<'_>, outcome: Outcome) {
        Shared::with_current(&self.shared, |current| {
            if let Ok(flag) = self.flag_in(current) {
                current.record(flag, ctx, outcome);
            }
        })
    }

    #[inline]
    fn flag_in<'c>(&self, compiled: &'c Compiled) -> Result<&'c Flag, u32> {
        compiled.flag_of(self.hot_in(compiled))
    }

    #[inline]
    fn hot_in<'c>(&self, compiled: &'c Compiled) -> &'c Hot {
        // Slots are numbered per store, and a freed slot may be given to
        // another key: a snapshot of another store, or one compiled before
        // this handle's slot was given out, is searched by key instead.
        if compiled.store_id == self.shared.id && compiled.slot_epoch >= self.epoch {
            compiled.hot_at(self.at)
        } else {
            compiled.hot(&self.slot.key)
        }
    }
}

/// What a [`Migrator`](crate::migration::Migrator) decided for one
/// operation, and where to count what came of it.
pub(crate) struct MigrationDecision<'c> {
    compiled: &'c Compiled,
    /// The flag in that snapshot; `None` when it has no such flag.
    flag: Option<&'c Flag>,
    pub(crate) reason: crate::Reason<'static>,
    pub(crate) step: MigrationStep,
}

impl MigrationDecision<'_> {
    /// The counts of the group the context fell in (none for a flag the
    /// snapshot lacks, or one that is not a migration).
    #[inline]
    pub(crate) fn counts(&self) -> Option<&crate::migration::counts::StageCounts> {
        Some(self.flag?.migration_counts.as_deref()?.of(self.reason))
    }

    /// One operation in how many to time: every one when the flag's guard
    /// judges latency (its evidence is worth the clock reads), else
    /// `every`, the migrator's sampling.
    #[inline]
    pub(crate) fn time_every(&self, every: u32) -> u32 {
        match self.flag.and_then(|f| f.guard.as_ref()) {
            Some(guard) if guard.judges_latency() => 1,
            _ => every,
        }
    }

    /// Counts the operation's outcome as the flag's, in the decided group,
    /// when the flag has a guard to give it to as evidence (without one,
    /// the migration counts say all the outcome counts would).
    #[inline]
    pub(crate) fn record(&self, ctx: &Context<'_>, outcome: Outcome) {
        if let Some(flag) = self.flag.filter(|f| f.guard.is_some()) {
            self.compiled.record_decided(flag, self.reason, ctx, outcome);
        }
    }

    /// Counts a compared read in the guard's mismatch evidence, when the
    /// context is in the stage the guard watches.
    #[inline]
    pub(crate) fn record_comparison(&self, mismatched: bool) {
        let Some(flag) = self.flag else { return };
        if let (Some(guard), crate::Reason::Stage { index, .. }) = (&flag.guard, self.reason)
            && guard.watching() == Some(index)
        {
            guard.record_comparison(mismatched);
        }
    }
}

impl fmt::Debug for FlagHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagHandle").field("key", &self.key()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<FlagStore>();
        assert_send_sync::<Snapshot>();
        assert_send_sync::<FlagHandle>();
        assert_send_sync::<Evaluation<'static>>();
    }

    /// Snapshots taken by threads running at once hold different pins
    /// (reference counts on lines of their own), one thread's snapshots
    /// share its pin, and a swap gives new pins.
    #[test]
    fn threads_at_once_take_snapshots_through_pins_of_their_own() {
        let doc =
            |v: u64| format!(r#"{{ "version": {v}, "flags": {{ "f": {{ "enabled": true }} }} }}"#);
        let store = FlagStore::from_json(doc(1)).expect("valid");
        let pin = |snapshot: &Snapshot| Arc::as_ptr(&snapshot.pin) as usize;
        let both = std::sync::Barrier::new(2);
        let pins: Vec<usize> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let (first, again) = (store.snapshot(), store.snapshot());
                        assert_eq!(pin(&first), pin(&again), "one thread, one pin");
                        // Both threads alive (each holding its shard) at once.
                        both.wait();
                        pin(&first)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("no panic")).collect()
        });
        assert_ne!(pins[0], pins[1], "two threads at once shared a pin");
        let before = store.snapshot();
        store.apply_json(doc(2)).expect("valid");
        let after = store.snapshot();
        assert_ne!(pin(&before), pin(&after));
        assert_eq!((before.version(), after.version()), (1, 2));
        // A snapshot outlives the store.
        drop(store);
        assert!(after.is_enabled("f", &Context::new()));
    }

    #[test]
    fn history_keeps_the_last_sixteen() {
        let store = FlagStore::new();
        for v in 1..=20 {
            store.apply_json(format!(r#"{{"version":{v}}}"#)).expect("valid");
        }
        assert_eq!(store.history(), (5..=20).collect::<Vec<_>>());
        for expected in (5..20).rev() {
            assert_eq!(store.rollback().expect("kept"), expected);
        }
        assert!(store.rollback().expect_err("exhausted").is_no_history());
        assert_eq!(store.version(), 5);
    }
}
