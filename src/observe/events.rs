//! What a store tells its listeners: config changes and guard trips.

use std::fmt;

use crate::config::GuardAction;
use crate::diff::Change;

/// An event of a [`FlagStore`](crate::FlagStore), for the listeners given
/// to [`FlagStore::on_event`](crate::FlagStore::on_event) (and, with the
/// `tracing` feature, to `tracing`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreEvent {
    /// The serving config changed: the audit log of a release.
    Changed(ConfigChange),
    /// A guard rolled a stage back on this instance.
    GuardTripped(GuardTrip),
}

/// A change of the serving config, and what it changed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConfigChange {
    /// Why the config changed.
    pub cause: ChangeCause,
    /// The version served before; 0 for an empty store.
    pub from: u64,
    /// The version served now (a guard keeps the version it changed).
    pub to: u64,
    /// What changed, flag by flag ([`crate::diff::diff`] of the two).
    pub changes: Vec<Change>,
}

/// Why a store's config changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeCause {
    /// A config was applied.
    Applied,
    /// [`FlagStore::rollback`](crate::FlagStore::rollback) stepped back.
    RolledBack,
    /// A guard tripped ([`StoreEvent::GuardTripped`] says why).
    Guard,
}

impl fmt::Display for ChangeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeCause::Applied => "applied",
            ChangeCause::RolledBack => "rolled back",
            ChangeCause::Guard => "guard",
        })
    }
}

/// What a guard saw when it tripped, and what it did.
///
/// This is a per-instance safety net: the store serves the guard's decision
/// until a config with a newer version arrives. Forward the event to
/// whatever rolls the stage back for the whole fleet (a new config version),
/// or the next push may open the stage again.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuardTrip {
    /// The flag's key.
    pub flag: String,
    /// The stage the guard rolled back.
    pub stage: String,
    /// What the guard did.
    pub action: GuardAction,
    /// The version of the config the guard changed (and keeps serving).
    pub version: u64,
    /// The flag's stage in effect now; `None` when the flag is now off.
    pub now_serving: Option<String>,
    /// Errors in the stage over the window.
    pub stage_errors: u64,
    /// Outcomes (successes and errors) in the stage over the window.
    pub stage_samples: u64,
    /// `stage_errors / stage_samples`.
    pub stage_error_rate: f64,
    /// Errors among contexts no stage exposes, over the window.
    pub baseline_errors: u64,
    /// Outcomes among contexts no stage exposes, over the window.
    pub baseline_samples: u64,
    /// `baseline_errors / baseline_samples`.
    pub baseline_error_rate: f64,
    /// The guard's threshold.
    pub max_error_ratio: f64,
    /// The guard's window.
    pub window_secs: u64,
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guard tripped on flag {:?} stage {:?}: error rate {:.2}% ({}/{}) against {:.2}% ({}/{}) not exposed, over {}x; ",
            self.flag,
            self.stage,
            self.stage_error_rate * 100.0,
            self.stage_errors,
            self.stage_samples,
            self.baseline_error_rate * 100.0,
            self.baseline_errors,
            self.baseline_samples,
            self.max_error_ratio,
        )?;
        match &self.now_serving {
            Some(stage) => write!(f, "stepped back to stage {stage:?} (version {})", self.version),
            None => write!(f, "turned the flag off (version {})", self.version),
        }
    }
}
