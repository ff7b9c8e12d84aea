//! `flagstone`: know what a push will do, and for whom, before you push it.
//!
//! ```text
//! flagstone validate FILE...
//! flagstone lint FILE... [--strict] [--at TIME]
//! flagstone explain FILE --flag NAME [--tenant T] [--region R] [--user U] [--attr K=V]... [--at TIME]
//! flagstone diff OLD NEW [--population FILE]
//! flagstone plan FILE [--flag NAME]
//! flagstone bucket --salt S UNIT...
//! flagstone publish FILE (--etcd URL[,URL...] --key KEY | --to DIR) [--sign KEY_FILE] [--user U --password P]
//! flagstone rollout run (--etcd URL --key KEY | --to DIR) --prometheus URL [--sign KEY_FILE] [--interval SECS] [--audit FILE] [--webhook URL] [--dry-run] [--once] [--now RFC3339]
//! flagstone rollout status (--etcd URL --key KEY | --to DIR) --prometheus URL [--json | --format markdown]
//! flagstone keygen --out NAME
//! flagstone sign FILE --key NAME.key
//! flagstone verify FILE --public-key NAME.pub
//! ```
//!
//! Every command takes `--json`. Exit codes: 0 fine (for `diff`: nothing
//! changes), 1 an error (for `validate`: an invalid file; for `diff`: a NEW
//! every service would refuse), 2 `diff` found changes.

mod bucket;
mod diff;
mod explain;
mod import;
mod keys;
mod lint;
mod out;
mod plan;
mod population;
mod publish;
mod rollout;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flagstone::config::Config;
use flagstone::{Clock, ContextBuf, FlagStore, ManualClock, SystemClock};

use out::Style;

/// Validate, explain, diff and plan flagstone configs before you push them.
#[derive(Parser)]
#[command(
    name = "flagstone",
    version,
    about = "flagstone: know what a flag config push will do, and for whom, before you push it",
    long_about = "flagstone: know what a flag config push will do, and for whom, before you push it.\n\n\
        Validate configs, explain one flag's decision for a context, diff two configs with their \
        blast radius, print the staged plan; publish to etcd or a directory (signed), sign and \
        verify, import Unleash flags, and run the rollout controller that advances and steps back \
        stages for the whole fleet.",
    after_help = "Exit codes:\n  0  fine (diff: no changes)\n  1  an error: an invalid file, a \
        refused push (diff: NEW not above OLD), a failed write, a bad signature\n  2  diff found \
        changes\n\nEvery command takes --json for machine-readable output."
)]
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
        /// `text`, or `markdown` for a pull request.
        #[arg(long, value_enum, default_value = "text", conflicts_with = "json")]
        format: out::Format,
    },
    /// Warnings for valid configs that probably do not say what was meant
    /// (exit 0 unless --strict).
    Lint(lint::Args),
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
        /// `text`, or `markdown` for a pull request.
        #[arg(long, value_enum, default_value = "text", conflicts_with = "json")]
        format: out::Format,
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
        /// `text`, or `markdown` for a pull request.
        #[arg(long, value_enum, default_value = "text", conflicts_with = "json")]
        format: out::Format,
    },
    /// Publish a config to etcd or a directory, validated, newer than what is
    /// there, signed if asked; of two publishers racing, one wins.
    Publish(publish::Args),
    /// The release controller: advance and step back stages for the whole
    /// fleet from Prometheus, publishing each decision.
    Rollout {
        #[command(subcommand)]
        command: rollout::Command,
    },
    /// Convert another system's flags into a flagstone config.
    Import {
        #[command(subcommand)]
        source: import::Source,
    },
    /// Make an Ed25519 key pair for signed configs.
    Keygen(keys::Keygen),
    /// Sign a config (a detached signature, FILE.sig).
    Sign(keys::Sign),
    /// Check a config's signature: exit 0 valid, 1 not.
    Verify(keys::Verify),
    /// The bucket (0..100000) of each unit under a salt, as the library
    /// computes it (with --unleash, Unleash's normalized hash, 1..=100).
    Bucket {
        /// The salt (a flag's `salt`, or its key; Unleash's groupId).
        #[arg(long)]
        salt: String,
        /// Unleash's bucketing (`"bucketing": "unleash"`).
        #[arg(long)]
        unleash: bool,
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
        Command::Validate { files, json, format } => validate::run(&files, json, format, style),
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
            explain::run(&file, &flag, &unit, at.as_deref(), json, style)
        }
        Command::Diff { old, new, population, at, json, format } => {
            diff::run(&old, &new, population.as_deref(), at.as_deref(), json, format, style)
        }
        Command::Plan { file, flag, json, format } => {
            plan::run(&file, flag.as_deref(), json, format, style)
        }
        Command::Bucket { salt, unleash, units, json } => bucket::run(&salt, unleash, &units, json),
        Command::Publish(args) => publish::run(&args),
        Command::Lint(args) => lint::run(&args, style),
        Command::Import { source } => import::run(&source, style),
        Command::Rollout { command } => rollout::run(&command, style),
        Command::Keygen(args) => keys::keygen(&args),
        Command::Sign(args) => keys::sign(&args),
        Command::Verify(args) => keys::verify(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            out::write_err(&format!("{} {e:#}", style.bad("error:")));
            ExitCode::from(1)
        }
    }
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Loads a config, or fails with every problem of the file, one a line.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    Config::from_json(read(path)?).map_err(|e| {
        let mut problems: Vec<String> = e.problems().iter().map(|p| format!("\n  {p}")).collect();
        let more = e.problem_count() - e.problems().len();
        if more > 0 {
            problems.push(format!("\n  and {more} more"));
        }
        anyhow::anyhow!("{} is not a valid config:{}", path.display(), problems.concat())
    })
}

/// The error for a flag key a config lacks, with the nearest key it has.
pub(crate) fn no_such_flag(file: &Path, config: &Config, key: &str) -> anyhow::Error {
    let nearest = config
        .flags
        .keys()
        .map(|k| (edit_distance(k, key), k))
        .filter(|(d, k)| *d <= (k.chars().count().max(key.chars().count()) / 2).max(2))
        .min();
    match nearest {
        Some((_, k)) => {
            anyhow::anyhow!("{} has no flag {key:?}; did you mean {k:?}?", file.display())
        }
        None => anyhow::anyhow!("{} has no flag {key:?}", file.display()),
    }
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

pub(crate) fn clock(at: Option<&str>) -> anyhow::Result<Box<dyn Clock>> {
    Ok(match at {
        Some(t) => Box::new(ManualClock::from_rfc3339(t).with_context(|| format!("--at {t}"))?),
        None => Box::new(SystemClock),
    })
}

/// A store serving an already loaded config, its clock at `at`.
pub(crate) fn store(config: &Config, at: Option<&str>) -> anyhow::Result<FlagStore> {
    let store = FlagStore::new().with_clock(clock(at)?);
    store.apply_config(config)?;
    Ok(store)
}

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    out::write_json(&format!("{}\n", serde_json::to_string_pretty(value)?))
        .map_err(out::write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn edit_distances() {
        assert_eq!(super::edit_distance("new-checkout", "new-chekout"), 1);
        assert_eq!(super::edit_distance("", "abc"), 3);
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    }
}
