//! Importing flags from other systems, so that a team can move to
//! flagstone mid-rollout without reshuffling anyone.
//!
//! [`unleash`] converts an Unleash client-features document into a
//! flagstone [`Config`] that decides the same for every context (with
//! `"bucketing": "unleash"`, units stay in their rollouts and keep their
//! variants); [`unleash_context`] maps an Unleash context onto a
//! flagstone one. `flagstone import unleash FILE` does it from the
//! command line.

mod unleash;

pub use unleash::{unleash, unleash_context};

use crate::config::Config;

/// A converted document, and what the conversion could not carry over
/// exactly.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Import {
    /// The config: valid, at `version` 1 (set the version your delivery
    /// needs before publishing it).
    pub config: Config,
    /// Each thing converted with a change (a random choice made sticky, a
    /// strategy that reads the host), or that can never match in the
    /// source either (a constraint that does not parse, a missing
    /// segment), naming the feature and why.
    pub warnings: Vec<String>,
}
