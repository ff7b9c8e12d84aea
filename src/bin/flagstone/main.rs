//! `flagstone`: know what a push will do, and for whom, before you push it.
//!
//! ```text
//! flagstone validate FILE...
//! flagstone explain FILE --flag NAME [--tenant T] [--region R] [--user U] [--attr K=V]... [--at TIME]
//! flagstone diff OLD NEW [--population FILE]
//! flagstone plan FILE [--flag NAME]
//! flagstone bucket --salt S UNIT...
//! ```
//!
//! Every command takes `--json`. Exit codes: 0 fine (for `diff`: nothing
//! changes), 1 an error (for `validate`: an invalid file), 2 `diff` found
//! changes.

mod out;
mod population;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use flagstone::config::{Cohort, Config, Flag};
use flagstone::{Clock, ContextBuf, FlagStore, ManualClock, StageVerdict, SystemClock};
use serde_json::json;

use out::{Style, Table, percent};

/// Validate, explain, diff and plan flagstone configs before you push them.
#[derive(Parser)]
#[command(name = "flagstone", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check configs; print a summary per file, or every problem with its path.
    Validate {
        /// Config files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show why a flag is on or off for a context, step by step.
    Explain {
        /// The config file.
        file: PathBuf,
        /// The flag's key.
        #[arg(long)]
        flag: String,
        /// The context's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// The context's region.
        #[arg(long)]
        region: Option<String>,
        /// The context's user.
        #[arg(long)]
        user: Option<String>,
        /// An attribute, as KEY=VALUE; repeatable.
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Evaluate at this RFC 3339 time instead of now (for scheduled stages).
        #[arg(long)]
        at: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What changes from OLD to NEW, and for how many units (the blast radius).
    Diff {
        /// The config serving now.
        old: PathBuf,
        /// The config about to be pushed.
        new: PathBuf,
        /// Contexts to count exactly: CSV with a header (tenant, region, user,
        /// other columns are attributes) or JSON lines.
        #[arg(long)]
        population: Option<PathBuf>,
        /// Evaluate at this RFC 3339 time instead of now.
        #[arg(long)]
        at: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The staged plan of each flag: stages, audiences, schedule, exposure.
    Plan {
        /// The config file.
        file: PathBuf,
        /// Only this flag.
        #[arg(long)]
        flag: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The bucket (0..100000) of each unit under a salt, as the library computes it.
    Bucket {
        /// The salt (a flag's `salt`, or its key).
        #[arg(long)]
        salt: String,
        /// Units (tenant, user, ... values).
        #[arg(required = true)]
        units: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: for `diff`, 2 means "changes found",
    // and a pipeline must not mistake a typo for a pending change.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::from(e.use_stderr());
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let style = Style::detect();
    let result = match cli.command {
        Command::Validate { files, json } => validate(&files, json, style),
        Command::Explain { file, flag, tenant, region, user, attrs, at, json } => {
            let mut unit = ContextBuf::new();
            if let Some(tenant) = tenant {
                unit = unit.tenant(tenant);
            }
            if let Some(region) = region {
                unit = unit.region(region);
            }
            if let Some(user) = user {
                unit = unit.user(user);
            }
            for (key, value) in attrs {
                unit.set_attr(key, value);
            }
            explain(&file, &flag, &unit, at.as_deref(), json, style)
        }
        Command::Diff { old, new, population, at, json } => {
            diff(&old, &new, population.as_deref(), at.as_deref(), json, style)
        }
        Command::Plan { file, flag, json } => plan(&file, flag.as_deref(), json, style),
        Command::Bucket { salt, units, json } => bucket(&salt, &units, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {e:#}", style.bad("error:"));
            ExitCode::from(1)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Loads a config, or fails with every problem of the file, one a line.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::from_json(read(path)?).map_err(|e| {
        let problems: Vec<String> = e.problems().iter().map(|p| format!("\n  {p}")).collect();
        anyhow::anyhow!("{} is not a valid config:{}", path.display(), problems.concat())
    })
}

fn clock(at: Option<&str>) -> anyhow::Result<Box<dyn Clock>> {
    Ok(match at {
        Some(t) => Box::new(ManualClock::from_rfc3339(t).with_context(|| format!("--at {t}"))?),
        None => Box::new(SystemClock),
    })
}

/// A store serving an already loaded config, its clock at `at`.
fn store(config: &Config, at: Option<&str>) -> anyhow::Result<FlagStore> {
    let store = FlagStore::new().with_clock(clock(at)?);
    store.apply_config(config)?;
    Ok(store)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

// validate

fn validate(files: &[PathBuf], as_json: bool, style: Style) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut reports = Vec::new();
    for file in files {
        let outcome = read(file).map(Config::from_json);
        let report = match outcome {
            Ok(Ok(config)) => {
                // Each staged flag's current stage, its position and the stage count.
                let current: Vec<(&str, &str, usize, usize)> = config
                    .flags
                    .iter()
                    .filter_map(|(k, f)| {
                        let i = f.current_stage()?;
                        Some((k.as_str(), f.stages.get(i)?.name.as_str(), i, f.stages.len()))
                    })
                    .collect();
                if !as_json {
                    let staged: Vec<String> = current
                        .iter()
                        .map(|(k, s, i, n)| format!("{k}@{s} ({}/{n})", i + 1))
                        .collect();
                    println!(
                        "{} {}: version {}, {} flags, {} cohorts; stages in effect: {}",
                        style.good("ok"),
                        file.display(),
                        config.version,
                        config.flags.len(),
                        config.cohorts.len(),
                        if staged.is_empty() { "none".to_owned() } else { staged.join(", ") }
                    );
                }
                let stages: BTreeMap<&str, &str> =
                    current.iter().map(|(k, s, ..)| (*k, *s)).collect();
                json!({ "file": file, "valid": true, "version": config.version,
                        "flags": config.flags.len(), "cohorts": config.cohorts.len(), "stages": stages })
            }
            Ok(Err(e)) => {
                failed = true;
                if !as_json {
                    println!(
                        "{} {}: {} problem(s)",
                        style.bad("invalid"),
                        file.display(),
                        e.problems().len()
                    );
                    for p in e.problems() {
                        println!("  {p}");
                    }
                }
                let problems: Vec<_> = e
                    .problems()
                    .iter()
                    .map(|p| json!({ "path": p.path(), "message": p.message() }))
                    .collect();
                json!({ "file": file, "valid": false, "problems": problems })
            }
            Err(e) => {
                failed = true;
                if !as_json {
                    println!("{} {e:#}", style.bad("error"));
                }
                json!({ "file": file, "valid": false, "error": format!("{e:#}") })
            }
        };
        reports.push(report);
    }
    if as_json {
        print_json(&json!(reports))?;
    }
    Ok(ExitCode::from(u8::from(failed)))
}

// explain

fn explain(
    file: &Path,
    flag: &str,
    unit: &ContextBuf,
    at: Option<&str>,
    as_json: bool,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let config = load(file)?;
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
    println!(
        "{} for {} (config version {}{})",
        style.bold(flag),
        if who.is_empty() { "an empty context".to_owned() } else { who.join(" ") },
        why.version,
        at.map(|t| format!(", at {t}")).unwrap_or_default()
    );
    let decision = if why.enabled { style.good("ON") } else { style.bad("OFF") };
    println!(
        "  decision     {decision}{}",
        why.variant.as_ref().map(|v| format!("  variant {v:?}")).unwrap_or_default()
    );
    println!("  reason       {}", why.summary);
    if !why.known {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "  kill switch  {}",
        if why.kill_switch { style.bad("set (enabled: false)") } else { "not set".to_owned() }
    );
    let by = why.bucket_by.as_deref().unwrap_or("user");
    match (&why.unit, why.bucket) {
        (Some(u), Some(b)) => println!(
            "  bucket_by    {by} = {u:?} -> bucket {b} of 100000 (in any rollout above {})",
            percent(b)
        ),
        _ => println!("  bucket_by    {by}: the context has no {by}, so it is in no percentage"),
    }
    if !why.exclusions.is_empty() {
        println!("  exclusions");
        for c in &why.exclusions {
            let verdict = match c.matched {
                Some(true) => style.bad("in the cohort: excluded"),
                Some(false) => "not in the cohort".to_owned(),
                None => "not checked".to_owned(),
            };
            println!("    {:<16} {verdict}", c.cohort);
        }
    }
    if !why.stages.is_empty() {
        let current = config.flags.get(flag).and_then(|f| f.stage.clone()).unwrap_or_default();
        println!("  stages (current: {current})");
        let mut table = Table::new(&["#", "stage", "audience", "percent", "starts", "verdict"]);
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
            table.row(vec![
                s.index.to_string(),
                s.name.clone(),
                audience,
                pct,
                s.start_at.clone().unwrap_or_else(|| "-".to_owned()),
                verdict,
            ]);
        }
        print!("{}", table.render(4, style));
    }
    Ok(ExitCode::SUCCESS)
}

// diff

/// What share of units a flag exposes, estimated from the config alone.
struct Estimate {
    /// Percent of all units, from stages without cohorts.
    share: f64,
    /// Audiences named by cohort stages, described.
    named: Vec<String>,
}

fn describe_cohort(name: &str, cohort: Option<&Cohort>) -> String {
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

/// Flips of one flag over a population.
#[derive(Default, serde::Serialize)]
struct Flips {
    on_to_off: usize,
    off_to_on: usize,
    by_region: BTreeMap<String, (usize, usize)>,
    by_cohort: BTreeMap<String, (usize, usize)>,
}

fn diff(
    old_path: &Path,
    new_path: &Path,
    population: Option<&Path>,
    at: Option<&str>,
    as_json: bool,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let (old, new) = (load(old_path)?, load(new_path)?);
    let changes = flagstone::diff::diff(&old, &new);
    let mut keys: Vec<&String> = new.flags.keys().chain(old.flags.keys()).collect();
    keys.sort();
    keys.dedup();
    let changed_flags: Vec<&String> = keys
        .into_iter()
        .filter(|k| changes.iter().any(|c| c.flag.as_deref() == Some(k.as_str())))
        .collect();

    // The blast radius: exact over a population, or estimated from the configs.
    let mut radius =
        Table::new(&["flag", "on -> off", "off -> on", "exposure before", "exposure after"]);
    let mut radius_json = serde_json::Map::new();
    match population {
        Some(path) => {
            let units = population::load(path)?;
            let (before, after) = (store(&old, at)?.snapshot(), store(&new, at)?.snapshot());
            let mut cohorts: Vec<&String> = new.cohorts.keys().chain(old.cohorts.keys()).collect();
            cohorts.sort();
            cohorts.dedup();
            for key in &changed_flags {
                let mut flips = Flips::default();
                let (mut was_on, mut is_on) = (0, 0);
                for unit in &units {
                    let ctx = unit.as_context();
                    let (b, a) = (before.is_enabled(key, &ctx), after.is_enabled(key, &ctx));
                    was_on += usize::from(b);
                    is_on += usize::from(a);
                    if a == b {
                        continue;
                    }
                    let bump =
                        |entry: &mut (usize, usize)| if b { entry.0 += 1 } else { entry.1 += 1 };
                    if b {
                        flips.on_to_off += 1
                    } else {
                        flips.off_to_on += 1
                    }
                    bump(
                        flips
                            .by_region
                            .entry(ctx.get_region().unwrap_or("(none)").to_owned())
                            .or_default(),
                    );
                    for cohort in &cohorts {
                        let member = after
                            .in_cohort(cohort, &ctx)
                            .or_else(|| before.in_cohort(cohort, &ctx));
                        if member == Some(true) {
                            bump(flips.by_cohort.entry((*cohort).clone()).or_default());
                        }
                    }
                }
                let share =
                    |n: usize| format!("{n} ({:.1}%)", 100.0 * n as f64 / units.len() as f64);
                radius.row(vec![
                    (*key).clone(),
                    share(flips.on_to_off),
                    share(flips.off_to_on),
                    share(was_on),
                    share(is_on),
                ]);
                for (region, (off, on)) in &flips.by_region {
                    radius.row(vec![
                        format!("  region {region}"),
                        off.to_string(),
                        on.to_string(),
                        String::new(),
                        String::new(),
                    ]);
                }
                for (cohort, (off, on)) in &flips.by_cohort {
                    radius.row(vec![
                        format!("  cohort {cohort}"),
                        off.to_string(),
                        on.to_string(),
                        String::new(),
                        String::new(),
                    ]);
                }
                radius_json.insert((*key).clone(), serde_json::to_value(&flips)?);
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
                radius_json.insert(
                    (*key).clone(),
                    json!({ "estimated": true, "on_to_off_share": off, "off_to_on_share": on,
                            "named_off": lost, "named_on": gained }),
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
        }))?;
    } else if changes.is_empty() {
        println!("no changes in behaviour (version {} -> {})", old.version, new.version);
    } else {
        println!("{} (version {} -> {})", style.bold("changes"), old.version, new.version);
        let mut table = Table::new(&["flag", "change", "reversible"]);
        for c in &changes {
            let flag = c.flag.clone().unwrap_or_else(|| "(cohorts)".to_owned());
            let reversible = if c.reversible { "yes".to_owned() } else { style.warn("NO") };
            table.row(vec![flag, c.kind.to_string(), reversible]);
        }
        print!("{}", table.render(2, style));
        let warnings: Vec<&str> = changes.iter().filter_map(|c| c.warning.as_deref()).collect();
        for w in &warnings {
            println!("  {} {w}", style.warn("WARNING"));
        }
        if !radius.is_empty() {
            match population {
                Some(p) => {
                    println!("\n{} (counted over {})", style.bold("blast radius"), p.display())
                }
                None => println!(
                    "\n{} (estimated from percentages and cohort sizes; pass --population to count)",
                    style.bold("blast radius")
                ),
            }
            print!("{}", radius.render(2, style));
        }
    }
    Ok(ExitCode::from(if changes.is_empty() { 0 } else { 2 }))
}

// plan

fn plan(file: &Path, only: Option<&str>, as_json: bool, style: Style) -> anyhow::Result<ExitCode> {
    let config = load(file)?;
    if let Some(key) = only
        && !config.flags.contains_key(key)
    {
        bail!("{} has no flag {key:?}", file.display());
    }
    let now = SystemClock.now_millis();
    let mut plans = serde_json::Map::new();
    for (key, flag) in config.flags.iter().filter(|(k, _)| only.is_none_or(|o| o == k.as_str())) {
        let current = flag.current_stage();
        let mut cumulative = 0.0f64;
        let mut rows = Vec::new();
        for (i, stage) in flag.stages.iter().enumerate() {
            let audience = if stage.cohorts.is_empty() {
                "everyone".to_owned()
            } else {
                stage
                    .cohorts
                    .iter()
                    .map(|c| describe_cohort(c, config.cohorts.get(c)))
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            let adds = if stage.cohorts.is_empty() {
                let p = stage.percent.unwrap_or(100.0);
                let added = (p - cumulative).max(0.0);
                cumulative = cumulative.max(p);
                format!("+{added}% of {}s", flag.bucket_by.as_deref().unwrap_or("user"))
            } else {
                let share = stage.percent.map(|p| format!("{p}% of ")).unwrap_or_default();
                format!("+{share}{}", stage.cohorts.join(", "))
            };
            let pending = stage
                .start_at
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t.as_millisecond() > now);
            let state = match current {
                Some(c) if i < c => "done",
                Some(c) if i == c && pending => "CURRENT (scheduled)",
                Some(c) if i == c => "CURRENT",
                Some(c) if i == c + 1 => "next",
                _ => "planned",
            };
            rows.push((i, stage, audience, adds, state, cumulative));
        }
        if as_json {
            let stages: Vec<_> = rows
                .iter()
                .map(|(i, s, audience, adds, state, cum)| {
                    json!({ "index": i, "name": s.name, "audience": audience, "percent": s.percent,
                            "start_at": s.start_at, "state": state, "adds": adds,
                            "cumulative_percent_of_units": cum })
                })
                .collect();
            plans.insert(
                key.clone(),
                json!({ "enabled": flag.enabled, "stage": flag.stage, "stages": stages }),
            );
            continue;
        }
        let mut notes = vec![format!("bucket_by {}", flag.bucket_by.as_deref().unwrap_or("user"))];
        if !flag.exclude.is_empty() {
            notes.push(format!("excluding {}", flag.exclude.join(", ")));
        }
        if !flag.enabled {
            notes.push(style.bad("KILL SWITCH SET: off for everyone"));
        }
        println!("{} ({})", style.bold(key), notes.join("; "));
        if rows.is_empty() {
            println!(
                "  no stages: {}\n",
                if flag.enabled { "on for everyone" } else { "off for everyone" }
            );
            continue;
        }
        let mut table = Table::new(&[
            "#",
            "stage",
            "audience",
            "percent",
            "starts",
            "state",
            "adds",
            "units by %",
        ]);
        for (i, stage, audience, adds, state, cum) in rows {
            let state =
                if state.starts_with("CURRENT") { style.good(state) } else { state.to_owned() };
            table.row(vec![
                i.to_string(),
                stage.name.clone(),
                audience,
                stage.percent.map_or("-".to_owned(), |p| format!("{p}%")),
                stage.start_at.clone().unwrap_or_else(|| "-".to_owned()),
                state,
                adds,
                format!("{cum}%"),
            ]);
        }
        println!("{}", table.render(2, style));
    }
    if as_json {
        print_json(&serde_json::Value::Object(plans))?;
    }
    Ok(ExitCode::SUCCESS)
}

// bucket

fn bucket(salt: &str, units: &[String], as_json: bool) -> anyhow::Result<ExitCode> {
    let rows: Vec<(&str, u32)> =
        units.iter().map(|u| (u.as_str(), flagstone::bucket(salt, u))).collect();
    if as_json {
        let rows: Vec<_> =
            rows.iter().map(|(u, b)| json!({ "salt": salt, "unit": u, "bucket": b })).collect();
        print_json(&json!(rows))?;
    } else {
        let mut table = Table::new(&["unit", "bucket", "in a rollout of more than"]);
        for (u, b) in rows {
            table.row(vec![u.to_owned(), b.to_string(), percent(b)]);
        }
        print!("{}", table.render(0, Style::detect()));
    }
    Ok(ExitCode::SUCCESS)
}
