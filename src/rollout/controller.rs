//! One round of the controller: read what is published, decide each
//! managed flag, publish the changes over exactly what was read, and tell
//! the audit log and a webhook.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::decide::{self, Decision, FlagEvidence, Round, StageEvidence, StageTest};
use crate::config::{Config, Flag};
use crate::observe::evidence::Comparison;
use crate::publish::{self, PublishError, Published, Target};

/// Where the fleet's evidence comes from: [`Prometheus`](super::Prometheus),
/// or anything else that sums the instances' guard gauges.
pub trait EvidenceSource {
    /// The fleet's evidence, by flag key.
    fn evidence(&mut self) -> Result<BTreeMap<String, FlagEvidence>, String>;
    /// Where, in words.
    fn describe(&self) -> String;
}

/// Why a round did nothing: the reason, nothing published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The target holds nothing, or nothing readable.
    #[error("reading {target}: {message}")]
    Read {
        /// The target, in words.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The evidence could not be read.
    #[error("reading evidence from {source_name}: {message}")]
    Evidence {
        /// The source, in words.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The decision could not be published.
    #[error("publishing to {target}: {source}")]
    Publish {
        /// The target, in words.
        target: String,
        /// Why.
        #[source]
        source: PublishError,
    },
    /// Another publisher won the compare-and-swap round after round.
    #[error("gave up after {0} lost compare-and-swaps in a row")]
    Contended(u32),
}

/// A decision that changed a flag, and the version that carries it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Action {
    /// The flag's key.
    pub flag: String,
    /// What was decided ([`Decision::Advance`] or [`Decision::StepBack`]).
    pub decision: Decision,
    /// The version published with it; `None` in a dry run.
    pub version: Option<u64>,
    /// The audit line written for it.
    pub audit: AuditLine,
}

/// The audit record of one action: one JSON line in the audit file, and
/// the body posted to the webhook (with a `text` field for Slack).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditLine(pub Value);

impl fmt::Display for AuditLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where one managed flag stands, for `flagstone rollout status`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FlagStatus {
    /// The flag's key.
    pub flag: String,
    /// Its current stage.
    pub stage: Option<String>,
    /// How long it has been in it, from `rollout.entered_at`.
    pub in_stage: Option<Duration>,
    /// The stage's hold.
    pub hold: Option<Duration>,
    /// The fleet's evidence for the current stage.
    pub evidence: Option<StageEvidence>,
    /// The test's view of it, when there is a guard and fresh evidence.
    pub comparison: Option<Comparison>,
    /// The guard's confidence.
    pub confidence: Option<f64>,
    /// What the controller would do now.
    pub decision: Decision,
    /// The stage after the current one.
    pub next: Option<String>,
    /// When the controller would advance at the earliest (the hold's end),
    /// if nothing else holds it.
    pub next_at: Option<Timestamp>,
}

/// What one round did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// The version the round decided on.
    pub read_version: u64,
    /// The version it published, if it published.
    pub published: Option<u64>,
    /// Decisions that changed a flag.
    pub actions: Vec<Action>,
    /// Every managed flag's decision, acting or not, by key.
    pub decisions: BTreeMap<String, Decision>,
    /// Things that went wrong without stopping the round (a webhook that
    /// failed, an audit line not written).
    pub warnings: Vec<String>,
}

/// The rollout controller: decides every managed flag of the config at a
/// [`Target`] from an [`EvidenceSource`], and publishes each round's
/// decisions as one new version.
///
/// ```no_run
/// use flagstone::publish::Directory;
/// use flagstone::rollout::{Controller, Prometheus};
///
/// let mut controller = Controller::new(
///     Box::new(Directory::new("/srv/flags")),
///     Box::new(Prometheus::new("http://127.0.0.1:9090")),
/// )
/// .audit_file("/var/log/flagstone/rollout.jsonl");
/// let report = controller.round(jiff::Timestamp::now())?;
/// for action in &report.actions {
///     println!("{}: {}", action.flag, action.decision);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Controller {
    target: Box<dyn Target>,
    source: Box<dyn EvidenceSource>,
    sign: Option<Box<Signer>>,
    max_age: Duration,
    dry_run: bool,
    audit: Option<PathBuf>,
    #[cfg(feature = "http")]
    webhook: Option<(String, ureq::Agent)>,
    tests: HashMap<TestId, StageTest>,
}

/// Makes a document's detached signature.
type Signer = dyn Fn(&[u8]) -> String + Send;

/// A stage's test is kept per flag, stage and entry time.
type TestId = (String, String, Option<String>);

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("target", &self.target.describe())
            .field("source", &self.source.describe())
            .field("signed", &self.sign.is_some())
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Rounds in a row that may lose the compare-and-swap before one gives up.
const MAX_CONFLICTS: u32 = 5;

impl Controller {
    /// A controller of the config at `target`, judged by `source`.
    pub fn new(target: Box<dyn Target>, source: Box<dyn EvidenceSource>) -> Self {
        Self {
            target,
            source,
            sign: None,
            max_age: Duration::from_secs(60),
            dry_run: false,
            audit: None,
            #[cfg(feature = "http")]
            webhook: None,
            tests: HashMap::new(),
        }
    }

    /// Signs each published version with `sign` (a detached signature, as
    /// [`SigningKey::sign`](crate::signing::SigningKey::sign) makes).
    #[must_use]
    pub fn sign_with(mut self, sign: impl Fn(&[u8]) -> String + Send + 'static) -> Self {
        self.sign = Some(Box::new(sign));
        self
    }

    /// Evidence older than this is stale and holds (default 60 s).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Decides and reports, but publishes nothing.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Appends a JSON line per action to this file.
    #[must_use]
    pub fn audit_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit = Some(path.into());
        self
    }

    /// POSTs each action's audit line, with a `text` field, to this URL
    /// (Slack-compatible incoming webhooks take it as it is).
    #[cfg(feature = "http")]
    #[must_use]
    pub fn webhook(mut self, url: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .build()
            .new_agent();
        self.webhook = Some((url.into(), agent));
        self
    }

    fn read(&mut self) -> Result<(Published, Config), RoundError> {
        let target = self.target.describe();
        let read_error = |message: String| RoundError::Read { target: target.clone(), message };
        let published = match self.target.read() {
            Ok(Some(published)) => published,
            Ok(None) => return Err(read_error("nothing is published there".into())),
            Err(e) => return Err(read_error(e.to_string())),
        };
        let config = Config::from_json(&published.document)
            .map_err(|e| read_error(format!("the published config is not valid: {e}")))?;
        Ok((published, config))
    }

    fn evidence(&mut self) -> Result<BTreeMap<String, FlagEvidence>, RoundError> {
        self.source.evidence().map_err(|message| RoundError::Evidence {
            source_name: self.source.describe(),
            message,
        })
    }

    /// One round at `now`: decide every managed flag and publish what
    /// changed as one version. A lost compare-and-swap re-reads the config
    /// and the evidence and decides again.
    pub fn round(&mut self, now: Timestamp) -> Result<Report, RoundError> {
        let mut conflicts = 0;
        loop {
            let (published, config) = self.read()?;
            let fleet = self.evidence()?;
            let round = Round { now, max_age: self.max_age, version: config.version };
            let mut report = Report { read_version: config.version, ..Report::default() };
            let mut next = config.clone();
            let mut changed = false;
            for (key, flag) in &config.flags {
                if !decide::managed(flag) {
                    continue;
                }
                let evidence = fleet.get(key).cloned().unwrap_or_default();
                let test = self.test(key, flag);
                let decision = decide::decide(flag, &evidence, test, &round);
                let comparison = test.last;
                if let Some(target) = next.flags.get_mut(key) {
                    changed |= apply(target, &decision, now);
                }
                if decision.acts() {
                    let audit =
                        audit_line(key, &decision, &evidence, comparison.as_ref(), flag, now);
                    report.actions.push(Action {
                        flag: key.clone(),
                        decision: decision.clone(),
                        version: None,
                        audit,
                    });
                }
                report.decisions.insert(key.clone(), decision);
            }
            if !changed || self.dry_run {
                return Ok(report);
            }
            next.version = config.version + 1;
            let document = to_document(&next);
            let signature = self.sign.as_ref().map(|sign| sign(&document));
            match publish::publish_over(
                self.target.as_mut(),
                Some(&published),
                &document,
                signature.as_deref(),
            ) {
                Ok(receipt) => {
                    report.published = Some(receipt.version);
                    for action in &mut report.actions {
                        action.version = Some(receipt.version);
                        action.audit.0["version"] = json!(receipt.version);
                    }
                    self.tell(&mut report);
                    return Ok(report);
                }
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    if conflicts >= MAX_CONFLICTS {
                        return Err(RoundError::Contended(conflicts));
                    }
                }
                Err(source) => {
                    return Err(RoundError::Publish { target: self.target.describe(), source });
                }
            }
        }
    }

    /// Where every managed flag stands at `now`, and what a round would do
    /// (a single look: the tests start afresh).
    pub fn status(&mut self, now: Timestamp) -> Result<Vec<FlagStatus>, RoundError> {
        let (_, config) = self.read()?;
        let fleet = self.evidence()?;
        let round = Round { now, max_age: self.max_age, version: config.version };
        let mut out = Vec::new();
        for (key, flag) in &config.flags {
            if !decide::managed(flag) {
                continue;
            }
            let evidence = fleet.get(key).cloned().unwrap_or_default();
            let mut test = StageTest::for_flag(flag);
            let decision = decide::decide(flag, &evidence, &mut test, &round);
            let current = flag.current_stage();
            let entered = flag.rollout.as_ref().and_then(|r| r.entered_at_millis());
            let in_stage = entered.map(|at| {
                Duration::from_millis(u64::try_from(now.as_millisecond() - at).unwrap_or(0))
            });
            let hold = current.and_then(|i| decide::hold_of(flag, i));
            let next_at = match (entered, hold) {
                (Some(at), Some(hold)) => {
                    Timestamp::from_millisecond(at.saturating_add(hold.as_millis() as i64)).ok()
                }
                _ => None,
            };
            out.push(FlagStatus {
                flag: key.clone(),
                stage: flag.stage.clone(),
                in_stage,
                hold,
                evidence: flag.stage.as_ref().and_then(|s| evidence.stages.get(s)).cloned(),
                comparison: test.last,
                confidence: flag.guard.as_ref().map(|g| g.confidence),
                decision,
                next: current.and_then(|i| flag.stages.get(i + 1)).map(|s| s.name.clone()),
                next_at,
            });
        }
        Ok(out)
    }

    /// The test of the flag's current stage, kept across rounds while the
    /// stage and its entry time stay the same.
    fn test(&mut self, key: &str, flag: &Flag) -> &mut StageTest {
        let id = (
            key.to_owned(),
            flag.stage.clone().unwrap_or_default(),
            flag.rollout.as_ref().and_then(|r| r.entered_at.clone()),
        );
        self.tests.retain(|(k, s, e), _| k != key || (s, e) == (&id.1, &id.2));
        self.tests.entry(id).or_insert_with(|| StageTest::for_flag(flag))
    }

    /// Writes the audit lines and calls the webhook.
    fn tell(&mut self, report: &mut Report) {
        if let Some(path) = &self.audit {
            let written =
                std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(
                    |mut file| {
                        let mut lines = String::new();
                        for action in &report.actions {
                            lines.push_str(&action.audit.to_string());
                            lines.push('\n');
                        }
                        file.write_all(lines.as_bytes())?;
                        file.sync_data()
                    },
                );
            if let Err(e) = written {
                report.warnings.push(format!("audit file {}: {e}", path.display()));
            }
        }
        #[cfg(feature = "http")]
        if let Some((url, agent)) = &self.webhook {
            for action in &report.actions {
                let body = action.audit.to_string();
                let sent = agent
                    .post(url.as_str())
                    .header("Content-Type", "application/json")
                    .send(body.as_bytes());
                if let Err(e) = sent {
                    report.warnings.push(format!("webhook {url}: {e}"));
                }
            }
        }
    }
}

/// Changes `flag` as `decision` says; whether anything changed. A hold on
/// a flag with no `entered_at` records one, so the hold has a start.
fn apply(flag: &mut Flag, decision: &Decision, now: Timestamp) -> bool {
    let unstamped = flag.rollout.as_ref().is_none_or(|r| r.entered_at.is_none());
    let failed = match decision {
        Decision::Advance { to, .. } => {
            flag.stage = Some(to.clone());
            None
        }
        Decision::StepBack { from, to, .. } => {
            match to {
                Some(to) => flag.stage = Some(to.clone()),
                None => flag.enabled = false,
            }
            Some(from.clone())
        }
        Decision::Hold(_) if unstamped && flag.enabled => None,
        Decision::Hold(_) | Decision::Pause(_) => return false,
    };
    let rollout = flag.rollout.get_or_insert_with(Box::default);
    rollout.entered_at = Some(crate::clock::format_rfc3339_millis(now.as_millisecond()));
    if failed.is_some() {
        rollout.failed = failed;
    }
    true
}

fn to_document(config: &Config) -> Vec<u8> {
    let mut document = serde_json::to_vec_pretty(config).unwrap_or_default();
    document.push(b'\n');
    document
}

fn audit_line(
    key: &str,
    decision: &Decision,
    evidence: &FlagEvidence,
    comparison: Option<&Comparison>,
    flag: &Flag,
    now: Timestamp,
) -> AuditLine {
    let (action, from, to) = match decision {
        Decision::Advance { from, to, .. } => ("advance", from.clone(), Some(to.clone())),
        Decision::StepBack { from, to, .. } => ("step_back", from.clone(), to.clone()),
        Decision::Hold(_) | Decision::Pause(_) => ("hold", String::new(), None),
    };
    let group = |rates: &crate::observe::evidence::UnitRates| json!({ "units": rates.units, "outcomes": rates.outcomes, "mean_error_rate": rates.mean() });
    let stage = evidence.stages.get(&from);
    let text = format!(
        "flagstone rollout: {key} {}",
        match decision {
            Decision::Advance { from, to, why } => format!("advanced {from} → {to}: {why}"),
            Decision::StepBack { from, to: Some(to), why } =>
                format!("stepped back {from} → {to}: {why}"),
            Decision::StepBack { from, to: None, why } =>
                format!("stepped back {from} → disabled: {why}"),
            other => other.to_string(),
        }
    );
    AuditLine(json!({
        "time": crate::clock::format_rfc3339_millis(now.as_millisecond()),
        "flag": key,
        "action": action,
        "from": from,
        "to": to,
        "version": Value::Null,
        "why": decision.why(),
        "evidence": {
            "instances": stage.map(|s| s.instances),
            "exposed": stage.map(|s| group(&s.exposed)),
            "control": stage.map(|s| group(&s.control)),
            "trips": evidence.trips.get(&from),
            "lower": comparison.map(|c| c.lower),
            "upper": comparison.map(|c| c.upper),
            "confidence": flag.guard.as_ref().map(|g| g.confidence),
        },
        "text": text,
    }))
}
