//! Lint: a valid config that probably does not say what its author meant.
//! Each warning has the path it is about; none is a reason to refuse the
//! config (`flagstone lint` exits 0 unless `--strict`).
//!
//! ```
//! use flagstone::config::Config;
//!
//! let config = Config::from_json(r#"{ "version": 1,
//!     "cohorts": { "staff": { "tenants": ["t-1"] }, "unused": { "tenants": ["t-2"] } },
//!     "flags": { "f": { "enabled": true,
//!         "stages": [ { "name": "internal", "cohorts": ["staff"] }, { "name": "none", "percent": 0 } ],
//!         "stage": "none" } } }"#)?;
//! let warnings = flagstone::lint::lint(&config, 0);
//! let paths: Vec<&str> = warnings.iter().map(|w| w.path()).collect();
//! assert_eq!(paths, ["cohorts.unused", "flags.f.stages[1].percent"]);
//! # Ok::<(), flagstone::Error>(())
//! ```

use std::collections::BTreeSet;

use crate::Problem;
use crate::config::{Config, Flag, Stage};

/// Every warning for `config` at `now` (milliseconds since the Unix epoch,
/// for schedules), cohorts first, then flags by key; [`Config::notes`]
/// included.
pub fn lint(config: &Config, now: i64) -> Vec<Problem> {
    let mut warnings = Vec::new();
    let used: BTreeSet<&str> = config.flags.values().flat_map(Flag::cohort_names).collect();
    for name in config.cohorts.keys() {
        if !used.contains(name.as_str()) {
            warnings.push(Problem::new(
                crate::error::field("cohorts", name),
                "no flag uses this cohort",
            ));
        }
    }
    for (key, flag) in &config.flags {
        let path = crate::error::field("flags", key);
        lint_stages(&path, flag, now, &mut warnings);
    }
    warnings.extend(config.notes());
    warnings.sort_by(|a, b| order(a.path()).cmp(&order(b.path())));
    warnings
}

/// Cohorts before flags, then by path.
fn order(path: &str) -> (bool, &str) {
    (path.starts_with("flags"), path)
}

/// A stage that exposes everyone its cohorts hold, from the start.
fn whole(stage: &Stage) -> bool {
    stage.start_at.is_none() && stage.percent.is_none_or(|p| p >= 100.0)
}

fn lint_stages(path: &str, flag: &Flag, now: i64, warnings: &mut Vec<Problem>) {
    for (i, stage) in flag.stages.iter().enumerate() {
        let at = |field: &str| format!("{path}.stages[{i}]{field}");
        if stage.percent == Some(0.0) {
            warnings.push(Problem::new(
                at(".percent"),
                "0%: the stage exposes no one (a placeholder? give it a percentage or remove it)",
            ));
        }
        if let Some(start) = stage.start_at_millis()
            && start <= now
        {
            warnings.push(Problem::new(
                at(".start_at"),
                format!(
                    "{} has passed: the schedule no longer delays anything",
                    stage.start_at.as_deref().unwrap_or_default()
                ),
            ));
        }
        // In a migration a later stage moves contexts an earlier one
        // exposes to a later step: covering them again is the point.
        if flag.migration {
            continue;
        }
        let earlier = &flag.stages[..i];
        if let Some(everyone) = earlier.iter().position(|s| s.cohorts.is_empty() && whole(s)) {
            warnings.push(Problem::new(
                at(""),
                format!(
                    "after stage {:?}, which exposes everyone: this stage exposes no one new",
                    flag.stages[everyone].name
                ),
            ));
            continue;
        }
        for (j, cohort) in stage.cohorts.iter().enumerate() {
            let covered = earlier.iter().find(|s| whole(s) && s.cohorts.contains(cohort));
            if let Some(by) = covered {
                warnings.push(Problem::new(
                    at(&format!(".cohorts[{j}]")),
                    format!(
                        "cohort {cohort:?} is already exposed in full by the earlier stage {:?}",
                        by.name
                    ),
                ));
            }
        }
    }
}
