//! Unleash client-features documents (format versions 1 and 2, and the
//! delta API's events) converted to a flagstone config.
//!
//! The mapping, feature by feature:
//!
//! - `enabled: false` is the kill switch;
//! - each strategy is a stage, in order (stages are cumulative, so any one
//!   strategy enables, and the first that matches picks the strategy
//!   variants, as in Unleash); the current stage is the last;
//! - a strategy's constraints, and those of its segments, are the rules of
//!   a cohort of its own (a strategy with one segment and nothing else uses
//!   the segment's cohort, `segment-{id}`); `userWithId` lists users;
//!   `remoteAddress` is an `in_cidr` rule on `remoteAddress`;
//! - rollouts are percentages with `"bucketing": "unleash"`, the stage's
//!   `salt` the strategy's `groupId` and its `bucket_by` the stickiness
//!   (`default` is `["user", "sessionId"]`);
//! - variants carry their payloads as values (`json` parsed, `number` a
//!   number, others strings), overrides as pinned cohorts, strategy
//!   variants as the stage's own;
//! - dependencies are `requires`.
//!
//! What Unleash leaves to chance (a `random` stickiness, the random
//! fallback of `default`) becomes deterministic, and every such change is
//! a warning naming the feature.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Import;
use crate::config::{
    BucketBy, Bucketing, Cohort, Config, Flag, Operator, Requirement, Rule, Stage, Variant,
};
use crate::context::ContextBuf;
use crate::error::{Error, Problem};

/// Converts an Unleash client-features document (`{ "version", "features",
/// "segments" }`, or the delta API's `{ "events": [...] }`) into a
/// flagstone config that decides the same for every context.
///
/// Anything converted with a change (Unleash's random choices made
/// deterministic, a strategy flagstone cannot evaluate, a value that does
/// not parse) is a warning naming the feature and why; nothing changes
/// silently. Fails when the document is not an Unleash features document,
/// with the path of what is wrong.
///
/// # Example
///
/// ```
/// use flagstone::{FlagStore, import};
///
/// let imported = import::unleash(r#"{ "version": 1, "features": [
///     { "name": "new-checkout", "enabled": true, "strategies": [
///         { "name": "flexibleRollout",
///           "parameters": { "rollout": "50", "stickiness": "userId", "groupId": "new-checkout" } } ] } ] }"#)?;
/// assert!(imported.warnings.is_empty());
/// let store = FlagStore::new();
/// store.apply_config(&imported.config)?;
/// // Unleash's own vectors: user 122 is at 23 of 100, user 155 at 100.
/// let ctx = |user: &str| import::unleash_context(&serde_json::json!({ "userId": user }));
/// assert_eq!(
///     flagstone::unleash_normalized_hash("new-checkout", "122", 100, 0) <= 50,
///     store.is_enabled("new-checkout", &ctx("122").as_context())
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn unleash(json: impl AsRef<[u8]>) -> Result<Import, Error> {
    let json = json.as_ref();
    let json = json.strip_prefix(b"\xef\xbb\xbf").unwrap_or(json);
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| Error::invalid(vec![Problem::new("", format!("not JSON: {e}"))]))?;
    let (features, segments) = read_document(value)?;
    let mut import = Importer::new(&features, &segments);
    for feature in &features {
        import.feature(feature);
    }
    let config = Config { schema: None, version: 1, cohorts: import.cohorts, flags: import.flags };
    config.validate()?;
    Ok(Import { config, warnings: import.warnings })
}

/// Maps an Unleash context onto a flagstone one: `userId` is the user;
/// `sessionId`, `remoteAddress`, `environment`, `appName` and
/// `currentTime` are attributes of those names, as is each
/// `properties.X` (and any other top-level field, as Unleash's SDKs
/// treat them), except that `tenant` and `region` set flagstone's tenant
/// and region (which rules and `bucket_by` of those names read). Numbers
/// and booleans become their text; `null` is absent.
///
/// Without `currentTime` the context gets the current time, as Unleash's
/// SDKs fill it in for date constraints (which the importer turns into
/// rules on `currentTime`).
///
/// # Example
///
/// ```
/// let ctx = flagstone::import::unleash_context(&serde_json::json!({
///     "userId": "u-42", "environment": "prod", "properties": { "plan": "pro", "seats": 50 }
/// }));
/// let ctx = ctx.as_context();
/// assert_eq!(ctx.get_user(), Some("u-42"));
/// assert_eq!(ctx.get_attr("plan"), Some("pro"));
/// assert_eq!(ctx.get_attr("seats"), Some("50"));
/// assert!(ctx.get_attr("currentTime").is_some());
/// ```
pub fn unleash_context(context: &Value) -> ContextBuf {
    let mut ctx = ContextBuf::new();
    let Some(fields) = context.as_object() else { return ctx };
    let set = |ctx: &mut ContextBuf, key: &str, value: &Value| {
        let Some(text) = text_of(value) else { return };
        // flagstone's own fields: a rule or a bucket_by on "tenant" reads
        // the tenant, so a property of that name sets it.
        match key {
            "userId" => *ctx = std::mem::take(ctx).user(text),
            "tenant" => *ctx = std::mem::take(ctx).tenant(text),
            "region" => *ctx = std::mem::take(ctx).region(text),
            _ => ctx.set_attr(key, text),
        }
    };
    for (key, value) in fields {
        if key != "properties" {
            set(&mut ctx, key, value);
        }
    }
    // Properties last: where a property and a field share a name, Unleash
    // reads the field for the known names and the property otherwise.
    if let Some(properties) = fields.get("properties").and_then(Value::as_object) {
        for (key, value) in properties {
            if !KNOWN_FIELDS.contains(&key.as_str()) || fields.get(key).is_none_or(Value::is_null) {
                set(&mut ctx, key, value);
            }
        }
    }
    if ctx.as_context().get_attr("currentTime").is_none() {
        let now = crate::clock::SystemClock.now_millis();
        ctx.set_attr("currentTime", crate::clock::format_rfc3339_millis(now));
    }
    ctx
}

use crate::clock::Clock as _;

/// The context fields Unleash knows by name.
const KNOWN_FIELDS: [&str; 6] =
    ["userId", "sessionId", "remoteAddress", "environment", "appName", "currentTime"];

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// The document, as Unleash's client API serves it. Fields flagstone does
// not need (project, type, stale, impressionData, ...) are ignored.

#[derive(Deserialize, Clone)]
struct Feature {
    name: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    strategies: Vec<Strategy>,
    #[serde(default, deserialize_with = "or_empty")]
    variants: Vec<FeatureVariant>,
    #[serde(default, deserialize_with = "or_empty")]
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize, Clone)]
struct Strategy {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "or_empty")]
    constraints: Vec<Constraint>,
    #[serde(default, deserialize_with = "or_empty")]
    segments: Vec<i64>,
    #[serde(default, deserialize_with = "or_empty")]
    variants: Vec<FeatureVariant>,
    #[serde(default)]
    disabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Constraint {
    context_name: String,
    operator: String,
    #[serde(default)]
    values: Option<Vec<Value>>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    inverted: bool,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct FeatureVariant {
    name: String,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default)]
    stickiness: Option<String>,
    #[serde(default, deserialize_with = "or_empty")]
    overrides: Vec<VariantOverride>,
}

#[derive(Deserialize, Clone)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    value: Value,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct VariantOverride {
    context_name: String,
    #[serde(default)]
    values: Vec<Value>,
}

#[derive(Deserialize, Clone)]
struct Dependency {
    feature: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    variants: Option<Vec<String>>,
}

#[derive(Deserialize, Clone)]
struct Segment {
    id: i64,
    #[serde(default, deserialize_with = "or_empty")]
    constraints: Vec<Constraint>,
}

/// `null` reads as an empty list (Unleash's server sends both).
fn or_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

/// The features and segments of a full document, or of a delta document's
/// events applied in order.
fn read_document(value: Value) -> Result<(Vec<Feature>, BTreeMap<i64, Segment>), Error> {
    let not_unleash = |path: &str, what: String| Error::invalid(vec![Problem::new(path, what)]);
    let Value::Object(mut top) = value else {
        return Err(not_unleash(
            "",
            "expected an object with a \"features\" list (or the delta API's \"events\")".into(),
        ));
    };
    if let Some(events) = top.remove("events") {
        let Value::Array(events) = events else {
            return Err(not_unleash("events", "expected a list of events".into()));
        };
        let mut features: Vec<Feature> = Vec::new();
        let mut segments = BTreeMap::new();
        for (i, event) in events.into_iter().enumerate() {
            let at = format!("events[{i}]");
            let kind = event.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            match kind.as_str() {
                "hydration" => {
                    features = parse(&at, "features", event.get("features"))?.unwrap_or_default();
                    let list: Vec<Segment> =
                        parse(&at, "segments", event.get("segments"))?.unwrap_or_default();
                    segments = list.into_iter().map(|s| (s.id, s)).collect();
                }
                "feature-updated" => {
                    let Some(feature) = parse::<Feature>(&at, "feature", event.get("feature"))?
                    else {
                        return Err(not_unleash(&format!("{at}.feature"), "missing".into()));
                    };
                    match features.iter_mut().find(|f| f.name == feature.name) {
                        Some(slot) => *slot = feature,
                        None => features.push(feature),
                    }
                }
                "feature-removed" => {
                    let name = event.get("featureName").and_then(Value::as_str);
                    features.retain(|f| Some(f.name.as_str()) != name);
                }
                "segment-updated" => {
                    if let Some(segment) = parse::<Segment>(&at, "segment", event.get("segment"))? {
                        segments.insert(segment.id, segment);
                    }
                }
                "segment-removed" => {
                    if let Some(id) = event.get("segmentId").and_then(Value::as_i64) {
                        segments.remove(&id);
                    }
                }
                other => {
                    return Err(not_unleash(
                        &format!("{at}.type"),
                        format!("unknown event type {other:?}"),
                    ));
                }
            }
        }
        return Ok((features, segments));
    }
    let Some(list) = top.remove("features") else {
        return Err(not_unleash(
            "",
            "it has no \"features\" list (nor the delta API's \"events\")".into(),
        ));
    };
    let features: Vec<Feature> = parse("", "features", Some(&list))?.unwrap_or_default();
    let segments: Vec<Segment> = parse("", "segments", top.get("segments"))?.unwrap_or_default();
    Ok((features, segments.into_iter().map(|s| (s.id, s)).collect()))
}

/// Reads `value` (at `at`.`field`) as a `T`, with the path of what broke.
fn parse<T: for<'de> Deserialize<'de>>(
    at: &str,
    field: &str,
    value: Option<&Value>,
) -> Result<Option<T>, Error> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    serde_path_to_error::deserialize(value).map(Some).map_err(|e| {
        let inner = e.path().to_string();
        let path = [at, field, inner.trim_start_matches('.')]
            .iter()
            .filter(|p| !p.is_empty() && **p != ".")
            .copied()
            .collect::<Vec<_>>()
            .join(".")
            .replace(".[", "[");
        Error::invalid(vec![Problem::new(path, e.into_inner().to_string())])
    })
}

/// A constraint (or a strategy) that can never hold: the stage exposes no
/// one. The text says why, for the warning.
struct Never(String);

/// What the stages of one feature need to know about the others.
struct Importer<'d> {
    features: BTreeMap<&'d str, &'d Feature>,
    segments: &'d BTreeMap<i64, Segment>,
    cohorts: BTreeMap<String, Cohort>,
    flags: BTreeMap<String, Flag>,
    warnings: Vec<String>,
}

impl<'d> Importer<'d> {
    fn new(features: &'d [Feature], segments: &'d BTreeMap<i64, Segment>) -> Self {
        Self {
            features: features.iter().map(|f| (f.name.as_str(), f)).collect(),
            segments,
            cohorts: BTreeMap::new(),
            flags: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, feature: &str, what: impl std::fmt::Display) {
        self.warnings.push(format!("feature {feature:?}: {what}"));
    }

    fn feature(&mut self, feature: &Feature) {
        let name = feature.name.as_str();
        // Feature variants: the flag's, hashed with the feature's name and
        // the first variant's stickiness.
        let stickiness = feature.variants.first().and_then(|v| v.stickiness.as_deref());
        let flag_unit = units_of(stickiness.unwrap_or("default"));
        let variants = self.variants(name, &feature.variants, true);
        self.warn_random_variants(name, "the feature variants", stickiness, &variants);
        let strategies: Vec<(usize, &Strategy)> = feature
            .strategies
            .iter()
            .enumerate()
            .filter(|(_, s)| s.disabled != Some(true))
            .collect();
        let mut stages = Vec::new();
        for &(i, strategy) in &strategies {
            stages.push(self.strategy(feature, i, strategy));
        }
        // The flag's salt and unit: its variants', or (without variants) the
        // first rollout's, so that stages hashing alike need none of their
        // own (and a plain rollout takes the fast path).
        let (flag_salt, flag_unit) = if feature.variants.is_empty()
            && let Some(first) = stages.iter().find(|s| s.bucket_by.is_some())
        {
            (
                first.salt.clone().unwrap_or_else(|| name.to_owned()),
                first.bucket_by.clone().unwrap_or(flag_unit),
            )
        } else {
            (name.to_owned(), flag_unit)
        };
        for stage in &mut stages {
            if stage.salt.as_deref() == Some(flag_salt.as_str()) {
                stage.salt = None;
            }
            if stage.bucket_by.as_ref() == Some(&flag_unit) {
                stage.bucket_by = None;
            }
        }
        if strategies.is_empty() && !feature.strategies.is_empty() {
            self.warn(name, "every strategy is disabled: the flag is off");
            stages.push(never_stage("disabled"));
        }
        let (enabled, requires) = self.dependencies(feature);
        let flag = Flag {
            enabled: feature.enabled && enabled,
            salt: (flag_salt != name).then_some(flag_salt),
            bucket_by: Some(flag_unit),
            bucketing: Bucketing::Unleash,
            exclude: Vec::new(),
            stage: stages.last().map(|s: &Stage| s.name.clone()),
            stages,
            variants,
            value: None,
            requires,
            guard: None,
            rollout: None,
            migration: false,
        };
        self.flags.insert(name.to_owned(), flag);
    }

    /// A strategy as a stage.
    fn strategy(&mut self, feature: &Feature, i: usize, strategy: &Strategy) -> Stage {
        let name = feature.name.as_str();
        let stage_name = format!("{}-{}", strategy.name, i + 1);
        let param =
            |key: &str| strategy.parameters.as_ref().and_then(|p| p.get(key)).and_then(text_of);
        let group = param("groupId").unwrap_or_else(|| name.to_owned());
        // The unit the strategy's percentage and its variants count.
        let stickiness = param("stickiness");
        let mut unit = units_of(stickiness.as_deref().unwrap_or("default"));
        let built = self
            .rule_of_strategy(feature, strategy, &stage_name, &mut unit)
            .and_then(|shape| self.constrained(strategy, shape));
        let shape = match built {
            Ok(shape) => shape,
            Err(Never(why)) => {
                let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                self.warn(
                    name,
                    format!(
                        "strategy {stage_name} can never match, in Unleash either ({why}): it exposes no one"
                    ),
                );
                return never_stage(&stage_name);
            }
        };
        let variants = self.variants(name, &strategy.variants, false);
        let which = format!("strategy {stage_name}'s variants");
        self.warn_random_variants(name, &which, stickiness.as_deref(), &variants);
        let hashes = shape.percent.is_some() || !variants.is_empty();
        let mut stage = Stage {
            name: stage_name.clone(),
            cohorts: Vec::new(),
            percent: shape.percent,
            start_at: None,
            // Made relative to the flag's once every stage is known.
            salt: hashes.then_some(group),
            bucket_by: hashes.then_some(unit),
            variants,
            hold: None,
            windows: Vec::new(),
            manual: false,
            step: None,
        };
        if let Some(segment) = shape.segment {
            stage.cohorts.push(segment);
        } else if shape.users.is_some() || !shape.rules.is_empty() {
            let cohort = format!("{name}/{stage_name}");
            stage.cohorts.push(cohort.clone());
            let rules = (!shape.rules.is_empty()).then_some(shape.rules);
            self.cohorts.insert(cohort, Cohort { users: shape.users, rules, ..Cohort::default() });
        }
        stage
    }

    /// A strategy's shape with its constraints, and its segments', added:
    /// a strategy of one segment and nothing else uses the segment's own
    /// cohort.
    fn constrained(&mut self, strategy: &Strategy, mut shape: Shape) -> Result<Shape, Never> {
        for (j, c) in strategy.constraints.iter().enumerate() {
            if let Some(rule) =
                constraint(c).map_err(|Never(why)| Never(format!("constraints[{j}]: {why}")))?
            {
                shape.rules.push(rule);
            }
        }
        let mut gathered = Vec::new();
        for id in &strategy.segments {
            let segment = self
                .segments
                .get(id)
                .ok_or_else(|| Never(format!("segment {id} does not exist")))?;
            for (j, c) in segment.constraints.iter().enumerate() {
                let rule = constraint(c)
                    .map_err(|Never(why)| Never(format!("segment {id} constraints[{j}]: {why}")))?;
                gathered.extend(rule);
            }
        }
        if let [id] = strategy.segments.as_slice()
            && shape.rules.is_empty()
            && shape.users.is_none()
            && !gathered.is_empty()
        {
            let cohort = format!("segment-{id}");
            self.cohorts
                .entry(cohort.clone())
                .or_insert_with(|| Cohort { rules: Some(gathered), ..Cohort::default() });
            shape.segment = Some(cohort);
            return Ok(shape);
        }
        shape.rules.extend(gathered);
        Ok(shape)
    }

    /// A strategy's own rule: who it lets through, before constraints.
    fn rule_of_strategy(
        &mut self,
        feature: &Feature,
        strategy: &Strategy,
        stage: &str,
        unit: &mut BucketBy,
    ) -> Result<Shape, Never> {
        let name = feature.name.as_str();
        let param =
            |key: &str| strategy.parameters.as_ref().and_then(|p| p.get(key)).and_then(text_of);
        let percentage = |key: &str| -> Result<u32, Never> {
            let text = param(key).ok_or_else(|| Never(format!("no {key}")))?;
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| Never(format!("{key} {text:?} is not a whole percentage")))
        };
        let mut shape = Shape::default();
        match strategy.name.as_str() {
            "default" => {}
            "userWithId" => {
                let ids = param("userIds").ok_or_else(|| Never("no userIds".into()))?;
                let ids: Vec<String> = ids
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if ids.is_empty() {
                    return Err(Never("an empty userIds".into()));
                }
                shape.users = Some(ids);
            }
            "gradualRolloutUserId" | "gradualRolloutSessionId" => {
                let p = percentage("percentage")?;
                if param("groupId").is_none() {
                    return Err(Never("no groupId".into()));
                }
                let by = if strategy.name == "gradualRolloutUserId" { "user" } else { "sessionId" };
                *unit = BucketBy::One(by.to_owned());
                shape.percent = Some(f64::from(p));
            }
            "gradualRolloutRandom" => {
                let p = percentage("percentage")?;
                *unit = default_units();
                if p == 0 {
                    // Exposes no one, in Unleash too.
                    shape.percent = Some(0.0);
                } else if p < 100 {
                    self.warn(
                        name,
                        format!(
                            "strategy {stage}: gradualRolloutRandom at {p}% picks at random on \
                             every check; converted to a sticky {p}% of userId, else sessionId \
                             (contexts with neither are off)"
                        ),
                    );
                    shape.percent = Some(f64::from(p));
                }
            }
            "flexibleRollout" => {
                let p = percentage("rollout")?;
                let stickiness = param("stickiness").unwrap_or_else(|| "default".to_owned());
                let random = matches!(stickiness.as_str(), "default" | "random");
                if p == 0 {
                    // Exposes no one, in Unleash too.
                    shape.percent = Some(0.0);
                } else if random && p == 100 {
                    // On for everyone, with a unit or without, as in Unleash.
                } else {
                    if stickiness == "random" {
                        self.warn(
                            name,
                            format!(
                                "strategy {stage}: random stickiness picks at random on every \
                                 check; converted to a sticky {p}% of userId, else sessionId"
                            ),
                        );
                    } else if stickiness == "default" {
                        self.warn(
                            name,
                            format!(
                                "strategy {stage}: contexts with neither userId nor sessionId are \
                                 off (Unleash puts {p}% of them in at random)"
                            ),
                        );
                    }
                    shape.percent = Some(f64::from(p));
                }
            }
            "remoteAddress" => {
                let ips = param("IPs").ok_or_else(|| Never("no IPs".into()))?;
                let mut networks = Vec::new();
                for entry in ips.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if network_ok(entry) {
                        networks.push(Value::String(entry.to_owned()));
                    } else {
                        self.warn(name, format!("strategy {stage}: {entry:?} is not an IP address or network; skipped, as Unleash skips it"));
                    }
                }
                if networks.is_empty() {
                    return Err(Never("no valid IP address".into()));
                }
                shape.rules.push(rule("remoteAddress", Operator::InCidr, None, Some(networks)));
            }
            "applicationHostname" => {
                let hosts = param("hostNames").unwrap_or_default();
                let hosts: Vec<Value> = hosts
                    .split(',')
                    .map(|h| h.trim().to_lowercase())
                    .filter(|h| !h.is_empty())
                    .map(Value::String)
                    .collect();
                if hosts.is_empty() {
                    return Err(Never("no hostNames".into()));
                }
                self.warn(
                    name,
                    format!(
                        "strategy {stage}: applicationHostname matches the host's name, which \
                         flagstone reads from the context's attribute \"hostname\" (set it)"
                    ),
                );
                let mut r = rule("hostname", Operator::In, None, Some(hosts));
                r.case_insensitive = true;
                shape.rules.push(r);
            }
            other => {
                return Err(Never(format!(
                    "strategy {other:?} is not one of Unleash's built-in strategies"
                )));
            }
        }
        Ok(shape)
    }

    /// Says so when Unleash would pick among `variants` at random.
    fn warn_random_variants(
        &mut self,
        feature: &str,
        which: &str,
        stickiness: Option<&str>,
        variants: &[Variant],
    ) {
        if variants.iter().filter(|v| v.weight > 0).count() < 2 {
            return;
        }
        match stickiness.unwrap_or("default") {
            "random" => self.warn(
                feature,
                format!("{which}: random stickiness picks a variant at random on every check; converted to userId, else sessionId"),
            ),
            "default" => self.warn(
                feature,
                format!("{which}: contexts with neither userId nor sessionId get the first variant (Unleash picks one at random)"),
            ),
            _ => {}
        }
    }

    /// Variants, their payloads as values, overrides as pinned cohorts.
    fn variants(
        &mut self,
        feature: &str,
        variants: &[FeatureVariant],
        overrides: bool,
    ) -> Vec<Variant> {
        if variants.iter().all(|v| v.weight == 0) {
            if !variants.is_empty() {
                self.warn(feature, "the variants' weights add up to 0: no variant is handed out");
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        for v in variants {
            let value = v.payload.as_ref().map(|p| self.payload(feature, &v.name, p));
            let mut cohorts = Vec::new();
            if overrides {
                for (k, o) in v.overrides.iter().enumerate() {
                    let values: Vec<Value> =
                        o.values.iter().filter_map(text_of).map(Value::String).collect();
                    if values.is_empty() {
                        continue;
                    }
                    let cohort = format!("{feature}/{}/override-{}", v.name, k + 1);
                    let r = rule(attribute_of(&o.context_name), Operator::In, None, Some(values));
                    self.cohorts.insert(
                        cohort.clone(),
                        Cohort { rules: Some(vec![r]), ..Cohort::default() },
                    );
                    cohorts.push(cohort);
                }
            }
            out.push(Variant { name: v.name.clone(), weight: v.weight, value, cohorts });
        }
        out
    }

    /// A payload as a typed value: `json` parsed, `number` a number, the
    /// rest (`string`, `csv`) the text.
    fn payload(&mut self, feature: &str, variant: &str, payload: &Payload) -> Value {
        let text = match &payload.value {
            Value::String(s) => s.clone(),
            other => return other.clone(),
        };
        match payload.kind.as_str() {
            "json" => serde_json::from_str(&text).unwrap_or_else(|_| {
                self.warn(
                    feature,
                    format!("variant {variant:?}: the json payload does not parse; kept as text"),
                );
                Value::String(text)
            }),
            "number" => {
                match text.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => {
                        // Whole numbers stay integers, as they were written.
                        match text.trim().parse::<i64>() {
                            Ok(i) => Value::from(i),
                            Err(_) => Value::Number(n),
                        }
                    }
                    None => {
                        self.warn(feature, format!("variant {variant:?}: the number payload {text:?} does not parse; kept as text"));
                        Value::String(text)
                    }
                }
            }
            _ => Value::String(text),
        }
    }

    /// Dependencies as `requires`, and whether they can be met at all.
    fn dependencies(&mut self, feature: &Feature) -> (bool, Vec<Requirement>) {
        let name = feature.name.as_str();
        let mut requires = Vec::new();
        for dep in &feature.dependencies {
            let Some(parent) = self.features.get(dep.feature.as_str()).copied() else {
                self.warn(
                    name,
                    format!(
                        "it depends on {:?}, which does not exist: the flag is off, as in Unleash",
                        dep.feature
                    ),
                );
                return (false, Vec::new());
            };
            if !parent.dependencies.is_empty() {
                self.warn(name, format!("it depends on {:?}, which has dependencies of its own: Unleash allows one level, so the flag is off", dep.feature));
                return (false, Vec::new());
            }
            let on = dep.enabled.unwrap_or(true);
            let wanted = dep.variants.clone().unwrap_or_default();
            if !on || wanted.is_empty() {
                let mut r = Requirement::on(&dep.feature);
                r.enabled = on;
                requires.push(r);
                continue;
            }
            let known: BTreeSet<&str> = parent
                .variants
                .iter()
                .chain(parent.strategies.iter().flat_map(|s| &s.variants))
                .filter(|v| v.weight > 0)
                .map(|v| v.name.as_str())
                .collect();
            if known.is_empty() && wanted.iter().any(|v| v == "disabled") {
                // A parent without variants answers "disabled" when on.
                requires.push(Requirement::on(&dep.feature));
                continue;
            }
            let variants: Vec<String> =
                wanted.iter().filter(|v| known.contains(v.as_str())).cloned().collect();
            if variants.is_empty() {
                self.warn(name, format!("it requires {:?} in variants {wanted:?}, which it never hands out: the flag is off", dep.feature));
                return (false, Vec::new());
            }
            let mut r = Requirement::on(&dep.feature);
            r.variants = variants;
            requires.push(r);
        }
        (true, requires)
    }
}

/// What a strategy's own rule comes to.
#[derive(Default)]
struct Shape {
    users: Option<Vec<String>>,
    rules: Vec<Rule>,
    percent: Option<f64>,
    /// The cohort of the strategy's one segment, when it is all there is.
    segment: Option<String>,
}

/// A stage that exposes no one (a percentage of 0).
fn never_stage(name: &str) -> Stage {
    Stage {
        name: name.to_owned(),
        cohorts: Vec::new(),
        percent: Some(0.0),
        start_at: None,
        salt: None,
        bucket_by: None,
        variants: Vec::new(),
        hold: None,
        windows: Vec::new(),
        manual: false,
        step: None,
    }
}

/// What a stickiness counts: `default` (and `random`, made sticky) is
/// userId, else sessionId.
fn units_of(stickiness: &str) -> BucketBy {
    match stickiness {
        "default" | "random" => default_units(),
        name => BucketBy::One(attribute_of(name).to_owned()),
    }
}

/// Unleash's `default` stickiness without its random fallback.
fn default_units() -> BucketBy {
    BucketBy::FirstOf(vec!["user".to_owned(), "sessionId".to_owned()])
}

/// The flagstone attribute of an Unleash context field.
fn attribute_of(context_name: &str) -> &str {
    if context_name == "userId" { "user" } else { context_name }
}

fn rule(attribute: &str, op: Operator, value: Option<Value>, values: Option<Vec<Value>>) -> Rule {
    Rule {
        attribute: attribute.to_owned(),
        op,
        value,
        values,
        negate: false,
        case_insensitive: false,
    }
}

fn network_ok(entry: &str) -> bool {
    let (address, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let Ok(address) = address.trim().parse::<std::net::IpAddr>() else { return false };
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.trim().parse::<u32>().is_ok_and(|p| p <= max))
}

/// A constraint as a rule: `Ok(None)` when it always holds, `Err` when it
/// never does.
fn constraint(c: &Constraint) -> Result<Option<Rule>, Never> {
    let attribute = attribute_of(&c.context_name);
    let values: Vec<Value> =
        c.values.iter().flatten().filter_map(text_of).map(Value::String).collect();
    let single = || -> Result<String, Never> {
        c.value
            .as_ref()
            .and_then(text_of)
            .ok_or_else(|| Never(format!("{} has no value", c.operator)))
    };
    // A list operator over an empty list: never true for a present value,
    // nor for a missing one; `NOT_IN` is its negation.
    let over_list = |op: Operator, negate: bool| -> Result<Option<Rule>, Never> {
        if values.is_empty() {
            // The operator is false for everyone; NOT_IN (negate) true.
            return if negate != c.inverted {
                Ok(None)
            } else {
                Err(Never(format!("{} over no values", c.operator)))
            };
        }
        let mut r = rule(attribute, op, None, Some(values.clone()));
        r.negate = negate != c.inverted;
        r.case_insensitive = c.case_insensitive && op != Operator::In;
        Ok(Some(r))
    };
    let scalar = |op: Operator, value: Value| -> Result<Option<Rule>, Never> {
        let mut r = rule(attribute, op, Some(value), None);
        r.negate = c.inverted;
        Ok(Some(r))
    };
    match c.operator.as_str() {
        "IN" => over_list(Operator::In, false),
        "NOT_IN" => over_list(Operator::In, true),
        "STR_STARTS_WITH" => over_list(Operator::StartsWith, false),
        "STR_ENDS_WITH" => over_list(Operator::EndsWith, false),
        "STR_CONTAINS" => over_list(Operator::Contains, false),
        op @ ("NUM_EQ" | "NUM_GT" | "NUM_GTE" | "NUM_LT" | "NUM_LTE") => {
            let text = single()?;
            let number = text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .ok_or_else(|| Never(format!("{op} value {text:?} is not a number")))?;
            let op = match op {
                "NUM_EQ" => Operator::Eq,
                "NUM_GT" => Operator::Gt,
                "NUM_GTE" => Operator::Gte,
                "NUM_LT" => Operator::Lt,
                _ => Operator::Lte,
            };
            scalar(op, Value::Number(number))
        }
        op @ ("DATE_AFTER" | "DATE_BEFORE") => {
            let text = single()?;
            crate::clock::parse_rfc3339_millis(&text)
                .map_err(|e| Never(format!("{op} value {text:?}: {e}")))?;
            let op = if op == "DATE_AFTER" { Operator::After } else { Operator::Before };
            scalar(op, Value::String(text))
        }
        op @ ("SEMVER_EQ" | "SEMVER_GT" | "SEMVER_GTE" | "SEMVER_LT" | "SEMVER_LTE") => {
            let text = single()?;
            if text.starts_with('v') || semver::Version::parse(&text).is_err() {
                return Err(Never(format!("{op} value {text:?} is not a semantic version")));
            }
            let op = match op {
                "SEMVER_EQ" => Operator::SemverEq,
                "SEMVER_GT" => Operator::SemverGt,
                "SEMVER_GTE" => Operator::SemverGte,
                "SEMVER_LT" => Operator::SemverLt,
                _ => Operator::SemverLte,
            };
            scalar(op, Value::String(text))
        }
        "REGEX" => {
            let pattern = single()?;
            let mut r = rule(attribute, Operator::Matches, Some(Value::String(pattern)), None);
            r.negate = c.inverted;
            r.case_insensitive = c.case_insensitive;
            if let Err((_, why)) = crate::rules::CompiledRule::new(&r) {
                return Err(Never(format!("REGEX: {why}")));
            }
            Ok(Some(r))
        }
        "IN_CIDR" => {
            let networks: Vec<Value> =
                values.iter().filter(|v| v.as_str().is_some_and(network_ok)).cloned().collect();
            if networks.is_empty() {
                return if c.inverted {
                    Ok(None)
                } else {
                    Err(Never("IN_CIDR over no valid network".into()))
                };
            }
            let mut r = rule(attribute, Operator::InCidr, None, Some(networks));
            r.negate = c.inverted;
            Ok(Some(r))
        }
        other => Err(Never(format!("operator {other:?} is not one Unleash knows"))),
    }
}
