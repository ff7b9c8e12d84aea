//! `flagstone validate`: a summary per file, or every problem with its path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use flagstone::config::Config;
use serde_json::json;

use crate::out::outln;
use crate::out::{Format, Style, Table};
use crate::{print_json, read};

pub(crate) fn run(
    files: &[PathBuf],
    as_json: bool,
    format: Format,
    style: Style,
) -> anyhow::Result<ExitCode> {
    if format == Format::Markdown {
        return markdown(files);
    }
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
                    outln!(
                        "{} {}: version {}, {} flags, {} cohorts; stages in effect: {}",
                        style.good("ok"),
                        file.display(),
                        config.version,
                        config.flags.len(),
                        config.cohorts.len(),
                        if staged.is_empty() { "none".to_owned() } else { staged.join(", ") }
                    );
                    for note in config.notes() {
                        outln!("  {} {note}", style.warn("note:"));
                    }
                }
                let stages: BTreeMap<&str, &str> =
                    current.iter().map(|(k, s, ..)| (*k, *s)).collect();
                let notes: Vec<_> = config
                    .notes()
                    .iter()
                    .map(|p| json!({ "path": p.path(), "message": p.message() }))
                    .collect();
                json!({ "file": file.to_string_lossy(), "valid": true, "version": config.version,
                        "flags": config.flags.len(), "cohorts": config.cohorts.len(), "stages": stages,
                        "notes": notes })
            }
            Ok(Err(e)) => {
                failed = true;
                if !as_json {
                    outln!(
                        "{} {}: {} problem(s)",
                        style.bad("invalid"),
                        file.display(),
                        e.problem_count()
                    );
                    for p in e.problems() {
                        outln!("  {p}");
                    }
                    let more = e.problem_count() - e.problems().len();
                    if more > 0 {
                        outln!("  and {more} more");
                    }
                }
                let problems: Vec<_> = e
                    .problems()
                    .iter()
                    .map(|p| json!({ "path": p.path(), "message": p.message() }))
                    .collect();
                json!({ "file": file.to_string_lossy(), "valid": false, "problems": problems,
                        "problem_count": e.problem_count() })
            }
            Err(e) => {
                failed = true;
                if !as_json {
                    outln!("{} {e:#}", style.bad("error"));
                }
                json!({ "file": file.to_string_lossy(), "valid": false, "error": format!("{e:#}") })
            }
        };
        reports.push(report);
    }
    if as_json {
        print_json(&json!(reports))?;
    }
    Ok(ExitCode::from(u8::from(failed)))
}

/// `validate --format markdown`: a table of the files, then each problem
/// and note with its path.
fn markdown(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut table = Table::new(&["file", "result", "version", "flags", "cohorts"]);
    let mut details = Vec::new();
    for file in files {
        let name = format!("`{}`", file.display());
        match read(file).map(Config::from_json) {
            Ok(Ok(config)) => {
                table.row(vec![
                    name.clone(),
                    "valid".into(),
                    config.version.to_string(),
                    config.flags.len().to_string(),
                    config.cohorts.len().to_string(),
                ]);
                for note in config.notes() {
                    details.push(format!("- {name} note: `{}`: {}", note.path(), note.message()));
                }
            }
            Ok(Err(e)) => {
                failed = true;
                table.row(vec![
                    name.clone(),
                    format!("**invalid** ({} problems)", e.problem_count()),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                for p in e.problems() {
                    details.push(format!("- {name} `{}`: {}", p.path(), p.message()));
                }
            }
            Err(e) => return Err(e),
        }
    }
    outln!("### flagstone validate\n\n{}", table.markdown());
    for line in &details {
        outln!("{line}");
    }
    Ok(ExitCode::from(u8::from(failed)))
}
