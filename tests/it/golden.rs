//! Conformance: the bucketing spec against vectors computed by an independent
//! implementation (`tools/golden_vectors.py`, PyPI `xxhash`, and `mmh3` for
//! the Unleash-compatible mode). A failure here
//! means the crate no longer buckets like every other implementation: a
//! breaking change, never a test to update.

use flagstone::{Context, FlagStore, Reason};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    buckets: Vec<BucketVector>,
    variants: Vec<VariantVector>,
    holdbacks: Vec<BucketVector>,
    unleash: Vec<UnleashVector>,
    unleash_variants: Vec<UnleashVariantVector>,
}

#[derive(Deserialize)]
struct UnleashVector {
    group: String,
    unit: String,
    n: u32,
    seed: u32,
    normalized: u32,
}

#[derive(Deserialize)]
struct UnleashVariantVector {
    group: String,
    unit: String,
    weights: Vec<u32>,
    index: usize,
}

#[derive(Deserialize)]
struct BucketVector {
    salt: String,
    unit: String,
    bucket: u32,
}

#[derive(Deserialize)]
struct VariantVector {
    salt: String,
    unit: String,
    weights: Vec<u32>,
    index: usize,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("testdata/golden.json")).expect("golden.json parses")
}

#[test]
fn bucket_matches_the_independent_implementation() {
    let golden = golden();
    assert!(golden.buckets.len() >= 20);
    for v in &golden.buckets {
        assert_eq!(
            flagstone::bucket(&v.salt, &v.unit),
            v.bucket,
            "salt {:?} unit {:?}",
            v.salt,
            v.unit
        );
    }
}

#[test]
fn variant_index_matches_the_independent_implementation() {
    for v in &golden().variants {
        assert_eq!(
            flagstone::variant_index(&v.salt, &v.unit, &v.weights),
            Some(v.index),
            "salt {:?} unit {:?} weights {:?}",
            v.salt,
            v.unit,
            v.weights
        );
    }
}

/// The evaluator uses the spec too: a unit is in at `bucket + 1` thousandths
/// of a percent and out at `bucket`.
#[test]
fn evaluation_thresholds_sit_exactly_at_the_golden_bucket() {
    for v in golden().buckets.iter().filter(|v| !v.salt.is_empty()) {
        let config = |version: u64, buckets: u32| {
            let salt = serde_json::to_string(&v.salt).expect("string");
            format!(
                r#"{{"version":{version},"flags":{{"f":{{"enabled":true,"salt":{salt},
                   "stages":[{{"name":"s","percent":{}}}],"stage":"s"}}}}}}"#,
                f64::from(buckets) / 1000.0
            )
        };
        let ctx = Context::new().user(&v.unit);
        let store = FlagStore::from_json(config(1, v.bucket + 1)).expect("valid");
        assert_eq!(store.evaluate("f", &ctx).reason, Reason::Stage { index: 0, name: "s" });
        store.apply_json(config(2, v.bucket)).expect("valid");
        assert!(!store.is_enabled("f", &ctx), "unit {:?} at bucket {}", v.unit, v.bucket);
    }
}

/// Variants in evaluation follow the spec's variant half.
#[test]
fn evaluation_variants_match_the_independent_implementation() {
    for v in golden().variants.iter().filter(|v| !v.salt.is_empty()) {
        let variants: Vec<String> = v
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!(r#"{{"name":"v{i}","weight":{w}}}"#))
            .collect();
        let json = format!(
            r#"{{"version":1,"flags":{{"f":{{"enabled":true,"salt":{},"variants":[{}]}}}}}}"#,
            serde_json::to_string(&v.salt).expect("string"),
            variants.join(",")
        );
        let store = FlagStore::from_json(json).expect("valid");
        let expected = format!("v{}", v.index);
        assert_eq!(store.variant("f", &Context::new().user(&v.unit)), Some(expected.as_str()));
    }
}

#[test]
fn holdback_buckets_match_the_independent_implementation() {
    let golden = golden();
    assert!(golden.holdbacks.len() >= 20);
    for v in &golden.holdbacks {
        assert_eq!(
            flagstone::holdback_bucket(&v.salt, &v.unit),
            v.bucket,
            "{:?} / {:?}",
            v.salt,
            v.unit
        );
    }
}

#[test]
fn evaluation_holds_back_exactly_below_the_golden_holdback_bucket() {
    // A flag on for everyone but its guard's holdback: a unit is held back
    // when its holdback bucket is below the holdback's threshold.
    for v in golden()
        .holdbacks
        .iter()
        .filter(|v| !v.salt.is_empty() && v.bucket > 0 && v.bucket < 99_999)
    {
        let config = |buckets: u32| {
            format!(
                r#"{{"version":1,"flags":{{"f":{{"enabled":true,"salt":{},"stages":[{{"name":"all"}}],"stage":"all",
                    "guard":{{"holdback":{},"max_error_ratio":2}}}}}}}}"#,
                serde_json::to_string(&v.salt).expect("json"),
                f64::from(buckets) / 1000.0
            )
        };
        let ctx = Context::new().user(&v.unit);
        let at = FlagStore::from_json(config(v.bucket)).expect("valid");
        assert_eq!(
            at.evaluate("f", &ctx).reason,
            Reason::Stage { index: 0, name: "all" },
            "{:?}",
            v.unit
        );
        let above = FlagStore::from_json(config(v.bucket + 1)).expect("valid");
        assert_eq!(
            above.evaluate("f", &ctx).reason,
            Reason::HeldBack { stage: "all" },
            "{:?}",
            v.unit
        );
    }
}

#[test]
fn unleash_hashes_match_the_independent_implementation() {
    let golden = golden();
    assert!(golden.unleash.len() >= 40);
    for v in &golden.unleash {
        assert_eq!(
            flagstone::unleash_normalized_hash(&v.group, &v.unit, v.n, v.seed),
            v.normalized,
            "group {:?} unit {:?} n {} seed {}",
            v.group,
            v.unit,
            v.n,
            v.seed
        );
    }
}

#[test]
fn unleash_bucketing_evaluates_exactly_at_the_golden_hash() {
    // A rollout of p is on when Unleash's normalized hash is at most p; a
    // variant is the first whose cumulative weight reaches its hash.
    let golden = golden();
    // (A salt may not be empty: those vectors are checked on the hash alone.)
    for v in golden.unleash.iter().filter(|v| v.seed == 0 && !v.group.is_empty()) {
        for p in [v.normalized - 1, v.normalized] {
            let store = FlagStore::from_json(format!(
                r#"{{"version":1,"flags":{{"f":{{"enabled":true,"bucketing":"unleash",
                    "salt":{},"bucket_by":"tenant",
                    "stages":[{{"name":"s","percent":{p}}}],"stage":"s"}}}}}}"#,
                serde_json::to_string(&v.group).expect("json")
            ))
            .expect("valid");
            let on = store.is_enabled("f", &Context::new().tenant(&v.unit));
            assert_eq!(on, v.normalized <= p, "unit {:?} at {p}%", v.unit);
        }
    }
    for v in golden.unleash_variants.iter().filter(|v| !v.group.is_empty()) {
        let variants: Vec<String> = v
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!(r#"{{"name":"v{i}","weight":{w}}}"#))
            .collect();
        let store = FlagStore::from_json(format!(
            r#"{{"version":1,"flags":{{"f":{{"enabled":true,"bucketing":"unleash","salt":{},
                "bucket_by":"tenant","variants":[{}]}}}}}}"#,
            serde_json::to_string(&v.group).expect("json"),
            variants.join(",")
        ))
        .expect("valid");
        let ev = store.evaluate("f", &Context::new().tenant(&v.unit));
        assert_eq!(ev.variant, Some(format!("v{}", v.index).as_str()), "unit {:?}", v.unit);
    }
}
