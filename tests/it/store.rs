//! The store: applying, refusing, rolling back, handles and snapshots.

use flagstone::{Context, FlagStore, Reason};

use crate::{EXAMPLE, example_at};

/// Each bad document, and the start of the one problem it must report.
const BAD: &[(&str, &str)] = &[
    ("not json", "expected ident at line 1 column 2"),
    (r#"{"version":8,"flags":{"#, "EOF while parsing"),
    (r#"{"version":8} []"#, "trailing characters"),
    (r#"{"flags":{}}"#, "missing field `version`"),
    (r#"{"version":-1}"#, "version: invalid value: integer `-1`"),
    (r#"{"version":8,"flagz":{}}"#, "unknown field `flagz`"),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"colour":1}}}"#,
        "flags.f.colour: unknown field `colour`",
    ),
    (r#"{"version":8,"flags":{"f":{}}}"#, "flags.f: missing field `enabled`"),
    (r#"{"version":8,"flags":{"f":{"enabled":"yes"}}}"#, "flags.f.enabled: invalid type"),
    (r#"{"version":8,"cohorts":{"c":{}}}"#, "cohorts.c: a cohort must list at least one criterion"),
    (
        r#"{"version":8,"cohorts":{"c":{"tenants":["a"],"tenants":["b"]}}}"#,
        "cohorts.c: duplicate field `tenants`",
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"exclude":["ghost"]}}}"#,
        r#"flags.f.exclude[0]: unknown cohort "ghost""#,
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a"},{"name":"b","percent":140}],"stage":"a"}}}"#,
        "flags.f.stages[1].percent: 140 is not within 0..=100",
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a","percent":1.2345}],"stage":"a"}}}"#,
        "flags.f.stages[0].percent: 1.2345 has more than 3 decimals",
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a"},{"name":"a"}],"stage":"a"}}}"#,
        r#"flags.f.stages[1].name: duplicate stage name "a""#,
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a"}],"stage":"b"}}}"#,
        r#"flags.f.stage: "b" names no stage (stages: a)"#,
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a"}]}}}"#,
        "flags.f.stage: missing: a flag with stages must name its current stage",
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a","cohorts":["x"]}],"stage":"a"}}}"#,
        r#"flags.f.stages[0].cohorts[0]: unknown cohort "x""#,
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"stages":[{"name":"a","start_at":"2026-12-01"}],"stage":"a"}}}"#,
        r#"flags.f.stages[0].start_at: "2026-12-01" is not an RFC 3339 time"#,
    ),
    (
        r#"{"version":8,"flags":{"f":{"enabled":true,"variants":[{"name":"a","weight":0}]}}}"#,
        "flags.f.variants: the weights add up to 0",
    ),
    (
        r#"{"version":7}"#,
        "refused: version 7 is serving and this document says version 7 with other content",
    ),
    (r#"{"version":3}"#, "stale config: version 3 is not newer than version 7"),
];

#[test]
fn every_bad_config_is_refused_with_where_and_what_and_the_old_one_keeps_serving() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    let ctx = Context::new().tenant("acme-internal");
    for (json, expected) in BAD {
        let err = store.apply_json(json).expect_err(json);
        let message = err.to_string();
        assert!(message.contains(expected), "{json}\n  got:  {message}\n  want: {expected}");
        assert!(err.is_invalid() || err.is_stale(), "{json}: {err:?}");
        assert_eq!(store.version(), 7, "{json} replaced the serving config");
        assert!(store.is_enabled("new-checkout", &ctx), "{json} changed what is served");
    }
    assert_eq!(store.history(), [7], "refused configs are not history");
}

#[test]
fn versions_must_increase_and_a_forced_apply_goes_back() {
    let store = FlagStore::from_json(example_at("canary", 5)).expect("valid");
    assert!(store.apply_json(example_at("beta", 5)).expect_err("same").is_stale());
    assert_eq!(store.apply_json(example_at("beta", 6)).expect("newer"), 6);
    assert_eq!(store.force_apply_json(example_at("internal", 2)).expect("forced"), 2);
    assert_eq!(store.version(), 2);
    assert!(store.apply_json(example_at("everyone", 6)).expect_err("seen").is_stale());
}

#[test]
fn a_rollback_steps_back_and_sticks_against_a_replay() {
    let store = FlagStore::from_json(example_at("canary", 1)).expect("valid");
    store.apply_json(example_at("everyone", 2)).expect("valid");
    assert_eq!(store.rollback().expect("history"), 1);
    assert_eq!(store.version(), 1);
    // A poller fetching version 2 again does not undo the rollback...
    assert!(store.apply_json(example_at("everyone", 2)).expect_err("replayed").is_stale());
    // ...a new version moves forward.
    assert_eq!(store.apply_json(example_at("everyone", 3)).expect("newer"), 3);
    assert_eq!(store.history(), [1, 3]);
}

#[test]
fn rollback_without_history_fails_and_changes_nothing() {
    assert!(FlagStore::new().rollback().expect_err("empty").is_no_history());
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    let err = store.rollback().expect_err("one config");
    assert!(err.is_no_history() && !err.is_stale() && !err.is_invalid());
    assert_eq!(store.version(), 7);
}

#[test]
fn the_first_config_may_have_version_zero() {
    let store = FlagStore::new();
    assert_eq!(store.version(), 0);
    assert_eq!(store.apply_json(r#"{"version":0}"#).expect("first"), 0);
    assert!(store.apply_json(r#"{"version":0}"#).expect_err("again").is_stale());
}

#[test]
fn handles_follow_swaps_removals_and_rollbacks() {
    let store = FlagStore::new();
    let h = store.handle("late");
    let ctx = Context::new();
    assert_eq!(h.key(), "late");
    assert_eq!(h.evaluate(&ctx).reason, Reason::UnknownFlag);
    store
        .apply_json(r#"{"version":1,"flags":{"a":{"enabled":true},"late":{"enabled":true}}}"#)
        .expect("ok");
    assert!(h.is_enabled(&ctx));
    store
        .apply_json(r#"{"version":2,"flags":{"late":{"enabled":false},"b":{"enabled":true}}}"#)
        .expect("ok");
    assert_eq!(h.evaluate(&ctx).reason, Reason::KillSwitch);
    store.apply_json(r#"{"version":3,"flags":{"b":{"enabled":true}}}"#).expect("ok");
    assert_eq!(h.evaluate(&ctx).reason, Reason::UnknownFlag);
    store.rollback().expect("history");
    store.rollback().expect("history");
    assert!(h.is_enabled(&ctx), "back at version 1");
    let (a, b) = (store.handle("a"), store.handle("b"));
    assert!(a.is_enabled(&ctx) && !b.is_enabled(&ctx));
}

#[test]
fn handles_agree_with_lookups_by_key() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    let h = store.handle("new-checkout");
    for i in 0..2_000 {
        let t = format!("t-{i}");
        let ctx = Context::new().tenant(&t).region("eu-west");
        assert_eq!(h.evaluate(&ctx), store.evaluate("new-checkout", &ctx));
        assert_eq!(h.variant(&ctx), store.variant("new-checkout", &ctx));
    }
}

#[test]
fn a_snapshot_pins_one_config_for_handles_too() {
    let store =
        FlagStore::from_json(r#"{"version":1,"flags":{"a":{"enabled":true}}}"#).expect("ok");
    let h = store.handle("a");
    let snap = store.snapshot();
    store.apply_json(r#"{"version":2,"flags":{"a":{"enabled":false}}}"#).expect("ok");
    let ctx = Context::new();
    assert_eq!(snap.version(), 1);
    assert!(h.is_enabled_in(&snap, &ctx) && snap.is_enabled("a", &ctx));
    assert_eq!(h.evaluate_in(&snap, &ctx).reason, Reason::Enabled);
    assert!(!h.is_enabled(&ctx));
    assert!(snap.contains("a") && !snap.contains("b"));
    assert_eq!(snap.flag_keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn a_handle_used_with_another_stores_snapshot_looks_up_by_key() {
    let one = FlagStore::from_json(r#"{"version":1,"flags":{"x":{"enabled":true}}}"#).expect("ok");
    let two = FlagStore::from_json(
        r#"{"version":1,"flags":{"a":{"enabled":false},"x":{"enabled":false}}}"#,
    )
    .expect("ok");
    let h = one.handle("x");
    assert!(h.is_enabled(&Context::new()));
    assert_eq!(h.evaluate_in(&two.snapshot(), &Context::new()).reason, Reason::KillSwitch);
}

#[test]
fn stores_are_shared_as_arc_or_static() {
    static STORE: std::sync::LazyLock<FlagStore> = std::sync::LazyLock::new(FlagStore::new);
    STORE.apply_json(r#"{"version":1,"flags":{"s":{"enabled":true}}}"#).expect("ok");
    let arc = std::sync::Arc::new(FlagStore::new());
    let reader = std::thread::spawn({
        let arc = arc.clone();
        move || arc.is_enabled("s", &Context::new()) || STORE.is_enabled("s", &Context::new())
    });
    assert!(reader.join().expect("thread"));
}

#[test]
fn a_schema_reference_is_accepted_and_ignored() {
    let doc = r#"{ "$schema": "../schema/flagstone.schema.json", "version": 1,
                   "flags": { "a": { "enabled": true } } }"#;
    let store = FlagStore::from_json(doc).expect("valid");
    assert!(store.is_enabled("a", &Context::new()));
}

#[test]
fn a_document_with_many_problems_gives_a_message_a_person_can_read() {
    let cohorts: Vec<String> = (0..100_000).map(|i| format!(r#""c{i}": {{}}"#)).collect();
    let doc = format!(r#"{{ "version": 1, "cohorts": {{ {} }} }}"#, cohorts.join(","));
    let err = FlagStore::new().apply_json(&doc).expect_err("invalid");
    let text = err.to_string();
    assert_eq!(err.problem_count(), 100_000);
    assert_eq!(err.problems().len(), flagstone::MAX_PROBLEMS);
    assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    assert!(text.ends_with("and 99900 more"), "{}", &text[text.len().saturating_sub(200)..]);
}

/// Issue 18, item 7: errors are matchable by kind, and the stale kind
/// carries both versions.
#[test]
fn errors_are_matchable_by_kind_with_their_versions() {
    use flagstone::ErrorKind;
    let store = FlagStore::from_json(r#"{ "version": 7, "flags": { "f": { "enabled": true } } }"#)
        .expect("valid");
    let kind = |json: &str| store.apply_json(json).expect_err("refused").kind();
    assert_eq!(kind(r#"{ "version": 8, "flags": { "f": {} } }"#), ErrorKind::Invalid);
    assert_eq!(kind(r#"{ "version": 3 }"#), ErrorKind::Stale { offered: 3, newest: 7 });
    assert_eq!(kind(r#"{ "version": 7 }"#), ErrorKind::SameVersion { version: 7 });
    assert_eq!(store.rollback().expect_err("nothing kept").kind(), ErrorKind::NoHistory);
    let stale = store.apply_json(r#"{ "version": 3 }"#).expect_err("stale").to_string();
    assert!(!stale.contains("rollback()"), "a rollback does not lower the mark: {stale}");
}

/// Issue 17: checks by key and by handle read a per-thread cached
/// snapshot. The cache never keeps the store itself alive, sees every
/// swap at once, and a thread checking more stores than it caches still
/// answers right.
#[test]
fn the_per_thread_snapshot_cache_follows_swaps_and_never_keeps_a_store() {
    let doc = |version: u64, on: bool| {
        format!(r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": {on} }} }} }}"#)
    };
    let ctx = Context::new().user("u");

    // A dropped store goes, listeners and all, though this thread cached it.
    let sentinel = std::sync::Arc::new(());
    let store = FlagStore::from_json(doc(1, true)).expect("valid");
    let held = sentinel.clone();
    store.on_event(move |_| {
        let _ = &held;
    });
    assert!(store.is_enabled("f", &ctx));
    assert!(store.handle("f").is_enabled(&ctx));
    assert!(store.snapshot().is_enabled("f", &ctx));
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 2);
    drop(store);
    assert_eq!(std::sync::Arc::strong_count(&sentinel), 1, "a thread's cache kept the store");

    // Every swap is seen by the next check on the same thread.
    let store = FlagStore::from_json(doc(1, true)).expect("valid");
    let handle = store.handle("f");
    for version in 2..50u64 {
        let on = version % 2 == 0;
        store.apply_json(doc(version, on)).expect("applied");
        assert_eq!(store.is_enabled("f", &ctx), on, "by key at version {version}");
        assert_eq!(handle.is_enabled(&ctx), on, "by handle at version {version}");
        let snapshot = store.snapshot();
        assert_eq!((snapshot.version(), snapshot.is_enabled("f", &ctx)), (version, on));
    }

    // More stores than a thread caches: each still answers for itself.
    let stores: Vec<FlagStore> =
        (0..9).map(|i| FlagStore::from_json(doc(1, i % 3 == 0)).expect("valid")).collect();
    for _ in 0..3 {
        for (i, s) in stores.iter().enumerate() {
            assert_eq!(s.is_enabled("f", &ctx), i % 3 == 0, "store {i}");
            assert_eq!(s.snapshot().is_enabled("f", &ctx), i % 3 == 0, "snapshot of store {i}");
        }
    }
}
