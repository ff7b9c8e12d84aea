//! `flagstone import unleash`: an Unleash client-features document as a
//! flagstone config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::out::{self, Style, outln};

#[derive(clap::Subcommand)]
pub(crate) enum Source {
    /// An Unleash client-features document (the client API's
    /// `/api/client/features`, or the delta API's events): every feature as
    /// a flag that decides the same for every context, with Unleash's own
    /// bucketing. What cannot be carried exactly is printed as a warning.
    Unleash {
        /// The Unleash document.
        file: PathBuf,
        /// Where to write the config (standard output when absent).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The config's version (services apply only newer versions).
        #[arg(long, default_value_t = 1)]
        version: u64,
    },
}

pub(crate) fn run(source: &Source, style: Style) -> anyhow::Result<ExitCode> {
    let Source::Unleash { file, output, version } = source;
    let imported = flagstone::import::unleash(crate::read(file)?).map_err(|e| {
        let problems: Vec<String> = e.problems().iter().map(|p| format!("\n  {p}")).collect();
        anyhow::anyhow!(
            "{} is not an Unleash features document:{}",
            file.display(),
            problems.concat()
        )
    })?;
    let mut config = imported.config;
    config.version = *version;
    let json = serde_json::to_string_pretty(&config).context("cannot write the config as JSON")?;
    match output {
        Some(path) => {
            write(path, &json)?;
            outln!(
                "{}: {} flags, {} cohorts, version {} -> {}",
                file.display(),
                config.flags.len(),
                config.cohorts.len(),
                config.version,
                path.display()
            );
        }
        None => outln!("{json}"),
    }
    for warning in &imported.warnings {
        out::write_err(&format!("{} {warning}", style.warn("warning:")));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the file whole or not at all: a temporary file beside it, renamed.
fn write(path: &Path, json: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{json}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}
