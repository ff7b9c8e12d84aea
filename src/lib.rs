//! Feature flags and staged releases, checked in nanoseconds without a lock.
//!
//! ```
//! use flagstone::{Context, FlagStore};
//!
//! let store = FlagStore::from_json(r#"{
//!     "version": 1,
//!     "cohorts": { "staff": { "tenants": ["acme-internal"] } },
//!     "flags": { "new-checkout": {
//!         "enabled": true, "bucket_by": "tenant",
//!         "stages": [ { "name": "internal", "cohorts": ["staff"] },
//!                     { "name": "canary", "percent": 5 } ],
//!         "stage": "internal" } }
//! }"#)?;
//! assert!(store.is_enabled("new-checkout", &Context::new().tenant("acme-internal")));
//! assert!(!store.is_enabled("new-checkout", &Context::new().tenant("t-104")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//!
//! A release manager pushes a JSON [config](config::Config) that says, per
//! flag, which cohorts are exposed in which stage of a staged release. The
//! way from a document to an answer:
//!
//! 1. [`config`]: the document is parsed and validated; every problem is
//!    reported with its path ([`Error`], [`Problem`]).
//! 2. Compilation: seeds, integer thresholds, hashed cohort sets and a fast
//!    map of flag keys are computed once per config.
//! 3. [`FlagStore`]: the compiled config is swapped in with `arc-swap`;
//!    readers never lock, and a refused config leaves the old one serving.
//!    [`FlagStore::rollback`] steps back through the last [`HISTORY`]
//!    configs.
//! 4. Evaluation: [`FlagStore::is_enabled`], [`FlagStore::evaluate`] and
//!    [`FlagStore::variant`] by key, [`FlagHandle`] by a key resolved once,
//!    and [`Snapshot`] for one consistent config across a request. None of
//!    them allocates, blocks or panics.
//!
//! Percentages bucket a unit (tenant, user, region or attribute) with the
//! [bucketing spec](bucket()): the same unit lands in the same bucket on
//! every instance and in every language, and raising a percentage only ever
//! adds units. Scheduled stages read an injectable [`Clock`].
//!
//! The format, the bucketing spec with its golden vectors, and the design
//! are written down in `docs/` of the repository.
//!
//! Delivery plugs in beside the store: an [`Updater`] keeps it in sync with
//! a file or a URL, with a last-known-good cache, a bootstrap document and
//! signed documents (the [`source`] module).
//!
//! Observability plugs in beside evaluation: every check is counted per
//! flag × stage × variant in per-thread shards, [`FlagStore::record`]
//! attributes outcomes to the stage that exposed the context, a flag's
//! [guard](config::Guard) steps a bad stage back, and every config change
//! is a [`StoreEvent`] with its diff (the [`observe`] module).
//!
//! Integrations meet services where they are: an OpenFeature provider and a
//! tower layer ([`integrations`]), and [`testing`] for flags in tests
//! without a config file ([`FlagStore::set_override`] on a live store).
//!
//! Tools sit beside the hot path: [`Snapshot::explain`] shows a decision step
//! by step, [`diff::diff`] lists what changes between two configs, and the
//! `flagstone` command-line tool (feature `cli`) puts both, and more, in
//! release managers' hands.
//!
//! # Crate features
//!
//! - `http` (off by default): [`Updater`] pulls configs over HTTP(S) with
//!   `ureq` (conditional GETs, gzip, timeouts, a body limit).
//! - `signing` (off by default): the updater accepts only documents with a
//!   detached Ed25519 signature (`ed25519-dalek`).
//! - `tracing` (off by default): update events, config changes and guard
//!   trips go to `tracing` too. Never per evaluation.
//! - `schema` (off by default): [`config::json_schema`], the config's JSON
//!   Schema derived with `schemars`.
//! - `tower` (off by default): [`integrations::tower::FlagsLayer`], which
//!   gives each request a snapshot and its context (`tower`, `http`).
//! - `openfeature` (off by default): an OpenFeature provider
//!   ([`integrations::openfeature`], `open-feature` 0.3).
//! - `metrics` (off by default): [`observe::export_to_metrics`] publishes a
//!   store's counts to the `metrics` crate's recorder.
//! - `cli` (off by default): the `flagstone` binary (`validate`, `explain`,
//!   `diff`, `plan`, `bucket`), with `clap`, `anyhow` and `csv`. The library
//!   itself never depends on them.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.88 (edition 2024, let chains).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod bucket;
mod clock;
mod compile;
pub mod config;
mod context;
pub mod diff;
mod error;
mod eval;
mod explain;
pub mod import;
pub mod integrations;
pub mod lint;
pub mod migration;
pub mod observe;
pub mod publish;
mod retained;
pub mod rollout;
mod rules;
#[cfg(feature = "signing")]
pub mod signing;
pub mod source;
mod store;
pub mod testing;

pub use bucket::{
    BUCKETS, UNLEASH_VARIANT_SEED, bucket, holdback_bucket, unleash_normalized_hash, variant_index,
};
pub use clock::{Clock, ManualClock, SystemClock, TimeError};
pub use context::{Context, ContextBuf, INLINE_ATTRIBUTES};
pub use error::{Error, ErrorKind, MAX_PROBLEMS, Problem};
pub use eval::{Evaluation, Reason, StageVerdict};
pub use explain::{CohortCheck, Explanation, PrerequisiteCheck, StageCheck};
pub use migration::MigrationStep;
pub use observe::{Metrics, Outcome, PROMETHEUS_CONTENT_TYPE, StoreEvent};
pub use source::{
    Origin, Refreshed, Serving, SettingProblem, SignatureRefused, SourceError, UpdateError,
    UpdateEvent, Updater, UpdaterBuilder,
};
pub use store::{FlagHandle, FlagStore, HISTORY, Override, Snapshot};
