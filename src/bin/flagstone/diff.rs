//! `flagstone diff`: every change between two configs, and its blast radius.

use std::path::Path;
use std::process::ExitCode;

use flagstone::config::{Cohort, Config, Flag};
use serde_json::json;

use crate::out::{Format, Style, Table};
use crate::out::{out, outln};
use crate::{load, population, print_json, store};

/// What share of units a flag exposes, estimated from the config alone.
struct Estimate {
    /// Percent of all units, from stages without cohorts.
    share: f64,
    /// Audiences named by cohort stages, described.
    named: Vec<String>,
}

pub(crate) fn describe_cohort(name: &str, cohort: Option<&Cohort>) -> String {
    let described = describe_lists(name, cohort);
    let rules = cohort.and_then(|c| c.rules.as_ref()).map_or(0, Vec::len);
    match rules {
        0 => described,
        1 => described.replacen(')', ", 1 rule)", 1),
        n => described.replacen(')', &format!(", {n} rules)"), 1),
    }
}

fn describe_lists(name: &str, cohort: Option<&Cohort>) -> String {
    let Some(c) = cohort else { return name.to_owned() };
    let mut parts = Vec::new();
    for (field, list) in [("tenant", &c.tenants), ("user", &c.users), ("region", &c.regions)] {
        if let Some(list) = list {
            if field == "region" {
                parts.push(format!("regions {}", list.join("/")));
            } else {
                parts.push(format!(
                    "{} {field}{}",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                ));
            }
        }
    }
    for (k, v) in c.attributes.iter().flatten() {
        parts.push(format!("{k}={}", v.join("/")));
    }
    format!("{name} ({})", parts.join(", "))
}

fn estimate(config: &Config, key: &str) -> Estimate {
    let mut e = Estimate { share: 0.0, named: Vec::new() };
    let Some(flag) = config.flags.get(key).filter(|f| f.enabled) else { return e };
    let Some(current) = flag.current_stage() else {
        e.share = 100.0;
        return e;
    };
    for stage in &flag.stages[..=current] {
        if stage.cohorts.is_empty() {
            e.share = e.share.max(stage.percent.unwrap_or(100.0));
        } else {
            let audience: Vec<String> =
                stage.cohorts.iter().map(|c| describe_cohort(c, config.cohorts.get(c))).collect();
            let share = stage.percent.map(|p| format!("{p}% of ")).unwrap_or_default();
            e.named.push(format!("{share}{}", audience.join(" or ")));
        }
    }
    e
}

fn reshuffles(old: &Flag, new: &Flag, key: &str) -> bool {
    old.salt_or(key) != new.salt_or(key) || old.bucket_by != new.bucket_by
}

pub(crate) fn run(
    old_path: &Path,
    new_path: &Path,
    population: Option<&Path>,
    at: Option<&str>,
    as_json: bool,
    format: Format,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let markdown = format == Format::Markdown;
    let style = if markdown { Style::plain() } else { style };
    let (old, new) = (load(old_path)?, load(new_path)?);
    // Services apply only a higher version; the same version again is
    // fine only when it says the same (re-serialized bytes).
    let refused = new.version < old.version
        || (new.version == old.version && (new.flags != old.flags || new.cohorts != old.cohorts));
    let changes = flagstone::diff::diff(&old, &new);
    // The flags a change names, and those that use a changed cohort.
    let affected = flagstone::diff::affected_flags(&old, &new);
    let changed_flags: Vec<&String> = affected.iter().collect();

    // The blast radius: exact over a population, or estimated from the configs.
    let mut radius =
        Table::new(&["flag", "on -> off", "off -> on", "exposure before", "exposure after"]);
    let mut radius_json = serde_json::Map::new();
    // What the population says about the configs themselves.
    let mut population_warnings: Vec<String> = Vec::new();
    match population {
        Some(path) => {
            let units = population::load(path)?;
            for (key, flag) in &new.flags {
                let hashes = flag.stages.iter().any(|s| s.percent.is_some_and(|p| p < 100.0));
                let names: Vec<String> = match &flag.bucket_by {
                    Some(by) => by.names().to_vec(),
                    None => vec!["user".to_owned()],
                };
                let carried = units.iter().any(|u| {
                    let ctx = u.as_context();
                    names.iter().any(|n| match n.as_str() {
                        "tenant" => ctx.get_tenant().is_some(),
                        "user" => ctx.get_user().is_some(),
                        "region" => ctx.get_region().is_some(),
                        other => ctx.get_attr(other).is_some(),
                    })
                });
                if hashes && !units.is_empty() && !carried {
                    population_warnings.push(format!(
                        "{key:?} buckets by {}, which no unit of {} carries: its percentages \
                         expose none of them (is bucket_by the attribute the services send?)",
                        names.join(" or "),
                        path.display()
                    ));
                }
            }
            let (before, after) = (store(&old, at)?.snapshot(), store(&new, at)?.snapshot());
            // Every flag, for every unit: whatever changed, a unit whose
            // answer changes is counted.
            let counted = flagstone::diff::blast_radius(&before, &after, &units);
            for (key, flips) in &counted {
                if !flips.changes_anyone() && !affected.contains(key) {
                    continue;
                }
                let share =
                    |n: usize| format!("{n} ({:.1}%)", 100.0 * n as f64 / units.len() as f64);
                radius.row(vec![
                    key.clone(),
                    share(flips.on_to_off),
                    share(flips.off_to_on),
                    share(flips.exposed_before),
                    share(flips.exposed_after),
                ]);
                for (region, f) in &flips.by_region {
                    radius.row(vec![
                        format!("  region {region}"),
                        f.on_to_off.to_string(),
                        f.off_to_on.to_string(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for (cohort, f) in &flips.by_cohort {
                    radius.row(vec![
                        format!("  cohort {cohort}"),
                        f.on_to_off.to_string(),
                        f.off_to_on.to_string(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for (what, n) in [
                    ("variant changed", flips.variant_changed),
                    ("value changed", flips.value_changed),
                ] {
                    if n > 0 {
                        radius.row(vec![
                            format!("  {what}"),
                            String::new(),
                            String::new(),
                            share(n),
                            String::new(),
                        ]);
                    }
                }
                let n = units.len().max(1) as f64;
                let counted = |c: usize| json!({ "units": c, "share": c as f64 / n });
                radius_json.insert(
                    key.clone(),
                    json!({
                        "estimated": false,
                        "units": units.len(),
                        "on_to_off": counted(flips.on_to_off),
                        "off_to_on": counted(flips.off_to_on),
                        "exposure": {
                            "before": { "units": flips.exposed_before, "share": flips.exposed_before as f64 / n, "described": null },
                            "after": { "units": flips.exposed_after, "share": flips.exposed_after as f64 / n, "described": null },
                        },
                        "named_off": [], "named_on": [],
                        "variant_changed": counted(flips.variant_changed),
                        "value_changed": counted(flips.value_changed),
                        "by_region": flips.by_region,
                        "by_cohort": flips.by_cohort,
                    }),
                );
            }
        }
        None => {
            for key in &changed_flags {
                let (b, a) = (estimate(&old, key), estimate(&new, key));
                let (p, q) = (b.share / 100.0, a.share / 100.0);
                let reshuffled = match (old.flags.get(*key), new.flags.get(*key)) {
                    (Some(o), Some(n)) => reshuffles(o, n, key),
                    _ => false,
                };
                // Same buckets: a ramp only adds or removes units. New buckets:
                // the two audiences are independent draws.
                let (off, on) = if reshuffled {
                    (p * (1.0 - q), q * (1.0 - p))
                } else {
                    ((p - q).max(0.0), (q - p).max(0.0))
                };
                let describe = |e: &Estimate| {
                    let mut parts = vec![format!("{}% of units", e.share)];
                    parts.extend(e.named.iter().cloned());
                    parts.join(" + ")
                };
                let gained: Vec<&String> =
                    a.named.iter().filter(|n| !b.named.contains(n)).collect();
                let lost: Vec<&String> = b.named.iter().filter(|n| !a.named.contains(n)).collect();
                let with_named = |share: f64, named: &[&String]| {
                    let mut s = format!("~{:.1}%", share * 100.0);
                    if !named.is_empty() {
                        s.push_str(&format!(
                            " + {}",
                            named.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" + ")
                        ));
                    }
                    s
                };
                radius.row(vec![
                    (*key).clone(),
                    with_named(off, &lost),
                    with_named(on, &gained),
                    describe(&b),
                    describe(&a),
                ]);
                // The same schema as a counted radius: units unknown.
                let share = |s: f64| json!({ "units": null, "share": s });
                radius_json.insert(
                    (*key).clone(),
                    json!({
                        "estimated": true,
                        "units": null,
                        "on_to_off": share(off),
                        "off_to_on": share(on),
                        "exposure": {
                            "before": { "units": null, "share": p, "described": describe(&b) },
                            "after": { "units": null, "share": q, "described": describe(&a) },
                        },
                        "named_off": lost, "named_on": gained,
                        "variant_changed": null, "value_changed": null,
                        "by_region": {}, "by_cohort": {},
                    }),
                );
            }
        }
    }

    if as_json {
        print_json(&json!({
            "old_version": old.version,
            "new_version": new.version,
            "changes": changes,
            "blast_radius": radius_json,
            "exact": population.is_some(),
            "refused_by_services": refused,
            "warnings": changes.iter().filter_map(|c| c.warning.clone())
                .chain(population_warnings.iter().cloned()).collect::<Vec<_>>(),
        }))?;
    } else if markdown {
        let flags: std::collections::BTreeSet<&str> =
            changes.iter().filter_map(|c| c.flag.as_deref()).collect();
        outln!(
            "### flagstone diff: version {} → {}\n\n**{} change{}** in {} flag{}{}.\n",
            old.version,
            new.version,
            changes.len(),
            if changes.len() == 1 { "" } else { "s" },
            flags.len(),
            if flags.len() == 1 { "" } else { "s" },
            if changes.iter().any(|c| !c.reversible) {
                "; some are **not reversible**"
            } else {
                ""
            }
        );
        if !changes.is_empty() {
            let mut table = Table::new(&["flag", "change", "reversible"]);
            for c in &changes {
                let flag = c.flag.clone().unwrap_or_else(|| "(cohorts)".to_owned());
                let reversible = if c.reversible { "yes" } else { "**NO**" };
                table.row(vec![flag, c.kind.to_string(), reversible.to_owned()]);
            }
            outln!("{}", table.markdown());
            for w in changes.iter().filter_map(|c| c.warning.as_deref()) {
                outln!("> **Warning:** {w}\n");
            }
            for w in &population_warnings {
                outln!("> **Warning:** {w}\n");
            }
        }
        if !radius.is_empty() {
            match population {
                Some(p) => outln!("#### Blast radius (counted over `{}`)\n", p.display()),
                None => outln!("#### Blast radius (estimated from percentages and cohort sizes)\n"),
            }
            outln!("{}", radius.markdown());
        }
    } else if changes.is_empty() {
        outln!("no changes in behaviour (version {} -> {})", old.version, new.version);
    } else {
        outln!("{} (version {} -> {})", style.bold("changes"), old.version, new.version);
        let mut table = Table::new(&["flag", "change", "reversible"]);
        for c in &changes {
            let flag = c.flag.clone().unwrap_or_else(|| "(cohorts)".to_owned());
            let reversible = if c.reversible { "yes".to_owned() } else { style.warn("NO") };
            table.row(vec![flag, c.kind.to_string(), reversible]);
        }
        out!("{}", table.render(2, style));
        let warnings: Vec<&str> = changes.iter().filter_map(|c| c.warning.as_deref()).collect();
        for w in warnings.iter().copied().chain(population_warnings.iter().map(String::as_str)) {
            outln!("  {} {w}", style.warn("WARNING"));
        }
        if !radius.is_empty() {
            match population {
                Some(p) => {
                    outln!("\n{} (counted over {})", style.bold("blast radius"), p.display())
                }
                None => outln!(
                    "\n{} (estimated from percentages and cohort sizes; pass --population to count)",
                    style.bold("blast radius")
                ),
            }
            out!("{}", radius.render(2, style));
        }
    }
    if refused {
        // What every service would do with this push: refuse it.
        crate::out::write_err(&format!(
            "{} {}'s version {} is not above {}'s version {}: every service will refuse this push \
             (an edit needs a higher version; no service applies this)",
            style.bad("error:"),
            new_path.display(),
            new.version,
            old_path.display(),
            old.version
        ));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::from(if changes.is_empty() { 0 } else { 2 }))
}
