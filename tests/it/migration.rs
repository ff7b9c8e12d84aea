//! Staged data migrations (issue 19) on a real SQLite database: the
//! example's schema change (`name` → `first_name`, `last_name`) walked
//! stage by stage, a rollback at every step, a bug planted in the new
//! read path, and the migrator's contract (authoritative results, what a
//! failure of the other side does, orders).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstone::config::Config;
use flagstone::diff::{ChangeKind, diff};
use flagstone::migration::{Migrator, Order, Origin};
use flagstone::{Context, FlagStore, ManualClock, MigrationStep, Reason, StoreEvent};

#[path = "../../examples/schema_migration.rs"]
mod example;

use example::{Database, FLAG, INTERNAL, STAGES, Traffic, config, missing};

fn database() -> (tempfile::TempDir, Arc<Database>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Database::open(&dir.path().join("users.db")).expect("SQLite opens");
    (dir, Arc::new(db))
}

/// Index of the first `complete` stage: from it on the old table stops
/// getting writes.
fn first_complete() -> usize {
    STAGES.iter().position(|s| s.1 == MigrationStep::Complete).expect("a complete stage")
}

#[test]
fn stepping_any_stage_back_leaves_every_write_readable_through_the_old_path() {
    let (_dir, db) = database();
    let store = Arc::new(FlagStore::from_json(config(1, None)).expect("valid"));
    let users = example::users(store.clone(), &db, false).expect("built");
    let mut traffic = Traffic::new(19);
    traffic.run(&users, 600);
    let mut version = 1;
    let mut apply = |current: Option<usize>| {
        version += 1;
        store.apply_json(config(version, current)).expect("applied");
    };
    let backfill_at = STAGES.iter().position(|s| s.0 == "dualwrite-all").expect("a stage");
    for (i, (stage, ..)) in STAGES.iter().enumerate() {
        apply(Some(i));
        if i == backfill_at {
            db.backfill().expect("backfilled");
        }
        let seen = traffic.run(&users, 600);
        assert_eq!((seen.wrong, seen.failed), (0, 0), "at {}: {seen:?}", stage);
        // The rollback of one stage (the flag off, from the first one).
        let back = i.checked_sub(1);
        apply(back);
        let seen = traffic.run(&users, 600);
        assert_eq!(seen.failed, 0, "after stepping back from {}", stage);
        let old = db.old_rows().expect("read");
        let lost = missing(&traffic.ledger, &old);
        if i < first_complete() {
            assert!(
                lost.is_empty(),
                "stepping back from {} lost {} writes on the old path, e.g. {:?}",
                stage,
                lost.len(),
                &lost[..lost.len().min(3)]
            );
            assert_eq!(seen.wrong, 0, "after stepping back from {}: {seen:?}", stage);
        } else {
            // What `diff` calls irreversible for data: the old table missed
            // the writes of tenants at complete.
            assert!(!lost.is_empty(), "complete wrote the old table after all?");
        }
        apply(Some(i));
        if i == backfill_at {
            db.backfill().expect("backfilled");
        }
    }
    // Everyone at complete: the new table holds every write.
    let new = db.new_rows().expect("read");
    assert!(missing(&traffic.ledger, &new).is_empty());
    // No comparison ever disagreed.
    let metrics = store.metrics();
    assert!(metrics.migrations().iter().map(|m| m.comparisons).sum::<u64>() > 1_000);
    assert_eq!(metrics.migrations().iter().map(|m| m.mismatches).sum::<u64>(), 0);
}

#[test]
fn a_bug_in_the_new_read_path_mismatches_on_the_shadow_and_live_cohorts_and_steps_back() {
    let (_dir, db) = database();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = Arc::new(FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    store.on_event(move |e| sink.lock().expect("not poisoned").push(e.clone()));
    let buggy = example::users(store.clone(), &db, true).expect("built");
    let shadow_10 = STAGES.iter().position(|s| s.0 == "shadow-10").expect("a stage");
    let backfill_at = STAGES.iter().position(|s| s.0 == "dualwrite-all").expect("a stage");
    store.apply_json(config(1, Some(backfill_at))).expect("valid");
    let mut traffic = Traffic::new(7);
    traffic.run(&buggy, 1_000);
    db.backfill().expect("backfilled");
    store.apply_json(config(2, Some(shadow_10))).expect("valid");
    store.check_guards(); // the guard's first window starts

    let mut tripped = false;
    for _ in 0..150 {
        traffic.run(&buggy, 100);
        clock.advance(Duration::from_millis(200));
        store.check_guards();
        tripped = events.lock().expect("not poisoned").iter().any(|e| {
            matches!(e, StoreEvent::GuardTripped(t) if t.stage == "shadow-10"
                && matches!(t.cause, flagstone::observe::TripCause::Mismatches { .. }))
        });
        if tripped {
            break;
        }
    }
    let metrics = store.metrics();
    assert!(tripped, "the mismatch guard never tripped: {:#?}", metrics.migrations());

    // Mismatches only where reads are compared: the shadow cohorts.
    for m in metrics.migrations() {
        let compares = matches!(m.step, MigrationStep::Shadow | MigrationStep::Live);
        if compares {
            assert!(m.comparisons > 0, "{m:?}");
        } else {
            assert_eq!(m.comparisons, 0, "{m:?}");
        }
    }
    let shadow_mismatches: u64 = metrics
        .migrations()
        .iter()
        .filter(|m| m.step == MigrationStep::Shadow)
        .map(|m| m.mismatches)
        .sum();
    assert!(shadow_mismatches > 0);
    let rate = metrics
        .migration_of(FLAG, "shadow-10", MigrationStep::Shadow)
        .map(|m| m.mismatch_rate())
        .expect("shadow-10 counted");
    // Rows whose last name has a space (2 names in 8) read back wrong; a
    // read of a row never written agrees (none on either side).
    assert!(rate > 0.0 && rate < 0.25, "{rate}");
    // The stage stepped back: a 10% tenant that is not internal is at dualwrite.
    let probe = FlagStore::from_json(config(2, Some(shadow_10))).expect("valid");
    let ten_percent = traffic.tenants[INTERNAL.len()..]
        .iter()
        .find(|t| probe.migration_step(FLAG, &Context::new().tenant(t)) == MigrationStep::Shadow)
        .expect("a tenant in the 10%");
    let ctx = Context::new().tenant(ten_percent);
    assert_eq!(store.migration_step(FLAG, &ctx), MigrationStep::DualWrite);
    assert_eq!(
        store.migration_step(FLAG, &Context::new().tenant(INTERNAL[0])),
        MigrationStep::Shadow
    );
    assert_eq!(
        store.evaluate(FLAG, &ctx).reason,
        Reason::Stage { index: backfill_at, name: "dualwrite-all" }
    );

    // The Prometheus text carries the counts per flag, stage, step, origin.
    let text = metrics.to_prometheus();
    for line in [
        r#"flagstone_migration_mismatches_total{feature_flag_key="users-split",stage="shadow-10",step="shadow"}"#,
        r#"flagstone_migration_operations_total{feature_flag_key="users-split",stage="shadow-10",step="shadow",origin="new",operation="read"}"#,
        r#"flagstone_migration_operations_total{feature_flag_key="users-split",stage="dualwrite-all",step="dualwrite",origin="new",operation="write"}"#,
        r#"flagstone_migration_latency_seconds_count{feature_flag_key="users-split",stage="shadow-10",step="shadow",origin="old",operation="read"}"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

/// A migrator on two in-memory maps, with switches that make a side fail.
struct Stores {
    old: Mutex<BTreeMap<u32, String>>,
    new: Mutex<BTreeMap<u32, String>>,
    fail_old: AtomicU64,
    fail_new: AtomicU64,
}

type MapMigrator = Migrator<u32, (u32, String), Option<String>, (), String>;

fn maps(store: &Arc<FlagStore>, order: Order) -> (Arc<Stores>, MapMigrator) {
    let stores = Arc::new(Stores {
        old: Mutex::default(),
        new: Mutex::default(),
        fail_old: AtomicU64::new(0),
        fail_new: AtomicU64::new(0),
    });
    let (a, b, c, d) = (stores.clone(), stores.clone(), stores.clone(), stores.clone());
    let fails = |n: &AtomicU64| n.load(Ordering::Relaxed) > 0;
    let migrator = Migrator::builder(store.clone(), "m")
        .read_old(move |k: &u32| {
            if fails(&a.fail_old) {
                Err("old down".to_owned())
            } else {
                Ok(a.old.lock().unwrap().get(k).cloned())
            }
        })
        .read_new(move |k: &u32| {
            if fails(&b.fail_new) {
                Err("new down".to_owned())
            } else {
                Ok(b.new.lock().unwrap().get(k).cloned())
            }
        })
        .write_old(move |(k, v): &(u32, String)| {
            if fails(&c.fail_old) {
                return Err("old down".to_owned());
            }
            c.old.lock().unwrap().insert(*k, v.clone());
            Ok(())
        })
        .write_new(move |(k, v): &(u32, String)| {
            if fails(&d.fail_new) {
                return Err("new down".to_owned());
            }
            d.new.lock().unwrap().insert(*k, v.clone());
            Ok(())
        })
        .compare(|a, b| a == b)
        .order(order)
        .build()
        .expect("built");
    (stores, migrator)
}

fn one_step(step: &str, version: u64) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "m": {{ "enabled": true, "migration": true,
        "stages": [ {{ "name": "dual", "step": "dualwrite" }}, {{ "name": "now", "step": "{step}" }} ],
        "stage": "now", "guard": {{ "max_error_ratio": 2 }} }} }} }}"#
    )
}

#[test]
fn each_step_reads_and_writes_what_it_says_and_returns_the_authoritative_answer() {
    for order in [Order::OldFirst, Order::NewFirst, Order::Parallel] {
        let store = Arc::new(FlagStore::from_json(one_step("shadow", 1)).expect("valid"));
        let (stores, m) = maps(&store, order);
        let ctx = Context::new().user("u");
        let mut version = 1;
        for (step, reads_old, reads_new, writes_old, writes_new, answer) in [
            ("shadow", true, true, true, true, "old"),
            ("live", true, true, true, true, "new"),
            ("rampdown", false, true, true, true, "new"),
            ("complete", false, true, false, true, "new"),
        ] {
            version += 1;
            store.apply_json(one_step(step, version)).expect("valid");
            let before = store.metrics();
            stores.old.lock().unwrap().insert(1, "old".into());
            stores.new.lock().unwrap().insert(1, "new".into());
            assert_eq!(m.read(&ctx, &1), Ok(Some(answer.to_owned())), "{step} {order:?}");
            m.write(&ctx, &(2, step.to_owned())).expect("written");
            let old_has = stores.old.lock().unwrap().get(&2) == Some(&step.to_owned());
            let new_has = stores.new.lock().unwrap().get(&2) == Some(&step.to_owned());
            assert_eq!((old_has, new_has), (writes_old, writes_new), "{step}");
            let delta = store.metrics().since(&before);
            let count =
                delta.migration_of("m", "now", step.parse().expect("a step")).expect("counted");
            assert_eq!(
                (count.old.reads.calls, count.new.reads.calls),
                (u64::from(reads_old), u64::from(reads_new)),
                "{step}"
            );
            assert_eq!(
                (count.old.writes.calls, count.new.writes.calls),
                (u64::from(writes_old), u64::from(writes_new)),
                "{step}"
            );
            let compared = u64::from(reads_old && reads_new);
            assert_eq!((count.comparisons, count.mismatches), (compared, compared), "{step}");
        }
    }
}

#[test]
fn the_other_side_failing_never_fails_the_call_and_the_authoritative_failing_skips_the_other() {
    let store = Arc::new(FlagStore::from_json(one_step("shadow", 1)).expect("valid"));
    let (stores, m) = maps(&store, Order::OldFirst);
    let ctx = Context::new().user("u");
    // Shadow: old answers; new down is counted, not returned.
    stores.fail_new.store(1, Ordering::Relaxed);
    assert_eq!(m.write(&ctx, &(1, "a".into())), Ok(()));
    assert_eq!(m.read(&ctx, &1), Ok(Some("a".into())));
    let count = store.metrics();
    let count = count.migration_of("m", "now", MigrationStep::Shadow).expect("counted");
    assert_eq!((count.new.writes.errors, count.new.reads.errors), (1, 1));
    assert_eq!(count.comparisons, 0, "a failed read is not compared");
    // Old down at shadow: the call fails, and new does not get the write.
    stores.fail_new.store(0, Ordering::Relaxed);
    stores.fail_old.store(1, Ordering::Relaxed);
    assert_eq!(m.write(&ctx, &(2, "b".into())), Err("old down".to_owned()));
    assert!(!stores.new.lock().unwrap().contains_key(&2), "new got a write old refused");
    // The other side's calls are derived (not counted per call): both
    // reads, and only the writes the authoritative side took.
    let metrics = store.metrics();
    let count = metrics.migration_of("m", "now", MigrationStep::Shadow).expect("counted");
    let writes = |o: &flagstone::migration::OperationCount| (o.calls, o.errors);
    assert_eq!((writes(&count.old.writes), writes(&count.new.writes)), ((2, 1), (1, 1)));
    assert_eq!((count.old.reads.calls, count.new.reads.calls), (1, 1));
    // The flag's own outcome counts (its guard's evidence) see the
    // authoritative side.
    let outcomes = metrics.outcomes_of("m", "now").expect("recorded");
    assert_eq!((outcomes.errors, outcomes.successes), (1, 2));
    assert_eq!(m.step(&ctx), MigrationStep::Shadow);
    let _ = Origin::New;
}

#[test]
fn migration_configs_are_checked_with_paths() {
    let err = FlagStore::from_json(
        r#"{ "version": 1, "flags": {
          "m": { "enabled": true, "migration": true,
            "stages": [ { "name": "a", "step": "live" }, { "name": "b", "step": "dualwrite" },
                        { "name": "c" }, { "name": "d", "step": "off" } ], "stage": "a" },
          "n": { "enabled": true, "stages": [ { "name": "x", "step": "shadow" } ], "stage": "x",
            "guard": { "max_mismatch_rate": 0.01 } },
          "o": { "enabled": true, "migration": true,
            "stages": [ { "name": "x", "step": "dualwrite" } ], "stage": "x",
            "guard": { "max_mismatch_rate": 2 } } } }"#,
    )
    .expect_err("invalid");
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    for want in [
        "flags.m.stages[0].step: live with no dualwrite stage before it",
        "flags.m.stages[1].step: dualwrite comes after live (stages[0])",
        "flags.m.stages[2].step: missing",
        "flags.m.stages[3].step: \"off\" is no stage's step",
        "flags.n.guard.max_mismatch_rate: only a migration flag",
        "flags.n.stages[0].step: only a migration flag's stages have a step",
        "flags.o.guard.max_mismatch_rate: 2 is not a rate between 0 and 1",
    ] {
        assert!(problems.iter().any(|p| p.starts_with(want)), "{want}: {problems:#?}");
    }
}

#[test]
fn diff_marks_entering_complete_irreversible_and_warns_when_leaving_it() {
    let at = |version, stage: &str| {
        Config::from_json(config(version, STAGES.iter().position(|s| s.0 == stage))).expect("valid")
    };
    let forward = diff(&at(1, "rampdown-all"), &at(2, "complete-internal"));
    let step = forward
        .iter()
        .find(|c| matches!(c.kind, ChangeKind::MigrationStepChanged { .. }))
        .expect("a step change");
    assert_eq!(
        step.kind,
        ChangeKind::MigrationStepChanged {
            stage: "complete-internal".into(),
            from: MigrationStep::Off,
            to: Some(MigrationStep::Complete)
        }
    );
    assert!(!step.reversible);
    assert!(step.warning.as_deref().is_some_and(|w| w.contains("irreversible for data")));

    let back = diff(&at(3, "complete-internal"), &at(4, "rampdown-all"));
    let step = back
        .iter()
        .find(|c| matches!(c.kind, ChangeKind::MigrationStepChanged { .. }))
        .expect("a step change");
    assert!(step.warning.as_deref().is_some_and(|w| w.contains("missed every write")), "{step:?}");

    // Between steps that write the old store: reversible, no warning.
    let shadow = diff(&at(5, "dualwrite-all"), &at(6, "shadow-internal"));
    assert!(shadow.iter().all(|c| c.reversible && c.warning.is_none()), "{shadow:#?}");
}

#[test]
fn explain_says_the_step_and_why() {
    let store = FlagStore::from_json(config(1, Some(4))).expect("valid");
    let why = store.snapshot().explain(FLAG, &Context::new().tenant(INTERNAL[0]));
    assert_eq!(why.step, Some(MigrationStep::Shadow));
    let reason = why.step_reason.expect("a reason");
    assert!(reason.contains("shadow-") && reason.contains("last stage"), "{reason}");
}

#[test]
fn lint_takes_a_migration_covering_its_cohorts_again_as_intended() {
    let config = Config::from_json(config(1, Some(STAGES.len() - 1))).expect("valid");
    let warnings = flagstone::lint::lint(&config, 0);
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn latency_is_sampled_unless_the_flags_guard_judges_latency() {
    let timed = |guard: &str| {
        let config = format!(
            r#"{{ "version": 1, "flags": {{ "m": {{ "enabled": true, "migration": true,
            "stages": [ {{ "name": "dual", "step": "dualwrite" }}, {{ "name": "now", "step": "shadow" }} ],
            "stage": "now", "guard": {guard} }} }} }}"#
        );
        let store = Arc::new(FlagStore::from_json(config).expect("valid"));
        let (_, m) = maps(&store, Order::OldFirst);
        // On a thread of its own: the sampling counts per thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let ctx = Context::new().user("u");
                for i in 0..100 {
                    m.write(&ctx, &(i, "x".to_owned())).expect("written");
                }
                for i in 0..100 {
                    m.read(&ctx, &i).expect("read");
                }
            });
        });
        let metrics = store.metrics();
        let count = metrics.migration_of("m", "now", MigrationStep::Shadow).expect("counted");
        let samples = |o: &flagstone::migration::OperationCount| o.latency.count();
        assert_eq!((count.old.writes.calls, count.new.reads.calls), (100, 100));
        [&count.old.reads, &count.new.reads, &count.old.writes, &count.new.writes].map(samples)
    };
    // One operation in 64 per thread by default: this thread's 1st and
    // 65th (writes), then its 129th and 193rd (reads).
    assert_eq!(timed(r#"{ "max_error_ratio": 2 }"#), [2, 2, 2, 2]);
    // A guard that judges latency gets every operation's.
    let judged = timed(r#"{ "latency": { "quantile": 0.99, "max_ratio": 2 } }"#);
    assert_eq!(judged, [100, 100, 100, 100]);
}
