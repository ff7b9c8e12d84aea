//! Evaluation: a pure function of a compiled flag, a context and the time.
//!
//! The order is the spec's: kill switch, exclusions, then the stages up to
//! the current one, first match wins. The unit's bucket and the clock are
//! computed lazily and at most once per evaluation. Nothing here allocates,
//! locks or panics.

use std::fmt;

use crate::bucket::bucket_seeded;
use crate::clock::Clock;
use crate::compile::{Cohort, Flag, Hashing, NO_PERCENT, NO_START, NameSet, Shortcut, Variants};
use crate::context::Context;
use crate::migration::MigrationStep;

/// The result of evaluating a flag for a context.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore, Reason};
///
/// let store = FlagStore::from_json(r#"{ "version": 1, "flags": {
///     "new-checkout": { "enabled": true,
///         "variants": [ { "name": "treatment", "weight": 1 } ] } } }"#)?;
/// let ev = store.evaluate("new-checkout", &Context::new().user("u-42"));
/// assert!(ev.enabled);
/// assert_eq!(ev.variant, Some("treatment"));
/// assert_eq!(ev.reason, Reason::Enabled);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation<'a> {
    /// Whether the flag is on for the context.
    pub enabled: bool,
    /// The variant, for an exposed context of a flag with variants.
    pub variant: Option<&'a str>,
    /// Why the flag is on or off.
    pub reason: Reason<'a>,
    /// The value the context gets: its variant's, or the flag's when it has
    /// no variants; `None` when off or when none is configured.
    pub value: Option<&'a serde_json::Value>,
}

/// Why a flag is on or off for a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason<'a> {
    /// The config has no flag by that key: off.
    UnknownFlag,
    /// The flag's kill switch is set (`"enabled": false`): off for everyone.
    KillSwitch,
    /// The context is in a cohort the flag excludes: off.
    Excluded {
        /// The first excluding cohort that matched.
        cohort: &'a str,
    },
    /// The flag is enabled and has no stages: on for everyone.
    Enabled,
    /// A stage at or before the current one exposes the context: on.
    Stage {
        /// The stage's position in the flag's `stages`.
        index: usize,
        /// The stage's name.
        name: &'a str,
    },
    /// No stage in effect exposes the context: off.
    NotExposed,
    /// The newest stage in effect would expose the context, but its
    /// flag's guard holds it back as the control group: off.
    HeldBack {
        /// The stage the context is held back from.
        stage: &'a str,
    },
    /// A flag this one requires is off for the context (or hands it
    /// another variant than the one required): off.
    Prerequisite {
        /// The first prerequisite not met.
        flag: &'a str,
    },
    /// A local override ([`FlagStore::set_override`](crate::FlagStore::set_override))
    /// beats the config.
    Override {
        /// Whether the override turns the flag on.
        enabled: bool,
    },
}

impl Reason<'_> {
    /// Whether the reason turns the flag on: enabled for everyone, or
    /// exposed by a stage.
    #[inline]
    pub(crate) fn exposes(&self) -> bool {
        matches!(self, Reason::Enabled | Reason::Stage { .. } | Reason::Override { enabled: true })
    }

    /// A short label: the stage's name, or `unknown`, `off`, `excluded`,
    /// `on` or `not-exposed`.
    pub fn label(&self) -> &str {
        match self {
            Reason::UnknownFlag => "unknown",
            Reason::KillSwitch => "off",
            Reason::Excluded { .. } => "excluded",
            Reason::Enabled => "on",
            Reason::Stage { name, .. } => name,
            Reason::NotExposed => "not-exposed",
            Reason::HeldBack { .. } => "held-back",
            Reason::Prerequisite { .. } => "prerequisite",
            Reason::Override { .. } => "override",
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UnknownFlag => f.write_str("unknown flag"),
            Reason::KillSwitch => f.write_str("kill switch: the flag is disabled"),
            Reason::Excluded { cohort } => write!(f, "excluded by cohort {cohort:?}"),
            Reason::Enabled => f.write_str("enabled for everyone"),
            Reason::Stage { index, name } => write!(f, "exposed by stage {name:?} (#{index})"),
            Reason::NotExposed => f.write_str("not exposed by any stage in effect"),
            Reason::HeldBack { stage } => {
                write!(f, "held back from stage {stage:?} as its guard's control group")
            }
            Reason::Prerequisite { flag } => write!(f, "prerequisite flag {flag:?} is not met"),
            Reason::Override { enabled: true } => f.write_str("overridden on locally"),
            Reason::Override { enabled: false } => f.write_str("overridden off locally"),
        }
    }
}

impl Evaluation<'static> {
    pub(crate) const UNKNOWN: Self =
        Evaluation { enabled: false, variant: None, reason: Reason::UnknownFlag, value: None };
}

impl crate::compile::Prerequisite {
    /// Whether the required flag is on for `ctx` (in the variant named):
    /// by its shortcut when no variant is asked for. Past the depth bound
    /// (which validation keeps out) it is not met rather than recursing on.
    #[inline]
    pub(crate) fn met(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
        depth: usize,
    ) -> bool {
        if depth >= crate::config::MAX_PREREQUISITE_DEPTH {
            return false;
        }
        let Some(parent) = flags.get(self.index as usize) else { return false };
        if self.on && self.variants.is_empty() {
            return parent.is_enabled_at(flags, ctx, clock, depth + 1);
        }
        let reason = parent.decide_traced(flags, ctx, clock, &mut (), depth + 1);
        self.met_by(parent, reason, ctx)
    }

    /// Whether the required flag's decision `reason` for `ctx` meets this.
    #[inline]
    fn met_by(&self, parent: &Flag, reason: Reason<'static>, ctx: &Context<'_>) -> bool {
        if !self.on {
            return !reason.exposes();
        }
        reason.exposes()
            && (self.variants.is_empty() || {
                let name = parent.variant_name(parent.variant_at(ctx, reason), reason);
                name.is_some_and(|n| self.variants.contains(&n))
            })
    }
}

impl Flag {
    /// Decides on/off and why; the shared core of every kind of check.
    /// `flags` are the snapshot's flags, where prerequisites are found.
    #[inline]
    pub(crate) fn decide(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
    ) -> Reason<'static> {
        self.decide_traced(flags, ctx, clock, &mut (), 0)
    }

    /// [`Flag::decide`], telling `trace` each check's outcome: `()` traces
    /// nothing and compiles away; `explain` records the path taken, so an
    /// explanation is the evaluation itself, not a second implementation.
    /// `depth` counts the prerequisites above (validation bounds it; past
    /// the bound a prerequisite is not met rather than recursing on).
    #[inline]
    pub(crate) fn decide_traced<T: Trace>(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
        trace: &mut T,
        depth: usize,
    ) -> Reason<'static> {
        if let Some(forced) = &self.forced {
            return Reason::Override { enabled: forced.enabled };
        }
        if !self.enabled {
            return Reason::KillSwitch;
        }
        for required in self.requires.iter() {
            let met = depth < crate::config::MAX_PREREQUISITE_DEPTH
                && flags.get(required.index as usize).is_some_and(|parent| {
                    let reason = parent.decide_traced(flags, ctx, clock, &mut (), depth + 1);
                    required.met_by(parent, reason, ctx)
                });
            trace.prerequisite(required.key, met);
            if !met {
                return Reason::Prerequisite { flag: required.key };
            }
        }
        for cohort in self.exclude.iter() {
            let matched = cohort.matches(ctx);
            trace.exclusion(cohort.name, matched);
            if matched {
                return Reason::Excluded { cohort: cohort.name };
            }
        }
        let Some(stages) = &self.stages else {
            return Reason::Enabled;
        };
        let unit = self.unit_of(ctx);
        let mut bucket = None;
        let mut now = None;
        if self.migration {
            // The last stage that exposes the context decides its step; a
            // context held back from the newest stage falls to the next.
            let mut held = None;
            for (index, stage) in stages.iter().enumerate().rev() {
                if !self.stage_admits(index, stage, ctx, clock, unit, &mut bucket, &mut now, trace)
                {
                    continue;
                }
                if held.is_none() && self.holds_back(stages, index, clock, unit, &mut now) {
                    trace.stage(index, StageVerdict::HeldBack);
                    held = Some(stage.name);
                    continue;
                }
                trace.stage(index, StageVerdict::Matched);
                return Reason::Stage { index, name: stage.name };
            }
            return held.map_or(Reason::NotExposed, |stage| Reason::HeldBack { stage });
        }
        for (index, stage) in stages.iter().enumerate() {
            if !self.stage_admits(index, stage, ctx, clock, unit, &mut bucket, &mut now, trace) {
                continue;
            }
            if self.holds_back(stages, index, clock, unit, &mut now) {
                trace.stage(index, StageVerdict::HeldBack);
                return Reason::HeldBack { stage: stage.name };
            }
            trace.stage(index, StageVerdict::Matched);
            return Reason::Stage { index, name: stage.name };
        }
        Reason::NotExposed
    }

    /// Whether stage `index` takes the context in: its audience, its
    /// percentage, its start. Tells `trace` why not.
    #[inline]
    #[allow(clippy::too_many_arguments)] // the walk's lazily computed state
    fn stage_admits<T: Trace>(
        &self,
        index: usize,
        stage: &crate::compile::Stage,
        ctx: &Context<'_>,
        clock: &dyn Clock,
        unit: Option<&str>,
        bucket: &mut Option<u32>,
        now: &mut Option<i64>,
        trace: &mut T,
    ) -> bool {
        if !stage.cohorts.is_empty() && !stage.cohorts.iter().any(|c| c.matches(ctx)) {
            trace.stage(index, StageVerdict::NotInAudience);
            return false;
        }
        if stage.threshold != NO_PERCENT {
            // Fail closed: a context without the unit is in no percentage.
            let b = match stage.own.as_deref() {
                None => unit.map(|unit| *bucket.get_or_insert_with(|| self.bucket_of(unit))),
                Some(own) => own.unit.of(ctx).map(|unit| own.bucket(unit)),
            };
            let Some(b) = b else {
                trace.stage(index, StageVerdict::NoUnit);
                return false;
            };
            if b >= stage.threshold {
                trace.stage(index, StageVerdict::OutsidePercent);
                return false;
            }
        }
        if stage.start_at != NO_START
            && *now.get_or_insert_with(|| clock.now_millis()) < stage.start_at
        {
            trace.stage(index, StageVerdict::NotStarted);
            return false;
        }
        true
    }

    /// Whether a context stage `index` admits is held back: the stage is
    /// the newest in effect and the unit falls in the guard's holdback.
    #[inline]
    fn holds_back(
        &self,
        stages: &[crate::compile::Stage],
        index: usize,
        clock: &dyn Clock,
        unit: Option<&str>,
        now: &mut Option<i64>,
    ) -> bool {
        if let Some(holdback) = &self.holdback
            && let Some(unit) = unit
            && self.newest_in_effect(stages, clock, now) == Some(index)
            && bucket_seeded(holdback.seed, unit) < holdback.threshold
        {
            return true;
        }
        false
    }

    /// The migration step a decision puts a context at: the step of the
    /// stage that exposed it, `Off` for any other reason. An override on
    /// puts it at the newest stage's step.
    #[inline]
    pub(crate) fn step_of(&self, reason: Reason<'_>, clock: &dyn Clock) -> MigrationStep {
        let Some(stages) = self.stages.as_deref().filter(|_| self.migration) else {
            return MigrationStep::Off;
        };
        match reason {
            Reason::Stage { index, .. } => stages.get(index).map_or(MigrationStep::Off, |s| s.step),
            Reason::Override { enabled: true } => self
                .newest_in_effect(stages, clock, &mut None)
                .and_then(|i| stages.get(i))
                .map_or(MigrationStep::Off, |s| s.step),
            _ => MigrationStep::Off,
        }
    }

    /// The newest stage in effect: the last one whose `start_at` has come
    /// (the clock is read only when a stage has a schedule).
    #[inline]
    pub(crate) fn newest_in_effect(
        &self,
        stages: &[crate::compile::Stage],
        clock: &dyn Clock,
        now: &mut Option<i64>,
    ) -> Option<usize> {
        stages.iter().rposition(|s| {
            s.start_at == NO_START || *now.get_or_insert_with(|| clock.now_millis()) >= s.start_at
        })
    }

    /// Whether every prerequisite is met (checked before the shortcut of a
    /// flag that has them).
    #[inline]
    fn prerequisites_met(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
        depth: usize,
    ) -> bool {
        self.requires.iter().all(|r| r.met(flags, ctx, clock, depth))
    }

    #[inline]
    pub(crate) fn is_enabled(&self, flags: &[Flag], ctx: &Context<'_>, clock: &dyn Clock) -> bool {
        self.is_enabled_at(flags, ctx, clock, 0)
    }

    #[inline]
    fn is_enabled_at(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
        depth: usize,
    ) -> bool {
        if !self.requires.is_empty()
            && self.forced.is_none()
            && self.enabled
            && !self.prerequisites_met(flags, ctx, clock, depth)
        {
            return false;
        }
        match self.shortcut {
            Shortcut::Off => false,
            Shortcut::On => true,
            Shortcut::Below(threshold) => {
                self.unit_of(ctx).is_some_and(|unit| self.bucket_of(unit) < threshold)
            }
            Shortcut::Audience => self.audience(ctx) == Audience::Exposed,
            Shortcut::Walk => self.decide(flags, ctx, clock).exposes(),
        }
    }

    /// A [`Shortcut::Audience`] flag's decision: what the walk decides for
    /// one stage without a schedule or a holdback (its exclusions, then the
    /// stage's cohorts and percentage), told apart only as far as its
    /// counter cell needs.
    #[inline]
    fn audience(&self, ctx: &Context<'_>) -> Audience {
        if self.exclude.iter().any(|cohort| cohort.matches(ctx)) {
            return Audience::Excluded;
        }
        let Some([stage]) = self.stages.as_deref() else { return Audience::NotExposed };
        // `stage_admits` for an unscheduled stage of the flag's own
        // bucketing, written out: called, it stays out of line and costs
        // (b) 49 instructions a check.
        let admitted = (stage.cohorts.is_empty() || stage.cohorts.iter().any(|c| c.matches(ctx)))
            && (stage.threshold == NO_PERCENT
                || self.unit_of(ctx).is_some_and(|unit| self.bucket_of(unit) < stage.threshold));
        if admitted { Audience::Exposed } else { Audience::NotExposed }
    }

    /// The unit's bucket (`bucket_by` value) for a context, if it has one.
    pub(crate) fn unit_bucket(&self, ctx: &Context<'_>) -> Option<u32> {
        self.unit_of(ctx).map(|unit| self.bucket_of(unit))
    }

    /// The unit's bucket, out of line: inlined into the stage loop, xxh3's
    /// seeded-secret setup (needed only for units over 240 bytes) gets
    /// hoisted in front of the loop and paid on every call.
    #[inline(never)]
    fn bucket_of(&self, unit: &str) -> u32 {
        self.hashing.bucket(unit)
    }

    /// [`Flag::is_enabled`] for a check that is counted, with the cell to
    /// count it in: a shortcut that also says which group decided is
    /// taken, anything else walks.
    #[inline]
    pub(crate) fn is_enabled_counted(
        &self,
        flags: &[Flag],
        ctx: &Context<'_>,
        clock: &dyn Clock,
    ) -> (bool, u32) {
        if !self.requires.is_empty()
            && self.forced.is_none()
            && self.enabled
            && !self.prerequisites_met(flags, ctx, clock, 0)
        {
            return (false, self.evaluation_cell(Reason::Prerequisite { flag: "" }, None));
        }
        match (self.shortcut, self.stages.as_deref()) {
            // The kill switch (an overridden flag never has this shortcut).
            (Shortcut::Off, _) => (false, self.series.off),
            // One bare percentage stage (the common shape of a rollout).
            (Shortcut::Below(threshold), Some([_])) => {
                let on = self.unit_of(ctx).is_some_and(|unit| self.bucket_of(unit) < threshold);
                (on, if on { self.series.first_exposed } else { self.series.not_exposed })
            }
            (Shortcut::On, None) => (true, self.series.first_exposed),
            // Its one stage's group is the first (its cell `first_exposed`).
            (Shortcut::Audience, _) => match self.audience(ctx) {
                Audience::Exposed => (true, self.series.first_exposed),
                Audience::NotExposed => (false, self.series.not_exposed),
                Audience::Excluded => {
                    (false, self.evaluation_cell(Reason::Excluded { cohort: "" }, None))
                }
            },
            _ => {
                let reason = self.decide(flags, ctx, clock);
                (reason.exposes(), self.evaluation_cell(reason, None))
            }
        }
    }

    /// The evaluation a decision comes to: exposed contexts get a variant,
    /// and its value (or the flag's).
    #[inline]
    pub(crate) fn conclude(
        &self,
        reason: Reason<'static>,
        ctx: &Context<'_>,
    ) -> Evaluation<'static> {
        let at = if reason.exposes() { self.variant_at(ctx, reason) } else { None };
        self.conclude_at(reason, at)
    }

    /// [`Flag::conclude`] with the variant's position already picked (the
    /// counted evaluation needs it for its counter cell).
    #[inline]
    pub(crate) fn conclude_at(
        &self,
        reason: Reason<'static>,
        at: Option<usize>,
    ) -> Evaluation<'static> {
        let enabled = reason.exposes();
        let (variant, value) = if enabled {
            (self.variant_name(at, reason), self.value_at(at, reason))
        } else {
            (None, None)
        };
        Evaluation { enabled, variant, reason, value }
    }

    /// The variants an exposed context draws from, and how: the stage's
    /// own, or the flag's.
    #[inline]
    fn variants_for(&self, reason: Reason<'_>) -> (&Variants, &Hashing) {
        if let Reason::Stage { index, .. } = reason
            && let Some(stage) = self.stages.as_deref().and_then(|s| s.get(index))
            && let Some(variants) = stage.variants.as_deref()
        {
            return (variants, stage.own.as_deref().unwrap_or(&self.hashing));
        }
        (&self.variants, &self.hashing)
    }

    /// The value of an exposed context, given its variant's position.
    #[inline]
    pub(crate) fn value_at(
        &self,
        at: Option<usize>,
        reason: Reason<'_>,
    ) -> Option<&'static serde_json::Value> {
        if self.forced.is_some_and(|f| f.variant.is_some()) {
            return None;
        }
        match at {
            Some(i) => self.variants_for(reason).0.list.get(i).and_then(|v| v.value),
            None => self.value,
        }
    }

    /// The name of the variant of an exposed context, given its position.
    #[inline]
    pub(crate) fn variant_name(
        &self,
        at: Option<usize>,
        reason: Reason<'_>,
    ) -> Option<&'static str> {
        if let Some(forced) = &self.forced {
            return forced.variant;
        }
        at.and_then(|i| self.variants_for(reason).0.list.get(i)).map(|v| v.name)
    }

    /// The position of the variant of an exposed context (in the list
    /// [`Flag::variants_for`] its reason draws from): a variant that pins
    /// it, or its unit's by weight (the first without a unit).
    #[inline]
    pub(crate) fn variant_at(&self, ctx: &Context<'_>, reason: Reason<'_>) -> Option<usize> {
        let (variants, hashing) = self.variants_for(reason);
        if variants.list.is_empty() {
            return None;
        }
        if variants.pinned
            && let Some(i) =
                variants.list.iter().position(|v| v.pins.iter().any(|c| c.matches(ctx)))
        {
            return Some(i);
        }
        let Some(unit) = hashing.unit.of(ctx) else {
            return Some(0);
        };
        let x = hashing.variant_point(unit, variants.total);
        // x < total = the last cumulative weight, so a variant is found;
        // the fallback only keeps this free of panics.
        Some(variants.list.iter().position(|v| v.cumulative > x).unwrap_or(0))
    }

    #[inline]
    pub(crate) fn unit_of<'c>(&self, ctx: &Context<'c>) -> Option<&'c str> {
        self.hashing.unit.of(ctx)
    }
}

/// What [`Flag::audience`] decided: the groups its counter cells tell apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    Excluded,
    NotExposed,
    Exposed,
}

/// What one stage's check came to, in evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StageVerdict {
    /// The stage exposes the context: the flag is on.
    Matched,
    /// The context is in none of the stage's cohorts.
    NotInAudience,
    /// The stage has a percentage and the context lacks the `bucket_by` value.
    NoUnit,
    /// The unit's bucket is not below the stage's threshold.
    OutsidePercent,
    /// The stage's `start_at` has not come yet.
    NotStarted,
    /// The stage would expose the context, but its guard holds it back.
    HeldBack,
    /// Not checked: an earlier step decided (kill switch, exclusion, or an
    /// earlier stage matched).
    NotReached,
    /// After the current stage: not in effect.
    NotInEffect,
}

/// Receives the outcome of each check of an evaluation.
pub(crate) trait Trace {
    #[inline(always)]
    fn exclusion(&mut self, _cohort: &'static str, _matched: bool) {}
    #[inline(always)]
    fn stage(&mut self, _index: usize, _verdict: StageVerdict) {}
    #[inline(always)]
    fn prerequisite(&mut self, _flag: &'static str, _met: bool) {}
}

impl Trace for () {}

impl Cohort {
    /// AND across the listed criteria and rules, OR within each list; a
    /// criterion the context has no value for does not match.
    #[inline]
    pub(crate) fn matches(&self, ctx: &Context<'_>) -> bool {
        self.matches_lists(ctx) && (self.rules.is_empty() || self.matches_rules(ctx))
    }

    /// The rules' part of [`Cohort::matches`], out of line: the rules'
    /// matchers (regex, versions, addresses) inlined would give every
    /// cohort check a large frame to set up, lists only or not.
    #[inline(never)]
    fn matches_rules(&self, ctx: &Context<'_>) -> bool {
        self.rules.iter().all(|rule| rule.matches(ctx))
    }

    #[inline]
    fn matches_lists(&self, ctx: &Context<'_>) -> bool {
        #[inline(always)]
        fn check(set: &Option<NameSet>, value: Option<&str>) -> bool {
            match set {
                None => true,
                Some(set) => value.is_some_and(|v| set.contains(v)),
            }
        }
        check(&self.tenants, ctx.get_tenant())
            && check(&self.users, ctx.get_user())
            && check(&self.regions, ctx.get_region())
            && self
                .attributes
                .iter()
                .all(|(key, set)| ctx.get_attr(key).is_some_and(|v| set.contains(v)))
    }
}
