//! `flagstone explain`: a decision and every step behind it.

use std::path::Path;
use std::process::ExitCode;

use flagstone::{ContextBuf, StageVerdict};

use crate::out::{Style, Table, percent};
use crate::out::{out, outln};
use crate::{load, no_such_flag, print_json, store};

pub(crate) fn run(
    file: &Path,
    flag: &str,
    unit: &ContextBuf,
    at: Option<&str>,
    as_json: bool,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let config = load(file)?;
    if !config.flags.contains_key(flag) {
        return Err(no_such_flag(file, &config, flag));
    }
    let store = store(&config, at)?;
    let ctx = unit.as_context();
    let why = store.snapshot().explain(flag, &ctx);
    if as_json {
        print_json(&serde_json::to_value(&why)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let who: Vec<String> =
        [("tenant", ctx.get_tenant()), ("region", ctx.get_region()), ("user", ctx.get_user())]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .chain(ctx.attrs().map(|(k, v)| format!("{k}={v}")))
            .collect();
    outln!(
        "{} for {} (config version {}{})",
        style.bold(flag),
        if who.is_empty() { "an empty context".to_owned() } else { who.join(" ") },
        why.version,
        at.map(|t| format!(", at {t}")).unwrap_or_default()
    );
    let decision = if why.enabled { style.good("ON") } else { style.bad("OFF") };
    outln!(
        "  decision     {decision}{}",
        why.variant.as_ref().map(|v| format!("  variant {v:?}")).unwrap_or_default()
    );
    outln!("  reason       {}", why.summary);
    if let (Some(step), Some(reason)) = (why.step, &why.step_reason) {
        outln!("  step         {}  ({reason})", style.bold(step.as_str()));
    }
    if let Some(value) = &why.value {
        outln!("  value        {value}");
    }
    if !why.known {
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "  kill switch  {}",
        if why.kill_switch { style.bad("set (enabled: false)") } else { "not set".to_owned() }
    );
    let by = why.bucket_by.as_deref().unwrap_or("user");
    let above = |b: u32| {
        // 100,000 buckets of 0.001%, or Unleash's 100 of 1%.
        if why.buckets == 100 {
            format!("{}% or more", b + 1)
        } else {
            format!("above {}", percent(b))
        }
    };
    match (&why.unit, why.bucket) {
        (Some(u), Some(b)) => outln!(
            "  bucket_by    {by} = {u:?} -> bucket {b} of {} (in any rollout {})",
            why.buckets,
            above(b)
        ),
        _ => outln!("  bucket_by    {by}: the context has no such unit, so it is in no percentage"),
    }
    if !why.prerequisites.is_empty() {
        outln!("  prerequisites");
        for p in &why.prerequisites {
            let required = match (p.enabled, p.variants.as_slice()) {
                (false, _) => format!("{} off", p.flag),
                (true, []) => format!("{} on", p.flag),
                (true, [v]) => format!("{} in variant {v:?}", p.flag),
                (true, vs) => format!("{} in a variant of {vs:?}", p.flag),
            };
            let verdict = match p.met {
                Some(true) => "met".to_owned(),
                Some(false) => style.bad("NOT MET"),
                None => "not checked".to_owned(),
            };
            outln!("    {required:<30} {verdict}");
        }
    }
    if !why.exclusions.is_empty() {
        outln!("  exclusions");
        for c in &why.exclusions {
            let verdict = match c.matched {
                Some(true) => style.bad("in the cohort: excluded"),
                Some(false) => "not in the cohort".to_owned(),
                None => "not checked".to_owned(),
            };
            outln!("    {:<16} {verdict}", c.cohort);
        }
    }
    if !why.stages.is_empty() {
        let current = config.flags.get(flag).and_then(|f| f.stage.clone()).unwrap_or_default();
        outln!("  stages (current: {current})");
        let flag_config = config.flags.get(flag);
        let migration = flag_config.is_some_and(|f| f.migration);
        let mut table = if migration {
            Table::new(&["#", "stage", "step", "audience", "percent", "starts", "verdict"])
        } else {
            Table::new(&["#", "stage", "audience", "percent", "starts", "verdict"])
        };
        for s in &why.stages {
            let audience = if s.verdict == StageVerdict::NotInEffect {
                "-".to_owned()
            } else if s.cohorts.is_empty() {
                "everyone".to_owned()
            } else {
                s.cohorts
                    .iter()
                    .map(|c| match c.matched {
                        Some(true) => format!("{} (in)", c.cohort),
                        Some(false) => format!("{} (out)", c.cohort),
                        None => c.cohort.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let pct = match (s.threshold, why.bucket) {
                (Some(t), Some(b)) => {
                    format!("{} (bucket {b} {} {t})", percent(t), if b < t { "<" } else { ">=" })
                }
                (Some(t), None) => format!("{} (no unit)", percent(t)),
                (None, _) => "-".to_owned(),
            };
            let verdict = match s.verdict {
                StageVerdict::Matched => style.good("MATCHED"),
                StageVerdict::NotInAudience => "not in audience".to_owned(),
                StageVerdict::NoUnit => format!("no {by}: not in the percentage"),
                StageVerdict::OutsidePercent => "outside the percentage".to_owned(),
                StageVerdict::NotStarted => "not started yet".to_owned(),
                StageVerdict::NotReached => "not reached".to_owned(),
                StageVerdict::NotInEffect => "after the current stage".to_owned(),
                _ => format!("{:?}", s.verdict),
            };
            let mut row = vec![s.index.to_string(), s.name.clone()];
            if migration {
                let step = flag_config
                    .and_then(|f| f.stages.get(s.index))
                    .and_then(|stage| stage.step)
                    .map_or("-", |step| step.as_str());
                row.push(step.to_owned());
            }
            row.extend([
                audience,
                pct,
                s.start_at.clone().unwrap_or_else(|| "-".to_owned()),
                verdict,
            ]);
            table.row(row);
        }
        out!("{}", table.render(4, style));
    }
    Ok(ExitCode::SUCCESS)
}
