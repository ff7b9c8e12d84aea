//! The rollout controller: each safety rule of the decision core, and the
//! controller over a simulated fleet of real stores (seeded traffic, an
//! injected clock) publishing to a real directory target, with audit
//! lines and a lost compare-and-swap. The end-to-end test against real
//! etcd and Prometheus servers is `rollout_e2e.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flagstone::config::Config;
use flagstone::observe::evidence::UnitRates;
use flagstone::publish::{self, Directory, PublishError, Published, Target};
use flagstone::rollout::{
    Controller, Decision, EvidenceSource, FlagEvidence, Round, StageEvidence, StageTest, decide,
    managed,
};
use flagstone::{Context, FlagStore, ManualClock, Outcome, Reason};
use jiff::Timestamp;

use crate::rng::Rng;

const PLAN: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "tenants": ["t-00000", "t-00001"] } },
  "flags": {
    "checkout": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "internal", "cohorts": ["staff"], "hold": "10s" },
                  { "name": "canary", "percent": 10, "hold": "30s" },
                  { "name": "everyone", "percent": 100 } ],
      "stage": "internal",
      "guard": { "holdback": 20, "max_error_ratio": 2.0, "min_units": 50, "window_secs": 60 },
      "rollout": { "entered_at": "2026-12-01T10:00:00Z" } },
    "untouched": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "half", "percent": 50 }, { "name": "all" } ], "stage": "half" }
  } }"#;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn flag_of(doc: &str, key: &str) -> flagstone::config::Flag {
    Config::from_json(doc).expect("valid").flags[key].clone()
}

/// `PLAN` with the checkout flag's current stage and extra JSON edits.
fn plan(stage: &str, edit: impl Fn(&mut serde_json::Value)) -> flagstone::config::Flag {
    let mut value: serde_json::Value = serde_json::from_str(PLAN).expect("json");
    value["flags"]["checkout"]["stage"] = stage.into();
    edit(&mut value["flags"]["checkout"]);
    flag_of(&value.to_string(), "checkout")
}

/// Units with `rate` errors over 20 outcomes each.
fn rates(units: u64, rate: f64) -> UnitRates {
    let mut r = UnitRates::default();
    for i in 0..units {
        // Spread around the rate: half the units at 0, half at twice it.
        let errors = if i % 2 == 0 { 0 } else { (rate * 2.0 * 20.0).round() as u64 };
        r.add(20, errors);
    }
    r
}

fn healthy(stage: &str, units: u64) -> FlagEvidence {
    let mut e = FlagEvidence::of(stage, StageEvidence::new(rates(units, 0.02), rates(units, 0.02)));
    e.versions = Some((1, 1));
    e
}

fn round(now: &str) -> Round {
    Round::new(at(now), 1)
}

fn decide_now(flag: &flagstone::config::Flag, evidence: &FlagEvidence, now: &str) -> Decision {
    let mut test = StageTest::new(flag.guard.as_ref().expect("guarded"));
    decide(flag, evidence, &mut test, &round(now))
}

#[test]
fn a_flag_without_rollout_or_hold_is_never_touched() {
    assert!(!managed(&flag_of(PLAN, "untouched")));
    assert!(managed(&flag_of(PLAN, "checkout")));
}

#[test]
fn a_healthy_stage_advances_only_after_its_hold() {
    let flag = plan("canary", |_| {});
    let early = decide_now(&flag, &healthy("canary", 200), "2026-12-01T10:00:20Z");
    assert!(matches!(&early, Decision::Hold(why) if why.contains("20s of 30s")), "{early}");
    let due = decide_now(&flag, &healthy("canary", 200), "2026-12-01T10:00:30Z");
    assert!(
        matches!(&due, Decision::Advance { from, to, why }
            if from == "canary" && to == "everyone" && why.contains("not worse than control")),
        "{due}"
    );
    let last =
        decide_now(&plan("everyone", |_| {}), &healthy("everyone", 200), "2026-12-02T00:00:00Z");
    assert!(matches!(&last, Decision::Hold(why) if why.contains("complete")), "{last}");
}

#[test]
fn a_stage_too_small_to_test_advances_on_its_hold_alone() {
    let flag = plan("internal", |_| {});
    let two = healthy("internal", 2);
    let d = decide_now(&flag, &two, "2026-12-01T10:00:10Z");
    assert!(
        matches!(&d, Decision::Advance { to, why, .. } if to == "canary" && why.contains("too small to test")),
        "{d}"
    );
}

#[test]
fn missing_stale_or_unconverged_evidence_holds() {
    let flag = plan("canary", |_| {});
    let now = "2026-12-01T11:00:00Z";
    let none = decide_now(&flag, &FlagEvidence::default(), now);
    assert!(matches!(&none, Decision::Hold(why) if why.contains("no evidence")), "{none}");

    let mut stale = healthy("canary", 200);
    stale.stages.get_mut("canary").expect("canary").age = Some(Duration::from_secs(300));
    let d = decide_now(&flag, &stale, now);
    assert!(matches!(&d, Decision::Hold(why) if why.contains("stale")), "{d}");

    let elsewhere = healthy("internal", 200);
    let d = decide_now(&flag, &elsewhere, now);
    assert!(matches!(&d, Decision::Hold(why) if why.contains("converge")), "{d}");

    let mut split = healthy("canary", 200);
    split.stages.insert("internal".into(), StageEvidence::new(rates(2, 0.0), rates(2, 0.0)));
    let d = decide_now(&flag, &split, now);
    assert!(matches!(&d, Decision::Hold(why) if why.contains("converge")), "{d}");

    let mut lagging = healthy("canary", 200);
    lagging.versions = Some((0, 1));
    let d = decide_now(&flag, &lagging, now);
    assert!(matches!(&d, Decision::Hold(why) if why.contains("still serve version 0")), "{d}");

    let no_entry = plan("canary", |f| f["rollout"] = serde_json::json!({}));
    let d = decide_now(&no_entry, &healthy("canary", 200), now);
    assert!(matches!(&d, Decision::Hold(why) if why.contains("entered_at")), "{d}");
}

#[test]
fn a_regression_or_a_trip_steps_back_one_stage_at_once_window_or_not() {
    // The next stage's window is closed: that must not delay a step back.
    let closed = |f: &mut serde_json::Value| {
        f["stages"][2]["windows"] =
            serde_json::json!([{ "from": "02:00", "to": "03:00", "tz": "Europe/Berlin" }]);
    };
    let flag = plan("canary", closed);
    let mut bad = healthy("canary", 200);
    bad.stages.get_mut("canary").expect("canary").exposed = rates(200, 0.30);
    // Within the hold, outside the window.
    let d = decide_now(&flag, &bad, "2026-12-01T10:00:05Z");
    assert!(
        matches!(&d, Decision::StepBack { from, to: Some(to), why }
            if from == "canary" && to == "internal" && why.contains("credibly worse")),
        "{d}"
    );
    let mut tripped = healthy("canary", 2);
    tripped.trips.insert("canary".into(), 1);
    let d = decide_now(&flag, &tripped, "2026-12-01T10:00:05Z");
    assert!(
        matches!(&d, Decision::StepBack { why, .. } if why.contains("1 instance's guard")),
        "{d}"
    );
    // A trip of another stage is not this stage's.
    let mut other = healthy("canary", 200);
    other.trips.insert("everyone".into(), 1);
    assert!(!decide_now(&flag, &other, "2026-12-01T10:00:05Z").acts());
    // The first stage steps back to off.
    let mut first = healthy("internal", 2);
    first.trips.insert("internal".into(), 2);
    let d = decide_now(&plan("internal", |_| {}), &first, "2026-12-01T10:00:05Z");
    assert!(matches!(&d, Decision::StepBack { to: None, .. }), "{d}");
}

#[test]
fn a_stage_is_never_entered_outside_its_windows() {
    let windows = |f: &mut serde_json::Value| {
        f["rollout"]["windows"] = serde_json::json!([
            { "days": ["mon", "tue", "wed", "thu"], "from": "02:00", "to": "05:00", "tz": "Europe/Berlin" }
        ]);
    };
    let flag = plan("canary", windows);
    // Tuesday 12:00 Berlin: closed, opens Wednesday 02:00 Berlin.
    let d = decide_now(&flag, &healthy("canary", 200), "2026-12-01T11:00:00Z");
    assert!(
        matches!(&d, Decision::Hold(why) if why.contains("outside its windows")
            && why.contains("2026-12-02T01:00:00Z")),
        "{d}"
    );
    // Wednesday 03:00 Berlin: open.
    let d = decide_now(&flag, &healthy("canary", 200), "2026-12-02T02:00:00Z");
    assert!(matches!(&d, Decision::Advance { .. }), "{d}");
    // A stage's own windows win over the flag's.
    let own = plan("canary", |f| {
        windows(f);
        f["stages"][2]["windows"] = serde_json::json!([{ "from": "11:00", "to": "12:00" }]);
    });
    let d = decide_now(&own, &healthy("canary", 200), "2026-12-01T11:30:00Z");
    assert!(matches!(&d, Decision::Advance { .. }), "{d}");
}

#[test]
fn paused_manual_and_failed_stages_hold() {
    let mut tripped = healthy("canary", 200);
    tripped.trips.insert("canary".into(), 3);
    let paused = plan("canary", |f| f["rollout"]["paused"] = true.into());
    let d = decide_now(&paused, &tripped, "2026-12-01T12:00:00Z");
    assert!(matches!(d, Decision::Pause(_)), "a paused flag is never touched, step backs included");

    let manual = plan("canary", |f| f["stages"][2]["manual"] = true.into());
    let d = decide_now(&manual, &healthy("canary", 200), "2026-12-01T12:00:00Z");
    assert!(matches!(&d, Decision::Hold(why) if why.contains("everyone is manual")), "{d}");

    let failed = plan("canary", |f| f["rollout"]["failed"] = "everyone".into());
    let d = decide_now(&failed, &healthy("canary", 200), "2026-12-01T12:00:00Z");
    assert!(matches!(&d, Decision::Hold(why) if why.contains("failed before")), "{d}");
}

#[test]
fn validation_names_where_a_rollout_is_wrong() {
    let mut value: serde_json::Value = serde_json::from_str(PLAN).expect("json");
    let f = &mut value["flags"]["checkout"];
    f["stages"][1]["hold"] = "soon".into();
    f["rollout"]["windows"] = serde_json::json!([{ "days": ["mon", "noday"], "from": "2:00", "to": "05:00", "tz": "Nowhere/City" }]);
    f["rollout"]["failed"] = "nope".into();
    value["flags"]["untouched"]["stages"][0]["hold"] = "5m".into();
    let err = Config::from_json(value.to_string()).expect_err("invalid").to_string();
    for path in [
        "flags.checkout.stages[1].hold",
        "flags.checkout.rollout.windows[0].days[1]",
        "flags.checkout.rollout.windows[0].from",
        "flags.checkout.rollout.windows[0].tz",
        "flags.checkout.rollout.failed",
        "flags.untouched.guard: missing",
    ] {
        assert!(err.contains(path), "{path} in {err}");
    }
}

/// The fleet's evidence summed from the stores' own metrics: exactly what
/// the Prometheus source's queries sum from their exports.
struct Stores(Vec<Arc<FlagStore>>);

impl EvidenceSource for Stores {
    fn evidence(&mut self) -> Result<BTreeMap<String, FlagEvidence>, String> {
        let mut fleet: BTreeMap<String, FlagEvidence> = BTreeMap::new();
        let (mut oldest, mut newest) = (u64::MAX, 0);
        for store in &self.0 {
            let m = store.metrics();
            oldest = oldest.min(m.version());
            newest = newest.max(m.version());
            for g in m.guards() {
                let e = fleet.entry(g.flag.clone()).or_default();
                let s = e.stages.entry(g.stage.to_owned()).or_default();
                s.exposed.merge(&g.exposed);
                s.control.merge(&g.control);
                s.instances += 1;
                s.age = Some(Duration::ZERO);
            }
            for s in m.stepped_back() {
                *fleet
                    .entry(s.flag.clone())
                    .or_default()
                    .trips
                    .entry(s.stage.clone())
                    .or_default() += 1;
            }
        }
        for e in fleet.values_mut() {
            e.versions = Some((oldest, newest));
        }
        Ok(fleet)
    }

    fn describe(&self) -> String {
        format!("{} simulated instances", self.0.len())
    }
}

struct Fleet {
    clock: Arc<ManualClock>,
    stores: Vec<Arc<FlagStore>>,
    dir: tempfile::TempDir,
    rng: Rng,
}

impl Fleet {
    fn new(doc: &str) -> Self {
        let clock = Arc::new(ManualClock::from_rfc3339("2026-12-01T10:00:00Z").expect("time"));
        let dir = tempfile::tempdir().expect("dir");
        publish::publish(&mut Directory::new(dir.path()), doc.as_bytes(), None).expect("publish");
        let stores: Vec<Arc<FlagStore>> = (0..3)
            .map(|_| {
                Arc::new(FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks())
            })
            .collect();
        let fleet = Self { clock, stores, dir, rng: Rng(7) };
        fleet.deliver();
        fleet
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.clock.now_millis_value()).expect("time")
    }

    fn controller(&self) -> Controller {
        Controller::new(
            Box::new(Directory::new(self.dir.path())),
            Box::new(Stores(self.stores.clone())),
        )
        .audit_file(self.dir.path().join("audit.jsonl"))
    }

    /// Every instance applies what is published (a newer version only).
    fn deliver(&self) {
        let doc = std::fs::read(self.dir.path().join("flags.json")).expect("published");
        for store in &self.stores {
            if let Err(e) = store.apply_json(&doc)
                && store.version() == 0
            {
                panic!("{e}");
            }
        }
    }

    /// One second of traffic: 3,000 tenants, one request each, on the
    /// instance `tenant % 3`; `error(reason)` is the error rate. Guards look
    /// every 200 ms.
    fn second(&mut self, error: impl Fn(&Reason<'_>) -> f64) {
        for step in 0..5 {
            for i in (step..3000).step_by(5) {
                let name = format!("t-{i:05}");
                let ctx = Context::new().tenant(&name);
                let store = self.stores[i % 3].clone();
                let rate = error(&store.evaluate("checkout", &ctx).reason);
                let outcome = if self.rng.chance(rate) { Outcome::Error } else { Outcome::Success };
                store.record("checkout", &ctx, outcome);
            }
            self.clock.advance(Duration::from_millis(200));
            for store in &self.stores {
                store.check_guards();
            }
        }
    }

    fn stage(&self) -> String {
        let doc = std::fs::read(self.dir.path().join("flags.json")).expect("published");
        let config = Config::from_json(doc).expect("valid");
        config.flags["checkout"].stage.clone().unwrap_or_default()
    }
}

/// Runs `seconds` of traffic with a round every 2 s; the (second, action)
/// of each action.
fn run(
    fleet: &mut Fleet,
    controller: &mut Controller,
    seconds: u64,
    error: impl Fn(&Reason<'_>) -> f64 + Copy,
) -> Vec<(u64, Decision)> {
    let mut actions = Vec::new();
    for t in 1..=seconds {
        fleet.second(error);
        if t % 2 == 0 {
            let report = controller.round(fleet.now()).expect("round");
            assert!(report.warnings.is_empty(), "{:?}", report.warnings);
            for a in report.actions {
                println!("{t:>3}s {} {}", a.flag, a.decision);
                actions.push((t, a.decision));
            }
            if report.published.is_some() {
                fleet.deliver();
                let versions: Vec<u64> = fleet.stores.iter().map(|s| s.version()).collect();
                assert!(versions.iter().all(|&v| v == versions[0]), "{versions:?}");
            }
        }
    }
    actions
}

#[test]
fn a_healthy_flag_advances_through_its_stages_in_order_after_each_hold() {
    let mut fleet = Fleet::new(PLAN);
    let mut controller = fleet.controller();
    let actions = run(&mut fleet, &mut controller, 80, |_| 0.01);
    let steps: Vec<(&str, &str)> = actions
        .iter()
        .map(|(_, d)| match d {
            Decision::Advance { from, to, .. } => (from.as_str(), to.as_str()),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(steps, [("internal", "canary"), ("canary", "everyone")]);
    // internal: 10 s hold from its entry at 0 s; canary: 30 s from its entry.
    let (first, second) = (actions[0].0, actions[1].0);
    assert_eq!(first, 10);
    assert!((40..=50).contains(&second), "canary → everyone at {second}s");
    let Decision::Advance { why, .. } = &actions[1].1 else { unreachable!() };
    assert!(why.contains("not worse than control"), "the canary was tested: {why}");
    assert_eq!(fleet.stage(), "everyone");
    // The untouched flag is as it was.
    let doc = std::fs::read(fleet.dir.path().join("flags.json")).expect("published");
    let config = Config::from_json(doc).expect("valid");
    assert_eq!(config.flags["untouched"], flag_of(PLAN, "untouched"));
    assert_eq!(config.version, 3, "one version per step");
    let audit = std::fs::read_to_string(fleet.dir.path().join("audit.jsonl")).expect("audit");
    let lines: Vec<serde_json::Value> =
        audit.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["action"], "advance");
    assert_eq!(lines[1]["version"], 3);
    assert!(lines[1]["evidence"]["exposed"]["units"].as_u64().expect("units") > 100);
    assert!(
        lines[1]["text"].as_str().expect("text").contains("checkout advanced canary → everyone")
    );
}

#[test]
fn a_faulty_canary_is_stepped_back_for_the_whole_fleet_and_not_retried() {
    let mut fleet = Fleet::new(PLAN);
    let mut controller = fleet.controller();
    // Exposed canary requests fail 30% of the time.
    let faulty = |reason: &Reason<'_>| match reason {
        Reason::Stage { name: "canary", .. } => 0.30,
        _ => 0.01,
    };
    let actions = run(&mut fleet, &mut controller, 60, faulty);
    assert!(matches!(&actions[0].1, Decision::Advance { to, .. } if to == "canary"));
    let (t, back) = &actions[1];
    assert!(
        matches!(back, Decision::StepBack { from, to: Some(to), .. } if from == "canary" && to == "internal"),
        "{back}"
    );
    let since_fault = t - actions[0].0;
    println!("stepped back {since_fault}s after the canary was entered: {back}");
    assert!(since_fault <= 15, "{since_fault}s");
    assert_eq!(actions.len(), 2, "the failed canary is not entered again");
    assert_eq!(fleet.stage(), "internal");
    let answers = |store: &FlagStore| -> Vec<bool> {
        (0..3000)
            .map(|i| store.is_enabled("checkout", &Context::new().tenant(&format!("t-{i:05}"))))
            .collect()
    };
    let first = answers(&fleet.stores[0]);
    assert!(first.iter().filter(|&&on| on).count() <= 2, "back to (at most) the staff tenants");
    for store in &fleet.stores[1..] {
        assert_eq!(answers(store), first, "every instance answers alike");
    }
    let audit = std::fs::read_to_string(fleet.dir.path().join("audit.jsonl")).expect("audit");
    let step: serde_json::Value =
        serde_json::from_str(audit.lines().nth(1).expect("second line")).expect("json");
    assert_eq!(step["action"], "step_back");
    assert_eq!(step["to"], "internal");
    assert!(step["evidence"].is_object());
    let status = controller.status(fleet.now()).expect("status");
    assert!(
        matches!(&status[0].decision, Decision::Hold(why) if why.contains("canary failed before")),
        "{:?}",
        status[0].decision
    );
}

/// A directory target where another publisher writes once, between the
/// controller's read and its write.
#[derive(Debug)]
struct Raced {
    inner: Directory,
    rival: Option<Vec<u8>>,
}

impl Target for Raced {
    fn read(&mut self) -> Result<Option<Published>, PublishError> {
        self.inner.read()
    }

    fn write(&mut self, doc: &[u8], sig: Option<&[u8]>, at: i64) -> Result<i64, PublishError> {
        if let Some(rival) = self.rival.take() {
            publish::publish(&mut self.inner, &rival, None).expect("rival publishes");
        }
        self.inner.write(doc, sig, at)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn a_decision_that_loses_the_compare_and_swap_reads_again_and_decides_again() {
    let mut fleet = Fleet::new(PLAN);
    for _ in 0..12 {
        fleet.second(|_| 0.01);
    }
    // The rival bumps the version and pauses the flag.
    let mut rival: serde_json::Value = serde_json::from_str(PLAN).expect("json");
    rival["version"] = 2.into();
    rival["flags"]["checkout"]["rollout"]["paused"] = true.into();
    let target =
        Raced { inner: Directory::new(fleet.dir.path()), rival: Some(rival.to_string().into()) };
    let mut controller = Controller::new(Box::new(target), Box::new(Stores(fleet.stores.clone())));
    let report = controller.round(fleet.now()).expect("round");
    // Decided on version 1 (advance), lost the race, read version 2
    // (paused) and decided again: nothing to do.
    assert_eq!(report.read_version, 2);
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert!(matches!(report.decisions["checkout"], Decision::Pause(_)));
    assert_eq!(fleet.stage(), "internal");
}

#[test]
fn a_dry_run_decides_and_publishes_nothing() {
    let fleet = Fleet::new(PLAN);
    let mut controller = fleet.controller().dry_run(true);
    let report = controller.round(at("2026-12-01T10:00:30Z")).expect("round");
    // No evidence yet (no traffic): it holds, and says so.
    assert!(
        matches!(&report.decisions["checkout"], Decision::Hold(why) if why.contains("no evidence"))
    );
    assert_eq!(report.published, None);
    assert!(!fleet.dir.path().join("audit.jsonl").exists());
}

/// The webhook hears each action: a JSON body with a Slack-style `text`.
#[cfg(feature = "http")]
#[test]
fn each_action_is_posted_to_the_webhook() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let heard = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a post");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (mut line, mut length, mut request) = (String::new(), 0, String::new());
        while reader.read_line(&mut line).expect("line") > 2 {
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = n.trim().parse().expect("length");
            }
            request.push_str(&line);
            line.clear();
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        (request, String::from_utf8(body).expect("utf-8"))
    });
    let mut fleet = Fleet::new(PLAN);
    for _ in 0..12 {
        fleet.second(|_| 0.01);
    }
    let mut controller = fleet.controller().webhook(url);
    let report = controller.round(fleet.now()).expect("round");
    assert_eq!(report.actions.len(), 1, "internal → canary");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let (request, body) = heard.join().expect("heard");
    assert!(request.starts_with("POST /hook"), "{request}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["action"], "advance");
    assert_eq!(body["version"], 2);
    assert!(body["text"].as_str().expect("text").contains("checkout advanced internal → canary"));
}
