//! Staged data migrations: the old and the new store, gated per cohort
//! and per stage, compared in shadow, with a rollback that never loses a
//! write.
//!
//! A flag with `"migration": true` gives each stage a [`MigrationStep`];
//! a context's step is that of the last stage in effect that exposes it
//! (a context no stage exposes is at [`MigrationStep::Off`]). Steps never
//! decrease along the stages, so "internal tenants at `live`, 10% at
//! `shadow`, everyone at `dualwrite`" is three stages: `dualwrite` for
//! everyone, then `shadow` for 10%, then `live` for the internal cohort.
//!
//! [`FlagStore::migration_step`](crate::FlagStore::migration_step) (also
//! on snapshots and handles) says a context's step, without allocating.
//! A [`Migrator`] runs the reads and writes each step calls for, returns
//! the authoritative side's result, compares reads, and counts reads,
//! writes, errors, latency and mismatches per flag × stage × step ×
//! origin into the store's metrics; a guard with `max_mismatch_rate`
//! steps a stage back when its reads disagree.
//!
//! | step | reads | writes | authoritative | compared |
//! |---|---|---|---|---|
//! | `off` | old | old | old | no |
//! | `dualwrite` | old | old, then new | old | no |
//! | `shadow` | old and new | old, then new | old | yes |
//! | `live` | old and new | new, then old | new | yes |
//! | `rampdown` | new | new, then old | new | no |
//! | `complete` | new | new | new | no |
//!
//! Every step before `complete` writes the old store, so stepping any
//! stage back (a guard, `flagstone rollout`, a person) leaves every row
//! readable through the old path. `complete` stops writing the old store:
//! leaving it again means the old store missed writes (`diff` and `plan`
//! say so). See `docs/migrations.md`.

pub(crate) mod counts;
mod migrator;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub(crate) use counts::{FlagCounts, Registry};
pub use counts::{MigrationCount, OperationCount, OriginCount};
pub(crate) use migrator::Operation;
pub use migrator::{Migrator, MigratorBuilder, MigratorError, Order, Origin};

/// Where a context is in a data migration: which store it reads and
/// writes ([module docs](self)).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MigrationStep {
    /// The old store only: no stage exposes the context (or the flag is
    /// off, or not a migration).
    #[default]
    Off,
    /// Reads from the old store; writes to the old, then the new.
    DualWrite,
    /// Reads and writes both, the old authoritative; reads compared.
    Shadow,
    /// Reads and writes both, the new authoritative; reads compared.
    Live,
    /// Reads from the new store; writes to the new, then the old.
    RampDown,
    /// The new store only: the old one gets no more writes.
    Complete,
}

impl MigrationStep {
    /// Every step, in order.
    pub const ALL: [MigrationStep; 6] = [
        MigrationStep::Off,
        MigrationStep::DualWrite,
        MigrationStep::Shadow,
        MigrationStep::Live,
        MigrationStep::RampDown,
        MigrationStep::Complete,
    ];

    /// Its name in configs and metrics: `off`, `dualwrite`, `shadow`,
    /// `live`, `rampdown`, `complete`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MigrationStep::Off => "off",
            MigrationStep::DualWrite => "dualwrite",
            MigrationStep::Shadow => "shadow",
            MigrationStep::Live => "live",
            MigrationStep::RampDown => "rampdown",
            MigrationStep::Complete => "complete",
        }
    }

    /// Whether the old store gets this step's writes: every step but
    /// `complete`. A context that leaves a step that writes the old store
    /// for one that does not can never step back without the old store
    /// having missed writes.
    pub const fn writes_old(self) -> bool {
        !matches!(self, MigrationStep::Complete)
    }

    /// Whether the new store gets this step's writes: every step but `off`.
    pub const fn writes_new(self) -> bool {
        !matches!(self, MigrationStep::Off)
    }

    /// Whether `origin`'s store gets this step's writes.
    pub const fn writes(self, origin: Origin) -> bool {
        match origin {
            Origin::Old => self.writes_old(),
            Origin::New => self.writes_new(),
        }
    }

    /// Whether the new store answers (is authoritative): `live`,
    /// `rampdown`, `complete`.
    pub const fn new_is_authoritative(self) -> bool {
        matches!(self, MigrationStep::Live | MigrationStep::RampDown | MigrationStep::Complete)
    }

    /// The store that answers at this step: new from `live` on.
    pub const fn authoritative(self) -> Origin {
        if self.new_is_authoritative() { Origin::New } else { Origin::Old }
    }

    /// Whether this step reads the new store at all.
    pub const fn reads_new(self) -> bool {
        !matches!(self, MigrationStep::Off | MigrationStep::DualWrite)
    }

    /// Whether this step reads the old store at all.
    pub const fn reads_old(self) -> bool {
        matches!(
            self,
            MigrationStep::Off
                | MigrationStep::DualWrite
                | MigrationStep::Shadow
                | MigrationStep::Live
        )
    }

    /// Whether reads of both stores are compared.
    pub const fn compares(self) -> bool {
        matches!(self, MigrationStep::Shadow | MigrationStep::Live)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for MigrationStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no migration step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a migration step (off, dualwrite, shadow, live, rampdown, complete)")]
pub struct UnknownStep(String);

impl FromStr for MigrationStep {
    type Err = UnknownStep;

    fn from_str(s: &str) -> Result<Self, UnknownStep> {
        MigrationStep::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| UnknownStep(s.to_owned()))
    }
}
