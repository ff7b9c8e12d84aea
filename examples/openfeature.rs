//! flagstone behind the OpenFeature API: the service asks an OpenFeature
//! client, flagstone answers.
//!
//! Run it with `cargo run --example openfeature --features openfeature`.

use std::error::Error;
use std::sync::Arc;

use flagstone::FlagStore;
use flagstone::integrations::openfeature::FlagstoneProvider;
use open_feature::{EvaluationContext, OpenFeature};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store = Arc::new(FlagStore::from_json(
        r#"{ "version": 1,
             "cohorts": { "staff": { "tenants": ["acme-internal"] } },
             "flags": { "new-checkout": {
                 "enabled": true, "bucket_by": "tenant",
                 "stages": [ { "name": "internal", "cohorts": ["staff"] },
                             { "name": "canary", "percent": 20 } ],
                 "stage": "canary",
                 "variants": [ { "name": "control", "weight": 1 }, { "name": "treatment", "weight": 1 } ] } } }"#,
    )?);

    // The global API, as a service sets it up once at start.
    OpenFeature::singleton_mut().await.set_provider(FlagstoneProvider::new(store.clone())).await;
    let client = OpenFeature::singleton().await.create_client();

    for tenant in ["acme-internal", "t-104", "t-110", "t-111", "t-112"] {
        let ctx = EvaluationContext::default()
            .with_targeting_key("u-42")
            .with_custom_field("tenant", tenant)
            .with_custom_field("region", "eu-west");
        let on = client
            .get_bool_details("new-checkout", Some(&ctx), None)
            .await
            .map_err(|e| format!("{:?}: {}", e.code, e.message.unwrap_or_default()))?;
        let variant = client
            .get_string_value("new-checkout", Some(&ctx), None)
            .await
            .unwrap_or_else(|_| "control".to_owned());
        println!(
            "{tenant:<14} on: {:<5} reason: {:<15} stage: {:<12} variant: {variant}",
            on.value,
            on.reason.map(|r| r.to_string()).unwrap_or_default(),
            match on.flag_metadata.values.get("stage") {
                Some(open_feature::FlagMetadataValue::String(s)) => s.as_str(),
                _ => "",
            },
        );
    }
    Ok(())
}
