//! What the criterion bench and the callgrind probe both build: the
//! bench config, its keys and units, and the loops' index step.

use std::hint::black_box;
use std::sync::Arc;

use flagstone::FlagStore;
use flagstone::migration::Migrator;

/// A migrator of `flag` whose reads and writes return their input and
/// whose comparison is `==`: what is left is the migrator's own work.
pub fn noop_migrator(store: Arc<FlagStore>, flag: &str) -> Migrator<u64, u64, u64, u64, ()> {
    Migrator::builder(store, flag)
        .read_old(|k: &u64| Ok::<u64, ()>(black_box(*k)))
        .read_new(|k: &u64| Ok(black_box(*k)))
        .write_old(|k: &u64| Ok(black_box(*k)))
        .write_new(|k: &u64| Ok(black_box(*k)))
        .compare(|a, b| a == b)
        .build()
        .expect("every call is given")
}

/// A config with `n` flags: the three bench flags, (a) a 25% rollout by
/// user, (b) a stage "region in [eu-west, eu-north] and 50% of tenants"
/// with a 50-tenant exclusion cohort and (c) a kill switch, plus `n - 3`
/// filler flags shaped like (a).
pub fn config(n: usize) -> String {
    let exclusion: Vec<String> = (0..50).map(|i| format!("\"bank-{i}\"")).collect();
    let mut flags = vec![
        r#""a-rollout": { "enabled": true, "bucket_by": "user",
            "stages": [ { "name": "quarter", "percent": 25 } ], "stage": "quarter" }"#
            .to_owned(),
        r#""b-staged": { "enabled": true, "bucket_by": "tenant", "exclude": ["regulated"],
            "stages": [ { "name": "eu-half", "cohorts": ["eu"], "percent": 50 } ],
            "stage": "eu-half",
            "variants": [ { "name": "control", "weight": 50 }, { "name": "treatment", "weight": 50 } ] }"#
            .to_owned(),
        r#""c-killed": { "enabled": false, "stages": [ { "name": "all" } ], "stage": "all" }"#.to_owned(),
    ];
    for i in flags.len()..n {
        flags.push(format!(
            r#""filler-{i}": {{ "enabled": true,
                "stages": [ {{ "name": "p", "percent": 25 }} ], "stage": "p" }}"#
        ));
    }
    format!(
        r#"{{ "version": 1,
             "cohorts": {{ "eu": {{ "regions": ["eu-west", "eu-north"] }},
                           "regulated": {{ "tenants": [{}] }} }},
             "flags": {{ {} }} }}"#,
        exclusion.join(","),
        flags.join(",")
    )
}

/// The `apply` group's configs (and the callgrind probe's apply case): `n` flags, each with 5 stages and 3 cohorts.
pub fn staged_config(n: usize, version: u64) -> String {
    let cohorts: Vec<String> = (0..30)
        .map(|i| {
            format!(r#""c{i}": {{ "tenants": ["t-{i}", "t-{}"], "regions": ["eu-west"] }}"#, i + 1)
        })
        .collect();
    let flags: Vec<String> = (0..n)
        .map(|i| {
            let (a, b, c) = (i % 30, (i + 7) % 30, (i + 13) % 30);
            format!(
                r#""flag-{i}": {{ "enabled": true, "bucket_by": "tenant", "exclude": ["c{c}"],
                    "stages": [
                      {{ "name": "internal", "cohorts": ["c{a}"] }},
                      {{ "name": "beta", "cohorts": ["c{b}"] }},
                      {{ "name": "canary", "percent": 5 }},
                      {{ "name": "half", "percent": 50, "start_at": "2026-12-01T02:00:00Z" }},
                      {{ "name": "everyone", "percent": 100 }}
                    ],
                    "stage": "canary" }}"#
            )
        })
        .collect();
    format!(
        r#"{{ "version": {version}, "cohorts": {{ {} }}, "flags": {{ {} }} }}"#,
        cohorts.join(","),
        flags.join(",")
    )
}

/// Migration flags at each step, `m-off`, `m-dualwrite`, `m-shadow` and
/// `m-complete`, all by tenant.
pub const MIGRATIONS: &str = r#"{ "version": 1, "flags": {
          "m-off": { "enabled": false, "migration": true, "bucket_by": "tenant",
            "stages": [ { "name": "dual", "step": "dualwrite" } ], "stage": "dual" },
          "m-dualwrite": { "enabled": true, "migration": true, "bucket_by": "tenant",
            "stages": [ { "name": "dual", "step": "dualwrite" } ], "stage": "dual" },
          "m-shadow": { "enabled": true, "migration": true, "bucket_by": "tenant",
            "stages": [ { "name": "dual", "step": "dualwrite" }, { "name": "half", "percent": 50, "step": "shadow" } ],
            "stage": "half" },
          "m-complete": { "enabled": true, "migration": true, "bucket_by": "tenant",
            "stages": [ { "name": "dual", "step": "dualwrite" }, { "name": "all", "step": "complete" } ],
            "stage": "all" } } }"#;

/// The units the checks rotate over.
pub const USERS: [&str; 8] = ["u-1", "u-22", "u-333", "u-4444", "u-55555", "u-6", "u-77", "u-888"];

/// The key of the `i`th flag of [`config`]: (a), (b), (c), then fillers.
pub fn bench_key(i: usize) -> String {
    match i {
        0 => "a-rollout".to_owned(),
        1 => "b-staged".to_owned(),
        2 => "c-killed".to_owned(),
        i => format!("filler-{i}"),
    }
}

/// The keys of [`config`]`(n)`, every flag once in a scattered order: a
/// stride coprime with `n`, so in the config's flag order two interleaved,
/// nearly sequential walks.
pub fn scattered(n: usize) -> Vec<String> {
    let stride = (0..).map(|k| n / 2 + 1 + k).find(|s| gcd(*s, n) == 1).unwrap_or(1);
    (0..n).map(|i| bench_key((i * stride) % n)).collect()
}

/// Steps a loop's index over `len` items with an add and a compare: `%`
/// by a length known only at run time is a division, on the critical path
/// of every iteration and slower than some of the checks it feeds (the
/// peers' loops step the same way).
#[inline(always)]
pub fn advance(i: &mut usize, len: usize) -> usize {
    *i += 1;
    if *i >= len {
        *i = 0;
    }
    *i
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
