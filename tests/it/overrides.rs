//! Local overrides and the testing helpers.

use flagstone::testing::{TestStore, scoped_override};
use flagstone::{Context, FlagStore, Override, Reason};

use crate::{EXAMPLE, example_at};

#[test]
fn an_override_beats_the_config_and_shows_in_the_reason() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    let outsider = Context::new().tenant("t-nobody").user("u-9");
    let flag = store.snapshot().flag_keys().next().expect("a flag").to_owned();
    store.set_override(&flag, Override::On);
    let ev = store.evaluate(&flag, &outsider);
    assert!(ev.enabled);
    assert_eq!(ev.reason, Reason::Override { enabled: true });
    assert_eq!(ev.reason.to_string(), "overridden on locally");
    assert!(store.handle(&flag).is_enabled(&outsider));
    assert!(store.snapshot().explain(&flag, &outsider).enabled);

    store.set_override(&flag, Override::Off);
    assert_eq!(store.evaluate(&flag, &outsider).reason, Reason::Override { enabled: false });
    assert!(!store.is_enabled(&flag, &outsider));

    // It survives a push and a rollback, until it is cleared.
    store.apply_json(example_at("canary", 8)).expect("newer");
    assert!(!store.is_enabled(&flag, &outsider));
    store.rollback().expect("kept");
    assert!(!store.is_enabled(&flag, &outsider));
    assert_eq!(store.overrides().len(), 1);
    store.clear_override(&flag);
    assert_ne!(store.evaluate(&flag, &outsider).reason, Reason::Override { enabled: false });
    assert!(store.overrides().is_empty());
}

#[test]
fn an_override_can_force_a_variant_or_add_a_flag() {
    let store = FlagStore::new();
    store.set_override("not-configured", Override::Variant("treatment".into()));
    let ev = store.evaluate("not-configured", &Context::new());
    assert_eq!((ev.enabled, ev.variant), (true, Some("treatment")));
    assert_eq!(store.variant("not-configured", &Context::new()), Some("treatment"));
    store
        .apply_json(r#"{ "version": 1, "flags": { "other": { "enabled": true } } }"#)
        .expect("valid");
    assert_eq!(store.variant("not-configured", &Context::new()), Some("treatment"));
    store.clear_overrides();
    assert_eq!(store.evaluate("not-configured", &Context::new()).reason, Reason::UnknownFlag);
}

#[test]
fn test_stores_are_independent_so_parallel_tests_do_not_mix() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestStore::new().on("f").build().expect("valid"));
        let b = s.spawn(|| TestStore::new().off("f").build().expect("valid"));
        (a.join().expect("built"), b.join().expect("built"))
    });
    let ctx = Context::new().user("u-1");
    assert!(a.is_enabled("f", &ctx));
    assert!(!b.is_enabled("f", &ctx));
    let over_config =
        TestStore::new().config_json(EXAMPLE).variant("dark-mode", "dim").build().expect("valid");
    assert_eq!(over_config.variant("dark-mode", &ctx), Some("dim"));
    assert_eq!(over_config.version(), 7);
    assert!(TestStore::new().config_json("{").build().is_err());
}

#[test]
fn a_scoped_override_puts_back_what_was_there() {
    let store = FlagStore::new();
    store.set_override("f", Override::Off);
    {
        let _on = scoped_override(&store, "f", Override::On);
        assert!(store.is_enabled("f", &Context::new()));
    }
    assert_eq!(store.overrides().get("f"), Some(&Override::Off));
    {
        let _g = scoped_override(&store, "g", Override::On);
    }
    assert!(!store.overrides().contains_key("g"));
}

/// Issue 18, item 2: overridden evaluations and outcomes count under
/// `stage="override"` with their variant, and never in a guard's groups.
#[test]
fn overrides_count_under_their_own_stage_label_and_never_in_a_guard() {
    let store = FlagStore::from_json(
        r#"{ "version": 1, "flags": {
          "on": { "enabled": true, "stages": [ { "name": "canary", "percent": 50 } ], "stage": "canary",
                  "guard": { "holdback": 10, "max_error_ratio": 2.0 } },
          "off": { "enabled": true },
          "v": { "enabled": true, "variants": [ { "name": "a", "weight": 1 } ] } } }"#,
    )
    .expect("valid")
    .with_manual_guard_checks();
    store.set_override("on", Override::On);
    store.set_override("off", Override::Off);
    store.set_override("v", Override::Variant("treatment".into()));
    for i in 0..100 {
        let user = format!("u-{i}");
        let ctx = Context::new().user(&user);
        assert!(store.is_enabled("on", &ctx) && !store.is_enabled("off", &ctx));
        assert_eq!(store.variant("v", &ctx), Some("treatment"));
        store.record("on", &ctx, flagstone::Outcome::Error);
        store.record("off", &ctx, flagstone::Outcome::Success);
    }
    store.check_guards();
    let m = store.metrics();
    let count = |flag: &str| -> Vec<(&str, Option<&str>, bool, u64)> {
        m.evaluations()
            .iter()
            .filter(|e| e.flag == flag)
            .map(|e| (e.stage, e.variant, e.enabled, e.count))
            .collect()
    };
    assert_eq!(count("on"), [("override", None, true, 100)]);
    assert_eq!(count("off"), [("override", None, false, 100)]);
    assert_eq!(count("v"), [("override", Some("treatment"), true, 100)]);
    let on = m.outcomes_of("on", "override").expect("outcomes under override");
    assert_eq!(on.errors, 100);
    assert!(
        m.outcomes_of("on", "canary").is_none() && m.outcomes_of("on", "not-exposed").is_none()
    );
    assert_eq!(m.outcomes_of("off", "override").map(|o| o.successes), Some(100));
    let guard = m.guards().iter().find(|g| g.flag == "on").expect("guarded");
    assert_eq!((guard.exposed.units, guard.control.units), (0, 0), "not a guard's evidence");
    let text = m.to_prometheus();
    assert!(
        text.contains(r#"flagstone_evaluations_total{feature_flag_key="v",stage="override",feature_flag_result_variant="treatment",result="on"} 100"#),
        "{text}"
    );
}
