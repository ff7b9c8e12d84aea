//! The config document (v1): its serde model and its validation.
//!
//! A config is parsed into these types (unknown fields and duplicate keys are
//! rejected), then validated as a whole: every problem is collected with the
//! path where it is, so a release manager fixes them all in one go. The
//! store compiles a valid config into its evaluation form (`compile.rs`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::bucket::BUCKETS;
use crate::error::{Error, Problem, Problems, field};

/// A whole config document: its version, its cohorts and its flags.
///
/// # Example
///
/// ```
/// let config = flagstone::config::Config::from_json(r#"{
///     "version": 3,
///     "cohorts": { "staff": { "tenants": ["acme-internal"] } },
///     "flags": { "dark-mode": { "enabled": true } }
/// }"#)?;
/// assert_eq!(config.version, 3);
/// assert!(config.flags["dark-mode"].enabled);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The URL of the document's JSON Schema, for editors; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The document's version; a store applies only versions newer than the
    /// newest it has applied.
    pub version: u64,
    /// Named audiences that stages and exclusions refer to.
    #[serde(default, deserialize_with = "unique_keys")]
    pub cohorts: BTreeMap<String, Cohort>,
    /// The flags, by key.
    #[serde(default, deserialize_with = "unique_keys")]
    pub flags: BTreeMap<String, Flag>,
}

/// A named audience: a context is in it when every listed criterion matches
/// (AND across criteria, OR within one list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Cohort {
    /// The context's tenant is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// The context's user is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// The context's region is one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    /// For each attribute, the context's value is one of the listed ones.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "unique_keys_opt"
    )]
    pub attributes: Option<BTreeMap<String, Vec<String>>>,
    /// Rules on the context's values, all of which must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

/// A rule on one of the context's values: `{ "attribute": "seats", "op":
/// "gte", "value": 50 }`.
///
/// A context without the attribute never matches, and `negate` inverts
/// after that (so a negated rule matches a context without the
/// attribute); a value that does not parse for a numeric, semver, time or
/// IP operator does not match either. These are Unleash's semantics, so
/// its constraints import one to one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// `tenant`, `user`, `region`, or an attribute's name.
    pub attribute: String,
    /// How the value is compared.
    pub op: Operator,
    /// The one value compared with (a string, or a number for `eq`, `lt`,
    /// `lte`, `gt` and `gte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The values compared with: any of them matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<serde_json::Value>>,
    /// Invert the rule's result (after a missing attribute made it false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
    /// Compare strings without regard to case (string operators only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
}

/// The operators of [`Rule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operator {
    /// The value is one of `values`.
    In,
    /// The value starts with any of `value`/`values`.
    StartsWith,
    /// The value ends with any of them.
    EndsWith,
    /// The value contains any of them.
    Contains,
    /// The value matches the regular expression `value` (Rust's `regex`
    /// syntax, compiled once, at most 1 MiB compiled).
    Matches,
    /// The value, read as a number, equals `value`.
    Eq,
    /// ... is less than `value`.
    Lt,
    /// ... is at most `value`.
    Lte,
    /// ... is greater than `value`.
    Gt,
    /// ... is at least `value`.
    Gte,
    /// The value, read as a semantic version, equals `value` by SemVer
    /// precedence (build metadata is ignored: `1.2.3+b7` equals `1.2.3`).
    SemverEq,
    /// ... precedes `value`.
    SemverLt,
    /// ... precedes or equals `value`.
    SemverLte,
    /// ... follows `value`.
    SemverGt,
    /// ... follows or equals `value`.
    SemverGte,
    /// The value, read as an RFC 3339 time, is before `value`.
    Before,
    /// ... is after `value`.
    After,
    /// The value, read as an IP address, is in one of the networks
    /// `values` (`10.0.0.0/8`, `2001:db8::/32`; an address alone is its
    /// own network).
    InCidr,
}

impl Operator {
    /// Whether the operator compares strings (and so takes
    /// `case_insensitive`).
    pub fn is_string(self) -> bool {
        matches!(
            self,
            Operator::In
                | Operator::StartsWith
                | Operator::EndsWith
                | Operator::Contains
                | Operator::Matches
        )
    }
}

/// A flag another flag requires: on for the same context (in `variant`,
/// or in one of `variants`, when they are named), or, with `"enabled":
/// false`, off for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Requirement {
    /// The key of the flag required.
    pub flag: String,
    /// The variant it must hand the context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Variants it may hand the context: any of them will do.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub variants: Vec<String>,
    /// Whether the required flag must be on (the default) or off.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

impl Requirement {
    /// A requirement that `flag` is on.
    pub fn on(flag: impl Into<String>) -> Self {
        Self { flag: flag.into(), variant: None, variants: Vec::new(), enabled: true }
    }

    /// The variants named, from `variant` and `variants`.
    pub fn variant_names(&self) -> impl Iterator<Item = &str> {
        self.variant.iter().chain(&self.variants).map(String::as_str)
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What a percentage counts: one unit (`"tenant"`), or the first of
/// several that the context has (`["user", "sessionId"]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
#[non_exhaustive]
pub enum BucketBy {
    /// `tenant`, `user`, `region` or an attribute's name.
    One(String),
    /// Several, tried in order: the first the context has is its unit.
    FirstOf(Vec<String>),
}

/// Read straight from the text or the list, where `untagged` would
/// buffer the value first and try each form in turn (once per flag and
/// stage of a document), and say only that nothing matched.
impl<'de> Deserialize<'de> for BucketBy {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Units;

        impl<'de> Visitor<'de> for Units {
            type Value = BucketBy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a unit's name or a list of units' names")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<BucketBy, E> {
                Ok(BucketBy::One(name.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<BucketBy, E> {
                Ok(BucketBy::One(name))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BucketBy, A::Error> {
                let mut names = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(name) = seq.next_element()? {
                    names.push(name);
                }
                Ok(BucketBy::FirstOf(names))
            }
        }

        de.deserialize_any(Units)
    }
}

impl BucketBy {
    /// The names, in the order they are tried.
    pub fn names(&self) -> &[String] {
        match self {
            BucketBy::One(name) => std::slice::from_ref(name),
            BucketBy::FirstOf(names) => names,
        }
    }
}

impl From<&str> for BucketBy {
    fn from(name: &str) -> Self {
        BucketBy::One(name.to_owned())
    }
}

impl fmt::Display for BucketBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketBy::One(name) => f.write_str(name),
            BucketBy::FirstOf(names) => write!(f, "the first of [{}]", names.join(", ")),
        }
    }
}

/// How a flag's units are put in buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Bucketing {
    /// flagstone's own: XXH3, 100,000 buckets (docs/bucketing.md).
    #[default]
    Xxh3,
    /// Unleash's normalized MurmurHash3 of `"{salt}:{unit}"`: 100 buckets,
    /// so whole percentages; variants as Unleash picks them. For flags
    /// imported from Unleash, whose units must stay where they were.
    Unleash,
}

impl Bucketing {
    fn is_default(&self) -> bool {
        *self == Bucketing::Xxh3
    }
}

/// How deep prerequisites may chain (a flag requiring a flag requiring ...).
pub const MAX_PREREQUISITE_DEPTH: usize = 8;

/// One flag: a kill switch, and optionally a staged rollout with variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Flag {
    /// `false` turns the flag off for everyone, whatever else it says.
    pub enabled: bool,
    /// The salt of bucketing; the flag key when absent. Changing it
    /// reshuffles every unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// What a percentage counts: `tenant`, `user`, `region` or an attribute
    /// name, or a list of them (the first the context has); `user` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<BucketBy>,
    /// How units are put in buckets: `xxh3` (the default) or `unleash`.
    #[serde(default, skip_serializing_if = "Bucketing::is_default")]
    pub bucketing: Bucketing,
    /// Cohorts for whom the flag is off, whatever the stages say.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub exclude: Vec<String>,
    /// The staged plan, in order; stages are cumulative.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact_stages")]
    pub stages: Vec<Stage>,
    /// The current stage: it and every stage before it are in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Variants handed to exposed contexts, by weight; order matters.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub variants: Vec<Variant>,
    /// The flag's value when it is on, for a flag without variants (remote
    /// config): any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Flags that must be on (in a given variant, if named) for the same
    /// context before this one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub requires: Vec<Requirement>,
    /// Steps the newest stage back on this instance when the units it
    /// exposes do credibly worse than a control group (see [`Guard`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
    /// Hands the flag's stages to the rollout controller (`flagstone
    /// rollout`): its defaults, its pause switch and what it recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Box<Rollout>>,
    /// A data migration ([`crate::migration`]): each stage carries a
    /// `step`, and a context is at the step of the last stage in effect
    /// that exposes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub migration: bool,
}

/// What the rollout controller (`flagstone rollout`, [`crate::rollout`])
/// needs to know about a flag, and what it wrote down.
///
/// A flag is the controller's when it has `rollout` or any stage has a
/// `hold`; it never touches any other flag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rollout {
    /// The healthy time a stage needs before the controller advances past
    /// it, for stages without their own `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// When the controller may enter a stage, for stages without their own
    /// `windows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// The controller leaves the flag alone, step backs included.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When the current stage was entered (RFC 3339), written by the
    /// controller with each step so that time in stage survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_at: Option<String>,
    /// A stage the controller stepped back from: it does not advance into
    /// it again until a person removes this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Rollout {
    /// `entered_at` in milliseconds since the Unix epoch, when it is set
    /// and a strict RFC 3339 time.
    pub fn entered_at_millis(&self) -> Option<i64> {
        crate::clock::parse_rfc3339_millis(self.entered_at.as_deref()?).ok()
    }
}

/// A time window in a time zone: on `days` (every day when empty), from
/// `from` to `to` (`"HH:MM"`, local time; a window with `to` before `from`
/// ends the next day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Window {
    /// The days it opens on: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`,
    /// `sun`; every day when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// When it opens, `"HH:MM"` local time.
    pub from: String,
    /// When it closes, `"HH:MM"` local time (the next day when before
    /// `from`).
    pub to: String,
    /// The IANA time zone of `from` and `to`; `UTC` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

impl Window {
    /// A window every day from `from` to `to` in `tz`.
    pub fn new(from: impl Into<String>, to: impl Into<String>, tz: Option<&str>) -> Self {
        Self { days: Vec::new(), from: from.into(), to: to.into(), tz: tz.map(str::to_owned) }
    }
}

/// A safety net for a staged flag: it compares the units exposed by the
/// newest stage in effect with a control group, and steps the stage back
/// on this instance when the exposed units are credibly worse.
///
/// - **Control.** With `holdback`, that share of the newest stage's new
///   audience is held back (off, [`Reason::HeldBack`](crate::Reason::HeldBack)):
///   the same population, minus the change. Without it, the contexts no
///   stage exposes are the baseline: a weaker choice, since for a cohort
///   stage they are other regions, plans or tenants.
/// - **Evidence** is per unit (the flag's `bucket_by`): within a window each
///   unit weighs once, its own error rate, so one tenant's retry storm
///   cannot decide.
/// - **The test** is sequential and always valid: the guard looks every
///   fraction of a second, and a healthy stage trips with probability at
///   most `1 - confidence` over a window however often it looks
///   (`docs/guards.md` has the method and its measured error rates).
///
/// Outcomes come from [`FlagStore::record`](crate::FlagStore::record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Guard {
    /// The percentage of the newest stage's new audience held back as the
    /// control group, in `0..100` (exclusive) with at most 3 decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub holdback: Option<f64>,
    /// Trip when the exposed units' mean error rate is credibly above this
    /// many times the control's; greater than 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_ratio: Option<f64>,
    /// Trip when the exposed units' mean error rate is credibly above the
    /// control's plus this (an absolute rate in `0..1`, such as 0.02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_increase: Option<f64>,
    /// Trip when the exposed group's latency at a quantile is credibly
    /// above the control's times a ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyGuard>,
    /// A migration flag's guard: trip when the share of compared reads of
    /// the watched stage that disagree is credibly above this rate, in
    /// `0..1` (such as 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mismatch_rate: Option<f64>,
    /// The confidence of a trip: a healthy stage trips with probability at
    /// most `1 - confidence` over a window (default 0.95).
    #[serde(default = "Guard::default_confidence")]
    pub confidence: f64,
    /// The fewest units each group needs within the window before the guard
    /// decides (default 100; `min_samples` is read as this).
    #[serde(default = "Guard::default_min_units", alias = "min_samples")]
    pub min_units: u64,
    /// The length of the window evidence is gathered over, in seconds
    /// (default 60); each window starts a new test.
    #[serde(default = "Guard::default_window_secs")]
    pub window_secs: u64,
    /// What the store does when the guard trips.
    #[serde(default)]
    pub action: GuardAction,
}

/// A latency guard: the exposed group's latency at `quantile` against the
/// control's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LatencyGuard {
    /// The quantile compared, in `0..1` (exclusive), such as 0.99.
    pub quantile: f64,
    /// Trip when the exposed group's latency at the quantile is credibly
    /// above this many times the control's; at least 1.
    pub max_ratio: f64,
}

/// What a tripped [`Guard`] does on the instance that saw it trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GuardAction {
    /// Step the flag back one stage (off, when the newest stage in effect
    /// is the first).
    #[default]
    RollbackStage,
    /// Turn the flag off, as the kill switch would.
    Disable,
    /// Report the trip, and change nothing.
    Pause,
}

impl Guard {
    fn default_confidence() -> f64 {
        0.95
    }

    fn default_min_units() -> u64 {
        100
    }

    fn default_window_secs() -> u64 {
        60
    }
}

/// One step of a staged rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Stage {
    /// The stage's name, unique within its flag.
    pub name: String,
    /// The stage's audience; everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub cohorts: Vec<String>,
    /// The share of units exposed, `0..=100` with at most 3 decimals; all of
    /// the audience when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub percent: Option<f64>,
    /// An RFC 3339 time before which the stage exposes no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// The salt of this stage's percentage (and its variants), when it is
    /// not the flag's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// What this stage's percentage (and its variants) count, when it is
    /// not the flag's `bucket_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<BucketBy>,
    /// Variants for the contexts this stage exposes, instead of the flag's.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub variants: Vec<Variant>,
    /// The healthy time this stage needs before the rollout controller
    /// advances past it (`"90s"`, `"30m"`, `"2h"`); the flag's
    /// `rollout.hold` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// When the rollout controller may enter this stage; the flag's
    /// `rollout.windows` when empty, and any time when both are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// The rollout controller stops before this stage: a person advances
    /// into it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// The migration step of the contexts this stage exposes (a migration
    /// flag's stages only): `dualwrite`, `shadow`, `live`, `rampdown` or
    /// `complete`, never decreasing along the stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<crate::migration::MigrationStep>,
}

impl Stage {
    /// `start_at` in milliseconds since the Unix epoch, when it is set and
    /// a strict RFC 3339 time.
    pub fn start_at_millis(&self) -> Option<i64> {
        crate::clock::parse_rfc3339_millis(self.start_at.as_deref()?).ok()
    }
}

/// A variant, its integer weight, and its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Variant {
    /// The variant's name, unique within its flag.
    pub name: String,
    /// Its weight; the share is `weight / sum of weights`.
    pub weight: u32,
    /// The value a context with this variant gets: any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Contexts in any of these cohorts get this variant, whatever the
    /// weights (the first variant, in order, that pins a context wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exact")]
    pub cohorts: Vec<String>,
}

/// The JSON Schema of the config document (draft 2020-12), derived from
/// these types; the repository keeps a copy at
/// `schema/flagstone.schema.json` for editors.
///
/// The schema checks shapes, names and ranges as a document is written;
/// rules across values (unique stage names, cohorts that exist, the current
/// stage naming a stage) are [`Config::validate`]'s, which the store and the
/// CLI's `validate` both run.
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

impl Config {
    /// Parses and validates a JSON document.
    ///
    /// A malformed document fails with the path of the value that broke it;
    /// a well-formed but invalid one fails with every problem found.
    #[cold]
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self, Error> {
        let config = Self::parse_json(json.as_ref())?;
        config.validate()?;
        Ok(config)
    }

    fn parse_json(json: &[u8]) -> Result<Self, Error> {
        // Editors on some systems start UTF-8 files with a byte-order mark.
        let json = json.strip_prefix(b"\xef\xbb\xbf").unwrap_or(json);
        // Tracking the path costs on every value, and a good document never
        // needs it: parse plainly, and again with paths only to explain a
        // failure.
        // UTF-8 checked once, not string by string (a parse error, the
        // position included, comes from the explaining parse).
        match std::str::from_utf8(json).map(serde_json::from_str) {
            Ok(Ok(config)) => Ok(config),
            _ => Err(Self::explain_parse_error(json)),
        }
    }

    #[cold]
    fn explain_parse_error(json: &[u8]) -> Error {
        let mut de = serde_json::Deserializer::from_slice(json);
        let parsed: Result<Self, _> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            // The path as this crate writes paths (names that hold dots or
            // brackets quoted); a syntax error stops at the last value the
            // parser knew, and says where with its line and column.
            let mut path = String::new();
            for segment in e.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        path = format!("{path}[{index}]");
                    }
                    serde_path_to_error::Segment::Map { key } => path = field(&path, key),
                    serde_path_to_error::Segment::Enum { variant } => path = field(&path, variant),
                    serde_path_to_error::Segment::Unknown => break,
                }
            }
            Error::invalid(vec![Problem::new(path, e.into_inner().to_string())])
        });
        match parsed.and_then(|_| {
            de.end().map_err(|e| Error::invalid(vec![Problem::new("", e.to_string())]))
        }) {
            Err(e) => e,
            // Unreachable unless the two parsers disagree; still an error.
            Ok(()) => Error::invalid(vec![Problem::new("", "malformed document")]),
        }
    }

    /// Advice on a valid config: choices the format allows that are weaker
    /// than they need be, each with its path (`flagstone validate` prints
    /// them as notes). Never a reason to refuse a config.
    pub fn notes(&self) -> Vec<Problem> {
        let mut notes = Vec::new();
        for (key, flag) in &self.flags {
            // A mismatch rate is judged against a bound, not a control.
            let compares = |g: &Guard| {
                g.max_error_ratio.is_some() || g.max_error_increase.is_some() || g.latency.is_some()
            };
            if let Some(guard) = &flag.guard
                && guard.holdback.is_none()
                && compares(guard)
            {
                notes.push(Problem::new(
                    format!("{}.guard", field("flags", key)),
                    "no holdback: the guard compares the stage with the contexts no stage exposes, \
                     a weaker baseline (for a cohort stage, other regions or plans); hold back a \
                     share of the stage's audience as its control with \"holdback\": 10",
                ));
            }
        }
        notes
    }

    /// Checks every rule of the format and reports every problem found.
    #[cold]
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Problems::default();
        for (name, cohort) in &self.cohorts {
            cohort.validate(name, &mut problems);
        }
        for (key, flag) in &self.flags {
            let path = Lazy(|f| f.write_str(&field("flags", key)));
            let _ = check_name(&path, &"a flag key", key, &mut problems);
            flag.validate(&path, &self.cohorts, &mut problems);
        }
        self.validate_requirements(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(problems.into_error()) }
    }

    /// Prerequisites: each names a flag (and a variant of it) that exists,
    /// no chain comes back to where it started, and none is deeper than
    /// [`MAX_PREREQUISITE_DEPTH`].
    fn validate_requirements(&self, problems: &mut Problems) {
        for (key, flag) in &self.flags {
            for (i, req) in flag.requires.iter().enumerate() {
                let at = format!("{}.requires[{i}]", field("flags", key));
                match self.flags.get(&req.flag) {
                    None => problems.push(Problem::new(
                        format!("{at}.flag"),
                        format!("{} names no flag of this config", crate::error::quoted(&req.flag)),
                    )),
                    Some(_) if req.flag == *key => problems
                        .push(Problem::new(format!("{at}.flag"), "a flag cannot require itself")),
                    Some(required) => {
                        if req.variant.is_some() && !req.variants.is_empty() {
                            problems.push(Problem::new(
                                format!("{at}.variants"),
                                "give variant or variants, not both",
                            ));
                        }
                        if !req.enabled && req.variant_names().next().is_some() {
                            problems.push(Problem::new(
                                format!("{at}.enabled"),
                                "a flag required off hands out no variant: drop the variants",
                            ));
                        }
                        let known = |name: &str| {
                            required.variants.iter().any(|v| v.name == name)
                                || required
                                    .stages
                                    .iter()
                                    .any(|s| s.variants.iter().any(|v| v.name == name))
                        };
                        let named = req.variant.iter().map(|v| (format!("{at}.variant"), v)).chain(
                            req.variants
                                .iter()
                                .enumerate()
                                .map(|(j, v)| (format!("{at}.variants[{j}]"), v)),
                        );
                        for (path, variant) in named {
                            if !known(variant) {
                                problems.push(Problem::new(
                                    path,
                                    format!(
                                        "{} is not a variant of flag {}",
                                        crate::error::quoted(variant),
                                        crate::error::quoted(&req.flag)
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        // Cycles, each reported once with its whole path, and depth.
        let mut reported: Vec<Vec<&str>> = Vec::new();
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        // A flag without prerequisites is 0 deep and in no cycle: only the
        // others are walked (and remembered).
        for (key, _) in self.flags.iter().filter(|(_, f)| !f.requires.is_empty()) {
            let mut path: Vec<(&str, usize)> = Vec::new();
            self.walk_requirements(key, &mut path, &mut reported, &mut depth, problems);
        }
        for (key, d) in depth {
            if d > MAX_PREREQUISITE_DEPTH {
                problems.push(Problem::new(
                    format!("{}.requires", field("flags", key)),
                    format!("prerequisites chain {d} flags deep: at most {MAX_PREREQUISITE_DEPTH}"),
                ));
            }
        }
    }

    /// Depth-first over `requires` from `key`; `path` holds the flags above
    /// and which requirement led on. Returns the depth of `key`'s chain.
    fn walk_requirements<'c>(
        &'c self,
        key: &'c str,
        path: &mut Vec<(&'c str, usize)>,
        reported: &mut Vec<Vec<&'c str>>,
        depth: &mut BTreeMap<&'c str, usize>,
        problems: &mut Problems,
    ) -> usize {
        if let Some(&d) = depth.get(key) {
            return d;
        }
        if let Some(start) = path.iter().position(|(k, _)| *k == key) {
            let cycle = &path[start..];
            let mut members: Vec<&str> = cycle.iter().map(|(k, _)| *k).collect();
            members.sort_unstable();
            if !reported.contains(&members) {
                reported.push(members);
                let mut steps: Vec<String> = cycle
                    .iter()
                    .map(|(k, i)| format!("{}.requires[{i}]", field("flags", k)))
                    .collect();
                steps.push(field("flags", key));
                problems.push(Problem::new(steps.join(" -> "), "prerequisites form a cycle"));
            }
            return 0;
        }
        let Some(flag) = self.flags.get(key).filter(|f| !f.requires.is_empty()) else { return 0 };
        let mut deepest = 0;
        for (i, req) in flag.requires.iter().enumerate() {
            if req.flag == key || !self.flags.contains_key(&req.flag) {
                continue;
            }
            path.push((key, i));
            deepest =
                deepest.max(1 + self.walk_requirements(&req.flag, path, reported, depth, problems));
            path.pop();
        }
        // Only settled (not mid-cycle) depths are remembered.
        if !path.iter().any(|(k, _)| *k == key) {
            depth.insert(key, deepest);
        }
        deepest
    }
}

/// A name (a flag key, a cohort, stage or variant name, an attribute) is
/// printed by tools and used in metrics labels: it must say something, and
/// nothing that a terminal would act on (control characters, NUL) or that
/// reorders text on display (bidirectional overrides).
///
/// Returns whether the name is good.
fn check_name(
    path: &dyn fmt::Display,
    what: &dyn fmt::Display,
    name: &str,
    problems: &mut Problems,
) -> bool {
    // Most names are printable ASCII with something besides spaces: good,
    // without decoding characters.
    let printable = name.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if printable && name.bytes().any(|b| b != b' ') {
        return true;
    }
    let problem = if name.is_empty() {
        format!("{what} must not be empty")
    } else if name.trim().is_empty() {
        format!("{what} must not be only whitespace")
    } else if name.chars().any(|c| c.is_control() || crate::error::is_bidi_control(c)) {
        format!(
            "{what} must not hold control or bidirectional-override characters: {}",
            crate::error::quoted(name)
        )
    } else {
        return true;
    };
    problems.push(Problem::new(path.to_string(), problem));
    false
}

impl Cohort {
    fn validate(&self, name: &str, problems: &mut Problems) {
        let path = field("cohorts", name);
        let path = path.as_str();
        let _ = check_name(&path, &"a cohort name", name, problems);
        let lists =
            [("tenants", &self.tenants), ("users", &self.users), ("regions", &self.regions)];
        for (field, list) in lists {
            if let Some(list) = list {
                check_values(&format!("{path}.{field}"), list, problems);
            }
        }
        if let Some(attributes) = &self.attributes {
            if attributes.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.attributes"),
                    "must name at least one attribute",
                ));
            }
            for (attr, values) in attributes {
                let at = field(&format!("{path}.attributes"), attr);
                let _ = check_name(&at, &"an attribute name", attr, problems);
                check_values(&at, values, problems);
            }
        }
        if let Some(rules) = &self.rules {
            if rules.is_empty() {
                problems.push(Problem::new(format!("{path}.rules"), "must hold at least one rule"));
            }
            for (i, rule) in rules.iter().enumerate() {
                let at = format!("{path}.rules[{i}]");
                let _ = check_name(
                    &format!("{at}.attribute"),
                    &"an attribute name",
                    &rule.attribute,
                    problems,
                );
                if let Err((field, message)) = crate::rules::CompiledRule::new(rule) {
                    problems.push(Problem::new(format!("{at}.{field}"), message));
                }
            }
        }
        let none = lists.iter().all(|(_, l)| l.is_none())
            && self.attributes.is_none()
            && self.rules.is_none();
        if none {
            problems.push(Problem::new(
                path,
                "a cohort must list at least one criterion (tenants, users, regions, attributes or rules)",
            ));
        }
    }
}

fn check_values(path: &str, values: &[String], problems: &mut Problems) {
    if values.is_empty() {
        problems.push(Problem::new(path, "an empty list matches no one; list values or drop it"));
    }
}

impl Flag {
    /// An enabled flag with nothing else: on for everyone.
    pub(crate) fn plain() -> Self {
        Flag {
            enabled: true,
            salt: None,
            bucket_by: None,
            bucketing: Bucketing::Xxh3,
            exclude: Vec::new(),
            stages: Vec::new(),
            stage: None,
            variants: Vec::new(),
            value: None,
            requires: Vec::new(),
            guard: None,
            rollout: None,
            migration: false,
        }
    }

    /// The salt of bucketing: `salt`, or the flag key when absent.
    pub fn salt_or<'a>(&'a self, key: &'a str) -> &'a str {
        self.salt.as_deref().unwrap_or(key)
    }

    /// Every cohort the flag names: exclusions, stages' audiences and
    /// variants' pins (the flag's and its stages').
    pub(crate) fn cohort_names(&self) -> impl Iterator<Item = &str> {
        fn pins(variants: &[Variant]) -> impl Iterator<Item = &str> {
            variants.iter().flat_map(|v| v.cohorts.iter().map(String::as_str))
        }
        self.exclude
            .iter()
            .map(String::as_str)
            .chain(self.stages.iter().flat_map(|s| s.cohorts.iter().map(String::as_str)))
            .chain(pins(&self.variants))
            .chain(self.stages.iter().flat_map(|s| pins(&s.variants)))
    }

    /// The index of the current stage, when it names one.
    pub fn current_stage(&self) -> Option<usize> {
        let current = self.stage.as_deref()?;
        self.stages.iter().position(|s| s.name == current)
    }

    fn validate(
        &self,
        path: &dyn fmt::Display,
        cohorts: &BTreeMap<String, Cohort>,
        problems: &mut Problems,
    ) {
        let known = |name: &str| cohorts.contains_key(name);
        // A salt is only hashed: any text but none will do.
        if self.salt.as_deref() == Some("") {
            problems.push(Problem::new(format!("{path}.salt"), "must not be empty"));
        }
        if let Some(by) = &self.bucket_by {
            check_bucket_by(&Lazy(|f| write!(f, "{path}.bucket_by")), by, problems);
        }
        for (i, cohort) in self.exclude.iter().enumerate() {
            if !known(cohort) {
                problems.push(unknown_cohort(format!("{path}.exclude[{i}]"), cohort));
            }
        }

        let mut stage_names = NameCheck::new(path, "stages", "stage");
        for (i, stage) in self.stages.iter().enumerate() {
            // Paths are built only for problems: a valid config allocates none.
            let at = |field: &str| format!("{path}.stages[{i}].{field}");
            stage_names.check(i, &stage.name, problems);
            if RESERVED_STAGE_NAMES.contains(&stage.name.as_str()) {
                problems.push(Problem::new(
                    at("name"),
                    format!(
                        "{:?} is reserved: metrics label contexts no stage exposes with it",
                        stage.name
                    ),
                ));
            }
            for (j, cohort) in stage.cohorts.iter().enumerate() {
                if !known(cohort) {
                    problems.push(unknown_cohort(at(&format!("cohorts[{j}]")), cohort));
                }
            }
            if let Some(p) = stage.percent {
                if let Err(message) = check_percent(p) {
                    problems.push(Problem::new(at("percent"), message));
                } else if self.bucketing == Bucketing::Unleash && p.fract() != 0.0 {
                    problems.push(Problem::new(
                        at("percent"),
                        format!(
                            "{p}: unleash bucketing has 100 buckets, so whole percentages only"
                        ),
                    ));
                }
            }
            if stage.salt.as_deref() == Some("") {
                problems.push(Problem::new(at("salt"), "must not be empty"));
            }
            if let Some(by) = &stage.bucket_by {
                check_bucket_by(&at("bucket_by"), by, problems);
            }
            let stage_path = Lazy(|f| write!(f, "{path}.stages[{i}]"));
            check_variants(&stage_path, &stage.variants, cohorts, problems);
            check_schedule(&stage_path, &stage.hold, &stage.windows, problems);
            if let Some(t) = &stage.start_at
                && let Err(message) = crate::clock::parse_rfc3339_millis(t)
            {
                problems.push(Problem::new(at("start_at"), message));
            }
        }
        match (&self.stage, self.stages.is_empty()) {
            (None, false) => problems.push(Problem::new(
                format!("{path}.stage"),
                "missing: a flag with stages must name its current stage",
            )),
            (Some(current), _) if !self.stages.iter().any(|s| &s.name == current) => {
                let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                let message = if names.is_empty() {
                    format!("{current:?} names no stage: the flag has no stages")
                } else {
                    format!("{current:?} names no stage (stages: {})", names.join(", "))
                };
                problems.push(Problem::new(format!("{path}.stage"), message));
            }
            _ => {}
        }

        check_variants(path, &self.variants, cohorts, problems);
        if self.value.is_some() && !self.variants.is_empty() {
            problems.push(Problem::new(
                format!("{path}.value"),
                "a flag with variants carries its values on the variants",
            ));
        }
        if let Some(guard) = &self.guard {
            guard.validate(&format!("{path}.guard"), !self.stages.is_empty(), problems);
            if guard.max_mismatch_rate.is_some() && !self.migration {
                problems.push(Problem::new(
                    format!("{path}.guard.max_mismatch_rate"),
                    "only a migration flag (\"migration\": true) compares reads",
                ));
            }
        }
        self.validate_rollout(path, problems);
        self.validate_migration(path, problems);
    }

    /// A migration's stages: each has a step, steps never decrease, and
    /// none reads the new store before a stage that dual-writes.
    fn validate_migration(&self, path: &dyn fmt::Display, problems: &mut Problems) {
        use crate::migration::MigrationStep;
        if !self.migration {
            for (i, stage) in self.stages.iter().enumerate() {
                if stage.step.is_some() {
                    problems.push(Problem::new(
                        format!("{path}.stages[{i}].step"),
                        "only a migration flag's stages have a step: set \"migration\": true",
                    ));
                }
            }
            return;
        }
        if self.stages.is_empty() {
            problems.push(Problem::new(
                format!("{path}.migration"),
                "a migration needs stages, each with its step",
            ));
        }
        if !self.variants.is_empty() {
            problems.push(Problem::new(
                format!("{path}.variants"),
                "a migration flag hands out steps, not variants",
            ));
        }
        let mut before: Option<(usize, MigrationStep)> = None;
        let mut dual_written = false;
        for (i, stage) in self.stages.iter().enumerate() {
            let at = format!("{path}.stages[{i}].step");
            if !stage.variants.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.stages[{i}].variants"),
                    "a migration flag hands out steps, not variants",
                ));
            }
            let Some(step) = stage.step else {
                problems.push(Problem::new(
                    at,
                    "missing: a migration flag's stages each name their step \
                     (dualwrite, shadow, live, rampdown or complete)",
                ));
                continue;
            };
            if step == MigrationStep::Off {
                problems.push(Problem::new(
                    at,
                    "\"off\" is no stage's step: a context no stage exposes is at off",
                ));
                continue;
            }
            if let Some((j, earlier)) = before
                && step < earlier
            {
                problems.push(Problem::new(
                    at,
                    format!(
                        "{step} comes after {earlier} (stages[{j}]): steps never decrease \
                         along the stages (a context is at the step of the last stage that \
                         exposes it)"
                    ),
                ));
                continue;
            }
            let reads_new = matches!(
                step,
                MigrationStep::Shadow | MigrationStep::Live | MigrationStep::RampDown
            );
            if reads_new && !dual_written {
                problems.push(Problem::new(
                    at,
                    format!(
                        "{step} with no dualwrite stage before it: the new store would be \
                         read before it got the writes (add a dualwrite stage first)"
                    ),
                ));
            }
            dual_written |= step == MigrationStep::DualWrite;
            before = Some((i, step));
        }
    }

    fn validate_rollout(&self, path: &dyn fmt::Display, problems: &mut Problems) {
        if let Some(rollout) = &self.rollout {
            let at = format!("{path}.rollout");
            check_schedule(&at, &rollout.hold, &rollout.windows, problems);
            if let Some(t) = &rollout.entered_at
                && let Err(message) = crate::clock::parse_rfc3339_millis(t)
            {
                problems.push(Problem::new(format!("{at}.entered_at"), message));
            }
            if let Some(failed) = &rollout.failed
                && !self.stages.iter().any(|s| &s.name == failed)
            {
                problems.push(Problem::new(
                    format!("{at}.failed"),
                    format!("{failed:?} names no stage"),
                ));
            }
        }
        if crate::rollout::managed(self) {
            if self.stages.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.rollout"),
                    "the rollout controller advances stages; the flag has none",
                ));
            } else if self.guard.is_none() {
                problems.push(Problem::new(
                    format!("{path}.guard"),
                    "missing: the rollout controller tests each stage by the flag's guard \
                     (its error rule, confidence and min_units)",
                ));
            }
        }
    }
}

/// Checks a `hold` and `windows` (a stage's or a flag's rollout's).
fn check_schedule(
    path: &dyn fmt::Display,
    hold: &Option<String>,
    windows: &[Window],
    problems: &mut Problems,
) {
    if let Some(hold) = hold
        && let Err(message) = crate::rollout::parse_hold(hold)
    {
        problems.push(Problem::new(format!("{path}.hold"), message));
    }
    for (i, window) in windows.iter().enumerate() {
        if let Err(found) = crate::rollout::OpenWindow::new(window) {
            for (field, message) in found {
                problems.push(Problem::new(format!("{path}.windows[{i}].{field}"), message));
            }
        }
    }
}

impl Guard {
    fn validate(&self, path: &dyn fmt::Display, staged: bool, problems: &mut Problems) {
        let at = |field: &str| format!("{path}.{field}");
        if !staged {
            problems.push(Problem::new(
                path.to_string(),
                "a guard compares a stage with a control group; the flag has no stages",
            ));
        }
        if self.max_error_ratio.is_none()
            && self.max_error_increase.is_none()
            && self.latency.is_none()
            && self.max_mismatch_rate.is_none()
        {
            problems.push(Problem::new(
                path.to_string(),
                "a guard needs something to watch: max_error_ratio, max_error_increase, \
                 latency or max_mismatch_rate",
            ));
        }
        if let Some(rate) = self.max_mismatch_rate
            && !(rate > 0.0 && rate < 1.0)
        {
            problems.push(Problem::new(
                at("max_mismatch_rate"),
                format!("{rate} is not a rate between 0 and 1"),
            ));
        }
        if let Some(ratio) = self.max_error_ratio
            && !(ratio.is_finite() && ratio > 0.0)
        {
            problems.push(Problem::new(
                at("max_error_ratio"),
                format!("{ratio} is not a number greater than 0"),
            ));
        }
        if let Some(increase) = self.max_error_increase
            && !(increase > 0.0 && increase < 1.0)
        {
            problems.push(Problem::new(
                at("max_error_increase"),
                format!("{increase} is not a rate between 0 and 1"),
            ));
        }
        if let Some(latency) = &self.latency {
            if !(latency.quantile > 0.0 && latency.quantile < 1.0) {
                problems.push(Problem::new(
                    at("latency.quantile"),
                    format!("{} is not a quantile between 0 and 1", latency.quantile),
                ));
            }
            if !(latency.max_ratio.is_finite() && latency.max_ratio >= 1.0) {
                problems.push(Problem::new(
                    at("latency.max_ratio"),
                    format!("{} is not a ratio of at least 1", latency.max_ratio),
                ));
            }
        }
        if let Some(holdback) = self.holdback {
            if let Err(message) = check_percent(holdback) {
                problems.push(Problem::new(at("holdback"), message));
            } else if holdback <= 0.0 || holdback >= 100.0 {
                problems.push(Problem::new(
                    at("holdback"),
                    format!(
                        "{holdback} holds back no one or everyone: give a share between 0 and 100"
                    ),
                ));
            }
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            problems.push(Problem::new(
                at("confidence"),
                format!("{} is not a confidence between 0 and 1", self.confidence),
            ));
        }
        if self.min_units == 0 {
            problems.push(Problem::new(at("min_units"), "must be at least 1"));
        }
        if self.window_secs == 0 {
            problems.push(Problem::new(at("window_secs"), "must be at least 1"));
        }
    }
}

/// A list of variants (a flag's or a stage's): unique names, weights that
/// add up to something, pinned cohorts that exist.
fn check_variants(
    path: &dyn fmt::Display,
    variants: &[Variant],
    cohorts: &BTreeMap<String, Cohort>,
    problems: &mut Problems,
) {
    let mut variant_names = NameCheck::new(path, "variants", "variant");
    for (i, variant) in variants.iter().enumerate() {
        variant_names.check(i, &variant.name, problems);
        for (j, cohort) in variant.cohorts.iter().enumerate() {
            if !cohorts.contains_key(cohort) {
                problems.push(unknown_cohort(format!("{path}.variants[{i}].cohorts[{j}]"), cohort));
            }
        }
    }
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if !variants.is_empty() && total == 0 {
        problems.push(Problem::new(format!("{path}.variants"), "the weights add up to 0"));
    }
}

fn check_bucket_by(path: &dyn fmt::Display, by: &BucketBy, problems: &mut Problems) {
    if by.names().is_empty() {
        problems.push(Problem::new(path.to_string(), "an empty list buckets nothing: name a unit"));
    }
    for (i, name) in by.names().iter().enumerate() {
        let at = Lazy(|f| match by {
            BucketBy::One(_) => write!(f, "{path}"),
            BucketBy::FirstOf(_) => write!(f, "{path}[{i}]"),
        });
        if check_name(&at, &"bucket_by", name, problems) && by.names()[..i].contains(name) {
            let message = format!("{} is listed twice", crate::error::quoted(name));
            problems.push(Problem::new(at.to_string(), message));
        }
    }
}

/// The labels metrics give to contexts that no stage exposes (or that a
/// guard holds back, or an override decides); a stage may not take one, or
/// its series would mix with theirs.
pub(crate) const RESERVED_STAGE_NAMES: [&str; 9] = [
    "on",
    "off",
    "excluded",
    "unknown",
    "not-exposed",
    "held-back",
    "prerequisite",
    "override",
    "retired",
];

/// A path rendered only when a problem is reported: a valid config
/// formats none (validating 100,000 flags formatted millions).
struct Lazy<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

/// Checks that the names of a list's items (`stages`, `variants`) are
/// non-empty and unique, item by item, so problems keep document order.
struct NameCheck<'a> {
    path: &'a dyn fmt::Display,
    list: &'static str,
    what: &'static str,
    /// The names so far and their positions: compared one by one while
    /// there are few (a flag's stages and variants, which no allocation
    /// should cost per flag), hashed once there are many.
    few: [(&'a str, usize); FEW_NAMES],
    seen: usize,
    many: foldhash::HashMap<&'a str, usize>,
}

/// Names a [`NameCheck`] compares without a hash map.
const FEW_NAMES: usize = 8;

impl<'a> NameCheck<'a> {
    fn new(path: &'a dyn fmt::Display, list: &'static str, what: &'static str) -> Self {
        Self { path, list, what, few: [("", 0); FEW_NAMES], seen: 0, many: Default::default() }
    }

    /// Records `name` at `i`, and the position it had before, if any.
    fn insert(&mut self, name: &'a str, i: usize) -> Option<usize> {
        let few = self.few.get(..self.seen.min(FEW_NAMES)).unwrap_or_default();
        if let Some(&(_, first)) = few.iter().find(|(n, _)| *n == name) {
            return Some(first);
        }
        if let Some(&first) = self.many.get(name) {
            return Some(first);
        }
        match self.few.get_mut(self.seen) {
            Some(free) => *free = (name, i),
            None => {
                self.many.insert(name, i);
            }
        }
        self.seen += 1;
        None
    }

    fn check(&mut self, i: usize, name: &'a str, problems: &mut Problems) {
        let (path, list, what) = (self.path, self.list, self.what);
        let at = Lazy(|f| write!(f, "{path}.{list}[{i}].name"));
        if !check_name(&at, &format_args!("a {what} name"), name, problems) {
            return;
        }
        if let Some(first) = self.insert(name, i) {
            problems.push(Problem::new(
                at.to_string(),
                format!(
                    "duplicate {what} name {} (also {list}[{first}])",
                    crate::error::quoted(name)
                ),
            ));
        }
    }
}

#[cold]
fn unknown_cohort(path: String, name: &str) -> Problem {
    Problem::new(path, format!("unknown cohort {name:?}"))
}

/// A percentage is `0..=100` with at most three decimals, so that it maps
/// onto a whole number of the 100,000 buckets.
fn check_percent(p: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("{p} is not within 0..=100"));
    }
    // The usual case without printing: `p` is the f64 nearest a whole
    // number of thousandths (the division is correctly rounded, and within
    // 0..=100 `p * 1000` rounds back to that number).
    if (p * 1000.0).round() / 1000.0 == p {
        return Ok(());
    }
    // Rust prints the shortest decimal that reads back as the same f64, so
    // this counts the decimals the document was written with.
    let text = p.to_string();
    let decimals = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    if decimals > 3 {
        return Err(format!(
            "{text} has more than 3 decimals (one bucket is 1/{BUCKETS} = 0.001%)"
        ));
    }
    Ok(())
}

/// Deserializes a JSON object into a map, refusing a key given twice (serde
/// keeps the last silently, which would drop a flag without a word).
fn unique_keys<'de, D, V>(de: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                // One walk down the tree for the check and the insert.
                match out.entry(key) {
                    Entry::Vacant(vacant) => {
                        vacant.insert(map.next_value()?);
                    }
                    Entry::Occupied(taken) => {
                        let key = taken.key();
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                }
            }
            Ok(out)
        }
    }

    de.deserialize_map(UniqueKeys(PhantomData))
}

/// Deserializes a short list (a flag's exclusions, a stage's cohorts, its
/// variants, prerequisites) into a vector of exactly its length.
///
/// A vector grown push by push from empty takes room for four at its
/// first item, and most of these lists hold one or two: each flag of a
/// large config kept three spare `String`s (72 bytes) a list, for as long
/// as its version was kept, or paid a second allocation to shrink them.
/// One or two items are allocated exactly; a longer list grows as usual
/// and is shrunk once.
fn exact<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Exact<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Exact<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let Some(first) = seq.next_element()? else { return Ok(Vec::new()) };
            let Some(second) = seq.next_element()? else { return Ok(vec![first]) };
            let Some(third) = seq.next_element()? else { return Ok(vec![first, second]) };
            let mut items = vec![first, second, third];
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            items.shrink_to_fit();
            Ok(items)
        }
    }

    de.deserialize_seq(Exact(PhantomData))
}

/// Deserializes a flag's stages into a vector of exactly their number.
///
/// A vector grown push by push from empty is allocated twice for five
/// stages (four, then eight, at 224 bytes a stage) and then holds three
/// spare; 100,000 flags would spend a quarter of their parse there. The
/// stages are gathered in a buffer kept by the thread instead, and moved
/// out into one allocation of the right size.
fn exact_stages<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Stage>, D::Error> {
    /// The most stages a kept buffer has room for: a document with a flag
    /// of a million stages does not leave the thread holding them.
    const KEPT: usize = 64;
    thread_local! {
        static BUFFER: std::cell::Cell<Vec<Stage>> = const { std::cell::Cell::new(Vec::new()) };
    }
    struct Stages;

    impl<'de> Visitor<'de> for Stages {
        type Value = Vec<Stage>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // Taken, not borrowed: were the thread to parse stages within
            // stages, the inner parse would find it empty, not in use.
            let mut buffer = BUFFER.take();
            let mut gather = || {
                while let Some(stage) = seq.next_element()? {
                    buffer.push(stage);
                }
                Ok(())
            };
            let stages = gather().map(|()| {
                let mut stages = Vec::with_capacity(buffer.len());
                stages.append(&mut buffer);
                stages
            });
            buffer.clear();
            if buffer.capacity() <= KEPT {
                BUFFER.set(buffer);
            }
            stages
        }
    }

    de.deserialize_seq(Stages)
}

fn unique_keys_opt<'de, D, V>(de: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    unique_keys(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check without printing agrees with counting the decimals that
    /// Rust prints, on every thousandth and on values just off them.
    #[test]
    fn percent_decimals_are_counted_without_printing_as_when_printed() {
        let printed = |p: f64| {
            let text = p.to_string();
            text.split_once('.').map_or(0, |(_, frac)| frac.len()) <= 3
        };
        for k in 0..=100_000u32 {
            let p = f64::from(k) / 1000.0;
            assert!(check_percent(p).is_ok() && printed(p), "{p}");
            for off in
                [f64::from(k) / 1000.0 + 0.0001, p.next_up(), (0.1 + 0.2) * f64::from(k % 300)]
            {
                if off <= 100.0 {
                    assert_eq!(check_percent(off).is_ok(), printed(off), "{off}");
                }
            }
        }
    }

    #[test]
    fn stages_are_parsed_to_their_exact_number_and_errors_inside_keep_their_path() {
        let doc = |stages: &str| {
            format!(r#"{{"version":1,"flags":{{"f":{{"enabled":true,"stages":[{stages}]}}}}}}"#)
        };
        for n in [1, 5, 9, 70] {
            let stages: Vec<String> = (0..n).map(|i| format!(r#"{{"name":"s{i}"}}"#)).collect();
            let config = Config::parse_json(doc(&stages.join(",")).as_bytes()).expect("valid");
            let parsed = &config.flags["f"].stages;
            assert_eq!((parsed.len(), parsed.capacity()), (n, n));
            assert_eq!(parsed[n - 1].name, format!("s{}", n - 1));
        }
        // A broken stage fails where it is, and the next parse is clean.
        let bad = doc(r#"{"name":"a"},{"name":"b","percent":"x"}"#);
        assert_eq!(problems(&bad).len(), 1);
        assert!(
            problems(&bad)[0].starts_with("flags.f.stages[1].percent:"),
            "{:?}",
            problems(&bad)
        );
        let config = Config::parse_json(doc(r#"{"name":"c"}"#).as_bytes()).expect("valid");
        assert_eq!(config.flags["f"].stages.len(), 1);
        assert!(problems(&doc(r#""not a stage""#))[0].starts_with("flags.f.stages[0]"));
    }

    #[test]
    fn short_lists_are_parsed_to_their_exact_length_and_errors_keep_their_path() {
        let doc = |list: &str| {
            format!(
                r#"{{"version":1,"cohorts":{{"c0":{{"tenants":["t"]}}}},"flags":{{"f":{{"enabled":true,
                    "exclude":[{list}],"stages":[{{"name":"s","cohorts":[{list}]}}]}}}}}}"#
            )
        };
        for n in [0, 1, 2, 3, 4, 9] {
            let names: Vec<String> = (0..n).map(|i| format!(r#""c{i}""#)).collect();
            let config = Config::parse_json(doc(&names.join(",")).as_bytes()).expect("valid");
            let flag = &config.flags["f"];
            for list in [&flag.exclude, &flag.stages[0].cohorts] {
                assert_eq!((list.len(), list.capacity()), (n, n));
                assert!(list.iter().enumerate().all(|(i, c)| *c == format!("c{i}")));
            }
        }
        let bad = doc(r#""c0", 7"#);
        assert!(problems(&bad)[0].starts_with("flags.f.exclude[1]:"), "{:?}", problems(&bad));
        let bad = doc(r#""c0""#).replace(r#""cohorts":["c0"]"#, r#""cohorts":"c0""#);
        assert!(
            problems(&bad)[0].starts_with("flags.f.stages[0].cohorts:"),
            "{:?}",
            problems(&bad)
        );
    }

    #[test]
    fn names_checked_without_decoding_agree_with_the_full_check() {
        let full = |name: &str| {
            !name.trim().is_empty()
                && !name.chars().any(|c| c.is_control() || crate::error::is_bidi_control(c))
        };
        let mut names: Vec<String> =
            ["", " ", "   ", "a", " a ", "a b", "\u{a0}", "é", "x\u{202e}y"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        // Every byte below 0x80 alone, between letters and between spaces.
        for b in 0u8..0x80 {
            let c = char::from(b);
            names.extend([c.to_string(), format!("a{c}b"), format!(" {c} ")]);
        }
        for name in &names {
            let mut problems = Problems::default();
            let good = check_name(&"p", &"a name", name, &mut problems);
            assert_eq!(good, full(name), "{name:?}");
            assert_eq!(problems.is_empty(), good, "{name:?}");
        }
    }

    fn problems(json: &str) -> Vec<String> {
        match Config::from_json(json) {
            Ok(_) => vec![],
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    /// `bucket_by` is one name or a list of names, read in one pass and
    /// round-tripped as it was written; anything else says what it wants.
    #[test]
    fn bucket_by_is_a_name_or_a_list_of_names() {
        let doc = |by: &str| {
            format!(
                r#"{{ "version": 1, "flags": {{ "f": {{ "enabled": true, "bucket_by": {by},
                  "stages": [ {{ "name": "s", "percent": 5, "bucket_by": {by} }} ], "stage": "s" }} }} }}"#
            )
        };
        for (by, want) in [
            (r#""tenant""#, BucketBy::One("tenant".into())),
            // Escaped, so the parser hands over an owned string.
            (r#""t\u0065nant""#, BucketBy::One("tenant".into())),
            (r#"["user", "session"]"#, BucketBy::FirstOf(vec!["user".into(), "session".into()])),
        ] {
            let config = Config::from_json(doc(by)).expect("valid");
            let flag = &config.flags["f"];
            assert_eq!(flag.bucket_by.as_ref(), Some(&want), "{by}");
            assert_eq!(flag.stages[0].bucket_by.as_ref(), Some(&want), "{by}");
            let again = Config::from_json(serde_json::to_string(&config).expect("prints"));
            assert_eq!(again.expect("valid").flags["f"].bucket_by, Some(want));
        }
        for by in ["5", "{}", "[1]", "true"] {
            let p = problems(&doc(by));
            assert!(
                p.iter().any(|p| p.contains("a unit's name or a list of units' names")
                    || p.contains("expected a string")),
                "{by}: {p:?}"
            );
        }
    }

    #[test]
    fn percentages_with_more_than_three_decimals_are_refused() {
        assert_eq!(check_percent(12.345), Ok(()));
        assert_eq!(check_percent(100.0), Ok(()));
        assert!(check_percent(12.3456).is_err());
        assert!(check_percent(0.0001).is_err());
        assert!(check_percent(-0.5).is_err());
        assert_eq!(check_percent(140.0), Err("140 is not within 0..=100".into()));
    }

    #[test]
    fn a_key_given_twice_is_refused_with_its_path() {
        let p = problems(r#"{"version":1,"flags":{"a":{"enabled":true},"a":{"enabled":false}}}"#);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("flags: duplicate key \"a\""), "{p:?}");
    }

    #[test]
    fn names_that_would_mislead_a_terminal_are_refused_with_their_path() {
        let p = problems(
            r#"{"version":1,
                "cohorts": { "   ": { "tenants": ["t"] }, "ok": { "attributes": { "pl\u0000an": ["x"] } } },
                "flags": {
                    "a.b": { "enabled": true, "stages": [ { "name": "x\u001b[2J" }, { "name": "\u202egnp.exe" } ], "stage": "x\u001b[2J" },
                    "": { "enabled": true },
                    "v": { "enabled": true, "variants": [ { "name": " ", "weight": 1 } ] }
                } }"#,
        );
        let expected = [
            "cohorts[\"   \"]: a cohort name must not be only whitespace",
            "cohorts.ok.attributes[\"pl\\u{0}an\"]: an attribute name must not hold control",
            "flags[\"\"]: a flag key must not be empty",
            "flags[\"a.b\"].stages[0].name: a stage name must not hold control",
            "flags[\"a.b\"].stages[1].name: a stage name must not hold control or bidirectional",
            "flags.v.variants[0].name: a variant name must not be only whitespace",
        ];
        assert_eq!(p.len(), expected.len(), "{p:#?}");
        for (got, want) in p.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        assert!(p.iter().all(|p| !p.contains('\u{1b}') && !p.contains('\u{202e}')), "{p:?}");
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let doc = "\u{feff}{ \"version\": 3 }";
        assert_eq!(Config::from_json(doc).expect("valid").version, 3);
    }

    #[test]
    fn syntax_errors_say_line_and_column_without_an_unknown_segment() {
        let p = problems("{ \"version\": 1, \"flags\": { \"f\": { \"enabled\": tru");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(!p[0].contains('?'), "{p:?}");
        assert!(p[0].starts_with("flags.f.enabled: ") || p[0].starts_with("flags.f: "), "{p:?}");
        assert!(p[0].contains("line 1 column"), "{p:?}");
        let p = problems(r#"{ "version": 1, "flags": { "a.b": { "enabled": "yes" } } }"#);
        assert!(p[0].starts_with("flags[\"a.b\"].enabled: invalid type"), "{p:?}");
    }

    #[test]
    fn scheduled_stages_take_strict_rfc3339_only() {
        let doc = |t: &str| {
            format!(
                r#"{{ "version": 1, "flags": {{ "f": {{ "enabled": true,
            "stages": [ {{ "name": "s", "start_at": "{t}" }} ], "stage": "s" }} }} }}"#
            )
        };
        assert!(problems(&doc("9999-12-31T23:59:59Z")).is_empty());
        for bad in ["20261201T020000Z", "2026-12-01T02:00:00+24:00", "2026-12-01T02:00:00Z[UTC]"] {
            let p = problems(&doc(bad));
            assert!(
                p.len() == 1 && p[0].starts_with("flags.f.stages[0].start_at:"),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let p = problems(r#"{"version":1} {"#);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("trailing characters"), "{p:?}");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let p = problems(
            r#"{"version":1,
                "cohorts": { "empty": {}, "nobody": { "tenants": [] } },
                "flags": { "f": {
                    "enabled": true,
                    "exclude": ["ghost"],
                    "stages": [
                        { "name": "a", "percent": 140 },
                        { "name": "a", "cohorts": ["nope"], "start_at": "soon" }
                    ],
                    "stage": "b",
                    "variants": [ { "name": "x", "weight": 0 } ]
                } } }"#,
        );
        let expected = [
            "cohorts.empty: a cohort must list at least one criterion",
            "cohorts.nobody.tenants: an empty list matches no one",
            "flags.f.exclude[0]: unknown cohort \"ghost\"",
            "flags.f.stages[0].percent: 140 is not within 0..=100",
            "flags.f.stages[1].name: duplicate stage name \"a\" (also stages[0])",
            "flags.f.stages[1].cohorts[0]: unknown cohort \"nope\"",
            "flags.f.stages[1].start_at: \"soon\" is not an RFC 3339 time",
            "flags.f.stage: \"b\" names no stage (stages: a, a)",
            "flags.f.variants: the weights add up to 0",
        ];
        assert_eq!(p.len(), expected.len(), "{p:#?}");
        for (got, want) in p.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    /// Duplicates are found among the first few names (compared one by
    /// one) and among the rest (hashed), each naming its first position.
    #[test]
    fn duplicate_names_are_found_among_few_and_many() {
        let mut names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        names.extend(["s3", "s15", "s3", "s19"].map(String::from));
        let stages: Vec<String> =
            names.iter().map(|n| format!(r#"{{ "name": "{n}", "percent": 1 }}"#)).collect();
        let doc = format!(
            r#"{{ "version": 1, "flags": {{ "f": {{ "enabled": true, "stage": "s0", "stages": [{}] }} }} }}"#,
            stages.join(",")
        );
        assert_eq!(
            problems(&doc),
            [20, 21, 22, 23].map(|i| {
                let first = [3, 15, 3, 19][i - 20];
                format!(
                    "flags.f.stages[{i}].name: duplicate stage name \"{}\" (also stages[{first}])",
                    names[i]
                )
            })
        );
    }
}
