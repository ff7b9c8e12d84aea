//! The rollout controller: advances a flag's stages across the whole fleet
//! when the fleet's evidence says the current one is healthy, and steps it
//! back when it is not. `flagstone rollout run` drives it; this module is
//! its library.
//!
//! A stage is a fleet decision. Each instance's [guard](crate::config::Guard)
//! sees only its own sliver of traffic, and its trip steps back only that
//! instance; the controller sums every instance's guard evidence (from
//! Prometheus), runs the same sequential test
//! ([`ErrorTest`](crate::observe::evidence::ErrorTest)) on the sums, and
//! publishes each decision as a new version, so the whole fleet moves
//! together.
//!
//! - [`decide`]: the pure decision core. Given a flag, its
//!   [`FlagEvidence`] and the [`Round`] (time, freshness limit, version),
//!   it returns a [`Decision`]: advance, step back, hold or pause, with why.
//! - [`Controller`]: one round of reading the published config, deciding
//!   every managed flag, and publishing the changes with a compare-and-swap
//!   (a lost race re-reads and decides again), writing the audit log and
//!   telling a webhook.
//! - [`Prometheus`] (feature `http`): the fleet's evidence from
//!   Prometheus' HTTP API.
//!
//! A flag is managed when it has `rollout` or a stage with a `hold`;
//! `docs/rollout.md` has the model, the PromQL, the safety rules and how it
//! fails.

mod controller;
mod decide;
#[cfg(feature = "http")]
mod prometheus;
mod schedule;

pub use controller::{
    Action, AuditLine, Controller, EvidenceSource, FlagStatus, Report, RoundError,
};
pub use decide::{
    Decision, FlagEvidence, Round, StageEvidence, StageTest, decide, hold_of, managed, windows_of,
};
#[cfg(feature = "http")]
pub use prometheus::Prometheus;
pub use schedule::{OpenWindow, open, parse_hold};
