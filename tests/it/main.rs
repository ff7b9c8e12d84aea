//! The public API, tested from outside the crate: one binary, one module per
//! concern.

mod alloc_free;
#[cfg(feature = "tower")]
mod axum_service;
#[cfg(feature = "cli")]
mod cli;
mod delivery;
#[cfg(feature = "http")]
mod delivery_http;
#[cfg(all(feature = "etcd", feature = "cli"))]
mod etcd;
mod golden;
mod guards;
mod migration;
mod observe;
#[cfg(feature = "openfeature")]
mod openfeature;
mod overrides;
mod props;
mod rng;
mod rollout;
#[cfg(all(feature = "etcd", feature = "cli"))]
mod rollout_e2e;
#[cfg(feature = "schema")]
mod schema;
mod semantics;
#[cfg(feature = "http")]
mod servers;
mod store;
mod stress;
mod targeting;
#[cfg(feature = "tower")]
mod tower;
mod unleash_import;
mod unleash_spec;

/// The example config of the format's documentation (version 7).
pub const EXAMPLE: &str = include_str!("testdata/example.json");

/// The example config with a different `stage` and `version`.
pub fn example_at(stage: &str, version: u64) -> String {
    EXAMPLE
        .replace(r#""stage": "canary""#, &format!(r#""stage": "{stage}""#))
        .replace(r#""version": 7"#, &format!(r#""version": {version}"#))
}
