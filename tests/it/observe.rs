//! Observability: counts per stage, outcomes per cohort, guards, change
//! events and the Prometheus export.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstone::config::GuardAction;
use flagstone::diff::ChangeKind;
use flagstone::observe::{ChangeCause, StoreEvent};
use flagstone::{Context, FlagStore, ManualClock, Outcome, Reason};

const RELEASE: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "users": ["u-staff"] }, "blocked": { "tenants": ["t-blocked"] } },
  "flags": {
    "checkout": { "enabled": true, "exclude": ["blocked"],
      "stages": [ { "name": "internal", "cohorts": ["staff"] },
                  { "name": "canary", "percent": 50 },
                  { "name": "all" } ],
      "stage": "canary",
      "variants": [ { "name": "control", "weight": 1 }, { "name": "treatment", "weight": 1 } ] },
    "dark": { "enabled": false },
    "everyone": { "enabled": true }
  } }"#;

#[test]
fn every_evaluation_is_counted_by_stage_variant_and_result() {
    let store = FlagStore::from_json(RELEASE).expect("valid");
    let staff = Context::new().user("u-staff");
    let blocked = Context::new().user("u-staff").tenant("t-blocked");
    assert!(store.is_enabled("checkout", &staff));
    assert!(!store.is_enabled("checkout", &blocked));
    assert!(!store.is_enabled("dark", &staff));
    assert!(store.is_enabled("everyone", &staff));
    assert!(!store.is_enabled("no-such-flag", &staff));
    let ev = store.evaluate("checkout", &staff);
    let variant = ev.variant.expect("exposed contexts get a variant");

    let (mut canary, mut outside) = (0, 0);
    for i in 0..1000 {
        let user = format!("u-{i}");
        match store.evaluate("checkout", &Context::new().user(&user)).reason {
            Reason::Stage { name: "canary", .. } => canary += 1,
            Reason::NotExposed => outside += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(canary > 400 && outside > 400, "{canary} / {outside}");

    let m = store.metrics();
    assert_eq!(m.evaluations_of("checkout", "internal"), 2);
    assert_eq!(m.evaluations_of("checkout", "excluded"), 1);
    assert_eq!(m.evaluations_of("checkout", "canary"), canary);
    assert_eq!(m.evaluations_of("checkout", "not-exposed"), outside);
    assert_eq!(m.evaluations_of("dark", "off"), 1);
    assert_eq!(m.evaluations_of("everyone", "on"), 1);
    assert_eq!(m.evaluations_of("", "unknown"), 1);

    let text = m.to_prometheus();
    let lines = [
        r#"flagstone_evaluations_total{feature_flag_key="checkout",stage="internal",feature_flag_result_variant="",result="on"} 1"#
            .to_owned(),
        format!(
            r#"flagstone_evaluations_total{{feature_flag_key="checkout",stage="internal",feature_flag_result_variant="{variant}",result="on"}} 1"#
        ),
        r#"flagstone_evaluations_total{feature_flag_key="checkout",stage="excluded",feature_flag_result_variant="",result="off"} 1"#
            .to_owned(),
        r#"flagstone_evaluations_total{feature_flag_key="dark",stage="off",feature_flag_result_variant="",result="off"} 1"#
            .to_owned(),
        r#"flagstone_evaluations_total{feature_flag_key="everyone",stage="on",feature_flag_result_variant="",result="on"} 1"#
            .to_owned(),
        format!(
            r#"flagstone_evaluations_total{{feature_flag_key="checkout",stage="not-exposed",feature_flag_result_variant="",result="off"}} {outside}"#
        ),
        "# TYPE flagstone_evaluations_total counter".to_owned(),
    ];
    for line in lines {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

#[test]
fn a_key_the_store_knew_is_counted_unknown_under_its_own_name() {
    let store = FlagStore::from_json(RELEASE).expect("valid");
    store
        .apply_json(r#"{ "version": 2, "flags": { "everyone": { "enabled": true } } }"#)
        .expect("valid");
    let handle = store.handle("future-flag");
    assert!(!store.is_enabled("checkout", &Context::new()));
    assert!(!handle.is_enabled(&Context::new()));
    let m = store.metrics();
    assert_eq!(m.evaluations_of("checkout", "unknown"), 1);
}

#[test]
fn counts_from_many_threads_add_up_exactly() {
    let store = Arc::new(FlagStore::from_json(RELEASE).expect("valid"));
    let handle = store.handle("everyone");
    std::thread::scope(|s| {
        for t in 0..4 {
            let (store, handle) = (&store, &handle);
            s.spawn(move || {
                let ctx = Context::new().user("u-1");
                for _ in 0..10_000 {
                    if t % 2 == 0 {
                        store.is_enabled("everyone", &ctx);
                    } else {
                        handle.is_enabled(&ctx);
                    }
                }
            });
        }
    });
    assert_eq!(store.metrics().evaluations_of("everyone", "on"), 40_000);
}

#[test]
fn counts_survive_new_configs_rollbacks_and_growing_tables() {
    let store = FlagStore::from_json(RELEASE).expect("valid");
    let ctx = Context::new().user("u-1");
    let snapshot = store.snapshot(); // keeps version 1's table alive
    for _ in 0..10 {
        store.is_enabled("everyone", &ctx);
    }
    // Enough new flags that the counter tables must grow.
    let many: Vec<String> = (0..500).map(|i| format!(r#""f{i}": {{ "enabled": true }}"#)).collect();
    let doc = format!(
        r#"{{ "version": 2, "flags": {{ "everyone": {{ "enabled": true }}, {} }} }}"#,
        many.join(",")
    );
    store.apply_json(&doc).expect("valid");
    for _ in 0..5 {
        store.is_enabled("everyone", &ctx);
        snapshot.is_enabled("everyone", &ctx); // an in-flight request on v1
    }
    assert_eq!(store.metrics().evaluations_of("everyone", "on"), 20);
    drop(snapshot);
    store.rollback().expect("kept");
    store.is_enabled("everyone", &ctx);
    let first = store.metrics();
    assert_eq!(first.evaluations_of("everyone", "on"), 21);
    // Reading again (after the retired tables were folded) changes nothing.
    assert_eq!(store.metrics(), first);
}

#[test]
fn deltas_count_what_happened_since_the_last_read() {
    let store = FlagStore::from_json(RELEASE).expect("valid");
    let ctx = Context::new().user("u-1");
    store.is_enabled("everyone", &ctx);
    assert_eq!(store.metrics_delta().evaluations_of("everyone", "on"), 1);
    assert!(store.metrics_delta().evaluations().is_empty());
    store.is_enabled("everyone", &ctx);
    store.is_enabled("everyone", &ctx);
    store.record("everyone", &ctx, Outcome::Error);
    let delta = store.metrics_delta();
    assert_eq!(delta.evaluations_of("everyone", "on"), 2);
    assert_eq!(delta.outcomes_of("everyone", "on").map(|o| o.errors), Some(1));
    assert_eq!(store.metrics().evaluations_of("everyone", "on"), 3);
}

#[test]
fn a_store_without_metrics_counts_nothing() {
    let store = FlagStore::from_json(RELEASE).expect("valid").without_metrics();
    let ctx = Context::new().user("u-staff");
    assert!(store.is_enabled("checkout", &ctx));
    store.record("checkout", &ctx, Outcome::Error);
    let m = store.metrics();
    assert!(m.evaluations().is_empty() && m.outcomes().is_empty() && m.guards().is_empty());
    assert_eq!(m.version(), 1, "the serving version is not a count: it is still reported");
}

#[test]
fn outcomes_are_attributed_to_the_group_the_context_falls_in() {
    let store = FlagStore::from_json(RELEASE).expect("valid");
    let staff = Context::new().user("u-staff");
    let blocked = Context::new().user("u-staff").tenant("t-blocked");
    store.record("checkout", &staff, Outcome::Success);
    store.record("checkout", &staff, Outcome::Error);
    store.record("checkout", &staff, Outcome::Latency(Duration::from_millis(3)));
    store.record("checkout", &staff, Outcome::Latency(Duration::from_micros(100)));
    store.record("checkout", &blocked, Outcome::Error); // excluded: not exposed
    store.record("no-such-flag", &staff, Outcome::Error); // ignored

    let m = store.metrics();
    let internal = m.outcomes_of("checkout", "internal").expect("recorded");
    assert_eq!((internal.successes, internal.errors), (1, 1));
    assert_eq!(internal.latency.count(), 2);
    assert_eq!(internal.latency.sum, Duration::from_micros(3100));
    assert_eq!(internal.latency.buckets[0], 1); // <= 250 µs
    assert_eq!(internal.latency.buckets[4], 1); // 2 ms < 3 ms <= 4 ms
    assert_eq!(m.outcomes_of("checkout", "not-exposed").map(|o| o.errors), Some(1));
    assert_eq!(m.outcomes().len(), 2);

    let text = m.to_prometheus();
    for line in [
        r#"flagstone_outcomes_total{feature_flag_key="checkout",stage="internal",outcome="success"} 1"#,
        r#"flagstone_outcomes_total{feature_flag_key="checkout",stage="internal",outcome="error"} 1"#,
        r#"flagstone_outcomes_total{feature_flag_key="checkout",stage="not-exposed",outcome="error"} 1"#,
        r#"flagstone_latency_seconds_bucket{feature_flag_key="checkout",stage="internal",le="0.00025"} 1"#,
        r#"flagstone_latency_seconds_bucket{feature_flag_key="checkout",stage="internal",le="0.002"} 1"#,
        r#"flagstone_latency_seconds_bucket{feature_flag_key="checkout",stage="internal",le="0.004"} 2"#,
        r#"flagstone_latency_seconds_bucket{feature_flag_key="checkout",stage="internal",le="+Inf"} 2"#,
        r#"flagstone_latency_seconds_sum{feature_flag_key="checkout",stage="internal"} 0.0031"#,
        r#"flagstone_latency_seconds_count{feature_flag_key="checkout",stage="internal"} 2"#,
        "# TYPE flagstone_latency_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

const GUARDED: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "users": ["u-0", "u-1", "u-2"] } },
  "flags": { "checkout": { "enabled": true,
      "stages": [ { "name": "internal", "cohorts": ["staff"] },
                  { "name": "canary", "percent": 20 } ],
      "stage": "canary",
      "guard": { "max_error_ratio": 2.0, "min_samples": MIN, "window_secs": 60, "action": "ACTION" } } } }"#;

fn guarded(
    min_samples: u64,
    action: &str,
) -> (FlagStore, Arc<ManualClock>, Arc<Mutex<Vec<StoreEvent>>>) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    store.on_event(move |e| sink.lock().expect("not poisoned").push(e.clone()));
    let doc = GUARDED.replace("MIN", &min_samples.to_string()).replace("ACTION", action);
    store.apply_json(doc).expect("valid");
    (store, clock, events)
}

/// Simulated traffic: `requests` requests, one ms apart, from 1,000 users
/// in turn (20 requests a user in 20,000). A request fails 1 in 50 times,
/// or 1 in `canary_error_every` times when the canary stage exposes it,
/// at random. The guards look every 50 simulated ms.
fn traffic(store: &FlagStore, clock: &ManualClock, requests: usize, canary_error_every: usize) {
    for i in 0..requests {
        let user = format!("u-{}", i % 1_000);
        let ctx = Context::new().user(&user);
        let in_canary =
            matches!(store.evaluate("checkout", &ctx).reason, Reason::Stage { name: "canary", .. });
        let every = if in_canary { canary_error_every } else { 50 };
        let draw = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        let outcome =
            if draw.is_multiple_of(every as u64) { Outcome::Error } else { Outcome::Success };
        store.record("checkout", &ctx, outcome);
        clock.advance(Duration::from_millis(1));
        if i.is_multiple_of(50) {
            store.check_guards();
        }
    }
}

fn trips(events: &Mutex<Vec<StoreEvent>>) -> Vec<flagstone::observe::GuardTrip> {
    let events = events.lock().expect("not poisoned");
    events
        .iter()
        .filter_map(|e| match e {
            StoreEvent::GuardTripped(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bad_canary_trips_its_guard_and_the_stage_steps_back() {
    let (store, clock, events) = guarded(100, "rollback_stage");
    // 20% of users in the canary fail 1 in 5 (20%), everyone else 1 in 50.
    traffic(&store, &clock, 20_000, 5);

    let trips = trips(&events);
    assert_eq!(trips.len(), 1, "{trips:?}");
    let trip = &trips[0];
    assert_eq!((trip.flag.as_str(), trip.stage.as_str()), ("checkout", "canary"));
    assert_eq!(trip.action, GuardAction::RollbackStage);
    assert_eq!(trip.now_serving.as_deref(), Some("internal"));
    assert_eq!(trip.version, 1);
    assert!(trip.exposed_units >= 100 && trip.control_units >= 100, "{trip:?}");
    assert!(trip.exposed_value > 2.0 * trip.control_value, "{trip:?}");
    assert!((trip.exposed_value - 0.2).abs() < 0.05, "{trip:?}");
    assert_eq!(trip.control, flagstone::observe::ControlGroup::NotExposed);
    assert!(trip.to_string().contains("stepped back to stage \"internal\""), "{trip}");

    // The store serves the decision: the canary is closed, internal is open.
    let ev = store.evaluate("checkout", &Context::new().user("u-3"));
    assert_eq!(ev.reason, Reason::NotExposed);
    assert!(store.is_enabled("checkout", &Context::new().user("u-1")));
    let explained = store.snapshot().explain("checkout", &Context::new().user("u-3"));
    assert!(!explained.enabled);

    // The change went to the audit log too.
    let changed = events.lock().expect("not poisoned").iter().any(|e| {
        matches!(e,
        StoreEvent::Changed(c) if c.cause == ChangeCause::Guard
            && c.changes.iter().any(|ch| ch.kind == ChangeKind::StageRolledBack {
                from: "canary".into(), to: "internal".into() }))
    });
    assert!(changed);

    // Pushing the same version again cannot reopen it; a newer one can.
    let doc = GUARDED.replace("MIN", "500").replace("ACTION", "rollback_stage");
    assert!(store.apply_json(&doc).expect_err("stale").is_stale());
    store.apply_json(doc.replace(r#""version": 1"#, r#""version": 2"#)).expect("newer");
    let reopened = (0..100).any(|i| {
        let user = format!("u-{i}");
        matches!(
            store.evaluate("checkout", &Context::new().user(&user)).reason,
            Reason::Stage { name: "canary", .. }
        )
    });
    assert!(reopened);
}

#[test]
fn a_healthy_canary_does_not_trip() {
    let (store, clock, events) = guarded(100, "rollback_stage");
    traffic(&store, &clock, 20_000, 50);
    assert!(trips(&events).is_empty());
    let canary_open = (0..100).any(|i| {
        let user = format!("u-{i}");
        matches!(
            store.evaluate("checkout", &Context::new().user(&user)).reason,
            Reason::Stage { name: "canary", .. }
        )
    });
    assert!(canary_open);
}

#[test]
fn too_few_samples_do_not_trip() {
    // The canary is bad, but it has about 200 users.
    let (store, clock, events) = guarded(500, "rollback_stage");
    traffic(&store, &clock, 20_000, 5);
    assert!(trips(&events).is_empty());
}

#[test]
fn a_disable_guard_turns_the_flag_off() {
    let (store, clock, events) = guarded(100, "disable");
    traffic(&store, &clock, 20_000, 5);
    let trips = trips(&events);
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].now_serving, None);
    assert_eq!(store.evaluate("checkout", &Context::new().user("u-1")).reason, Reason::KillSwitch);
}

#[test]
fn a_wall_clock_step_backwards_does_not_silence_guards() {
    let (store, clock, events) = guarded(100, "rollback_stage");
    traffic(&store, &clock, 2_000, 50);
    // NTP (or an operator) steps the wall clock back an hour; time goes on.
    clock.set(clock.now_millis_value() - 3_600_000);
    traffic(&store, &clock, 15_000, 2);
    let trips = trips(&events);
    assert_eq!(trips.len(), 1, "the guard kept looking on monotonic time: {trips:?}");
}

#[test]
fn a_guard_trip_happens_off_the_request_path() {
    // A config with a big cohort: stepping back copies a config, which
    // must not happen inside `record`.
    let tenants: Vec<String> = (0..100_000).map(|i| format!("\"big-{i}\"")).collect();
    let doc = GUARDED
        .replace("MIN", "100")
        .replace("ACTION", "rollback_stage")
        .replace(r#""window_secs": 60"#, r#""window_secs": 5"#)
        .replace(
            r#""staff": { "users": ["u-0", "u-1", "u-2"] }"#,
            &format!(
                r#""staff": {{ "users": ["u-0", "u-1", "u-2"] }}, "big": {{ "tenants": [{}] }}"#,
                tenants.join(",")
            ),
        );
    let store = FlagStore::new();
    let tripped_on = Arc::new(Mutex::new(None));
    let sink = tripped_on.clone();
    store.on_event(move |e| {
        if let StoreEvent::GuardTripped(_) = e {
            let name = std::thread::current().name().map(str::to_owned);
            *sink.lock().expect("not poisoned") = Some(name);
        }
    });
    store.apply_json(doc).expect("valid");
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut i = 0usize;
    while tripped_on.lock().expect("not poisoned").is_none()
        && started.elapsed() < Duration::from_secs(20)
    {
        let user = format!("u-{}", i % 1_000);
        let ctx = Context::new().user(&user);
        let in_canary =
            matches!(store.evaluate("checkout", &ctx).reason, Reason::Stage { name: "canary", .. });
        let outcome =
            if in_canary || i.is_multiple_of(50) { Outcome::Error } else { Outcome::Success };
        let t = std::time::Instant::now();
        store.record("checkout", &ctx, outcome);
        slowest = slowest.max(t.elapsed());
        i += 1;
        if i.is_multiple_of(1_000) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let tripped_on = tripped_on.lock().expect("not poisoned").clone();
    println!("guard tripped on {tripped_on:?} after {i} outcomes; slowest record: {slowest:?}");
    assert_eq!(tripped_on, Some(Some("flagstone-guards".to_owned())));
}

#[test]
fn every_applied_config_and_rollback_is_a_change_event() {
    let store = FlagStore::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    store.on_event(move |e| sink.lock().expect("not poisoned").push(e.clone()));
    store.apply_json(RELEASE).expect("valid");
    store
        .apply_json(
            RELEASE
                .replace(r#""version": 1"#, r#""version": 2"#)
                .replace(r#""stage": "canary""#, r#""stage": "all""#),
        )
        .expect("valid");
    store.rollback().expect("kept");
    let events = events.lock().expect("not poisoned");
    let changes: Vec<_> = events
        .iter()
        .map(|e| match e {
            StoreEvent::Changed(c) => c,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(changes.len(), 3);
    assert_eq!((changes[0].cause, changes[0].from, changes[0].to), (ChangeCause::Applied, 0, 1));
    assert_eq!(changes[0].changes.iter().filter(|c| c.kind == ChangeKind::FlagAdded).count(), 3);
    assert_eq!(
        changes[1].changes.iter().map(|c| &c.kind).collect::<Vec<_>>(),
        [&ChangeKind::StageAdvanced { from: "canary".into(), to: "all".into() }]
    );
    assert_eq!((changes[2].cause, changes[2].from, changes[2].to), (ChangeCause::RolledBack, 2, 1));
    assert_eq!(
        changes[2].changes.iter().map(|c| &c.kind).collect::<Vec<_>>(),
        [&ChangeKind::StageRolledBack { from: "all".into(), to: "canary".into() }]
    );
}

#[test]
fn a_guard_is_validated_with_paths() {
    let bad = r#"{ "version": 1, "flags": { "f": { "enabled": true,
        "guard": { "max_error_ratio": 0, "min_samples": 0, "window_secs": 0 } } } }"#;
    let err = FlagStore::from_json(bad).expect_err("invalid");
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    for want in [
        "flags.f.guard: a guard compares a stage",
        "flags.f.guard.max_error_ratio: 0 is not a number greater than 0",
        "flags.f.guard.min_units: must be at least 1",
        "flags.f.guard.window_secs: must be at least 1",
    ] {
        assert!(problems.iter().any(|p| p.starts_with(want)), "{want}: {problems:#?}");
    }
    let reserved = r#"{ "version": 1, "flags": { "f": { "enabled": true,
        "stages": [ { "name": "off" } ], "stage": "off" } } }"#;
    let err = FlagStore::from_json(reserved).expect_err("reserved");
    assert!(
        err.problems()[0].to_string().starts_with("flags.f.stages[0].name: \"off\" is reserved")
    );
}

/// One series of an export: its name, its labels (sorted), its value.
#[cfg(feature = "metrics")]
type Series = (String, Vec<(String, String)>, f64);

/// The samples of a Prometheus text exposition, for comparing.
#[cfg(feature = "metrics")]
fn parse_prometheus(text: &str) -> Vec<Series> {
    let mut series = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (head, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closed")),
            None => (head, ""),
        };
        let mut labels: Vec<(String, String)> = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once("=\"").expect("key=\"value");
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        labels.sort();
        series.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    series.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    series
}

/// Issue 18, item 8: the `metrics`-crate export and the Prometheus text
/// are one set of series: same names, same labels (OpenTelemetry's where
/// one exists), same units, same values, guards and version included.
#[cfg(feature = "metrics")]
#[test]
fn the_metrics_crate_and_the_prometheus_text_export_the_same_series() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let (store, clock, _events) = guarded(100, "rollback_stage");
    traffic(&store, &clock, 20_000, 5);
    let ctx = Context::new().user("u-1");
    store.record("checkout", &ctx, Outcome::Latency(Duration::from_micros(1_500)));
    store.record("checkout", &ctx, Outcome::Latency(Duration::from_millis(9)));
    let metrics = store.metrics();
    assert!(!metrics.guard_trips().is_empty() && !metrics.stepped_back().is_empty());

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || flagstone::observe::export_to_metrics(&metrics));
    let mut exported: Vec<Series> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> =
                key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(x) => x.into_inner(),
                DebugValue::Histogram(_) => panic!("no histogram is exported"),
            };
            (key.name().to_owned(), labels, value)
        })
        .collect();
    exported.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

    let text = metrics.to_prometheus();
    let scraped = parse_prometheus(&text);
    assert_eq!(exported, scraped, "{text}");
    for family in [
        "flagstone_evaluations_total",
        "flagstone_outcomes_total",
        "flagstone_latency_seconds_bucket",
        "flagstone_latency_seconds_sum",
        "flagstone_guard_units",
        "flagstone_guard_unit_error_rate_sum",
        "flagstone_guard_trips_total",
        "flagstone_guard_stepped_back",
        "flagstone_config_version",
    ] {
        assert!(scraped.iter().any(|s| s.0 == family), "{family} missing:\n{text}");
    }
    let flag = flagstone::observe::FLAG_LABEL;
    assert_eq!(flag, "feature_flag_key");
    assert!(
        scraped
            .iter()
            .all(|s| s.0 == "flagstone_config_version" || s.1.iter().any(|(k, _)| k == flag))
    );
    // Seconds, in both: 1.5 ms + 9 ms.
    let sum =
        scraped.iter().find(|s| s.0 == "flagstone_latency_seconds_sum").expect("a latency sum");
    assert!((sum.2 - 0.0105).abs() < 1e-9, "{sum:?}");
    assert_eq!(flagstone::PROMETHEUS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}

#[test]
fn a_clock_given_after_the_config_restarts_the_guards_on_it() {
    // The config is applied on the system clock, then a manual clock set
    // in the past replaces it: the guard must check on the new clock.
    let store = FlagStore::new().with_manual_guard_checks();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    store.on_event(move |e| sink.lock().expect("not poisoned").push(e.clone()));
    store
        .apply_json(GUARDED.replace("MIN", "100").replace("ACTION", "rollback_stage"))
        .expect("valid");
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let store = store.with_clock(clock.clone());
    traffic(&store, &clock, 20_000, 5);
    assert_eq!(trips(&events).len(), 1);
}

/// Issue 18, item 3: adding, changing and removing a guard (and the
/// controller's rollout settings) show in `diff` and in the audit events.
#[test]
fn guard_and_rollout_changes_are_in_the_diff_and_the_audit_events() {
    let doc = |version: u64, guard: &str, rollout: &str| {
        format!(
            r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": true,
                "stages": [ {{ "name": "canary", "percent": 5 }}, {{ "name": "all" }} ], "stage": "canary"
                {guard} {rollout} }} }} }}"#
        )
    };
    let store = FlagStore::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    store.on_event(move |e| {
        if let StoreEvent::Changed(c) = e {
            sink.lock().expect("not poisoned").extend(c.changes.iter().map(|c| c.to_string()));
        }
    });
    store.apply_json(doc(1, "", "")).expect("valid");
    let guarded = r#", "guard": { "holdback": 10, "max_error_ratio": 2.0, "window_secs": 60 }"#;
    store.apply_json(doc(2, guarded, "")).expect("valid");
    let wider = r#", "guard": { "holdback": 10, "max_error_ratio": 3.0, "window_secs": 600 }"#;
    store.apply_json(doc(3, wider, r#", "rollout": { "hold": "30m" }"#)).expect("valid");
    store
        .apply_json(doc(4, wider, r#", "rollout": { "hold": "1h", "paused": true }"#))
        .expect("valid");
    // The controller's entered_at alone is no change in the audit.
    store
        .apply_json(doc(5, wider, r#", "rollout": { "hold": "1h", "paused": true, "entered_at": "2026-12-01T00:00:00Z" }"#))
        .expect("valid");
    let events = events.lock().expect("not poisoned").clone();
    let after_first: Vec<&str> = events.iter().skip(1).map(String::as_str).collect();
    assert_eq!(after_first.len(), 4, "{after_first:?}");
    assert!(
        after_first[0].starts_with("f: guard added (") && after_first[0].contains("holdback 10")
    );
    assert!(
        after_first[1].contains("guard: max_error_ratio 2.0 -> 3.0, window_secs 60 -> 600"),
        "{after_first:?}"
    );
    assert!(after_first[2].contains("rollout added"), "{after_first:?}");
    assert!(
        after_first[3].contains(r#"rollout: hold "30m" -> "1h", paused none -> true"#),
        "{after_first:?}"
    );
    let removed = flagstone::diff::diff(
        &flagstone::config::Config::from_json(doc(5, wider, "")).expect("valid"),
        &flagstone::config::Config::from_json(doc(6, "", "")).expect("valid"),
    );
    assert!(removed.iter().any(|c| c.to_string() == "f: guard removed"), "{removed:?}");
}

/// The kill switch's shortcut counts under `off`, by key and by handle,
/// and never answers for a flag an override forces on.
#[test]
fn a_kill_switched_check_counts_off_and_an_override_still_wins() {
    let store = FlagStore::from_json(
        r#"{ "version": 1, "flags": { "k": { "enabled": false,
            "stages": [ { "name": "all", "percent": 20 } ], "stage": "all" } } }"#,
    )
    .expect("valid");
    let ctx = Context::new().user("u");
    let handle = store.handle("k");
    assert!(!store.is_enabled("k", &ctx) && !handle.is_enabled(&ctx));
    assert_eq!(store.metrics().evaluations_of("k", "off"), 2);
    store.set_override("k", flagstone::Override::On);
    assert!(store.is_enabled("k", &ctx) && handle.is_enabled(&ctx));
    let m = store.metrics();
    assert_eq!((m.evaluations_of("k", "off"), m.evaluations_of("k", "override")), (2, 2));
}
