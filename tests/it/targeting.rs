//! Richer targeting: rule operators (their semantics table), typed values
//! and their getters, prerequisite flags and their validation.

use flagstone::{Context, FlagStore, Reason};
use serde_json::{Value, json};

/// A store with one flag `f` on for the cohort of one rule.
fn with_rule(rule: Value) -> FlagStore {
    let doc = json!({ "version": 1,
        "cohorts": { "c": { "rules": [rule] } },
        "flags": { "f": { "enabled": true, "stages": [ { "name": "s", "cohorts": ["c"] } ], "stage": "s" } } });
    FlagStore::from_json(doc.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `f` is on for a context with `attr` set to `value` (or unset).
fn on(store: &FlagStore, value: Option<&str>) -> bool {
    let ctx = match value {
        Some(v) => Context::new().attr("a", v),
        None => Context::new(),
    };
    store.is_enabled("f", &ctx)
}

/// A context's value for the attribute (`None`: unset), and whether the rule matches it.
type Case<'a> = (Option<&'a str>, bool);

#[test]
fn every_operator_follows_its_semantics_table() {
    // (rule, [(context value, expected)]): None is a context without the attribute.
    let long = "ÄB".repeat(200);
    let table: Vec<(Value, Vec<Case<'_>>)> = vec![
        (
            json!({ "attribute": "a", "op": "in", "values": ["x", "y"] }),
            vec![(Some("x"), true), (Some("z"), false), (Some("X"), false), (None, false)],
        ),
        (
            json!({ "attribute": "a", "op": "in", "values": ["x"], "case_insensitive": true }),
            vec![(Some("X"), true)],
        ),
        (json!({ "attribute": "a", "op": "in", "values": [50] }), vec![(Some("50"), true)]),
        (
            json!({ "attribute": "a", "op": "in", "values": ["x"], "negate": true }),
            vec![(Some("x"), false), (Some("z"), true), (None, true)],
        ),
        (
            json!({ "attribute": "a", "op": "starts_with", "value": "pre" }),
            vec![(Some("prefix"), true), (Some("xpre"), false), (None, false)],
        ),
        (
            json!({ "attribute": "a", "op": "starts_with", "values": ["a", "b"], "case_insensitive": true }),
            vec![(Some("Bx"), true), (Some("cx"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "ends_with", "value": ".com" }),
            vec![(Some("x.com"), true), (Some("x.COM"), false), (Some("com"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "ends_with", "value": ".com", "case_insensitive": true }),
            vec![(Some("X.COM"), true)],
        ),
        (
            json!({ "attribute": "a", "op": "contains", "values": ["mid"] }),
            vec![(Some("amidst"), true), (Some("m-i-d"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "contains", "value": "ÄB", "case_insensitive": true }),
            vec![(Some("xxäbxx"), true), (Some(long.as_str()), true)],
        ),
        (
            json!({ "attribute": "a", "op": "matches", "value": "^t-[0-9]+$" }),
            vec![(Some("t-104"), true), (Some("t-x"), false), (None, false)],
        ),
        (
            json!({ "attribute": "a", "op": "matches", "value": "^ACME", "case_insensitive": true }),
            vec![(Some("acme-1"), true)],
        ),
        (
            json!({ "attribute": "a", "op": "eq", "value": 12 }),
            vec![
                (Some("12"), true),
                (Some("12.0"), true),
                (Some(" 12 "), true),
                (Some("12a"), false),
                (None, false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "gte", "value": 50 }),
            vec![
                (Some("50"), true),
                (Some("51.5"), true),
                (Some("49"), false),
                (Some("lots"), false),
                (Some("NaN"), false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "lt", "value": 0.5 }),
            vec![
                (Some("0.25"), true),
                (Some("-3"), true),
                (Some("0.5"), false),
                (Some("1e9"), false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "gt", "value": 1, "negate": true }),
            vec![(Some("2"), false), (Some("0"), true), (Some("nope"), true), (None, true)],
        ),
        (
            json!({ "attribute": "a", "op": "lte", "value": -1 }),
            vec![(Some("-1"), true), (Some("0"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "semver_eq", "value": "1.2.3" }),
            vec![
                (Some("1.2.3"), true),
                (Some("1.2.3+build.7"), true),
                (Some("1.2.3-rc.1"), false),
                (Some("v1.2.3"), false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "semver_lt", "value": "2.0.0" }),
            vec![
                (Some("1.99.0"), true),
                (Some("2.0.0-beta"), true),
                (Some("2.0.0"), false),
                (Some("1.2"), false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "semver_gte", "value": "1.0.0-beta.2" }),
            vec![(Some("1.0.0-beta.11"), true), (Some("1.0.0-beta"), false), (Some("1.0.0"), true)],
        ),
        (
            json!({ "attribute": "a", "op": "semver_lte", "value": "1.0.0" }),
            vec![(Some("1.0.0"), true), (Some("1.0.1"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "semver_gt", "value": "1.0.0" }),
            vec![(Some("1.0.1"), true), (Some("01.0.1"), false), (None, false)],
        ),
        (
            json!({ "attribute": "a", "op": "before", "value": "2026-12-01T00:00:00Z" }),
            vec![
                (Some("2026-11-30T23:59:59Z"), true),
                (Some("2026-12-01T01:00:00+02:00"), true),
                (Some("2026-12-01T00:00:00Z"), false),
                (Some("yesterday"), false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "after", "value": "2026-12-01T00:00:00Z" }),
            vec![(Some("2026-12-01T00:00:00.001Z"), true), (Some("2026-11-01T00:00:00Z"), false)],
        ),
        (
            json!({ "attribute": "a", "op": "in_cidr", "values": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"] }),
            vec![
                (Some("10.1.2.3"), true),
                (Some("2001:db8:0:1::9"), true),
                (Some("::ffff:10.0.0.1"), true),
                (Some("192.168.1.7"), true),
                (Some("192.168.1.8"), false),
                (Some("2001:db9::1"), false),
                (Some("not an ip"), false),
                (None, false),
            ],
        ),
        (
            json!({ "attribute": "a", "op": "in_cidr", "values": ["10.0.0.0/8"], "negate": true }),
            vec![(Some("10.0.0.1"), false), (Some("8.8.8.8"), true), (Some("bogus"), true)],
        ),
    ];
    for (rule, cases) in table {
        let store = with_rule(rule.clone());
        for (value, expected) in cases {
            assert_eq!(on(&store, value), expected, "{rule} with {value:?}");
        }
    }
}

#[test]
fn rules_read_tenant_user_region_and_combine_with_lists() {
    let doc = json!({ "version": 1,
        "cohorts": { "big-eu": { "regions": ["eu-west"], "rules": [
            { "attribute": "seats", "op": "gte", "value": 50 },
            { "attribute": "tenant", "op": "starts_with", "value": "t-" },
            { "attribute": "user", "op": "ends_with", "value": "@acme.com", "case_insensitive": true } ] } },
        "flags": { "f": { "enabled": true, "stages": [ { "name": "s", "cohorts": ["big-eu"] } ], "stage": "s" } } });
    let store = FlagStore::from_json(doc.to_string()).expect("valid");
    let ctx = |region, seats, tenant, user| {
        Context::new().region(region).attr("seats", seats).tenant(tenant).user(user)
    };
    assert!(store.is_enabled("f", &ctx("eu-west", "60", "t-1", "Bo@ACME.com")));
    assert!(
        !store.is_enabled("f", &ctx("us-east", "60", "t-1", "bo@acme.com")),
        "the region list too"
    );
    assert!(!store.is_enabled("f", &ctx("eu-west", "10", "t-1", "bo@acme.com")), "every rule");
    assert!(!store.is_enabled("f", &ctx("eu-west", "60", "x-1", "bo@acme.com")));
}

#[test]
fn rules_that_cannot_work_are_refused_with_their_path() {
    let doc = json!({ "version": 1, "cohorts": {
        "c": { "rules": [
            { "attribute": "a", "op": "matches", "value": "(" },
            { "attribute": "a", "op": "gte", "value": "fifty" },
            { "attribute": "a", "op": "semver_eq", "value": "1.2" },
            { "attribute": "a", "op": "before", "value": "soon" },
            { "attribute": "a", "op": "in_cidr", "values": ["10.0.0.0/40"] },
            { "attribute": "a", "op": "in", "value": "x" },
            { "attribute": "a", "op": "gt", "value": 1, "case_insensitive": true },
            { "attribute": "", "op": "in", "values": ["x"] },
            { "attribute": "a", "op": "matches", "value": "a{1000}{1000}" } ] },
        "empty": { "rules": [] } } });
    let err = FlagStore::from_json(doc.to_string()).expect_err("invalid");
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path()).collect();
    for expected in [
        "cohorts.c.rules[0].value",
        "cohorts.c.rules[1].value",
        "cohorts.c.rules[2].value",
        "cohorts.c.rules[3].value",
        "cohorts.c.rules[4].values",
        "cohorts.c.rules[5].values",
        "cohorts.c.rules[6].case_insensitive",
        "cohorts.c.rules[7].attribute",
        "cohorts.c.rules[8].value",
        "cohorts.empty.rules",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}\n{err}");
    }
    assert!(err.to_string().contains("size limit"), "a regex over the size limit says so: {err}");
}

#[test]
fn values_come_from_the_variant_or_the_flag_and_getters_check_their_type() {
    let store = FlagStore::from_json(
        json!({ "version": 1, "flags": {
            "limits": { "enabled": true, "value": { "rate": 100, "burst": 20 } },
            "rate": { "enabled": true, "value": 250 },
            "ratio": { "enabled": true, "value": 0.25 },
            "dark": { "enabled": true, "value": true },
            "off": { "enabled": false, "value": 7 },
            "banner": { "enabled": true, "variants": [
                { "name": "a", "weight": 1, "value": "Hello" },
                { "name": "b", "weight": 1 } ] } } })
        .to_string(),
    )
    .expect("valid");
    let ctx = Context::new().user("u-1");
    assert_eq!(store.evaluate("limits", &ctx).value, Some(&json!({ "rate": 100, "burst": 20 })));
    assert_eq!(store.json_value("limits", &ctx, &Value::Null)["burst"], 20);
    assert_eq!(store.i64_value("rate", &ctx, 0), 250);
    assert_eq!(store.f64_value("rate", &ctx, 0.0), 250.0, "an integer reads as a float");
    assert_eq!(store.f64_value("ratio", &ctx, 0.0), 0.25);
    assert_eq!(store.i64_value("ratio", &ctx, -1), -1, "a float is not an integer");
    assert!(store.bool_value("dark", &ctx, false));
    assert_eq!(store.str_value("dark", &ctx, "no"), "no", "wrong type: the default");
    assert_eq!(store.i64_value("off", &ctx, 3), 3, "off: the default");
    assert_eq!(store.evaluate("off", &ctx).value, None);
    assert_eq!(store.i64_value("missing", &ctx, 9), 9);
    let (mut a, mut b) = (0, 0);
    for i in 0..200 {
        let user = format!("u-{i}");
        let ctx = Context::new().user(&user);
        match store.evaluate("banner", &ctx).variant {
            Some("a") => {
                a += 1;
                assert_eq!(store.str_value("banner", &ctx, "-"), "Hello");
            }
            Some("b") => {
                b += 1;
                assert_eq!(store.str_value("banner", &ctx, "-"), "-", "a variant without a value");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(a > 50 && b > 50);
    let snap = store.snapshot();
    assert_eq!(snap.i64_value("rate", &ctx, 0), 250);
    assert_eq!(store.handle("rate").i64_value(&ctx, 0), 250);
    let err = FlagStore::from_json(
        r#"{ "version": 1, "flags": { "x": { "enabled": true, "value": 1, "variants": [ { "name": "a", "weight": 1 } ] } } }"#,
    )
    .expect_err("both");
    assert_eq!(err.problems()[0].path(), "flags.x.value");
}

fn prerequisites() -> FlagStore {
    FlagStore::from_json(
        json!({ "version": 1,
            "cohorts": { "beta": { "tenants": ["t-1", "t-2"] } },
            "flags": {
                "new-api": { "enabled": true, "bucket_by": "tenant",
                    "stages": [ { "name": "beta", "cohorts": ["beta"] } ], "stage": "beta" },
                "checkout-v2": { "enabled": true, "bucket_by": "tenant",
                    "variants": [ { "name": "control", "weight": 1 }, { "name": "treatment", "weight": 1 } ] },
                "needs-api": { "enabled": true, "requires": [ { "flag": "new-api" } ] },
                "needs-both": { "enabled": true, "bucket_by": "tenant", "requires": [
                    { "flag": "needs-api" }, { "flag": "checkout-v2", "variant": "treatment" } ] } } })
        .to_string(),
    )
    .expect("valid")
}

#[test]
fn a_flag_is_on_only_when_its_prerequisites_are() {
    let store = prerequisites();
    let outside = Context::new().tenant("t-9");
    assert_eq!(
        store.evaluate("needs-api", &outside).reason,
        Reason::Prerequisite { flag: "new-api" }
    );
    assert!(!store.is_enabled("needs-api", &outside));
    for tenant in ["t-1", "t-2"] {
        let ctx = Context::new().tenant(tenant);
        assert!(store.is_enabled("needs-api", &ctx));
        let treatment = store.variant("checkout-v2", &ctx) == Some("treatment");
        assert_eq!(
            store.is_enabled("needs-both", &ctx),
            treatment,
            "{tenant}: the variant is required too"
        );
        if !treatment {
            assert_eq!(
                store.evaluate("needs-both", &ctx).reason,
                Reason::Prerequisite { flag: "checkout-v2" }
            );
        }
    }
    // Turning the parent off turns the dependents off, in the same push.
    let why = store.snapshot().explain("needs-both", &Context::new().tenant("t-9"));
    assert!(!why.enabled && why.reason == "prerequisite", "{why:?}");
}

#[test]
fn prerequisite_cycles_missing_flags_and_depth_are_refused_with_paths() {
    let cycle = json!({ "version": 1, "flags": {
        "a": { "enabled": true, "requires": [ { "flag": "b" } ] },
        "b": { "enabled": true, "requires": [ { "flag": "c" } ] },
        "c": { "enabled": true, "requires": [ { "flag": "a" } ] },
        "d": { "enabled": true, "requires": [ { "flag": "ghost" }, { "flag": "a", "variant": "v" }, { "flag": "d" } ] } } });
    let err = FlagStore::from_json(cycle.to_string()).expect_err("cycle");
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert!(
        problems.contains(&"flags.a.requires[0] -> flags.b.requires[0] -> flags.c.requires[0] -> flags.a: prerequisites form a cycle".to_owned()),
        "{problems:#?}"
    );
    assert_eq!(
        problems.iter().filter(|p| p.contains("cycle")).count(),
        1,
        "reported once: {problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("flags.d.requires[0].flag: \"ghost\" names no flag")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("flags.d.requires[1].variant: \"v\" is not a variant")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("flags.d.requires[2].flag: a flag cannot require itself")),
        "{problems:#?}"
    );

    // A chain deeper than the bound.
    let mut flags = serde_json::Map::new();
    for i in 0..=flagstone::config::MAX_PREREQUISITE_DEPTH + 1 {
        let mut f = json!({ "enabled": true });
        if i > 0 {
            f["requires"] = json!([ { "flag": format!("f{}", i - 1) } ]);
        }
        flags.insert(format!("f{i}"), f);
    }
    let deep = json!({ "version": 1, "flags": flags });
    let err = FlagStore::from_json(deep.to_string()).expect_err("too deep");
    assert!(err.to_string().contains("prerequisites chain 9 flags deep"), "{err}");
}

#[test]
fn a_unit_list_buckets_by_the_first_unit_the_context_has() {
    let store = FlagStore::from_json(
        r#"{ "version": 1, "flags": { "f": { "enabled": true, "bucket_by": ["user", "sessionId"],
            "stages": [ { "name": "half", "percent": 50 } ], "stage": "half" } } }"#,
    )
    .expect("valid");
    for i in 0..200 {
        let id = format!("id-{i}");
        let by_user = store.is_enabled("f", &Context::new().user(&id).attr("sessionId", "other"));
        let by_session = store.is_enabled("f", &Context::new().attr("sessionId", &id));
        // The same value buckets the same whichever unit carries it.
        assert_eq!(by_user, flagstone::bucket("f", &id) < 50_000, "{id}");
        assert_eq!(by_session, by_user, "{id}");
    }
    assert!(!store.is_enabled("f", &Context::new().tenant("t")), "no unit: in no percentage");
    let err = FlagStore::from_json(
        r#"{ "version": 1, "flags": { "f": { "enabled": true, "bucket_by": ["user", "user"] } } }"#,
    )
    .expect_err("a unit twice");
    assert!(err.to_string().contains("flags.f.bucket_by[1]"), "{err}");
}

#[test]
fn a_stage_may_bucket_and_hand_out_variants_of_its_own() {
    let store = FlagStore::from_json(
        r#"{ "version": 1,
        "cohorts": { "staff": { "users": ["u-staff"] }, "vip": { "users": ["u-vip"] } },
        "flags": { "f": { "enabled": true, "bucket_by": "user",
            "stages": [
              { "name": "staff", "cohorts": ["staff"],
                "variants": [ { "name": "internal", "weight": 1, "value": "staff build" } ] },
              { "name": "tenants", "percent": 30, "salt": "tenants-salt", "bucket_by": "tenant" } ],
            "stage": "tenants",
            "variants": [ { "name": "pinned", "weight": 0, "cohorts": ["vip"] },
                          { "name": "a", "weight": 1 }, { "name": "b", "weight": 1 } ] } } }"#,
    )
    .expect("valid");
    // The staff stage's own variants.
    let staff = store.evaluate("f", &Context::new().user("u-staff"));
    assert_eq!((staff.variant, staff.value), (Some("internal"), Some(&json!("staff build"))));
    // The second stage counts tenants under its own salt.
    for i in 0..200 {
        let tenant = format!("t-{i}");
        let ctx = Context::new().tenant(&tenant).user("u-1");
        assert_eq!(
            store.is_enabled("f", &ctx),
            flagstone::bucket("tenants-salt", &tenant) < 30_000,
            "{tenant}"
        );
    }
    // The flag's variants for it, by the flag's unit; a pinned cohort wins
    // whatever the weights.
    let exposed = (0..200)
        .map(|i| format!("t-{i}"))
        .find(|t| store.is_enabled("f", &Context::new().tenant(t)))
        .expect("an exposed tenant");
    let ev = store.evaluate("f", &Context::new().tenant(&exposed).user("u-vip"));
    assert_eq!(ev.variant, Some("pinned"));
    let ev = store.evaluate("f", &Context::new().tenant(&exposed).user("u-2"));
    assert!(matches!(ev.variant, Some("a" | "b")), "{ev:?}");
    // Counted under the stage and the variant it handed out.
    let text = store.metrics().to_prometheus();
    assert!(
        text.contains(r#"flagstone_evaluations_total{feature_flag_key="f",stage="staff",feature_flag_result_variant="internal",result="on"} 1"#),
        "{text}"
    );
}

#[test]
fn a_prerequisite_may_name_several_variants_or_require_a_flag_off() {
    let store = FlagStore::from_json(
        r#"{ "version": 1, "cohorts": { "beta": { "users": ["u-beta"] } },
        "flags": {
          "parent": { "enabled": true, "stages": [ { "name": "beta", "cohorts": ["beta"] } ], "stage": "beta",
                      "variants": [ { "name": "x", "weight": 1 }, { "name": "y", "weight": 1 } ] },
          "any": { "enabled": true, "requires": [ { "flag": "parent", "variants": ["x", "y"] } ] },
          "off": { "enabled": true, "requires": [ { "flag": "parent", "enabled": false } ] } } }"#,
    )
    .expect("valid");
    let beta = Context::new().user("u-beta");
    let other = Context::new().user("u-other");
    assert!(store.is_enabled("any", &beta) && !store.is_enabled("any", &other));
    assert!(!store.is_enabled("off", &beta) && store.is_enabled("off", &other));
    let err = FlagStore::from_json(
        r#"{ "version": 1, "flags": {
          "p": { "enabled": true, "variants": [ { "name": "x", "weight": 1 } ] },
          "c": { "enabled": true, "requires": [ { "flag": "p", "enabled": false, "variants": ["x"] },
                                                { "flag": "p", "variants": ["x", "z"] } ] } } }"#,
    )
    .expect_err("invalid");
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert!(problems.iter().any(|p| p.starts_with("flags.c.requires[0].enabled")), "{problems:?}");
    assert!(
        problems.iter().any(|p| p.starts_with("flags.c.requires[1].variants[1]")),
        "{problems:?}"
    );
}

#[test]
fn unleash_bucketing_takes_whole_percentages() {
    let err = FlagStore::from_json(
        r#"{ "version": 1, "flags": { "f": { "enabled": true, "bucketing": "unleash",
            "stages": [ { "name": "s", "percent": 12.5 } ], "stage": "s" } } }"#,
    )
    .expect_err("fractional");
    assert!(err.to_string().contains("flags.f.stages[0].percent"), "{err}");
    assert!(err.to_string().contains("whole percentages"), "{err}");
}
