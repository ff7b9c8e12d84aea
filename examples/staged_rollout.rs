//! A simulated service through a whole staged release.
//!
//! Two worker threads serve requests for 2,000 tenants in four regions,
//! asking `is_enabled("new-checkout", ..)` on every request, while the
//! release manager pushes the config stage by stage: dark, internal, beta,
//! a 5% canary, half of the EU (scheduled), everyone; then rolls one step
//! back, tries a bad push, and pulls the kill switch. After each step the
//! example prints who is exposed, by stage and by region, and checks that
//! advancing only ever added tenants. The workers record each request's
//! outcome and latency, the store's change events are printed as an audit
//! log, and at the end the example prints the store's metrics (Prometheus
//! text) and shows a guard rolling back a bad canary of a second flag.
//!
//! Run it with `cargo run --release --example staged_rollout`.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use flagstone::observe::StoreEvent;
use flagstone::{Context, FlagStore, ManualClock, Outcome};
use serde_json::json;

const FLAG: &str = "new-checkout";
const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "ap-south"];
const EU_HALF_OPENS: &str = "2026-12-01T02:00:00Z";

/// One tenant of the simulated service.
struct Tenant {
    id: String,
    region: &'static str,
    plan: &'static str,
}

fn tenants() -> Vec<Tenant> {
    let named = [
        ("acme-internal", "us-east"),
        ("t-104", "eu-west"),
        ("t-221", "ap-south"),
        ("bank-1", "eu-west"),
    ];
    let mut all: Vec<Tenant> = named
        .iter()
        .map(|&(id, region)| Tenant { id: id.to_owned(), region, plan: "enterprise" })
        .collect();
    for i in 0..1_996 {
        all.push(Tenant {
            id: format!("tenant-{i:04}"),
            region: REGIONS[i % REGIONS.len()],
            plan: if i % 10 == 0 { "enterprise" } else { "team" },
        });
    }
    all
}

/// The release plan; each push names the current stage and a new version.
fn config(version: u64, enabled: bool, stage: &str) -> String {
    json!({
        "version": version,
        "cohorts": {
            "staff":       { "tenants": ["acme-internal"] },
            "staff-users": { "users": ["alice"] },
            "beta":        { "tenants": ["t-104", "t-221"] },
            "eu":          { "regions": ["eu-west", "eu-north"] },
            "regulated":   { "tenants": ["bank-1"] }
        },
        "flags": {
            FLAG: {
                "enabled": enabled,
                "bucket_by": "tenant",
                "exclude": ["regulated"],
                "stages": [
                    { "name": "internal", "cohorts": ["staff", "staff-users"] },
                    { "name": "beta",     "cohorts": ["beta"] },
                    { "name": "canary",   "percent": 5 },
                    { "name": "eu-half",  "cohorts": ["eu"], "percent": 50, "start_at": EU_HALF_OPENS },
                    { "name": "everyone", "percent": 100 }
                ],
                "stage": stage,
                "variants": [ { "name": "control", "weight": 50 }, { "name": "treatment", "weight": 50 } ]
            }
        }
    })
    .to_string()
}

/// Who is exposed right now: the set of tenants, and the counts by the stage
/// (or reason) and by region.
struct Exposure {
    on: Vec<bool>,
    /// How many tenants this step removed from the step before it.
    removed: usize,
    by_reason: BTreeMap<String, usize>,
    by_region: BTreeMap<&'static str, usize>,
    treatment: usize,
}

fn exposure(store: &FlagStore, tenants: &[Tenant]) -> Exposure {
    // One snapshot: the whole census sees one config.
    let snap = store.snapshot();
    let mut e = Exposure {
        on: Vec::new(),
        removed: 0,
        by_reason: BTreeMap::new(),
        by_region: BTreeMap::new(),
        treatment: 0,
    };
    for t in tenants {
        let ctx = Context::new().tenant(&t.id).region(t.region).attr("plan", t.plan);
        let ev = snap.evaluate(FLAG, &ctx);
        e.on.push(ev.enabled);
        *e.by_reason.entry(ev.reason.label().to_owned()).or_default() += 1;
        if ev.enabled {
            *e.by_region.entry(t.region).or_default() += 1;
        }
        if ev.variant == Some("treatment") {
            e.treatment += 1;
        }
    }
    e
}

fn report(
    step: &str,
    store: &FlagStore,
    tenants: &[Tenant],
    before: &Exposure,
    served: &AtomicU64,
) -> Exposure {
    let served = served.load(Ordering::Relaxed);
    let mut now = exposure(store, tenants);
    let added = now.on.iter().zip(&before.on).filter(|&(&n, &b)| n && !b).count();
    let removed = now.on.iter().zip(&before.on).filter(|&(&n, &b)| !n && b).count();
    now.removed = removed;
    let total: usize = now.by_region.values().sum();
    let regions: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("{r} {:>4}", now.by_region.get(r).copied().unwrap_or(0)))
        .collect();
    println!(
        "{step:<34} v{:<2} exposed {total:>4} (+{added:<4} -{removed:<4})  {}  treatment {:>4}  requests {served:>8}",
        store.version(),
        regions.join("  "),
        now.treatment,
    );
    let reasons: Vec<String> = now.by_reason.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!("{:<38}  by reason: {}", "", reasons.join(", "));
    now
}

fn main() -> Result<(), Box<dyn Error>> {
    let tenants = Arc::new(tenants());
    let clock = Arc::new(ManualClock::from_rfc3339("2026-11-30T09:00:00Z")?);
    let store = Arc::new(FlagStore::new().with_clock(clock.clone()));
    // The audit log of the release: every change, as the store applies it.
    store.on_event(|event| {
        if let StoreEvent::Changed(change) = event {
            for c in &change.changes {
                println!("{:<38}  audit v{} ({}): {c}", "", change.to, change.cause);
            }
        }
    });

    // The service: two workers handling requests, round-robin over tenants.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (store, tenants, stop, served) =
                (store.clone(), tenants.clone(), stop.clone(), served.clone());
            thread::spawn(move || {
                let checkout = store.handle(FLAG);
                let mut i = w;
                let mut local = 0u64;
                let mut rng = w as u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = &tenants[i % tenants.len()];
                    let ctx = Context::new().tenant(&t.id).region(t.region).user("u-1");
                    std::hint::black_box(checkout.is_enabled(&ctx));
                    // What the request came to: about 1 in 100 fails (a
                    // small generator, so failures land on any tenant);
                    // latency is simulated from the tenant.
                    rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    if (rng >> 33).is_multiple_of(100) {
                        checkout.record(&ctx, Outcome::Error);
                    } else {
                        checkout.record(&ctx, Outcome::Success);
                    }
                    let micros = 200 + (i % 7) as u64 * 300;
                    checkout.record(&ctx, Outcome::Latency(Duration::from_micros(micros)));
                    i += 2;
                    local += 1;
                    if local.is_multiple_of(4_096) {
                        served.fetch_add(4_096, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let pause = || thread::sleep(Duration::from_millis(100));

    println!("flagstone staged rollout of {FLAG:?} across {} tenants\n", tenants.len());
    let mut before = exposure(&store, &tenants);
    let version = std::cell::Cell::new(0);
    let push = |enabled: bool, stage: &str| -> Result<u64, flagstone::Error> {
        version.set(version.get() + 1);
        store.apply_json(config(version.get(), enabled, stage))
    };

    push(false, "internal")?;
    pause();
    before = report("1. shipped dark (kill switch on)", &store, &tenants, &before, &served);

    let mut advances = Vec::new();
    for stage in ["internal", "beta", "canary", "eu-half"] {
        push(true, stage)?;
        pause();
        let now = report(
            &format!("{}. stage {stage}", advances.len() + 2),
            &store,
            &tenants,
            &before,
            &served,
        );
        advances.push((stage, now.removed == 0));
        before = now;
    }
    println!(
        "{:<38}  (eu-half is pushed but opens at {EU_HALF_OPENS}; the clock says 2026-11-30T09:00Z)",
        ""
    );

    clock.set(flagstone::ManualClock::from_rfc3339(EU_HALF_OPENS)?.now_millis_value());
    let now = report("6. 02:00Z passes: eu-half opens", &store, &tenants, &before, &served);
    advances.push(("eu-half (on time)", now.removed == 0));
    before = now;

    push(true, "everyone")?;
    pause();
    let everyone = report("7. stage everyone", &store, &tenants, &before, &served);
    advances.push(("everyone", everyone.removed == 0));
    let eu_half = before;

    store.rollback()?;
    pause();
    let rolled = report("8. rollback: one step back", &store, &tenants, &everyone, &served);
    let exact = rolled.on == eu_half.on;

    let bad = store.apply_json(config(version.get() + 1, true, "evryone"));
    let refused = match &bad {
        Err(e) => format!("refused: {e}"),
        Ok(v) => format!("applied version {v} (unexpected)"),
    };
    println!("9. a typo in a push is {refused}");
    println!("{:<38}  still serving v{}", "", store.version());

    push(false, "everyone")?;
    pause();
    report("10. kill switch pulled", &store, &tenants, &rolled, &served);

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a worker panicked")?;
    }

    println!();
    for (stage, only_added) in &advances {
        println!(
            "advancing to {stage:<18} only added tenants: {}",
            if *only_added { "yes" } else { "NO" }
        );
    }
    println!(
        "rollback removed exactly the last stage's audience: {}",
        if exact { "yes" } else { "NO" }
    );
    println!("requests served while pushing: {}", served.load(Ordering::Relaxed));

    // What an exporter would serve on /metrics: one series per stage.
    println!("\nmetrics (Prometheus text), evaluations and outcomes of {FLAG:?}:");
    let metrics = store.metrics().to_prometheus();
    for line in metrics.lines().filter(|l| {
        l.starts_with("flagstone_evaluations_total") || l.starts_with("flagstone_outcomes_total")
    }) {
        println!("  {line}");
    }

    let tripped = guarded_canary()?;
    if !exact || advances.iter().any(|(_, ok)| !ok) || bad.is_ok() || !tripped {
        return Err("the release did not behave as staged".into());
    }
    Ok(())
}

/// A second release, `search-v2`, whose canary has a bug: 10% of its
/// requests fail against 1% elsewhere. Its guard compares the tenants the
/// canary exposes with the tenants it holds back, and steps the canary
/// back on this instance within seconds of simulated traffic.
fn guarded_canary() -> Result<bool, Box<dyn Error>> {
    println!("\n11. a guarded canary with a bug (simulated traffic, one request a millisecond)");
    let clock = Arc::new(ManualClock::from_rfc3339("2026-12-01T03:00:00Z")?);
    // The simulation moves the clock itself, so it says when guards look.
    let store = FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks();
    let tripped = Arc::new(AtomicBool::new(false));
    let seen = tripped.clone();
    store.on_event(move |event| {
        if let StoreEvent::GuardTripped(trip) = event {
            println!("{:<38}  {trip}", "");
            seen.store(true, Ordering::Relaxed);
        }
    });
    store.apply_json(
        json!({ "version": 1,
            "cohorts": { "staff": { "tenants": ["tenant-00000", "tenant-00001"] } },
            "flags": { "search-v2": {
            "enabled": true, "bucket_by": "tenant",
            "stages": [ { "name": "internal", "cohorts": ["staff"] },
                        { "name": "canary", "percent": 20 } ],
            "stage": "canary",
            "guard": { "holdback": 20, "max_error_ratio": 2.0, "min_units": 100,
                       "window_secs": 600 }
        } } })
        .to_string(),
    )?;
    // 5,000 tenants send requests in turn; a unit counts from 10 outcomes.
    let tenants: Vec<String> = (0..5_000).map(|i| format!("tenant-{i:05}")).collect();
    for i in 0..200_000u64 {
        let ctx = Context::new().tenant(&tenants[i as usize % tenants.len()]);
        let every = if store.is_enabled("search-v2", &ctx) { 10 } else { 100 };
        // A deterministic draw stands in for chance.
        let draw = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        let outcome = if draw.is_multiple_of(every) { Outcome::Error } else { Outcome::Success };
        store.record("search-v2", &ctx, outcome);
        clock.advance(Duration::from_millis(1));
        if i % 100 == 0 {
            store.check_guards();
            if tripped.load(Ordering::Relaxed) {
                println!("{:<38}  after {} simulated seconds", "", i / 1_000);
                break;
            }
        }
    }
    let open = (0..1_000).any(|i| {
        let tenant = format!("tenant-{i:05}");
        let ev = store.evaluate("search-v2", &Context::new().tenant(&tenant));
        ev.reason.label() == "canary"
    });
    println!("{:<38}  canary still open on this instance: {}", "", if open { "yes" } else { "no" });
    Ok(tripped.load(Ordering::Relaxed) && !open)
}
