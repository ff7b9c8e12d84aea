//! The OpenFeature provider, used the way a service uses it: through an
//! `OpenFeature` client.

use std::sync::Arc;

use flagstone::integrations::openfeature::FlagstoneProvider;
use flagstone::{FlagStore, Override};
use open_feature::{
    EvaluationContext, EvaluationErrorCode, EvaluationReason, FlagMetadataValue, OpenFeature,
};

const CONFIG: &str = r#"{ "version": 4,
  "cohorts": { "staff": { "tenants": ["acme-internal"] }, "banks": { "tenants": ["bank-1"] },
               "pro": { "attributes": { "plan": ["pro"], "seats": ["50"] } } },
  "flags": {
    "checkout": { "enabled": true, "bucket_by": "user", "exclude": ["banks"],
      "stages": [ { "name": "internal", "cohorts": ["staff"] },
                  { "name": "pro", "cohorts": ["pro"] },
                  { "name": "canary", "percent": 50 } ],
      "stage": "canary",
      "variants": [ { "name": "control", "weight": 1 }, { "name": "treatment", "weight": 1 } ] },
    "killed": { "enabled": false },
    "everyone": { "enabled": true }
  } }"#;

async fn client(store: Arc<FlagStore>) -> open_feature::Client {
    let mut api = OpenFeature::default();
    api.set_provider(FlagstoneProvider::new(store)).await;
    api.create_client()
}

fn ctx(user: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(user)
}

#[tokio::test]
async fn booleans_variants_reasons_and_metadata_come_through_the_client() {
    let store = Arc::new(FlagStore::from_json(CONFIG).expect("valid"));
    let client = client(store.clone()).await;

    let staff = ctx("u-1").with_custom_field("tenant", "acme-internal");
    let d = client.get_bool_details("checkout", Some(&staff), None).await.expect("resolves");
    assert!(d.value);
    assert_eq!(d.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(
        d.flag_metadata.values.get("stage"),
        Some(&FlagMetadataValue::String("internal".into()))
    );
    assert_eq!(d.flag_metadata.values.get("version"), Some(&FlagMetadataValue::Int(4)));
    let variant = d.variant.clone().expect("a variant");
    let s = client.get_string_details("checkout", Some(&staff), None).await.expect("resolves");
    assert_eq!((s.value.clone(), s.variant.clone()), (variant.clone(), Some(variant)));

    // Custom fields other than tenant and region are attributes; numbers as text.
    let pro = ctx("u-2").with_custom_field("plan", "pro").with_custom_field("seats", 50);
    let d = client.get_bool_details("checkout", Some(&pro), None).await.expect("resolves");
    assert_eq!((d.value, d.reason), (true, Some(EvaluationReason::TargetingMatch)));

    // A percentage stage is a split; not exposed is the default.
    let mut saw = (false, false);
    for i in 0..200 {
        let d = client
            .get_bool_details("checkout", Some(&ctx(&format!("u-{i}"))), None)
            .await
            .expect("resolves");
        match d.reason {
            Some(EvaluationReason::Split) => saw.0 = d.value,
            Some(EvaluationReason::Default) => saw.1 = !d.value,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(saw, (true, true));

    let bank = ctx("u-1").with_custom_field("tenant", "bank-1");
    let d = client.get_bool_details("checkout", Some(&bank), None).await.expect("resolves");
    assert_eq!(
        (d.value, d.flag_metadata.values.get("stage")),
        (false, Some(&FlagMetadataValue::String("excluded".into())))
    );

    let d = client.get_bool_details("killed", Some(&staff), None).await.expect("resolves");
    assert_eq!((d.value, d.reason), (false, Some(EvaluationReason::Disabled)));
    let d = client.get_bool_details("everyone", None, None).await.expect("resolves");
    assert_eq!((d.value, d.reason), (true, Some(EvaluationReason::Static)));

    store.set_override("killed", Override::On);
    let d = client.get_bool_details("killed", None, None).await.expect("resolves");
    assert_eq!((d.value, d.reason), (true, Some(EvaluationReason::Other("override".into()))));
}

#[tokio::test]
async fn unknown_flags_and_missing_variants_fall_back_to_the_callers_default() {
    let store = Arc::new(FlagStore::from_json(CONFIG).expect("valid"));
    let client = client(store).await;
    let err = client.get_bool_value("no-such-flag", None, None).await.expect_err("unknown");
    assert_eq!(err.code, EvaluationErrorCode::FlagNotFound);
    let d = client.get_bool_details("no-such-flag", None, None).await;
    assert!(d.is_err());
    // No variant for a context the flag does not expose, nor for a flag without variants.
    let bank = ctx("u-1").with_custom_field("tenant", "bank-1");
    let value = client.get_string_value("checkout", Some(&bank), None).await;
    assert_eq!(value.unwrap_or_else(|_| "control".into()), "control");
    assert!(client.get_string_value("everyone", None, None).await.is_err());
    // No value configured: an error, so the client's default.
    assert!(client.get_int_value("everyone", None, None).await.is_err());
}

#[tokio::test]
async fn integers_floats_strings_and_structures_resolve_from_values() {
    let store = Arc::new(
        FlagStore::from_json(
            r#"{ "version": 1, "flags": {
                "rate": { "enabled": true, "value": 250 },
                "ratio": { "enabled": true, "value": 0.25 },
                "limits": { "enabled": true, "value": { "rate": 100, "burst": [1, 2], "name": "eu" } },
                "banner": { "enabled": true, "variants": [ { "name": "a", "weight": 1, "value": "Hello" } ] },
                "off": { "enabled": false, "value": 7 } } }"#,
        )
        .expect("valid"),
    );
    let client = client(store).await;
    let c = ctx("u-1");
    assert_eq!(client.get_int_value("rate", Some(&c), None).await.expect("int"), 250);
    assert_eq!(client.get_float_value("ratio", Some(&c), None).await.expect("float"), 0.25);
    assert_eq!(
        client.get_float_value("rate", Some(&c), None).await.expect("an int reads as a float"),
        250.0
    );
    let details = client.get_string_details("banner", Some(&c), None).await.expect("string");
    assert_eq!((details.value.as_str(), details.variant.as_deref()), ("Hello", Some("a")));
    let limits = client
        .get_struct_value::<open_feature::StructValue>("limits", Some(&c), None)
        .await
        .expect("struct");
    assert_eq!(limits.fields.get("rate"), Some(&open_feature::Value::Int(100)));
    assert_eq!(limits.fields.get("name"), Some(&open_feature::Value::String("eu".into())));
    let err =
        client.get_int_value("ratio", Some(&c), None).await.expect_err("a float is not an int");
    assert_eq!(err.code, EvaluationErrorCode::TypeMismatch);
    assert!(client.get_int_value("off", Some(&c), None).await.is_err(), "off: the default");
}
