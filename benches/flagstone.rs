//! One criterion target, in groups:
//!
//! - `floor`: the least work a check by key can do (one `ArcSwap` load, one
//!   fast-hash map lookup, one seeded xxh3, one compare), written bare, so
//!   every report shows the ratio flagstone / floor.
//! - `hot_path`: `is_enabled` by key and by handle, `evaluate`, `variant`,
//!   and a request checking 10 flags through one snapshot; for (a) a 25%
//!   rollout by user, (b) a stage "region in [eu-west, eu-north] and 50%"
//!   with a 50-tenant exclusion cohort, (c) a kill-switched flag, (d) an
//!   unknown flag; with 100 and 10,000 flags in the config.
//! - `apply`: parse + validate + compile + swap of 100, 1,000 and 10,000
//!   flags, each with 5 stages and 3 cohorts.
//!
//! Run one group with `cargo bench --bench flagstone -- hot_path`.

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flagstone::{Context, FlagStore};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A config with `n` flags: the four bench flags plus `n - 4` filler flags
/// shaped like (a).
fn config(n: usize) -> String {
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

/// The `apply` group's configs: `n` flags, each with 5 stages and 3 cohorts.
fn staged_config(n: usize, version: u64) -> String {
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

/// The floor's own store: key -> (seed, threshold), nothing else.
struct Floor {
    map: ArcSwap<foldhash::HashMap<Box<str>, (u64, u32)>>,
}

impl Floor {
    fn new(n: usize) -> Self {
        let mut map = foldhash::HashMap::default();
        map.insert("a-rollout".into(), (xxh3_64(b"a-rollout"), 25_000));
        for i in 1..n {
            map.insert(format!("filler-{i}").into(), (xxh3_64(b"filler"), 25_000));
        }
        Self { map: ArcSwap::from_pointee(map) }
    }

    #[inline]
    fn is_enabled(&self, key: &str, user: &str) -> bool {
        let map = self.map.load();
        match map.get(key) {
            Some(&(seed, threshold)) => {
                let h = xxh3_64_with_seed(user.as_bytes(), seed);
                (((u128::from(h)) * 100_000) >> 64) < u128::from(threshold)
            }
            None => false,
        }
    }
}

const USERS: [&str; 8] = ["u-1", "u-22", "u-333", "u-4444", "u-55555", "u-6", "u-77", "u-888"];

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    for n in [100, 10_000] {
        let floor = Floor::new(n);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("a_by_key", n), |b| {
            b.iter(|| {
                i = (i + 1) % USERS.len();
                floor.is_enabled(black_box("a-rollout"), black_box(USERS[i]))
            })
        });
    }
    group.finish();
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    for n in [100, 10_000] {
        let store = FlagStore::from_json(config(n)).expect("bench config is valid");
        // Contexts are built outside the timed loop, as for the peers.
        let users: Vec<Context<'_>> =
            USERS.iter().map(|u| Context::new().user(u).tenant("acme").region("eu-west")).collect();
        let tenants: Vec<Context<'_>> = USERS
            .iter()
            .map(|t| {
                Context::new().tenant(t).region(if t.len() % 2 == 0 {
                    "eu-west"
                } else {
                    "us-east"
                })
            })
            .collect();
        let cases = [
            ("a", "a-rollout", &users),
            ("b", "b-staged", &tenants),
            ("c", "c-killed", &users),
            ("d", "d-unknown", &users),
        ];
        for (case, key, ctxs) in cases {
            let mut i = 0;
            group.bench_function(BenchmarkId::new(format!("{case}_is_enabled_by_key"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % ctxs.len();
                    store.is_enabled(black_box(key), &ctxs[i])
                })
            });
            let handle = store.handle(key);
            group.bench_function(
                BenchmarkId::new(format!("{case}_is_enabled_by_handle"), n),
                |b| {
                    b.iter(|| {
                        i = (i + 1) % ctxs.len();
                        handle.is_enabled(&ctxs[i])
                    })
                },
            );
        }
        for (case, key, ctxs) in [("a", "a-rollout", &users), ("b", "b-staged", &tenants)] {
            let mut i = 0;
            group.bench_function(BenchmarkId::new(format!("{case}_evaluate"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % ctxs.len();
                    store.evaluate(black_box(key), &ctxs[i])
                })
            });
            group.bench_function(BenchmarkId::new(format!("{case}_variant"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % ctxs.len();
                    store.variant(black_box(key), &ctxs[i]).is_some()
                })
            });
        }
        let keys: Vec<String> = (0..10)
            .map(|i| match i {
                0 => "a-rollout".to_owned(),
                1 => "b-staged".to_owned(),
                2 => "c-killed".to_owned(),
                _ => format!("filler-{}", i * 7),
            })
            .collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("request_10_flags_via_snapshot", n), |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                let snap = store.snapshot();
                keys.iter().filter(|k| snap.is_enabled(black_box(k), &users[i])).count()
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    for n in [100, 1_000, 10_000] {
        let docs: Vec<String> = (1..=2).map(|v| staged_config(n, v)).collect();
        group.throughput(Throughput::Bytes(docs[0].len() as u64));
        group.bench_function(BenchmarkId::new("apply_json", n), |b| {
            b.iter(|| {
                let store = FlagStore::new();
                store.apply_json(black_box(&docs[0])).expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, floor, hot_path, apply);
criterion_main!(benches);

#[allow(dead_code)]
fn assert_configs_are_valid() {
    let _ = Arc::new(FlagStore::from_json(staged_config(3, 1)));
}
