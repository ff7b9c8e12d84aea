//! The fleet's evidence from Prometheus' HTTP API (`/api/v1/query`): the
//! guard gauges every instance exports, summed over instances by PromQL.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::Duration;

use serde_json::Value;

use super::controller::EvidenceSource;
use super::decide::{FlagEvidence, StageEvidence};
use crate::observe::FLAG_LABEL;
use crate::observe::evidence::UnitRates;

/// Reads the fleet's guard evidence from a Prometheus server.
///
/// Each round runs six instant queries (`docs/rollout.md` lists them):
/// the guard gauges summed by flag, stage and group; the age of each
/// stage's oldest newest sample; how many instances report it; guard trips
/// on the versions served; the oldest and the newest version served.
///
/// ```no_run
/// use flagstone::rollout::{EvidenceSource as _, Prometheus};
///
/// let mut prometheus = Prometheus::new("http://127.0.0.1:9090").selector(r#"job="checkout""#);
/// for (flag, evidence) in prometheus.evidence()? {
///     println!("{flag}: {:?}", evidence.stages.keys().collect::<Vec<_>>());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Prometheus {
    base: String,
    selector: String,
    agent: ureq::Agent,
    timeout: Duration,
}

impl Prometheus {
    /// The server at `url` (such as `http://127.0.0.1:9090`).
    pub fn new(url: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .build()
            .new_agent();
        let base = url.into().trim_end_matches('/').to_owned();
        Self { base, selector: String::new(), agent, timeout: Duration::from_secs(10) }
    }

    /// Label matchers every series must carry, such as `job="checkout"`,
    /// so that one Prometheus can serve several fleets.
    #[must_use]
    pub fn selector(mut self, matchers: impl Into<String>) -> Self {
        self.selector = matchers.into();
        self
    }

    /// The time allowed for each query (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `{a, b}` with the selector's matchers added.
    fn matchers(&self, own: &str) -> String {
        match (own.is_empty(), self.selector.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{{{own}}}"),
            (true, false) => format!("{{{}}}", self.selector),
            (false, false) => format!("{{{own},{}}}", self.selector),
        }
    }

    /// The PromQL the source runs, in order.
    pub fn queries(&self) -> [String; 6] {
        let exposed = self.matchers(r#"group="exposed""#);
        [
            format!(
                "sum by (__name__, feature_flag_key, stage, group) ({})",
                self.matchers(r#"__name__=~"flagstone_guard_unit.*""#)
            ),
            format!(
                "max by (feature_flag_key, stage) (time() - timestamp(flagstone_guard_units{exposed}))"
            ),
            format!("count by (feature_flag_key, stage) (flagstone_guard_units{exposed})"),
            format!(
                "sum by (feature_flag_key, stage) (flagstone_guard_stepped_back{})",
                self.matchers("")
            ),
            format!("min(flagstone_config_version{})", self.matchers("")),
            format!("max(flagstone_config_version{})", self.matchers("")),
        ]
    }

    /// One instant query: its samples, labels and value.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let url = format!("{}/api/v1/query", self.base);
        let mut response = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(self.timeout))
            .build()
            .send_form([("query", promql)])
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let mut text = Vec::new();
        response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .reader()
            .read_to_end(&mut text)
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        let value: Value = serde_json::from_slice(&text).map_err(|_| {
            format!("{url}: HTTP {status}, not JSON: {}", String::from_utf8_lossy(&text))
        })?;
        if value["status"] != "success" {
            return Err(format!(
                "{url}: HTTP {status}: {} ({}) for {promql}",
                value["error"].as_str().unwrap_or("no error given"),
                value["errorType"].as_str().unwrap_or("?")
            ));
        }
        let result = value["data"]["result"].as_array().cloned().unwrap_or_default();
        let samples = result
            .iter()
            .filter_map(|sample| {
                let labels = sample["metric"]
                    .as_object()?
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect();
                // Values are strings: "1.5", "NaN", "+Inf".
                let number = sample["value"][1].as_str()?.parse::<f64>().ok()?;
                Some((labels, number))
            })
            .collect();
        Ok(samples)
    }
}

/// One sample of an instant vector: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

impl EvidenceSource for Prometheus {
    fn evidence(&mut self) -> Result<BTreeMap<String, FlagEvidence>, String> {
        let [sums, ages, counts, trips, oldest, newest] = self.queries();
        let mut fleet: BTreeMap<String, FlagEvidence> = BTreeMap::new();
        let label = |labels: &BTreeMap<String, String>, name: &str| {
            labels.get(name).cloned().unwrap_or_default()
        };
        for (labels, value) in self.query(&sums)? {
            let (flag, stage) = (label(&labels, FLAG_LABEL), label(&labels, "stage"));
            let entry = fleet.entry(flag).or_default().stages.entry(stage).or_default();
            let rates = if label(&labels, "group") == "exposed" {
                &mut entry.exposed
            } else {
                &mut entry.control
            };
            set(rates, &label(&labels, "__name__"), value);
        }
        for (labels, value) in self.query(&ages)? {
            if let Some(e) = stage_of(&mut fleet, &labels) {
                e.age = Some(Duration::from_secs_f64(value.max(0.0)));
            }
        }
        for (labels, value) in self.query(&counts)? {
            if let Some(e) = stage_of(&mut fleet, &labels) {
                e.instances = value as u64;
            }
        }
        for (labels, value) in self.query(&trips)? {
            if value > 0.0 {
                let flag = fleet.entry(label(&labels, FLAG_LABEL)).or_default();
                flag.trips.insert(label(&labels, "stage"), value as u64);
            }
        }
        let oldest = self.query(&oldest)?.first().map(|(_, v)| *v as u64);
        let newest = self.query(&newest)?.first().map(|(_, v)| *v as u64);
        if let (Some(oldest), Some(newest)) = (oldest, newest) {
            for flag in fleet.values_mut() {
                flag.versions = Some((oldest, newest));
            }
        }
        Ok(fleet)
    }

    fn describe(&self) -> String {
        format!("Prometheus at {}", self.base)
    }
}

fn stage_of<'a>(
    fleet: &'a mut BTreeMap<String, FlagEvidence>,
    labels: &BTreeMap<String, String>,
) -> Option<&'a mut StageEvidence> {
    fleet.get_mut(labels.get(FLAG_LABEL)?)?.stages.get_mut(labels.get("stage")?)
}

fn set(rates: &mut UnitRates, name: &str, value: f64) {
    match name {
        "flagstone_guard_units" => rates.units = value as u64,
        "flagstone_guard_unit_outcomes" => rates.outcomes = value as u64,
        "flagstone_guard_unit_error_rate_sum" => rates.sum = value,
        "flagstone_guard_unit_error_rate_sum_squares" => rates.sum_squares = value,
        "flagstone_guard_unit_error_rate_sum_cubes" => rates.sum_cubes = value,
        _ => {}
    }
}
