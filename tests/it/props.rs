//! Properties of bucketing and evaluation, over random inputs: ramps are
//! monotonic, buckets are uniform and independent across salts, the compiled
//! evaluator agrees with a naive interpreter of the raw config, and nothing
//! panics on any input.

use std::sync::Arc;

use flagstone::config::Config;
use flagstone::{Context, FlagStore, ManualClock};
use proptest::prelude::*;
use serde_json::{Value, json};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Raising a percentage only ever adds units: in at p implies in at p' > p.
    #[test]
    fn ramps_are_monotonic(
        salt in "\\PC{1,12}",
        unit in "\\PC{0,24}",
        p in 0u32..=100_000,
        q in 0u32..=100_000,
    ) {
        let (lo, hi) = (p.min(q), p.max(q));
        let store_at = |t: u32, v: u64| {
            let json = json!({ "version": v, "flags": { "f": {
                "enabled": true, "salt": salt, "stage": "p",
                "stages": [ { "name": "p", "percent": f64::from(t) / 1000.0 } ] } } });
            FlagStore::from_json(json.to_string()).expect("valid")
        };
        let ctx = Context::new().user(&unit);
        if store_at(lo, 1).is_enabled("f", &ctx) {
            prop_assert!(store_at(hi, 2).is_enabled("f", &ctx));
        }
    }

    /// The spec's in/out rule, for any salt and unit.
    #[test]
    fn in_at_p_exactly_when_the_bucket_is_below_the_threshold(
        salt in "[a-z-]{1,12}",
        unit in "\\PC{0,24}",
        thousandths in 0u32..=100_000,
    ) {
        let json = json!({ "version": 1, "flags": { "f": {
            "enabled": true, "salt": salt, "stage": "p",
            "stages": [ { "name": "p", "percent": f64::from(thousandths) / 1000.0 } ] } } });
        let store = FlagStore::from_json(json.to_string()).expect("valid");
        let expected = flagstone::bucket(&salt, &unit) < thousandths;
        prop_assert_eq!(store.is_enabled("f", &Context::new().user(&unit)), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Over 100,000 units, a 5% rollout holds 5% ± 0.5 points, for any salt.
    #[test]
    fn five_percent_is_five_percent(salt in "\\PC{0,16}", prefix in "[a-z]{0,6}") {
        let n = 100_000;
        let inside = (0..n).filter(|i| flagstone::bucket(&salt, &format!("{prefix}{i}")) < 5_000).count();
        let share = inside as f64 / n as f64 * 100.0;
        prop_assert!((4.5..=5.5).contains(&share), "{share}%");
    }

    /// Two flags with different salts pick their 50% independently: about a
    /// quarter of units is in both.
    #[test]
    fn different_salts_bucket_independently(a in "[a-z]{1,10}", b in "[a-z]{1,10}") {
        prop_assume!(a != b);
        let n = 100_000;
        let both = (0..n)
            .map(|i| format!("unit-{i}"))
            .filter(|u| flagstone::bucket(&a, u) < 50_000 && flagstone::bucket(&b, u) < 50_000)
            .count();
        let share = both as f64 / n as f64 * 100.0;
        prop_assert!((24.0..=26.0).contains(&share), "{share}% in both");
    }
}

// A naive interpreter of the raw config: the spec read literally, with no
// precomputation, to hold the compiled evaluator to.

#[derive(Debug, Clone)]
struct Ctx {
    tenant: Option<String>,
    user: Option<String>,
    region: Option<String>,
    attrs: Vec<(String, String)>,
}

impl Ctx {
    fn context(&self) -> Context<'_> {
        let mut ctx = Context::new();
        if let Some(t) = &self.tenant {
            ctx = ctx.tenant(t);
        }
        if let Some(u) = &self.user {
            ctx = ctx.user(u);
        }
        if let Some(r) = &self.region {
            ctx = ctx.region(r);
        }
        for (k, v) in &self.attrs {
            ctx = ctx.attr(k, v);
        }
        ctx
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn value(&self, key: &str) -> Option<&str> {
        match key {
            "tenant" => self.tenant.as_deref(),
            "user" => self.user.as_deref(),
            "region" => self.region.as_deref(),
            other => self.attr(other),
        }
    }
}

/// A rule read literally: the attribute's value, the operator as its name
/// says, `negate` last; semantic versions by the `semver` crate.
fn naive_rule(rule: &flagstone::config::Rule, ctx: &Ctx) -> bool {
    use flagstone::config::Operator as Op;
    let strings = || -> Vec<String> {
        rule.value
            .iter()
            .chain(rule.values.iter().flatten())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect()
    };
    let fold = |s: &str| if rule.case_insensitive { s.to_lowercase() } else { s.to_owned() };
    let matched = ctx.value(&rule.attribute).is_some_and(|value| {
        let value = fold(value);
        let number = |v: &str| v.trim().parse::<f64>().ok();
        let target = rule.value.as_ref().and_then(Value::as_f64).unwrap_or(f64::NAN);
        let version = |v: &str| semver::Version::parse(v).ok();
        let rule_version = || version(rule.value.as_ref().and_then(Value::as_str).unwrap_or(""));
        match rule.op {
            Op::In => strings().iter().any(|s| fold(s) == value),
            Op::StartsWith => strings().iter().any(|s| value.starts_with(&fold(s))),
            Op::EndsWith => strings().iter().any(|s| value.ends_with(&fold(s))),
            Op::Contains => strings().iter().any(|s| value.contains(&fold(s))),
            Op::Eq => number(&value) == Some(target),
            Op::Lt => number(&value).is_some_and(|n| n < target),
            Op::Lte => number(&value).is_some_and(|n| n <= target),
            Op::Gt => number(&value).is_some_and(|n| n > target),
            Op::Gte => number(&value).is_some_and(|n| n >= target),
            op => {
                let (Some(v), Some(r)) = (version(&value), rule_version()) else { return false };
                let o = v.cmp_precedence(&r);
                match op {
                    Op::SemverEq => o.is_eq(),
                    Op::SemverLt => o.is_lt(),
                    Op::SemverLte => o.is_le(),
                    Op::SemverGt => o.is_gt(),
                    _ => o.is_ge(),
                }
            }
        }
    });
    matched != rule.negate
}

fn naive(config: &Config, key: &str, ctx: &Ctx, now_ms: i64) -> (bool, Option<String>, String) {
    naive_valued(config, key, ctx, now_ms).0
}

/// The decision, the variant, the reason's label, and the value.
type Decision = ((bool, Option<String>, String), Option<Value>);

fn naive_valued(config: &Config, key: &str, ctx: &Ctx, now_ms: i64) -> Decision {
    let Some(flag) = config.flags.get(key) else { return ((false, None, "unknown".into()), None) };
    let decided = naive_decide(config, flag, key, ctx, now_ms);
    let value = match (&decided.0, &decided.1) {
        (false, _) => None,
        (true, Some(name)) => {
            flag.variants.iter().find(|v| &v.name == name).and_then(|v| v.value.clone())
        }
        (true, None) => flag.value.clone(),
    };
    (decided, value)
}

fn naive_decide(
    config: &Config,
    flag: &flagstone::config::Flag,
    key: &str,
    ctx: &Ctx,
    now_ms: i64,
) -> (bool, Option<String>, String) {
    if !flag.enabled {
        return (false, None, "off".into());
    }
    let in_cohort = |name: &String| {
        let c = &config.cohorts[name];
        let list = |l: &Option<Vec<String>>, v: Option<&str>| match l {
            None => true,
            Some(l) => v.is_some_and(|v| l.iter().any(|x| x == v)),
        };
        list(&c.tenants, ctx.tenant.as_deref())
            && list(&c.users, ctx.user.as_deref())
            && list(&c.regions, ctx.region.as_deref())
            && c.attributes
                .iter()
                .flatten()
                .all(|(k, vs)| ctx.attr(k).is_some_and(|v| vs.iter().any(|x| x == v)))
            && c.rules.iter().flatten().all(|r| naive_rule(r, ctx))
    };
    // Prerequisites, read literally: each required flag on for the same
    // context (in the variant named).
    for req in &flag.requires {
        let (on, variant, _) = naive(config, &req.flag, ctx, now_ms);
        if !on || req.variant.as_ref().is_some_and(|v| variant.as_ref() != Some(v)) {
            return (false, None, "prerequisite".into());
        }
    }
    if flag.exclude.iter().any(in_cohort) {
        return (false, None, "excluded".into());
    }
    let salt = flag.salt.clone().unwrap_or_else(|| key.to_owned());
    let unit = ctx.value(
        flag.bucket_by.as_ref().and_then(|b| b.names().first()).map_or("user", String::as_str),
    );
    let exposed_by = if flag.stages.is_empty() {
        Some("on".to_owned())
    } else {
        let current =
            flag.stages.iter().position(|s| Some(&s.name) == flag.stage.as_ref()).expect("valid");
        flag.stages[..=current].iter().find_map(|s| {
            let audience = s.cohorts.is_empty() || s.cohorts.iter().any(in_cohort);
            let share = match s.percent {
                None => true,
                Some(p) => {
                    unit.is_some_and(|u| flagstone::bucket(&salt, u) < (p * 1000.0).round() as u32)
                }
            };
            let started = s.start_at.as_ref().is_none_or(|t| {
                let t: jiff::Timestamp = t.parse().expect("valid");
                now_ms >= t.as_millisecond()
            });
            (audience && share && started).then(|| s.name.clone())
        })
    };
    let Some(label) = exposed_by else { return (false, None, "not-exposed".into()) };
    let variant = (!flag.variants.is_empty()).then(|| match unit {
        None => flag.variants[0].name.clone(),
        Some(u) => {
            let weights: Vec<u32> = flag.variants.iter().map(|v| v.weight).collect();
            let i = flagstone::variant_index(&salt, u, &weights)
                .expect("weights add up to more than 0");
            flag.variants[i].name.clone()
        }
    });
    (true, variant, label)
}

const TENANTS: &[&str] = &["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"];
const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5"];
const REGIONS: &[&str] = &["eu", "us", "ap"];
const ATTRS: &[&str] = &["plan", "tier", "seats", "ver"];
const VALUES: &[&str] = &["a", "b", "c", "A", "5", "50", "1.2.3", "2.0.0-rc.1", "2.0.0", "v1"];
const TIMES: &[&str] = &["2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"];
const NOW: &str = "2026-03-01T00:00:00Z";

fn some_of(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::sample::subsequence(pool, 1..=pool.len().min(4))
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn rule() -> impl Strategy<Value = Value> {
    let ops = prop::sample::select(
        &[
            "in",
            "starts_with",
            "ends_with",
            "contains",
            "eq",
            "lt",
            "gte",
            "semver_eq",
            "semver_lt",
            "semver_gte",
        ][..],
    );
    (prop::sample::select(ATTRS), ops, some_of(VALUES), any::<bool>(), any::<bool>(), 0u32..100)
        .prop_map(|(attribute, op, values, negate, fold, number)| {
            let mut r = json!({ "attribute": attribute, "op": op, "negate": negate });
            match op {
                "in" => r["values"] = json!(values),
                "starts_with" | "ends_with" | "contains" => r["values"] = json!(values),
                "eq" | "lt" | "gte" => r["value"] = json!(number),
                _ => r["value"] = json!(["1.2.3", "2.0.0-rc.1", "2.0.0"][number as usize % 3]),
            }
            if fold && !op.starts_with("semver") && !matches!(op, "eq" | "lt" | "gte") {
                r["case_insensitive"] = json!(true);
            }
            r
        })
}

fn cohort() -> impl Strategy<Value = Value> {
    (
        prop::option::of(some_of(TENANTS)),
        prop::option::of(some_of(USERS)),
        prop::option::of(some_of(REGIONS)),
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(ATTRS),
            some_of(VALUES),
            1..=2,
        )),
        prop::option::of(prop::collection::vec(rule(), 1..=3)),
    )
        .prop_map(|(tenants, users, regions, attributes, rules)| {
            let mut c = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    c.insert(k.into(), v);
                }
            };
            put("tenants", tenants.map(|v| json!(v)));
            put("users", users.map(|v| json!(v)));
            put("regions", regions.map(|v| json!(v)));
            put("attributes", attributes.map(|v| json!(v)));
            put("rules", rules.map(|v| json!(v)));
            if c.is_empty() {
                c.insert("regions".into(), json!(["eu"]));
            }
            Value::Object(c)
        })
}

fn flag(cohort_count: usize) -> impl Strategy<Value = Value> {
    let names: Vec<String> = (0..cohort_count).map(|i| format!("c{i}")).collect();
    let refs = prop::sample::subsequence(names, 0..=cohort_count.min(2));
    let percent = prop_oneof![
        Just(None),
        Just(Some(0.0)),
        Just(Some(100.0)),
        (0u32..=100_000).prop_map(|t| Some(f64::from(t) / 1000.0)),
    ];
    let stage = (refs.clone(), percent, prop::option::of(prop::sample::select(TIMES)));
    (
        prop::bool::weighted(0.85),
        prop::option::of("[a-z]{1,6}"),
        prop::option::of(prop::sample::select(&["tenant", "user", "region", "plan"][..])),
        refs,
        prop::collection::vec(stage, 0..=4),
        any::<prop::sample::Index>(),
        prop::collection::vec((0u32..5, prop::option::of(0i64..100)), 0..=3),
        prop::option::of(0i64..100),
    )
        .prop_map(|(enabled, salt, bucket_by, exclude, stages, current, weights, value)| {
            let mut f = json!({ "enabled": enabled, "exclude": exclude });
            if let Some(s) = salt {
                f["salt"] = json!(s);
            }
            if let Some(b) = bucket_by {
                f["bucket_by"] = json!(b);
            }
            if !stages.is_empty() {
                let stages: Vec<Value> = stages
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cohorts, percent, start_at))| {
                        let mut s = json!({ "name": format!("s{i}"), "cohorts": cohorts });
                        if let Some(p) = percent {
                            s["percent"] = json!(p);
                        }
                        if let Some(t) = start_at {
                            s["start_at"] = json!(t);
                        }
                        s
                    })
                    .collect();
                f["stage"] = json!(format!("s{}", current.index(stages.len())));
                f["stages"] = json!(stages);
            }
            if weights.iter().any(|&(w, _)| w > 0) {
                let variants: Vec<Value> = weights
                    .iter()
                    .enumerate()
                    .map(|(i, (w, v))| {
                        let mut variant = json!({ "name": format!("v{i}"), "weight": w });
                        if let Some(v) = v {
                            variant["value"] = json!({ "n": v });
                        }
                        variant
                    })
                    .collect();
                f["variants"] = json!(variants);
            } else if let Some(v) = value {
                f["value"] = json!(v);
            }
            f
        })
}

fn config() -> impl Strategy<Value = String> {
    (1usize..=4).prop_flat_map(|n| {
        let requirement =
            (any::<prop::sample::Index>(), any::<bool>(), any::<prop::sample::Index>());
        (
            prop::collection::vec(cohort(), n),
            prop::collection::vec(flag(n), 1..=4),
            prop::collection::vec(prop::collection::vec(requirement, 0..=2), 4),
        )
            .prop_map(|(cohorts, mut flags, requires)| {
                // Each flag may require flags before it (no cycles), in a
                // variant of theirs when they have one.
                for i in 1..flags.len() {
                    let mut list = Vec::new();
                    for (which, with_variant, variant) in &requires[i] {
                        let j = which.index(i);
                        let name = format!("f{j}");
                        if list.iter().any(|r: &Value| r["flag"] == json!(name)) {
                            continue;
                        }
                        let mut r = json!({ "flag": name });
                        let count = flags[j]["variants"].as_array().map_or(0, Vec::len);
                        if *with_variant && count > 0 {
                            r["variant"] = json!(format!("v{}", variant.index(count)));
                        }
                        list.push(r);
                    }
                    if !list.is_empty() {
                        flags[i]["requires"] = json!(list);
                    }
                }
                let cohorts: serde_json::Map<String, Value> =
                    cohorts.into_iter().enumerate().map(|(i, c)| (format!("c{i}"), c)).collect();
                let flags: serde_json::Map<String, Value> =
                    flags.into_iter().enumerate().map(|(i, f)| (format!("f{i}"), f)).collect();
                json!({ "version": 1, "cohorts": cohorts, "flags": flags }).to_string()
            })
    })
}

fn ctx() -> impl Strategy<Value = Ctx> {
    (
        prop::option::of(prop::sample::select(TENANTS)),
        prop::option::of(prop::sample::select(USERS)),
        prop::option::of(prop::sample::select(REGIONS)),
        prop::collection::vec((prop::sample::select(ATTRS), prop::sample::select(VALUES)), 0..=3),
    )
        .prop_map(|(t, u, r, attrs)| Ctx {
            tenant: t.map(String::from),
            user: u.map(String::from),
            region: r.map(String::from),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The compiled evaluator agrees with the naive interpreter on every flag.
    #[test]
    fn compiled_evaluation_equals_the_naive_interpreter(
        json in config(),
        ctxs in prop::collection::vec(ctx(), 1..=8),
    ) {
        let config = Config::from_json(&json).expect("generated configs are valid");
        let clock = ManualClock::from_rfc3339(NOW).expect("time");
        let now = clock.now_millis_value();
        let clock = Arc::new(clock);
        let store = FlagStore::from_json(&json).expect("valid").with_clock(clock.clone());
        // Uncounted checks take their own shortcuts.
        let uncounted = FlagStore::new().without_metrics().with_clock(clock);
        uncounted.apply_json(&json).expect("valid");
        for c in &ctxs {
            for key in config.flags.keys().map(String::as_str).chain(["missing"]) {
                let ctx = c.context();
                let ev = store.evaluate(key, &ctx);
                let ((enabled, variant, label), value) = naive_valued(&config, key, c, now);
                prop_assert_eq!(ev.enabled, enabled, "{} for {:?}", key, c);
                prop_assert_eq!(ev.value.cloned(), value, "{} for {:?}", key, c);
                prop_assert_eq!(ev.variant.map(str::to_owned), variant, "{} for {:?}", key, c);
                prop_assert_eq!(ev.reason.label(), label.as_str(), "{} for {:?}", key, c);
                prop_assert_eq!(store.is_enabled(key, &ctx), enabled);
                prop_assert_eq!(uncounted.is_enabled(key, &ctx), enabled, "{} uncounted", key);
            }
        }
    }

    /// Any bytes: an error or a store, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let store = FlagStore::new();
        let _ = store.apply_json(&bytes);
        prop_assert_eq!(store.version(), 0);
    }

    /// Arbitrary JSON in the shape of a config, and arbitrary contexts: an
    /// error or answers, never a panic.
    #[test]
    fn arbitrary_configs_and_contexts_never_panic(
        json in config(),
        noise in prop::collection::vec(("\\PC{0,8}", prop::option::of(-1e3f64..1e3)), 0..4),
        strings in prop::collection::vec("\\PC{0,10}", 4),
    ) {
        // Mutate the valid config: invalid percents, dangling references.
        let mut value: Value = serde_json::from_str(&json).expect("json");
        for (i, (name, p)) in noise.iter().enumerate() {
            if let Some(f) = value["flags"].as_object_mut().and_then(|m| m.values_mut().nth(i)) {
                f["stages"] = json!([{ "name": name, "percent": p, "cohorts": [name] }]);
                f["stage"] = json!(name);
            }
        }
        let store = FlagStore::new();
        let _ = store.apply_json(value.to_string());
        let ctx = Context::new().tenant(&strings[0]).user(&strings[1]).region(&strings[2])
            .attr(&strings[3], &strings[0]);
        for key in ["f0", "f1", "f2", "f3", "", &strings[1]] {
            let _ = store.evaluate(key, &ctx);
        }
    }
}
