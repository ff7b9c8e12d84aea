//! What changes between two configs, flag by flag: the audit log of a
//! release, and the input of a review before a push.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Cohort, Config, Flag};
use crate::context::ContextBuf;
use crate::retained::Retained;
use crate::store::Snapshot;

/// One change between two configs.
///
/// # Example
///
/// ```
/// use flagstone::config::Config;
/// use flagstone::diff::{ChangeKind, diff};
///
/// let stages = r#""stages": [ { "name": "canary", "percent": 5 }, { "name": "all", "percent": 100 } ]"#;
/// let old = Config::from_json(format!(r#"{{ "version": 1, "flags": {{ "f": {{ "enabled": true, {stages}, "stage": "canary" }} }} }}"#))?;
/// let new = Config::from_json(format!(r#"{{ "version": 2, "flags": {{ "f": {{ "enabled": true, {stages}, "stage": "all" }} }} }}"#))?;
/// let changes = diff(&old, &new);
/// assert_eq!(changes.len(), 1);
/// assert_eq!(changes[0].kind, ChangeKind::StageAdvanced { from: "canary".into(), to: "all".into() });
/// assert!(changes[0].reversible);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// The flag it concerns; `None` for a change to a cohort.
    pub flag: Option<String>,
    /// What changed.
    #[serde(flatten)]
    pub kind: ChangeKind,
    /// Whether pushing the old config back restores exactly who was exposed.
    pub reversible: bool,
    /// A loud warning for a release manager, when one is due.
    pub warning: Option<String>,
}

/// What kind of change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A new flag.
    FlagAdded,
    /// A flag is gone: services asking for it get "unknown", off.
    FlagRemoved,
    /// The kill switch flipped: `enabled` is the new value.
    KillSwitch {
        /// The flag's new `enabled`.
        enabled: bool,
    },
    /// The current stage moved forward.
    StageAdvanced {
        /// The old current stage.
        from: String,
        /// The new current stage.
        to: String,
    },
    /// The current stage moved back.
    StageRolledBack {
        /// The old current stage.
        from: String,
        /// The new current stage.
        to: String,
    },
    /// A stage's percentage changed (`None`: no percentage).
    PercentChanged {
        /// The stage's name.
        stage: String,
        /// The old percentage.
        from: Option<f64>,
        /// The new percentage.
        to: Option<f64>,
    },
    /// The plan itself changed: stages added, removed, reordered, or their
    /// cohorts or schedules changed.
    StagesChanged {
        /// What changed, in words.
        detail: String,
    },
    /// The salt changed: every unit is bucketed anew.
    SaltChanged {
        /// The old effective salt.
        from: String,
        /// The new effective salt.
        to: String,
    },
    /// What percentages count changed: every unit is bucketed anew.
    BucketByChanged {
        /// The old `bucket_by`.
        from: String,
        /// The new `bucket_by`.
        to: String,
    },
    /// The excluded cohorts changed.
    ExclusionsChanged {
        /// Cohorts now excluded.
        added: Vec<String>,
        /// Cohorts no longer excluded.
        removed: Vec<String>,
    },
    /// The variants, their weights or their pinned cohorts changed.
    VariantsChanged,
    /// A value changed: of a variant (its name), or of the flag itself.
    ValueChanged {
        /// The variant whose value changed; `None` for the flag's value.
        variant: Option<String>,
    },
    /// The flags this one requires changed.
    PrerequisitesChanged {
        /// Prerequisites added, as `flag`, `flag:variant` (`flag:a|b` for
        /// any of several), or `!flag` (required off).
        added: Vec<String>,
        /// Prerequisites removed.
        removed: Vec<String>,
    },
    /// The flag's guard was added, removed or changed: `detail` says which
    /// fields (`guard added (max_error_ratio 2, holdback 10)`,
    /// `guard: window_secs 60 -> 600`).
    GuardChanged {
        /// What changed, in words.
        detail: String,
    },
    /// What the rollout controller is told about the flag changed (its
    /// `rollout` hold, windows, pause or failed stage, or a stage's `hold`,
    /// `windows` or `manual`); `entered_at`, which the controller writes
    /// with every step, is left out.
    RolloutChanged {
        /// What changed, in words.
        detail: String,
    },
    /// A data migration's stage changed its contexts' step
    /// ([`crate::migration`]): it entered effect (`from` is `off`), left
    /// it (`to` is `None`: its contexts fall to an earlier stage's step,
    /// or to `off`), or its step changed. Entering `complete` is not
    /// reversible for data: the old store gets no more of those contexts'
    /// writes.
    MigrationStepChanged {
        /// The stage.
        stage: String,
        /// Its contexts' step before.
        from: crate::MigrationStep,
        /// Their step after; `None` when the stage leaves effect.
        to: Option<crate::MigrationStep>,
    },
    /// A new cohort.
    CohortAdded {
        /// Its name.
        cohort: String,
    },
    /// A cohort is gone.
    CohortRemoved {
        /// Its name.
        cohort: String,
    },
    /// Who is in a cohort changed.
    CohortChanged {
        /// Its name.
        cohort: String,
        /// Values now listed, as `field:value` (`tenants:t-9`, `attributes.plan:pro`).
        added: Vec<String>,
        /// Values no longer listed.
        removed: Vec<String>,
    },
}

impl std::fmt::Display for ChangeKind {
    /// A line for an audit log: `stage advanced canary -> all`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeKind::FlagAdded => f.write_str("flag added"),
            ChangeKind::FlagRemoved => f.write_str("flag removed"),
            ChangeKind::KillSwitch { enabled: true } => {
                f.write_str("kill switch released (enabled: true)")
            }
            ChangeKind::KillSwitch { enabled: false } => {
                f.write_str("kill switch set (enabled: false)")
            }
            ChangeKind::StageAdvanced { from, to } => write!(f, "stage advanced {from} -> {to}"),
            ChangeKind::StageRolledBack { from, to } => {
                write!(f, "stage rolled back {from} -> {to}")
            }
            ChangeKind::PercentChanged { stage, from, to } => {
                let p = |p: &Option<f64>| p.map_or("none".to_owned(), |p| format!("{p}%"));
                write!(f, "stage {stage}: percent {} -> {}", p(from), p(to))
            }
            ChangeKind::StagesChanged { detail } => f.write_str(detail),
            ChangeKind::SaltChanged { from, to } => write!(f, "salt {from:?} -> {to:?}"),
            ChangeKind::BucketByChanged { from, to } => write!(f, "bucket_by {from} -> {to}"),
            ChangeKind::ExclusionsChanged { added, removed } => {
                write!(f, "exclusions +[{}] -[{}]", added.join(", "), removed.join(", "))
            }
            ChangeKind::VariantsChanged => f.write_str("variants changed"),
            ChangeKind::ValueChanged { variant: Some(v) } => {
                write!(f, "value of variant {v} changed")
            }
            ChangeKind::ValueChanged { variant: None } => f.write_str("value changed"),
            ChangeKind::PrerequisitesChanged { added, removed } => {
                write!(f, "prerequisites +[{}] -[{}]", added.join(", "), removed.join(", "))
            }
            ChangeKind::GuardChanged { detail } | ChangeKind::RolloutChanged { detail } => {
                f.write_str(detail)
            }
            ChangeKind::MigrationStepChanged { stage, from, to: Some(to) } => {
                write!(f, "stage {stage}: migration step {from} -> {to}")
            }
            ChangeKind::MigrationStepChanged { stage, from, to: None } => {
                write!(
                    f,
                    "stage {stage}: leaves migration step {from} (back to an earlier stage's)"
                )
            }
            ChangeKind::CohortAdded { cohort } => write!(f, "cohort {cohort} added"),
            ChangeKind::CohortRemoved { cohort } => write!(f, "cohort {cohort} removed"),
            ChangeKind::CohortChanged { cohort, added, removed } => {
                write!(f, "cohort {cohort}: +[{}] -[{}]", added.join(", "), removed.join(", "))
            }
        }
    }
}

impl std::fmt::Display for Change {
    /// `flag: what changed`, or what changed for a cohort.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.flag {
            Some(flag) => write!(f, "{flag}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Every change from `old` to `new`: cohorts first, then flags by key.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    diff_parts((&old.cohorts, &old.flags), (&new.cohorts, &new.flags))
}

/// [`diff`] of two configs as a store keeps them: parts they share are the
/// same without looking inside.
pub(crate) fn diff_retained(old: &Retained, new: &Retained) -> Vec<Change> {
    diff_parts((&old.cohorts, &old.flags), (&new.cohorts, &new.flags))
}

/// A cohort or flag, held directly or shared.
trait Part<T>: Borrow<T> {
    fn same(&self, other: &Self) -> bool;
}

impl<T: PartialEq> Part<T> for T {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

impl<T: PartialEq> Part<T> for Arc<T> {
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || **self == **other
    }
}

type Parts<'a, C, F> = (&'a BTreeMap<String, C>, &'a BTreeMap<String, F>);

fn diff_parts<C: Part<Cohort>, F: Part<Flag>>(
    (old_cohorts, old_flags): Parts<'_, C, F>,
    (new_cohorts, new_flags): Parts<'_, C, F>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let cohort_change = |kind| Change { flag: None, kind, reversible: true, warning: None };
    for (name, cohort) in new_cohorts {
        match old_cohorts.get(name) {
            None => changes.push(cohort_change(ChangeKind::CohortAdded { cohort: name.clone() })),
            Some(before) if !before.same(cohort) => {
                let (b, a) = (members(before.borrow()), members(cohort.borrow()));
                let removed: Vec<String> = b.difference(&a).cloned().collect();
                let excluding: Vec<&str> = new_flags
                    .iter()
                    .filter(|(_, f)| Borrow::<Flag>::borrow(*f).exclude.contains(name))
                    .map(|(k, _)| k.as_str())
                    .collect();
                let mut change = cohort_change(ChangeKind::CohortChanged {
                    cohort: name.clone(),
                    added: a.difference(&b).cloned().collect(),
                    removed: removed.clone(),
                });
                if !removed.is_empty() && !excluding.is_empty() {
                    change.warning = Some(format!(
                        "cohort {name:?} shrinks by {} ({}), and {} {} {} it: \
                         those units are newly exposed wherever a stage reaches them",
                        removed.len(),
                        removed.join(", "),
                        if excluding.len() == 1 { "flag" } else { "flags" },
                        excluding.join(", "),
                        if excluding.len() == 1 { "excludes" } else { "exclude" }
                    ));
                }
                changes.push(change);
            }
            Some(_) => {}
        }
    }
    for name in old_cohorts.keys().filter(|n| !new_cohorts.contains_key(*n)) {
        changes.push(cohort_change(ChangeKind::CohortRemoved { cohort: name.clone() }));
    }
    for (key, flag) in new_flags {
        match old_flags.get(key) {
            None => changes.push(Change {
                flag: Some(key.clone()),
                kind: ChangeKind::FlagAdded,
                reversible: true,
                warning: None,
            }),
            Some(before) if before.same(flag) => {}
            Some(before) => flag_changes(key, before.borrow(), flag.borrow(), &mut changes),
        }
    }
    for key in old_flags.keys().filter(|k| !new_flags.contains_key(*k)) {
        changes.push(Change {
            flag: Some(key.clone()),
            kind: ChangeKind::FlagRemoved,
            reversible: false,
            warning: Some(format!(
                "flag {key:?} is removed: services still asking for it get \"unknown\" (off), \
                 and its handles stop resolving"
            )),
        });
    }
    changes
}

/// Every flag a push may change the answer of: the flags [`diff`] names,
/// and the flags whose stages or exclusions use a cohort that changed (a
/// cohort's members are part of every flag that names it).
pub fn affected_flags(old: &Config, new: &Config) -> BTreeSet<String> {
    let changes = diff(old, new);
    let mut affected: BTreeSet<String> = changes.iter().filter_map(|c| c.flag.clone()).collect();
    let cohorts: BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::CohortChanged { cohort, .. }
            | ChangeKind::CohortAdded { cohort }
            | ChangeKind::CohortRemoved { cohort } => Some(cohort.as_str()),
            _ => None,
        })
        .collect();
    for config in [old, new] {
        for (key, flag) in &config.flags {
            let uses = flag.exclude.iter().chain(flag.stages.iter().flat_map(|s| &s.cohorts));
            if uses.into_iter().any(|c| cohorts.contains(c.as_str())) {
                affected.insert(key.clone());
            }
        }
    }
    // A flag's answer follows its prerequisites': their dependents too, all
    // the way down.
    loop {
        let before = affected.len();
        for config in [old, new] {
            for (key, flag) in &config.flags {
                if flag.requires.iter().any(|r| affected.contains(&r.flag)) {
                    affected.insert(key.clone());
                }
            }
        }
        if affected.len() == before {
            break;
        }
    }
    affected
}

/// Who a push changes the answer for, for one flag, counted over a
/// population ([`blast_radius`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Radius {
    /// Contexts on before and off after.
    pub on_to_off: usize,
    /// Contexts off before and on after.
    pub off_to_on: usize,
    /// Contexts on before.
    pub exposed_before: usize,
    /// Contexts on after.
    pub exposed_after: usize,
    /// Contexts on before and after that get another variant.
    pub variant_changed: usize,
    /// Contexts on before and after that get another value.
    pub value_changed: usize,
    /// Flips by the context's region (`(none)` without one).
    pub by_region: BTreeMap<String, Flips>,
    /// Flips among each cohort's members (in the cohort before or after).
    pub by_cohort: BTreeMap<String, Flips>,
}

/// Contexts turned off and turned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Flips {
    /// Contexts on before and off after.
    pub on_to_off: usize,
    /// Contexts off before and on after.
    pub off_to_on: usize,
}

impl Radius {
    /// Whether any context's answer changes.
    pub fn changes_anyone(&self) -> bool {
        self.on_to_off + self.off_to_on + self.variant_changed + self.value_changed > 0
    }
}

/// The blast radius of serving `after` instead of `before`, counted by
/// evaluating every flag of either snapshot for every context of
/// `population`: whatever changed (stages, cohort members, exclusions,
/// variants, salts, schedules), a context whose answer changes is counted.
/// One entry per flag of either snapshot.
///
/// # Example
///
/// ```
/// use flagstone::{ContextBuf, FlagStore};
///
/// let doc = |tenants: &str| format!(r#"{{ "version": 1,
///     "cohorts": {{ "beta": {{ "tenants": [{tenants}] }} }},
///     "flags": {{ "f": {{ "enabled": true, "bucket_by": "tenant",
///         "stages": [ {{ "name": "beta", "cohorts": ["beta"] }} ], "stage": "beta" }} }} }}"#);
/// let before = FlagStore::from_json(doc(r#""t-1""#))?.snapshot();
/// let after = FlagStore::from_json(doc(r#""t-1", "t-2", "t-3""#))?.snapshot();
/// let population: Vec<ContextBuf> =
///     (1..=5).map(|i| ContextBuf::new().tenant(format!("t-{i}"))).collect();
/// let radius = flagstone::diff::blast_radius(&before, &after, &population);
/// assert_eq!((radius["f"].off_to_on, radius["f"].exposed_after), (2, 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn blast_radius(
    before: &Snapshot,
    after: &Snapshot,
    population: &[ContextBuf],
) -> BTreeMap<String, Radius> {
    let flags: BTreeSet<&str> = before.flag_keys().chain(after.flag_keys()).collect();
    let cohorts: BTreeSet<&str> = before.cohort_names().chain(after.cohort_names()).collect();
    let mut radius: BTreeMap<String, Radius> =
        flags.iter().map(|k| ((*k).to_owned(), Radius::default())).collect();
    for unit in population {
        let ctx = unit.as_context();
        let member: Vec<&str> = cohorts
            .iter()
            .copied()
            .filter(|c| {
                before.in_cohort(c, &ctx) == Some(true) || after.in_cohort(c, &ctx) == Some(true)
            })
            .collect();
        for key in &flags {
            let (b, a) = (before.evaluate(key, &ctx), after.evaluate(key, &ctx));
            let Some(r) = radius.get_mut(*key) else { continue };
            r.exposed_before += usize::from(b.enabled);
            r.exposed_after += usize::from(a.enabled);
            if b.enabled && a.enabled && b.variant != a.variant {
                r.variant_changed += 1;
            }
            if b.enabled && a.enabled && b.value != a.value {
                r.value_changed += 1;
            }
            if a.enabled == b.enabled {
                continue;
            }
            let bump = |f: &mut Flips| {
                if b.enabled { f.on_to_off += 1 } else { f.off_to_on += 1 }
            };
            if b.enabled {
                r.on_to_off += 1;
            } else {
                r.off_to_on += 1;
            }
            let region = ctx.get_region().unwrap_or("(none)");
            bump(r.by_region.entry(region.to_owned()).or_default());
            for cohort in &member {
                bump(r.by_cohort.entry((*cohort).to_owned()).or_default());
            }
        }
    }
    radius
}

fn members(cohort: &Cohort) -> BTreeSet<String> {
    let lists =
        [("tenants", &cohort.tenants), ("users", &cohort.users), ("regions", &cohort.regions)];
    let mut out: BTreeSet<String> = lists
        .iter()
        .flat_map(|(field, list)| list.iter().flatten().map(move |v| format!("{field}:{v}")))
        .collect();
    for (attr, values) in cohort.attributes.iter().flatten() {
        out.extend(values.iter().map(|v| format!("attributes.{attr}:{v}")));
    }
    for rule in cohort.rules.iter().flatten() {
        out.insert(format!("rules:{}", serde_json::to_string(rule).unwrap_or_default()));
    }
    out
}

fn flag_changes(key: &str, old: &Flag, new: &Flag, changes: &mut Vec<Change>) {
    let mut push = |kind, reversible, warning: Option<String>| {
        changes.push(Change { flag: Some(key.to_owned()), kind, reversible, warning });
    };
    if old.enabled != new.enabled {
        push(ChangeKind::KillSwitch { enabled: new.enabled }, true, None);
    }
    let (old_salt, new_salt) = (old.salt_or(key), new.salt_or(key));
    if old_salt != new_salt {
        push(
            ChangeKind::SaltChanged { from: old_salt.to_owned(), to: new_salt.to_owned() },
            false,
            Some(format!(
                "the salt of {key:?} changes: every unit is bucketed anew, so percentages \
                 expose different units; going back reshuffles them again"
            )),
        );
    }
    let by = |f: &Flag| {
        let by = f.bucket_by.as_ref().map_or_else(|| "user".to_owned(), ToString::to_string);
        match f.bucketing {
            crate::config::Bucketing::Unleash => format!("{by} (unleash bucketing)"),
            _ => by,
        }
    };
    if by(old) != by(new) {
        push(
            ChangeKind::BucketByChanged { from: by(old), to: by(new) },
            false,
            Some(format!(
                "{key:?} now buckets by {:?} instead of {:?}: every unit is bucketed anew",
                by(new),
                by(old)
            )),
        );
    }
    if old.exclude != new.exclude {
        let (o, n): (BTreeSet<_>, BTreeSet<_>) =
            (old.exclude.iter().collect(), new.exclude.iter().collect());
        let removed: Vec<String> = o.difference(&n).map(|s| (*s).clone()).collect();
        let warning = (!removed.is_empty()).then(|| {
            format!(
                "{key:?} no longer excludes {}: its members are newly exposed wherever a stage \
                 reaches them",
                removed.join(", ")
            )
        });
        push(
            ChangeKind::ExclusionsChanged {
                added: n.difference(&o).map(|s| (*s).clone()).collect(),
                removed,
            },
            true,
            warning,
        );
    }
    let names = |f: &Flag| f.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(old) == names(new) {
        for (before, after) in old.stages.iter().zip(&new.stages) {
            if before.percent != after.percent {
                push(
                    ChangeKind::PercentChanged {
                        stage: after.name.clone(),
                        from: before.percent,
                        to: after.percent,
                    },
                    true,
                    None,
                );
            }
            if before.cohorts != after.cohorts || before.start_at != after.start_at {
                push(
                    ChangeKind::StagesChanged {
                        detail: format!("stage {:?}: cohorts or start_at changed", after.name),
                    },
                    true,
                    None,
                );
            }
            if before.salt != after.salt || before.bucket_by != after.bucket_by {
                push(
                    ChangeKind::StagesChanged {
                        detail: format!(
                            "stage {:?}: its own salt or bucket_by changed",
                            after.name
                        ),
                    },
                    false,
                    Some(format!(
                        "stage {:?} of {key:?} buckets its units anew: its percentage exposes \
                         different units; going back reshuffles them again",
                        after.name
                    )),
                );
            }
            if before.variants != after.variants {
                push(
                    ChangeKind::StagesChanged {
                        detail: format!("stage {:?}: its own variants changed", after.name),
                    },
                    true,
                    None,
                );
            }
        }
    } else {
        push(
            ChangeKind::StagesChanged {
                detail: format!(
                    "stages [{}] -> [{}]",
                    names(old).join(", "),
                    names(new).join(", ")
                ),
            },
            true,
            None,
        );
    }
    match (old.current_stage(), new.current_stage(), &old.stage, &new.stage) {
        (Some(o), Some(n), Some(from), Some(to)) if from != to || o != n => {
            let (from, to) = (from.clone(), to.clone());
            if n > o {
                push(ChangeKind::StageAdvanced { from, to }, true, None);
            } else {
                push(ChangeKind::StageRolledBack { from, to }, true, None);
            }
        }
        _ => {}
    }
    if let Some(warning) = shrinking_plan(key, new) {
        // Attach to the flag's last change, or report it on its own.
        if let Some(last) = changes.last_mut().filter(|c| c.flag.as_deref() == Some(key)) {
            last.reversible = false;
            last.warning.get_or_insert(warning);
        }
    }
    let shape = |f: &Flag| {
        f.variants.iter().map(|v| (v.name.clone(), v.weight, v.cohorts.clone())).collect::<Vec<_>>()
    };
    let change =
        |kind| Change { flag: Some(key.to_owned()), kind, reversible: true, warning: None };
    if shape(old) != shape(new) {
        let mut variants = change(ChangeKind::VariantsChanged);
        let moved = reassigned(&old.variants, &new.variants);
        if let Some(moved) = moved.filter(|m| *m > 0.0) {
            variants.warning = Some(format!(
                "{key:?}: about {:.1}% of the units given a variant get another one (weights \
                 are cumulative in order: a change moves every unit whose point changes range)",
                moved * 100.0
            ));
        }
        changes.push(variants);
    }
    for variant in &new.variants {
        let before = old.variants.iter().find(|v| v.name == variant.name);
        if before.is_some_and(|b| b.value != variant.value) {
            changes.push(change(ChangeKind::ValueChanged { variant: Some(variant.name.clone()) }));
        }
    }
    if old.value != new.value {
        changes.push(change(ChangeKind::ValueChanged { variant: None }));
    }
    if old.requires != new.requires {
        let name = |r: &crate::config::Requirement| {
            let variants: Vec<&str> = r.variant_names().collect();
            match (r.enabled, variants.as_slice()) {
                (false, _) => format!("!{}", r.flag),
                (true, []) => r.flag.clone(),
                (true, vs) => format!("{}:{}", r.flag, vs.join("|")),
            }
        };
        let (o, n): (BTreeSet<String>, BTreeSet<String>) =
            (old.requires.iter().map(name).collect(), new.requires.iter().map(name).collect());
        changes.push(change(ChangeKind::PrerequisitesChanged {
            added: n.difference(&o).cloned().collect(),
            removed: o.difference(&n).cloned().collect(),
        }));
    }
    if old.guard != new.guard {
        let detail = match (&old.guard, &new.guard) {
            (None, Some(g)) => format!("guard added ({})", fields(&serde_json::to_value(g))),
            (Some(_), None) => "guard removed".to_owned(),
            (Some(o), Some(n)) => {
                format!(
                    "guard: {}",
                    changed_fields(&serde_json::to_value(o), &serde_json::to_value(n))
                )
            }
            (None, None) => String::new(),
        };
        changes.push(change(ChangeKind::GuardChanged { detail }));
    }
    let schedule = |f: &Flag| {
        let mut rollout = f.rollout.as_deref().cloned().unwrap_or_default();
        rollout.entered_at = None;
        let stages: Vec<_> = f
            .stages
            .iter()
            .map(|s| (s.name.clone(), s.hold.clone(), s.windows.clone(), s.manual))
            .collect();
        (f.rollout.is_some(), rollout, stages)
    };
    let (before, after) = (schedule(old), schedule(new));
    if before != after {
        let mut parts = Vec::new();
        match (before.0, after.0) {
            (false, true) => parts.push("rollout added".to_owned()),
            (true, false) => parts.push("rollout removed".to_owned()),
            _ => {}
        }
        let (o, n) = (serde_json::to_value(&before.1), serde_json::to_value(&after.1));
        if before.0 && after.0 && o.as_ref().ok() != n.as_ref().ok() {
            parts.push(format!("rollout: {}", changed_fields(&o, &n)));
        }
        for (name, hold, windows, manual) in &after.2 {
            let was = before.2.iter().find(|s| &s.0 == name);
            let described = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
            if let Some((_, h, w, m)) = was {
                if h != hold {
                    parts.push(format!(
                        "stage {name}: hold {} -> {}",
                        described(h),
                        described(hold)
                    ));
                }
                if w != windows {
                    parts.push(format!("stage {name}: windows changed"));
                }
                if m != manual {
                    parts.push(format!("stage {name}: manual {m} -> {manual}"));
                }
            }
        }
        if !parts.is_empty() {
            changes.push(change(ChangeKind::RolloutChanged { detail: parts.join("; ") }));
        }
    }
    migration_changes(key, old, new, changes);
}

/// A migration flag's stages in effect, with their steps (none when the
/// kill switch is set: every context is at `off`).
fn steps_in_effect(flag: &Flag) -> Vec<(&str, crate::MigrationStep)> {
    if !flag.migration || !flag.enabled {
        return Vec::new();
    }
    let current = flag.current_stage().map_or(0, |c| c + 1);
    flag.stages
        .iter()
        .take(current)
        .map(|s| (s.name.as_str(), s.step.unwrap_or_default()))
        .collect()
}

/// Each stage whose contexts change step, classified for data.
fn migration_changes(key: &str, old: &Flag, new: &Flag, changes: &mut Vec<Change>) {
    use crate::MigrationStep;
    let (before, after) = (steps_in_effect(old), steps_in_effect(new));
    let step_before =
        |name: &str| before.iter().find(|(n, _)| *n == name).map_or(MigrationStep::Off, |s| s.1);
    let mut push = |stage: &str, from: MigrationStep, to: Option<MigrationStep>| {
        let lands = to.unwrap_or(MigrationStep::Off);
        let (reversible, warning) = if lands == MigrationStep::Complete {
            (
                false,
                Some(format!(
                    "{key:?}: stage {stage:?} moves its contexts to complete: the old store gets \
                     none of their writes from now on, so stepping back later reads an old store \
                     that missed writes (irreversible for data)"
                )),
            )
        } else if from == MigrationStep::Complete {
            (
                false,
                Some(format!(
                    "{key:?}: stage {stage:?} steps its contexts back out of complete: the old \
                     store missed every write they made at complete; copy those rows back \
                     before the old store is read"
                )),
            )
        } else if to.is_none() && from.writes_new() && !after.iter().any(|(_, s)| s.writes_new()) {
            (
                true,
                Some(format!(
                    "{key:?}: no stage writes the new store any more: it misses writes from now \
                     on, so copy them before moving forward again"
                )),
            )
        } else {
            (true, None)
        };
        changes.push(Change {
            flag: Some(key.to_owned()),
            kind: ChangeKind::MigrationStepChanged { stage: stage.to_owned(), from, to },
            reversible,
            warning,
        });
    };
    for &(name, step) in &after {
        let was = step_before(name);
        if was != step {
            push(name, was, Some(step));
        }
    }
    for &(name, step) in &before {
        if !after.iter().any(|(n, _)| *n == name) {
            push(name, step, None);
        }
    }
}

/// The share of units whose variant changes when weights go from `old` to
/// `new`: a unit's point in `[0, 1)` keeps its variant only where the
/// variant's range before and after overlap. `None` without variants on
/// either side.
pub fn reassigned(old: &[crate::config::Variant], new: &[crate::config::Variant]) -> Option<f64> {
    let ranges = |vs: &[crate::config::Variant]| {
        let total: u64 = vs.iter().map(|v| u64::from(v.weight)).sum();
        let mut start = 0u64;
        vs.iter()
            .map(|v| {
                let r = (v.name.clone(), start as f64 / total.max(1) as f64);
                start += u64::from(v.weight);
                (r.0, r.1, start as f64 / total.max(1) as f64)
            })
            .collect::<Vec<_>>()
    };
    if old.is_empty() || new.is_empty() {
        return None;
    }
    let (o, n) = (ranges(old), ranges(new));
    let kept: f64 = o
        .iter()
        .filter_map(|(name, a, b)| {
            let (_, c, d) = n.iter().find(|(m, ..)| m == name)?;
            Some((b.min(*d) - a.max(*c)).max(0.0))
        })
        .sum();
    Some((1.0 - kept).clamp(0.0, 1.0))
}

/// `a 1, b 2` for an object's fields.
fn fields(value: &Result<serde_json::Value, serde_json::Error>) -> String {
    let Ok(serde_json::Value::Object(map)) = value else { return String::new() };
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// `a 1 -> 2, b none -> 3` for the fields that differ between two objects.
fn changed_fields(
    old: &Result<serde_json::Value, serde_json::Error>,
    new: &Result<serde_json::Value, serde_json::Error>,
) -> String {
    let empty = serde_json::Map::new();
    let object = |v: &Result<serde_json::Value, serde_json::Error>| match v {
        Ok(serde_json::Value::Object(map)) => map.clone(),
        _ => empty.clone(),
    };
    let (o, n) = (object(old), object(new));
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let show = |v: Option<&serde_json::Value>| v.map_or("none".to_owned(), ToString::to_string);
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| format!("{k} {} -> {}", show(o.get(k)), show(n.get(k))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bare percentage stage below an earlier bare percentage stage: stepping
/// forward onto it exposes no one new, and the plan no longer says what it
/// seems to say.
fn shrinking_plan(key: &str, flag: &Flag) -> Option<String> {
    let mut highest: Option<(f64, &str)> = None;
    for stage in &flag.stages {
        let bare = stage.cohorts.is_empty() && stage.start_at.is_none();
        if let (true, Some(p)) = (bare, stage.percent) {
            if let Some((h, name)) = highest
                && p < h
            {
                return Some(format!(
                    "{key:?}: stage {:?} ({p}%) is below the earlier stage {name:?} ({h}%)",
                    stage.name
                ));
            }
            if highest.is_none_or(|(h, _)| p > h) {
                highest = Some((p, &stage.name));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u64, flags: &str, cohorts: &str) -> Config {
        Config::from_json(format!(
            r#"{{"version":{version},"cohorts":{{{cohorts}}},"flags":{{{flags}}}}}"#
        ))
        .expect("valid")
    }

    const STAGES: &str = r#""stages":[{"name":"a","percent":5},{"name":"b","percent":50}]"#;

    #[test]
    fn identical_configs_have_no_changes() {
        let c = config(1, &format!(r#""f":{{"enabled":true,{STAGES},"stage":"a"}}"#), "");
        assert!(diff(&c, &c).is_empty());
    }

    #[test]
    fn stage_moves_kill_switches_and_salts_are_named() {
        let old = config(
            1,
            &format!(r#""f":{{"enabled":true,{STAGES},"stage":"b"}},"g":{{"enabled":true}}"#),
            "",
        );
        let new = config(
            2,
            &format!(
                r#""f":{{"enabled":false,"salt":"x",{STAGES},"stage":"a"}},"h":{{"enabled":true}}"#
            ),
            "",
        );
        let kinds: Vec<_> =
            diff(&old, &new).into_iter().map(|c| (c.flag, c.kind, c.reversible)).collect();
        assert_eq!(
            kinds,
            [
                (Some("f".into()), ChangeKind::KillSwitch { enabled: false }, true),
                (
                    Some("f".into()),
                    ChangeKind::SaltChanged { from: "f".into(), to: "x".into() },
                    false
                ),
                (
                    Some("f".into()),
                    ChangeKind::StageRolledBack { from: "b".into(), to: "a".into() },
                    true
                ),
                (Some("h".into()), ChangeKind::FlagAdded, true),
                (Some("g".into()), ChangeKind::FlagRemoved, false),
            ]
        );
    }

    #[test]
    fn cohort_membership_changes_list_values() {
        let old = config(1, "", r#""beta":{"tenants":["t-1","t-2"]}"#);
        let new = config(2, "", r#""beta":{"tenants":["t-2","t-3"]}"#);
        assert_eq!(
            diff(&old, &new)[0].kind,
            ChangeKind::CohortChanged {
                cohort: "beta".into(),
                added: vec!["tenants:t-3".into()],
                removed: vec!["tenants:t-1".into()]
            }
        );
    }

    #[test]
    fn lowering_a_percent_below_an_earlier_stage_is_flagged() {
        let old = config(1, &format!(r#""f":{{"enabled":true,{STAGES},"stage":"a"}}"#), "");
        let lowered = STAGES.replace(r#""percent":50"#, r#""percent":2"#);
        let new = config(2, &format!(r#""f":{{"enabled":true,{lowered},"stage":"a"}}"#), "");
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].reversible);
        assert!(
            changes[0].warning.as_deref().is_some_and(|w| w.contains("below the earlier stage"))
        );
    }
}
