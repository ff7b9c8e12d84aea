//! The Unleash importer: imported flags decide as Unleash's own engine
//! (`unleash-yggdrasil`) does for every context, seeded over random
//! features; and what the conversion cannot carry exactly is a warning.

use flagstone::import::{unleash, unleash_context};
use flagstone::{FlagStore, Reason};
use serde_json::{Value, json};
use unleash_yggdrasil::{EngineState, UpdateMessage};

use crate::rng::Rng;

const PLANS: [&str; 4] = ["free", "pro", "enterprise", "Pro"];

/// A random feature: one to three strategies (rollouts with every kind of
/// stickiness and groupId, user lists, constraints), strategy and feature
/// variants with payloads.
fn feature(rng: &mut Rng, i: usize) -> Value {
    let name = format!("feature-{i}");
    let mut strategies = Vec::new();
    for s in 0..1 + rng.below(3) {
        let mut strategy = match rng.below(4) {
            0 => json!({ "name": "userWithId",
                "parameters": { "userIds": format!("u-{}, u-{},u-{}", rng.below(50), rng.below(50), rng.below(50)) } }),
            1 => json!({ "name": "gradualRolloutUserId",
                "parameters": { "percentage": rng.pick(&["0", "10", "50", "90"]).to_string(), "groupId": format!("g-{i}") } }),
            _ => {
                let mut parameters = json!({
                    "rollout": rng.pick(&["0", "1", "5", "25", "50", "77", "99", "100"]).to_string(),
                    "stickiness": rng.pick(&["default", "userId", "sessionId", "plan"]).to_string(),
                });
                if rng.percent(70) {
                    parameters["groupId"] = json!(if rng.percent(50) {
                        name.clone()
                    } else {
                        format!("group-{s}-{i}")
                    });
                }
                json!({ "name": "flexibleRollout", "parameters": parameters })
            }
        };
        let mut constraints = Vec::new();
        if rng.percent(50) {
            constraints.push(match rng.below(6) {
                0 => json!({ "contextName": "plan", "operator": "IN", "values": ["pro", "enterprise"] }),
                1 => json!({ "contextName": "plan", "operator": "NOT_IN", "values": ["free"],
                              "inverted": rng.percent(30) }),
                2 => json!({ "contextName": "plan", "operator": "STR_STARTS_WITH", "values": ["p"],
                              "caseInsensitive": rng.percent(50) }),
                3 => json!({ "contextName": "seats", "operator": rng.pick(&["NUM_GTE", "NUM_LT", "NUM_EQ"]).to_string(),
                              "value": rng.pick(&["10", "50", "50.0"]).to_string() }),
                4 => json!({ "contextName": "version", "operator": rng.pick(&["SEMVER_LT", "SEMVER_GTE"]).to_string(),
                              "value": "2.0.0" }),
                _ => json!({ "contextName": "environment", "operator": "IN", "values": ["prod"],
                              "inverted": true }),
            });
        }
        strategy["constraints"] = json!(constraints);
        if rng.percent(25) {
            let stick = strategy["parameters"]["stickiness"].clone();
            strategy["variants"] = json!([
                { "name": "s-a", "weight": 1 + rng.below(5), "stickiness": stick,
                  "payload": { "type": "string", "value": "a" } },
                { "name": "s-b", "weight": 1 + rng.below(5), "stickiness": stick,
                  "payload": { "type": "number", "value": "2" } }
            ]);
        }
        strategies.push(strategy);
    }
    let mut variants = Vec::new();
    if rng.percent(60) {
        let stickiness = rng.pick(&["default", "userId", "plan"]).to_string();
        for v in 0..2 + rng.below(3) {
            variants.push(json!({ "name": format!("v{v}"), "weight": rng.below(100) + 1,
                "stickiness": stickiness, "payload": { "type": "json", "value": format!("{{\"v\": {v}}}") } }));
        }
    }
    json!({ "name": name, "enabled": rng.percent(90), "strategies": strategies, "variants": variants })
}

/// A random context: always a sessionId and a plan, mostly a userId.
/// (Where a variant's stickiness is missing, Unleash picks at random,
/// which no test can compare: variants are compared with a userId.)
fn context(rng: &mut Rng) -> Value {
    let mut ctx = json!({ "properties": { "plan": *rng.pick(&PLANS) },
                          "sessionId": format!("s-{}", rng.below(100_000)) });
    if rng.percent(85) {
        ctx["userId"] = json!(format!("u-{}", rng.below(2_000)));
    }
    if rng.percent(70) {
        ctx["properties"]["seats"] = json!(rng.below(100).to_string());
    }
    if rng.percent(70) {
        ctx["properties"]["version"] =
            json!(format!("{}.{}.{}", rng.below(3), rng.below(5), rng.below(5)));
    }
    if rng.percent(50) {
        ctx["environment"] = json!(*rng.pick(&["prod", "dev"]));
    }
    ctx
}

#[test]
fn imported_flags_decide_as_unleash_does() {
    let mut rng = Rng(2026);
    let features: Vec<Value> = (0..60).map(|i| feature(&mut rng, i)).collect();
    let doc = json!({ "version": 1, "features": features });
    let engine = EngineState::default();
    engine.take_state(UpdateMessage::FullResponse(
        serde_json::from_value(doc.clone()).expect("an Unleash document"),
    ));
    let imported = unleash(doc.to_string()).expect("imports");
    let store = FlagStore::new();
    store.apply_config(&imported.config).expect("valid");
    let (mut checks, mut on, mut with_variant) = (0, 0, 0);
    for _ in 0..400 {
        let ctx = context(&mut rng);
        let theirs: unleash_yggdrasil::Context =
            serde_json::from_value(ctx.clone()).expect("an Unleash context");
        let ours = unleash_context(&ctx);
        let ours = ours.as_context();
        for (i, feature) in features.iter().enumerate() {
            let name = format!("feature-{i}");
            let enabled = engine.is_enabled(&name, &theirs, &None);
            let variant = engine.get_variant(&name, &theirs, &None);
            let ev = store.evaluate(&name, &ours);
            let why = || format!("{name} for {ctx}: {}\n{feature}", ev.reason);
            assert_eq!(store.is_enabled(&name, &ours), enabled, "{}", why());
            assert_eq!(ev.enabled, variant.feature_enabled, "{}", why());
            if ctx.get("userId").is_some() {
                assert_eq!(ev.variant.unwrap_or("disabled"), variant.name, "{}", why());
            }
            checks += 1;
            on += usize::from(enabled);
            with_variant += usize::from(variant.enabled);
        }
    }
    println!(
        "{checks} checks of 60 imported features agree with unleash-yggdrasil ({on} on, {with_variant} with a variant); {} warnings",
        imported.warnings.len()
    );
    assert!(on > checks / 5 && with_variant > checks / 20, "the features exercise something");
}

#[test]
fn what_cannot_be_carried_exactly_is_a_warning_naming_the_feature() {
    let imported = unleash(
        r#"{ "version": 1, "features": [
        { "name": "random-30", "enabled": true, "strategies": [
            { "name": "gradualRolloutRandom", "parameters": { "percentage": "30" } } ] },
        { "name": "host", "enabled": true, "strategies": [
            { "name": "applicationHostname", "parameters": { "hostNames": "Web-1,web-2" } } ] },
        { "name": "custom", "enabled": true, "strategies": [ { "name": "my-own-strategy" } ] },
        { "name": "exact", "enabled": true, "strategies": [
            { "name": "flexibleRollout", "parameters": { "rollout": "40", "stickiness": "tenant" } } ] }
    ] }"#,
    )
    .expect("imports");
    let warned = |feature: &str, what: &str| {
        imported.warnings.iter().any(|w| w.contains(&format!("{feature:?}")) && w.contains(what))
    };
    assert!(warned("random-30", "sticky 30%"), "{:#?}", imported.warnings);
    assert!(warned("host", "hostname"), "{:#?}", imported.warnings);
    assert!(warned("custom", "built-in strategies"), "{:#?}", imported.warnings);
    assert!(!imported.warnings.iter().any(|w| w.contains("\"exact\"")), "an exact conversion");

    let store = FlagStore::new();
    store.apply_config(&imported.config).expect("valid");
    let host = |h: &str| unleash_context(&json!({ "properties": { "hostname": h } }));
    assert!(store.is_enabled("host", &host("WEB-1").as_context()));
    assert!(!store.is_enabled("host", &host("web-3").as_context()));
    assert!(!store.is_enabled("custom", &unleash_context(&json!({})).as_context()));
    // A property named tenant is flagstone's tenant: the rollout counts it.
    let tenant = |t: &str| unleash_context(&json!({ "properties": { "tenant": t } }));
    let share = (0..2_000)
        .filter(|i| store.is_enabled("exact", &tenant(&format!("t-{i}")).as_context()))
        .count();
    assert!((700..900).contains(&share), "about 40% of tenants: {share}");
    for i in 0..200 {
        let t = format!("t-{i}");
        assert_eq!(
            store.is_enabled("exact", &tenant(&t).as_context()),
            flagstone::unleash_normalized_hash("exact", &t, 100, 0) <= 40
        );
    }
}

#[test]
fn segments_become_cohorts_and_dependencies_requirements() {
    let imported = unleash(
        r#"{ "version": 2,
        "segments": [ { "id": 7, "name": "beta", "constraints": [
            { "contextName": "plan", "operator": "IN", "values": ["beta"] } ] } ],
        "features": [
        { "name": "parent", "enabled": true, "strategies": [ { "name": "default", "segments": [7] } ],
          "variants": [ { "name": "blue", "weight": 1 }, { "name": "red", "weight": 0 } ] },
        { "name": "child", "enabled": true, "strategies": [ { "name": "default" } ],
          "dependencies": [ { "feature": "parent", "variants": ["blue"] } ] },
        { "name": "inverse", "enabled": true, "strategies": [ { "name": "default" } ],
          "dependencies": [ { "feature": "parent", "enabled": false } ] }
    ] }"#,
    )
    .expect("imports");
    assert!(imported.config.cohorts.contains_key("segment-7"), "{:?}", imported.config.cohorts);
    let store = FlagStore::new();
    store.apply_config(&imported.config).expect("valid");
    let beta = unleash_context(&json!({ "userId": "u-1", "properties": { "plan": "beta" } }));
    let free = unleash_context(&json!({ "userId": "u-1", "properties": { "plan": "free" } }));
    assert!(store.is_enabled("child", &beta.as_context()));
    assert!(!store.is_enabled("inverse", &beta.as_context()));
    let ev = store.evaluate("child", &free.as_context());
    assert_eq!(ev.reason, Reason::Prerequisite { flag: "parent" });
    assert!(store.is_enabled("inverse", &free.as_context()));
}

#[test]
fn the_delta_api_events_fold_into_one_document() {
    let imported = unleash(
        r#"{ "events": [
        { "eventId": 1, "type": "hydration", "features": [
            { "name": "a", "enabled": true, "strategies": [ { "name": "default" } ] },
            { "name": "b", "enabled": true, "strategies": [ { "name": "default" } ] } ], "segments": [] },
        { "eventId": 2, "type": "feature-removed", "featureName": "b", "project": "default" },
        { "eventId": 3, "type": "feature-updated", "feature":
            { "name": "a", "enabled": false, "strategies": [] } }
    ] }"#,
    )
    .expect("imports");
    assert_eq!(imported.config.flags.keys().collect::<Vec<_>>(), ["a"]);
    assert!(!imported.config.flags["a"].enabled);
}

#[test]
fn a_document_that_is_not_unleash_is_refused_with_where() {
    let err = unleash(r#"{ "version": 1, "flags": {} }"#).expect_err("not Unleash");
    assert!(err.to_string().contains("no \"features\""), "{err}");
    let err = unleash(r#"{ "features": [ { "enabled": true } ] }"#).expect_err("no name");
    assert!(err.to_string().contains("features[0]"), "{err}");
    assert!(err.to_string().contains("name"), "{err}");
    assert!(unleash("[").is_err());
}
