//! The published JSON Schema is the one the config types derive.

use std::path::Path;

/// Fails when `schema/flagstone.schema.json` is out of date; run with
/// `UPDATE_SCHEMA=1` to rewrite it.
#[test]
fn the_published_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/flagstone.schema.json");
    let derived = serde_json::to_string_pretty(&flagstone::config::json_schema())
        .expect("a schema serializes")
        + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &derived).expect("writable");
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == derived,
        "schema/flagstone.schema.json is out of date: run \
         `UPDATE_SCHEMA=1 cargo test --features schema schema` and commit it"
    );
}

#[test]
fn the_schema_closes_every_object_and_knows_the_guard() {
    let schema = flagstone::config::json_schema();
    let defs = schema["$defs"].as_object().expect("definitions");
    for name in ["Flag", "Cohort", "Stage", "Variant", "Guard"] {
        let def = &defs[name];
        assert_eq!(def["additionalProperties"], false, "{name} allows unknown fields");
    }
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["version"]));
    assert_eq!(defs["Flag"]["required"], serde_json::json!(["enabled"]));
    let percent = &defs["Stage"]["properties"]["percent"];
    assert_eq!(
        (percent["minimum"].as_f64(), percent["maximum"].as_f64()),
        (Some(0.0), Some(100.0))
    );
    let actions = serde_json::to_string(&defs["GuardAction"]).expect("serializes");
    assert!(actions.contains("rollback_stage") && actions.contains("disable"), "{actions}");
}
