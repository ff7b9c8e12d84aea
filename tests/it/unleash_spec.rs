//! Unleash's client-specification (v6.1.0, vendored in
//! `testdata/unleash-spec`), run through the importer: every case's
//! document imported, applied to a store, and its contexts checked with
//! `is_enabled` and `evaluate` (variant name, payload, `feature_enabled`).
//! An external yardstick for the targeting semantics, written by no one
//! here.

use std::path::Path;

use flagstone::FlagStore;
use flagstone::import::{unleash, unleash_context};
use serde_json::Value;

/// The cases that pass today: the test fails if fewer do.
const PASSING: usize = 279;

/// Cases that cannot apply to a deterministic, in-process store, with why.
/// (None today: every case is outcome-deterministic.)
const NOT_APPLICABLE: &[(&str, &str)] = &[];

fn spec_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/testdata/unleash-spec/specifications")
}

/// Whether a variant result matches the expected one.
fn variant_matches(ev: &flagstone::Evaluation<'_>, expected: &Value) -> Result<(), String> {
    let name = ev.variant.unwrap_or("disabled");
    let want_name = expected["name"].as_str().unwrap_or_default();
    let want_enabled = expected["enabled"].as_bool().unwrap_or(false);
    let want_feature = expected["feature_enabled"].as_bool().unwrap_or(false);
    if name != want_name || ev.variant.is_some() != want_enabled || ev.enabled != want_feature {
        return Err(format!(
            "got {name:?} (enabled {}, feature_enabled {}), want {want_name:?} ({want_enabled}, {want_feature})",
            ev.variant.is_some(),
            ev.enabled
        ));
    }
    // Payloads are typed values after import: compare the value each
    // payload stands for.
    let want = expected.get("payload").map(|p| {
        let text = p["value"].as_str().unwrap_or_default();
        match p["type"].as_str() {
            Some("json") => serde_json::from_str(text).unwrap_or(Value::Null),
            Some("number") => match text.parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => text.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
            },
            _ => Value::String(text.to_owned()),
        }
    });
    if ev.value.cloned() != want {
        return Err(format!("payload {:?}, want {want:?}", ev.value));
    }
    Ok(())
}

#[test]
fn the_unleash_client_specification_passes_through_import() {
    let index: Vec<String> = serde_json::from_slice(
        &std::fs::read(spec_dir().join("index.json")).expect("the vendored index"),
    )
    .expect("a list of files");
    assert_eq!(index.len(), 22, "v6.1.0 lists 22 files");
    let (mut total, mut passed, mut not_applicable) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut warnings = 0usize;
    for file in &index {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(spec_dir().join(file)).expect("a spec file"))
                .expect("JSON");
        let imported = unleash(spec["state"].to_string())
            .unwrap_or_else(|e| panic!("{file}: the importer refused the state: {e}"));
        warnings += imported.warnings.len();
        for warning in &imported.warnings {
            println!("import warning: {file}: {warning}");
        }
        let store = FlagStore::new();
        store.apply_config(&imported.config).unwrap_or_else(|e| panic!("{file}: {e}"));
        let cases = spec["tests"].as_array().into_iter().flatten().map(|t| (t, false));
        let variant_cases =
            spec["variantTests"].as_array().into_iter().flatten().map(|t| (t, true));
        for (case, is_variant) in cases.chain(variant_cases) {
            total += 1;
            let description = case["description"].as_str().unwrap_or_default();
            if let Some((_, why)) = NOT_APPLICABLE.iter().find(|(d, _)| *d == description) {
                not_applicable += 1;
                println!("not applicable: {file}: {description}: {why}");
                continue;
            }
            let toggle = case["toggleName"].as_str().unwrap_or_default();
            let ctx = unleash_context(&case["context"]);
            let ctx = ctx.as_context();
            let ev = store.evaluate(toggle, &ctx);
            let verdict = if is_variant {
                variant_matches(&ev, &case["expectedResult"])
            } else {
                let want = case["expectedResult"].as_bool().unwrap_or(false);
                let on = store.is_enabled(toggle, &ctx);
                if on != ev.enabled {
                    Err(format!("is_enabled {on} but evaluate {}", ev.enabled))
                } else if on != want {
                    Err(format!("got {on}, want {want} ({})", ev.reason))
                } else {
                    Ok(())
                }
            };
            match verdict {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!("{file}: {description}: {why}")),
            }
        }
    }
    println!(
        "unleash client-specification: {passed} of {total} pass, {not_applicable} not applicable \
         ({warnings} import warnings)"
    );
    for failure in &failures {
        println!("FAILED {failure}");
    }
    assert_eq!(total, 279, "v6.1.0 has 279 cases");
    assert!(passed >= PASSING, "{passed} pass, fewer than {PASSING}:\n{}", failures.join("\n"));
}
