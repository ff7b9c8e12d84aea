//! `flagstone rollout run` and `status`: the release controller that
//! advances and steps back stages for the whole fleet, from Prometheus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flagstone::rollout::{Controller, Decision, FlagStatus, Prometheus};
use jiff::Timestamp;
use serde_json::json;

use crate::keys;
use crate::out::{Style, outln};
use crate::publish::TargetArgs;

/// The controller's commands.
#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Decide every managed flag each interval and publish each decision.
    Run(Run),
    /// Where each managed flag stands, and what the controller would do now.
    Status(Status),
}

/// Where the config is and where the evidence comes from.
#[derive(clap::Args)]
pub(crate) struct Where {
    #[command(flatten)]
    target: TargetArgs,
    /// The Prometheus server that scrapes the fleet.
    #[arg(long, value_name = "URL")]
    prometheus: String,
    /// Label matchers every series must carry, such as 'job="checkout"'.
    #[arg(long, value_name = "MATCHERS", default_value = "")]
    selector: String,
    /// Evidence older than this many seconds holds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    max_age: u64,
    /// Decide as if it were this RFC 3339 time (for tests and rehearsals);
    /// the clock runs on from it.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

/// `rollout run`.
#[derive(clap::Args)]
pub(crate) struct Run {
    #[command(flatten)]
    at: Where,
    /// Sign each version with this private key (from `flagstone keygen`).
    #[arg(long, value_name = "PRIVATE_KEY_FILE")]
    sign: Option<PathBuf>,
    /// Seconds between rounds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    interval: u64,
    /// Append a JSON line per action to this file.
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// POST each action (JSON with a `text` field, Slack-compatible) here.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Decide and print, publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// One round, then exit: 0 (with a line per action taken), 1 on error.
    #[arg(long)]
    once: bool,
    /// Print every flag's decision each round, not only actions.
    #[arg(long)]
    verbose: bool,
}

/// `rollout status`.
#[derive(clap::Args)]
pub(crate) struct Status {
    #[command(flatten)]
    at: Where,
    /// Machine-readable output.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// `text` or `markdown` (a table to paste in a change ticket).
    #[arg(long, default_value = "text")]
    format: String,
}

pub(crate) fn run(command: &Command, style: Style) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run_rounds(args, style),
        Command::Status(args) => status(args),
    }
}

/// The controller's clock: `--now` running on, or the system's.
struct Now(Option<(Timestamp, Instant)>);

impl Now {
    fn new(at: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self(match at {
            Some(t) => Some((t.parse().with_context(|| format!("--now {t}"))?, Instant::now())),
            None => None,
        }))
    }

    fn get(&self) -> Timestamp {
        match self.0 {
            Some((start, since)) => {
                let elapsed = jiff::SignedDuration::try_from(since.elapsed()).unwrap_or_default();
                start.checked_add(elapsed).unwrap_or(start)
            }
            None => Timestamp::now(),
        }
    }
}

fn controller(at: &Where) -> anyhow::Result<Controller> {
    let target = at.target.target()?;
    let prometheus = Prometheus::new(at.prometheus.clone()).selector(at.selector.clone());
    Ok(Controller::new(target, Box::new(prometheus)).max_age(Duration::from_secs(at.max_age)))
}

fn run_rounds(args: &Run, style: Style) -> anyhow::Result<ExitCode> {
    let mut controller = controller(&args.at)?.dry_run(args.dry_run);
    if let Some(path) = &args.sign {
        let key = keys::signing_key(path)?;
        controller = controller.sign_with(move |document| key.sign(document));
    }
    if let Some(path) = &args.audit {
        controller = controller.audit_file(path);
    }
    if let Some(url) = &args.webhook {
        controller = controller.webhook(url.clone());
    }
    let now = Now::new(args.at.now.as_deref())?;
    let interval = Duration::from_secs(args.interval.max(1));
    let mut said = std::collections::BTreeMap::new();
    loop {
        let started = Instant::now();
        match controller.round(now.get()) {
            Ok(report) => {
                for action in &report.actions {
                    let version = match action.version {
                        Some(v) => format!("version {v}"),
                        None => "dry run".to_owned(),
                    };
                    outln!("{} {version}: {} {}", now.get(), action.flag, action.decision);
                }
                for warning in &report.warnings {
                    crate::out::write_err(&format!("{} {warning}", style.bad("warning:")));
                }
                for (flag, decision) in &report.decisions {
                    // A hold is printed when its reason changes, not when
                    // only its numbers do ("3s of 30s", "4s of 30s").
                    let gist: String =
                        decision.to_string().replace(|c: char| c.is_ascii_digit(), "");
                    let new = said.get(flag) != Some(&gist);
                    if !decision.acts() && (args.verbose || args.once || new) {
                        outln!("{} {flag}: {decision}", now.get());
                    }
                    said.insert(flag.clone(), gist);
                }
            }
            Err(e) if args.once => return Err(e.into()),
            Err(e) => crate::out::write_err(&format!("{} {e}", style.bad("error:"))),
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

fn status(args: &Status) -> anyhow::Result<ExitCode> {
    let markdown = match args.format.as_str() {
        "text" => false,
        "markdown" => true,
        other => bail!("--format {other}: text or markdown"),
    };
    let mut controller = controller(&args.at)?;
    let now = Now::new(args.at.now.as_deref())?.get();
    let flags = controller.status(now)?;
    if args.json {
        let rows: Vec<_> = flags.iter().map(status_json).collect();
        crate::print_json(&json!({ "time": now.to_string(), "flags": rows }))?;
    } else if markdown {
        outln!("| flag | stage | in stage | exposed | control | test | next |");
        outln!("|---|---|---|---|---|---|---|");
        for s in &flags {
            let cells = cells(s, now);
            outln!("| {} |", cells.join(" | ").replace('\n', " "));
        }
    } else {
        for s in &flags {
            let [flag, stage, in_stage, exposed, control, test, next] = cells(s, now);
            outln!("{flag}");
            outln!("  stage     {stage} ({in_stage})");
            outln!("  exposed   {exposed}");
            outln!("  control   {control}");
            outln!("  test      {test}");
            outln!("  next      {next}");
        }
        if flags.is_empty() {
            outln!("no flag is managed by the controller (none has rollout or a stage hold)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn group(rates: Option<&flagstone::observe::evidence::UnitRates>) -> String {
    match rates {
        Some(r) => format!("{} units, {:.2}% mean error rate", r.units, r.mean() * 100.0),
        None => "no evidence".into(),
    }
}

fn cells(s: &FlagStatus, now: Timestamp) -> [String; 7] {
    let in_stage = match (s.in_stage, s.hold) {
        (Some(t), Some(h)) => format!("{} of a {} hold", secs(t), secs(h)),
        (Some(t), None) => secs(t),
        (None, _) => "entry time unknown".into(),
    };
    let test = match (&s.comparison, s.confidence) {
        (Some(c), Some(conf)) if c.enough => format!(
            "{} at {:.0}% confidence (bound [{:.3}, {:.3}])",
            if c.regressed { "worse than control" } else { "not worse than control" },
            conf * 100.0,
            c.lower,
            c.upper
        ),
        (_, Some(_)) if s.evidence.is_some() => "too small to test".into(),
        _ => "no evidence".into(),
    };
    let next = match &s.decision {
        Decision::Hold(_) => match (&s.next, s.next_at) {
            (Some(next), Some(at)) if at > now => {
                format!("{} (to {next} at {at} at the earliest)", s.decision)
            }
            _ => s.decision.to_string(),
        },
        other => other.to_string(),
    };
    [
        s.flag.clone(),
        s.stage.clone().unwrap_or_else(|| "-".into()),
        in_stage,
        group(s.evidence.as_ref().map(|e| &e.exposed)),
        group(s.evidence.as_ref().map(|e| &e.control)),
        test,
        next,
    ]
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

fn status_json(s: &FlagStatus) -> serde_json::Value {
    let group = |r: &flagstone::observe::evidence::UnitRates| json!({ "units": r.units, "outcomes": r.outcomes, "mean_error_rate": r.mean() });
    json!({
        "flag": s.flag,
        "stage": s.stage,
        "in_stage_secs": s.in_stage.map(|d| d.as_secs()),
        "hold_secs": s.hold.map(|d| d.as_secs()),
        "exposed": s.evidence.as_ref().map(|e| group(&e.exposed)),
        "control": s.evidence.as_ref().map(|e| group(&e.control)),
        "instances": s.evidence.as_ref().map(|e| e.instances),
        "test": s.comparison.map(|c| json!({
            "enough": c.enough, "regressed": c.regressed, "lower": c.lower, "upper": c.upper,
            "exposed": c.exposed, "control": c.control,
        })),
        "confidence": s.confidence,
        "decision": s.decision.to_string(),
        "acts": s.decision.acts(),
        "next": s.next,
        "next_at": s.next_at.map(|t| t.to_string()),
    })
}
