//! `flagstone lint`: warnings, with paths, for valid configs that probably
//! do not say what their authors meant.

use std::path::PathBuf;
use std::process::ExitCode;

use flagstone::config::Config;
use serde_json::json;

use crate::out::{Style, outln};
use crate::{print_json, read};

/// Warn about a 0% stage, an unused cohort, a guard without a holdback, a
/// stage after one that exposes everyone, a schedule in the past, a cohort
/// an earlier stage already exposes in full.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Config files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Exit 1 when there is any warning (for CI).
    #[arg(long)]
    strict: bool,
    /// Judge schedules at this RFC 3339 time instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args, style: Style) -> anyhow::Result<ExitCode> {
    let now = crate::clock(args.at.as_deref())?.now_millis();
    let (mut warned, mut invalid) = (false, false);
    let mut reports = Vec::new();
    for file in &args.files {
        let config = match read(file).map(Config::from_json) {
            Ok(Ok(config)) => config,
            Ok(Err(e)) => {
                invalid = true;
                if !args.json {
                    outln!("{} {}: {e}", style.bad("invalid"), file.display());
                }
                reports.push(json!({ "file": file.to_string_lossy(), "valid": false, "error": e.to_string() }));
                continue;
            }
            Err(e) => return Err(e),
        };
        let warnings = flagstone::lint::lint(&config, now);
        warned |= !warnings.is_empty();
        if !args.json {
            match warnings.len() {
                0 => outln!("{} {}: no warnings", style.good("ok"), file.display()),
                n => outln!("{} {}: {n} warning(s)", style.warn("warn"), file.display()),
            }
            for w in &warnings {
                outln!("  {w}");
            }
        }
        let listed: Vec<_> =
            warnings.iter().map(|w| json!({ "path": w.path(), "message": w.message() })).collect();
        reports.push(json!({ "file": file.to_string_lossy(), "valid": true, "warnings": listed }));
    }
    if args.json {
        print_json(&json!({ "files": reports }))?;
    }
    Ok(ExitCode::from(u8::from(invalid || (args.strict && warned))))
}
