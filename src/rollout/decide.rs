//! The pure decision: given a flag, what the fleet reports about it and the
//! time, advance, step back, hold or pause. No I/O and no clock of its own,
//! so every safety rule is a plain test.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use super::schedule::{self, OpenWindow};
use crate::config::{Flag, Guard};
use crate::observe::evidence::{Comparison, ErrorRule, ErrorTest, UnitRates};

/// What the fleet reports about one flag: its guards' evidence summed over
/// instances, per stage they watch, guard trips, and the versions served.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FlagEvidence {
    /// Per stage the instances' guards watch (the newest in effect on the
    /// version each serves): its evidence summed over those instances.
    /// More than one stage means the fleet has not converged.
    pub stages: BTreeMap<String, StageEvidence>,
    /// Per stage: instances whose guard stepped it back on the version
    /// they serve (a local trip, as evidence for the fleet).
    pub trips: BTreeMap<String, u64>,
    /// The oldest version any instance serves, and the newest.
    pub versions: Option<(u64, u64)>,
}

/// One stage's evidence, summed over the instances reporting it.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StageEvidence {
    /// The exposed units.
    pub exposed: UnitRates,
    /// The control units (held back, or not exposed).
    pub control: UnitRates,
    /// Instances reporting it.
    pub instances: u64,
    /// The age of the oldest instance's newest sample.
    pub age: Option<Duration>,
}

impl StageEvidence {
    /// Fresh evidence from one instance.
    pub fn new(exposed: UnitRates, control: UnitRates) -> Self {
        Self { exposed, control, instances: 1, age: Some(Duration::ZERO) }
    }
}

impl FlagEvidence {
    /// Evidence for one stage.
    pub fn of(stage: impl Into<String>, evidence: StageEvidence) -> Self {
        Self { stages: BTreeMap::from([(stage.into(), evidence)]), ..Self::default() }
    }
}

/// What the controller does with a flag this round.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Decision {
    /// Make `to`, the next stage, current.
    Advance {
        /// The current stage.
        from: String,
        /// The next.
        to: String,
        /// Why it may (the hold it kept, the evidence).
        why: String,
    },
    /// Step the current stage back: `to` becomes current (`None`: it was
    /// the first stage, so the flag is disabled).
    StepBack {
        /// The current stage.
        from: String,
        /// The previous one.
        to: Option<String>,
        /// What the evidence showed.
        why: String,
    },
    /// Leave the flag as it is, and why.
    Hold(String),
    /// The flag is paused: the controller leaves it alone.
    Pause(String),
}

impl Decision {
    /// Whether it changes the config.
    pub fn acts(&self) -> bool {
        matches!(self, Decision::Advance { .. } | Decision::StepBack { .. })
    }

    /// The reason in words.
    pub fn why(&self) -> &str {
        match self {
            Decision::Advance { why, .. } | Decision::StepBack { why, .. } => why,
            Decision::Hold(why) | Decision::Pause(why) => why,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Advance { from, to, why } => write!(f, "advance {from} → {to}: {why}"),
            Decision::StepBack { from, to: Some(to), why } => {
                write!(f, "step back {from} → {to}: {why}")
            }
            Decision::StepBack { from, to: None, why } => {
                write!(f, "step back {from} → disabled (it is the first stage): {why}")
            }
            Decision::Hold(why) => write!(f, "hold: {why}"),
            Decision::Pause(why) => write!(f, "paused: {why}"),
        }
    }
}

/// The tests the controller keeps for one stage between rounds (its error
/// rules), and what they found at the last look.
#[derive(Clone, Debug)]
pub struct StageTest {
    tests: Vec<ErrorTest>,
    /// The most telling comparison at the last look (the one closest to
    /// regressed), when there was one.
    pub last: Option<Comparison>,
}

impl StageTest {
    /// The tests of a guard's error rules.
    pub fn new(guard: &Guard) -> Self {
        let rules = [
            guard.max_error_ratio.map(ErrorRule::Ratio),
            guard.max_error_increase.map(ErrorRule::Increase),
        ];
        let tests = rules
            .into_iter()
            .flatten()
            .map(|rule| ErrorTest::new(rule, guard.confidence, guard.min_units))
            .collect();
        Self { tests, last: None }
    }

    /// No test: for a flag without a guard (the decision holds).
    pub fn none() -> Self {
        Self { tests: Vec::new(), last: None }
    }

    /// The tests of `flag`'s guard, or none without one.
    pub fn for_flag(flag: &Flag) -> Self {
        flag.guard.as_ref().map_or_else(Self::none, Self::new)
    }

    /// Looks at the evidence; the comparison that decides.
    fn check(&mut self, exposed: &UnitRates, control: &UnitRates) -> Option<Comparison> {
        let worst = self
            .tests
            .iter_mut()
            .map(|t| t.check(exposed, control))
            .max_by(|a, b| a.lower.total_cmp(&b.lower));
        self.last = worst;
        worst
    }
}

/// What the controller needs besides the flag and its evidence.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Round {
    /// The time of the decision.
    pub now: Timestamp,
    /// Evidence older than this is stale: hold.
    pub max_age: Duration,
    /// The version the controller last read (the fleet should serve it).
    pub version: u64,
}

impl Round {
    /// A round at `now` over `version`, evidence fresh within 60 s.
    pub fn new(now: Timestamp, version: u64) -> Self {
        Self { now, max_age: Duration::from_secs(60), version }
    }
}

/// Whether the controller manages `flag`: it has `rollout`, or a stage has
/// a `hold`. Any other flag is never touched.
pub fn managed(flag: &Flag) -> bool {
    flag.rollout.is_some() || flag.stages.iter().any(|s| s.hold.is_some())
}

/// The hold of stage `index`: its own, else the flag's `rollout.hold`.
pub fn hold_of(flag: &Flag, index: usize) -> Option<Duration> {
    let text = flag
        .stages
        .get(index)
        .and_then(|s| s.hold.as_deref())
        .or_else(|| flag.rollout.as_ref()?.hold.as_deref())?;
    schedule::parse_hold(text).ok()
}

/// The windows stage `index` may be entered in: its own, else the flag's.
pub fn windows_of(flag: &Flag, index: usize) -> Vec<OpenWindow> {
    let Some(stage) = flag.stages.get(index) else { return Vec::new() };
    let windows = match (&stage.windows, &flag.rollout) {
        (own, _) if !own.is_empty() => own,
        (_, Some(rollout)) => &rollout.windows,
        _ => return Vec::new(),
    };
    windows.iter().filter_map(|w| OpenWindow::new(w).ok()).collect()
}

/// Decides what to do with `flag` this round. `test` carries the stage's
/// sequential test between rounds: start a new one whenever the current
/// stage (or its `entered_at`) changes.
///
/// The rules, in order:
/// 1. a paused flag is left alone, step backs included;
/// 2. a guard trip on any instance, or fresh evidence that the exposed
///    units are credibly worse than the control, steps the current stage
///    back at once, window or not, one stage at a time;
/// 3. missing or stale evidence, or a fleet that has not converged on the
///    version read, holds (the controller never advances blind);
/// 4. the stage must have kept its hold, counted from `rollout.entered_at`;
/// 5. a stage too small to test (fewer than the guard's `min_units` units
///    in a group) advances on its hold alone;
/// 6. the next stage must not be the one that failed, `manual`, or
///    outside its windows.
pub fn decide(
    flag: &Flag,
    evidence: &FlagEvidence,
    test: &mut StageTest,
    round: &Round,
) -> Decision {
    let rollout = flag.rollout.as_deref().cloned().unwrap_or_default();
    if rollout.paused {
        return Decision::Pause("rollout.paused is set".into());
    }
    if !flag.enabled {
        return Decision::Hold("the flag is disabled".into());
    }
    let Some(current) = flag.current_stage() else {
        return Decision::Hold("the flag has no current stage".into());
    };
    let name = flag.stages[current].name.clone();
    let back = || current.checked_sub(1).map(|i| flag.stages[i].name.clone());

    // 2. Evidence against the stage acts at once.
    let tripped = evidence.trips.get(&name).copied().unwrap_or(0);
    if tripped > 0 {
        let why = format!(
            "{tripped} instance{} guard stepped {name} back",
            if tripped == 1 { "'s" } else { "s'" }
        );
        return Decision::StepBack { from: name, to: back(), why };
    }
    let own = evidence.stages.get(&name);
    let fresh = own.and_then(|e| e.age).is_some_and(|age| age <= round.max_age);
    let comparison = match (own, &flag.guard) {
        (Some(e), Some(_)) if fresh => test.check(&e.exposed, &e.control),
        _ => None,
    };
    if let (Some(c), Some(e)) = (comparison, own)
        && c.regressed
    {
        let why = format!("exposed units credibly worse than control: {}", describe(e, &c));
        return Decision::StepBack { from: name, to: back(), why };
    }

    // 3. Never advance blind.
    let Some(guard) = &flag.guard else {
        return Decision::Hold("no guard: the controller has no rule to test the stage by".into());
    };
    let Some(own) = own else {
        return Decision::Hold(match evidence.stages.keys().next() {
            Some(other) => {
                format!("the fleet reports stage {other}, not {name}: waiting for it to converge")
            }
            None => "no evidence: no instance reports this flag's guard".into(),
        });
    };
    if let Some(other) = evidence.stages.keys().find(|s| **s != name) {
        return Decision::Hold(format!(
            "some instances still report stage {other}: waiting for the fleet to converge"
        ));
    }
    if let Some((oldest, _)) = evidence.versions
        && oldest < round.version
    {
        return Decision::Hold(format!(
            "instances still serve version {oldest}, not {}: waiting for the fleet",
            round.version
        ));
    }
    if !fresh {
        return Decision::Hold(match own.age {
            Some(age) => format!(
                "stale evidence: the oldest instance's last sample is {}s old (limit {}s)",
                age.as_secs(),
                round.max_age.as_secs()
            ),
            None => "no evidence: no sample time".into(),
        });
    }

    // 4. The hold.
    let Some(next) = flag.stages.get(current + 1) else {
        return Decision::Hold(format!("complete: {name} is the last stage"));
    };
    let Some(entered) = rollout.entered_at_millis() else {
        return Decision::Hold(format!(
            "time in {name} unknown (no rollout.entered_at): counting from now"
        ));
    };
    let held = Duration::from_millis(
        u64::try_from(round.now.as_millisecond().saturating_sub(entered)).unwrap_or(0),
    );
    let hold = hold_of(flag, current).unwrap_or(Duration::ZERO);
    if held < hold {
        return Decision::Hold(format!(
            "holding {name}: {} of {} healthy",
            human(held),
            human(hold)
        ));
    }

    // 5. Too small to test, or within the rule.
    let verdict = match &comparison {
        Some(c) if c.enough => format!("not worse than control ({})", describe(own, c)),
        _ => format!(
            "too small to test (fewer than {} units of {} outcomes in a group): on its hold alone",
            guard.min_units,
            crate::observe::evidence::MIN_UNIT_OUTCOMES
        ),
    };

    // 6. The next stage.
    if rollout.failed.as_deref() == Some(next.name.as_str()) {
        return Decision::Hold(format!(
            "{} failed before: remove rollout.failed to let the controller try it again",
            next.name
        ));
    }
    if next.manual {
        return Decision::Hold(format!("{} is manual: a person advances into it", next.name));
    }
    if let Err(opens) = schedule::open(&windows_of(flag, current + 1), round.now) {
        let when = opens.map_or("not within a week".into(), |t| format!("next opens {t}"));
        return Decision::Hold(format!("{} is outside its windows ({when})", next.name));
    }
    Decision::Advance {
        from: name,
        to: next.name.clone(),
        why: format!("held {} (hold {}); {verdict}", human(held), human(hold)),
    }
}

fn describe(evidence: &StageEvidence, c: &Comparison) -> String {
    format!(
        "{:.2}% over {} exposed units vs {:.2}% over {} control, bound [{:.3}, {:.3}]",
        c.exposed * 100.0,
        evidence.exposed.units,
        c.control * 100.0,
        evidence.control.units,
        c.lower,
        c.upper
    )
}

/// A duration in the config's own words: `90s`, `30m`, `2h5m`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}
