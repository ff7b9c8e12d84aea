//! Flags for tests, without a config file.
//!
//! Each test builds its own store, so tests running in parallel never see
//! each other's flags:
//!
//! ```
//! use flagstone::testing::TestStore;
//! use flagstone::Context;
//!
//! let store = TestStore::new().on("new-checkout").variant("search", "treatment").build()?;
//! let ctx = Context::new().user("u-1");
//! assert!(store.is_enabled("new-checkout", &ctx));
//! assert_eq!(store.variant("search", &ctx), Some("treatment"));
//! assert!(!store.is_enabled("anything-else", &ctx));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For code that takes a shared store, [`scoped_override`] sets an override
//! for the life of a guard and puts back what was there before. Overrides
//! live in the store: every test sharing that store sees them, so give each
//! test its own store when tests run in parallel.

use crate::error::Error;
use crate::store::{FlagStore, Override};

/// A builder of a [`FlagStore`] for a test: flags forced on, off or to a
/// variant, optionally over a real config.
#[derive(Debug, Default)]
#[must_use]
pub struct TestStore {
    config: Option<String>,
    overrides: Vec<(String, Override)>,
}

impl TestStore {
    /// No config and no flags: every flag is off (unknown).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a real config document; the overrides beat it.
    pub fn config_json(mut self, json: impl Into<String>) -> Self {
        self.config = Some(json.into());
        self
    }

    /// `flag` is on for everyone.
    pub fn on(self, flag: &str) -> Self {
        self.with(flag, Override::On)
    }

    /// `flag` is off for everyone.
    pub fn off(self, flag: &str) -> Self {
        self.with(flag, Override::Off)
    }

    /// `flag` is on for everyone, with `variant`.
    pub fn variant(self, flag: &str, variant: &str) -> Self {
        self.with(flag, Override::Variant(variant.to_owned()))
    }

    fn with(mut self, flag: &str, value: Override) -> Self {
        self.overrides.push((flag.to_owned(), value));
        self
    }

    /// The store; fails only when the config given is invalid.
    pub fn build(self) -> Result<FlagStore, Error> {
        let store = match &self.config {
            Some(json) => FlagStore::from_json(json)?,
            None => FlagStore::new(),
        };
        for (flag, value) in self.overrides {
            store.set_override(&flag, value);
        }
        Ok(store)
    }
}

/// Sets an override on `store` until the returned guard drops, then puts
/// back the override that was there before (or none).
///
/// # Example
///
/// ```
/// use flagstone::testing::scoped_override;
/// use flagstone::{Context, FlagStore, Override};
///
/// let store = FlagStore::new();
/// {
///     let _on = scoped_override(&store, "beta", Override::On);
///     assert!(store.is_enabled("beta", &Context::new()));
/// }
/// assert!(!store.is_enabled("beta", &Context::new()));
/// ```
pub fn scoped_override<'s>(
    store: &'s FlagStore,
    flag: &str,
    value: Override,
) -> ScopedOverride<'s> {
    let previous = store.overrides().remove(flag);
    store.set_override(flag, value);
    ScopedOverride { store, flag: flag.to_owned(), previous }
}

/// The guard of [`scoped_override`].
#[derive(Debug)]
#[must_use = "the override ends when the guard drops"]
pub struct ScopedOverride<'s> {
    store: &'s FlagStore,
    flag: String,
    previous: Option<Override>,
}

impl Drop for ScopedOverride<'_> {
    fn drop(&mut self) {
        match self.previous.take() {
            Some(previous) => self.store.set_override(&self.flag, previous),
            None => self.store.clear_override(&self.flag),
        }
    }
}
