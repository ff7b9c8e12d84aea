//! `flagstone plan`: the staged plan of each flag.

use std::path::Path;
use std::process::ExitCode;

use flagstone::{Clock, SystemClock};
use serde_json::json;

use crate::diff::describe_cohort;
use crate::out::outln;
use crate::out::{Format, Style, Table};
use crate::{load, no_such_flag, print_json};

pub(crate) fn run(
    file: &Path,
    only: Option<&str>,
    as_json: bool,
    format: Format,
    style: Style,
) -> anyhow::Result<ExitCode> {
    let markdown = format == Format::Markdown;
    let style = if markdown { Style::plain() } else { style };
    let config = load(file)?;
    if let Some(key) = only
        && !config.flags.contains_key(key)
    {
        return Err(no_such_flag(file, &config, key));
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
                format!("+{added}% of {}", units_plural(flag))
            } else {
                let share = stage.percent.map(|p| format!("{p}% of ")).unwrap_or_default();
                format!("+{share}{}", stage.cohorts.join(", "))
            };
            let pending = stage.start_at_millis().is_some_and(|t| t > now);
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
                            "cumulative_percent_of_units": cum,
                            "step": s.step.map(|step| step.as_str()),
                            "data": s.step.map(data_note) })
                })
                .collect();
            plans.insert(
                key.clone(),
                json!({ "enabled": flag.enabled, "stage": flag.stage, "stages": stages }),
            );
            continue;
        }
        let mut notes = vec![format!("bucket_by {}", units_of(flag))];
        if flag.bucketing == flagstone::config::Bucketing::Unleash {
            notes.push("unleash bucketing".to_owned());
        }
        if !flag.exclude.is_empty() {
            notes.push(format!("excluding {}", flag.exclude.join(", ")));
        }
        if !flag.requires.is_empty() {
            let required: Vec<String> = flag
                .requires
                .iter()
                .map(|r| {
                    let variants: Vec<&str> = r.variant_names().collect();
                    match (r.enabled, variants.as_slice()) {
                        (false, _) => format!("{} off", r.flag),
                        (true, []) => r.flag.clone(),
                        (true, vs) => format!("{} ({})", r.flag, vs.join(" or ")),
                    }
                })
                .collect();
            notes.push(format!("requires {}", required.join(", ")));
        }
        if flag.migration {
            notes.push(
                "data migration: a context is at the step of the last stage exposing it".to_owned(),
            );
        }
        if !flag.enabled {
            notes.push(style.bad("KILL SWITCH SET: off for everyone"));
        }
        if markdown {
            outln!("#### {key}\n\n{}\n", notes.join("; "));
        } else {
            outln!("{} ({})", style.bold(key), notes.join("; "));
        }
        if rows.is_empty() {
            outln!(
                "  no stages: {}\n",
                if flag.enabled { "on for everyone" } else { "off for everyone" }
            );
            continue;
        }
        let mut columns = vec!["#", "stage"];
        if flag.migration {
            columns.push("step");
        }
        columns.extend(["audience", "percent", "starts", "state", "adds", "units by %"]);
        if flag.migration {
            columns.push("data");
        }
        let mut table = Table::new(&columns);
        for (i, stage, audience, adds, state, cum) in rows {
            let state =
                if state.starts_with("CURRENT") { style.good(state) } else { state.to_owned() };
            let mut row = vec![i.to_string(), stage.name.clone()];
            if flag.migration {
                row.push(stage.step.map_or("-", |step| step.as_str()).to_owned());
            }
            row.extend([
                audience,
                stage.percent.map_or("-".to_owned(), |p| format!("{p}%")),
                stage.start_at.clone().unwrap_or_else(|| "-".to_owned()),
                state,
                adds,
                format!("{cum}%"),
            ]);
            if flag.migration {
                let note = stage.step.map_or("", data_note);
                row.push(if stage.step == Some(flagstone::MigrationStep::Complete) {
                    style.warn(note)
                } else {
                    note.to_owned()
                });
            }
            table.row(row);
        }
        if markdown {
            outln!("{}", table.markdown());
        } else {
            outln!("{}", table.render(2, style));
        }
    }
    if as_json {
        print_json(&serde_json::Value::Object(plans))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What entering a step means for the data, in a plan's words.
fn data_note(step: flagstone::MigrationStep) -> &'static str {
    use flagstone::MigrationStep;
    match step {
        MigrationStep::Off => "old store only",
        MigrationStep::DualWrite => "reversible: both stores written, old read",
        MigrationStep::Shadow => "reversible: both read and compared, old answers",
        MigrationStep::Live => "reversible: new answers, old still written",
        MigrationStep::RampDown => "reversible: new read, old still written",
        MigrationStep::Complete => "IRREVERSIBLE for data: the old store gets no more writes",
    }
}

/// What a flag's percentages count, in words.
fn units_of(flag: &flagstone::config::Flag) -> String {
    flag.bucket_by.as_ref().map_or_else(|| "user".to_owned(), ToString::to_string)
}

/// The units a percentage counts, as a plural: "tenants", or "the first
/// of [user, sessionId]".
fn units_plural(flag: &flagstone::config::Flag) -> String {
    match &flag.bucket_by {
        Some(flagstone::config::BucketBy::FirstOf(names)) => {
            format!("units (the first of {})", names.join(", "))
        }
        _ => format!("{}s", units_of(flag)),
    }
}
