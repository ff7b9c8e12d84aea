//! Why a flag is on or off for a context, step by step: the evaluation
//! itself, traced, for people and tools (the CLI's `explain`).

use serde::Serialize;

use crate::compile::{Compiled, Flag, NO_PERCENT, NO_START};
use crate::context::Context;
use crate::eval::{StageVerdict, Trace};

/// The whole reasoning behind one decision: kill switch, exclusions, each
/// stage in order with why it matched or not, the unit's bucket, the variant.
///
/// Built by running the same evaluation the hot path runs, with a recorder
/// attached; it allocates, so it is for tools and debugging, not requests.
///
/// # Example
///
/// ```
/// use flagstone::{Context, FlagStore, StageVerdict};
///
/// let store = FlagStore::from_json(r#"{ "version": 1,
///     "cohorts": { "staff": { "tenants": ["acme-internal"] } },
///     "flags": { "f": { "enabled": true, "bucket_by": "tenant",
///         "stages": [ { "name": "internal", "cohorts": ["staff"] },
///                     { "name": "canary", "percent": 5 },
///                     { "name": "everyone", "percent": 100 } ],
///         "stage": "canary" } } }"#)?;
/// let why = store.snapshot().explain("f", &Context::new().tenant("acme-internal"));
/// assert!(why.enabled);
/// assert_eq!(why.stages[0].verdict, StageVerdict::Matched);
/// assert_eq!(why.stages[1].verdict, StageVerdict::NotReached);
/// assert_eq!(why.stages[2].verdict, StageVerdict::NotInEffect);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The flag's key.
    pub flag: String,
    /// The version of the config that decided.
    pub version: u64,
    /// Whether the config has the flag at all.
    pub known: bool,
    /// The decision.
    pub enabled: bool,
    /// The variant, for an exposed context of a flag with variants.
    pub variant: Option<String>,
    /// The reason's label: a stage name, `unknown`, `off`, `excluded`, `on`
    /// or `not-exposed`.
    pub reason: String,
    /// The reason in words.
    pub summary: String,
    /// Whether the kill switch is set (`"enabled": false`).
    pub kill_switch: bool,
    /// What percentages count (`tenant`, `user`, `region` or an attribute).
    pub bucket_by: Option<String>,
    /// The context's value for `bucket_by`.
    pub unit: Option<String>,
    /// The unit's bucket, in `0..buckets`.
    pub bucket: Option<u32>,
    /// How many buckets there are: 100,000 (or 100 with Unleash bucketing).
    pub buckets: u32,
    /// The excluding cohorts, in order; `matched` is `None` when not checked.
    pub exclusions: Vec<CohortCheck>,
    /// The flags this one requires, in order; `met` is `None` when not
    /// checked (an earlier one was not met).
    pub prerequisites: Vec<PrerequisiteCheck>,
    /// The value the context gets, when on and configured.
    pub value: Option<serde_json::Value>,
    /// Every stage, in order, with its verdict.
    pub stages: Vec<StageCheck>,
    /// A migration flag's step for the context ([`crate::migration`]);
    /// `None` for other flags.
    pub step: Option<crate::MigrationStep>,
    /// Why the context is at that step, in words.
    pub step_reason: Option<String>,
}

/// Whether a context is in a cohort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CohortCheck {
    /// The cohort's name.
    pub cohort: String,
    /// Whether the context is in it; `None` when evaluation did not get there.
    pub matched: Option<bool>,
}

/// A prerequisite of an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PrerequisiteCheck {
    /// The flag required.
    pub flag: String,
    /// Whether it must be on (or, `false`, off).
    pub enabled: bool,
    /// The variants required of it (any of them), if any.
    pub variants: Vec<String>,
    /// Whether it is met for the context; `None` when not checked.
    pub met: Option<bool>,
}

/// One stage of an explanation.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StageCheck {
    /// The stage's position in the flag's `stages`.
    pub index: usize,
    /// The stage's name.
    pub name: String,
    /// The stage's cohorts (everyone when empty) and whether the context is
    /// in each; empty for stages not in effect.
    pub cohorts: Vec<CohortCheck>,
    /// The bucket threshold of the stage's percentage: in when `bucket <
    /// threshold`.
    pub threshold: Option<u32>,
    /// The stage's `start_at`, as RFC 3339.
    pub start_at: Option<String>,
    /// What this stage's percentage counts, when it is not the flag's
    /// `bucket_by` (or hashes with its own salt), the context's value for
    /// it and its bucket.
    pub own_unit: Option<(String, Option<String>, Option<u32>)>,
    /// What the check came to.
    pub verdict: StageVerdict,
}

#[derive(Default)]
struct Recorder {
    exclusions: Vec<(&'static str, bool)>,
    stages: Vec<(usize, StageVerdict)>,
    prerequisites: Vec<(&'static str, bool)>,
}

impl Trace for Recorder {
    fn prerequisite(&mut self, flag: &'static str, met: bool) {
        self.prerequisites.push((flag, met));
    }
    fn exclusion(&mut self, cohort: &'static str, matched: bool) {
        self.exclusions.push((cohort, matched));
    }
    fn stage(&mut self, index: usize, verdict: StageVerdict) {
        self.stages.push((index, verdict));
    }
}

impl Compiled {
    pub(crate) fn explain(&self, key: &str, ctx: &Context<'_>) -> Explanation {
        let mut why = Explanation {
            flag: key.to_owned(),
            version: self.version,
            known: false,
            enabled: false,
            variant: None,
            reason: String::new(),
            summary: String::new(),
            kill_switch: false,
            bucket_by: None,
            unit: None,
            bucket: None,
            buckets: crate::bucket::BUCKETS,
            exclusions: Vec::new(),
            prerequisites: Vec::new(),
            value: None,
            stages: Vec::new(),
            step: None,
            step_reason: None,
        };
        let Some(flag) = self.by_name(key) else {
            let ev = crate::Evaluation::UNKNOWN;
            why.reason = ev.reason.label().to_owned();
            why.summary = ev.reason.to_string();
            return why;
        };
        let mut recorder = Recorder::default();
        let ev = flag
            .conclude(flag.decide_traced(&self.flags, ctx, &*self.clock, &mut recorder, 0), ctx);
        why.known = true;
        why.enabled = ev.enabled;
        why.variant = ev.variant.map(str::to_owned);
        why.reason = ev.reason.label().to_owned();
        why.summary = ev.reason.to_string();
        why.kill_switch = !flag.enabled;
        why.bucket_by = Some(flag.hashing.unit.describe());
        why.unit = flag.unit_of(ctx).map(str::to_owned);
        why.bucket = flag.unit_bucket(ctx);
        why.buckets = flag.hashing.buckets();
        why.exclusions = flag
            .exclude
            .iter()
            .map(|c| CohortCheck {
                cohort: c.name.to_owned(),
                matched: recorder.exclusions.iter().find(|(n, _)| *n == c.name).map(|(_, m)| *m),
            })
            .collect();
        why.prerequisites = flag
            .requires
            .iter()
            .map(|r| PrerequisiteCheck {
                flag: r.key.to_owned(),
                enabled: r.on,
                variants: r.variants.iter().map(|v| (*v).to_owned()).collect(),
                met: recorder.prerequisites.iter().find(|(f, _)| *f == r.key).map(|(_, m)| *m),
            })
            .collect();
        why.value = ev.value.cloned();
        why.stages = stage_checks(flag, ctx, &recorder);
        if flag.migration {
            let step = flag.step_of(ev.reason, &*self.clock);
            why.step = Some(step);
            why.step_reason = Some(match ev.reason {
                crate::Reason::Stage { index, name } => format!(
                    "stage {name:?} (#{index}) is the last stage in effect that exposes the \
                     context, and its step is {step}"
                ),
                crate::Reason::Override { enabled: true } => {
                    format!("overridden on locally: the newest stage's step, {step}")
                }
                reason => format!("{reason}: a context no stage exposes is at off"),
            });
        }
        why
    }
}

fn stage_checks(flag: &Flag, ctx: &Context<'_>, recorder: &Recorder) -> Vec<StageCheck> {
    let in_effect = flag.stages.iter().flatten().enumerate().map(|(index, stage)| {
        let verdict = recorder
            .stages
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(StageVerdict::NotReached, |(_, v)| *v);
        let reached = verdict != StageVerdict::NotReached;
        StageCheck {
            index,
            name: stage.name.to_owned(),
            cohorts: stage
                .cohorts
                .iter()
                .map(|c| CohortCheck {
                    cohort: c.name.to_owned(),
                    matched: reached.then(|| c.matches(ctx)),
                })
                .collect(),
            threshold: (stage.threshold != NO_PERCENT).then_some(stage.threshold),
            start_at: (stage.start_at != NO_START).then(|| rfc3339(stage.start_at)),
            own_unit: stage.own.as_deref().map(|own| {
                let unit = own.unit.of(ctx);
                (own.unit.describe(), unit.map(str::to_owned), unit.map(|u| own.bucket(u)))
            }),
            verdict,
        }
    });
    let offset = flag.stages.as_ref().map_or(0, |s| s.len());
    let later = flag.later.iter().enumerate().map(|(i, name)| StageCheck {
        index: offset + i,
        name: (*name).to_owned(),
        cohorts: Vec::new(),
        threshold: None,
        start_at: None,
        own_unit: None,
        verdict: StageVerdict::NotInEffect,
    });
    in_effect.chain(later).collect()
}

fn rfc3339(millis: i64) -> String {
    crate::clock::format_rfc3339_millis(millis)
}
