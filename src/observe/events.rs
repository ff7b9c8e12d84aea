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
    /// A guard rolled a stage back on this instance (or, with action
    /// `pause`, would have).
    GuardTripped(GuardTrip),
    /// A guard's group recorded nothing for a whole window.
    GuardStarved(GuardStarved),
    /// A guard's groups are not split as its holdback says.
    GuardMismatch(GuardMismatch),
    /// What the store's [`Updater`](crate::Updater) did: applied, refused,
    /// unreachable, ... — so that one subscription hears everything.
    Update(crate::UpdateEvent),
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
/// whatever rolls the stage back for the whole fleet (a new config version,
/// `flagstone rollout`), or the next push may open the stage again.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuardTrip {
    /// The flag's key.
    pub flag: String,
    /// The stage the guard tripped on.
    pub stage: String,
    /// What the guard did.
    pub action: GuardAction,
    /// The version of the config the guard changed (and keeps serving).
    pub version: u64,
    /// The flag's stage in effect now; `None` when the flag is now off.
    pub now_serving: Option<String>,
    /// What regressed.
    pub cause: TripCause,
    /// What the stage was compared with.
    pub control: ControlGroup,
    /// Units of the stage in the window (for latency: requests).
    pub exposed_units: u64,
    /// Units of the control in the window (for latency: requests).
    pub control_units: u64,
    /// The stage's mean unit error rate (for latency: its share of requests
    /// slower than the control's quantile times the ratio).
    pub exposed_value: f64,
    /// The control's (for latency: its share slower than its quantile).
    pub control_value: f64,
    /// The lower end of the confidence sequence of the difference the rule
    /// is about (above 0: the trip).
    pub lower: f64,
    /// The guard's confidence.
    pub confidence: f64,
    /// The guard's window.
    pub window_secs: u64,
}

/// What made a guard trip.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TripCause {
    /// The units' error rates, by this rule.
    Errors(super::evidence::ErrorRule),
    /// Latency at a quantile, over a ratio of the control's.
    Latency {
        /// The quantile.
        quantile: f64,
        /// The ratio.
        max_ratio: f64,
    },
    /// A migration's compared reads disagreed more often than this rate
    /// (the trip's `exposed_value` is the rate seen over `exposed_units`
    /// comparisons).
    Mismatches {
        /// The guard's `max_mismatch_rate`.
        max_rate: f64,
    },
}

/// What a guard compares the newest stage with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlGroup {
    /// Units of the stage's new audience held back by the guard's
    /// `holdback`: the same population, minus the change.
    HeldBack,
    /// Contexts no stage exposes: a weaker baseline (other regions, plans,
    /// tenants).
    NotExposed,
}

impl fmt::Display for ControlGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ControlGroup::HeldBack => "held back",
            ControlGroup::NotExposed => "not exposed",
        })
    }
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let confidence = self.confidence * 100.0;
        match self.cause {
            TripCause::Errors(rule) => {
                let rule = match rule {
                    super::evidence::ErrorRule::Ratio(r) => format!("over {r}x"),
                    super::evidence::ErrorRule::Increase(d) => {
                        format!("over +{:.2} points", d * 100.0)
                    }
                };
                write!(
                    f,
                    "guard tripped on flag {:?} stage {:?}: unit error rate {:.2}% ({} units) against {:.2}% ({} units) {}, {rule} with {confidence}% confidence; ",
                    self.flag,
                    self.stage,
                    self.exposed_value * 100.0,
                    self.exposed_units,
                    self.control_value * 100.0,
                    self.control_units,
                    self.control,
                )?;
            }
            TripCause::Latency { quantile, max_ratio } => write!(
                f,
                "guard tripped on flag {:?} stage {:?}: p{} latency over {max_ratio}x the {}'s ({:.2}% of {} requests slower, against {:.2}% of {}), with {confidence}% confidence; ",
                self.flag,
                self.stage,
                quantile * 100.0,
                self.control,
                self.exposed_value * 100.0,
                self.exposed_units,
                self.control_value * 100.0,
                self.control_units,
            )?,
            TripCause::Mismatches { max_rate } => write!(
                f,
                "guard tripped on flag {:?} stage {:?}: {:.3}% of {} compared reads mismatched, over the {:.3}% allowed with {confidence}% confidence; ",
                self.flag,
                self.stage,
                self.exposed_value * 100.0,
                self.exposed_units,
                max_rate * 100.0,
            )?,
        }
        match (self.action, &self.now_serving) {
            (GuardAction::Pause, _) => {
                write!(f, "paused: nothing changed (version {})", self.version)
            }
            (_, Some(stage)) => {
                write!(f, "stepped back to stage {stage:?} (version {})", self.version)
            }
            (_, None) => write!(f, "turned the flag off (version {})", self.version),
        }
    }
}

/// A guard's group saw no outcome for a whole window: the guard cannot
/// decide (a route that answers 404 while the flag is off records nothing,
/// say).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardStarved {
    /// The flag's key.
    pub flag: String,
    /// The stage watched.
    pub stage: String,
    /// The group without outcomes: `exposed`, `held-back` or `not-exposed`.
    pub group: String,
    /// The guard's window.
    pub window_secs: u64,
}

impl fmt::Display for GuardStarved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guard of flag {:?} stage {:?} is starved: its {} group recorded no outcome for a whole window ({} s), so it cannot decide",
            self.flag, self.stage, self.group, self.window_secs
        )
    }
}

/// A guard found the split of units between exposed and held back far
/// from the holdback (p < 0.001): the groups are not comparable, and the
/// guard decides nothing this window.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GuardMismatch {
    /// The flag's key.
    pub flag: String,
    /// The stage watched.
    pub stage: String,
    /// Exposed units seen.
    pub exposed_units: u64,
    /// Held-back units seen.
    pub control_units: u64,
    /// Their share.
    pub control_share: f64,
    /// The holdback's.
    pub expected_share: f64,
}

impl fmt::Display for GuardMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guard of flag {:?} stage {:?} decides nothing: {} exposed and {} held-back units is a {:.1}% holdback, not {:.1}% (sample ratio mismatch, p < 0.001); are held-back requests recording outcomes?",
            self.flag,
            self.stage,
            self.exposed_units,
            self.control_units,
            self.control_share * 100.0,
            self.expected_share * 100.0
        )
    }
}
