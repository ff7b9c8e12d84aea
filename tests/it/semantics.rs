//! The meaning of the config format, rule by rule.

use std::sync::Arc;
use std::time::Duration;

use flagstone::{Context, FlagStore, ManualClock, Reason};

use crate::{EXAMPLE, example_at};

fn flag(json_flag: &str, cohorts: &str) -> FlagStore {
    let json = format!(r#"{{"version":1,"cohorts":{{{cohorts}}},"flags":{{"f":{json_flag}}}}}"#);
    FlagStore::from_json(json).expect("valid config")
}

/// The first tenant (of `t-0..`) whose bucket under `salt` is at or above
/// `at_least` thousandths of a percent.
fn tenant_with_bucket(salt: &str, range: std::ops::Range<u32>) -> String {
    (0..100_000)
        .map(|i| format!("t-{i}"))
        .find(|t| range.contains(&flagstone::bucket(salt, t)))
        .expect("some tenant lands in the range")
}

#[test]
fn the_documented_example_is_accepted() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    assert_eq!(store.version(), 7);
    assert!(store.is_enabled("dark-mode", &Context::new()));
}

#[test]
fn cohorts_and_across_criteria_or_within_a_list() {
    let store = flag(
        r#"{"enabled":true,"stages":[{"name":"s","cohorts":["c"]}],"stage":"s"}"#,
        r#""c":{"tenants":["a","b"],"regions":["eu"],"attributes":{"plan":["pro","ent"]}}"#,
    );
    let on = |t, r, p| {
        let mut ctx = Context::new().tenant(t).region(r);
        if let Some(p) = p {
            ctx = ctx.attr("plan", p);
        }
        store.is_enabled("f", &ctx)
    };
    assert!(on("a", "eu", Some("pro")));
    assert!(on("b", "eu", Some("ent")));
    assert!(!on("c", "eu", Some("pro")), "tenant not listed");
    assert!(!on("a", "us", Some("pro")), "region not listed");
    assert!(!on("a", "eu", Some("free")), "attribute value not listed");
    assert!(!on("a", "eu", None), "attribute missing from the context");
    assert!(!store.is_enabled("f", &Context::new().region("eu").attr("plan", "pro")));
}

#[test]
fn the_kill_switch_beats_everything() {
    let store = flag(
        r#"{"enabled":false,"stages":[{"name":"all"}],"stage":"all",
            "variants":[{"name":"v","weight":1}]}"#,
        "",
    );
    let ev = store.evaluate("f", &Context::new().user("u"));
    assert!(!ev.enabled);
    assert_eq!(ev.reason, Reason::KillSwitch);
    assert_eq!(ev.variant, None);
}

#[test]
fn unknown_flags_are_off_and_say_so() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    let ev = store.evaluate("no-such-flag", &Context::new());
    assert!(!ev.enabled);
    assert_eq!(ev.reason, Reason::UnknownFlag);
    assert_eq!(ev.reason.to_string(), "unknown flag");
    assert!(!FlagStore::new().is_enabled("dark-mode", &Context::new()));
}

#[test]
fn a_flag_without_stages_is_on_for_everyone() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid");
    assert_eq!(store.evaluate("dark-mode", &Context::new()).reason, Reason::Enabled);
}

#[test]
fn exclusions_beat_stages() {
    let store = FlagStore::from_json(example_at("everyone", 8)).expect("valid");
    let ev = store.evaluate("new-checkout", &Context::new().tenant("bank-1"));
    assert_eq!(ev.reason, Reason::Excluded { cohort: "regulated" });
    assert!(!ev.enabled && ev.variant.is_none());
    assert!(store.is_enabled("new-checkout", &Context::new().tenant("bank-2")));
}

#[test]
fn stages_are_cumulative_up_to_the_current_one() {
    let store = FlagStore::from_json(EXAMPLE).expect("valid"); // stage: canary
    let staff = Context::new().tenant("acme-internal");
    let alice = Context::new().tenant("zzz").user("alice");
    let beta = Context::new().tenant("t-221");
    assert_eq!(store.evaluate("new-checkout", &staff).reason.label(), "internal");
    assert_eq!(store.evaluate("new-checkout", &alice).reason.label(), "internal");
    assert_eq!(store.evaluate("new-checkout", &beta).reason.label(), "beta");

    let canary = tenant_with_bucket("new-checkout", 0..5_000);
    let outside = tenant_with_bucket("new-checkout", 5_000..100_000);
    let ev = store.evaluate("new-checkout", &Context::new().tenant(&canary));
    assert_eq!(ev.reason, Reason::Stage { index: 2, name: "canary" });
    let ev = store.evaluate("new-checkout", &Context::new().tenant(&outside));
    assert_eq!(ev.reason, Reason::NotExposed);

    // "internal": the beta tenants and the canary are not exposed yet.
    store.apply_json(example_at("internal", 8)).expect("valid");
    assert!(store.is_enabled("new-checkout", &staff));
    assert!(!store.is_enabled("new-checkout", &beta));
    assert!(!store.is_enabled("new-checkout", &Context::new().tenant(&canary)));
}

#[test]
fn rolling_back_one_stage_removes_exactly_that_stages_audience() {
    let tenants: Vec<String> = (0..5_000).map(|i| format!("tenant-{i}")).collect();
    let exposed = |store: &FlagStore| -> Vec<bool> {
        tenants
            .iter()
            .map(|t| store.is_enabled("new-checkout", &Context::new().tenant(t).region("us-east")))
            .collect()
    };
    let store = FlagStore::from_json(example_at("canary", 1)).expect("valid");
    let canary = exposed(&store);
    store.apply_json(example_at("everyone", 2)).expect("valid");
    let everyone = exposed(&store);
    assert!(everyone.iter().all(|&on| on));
    store.rollback().expect("history");
    assert_eq!(exposed(&store), canary, "stepping back restores exactly the canary audience");
    let share = canary.iter().filter(|&&on| on).count() as f64 / tenants.len() as f64;
    assert!((0.04..0.06).contains(&share), "canary share {share}");
}

#[test]
fn percentages_fail_closed_without_the_unit() {
    let store = flag(
        r#"{"enabled":true,"bucket_by":"plan","stages":[
            {"name":"all","percent":100},{"name":"staff","cohorts":["staff"]}],"stage":"staff",
            "variants":[{"name":"first","weight":0},{"name":"second","weight":1}]}"#,
        r#""staff":{"users":["alice"]}"#,
    );
    assert!(!store.is_enabled("f", &Context::new().user("bob")), "no plan: not in 100%");
    assert!(store.is_enabled("f", &Context::new().user("bob").attr("plan", "x")));
    // Exposed by a cohort but without the unit: the first variant.
    let ev = store.evaluate("f", &Context::new().user("alice"));
    assert_eq!(ev.reason.label(), "staff");
    assert_eq!(ev.variant, Some("first"));
    assert_eq!(store.variant("f", &Context::new().user("bob").attr("plan", "x")), Some("second"));
}

#[test]
fn bucket_by_picks_the_unit() {
    for (by, ctx) in [
        ("tenant", Context::new().tenant("k")),
        ("user", Context::new().user("k")),
        ("region", Context::new().region("k")),
        ("seat", Context::new().attr("seat", "k")),
    ] {
        let threshold = f64::from(flagstone::bucket("f", "k") + 1) / 1000.0;
        let store = flag(
            &format!(
                r#"{{"enabled":true,"bucket_by":"{by}",
                    "stages":[{{"name":"p","percent":{threshold}}}],"stage":"p"}}"#
            ),
            "",
        );
        assert!(store.is_enabled("f", &ctx), "bucket_by {by}");
        // The same value under another key is not the unit.
        assert!(!store.is_enabled("f", &Context::new().attr("other", "k")), "bucket_by {by}");
    }
}

#[test]
fn variants_go_only_to_exposed_contexts_and_split_by_weight() {
    let store = FlagStore::from_json(example_at("everyone", 8)).expect("valid");
    let mut treatment = 0;
    for i in 0..10_000 {
        let t = format!("t-{i}");
        match store.variant("new-checkout", &Context::new().tenant(&t)) {
            Some("treatment") => treatment += 1,
            Some("control") => {}
            other => panic!("unexpected variant {other:?}"),
        }
    }
    assert!((4_700..5_300).contains(&treatment), "treatment {treatment} of 10000");
    assert_eq!(store.variant("new-checkout", &Context::new().tenant("bank-1")), None);
    let canary = FlagStore::from_json(EXAMPLE).expect("valid");
    let outside = tenant_with_bucket("new-checkout", 5_000..100_000);
    assert_eq!(canary.variant("new-checkout", &Context::new().tenant(&outside)), None);
}

#[test]
fn scheduled_stages_open_on_time_without_a_push() {
    let clock = Arc::new(ManualClock::from_rfc3339("2026-12-01T01:59:59Z").expect("time"));
    let store =
        FlagStore::from_json(example_at("eu-half", 8)).expect("valid").with_clock(clock.clone());
    let eu = tenant_with_bucket("new-checkout", 5_000..50_000);
    let ctx = Context::new().tenant(&eu).region("eu-north");
    assert_eq!(store.evaluate("new-checkout", &ctx).reason, Reason::NotExposed);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store.evaluate("new-checkout", &ctx).reason,
        Reason::Stage { index: 3, name: "eu-half" }
    );
    // Outside the region the stage never applies, whatever the time.
    assert!(!store.is_enabled("new-checkout", &Context::new().tenant(&eu).region("us-east")));
}

#[test]
fn a_stage_at_zero_percent_exposes_no_one() {
    let store = flag(r#"{"enabled":true,"stages":[{"name":"z","percent":0}],"stage":"z"}"#, "");
    assert!((0..2_000).all(|i| !store.is_enabled("f", &Context::new().user(&format!("u{i}")))));
}

#[test]
fn the_salt_defaults_to_the_flag_key() {
    let unit = tenant_with_bucket("f", 0..10_000);
    let store = flag(r#"{"enabled":true,"stages":[{"name":"p","percent":10}],"stage":"p"}"#, "");
    assert!(store.is_enabled("f", &Context::new().user(&unit)));
}
