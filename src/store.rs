//! The flag store: one `ArcSwap` of the compiled snapshot.
//!
//! Readers `load()` the current snapshot and never lock. Writers serialize on
//! a mutex that readers never touch, compile the new config, check its
//! version, and `store` it. The last [`HISTORY`] applied snapshots are kept
//! for [`FlagStore::rollback`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::clock::{Clock, SystemClock};
use crate::compile::{Compiled, Flag, Slots};
use crate::config::Config;
use crate::context::Context;
use crate::error::Error;
use crate::eval::Evaluation;
use crate::explain::Explanation;

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
    current: ArcSwap<Compiled>,
    writer: Mutex<Writer>,
}

struct Writer {
    slots: Slots,
    /// Applied snapshots, oldest first; the back one is serving.
    history: VecDeque<Arc<Compiled>>,
    /// The newest version ever applied: a rollback does not lower it, so a
    /// poller that fetches the rolled-back document again cannot undo the
    /// rollback.
    newest: Option<u64>,
    clock: Arc<dyn Clock>,
}

impl FlagStore {
    /// An empty store: every flag is off (unknown) until a config is applied.
    pub fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let writer =
            Writer { slots: Slots::default(), history: VecDeque::new(), newest: None, clock };
        let empty = Compiled::empty(id, writer.clock.clone());
        let shared =
            Shared { id, current: ArcSwap::from_pointee(empty), writer: Mutex::new(writer) };
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
        let mut writer = self.writer();
        writer.clock = clock.clone();
        for compiled in writer.history.iter_mut() {
            let mut recompiled = Compiled::clone(compiled);
            recompiled.clock = clock.clone();
            *compiled = Arc::new(recompiled);
        }
        let serving = match writer.history.back() {
            Some(c) => c.clone(),
            None => Arc::new(Compiled::empty(self.shared.id, clock)),
        };
        self.shared.current.store(serving);
        drop(writer);
        self
    }

    /// Parses, validates and compiles a JSON config and swaps it in; returns
    /// its version.
    ///
    /// The version must be newer than every version this store has applied
    /// (a rollback does not lower that mark); otherwise the config is
    /// refused as stale. On any error the previous config keeps serving.
    pub fn apply_json(&self, json: impl AsRef<[u8]>) -> Result<u64, Error> {
        let config = Config::from_json(json)?;
        self.apply_valid(&config)
    }

    /// Applies a JSON config whatever its version: the way back to an older
    /// document that is no longer in the history.
    pub fn force_apply_json(&self, json: impl AsRef<[u8]>) -> Result<u64, Error> {
        let config = Config::from_json(json)?;
        Ok(self.install(&config, self.writer()))
    }

    /// Validates and applies a parsed config, with the same version check as
    /// [`FlagStore::apply_json`].
    #[cold]
    pub fn apply_config(&self, config: &Config) -> Result<u64, Error> {
        config.validate()?;
        self.apply_valid(config)
    }

    /// The version check and the swap, for a config already validated.
    #[cold]
    fn apply_valid(&self, config: &Config) -> Result<u64, Error> {
        let writer = self.writer();
        if let Some(newest) = writer.newest
            && config.version <= newest
        {
            return Err(Error::stale(config.version, newest));
        }
        Ok(self.install(config, writer))
    }

    #[cold]
    fn install(&self, config: &Config, mut writer: MutexGuard<'_, Writer>) -> u64 {
        let w = &mut *writer;
        let compiled =
            Arc::new(Compiled::new(config, &mut w.slots, self.shared.id, w.clock.clone()));
        w.newest = Some(w.newest.map_or(config.version, |n| n.max(config.version)));
        if w.history.len() == HISTORY {
            w.history.pop_front();
        }
        w.history.push_back(compiled.clone());
        self.shared.current.store(compiled);
        config.version
    }

    /// Steps back to the previously applied config; returns its version.
    ///
    /// Fails, changing nothing, when no earlier config is kept.
    pub fn rollback(&self) -> Result<u64, Error> {
        let mut writer = self.writer();
        if writer.history.len() < 2 {
            return Err(Error::no_history());
        }
        writer.history.pop_back();
        let previous = writer.history.back().cloned().ok_or_else(Error::no_history)?;
        let version = previous.version;
        self.shared.current.store(previous);
        Ok(version)
    }

    /// The version of the serving config; 0 for an empty store.
    pub fn version(&self) -> u64 {
        self.shared.current.load().version
    }

    /// The versions kept for rollback, oldest first; the last one is serving.
    pub fn history(&self) -> Vec<u64> {
        self.writer().history.iter().map(|c| c.version).collect()
    }

    /// Whether `flag` is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, flag: &str, ctx: &Context<'_>) -> bool {
        let current = self.shared.current.load();
        current.is_enabled(current.by_name(flag), ctx)
    }

    /// Whether `flag` is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, flag: &str, ctx: &Context<'_>) -> Evaluation<'_> {
        let current = self.shared.current.load();
        current.evaluate(current.by_name(flag), ctx)
    }

    /// The variant of `flag` for `ctx`: `None` unless the context is exposed
    /// and the flag has variants.
    #[inline]
    pub fn variant(&self, flag: &str, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(flag, ctx).variant
    }

    /// The serving config, held for as long as the snapshot lives: every
    /// check through it sees the same config, even across a swap.
    ///
    /// Take one per request, not one per process: a snapshot keeps its
    /// config alive.
    #[inline]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { compiled: self.shared.current.load_full() }
    }

    /// A handle to `flag`, resolved once: checks through it skip hashing the
    /// key, and stay correct across swaps (a flag that a later config adds or
    /// removes is seen as such).
    pub fn handle(&self, flag: &str) -> FlagHandle {
        let slot = self.writer().slots.slot(flag);
        FlagHandle { shared: self.shared.clone(), slot, key: flag.into() }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Writers hold the lock only for code that cannot leave the state
        // half-changed, so a poisoned lock is safe to take over.
        self.shared.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
/// next. Cheap to take (one reference count) and to clone.
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
    compiled: Arc<Compiled>,
}

impl Snapshot {
    /// The version of this snapshot's config.
    pub fn version(&self) -> u64 {
        self.compiled.version
    }

    /// Whether this snapshot's config has a flag by that key.
    pub fn contains(&self, flag: &str) -> bool {
        self.compiled.by_name(flag).is_some()
    }

    /// The keys of this snapshot's flags, in no particular order.
    pub fn flag_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.compiled.flags.iter().map(|f| f.key)
    }

    /// Whether `flag` is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, flag: &str, ctx: &Context<'_>) -> bool {
        self.compiled.is_enabled(self.compiled.by_name(flag), ctx)
    }

    /// Whether `flag` is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, flag: &str, ctx: &Context<'_>) -> Evaluation<'_> {
        self.compiled.evaluate(self.compiled.by_name(flag), ctx)
    }

    /// The variant of `flag` for `ctx`.
    #[inline]
    pub fn variant(&self, flag: &str, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(flag, ctx).variant
    }

    /// Why `flag` is on or off for `ctx`, step by step (allocates: for tools
    /// and debugging, not for requests).
    pub fn explain(&self, flag: &str, ctx: &Context<'_>) -> Explanation {
        self.compiled.explain(flag, ctx)
    }

    /// Whether `ctx` is in the cohort named `cohort`; `None` when this
    /// config has no such cohort.
    pub fn in_cohort(&self, cohort: &str, ctx: &Context<'_>) -> Option<bool> {
        self.compiled.cohorts.get(cohort).map(|c| c.matches(ctx))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.compiled.version)
            .field("flags", &self.compiled.flags.len())
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
    slot: u32,
    key: Box<str>,
}

impl FlagHandle {
    /// The flag's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the flag is on for `ctx`.
    #[inline]
    pub fn is_enabled(&self, ctx: &Context<'_>) -> bool {
        let current = self.shared.current.load();
        current.is_enabled(current.by_slot(self.slot), ctx)
    }

    /// Whether the flag is on for `ctx`, its variant, and why.
    #[inline]
    pub fn evaluate(&self, ctx: &Context<'_>) -> Evaluation<'_> {
        let current = self.shared.current.load();
        current.evaluate(current.by_slot(self.slot), ctx)
    }

    /// The variant of the flag for `ctx`.
    #[inline]
    pub fn variant(&self, ctx: &Context<'_>) -> Option<&str> {
        self.evaluate(ctx).variant
    }

    /// Whether the flag is on for `ctx` in a given snapshot: many flags of
    /// one request, one config, no hashing.
    #[inline]
    pub fn is_enabled_in(&self, snapshot: &Snapshot, ctx: &Context<'_>) -> bool {
        let compiled = &snapshot.compiled;
        compiled.is_enabled(self.flag_in(compiled), ctx)
    }

    /// Evaluates the flag for `ctx` in a given snapshot.
    #[inline]
    pub fn evaluate_in<'s>(&self, snapshot: &'s Snapshot, ctx: &Context<'_>) -> Evaluation<'s> {
        let compiled = &snapshot.compiled;
        compiled.evaluate(self.flag_in(compiled), ctx)
    }

    #[inline]
    fn flag_in<'c>(&self, compiled: &'c Compiled) -> Option<&'c Flag> {
        // Slots are numbered per store: a snapshot of another store is
        // searched by key instead.
        if compiled.store_id == self.shared.id {
            compiled.by_slot(self.slot)
        } else {
            compiled.by_name(&self.key)
        }
    }
}

impl fmt::Debug for FlagHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagHandle").field("key", &self.key).finish_non_exhaustive()
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
