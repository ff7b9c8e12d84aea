//! The hot path never allocates: a counting global allocator watches every
//! branch of evaluation, by key, by handle and through a snapshot, and the
//! building of a context with up to eight attributes. The same allocator
//! measures what a compiled config keeps resident.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use flagstone::{Context, FlagStore, ManualClock, Outcome, Reason};

/// Counts allocations made by the current thread, so that tests running in
/// parallel do not see each other's.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while the thread is being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn live(delta: i64) {
    let _ = LIVE_BYTES.try_with(|n| n.set(n.get() + delta));
}

// SAFETY-free: forwarding to `System` is the whole implementation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        live(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        live(layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        live(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const CONFIG: &str = r#"{
  "version": 1,
  "cohorts": {
    "staff":     { "tenants": ["acme-internal"], "users": ["alice", "bob"] },
    "eu":        { "regions": ["eu-west", "eu-north"] },
    "ent":       { "attributes": { "plan": ["enterprise"], "tier": ["1", "2"] } },
    "many":      { "tenants": ["m0","m1","m2","m3","m4","m5","m6","m7","m8","m9","m10","m11"] },
    "regulated": { "tenants": ["bank-1"] }
  },
  "flags": {
    "on":     { "enabled": true },
    "killed": { "enabled": false, "stages": [ { "name": "all" } ], "stage": "all" },
    "staged": {
      "enabled": true, "bucket_by": "tenant", "exclude": ["regulated", "many"],
      "stages": [
        { "name": "internal", "cohorts": ["staff"] },
        { "name": "ent",      "cohorts": ["ent"] },
        { "name": "eu-half",  "cohorts": ["eu"], "percent": 50 },
        { "name": "later",    "percent": 100, "start_at": "2030-01-01T00:00:00Z" }
      ],
      "stage": "later",
      "variants": [ { "name": "control", "weight": 1 }, { "name": "treatment", "weight": 3 } ]
    },
    "by-attr": {
      "enabled": true, "bucket_by": "seat",
      "stages": [ { "name": "p", "percent": 99.999 } ], "stage": "p",
      "variants": [ { "name": "a", "weight": 1 } ]
    }
  }
}"#;

#[test]
fn no_evaluation_branch_allocates() {
    let clock = Arc::new(ManualClock::from_rfc3339("2029-12-31T23:59:59Z").expect("time"));
    let store = FlagStore::from_json(CONFIG).expect("valid").with_clock(clock.clone());
    let handles: Vec<_> =
        ["on", "killed", "staged", "by-attr", "missing"].iter().map(|k| store.handle(k)).collect();
    let eu_in = (0..10_000)
        .map(|i| format!("t-{i}"))
        .find(|t| flagstone::bucket("staged", t) < 50_000)
        .expect("a tenant in the first half");
    let eu_out = (0..10_000)
        .map(|i| format!("t-{i}"))
        .find(|t| flagstone::bucket("staged", t) >= 50_000)
        .expect("a tenant in the second half");

    let mut reasons = Vec::new();
    let mut check = |flag: &str, ctx: &Context<'_>| {
        let snap = store.snapshot();
        let handle = handles.iter().find(|h| h.key() == flag).unwrap_or(&handles[4]);
        let mut reason = Reason::UnknownFlag;
        let n = allocations_in(|| {
            let ev = store.evaluate(flag, ctx);
            reason = ev.reason;
            std::hint::black_box((
                store.is_enabled(flag, ctx),
                store.variant(flag, ctx),
                handle.is_enabled(ctx),
                handle.evaluate(ctx),
                handle.variant(ctx),
                handle.is_enabled_in(&snap, ctx),
                handle.evaluate_in(&snap, ctx),
                snap.is_enabled(flag, ctx),
                snap.evaluate(flag, ctx),
                snap.variant(flag, ctx),
                store.snapshot().version(),
            ));
            // Counting outcomes (no guard here: a guard's check may allocate).
            store.record(flag, ctx, Outcome::Success);
            store.record(flag, ctx, Outcome::Error);
            handle.record(ctx, Outcome::Latency(std::time::Duration::from_millis(7)));
        });
        assert_eq!(n, 0, "{flag} for {ctx:?} allocated {n} times ({:?})", reason);
        reasons.push(reason.label().to_owned());
    };

    check("missing", &Context::new());
    check("on", &Context::new().user("u"));
    check("killed", &Context::new());
    check("staged", &Context::new().tenant("bank-1"));
    check("staged", &Context::new().tenant("m11"));
    check("staged", &Context::new().tenant("acme-internal").user("bob"));
    check("staged", &Context::new().tenant("x").attr("plan", "enterprise").attr("tier", "2"));
    check("staged", &Context::new().tenant(&eu_in).region("eu-west"));
    check("staged", &Context::new().tenant(&eu_out).region("eu-west"));
    check("staged", &Context::new().region("eu-west")); // no unit: fails closed
    check("by-attr", &Context::new().attr("seat", "s-1"));
    check("by-attr", &Context::new());
    clock.advance(std::time::Duration::from_secs(1));
    check("staged", &Context::new().tenant(&eu_out).region("us-east"));

    assert_eq!(
        reasons,
        [
            "unknown",
            "on",
            "off",
            "excluded",
            "excluded",
            "internal",
            "ent",
            "eu-half",
            "not-exposed",
            "not-exposed",
            "p",
            "not-exposed",
            "later"
        ],
        "every branch was taken"
    );
}

#[test]
fn building_a_context_with_eight_attributes_does_not_allocate() {
    let n = allocations_in(|| {
        let ctx = Context::new()
            .tenant("acme")
            .region("eu-west")
            .user("u-42")
            .attr("a1", "1")
            .attr("a2", "2")
            .attr("a3", "3")
            .attr("a4", "4")
            .attr("a5", "5")
            .attr("a6", "6")
            .attr("a7", "7")
            .attr("a8", "8")
            .attr("a1", "again");
        std::hint::black_box(&ctx);
    });
    assert_eq!(n, 0);
    // The counter works: a ninth attribute spills to the heap.
    let n = allocations_in(|| {
        let mut ctx = Context::new();
        for key in ["1", "2", "3", "4", "5", "6", "7", "8", "9"] {
            ctx.set_attr(key, key);
        }
        std::hint::black_box(&ctx);
    });
    assert_eq!(n, 1);
}

/// What a simple flag (one percentage stage) costs resident once compiled
/// and serving: the compiled flag, its slot and key, and the document it was
/// compiled from (kept for change events); with counting on, also its series
/// and its cells in the per-thread counter shards.
fn resident_per_simple_flag(store: FlagStore) -> i64 {
    const FLAGS: usize = 10_000;
    let flags: Vec<String> = (0..FLAGS)
        .map(|i| {
            format!(
                r#""flag-{i:05}": {{ "enabled": true, "bucket_by": "tenant",
                    "stages": [ {{ "name": "rollout", "percent": 25 }} ], "stage": "rollout" }}"#
            )
        })
        .collect();
    let doc = format!(r#"{{ "version": 1, "flags": {{ {} }} }}"#, flags.join(","));
    store.apply_json(r#"{"version":0,"flags":{"warm":{"enabled":true,"stages":[{"name":"rollout","percent":1}],"stage":"rollout"}}}"#)
        .expect("valid");
    let before = LIVE_BYTES.with(Cell::get);
    store.apply_json(&doc).expect("valid");
    (LIVE_BYTES.with(Cell::get) - before) / FLAGS as i64
}

#[test]
fn a_compiled_simple_flag_stays_small() {
    let without = resident_per_simple_flag(FlagStore::new().without_metrics());
    let with = resident_per_simple_flag(FlagStore::new());
    println!("resident per simple flag: {without} bytes, {with} bytes counting");
    assert!(without > 32, "the measurement saw the compiled flags ({without} bytes)");
    // The compiled flag, its key index slots (64 bytes each, the table at
    // most half full) and handle slot record (32 bytes), and the document
    // it came from (kept, shared between versions, for rollback and diffs).
    assert!(without < 1536, "{without} bytes per flag without counting");
    // Counting adds the series (about 6 per flag) and the counter cells:
    // 4 evaluation cells per shard and 38 outcome cells per outcome shard.
    // This bound holds up to 4 cores; more cores add shards.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores <= 4 {
        assert!(with < 3584, "{with} bytes per flag counting");
    }
}

/// The config of the history test: a cohort of `tenants` tenants and ten
/// flags, one of which moves with `step`.
fn big_config(version: u64, tenants: usize, step: u64) -> String {
    let names: Vec<String> = (0..tenants).map(|i| format!("\"tenant-{i:07}\"")).collect();
    let flags: Vec<String> = (0..10)
        .map(|f| {
            let percent = if f == step % 10 { 10 + step } else { 5 };
            format!(
                r#""flag-{f}": {{ "enabled": true, "bucket_by": "tenant",
                    "stages": [ {{ "name": "big", "cohorts": ["big"] }}, {{ "name": "ramp", "percent": {percent} }} ],
                    "stage": "ramp" }}"#
            )
        })
        .collect();
    format!(
        r#"{{ "version": {version}, "cohorts": {{ "big": {{ "tenants": [{}] }} }}, "flags": {{ {} }} }}"#,
        names.join(","),
        flags.join(",")
    )
}

#[test]
fn history_shares_what_did_not_change_between_versions() {
    let store = FlagStore::new().without_metrics();
    let before = LIVE_BYTES.with(Cell::get);
    store.apply_json(big_config(1, 100_000, 0)).expect("valid");
    let one = LIVE_BYTES.with(Cell::get) - before;
    for version in 2..=flagstone::HISTORY as u64 {
        store.apply_json(big_config(version, 100_000, version)).expect("valid");
    }
    let all = LIVE_BYTES.with(Cell::get) - before;
    println!(
        "one version of a 100,000-tenant config: {one} bytes; {} versions: {all} bytes",
        flagstone::HISTORY
    );
    assert_eq!(store.history().len(), flagstone::HISTORY);
    assert!(all < 2 * one, "{all} bytes for {} versions, {one} for one", flagstone::HISTORY);
    // Every kept version still rolls back to what it was.
    store.rollback().expect("kept");
    let ctx = Context::new().tenant("tenant-0099999");
    assert!(store.is_enabled("flag-0", &ctx), "the shared cohort still serves");
}

#[test]
fn flag_key_churn_keeps_memory_flat_and_counts_add_up() {
    let store = FlagStore::new();
    let doc = |version: u64| {
        format!(
            r#"{{ "version": {version}, "flags": {{ "stable": {{ "enabled": true }},
                "experiment-{version}": {{ "enabled": true, "stages": [ {{ "name": "half", "percent": 50 }} ], "stage": "half" }} }} }}"#
        )
    };
    let ctx = Context::new().user("u-1");
    let mut live = Vec::new();
    for version in 1..=3_000u64 {
        store.apply_json(doc(version)).expect("valid");
        store.is_enabled(&format!("experiment-{version}"), &ctx);
        store.is_enabled("stable", &ctx);
        if version % 1_000 == 0 {
            // A read folds what can be folded, as an exporter's would.
            let metrics = store.metrics();
            let total: u64 = metrics.evaluations().iter().map(|e| e.count).sum();
            assert_eq!(total, 2 * version, "no count is lost when keys are forgotten");
            assert!(metrics.evaluations().len() < 64, "{} series", metrics.evaluations().len());
            live.push(LIVE_BYTES.with(Cell::get));
        }
    }
    let (first, last) = (live[0], live[live.len() - 1]);
    println!("live bytes after 1,000 pushes: {first}; after 3,000: {last}");
    assert!(last - first < 256 * 1024, "memory grew by {} bytes", last - first);
}

#[test]
fn no_rule_value_getter_prerequisite_or_guarded_record_allocates() {
    let ops = [
        r#"{ "attribute": "a", "op": "in", "values": ["x", "y"] }"#,
        r#"{ "attribute": "a", "op": "in", "values": ["X"], "case_insensitive": true }"#,
        r#"{ "attribute": "a", "op": "starts_with", "values": ["pre", "x"] }"#,
        r#"{ "attribute": "a", "op": "ends_with", "value": "FIX", "case_insensitive": true }"#,
        r#"{ "attribute": "a", "op": "contains", "value": "É", "case_insensitive": true }"#,
        r#"{ "attribute": "a", "op": "matches", "value": "^[a-z]+[0-9]*$" }"#,
        r#"{ "attribute": "n", "op": "gte", "value": 50 }"#,
        r#"{ "attribute": "n", "op": "lt", "value": 7.5, "negate": true }"#,
        r#"{ "attribute": "v", "op": "semver_gte", "value": "1.2.0-rc.1" }"#,
        r#"{ "attribute": "v", "op": "semver_eq", "value": "2.0.0" }"#,
        r#"{ "attribute": "t", "op": "after", "value": "2026-01-01T00:00:00Z" }"#,
        r#"{ "attribute": "ip", "op": "in_cidr", "values": ["10.0.0.0/8", "2001:db8::/32"] }"#,
    ];
    let cohorts: Vec<String> =
        ops.iter().enumerate().map(|(i, r)| format!(r#""c{i}": {{ "rules": [{r}] }}"#)).collect();
    let flags: Vec<String> = (0..ops.len())
        .map(|i| format!(r#""f{i}": {{ "enabled": true, "stages": [ {{ "name": "s", "cohorts": ["c{i}"] }} ], "stage": "s" }}"#))
        .collect();
    let doc = format!(
        r#"{{ "version": 1, "cohorts": {{ {} }}, "flags": {{ {},
            "valued": {{ "enabled": true, "value": {{ "rate": 5, "name": "x" }} }},
            "number": {{ "enabled": true, "value": 5 }},
            "text": {{ "enabled": true, "variants": [ {{ "name": "a", "weight": 1, "value": "hello" }} ] }},
            "child": {{ "enabled": true, "requires": [ {{ "flag": "f0" }}, {{ "flag": "text", "variant": "a" }} ] }},
            "guarded": {{ "enabled": true, "stages": [ {{ "name": "canary", "percent": 50 }} ], "stage": "canary",
                "guard": {{ "holdback": 20, "max_error_ratio": 2.0 }} }} }} }}"#,
        cohorts.join(","),
        flags.join(",")
    );
    let store = FlagStore::from_json(doc).expect("valid").with_manual_guard_checks();
    let long = "é".repeat(300);
    let contexts = [
        Context::new()
            .user("u")
            .attr("a", "x")
            .attr("n", "60")
            .attr("v", "1.2.0")
            .attr("t", "2026-06-01T00:00:00Z")
            .attr("ip", "10.1.1.1"),
        Context::new()
            .user("v")
            .attr("a", "PREFIX")
            .attr("n", "3")
            .attr("v", "1.2.0-rc.2")
            .attr("t", "2025-01-01T00:00:00Z")
            .attr("ip", "2001:db8::7"),
        Context::new()
            .user("w")
            .attr("a", &long)
            .attr("n", "many")
            .attr("v", "v2")
            .attr("t", "soon")
            .attr("ip", "nope"),
        Context::new().user("z"),
    ];
    let keys: Vec<String> = (0..ops.len())
        .map(|i| format!("f{i}"))
        .chain(["valued", "number", "text", "child", "guarded"].map(String::from))
        .collect();
    // The regex crate builds its matching cache on a thread's first match.
    for ctx in &contexts {
        for key in &keys {
            store.is_enabled(key, ctx);
        }
    }
    let default = serde_json::Value::Null;
    for ctx in &contexts {
        for key in &keys {
            let n = allocations_in(|| {
                std::hint::black_box((
                    store.is_enabled(key, ctx),
                    store.evaluate(key, ctx),
                    store.bool_value(key, ctx, false),
                    store.str_value(key, ctx, "d"),
                    store.i64_value(key, ctx, 0),
                    store.f64_value(key, ctx, 0.0),
                    store.json_value(key, ctx, &default),
                ));
                store.record(key, ctx, Outcome::Success);
                store.record(key, ctx, Outcome::Error);
            });
            assert_eq!(n, 0, "{key} for {ctx:?} allocated {n} times");
        }
    }
    // The branches were real: some rule matched and some did not.
    let on: usize = contexts
        .iter()
        .map(|c| (0..ops.len()).filter(|i| store.is_enabled(&format!("f{i}"), c)).count())
        .sum();
    assert!(on > 8 && on < 3 * ops.len(), "{on}");
}

#[test]
fn unleash_bucketing_stage_variants_pins_and_unit_lists_do_not_allocate() {
    // What an Unleash import compiles to: murmur3 buckets, a list of
    // units, stages with their own salt, unit and variants, pinned
    // variants, and prerequisites on variants or on a flag being off.
    let store = FlagStore::from_json(
        r#"{ "version": 1,
        "cohorts": { "pro": { "rules": [ { "attribute": "plan", "op": "in", "values": ["pro"] } ] } },
        "flags": {
          "u": { "enabled": true, "bucketing": "unleash", "bucket_by": ["user", "sessionId"],
            "stages": [
              { "name": "a", "percent": 30, "salt": "group-a", "bucket_by": "plan",
                "variants": [ { "name": "x", "weight": 1, "value": 1 }, { "name": "y", "weight": 2 } ] },
              { "name": "b", "percent": 60 } ],
            "stage": "b",
            "variants": [ { "name": "p", "weight": 1, "cohorts": ["pro"] }, { "name": "q", "weight": 5 } ] },
          "child": { "enabled": true, "requires": [ { "flag": "u", "variants": ["x", "q"] } ] },
          "unless": { "enabled": true, "requires": [ { "flag": "u", "enabled": false } ] } } }"#,
    )
    .expect("valid");
    let contexts = [
        Context::new().user("u-1").attr("plan", "pro"),
        Context::new().attr("sessionId", "s-9").attr("plan", "free"),
        Context::new().user("u-77"),
        Context::new(),
    ];
    for ctx in &contexts {
        for key in ["u", "child", "unless"] {
            let n = allocations_in(|| {
                std::hint::black_box((
                    store.is_enabled(key, ctx),
                    store.evaluate(key, ctx),
                    store.variant(key, ctx),
                    store.i64_value(key, ctx, 0),
                ));
            });
            assert_eq!(n, 0, "{key} for {ctx:?} allocated {n} times");
        }
    }
    // The branches were real: some contexts are on, some off.
    let on =
        (0..400).filter(|i| store.is_enabled("u", &Context::new().user(&format!("u-{i}")))).count();
    assert!((200..300).contains(&on), "about 60% of users: {on}");
}

/// Issue 19: deciding a context's migration step, by key, through a
/// snapshot and by handle, allocates nothing (held-back contexts and
/// overrides included); neither does counting a migrator's operation once
/// its stage has been seen.
#[test]
fn deciding_a_migration_step_does_not_allocate() {
    use flagstone::MigrationStep;
    let store = FlagStore::from_json(
        r#"{ "version": 1,
      "cohorts": { "internal": { "tenants": ["acme"] } },
      "flags": { "m": { "enabled": true, "migration": true, "bucket_by": "tenant",
        "stages": [ { "name": "dual", "step": "dualwrite" },
                    { "name": "shadow-internal", "cohorts": ["internal"], "step": "shadow" },
                    { "name": "live-half", "percent": 50, "step": "live" } ],
        "stage": "live-half",
        "guard": { "max_mismatch_rate": 0.01, "holdback": 20 } } } }"#,
    )
    .expect("valid");
    let snapshot = store.snapshot();
    let handle = store.handle("m");
    let tenants: Vec<String> = (0..200).map(|i| format!("t-{i}")).collect();
    let mut steps = std::collections::BTreeMap::new();
    for tenant in tenants.iter().map(String::as_str).chain(["acme", ""]) {
        let ctx = Context::new().tenant(tenant);
        let n = allocations_in(|| {
            let a = store.migration_step("m", &ctx);
            let b = snapshot.migration_step("m", &ctx);
            let c = handle.migration_step(&ctx);
            assert!(a == b && b == c);
        });
        assert_eq!(n, 0, "{tenant}: {n} allocations");
        *steps.entry(store.migration_step("m", &ctx)).or_insert(0) += 1;
    }
    assert_eq!(store.migration_step("m", &Context::new().tenant("acme")), MigrationStep::Shadow);
    assert!(steps.get(&MigrationStep::Live).is_some_and(|n| *n > 50), "{steps:?}");
    assert!(steps.get(&MigrationStep::DualWrite).is_some_and(|n| *n > 50), "{steps:?}");
}
