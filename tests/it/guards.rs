//! Guards you can trust, shown by seeded simulation on an injected clock:
//! the always-valid test's false-trip rate and power (on the public test
//! function, as the fleet controller calls it), and the store's guard end
//! to end: a held-back control, per-unit evidence, latency, sample ratio,
//! starvation, and a decision within a second of sufficient evidence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstone::observe::evidence::{ErrorRule, ErrorTest, MIN_UNIT_OUTCOMES, UnitRates};
use flagstone::observe::{ControlGroup, StoreEvent};
use flagstone::{Context, FlagStore, ManualClock, Outcome, Reason};

use crate::rng::Rng;

/// One group of a simulated stage: units and their running tallies, with
/// the group's [`UnitRates`] kept up to date as outcomes arrive (over the
/// units with [`MIN_UNIT_OUTCOMES`], as the store's guard counts them).
struct Group {
    error_rate: f64,
    /// Per unit: requests a second, outcomes, errors.
    units: Vec<(f64, u32, u32)>,
    rates: UnitRates,
}

impl Group {
    fn new(error_rate: f64) -> Self {
        Self { error_rate, units: Vec::new(), rates: UnitRates::default() }
    }

    fn outcome(&mut self, unit: usize, error: bool) {
        let (_, outcomes, errors) = &mut self.units[unit];
        // Replace the unit's contribution by its new counts.
        if u64::from(*outcomes) >= MIN_UNIT_OUTCOMES {
            self.rates.remove(u64::from(*outcomes), u64::from(*errors));
        }
        *outcomes += 1;
        *errors += u32::from(error);
        if u64::from(*outcomes) >= MIN_UNIT_OUTCOMES {
            self.rates.add(u64::from(*outcomes), u64::from(*errors));
        }
    }

    /// One simulated second: new units arrive, every unit sends its
    /// requests.
    fn second(&mut self, rng: &mut Rng, arrivals: usize) {
        for _ in 0..arrivals {
            // Request rates spread over two orders of magnitude (0.05 to 5
            // a second): units differ in volume, and must not differ in weight.
            let volume = 0.05 * 100f64.powf(rng.unit());
            self.units.push((volume, 0, 0));
        }
        for unit in 0..self.units.len() {
            let volume = self.units[unit].0;
            let mut requests = volume.floor() as u32 + u32::from(rng.chance(volume.fract()));
            while requests > 0 {
                let error = rng.chance(self.error_rate);
                self.outcome(unit, error);
                requests -= 1;
            }
        }
    }
}

/// A stage checked every second over a window of `seconds`: the second it
/// trips, if it does. Units arrive evenly over the first half.
fn simulate(
    seed: u64,
    control_rate: f64,
    effect: f64,
    units: usize,
    seconds: usize,
) -> Option<usize> {
    let mut rng = Rng(seed);
    let (mut exposed, mut control) = (Group::new(control_rate * effect), Group::new(control_rate));
    let arriving = seconds / 2;
    let mut test = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100);
    for t in 0..seconds {
        let n = if t < arriving { units * (t + 1) / arriving - units * t / arriving } else { 0 };
        exposed.second(&mut rng, n);
        control.second(&mut rng, n);
        if test.check(&exposed.rates, &control.rates).regressed {
            return Some(t + 1);
        }
    }
    None
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[test]
fn healthy_stages_rarely_trip_however_often_the_guard_looks() {
    // A/A (exposed and control at the same rate), and the rule's edge
    // (exposed at exactly 2x, the worst a healthy stage may be), checked
    // every second for 300 seconds.
    for (rate, effect, runs) in [(0.01, 1.0, 1_000u64), (0.05, 1.0, 1_000), (0.05, 2.0, 400)] {
        let trips =
            (0..runs).filter(|&seed| simulate(seed, rate, effect, 200, 300).is_some()).count();
        let share = trips as f64 / runs as f64;
        println!(
            "{effect}x at {:.0}% errors, 200 units a group, 300 looks: {trips} of {runs} tripped ({:.1}%)",
            rate * 100.0,
            share * 100.0
        );
        // At most 1 - confidence (5%), plus two standard errors.
        assert!(share <= 0.05 + 2.0 * (0.05f64 * 0.95 / runs as f64).sqrt(), "{share}");
    }
}

#[test]
fn a_stage_at_three_times_the_errors_trips_in_nearly_every_run() {
    // The power of a 2x rule against 3x the errors. At a 5% control rate
    // and 200 units a group that is at least 95%. At 1%, where a unit's
    // rate over a few dozen requests rests on one or two errors, it takes
    // more units (docs/guards.md has the table): 95% at 500.
    for (rate, units, least) in [(0.05, 200, 0.95), (0.01, 200, 0.80), (0.01, 500, 0.95)] {
        let times: Vec<usize> =
            (0..200u64).filter_map(|seed| simulate(10_000 + seed, rate, 3.0, units, 300)).collect();
        let power = times.len() as f64 / 200.0;
        println!(
            "3x errors at {:.0}% (against a 2x rule), {units} units a group: tripped in {:.1}% of runs, median after {} s",
            rate * 100.0,
            power * 100.0,
            median(times.clone())
        );
        assert!(power >= least, "power {power} at {rate} with {units} units");
    }
}

/// A table of false-trip rate and power, for docs/guards.md.
#[test]
fn a_grid_of_rates_and_sizes() {
    let mut lines = Vec::new();
    for rate in [0.01, 0.05] {
        for units in [100, 200, 500] {
            let mut cells = Vec::new();
            for effect in [1.0, 2.0, 3.0] {
                let runs = 200u64;
                let times: Vec<usize> = (0..runs)
                    .filter_map(|seed| simulate(seed * 7 + units as u64, rate, effect, units, 300))
                    .collect();
                let share = 100.0 * times.len() as f64 / runs as f64;
                cells.push(if times.is_empty() {
                    format!("{share:.1}%")
                } else {
                    format!("{share:.1}% ({} s)", median(times))
                });
            }
            lines.push(format!("| {:.0}% | {units} | {} |", rate * 100.0, cells.join(" | ")));
        }
    }
    println!(
        "| control rate | units a group | 1x (false trips) | 2x (the rule's edge) | 3x |\n|---|---|---|---|---|\n{}",
        lines.join("\n")
    );
}

// The store's guard, end to end.

/// Everything a store told its listeners.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<StoreEvent>>>);

impl Heard {
    fn listen(store: &FlagStore) -> Self {
        let heard = Self::default();
        let sink = heard.0.clone();
        store.on_event(move |e| sink.lock().expect("not poisoned").push(e.clone()));
        heard
    }

    fn trips(&self) -> Vec<flagstone::observe::GuardTrip> {
        let events = self.0.lock().expect("not poisoned");
        events
            .iter()
            .filter_map(|e| match e {
                StoreEvent::GuardTripped(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    fn any(&self, f: impl Fn(&StoreEvent) -> bool) -> bool {
        self.0.lock().expect("not poisoned").iter().any(f)
    }
}

/// A guarded canary on tenants: `internal` for staff, then `stage` (a
/// percentage of everyone, or of a cohort) with a guard.
fn guarded(stage: &str, guard: &str) -> (Arc<FlagStore>, Arc<ManualClock>, Heard) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = Arc::new(FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks());
    let heard = Heard::listen(&store);
    store
        .apply_json(format!(
            r#"{{ "version": 1,
              "cohorts": {{ "staff": {{ "tenants": ["staff-1"] }}, "eu": {{ "regions": ["eu-west"] }} }},
              "flags": {{ "f": {{ "enabled": true, "bucket_by": "tenant",
                "stages": [ {{ "name": "internal", "cohorts": ["staff"] }}, {stage} ],
                "stage": "canary", "guard": {guard} }} }} }}"#
        ))
        .expect("valid");
    (store, clock, heard)
}

/// Traffic for `seconds` from `tenants` tenants, each second each tenant
/// sends a request; `error(reason, region, tenant)` is its error rate and
/// `latency` its latency. Guards look every 200 ms. The second of the
/// first trip, if any.
fn traffic(
    (store, clock, heard): (&FlagStore, &ManualClock, &Heard),
    seed: u64,
    tenants: usize,
    seconds: usize,
    error: impl Fn(&Reason<'_>, &str, usize) -> f64,
    latency: impl Fn(&Reason<'_>) -> Duration,
    recorded: impl Fn(&Reason<'_>) -> bool,
) -> Option<usize> {
    let mut rng = Rng(seed);
    let names: Vec<String> = (0..tenants).map(|i| format!("t-{i:05}")).collect();
    for t in 0..seconds {
        for step in 0..5 {
            for (i, name) in names.iter().enumerate().skip(step).step_by(5) {
                let region = if i % 3 == 0 { "eu-west" } else { "us-east" };
                let ctx = Context::new().tenant(name).region(region);
                let reason = store.evaluate("f", &ctx).reason;
                if !recorded(&reason) {
                    continue;
                }
                let outcome = if rng.chance(error(&reason, region, i)) {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                store.record("f", &ctx, outcome);
                store.record("f", &ctx, Outcome::Latency(latency(&reason)));
            }
            clock.advance(Duration::from_millis(200));
            store.check_guards();
        }
        if !heard.trips().is_empty() {
            return Some(t + 1);
        }
    }
    None
}

fn exposed(reason: &Reason<'_>) -> bool {
    matches!(reason, Reason::Stage { name: "canary", .. })
}

const ALWAYS: fn(&Reason<'_>) -> bool = |_| true;
const FLAT: fn(&Reason<'_>) -> Duration = |_| Duration::from_millis(3);

#[test]
fn held_back_units_are_a_stable_share_of_the_new_audience_and_gain_when_the_stage_advances() {
    let stage = r#"{ "name": "canary", "percent": 50 }, { "name": "everyone", "percent": 100 }"#;
    let guard = r#"{ "holdback": 10, "max_error_ratio": 2.0, "window_secs": 60 }"#;
    let (store, _, _) = guarded(stage, guard);
    let (other, _, _) = guarded(stage, guard);
    let names: Vec<String> = (0..20_000).map(|i| format!("t-{i:05}")).collect();
    let held: Vec<&String> = names
        .iter()
        .filter(|n| {
            matches!(
                store.evaluate("f", &Context::new().tenant(n)).reason,
                Reason::HeldBack { stage: "canary" }
            )
        })
        .collect();
    let audience = names.iter().filter(|n| flagstone::bucket("f", n) < 50_000).count();
    let share = held.len() as f64 / audience as f64;
    println!("held back: {} of a new audience of {audience} ({:.2}%)", held.len(), share * 100.0);
    assert!((0.09..0.11).contains(&share), "{share}");
    for n in &held {
        let ctx = Context::new().tenant(n);
        assert!(!store.is_enabled("f", &ctx), "held back means off");
        assert!(flagstone::holdback_bucket("f", n) < 10_000, "by the holdback bucket");
        assert_eq!(
            other.evaluate("f", &ctx).reason,
            Reason::HeldBack { stage: "canary" },
            "the same units on every instance"
        );
    }
    // The stage advances: the canary's held-back units are exposed by it,
    // and the new stage holds back a share of its own new audience.
    store
        .apply_json(format!(
            r#"{{ "version": 2, "cohorts": {{ "staff": {{ "tenants": ["staff-1"] }} }},
                  "flags": {{ "f": {{ "enabled": true, "bucket_by": "tenant",
                    "stages": [ {{ "name": "internal", "cohorts": ["staff"] }}, {stage} ],
                    "stage": "everyone", "guard": {guard} }} }} }}"#
        ))
        .expect("valid");
    for n in &held {
        assert_eq!(
            store.evaluate("f", &Context::new().tenant(n)).reason.label(),
            "canary",
            "{n} gained"
        );
    }
    let now_held = names
        .iter()
        .filter(|n| {
            matches!(
                store.evaluate("f", &Context::new().tenant(n)).reason,
                Reason::HeldBack { stage: "everyone" }
            )
        })
        .count();
    assert!((800..1_200).contains(&now_held), "{now_held} of about 10,000 new");
    // A context without the unit is never held back.
    assert_ne!(store.evaluate("f", &Context::new().region("eu-west")).reason.label(), "held-back");
}

#[test]
fn one_noisy_unit_does_not_trip_a_guard() {
    let (store, clock, heard) = guarded(
        r#"{ "name": "canary", "percent": 50 }"#,
        r#"{ "holdback": 20, "max_error_ratio": 2.0, "min_units": 100, "window_secs": 600 }"#,
    );
    let noisy = (0..2_000)
        .map(|i| format!("t-{i:05}"))
        .find(|n| exposed(&store.evaluate("f", &Context::new().tenant(n)).reason))
        .expect("an exposed tenant");
    let ctx = Context::new().tenant(&noisy);
    for _ in 0..10_000 {
        store.record("f", &ctx, Outcome::Error);
    }
    let tripped = traffic((&store, &clock, &heard), 1, 1_500, 60, |_, _, _| 0.01, FLAT, ALWAYS);
    assert_eq!(tripped, None, "{:?}", heard.trips());
}

#[test]
fn a_regional_difference_neither_trips_nor_hides_a_regression_with_a_holdback() {
    let eu = r#"{ "name": "canary", "cohorts": ["eu"], "percent": 60 }"#;
    let rest_worse = |reason: &Reason<'_>, region: &str, _: usize| {
        let _ = reason;
        if region == "eu-west" { 0.02 } else { 0.10 }
    };
    // The rest of the world has 5x the errors; the EU units exposed and held
    // back are alike: no trip.
    let (store, clock, heard) =
        guarded(eu, r#"{ "holdback": 20, "max_error_ratio": 2.0, "window_secs": 600 }"#);
    assert_eq!(
        traffic((&store, &clock, &heard), 2, 3_000, 90, rest_worse, FLAT, ALWAYS),
        None,
        "{:?}",
        heard.trips()
    );

    // Exposed EU at 3x the held-back EU: a trip, though still below the rest.
    let regression = |reason: &Reason<'_>, region: &str, i: usize| {
        if exposed(reason) { 0.06 } else { rest_worse(reason, region, i) }
    };
    let (store, clock, heard) =
        guarded(eu, r#"{ "holdback": 20, "max_error_ratio": 2.0, "window_secs": 600 }"#);
    let at = traffic((&store, &clock, &heard), 3, 3_000, 90, regression, FLAT, ALWAYS);
    let trips = heard.trips();
    assert!(at.is_some(), "the EU regression is seen against held-back EU units");
    assert_eq!(trips[0].control, ControlGroup::HeldBack);
    println!("eu at 3x its held-back units tripped after {} s: {}", at.unwrap_or(0), trips[0]);

    // Against the not-exposed baseline (the rest of the world, 10%), the
    // same regression hides.
    let (store, clock, heard) = guarded(eu, r#"{ "max_error_ratio": 2.0, "window_secs": 600 }"#);
    assert_eq!(traffic((&store, &clock, &heard), 3, 3_000, 90, regression, FLAT, ALWAYS), None);
}

#[test]
fn latency_at_three_times_trips_and_at_a_tenth_more_does_not() {
    let guard = r#"{ "holdback": 20, "latency": { "quantile": 0.99, "max_ratio": 1.5 }, "window_secs": 600 }"#;
    let canary = r#"{ "name": "canary", "percent": 50 }"#;
    for (factor, trips) in [(3.0, true), (1.1, false)] {
        let (store, clock, heard) = guarded(canary, guard);
        let counter = std::cell::Cell::new(0u64);
        let latency = |reason: &Reason<'_>| {
            // Log-uniform from 1 ms to 16 ms, slower by `factor` when exposed.
            counter.set(counter.get() + 1);
            let base = 0.001 * 16f64.powf(rng_unit(counter.get()));
            Duration::from_secs_f64(if exposed(reason) { base * factor } else { base })
        };
        let at = traffic((&store, &clock, &heard), 4, 2_000, 60, |_, _, _| 0.0, latency, ALWAYS);
        assert_eq!(at.is_some(), trips, "latency {factor}x: {:?}", heard.trips());
        if let Some(t) = at {
            println!("latency 3x tripped after {t} s: {}", heard.trips()[0]);
        }
    }
}

/// A deterministic number in `0..1` from a counter.
fn rng_unit(i: u64) -> f64 {
    Rng(i).unit()
}

#[test]
fn missing_held_back_outcomes_are_a_sample_ratio_mismatch_and_a_starved_group() {
    let (store, clock, heard) = guarded(
        r#"{ "name": "canary", "percent": 50 }"#,
        r#"{ "holdback": 10, "max_error_ratio": 2.0, "window_secs": 20 }"#,
    );
    // Held-back requests record nothing (a route that answers 404 while the
    // flag is off), and exposed ones are bad.
    let not_held = |reason: &Reason<'_>| !matches!(reason, Reason::HeldBack { .. });
    let at = traffic(
        (&store, &clock, &heard),
        5,
        1_000,
        45,
        |r, _, _| if exposed(r) { 0.3 } else { 0.01 },
        FLAT,
        not_held,
    );
    assert_eq!(at, None, "a guard whose groups do not split as configured decides nothing");
    assert!(heard.any(|e| matches!(e, StoreEvent::GuardMismatch(m) if m.control_units == 0)));
    assert!(heard.any(|e| matches!(e, StoreEvent::GuardStarved(s) if s.group == "held-back")));
    let starved = heard
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|e| matches!(e, StoreEvent::GuardStarved(_)))
        .count();
    assert_eq!(starved, 1, "said once, not every window");
}

#[test]
fn a_bad_canary_is_stepped_back_within_a_second_of_sufficient_evidence() {
    let (store, clock, heard) = guarded(
        r#"{ "name": "canary", "percent": 50 }"#,
        r#"{ "holdback": 20, "max_error_ratio": 2.0, "min_units": 100, "window_secs": 600 }"#,
    );
    // The test keeps its own tally of what it recorded: the evidence is
    // sufficient at the first tenth of a second the public test says so.
    let mut tally: HashMap<String, (bool, u32, u32)> = HashMap::new();
    let mut rng = Rng(9);
    let names: Vec<String> = (0..1_500).map(|i| format!("t-{i:05}")).collect();
    let (mut sufficient, mut tripped) = (None, None);
    let mut test = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100);
    for tenth in 0..6_000u32 {
        for name in names.iter().skip(tenth as usize % 10).step_by(10) {
            let ctx = Context::new().tenant(name);
            let reason = store.evaluate("f", &ctx).reason;
            let side = match reason {
                Reason::Stage { name: "canary", .. } => true,
                Reason::HeldBack { .. } => false,
                _ => continue,
            };
            let error = rng.chance(if side { 0.08 } else { 0.02 });
            store.record("f", &ctx, if error { Outcome::Error } else { Outcome::Success });
            let entry = tally.entry(name.clone()).or_insert((side, 0, 0));
            entry.1 += 1;
            entry.2 += u32::from(error);
        }
        clock.advance(Duration::from_millis(100));
        if tenth % 2 == 1 {
            store.check_guards();
        }
        if sufficient.is_none() {
            let (mut e, mut c) = (UnitRates::default(), UnitRates::default());
            for (side, outcomes, errors) in tally.values() {
                let (o, x) = (u64::from(*outcomes), u64::from(*errors));
                if o < MIN_UNIT_OUTCOMES {
                    continue;
                }
                if *side { e.add(o, x) } else { c.add(o, x) }
            }
            if test.check(&e, &c).regressed {
                sufficient = Some(tenth);
            }
        }
        if tripped.is_none() && !heard.trips().is_empty() {
            tripped = Some(tenth);
            break;
        }
    }
    let (sufficient, tripped) = (sufficient.expect("evidence"), tripped.expect("a trip"));
    println!(
        "600 s window: evidence sufficient after {:.1} s, stepped back after {:.1} s",
        f64::from(sufficient) / 10.0,
        f64::from(tripped) / 10.0
    );
    assert!(tripped <= sufficient + 10, "within a second: {sufficient} -> {tripped} tenths");
    assert_eq!(heard.trips()[0].now_serving.as_deref(), Some("internal"));
}

/// A push that leaves a guarded flag (and the cohorts it names) as it was
/// keeps its guard's evidence; one that changes who it exposes starts a
/// new window. The fleet controller publishes a version per decision: if
/// every version reset every guard, one flag's step would starve the
/// others of evidence.
#[test]
fn a_guard_keeps_its_evidence_across_pushes_that_do_not_change_its_flag() {
    let doc = |version: u64, other: u32, canary: u32, staff: &str| {
        format!(
            r#"{{ "version": {version},
              "cohorts": {{ "staff": {{ "tenants": ["{staff}"] }} }},
              "flags": {{
                "other": {{ "enabled": true, "stages": [ {{ "name": "s", "percent": {other} }} ], "stage": "s" }},
                "f": {{ "enabled": true, "bucket_by": "tenant",
                  "stages": [ {{ "name": "internal", "cohorts": ["staff"] }}, {{ "name": "canary", "percent": {canary} }} ],
                  "stage": "canary",
                  "guard": {{ "holdback": 20, "max_error_ratio": 2.0, "min_units": 10, "window_secs": 600 }} }} }} }}"#
        )
    };
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks();
    store.apply_json(doc(1, 10, 50, "staff-1")).expect("valid");
    let units = |store: &FlagStore| {
        store.check_guards();
        store.metrics().guards().iter().find(|g| g.flag == "f").map_or(0, |g| g.exposed.units)
    };
    for _ in 0..12 {
        for i in 0..200 {
            let name = format!("t-{i:03}");
            store.record("f", &Context::new().tenant(&name), Outcome::Success);
        }
        clock.advance(Duration::from_secs(1));
    }
    let before = units(&store);
    assert!(before > 50, "{before}");
    store.apply_json(doc(2, 20, 50, "staff-1")).expect("another flag changes");
    assert_eq!(units(&store), before, "evidence kept");
    store.apply_json(doc(3, 20, 50, "staff-2")).expect("its cohort changes");
    assert_eq!(units(&store), 0, "a cohort it names changed: a new window");
    for i in 0..200 {
        for _ in 0..12 {
            store.record("f", &Context::new().tenant(&format!("t-{i:03}")), Outcome::Success);
        }
    }
    assert!(units(&store) > 50);
    store.apply_json(doc(4, 20, 60, "staff-2")).expect("its percentage changes");
    assert_eq!(units(&store), 0, "the flag changed: a new window");
}
