//! The series a store exports, named once: the Prometheus text
//! ([`Metrics::to_prometheus`]) and the `metrics` crate
//! ([`export_to_metrics`](super::export_to_metrics)) both render this one
//! list, so their names, labels and units cannot drift apart.
//!
//! Labels follow OpenTelemetry's feature-flag attributes where one exists,
//! in the form OpenTelemetry's Prometheus exporters give them
//! (`feature_flag.key` → [`FLAG_LABEL`], `feature_flag.result.variant` →
//! [`VARIANT_LABEL`]); `stage`, `result`, `outcome`, `group`, `step`,
//! `origin`, `operation` and `le` are flagstone's own. Durations are in seconds, as both conventions want.

use std::fmt::Write as _;

use super::ControlGroup;
use super::metrics::{LATENCY_BOUNDS, Latency, Metrics};

/// The `Content-Type` of [`Metrics::to_prometheus`]'s text (the exposition
/// format 0.0.4), for a `/metrics` handler to send.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label holding the flag's key (OpenTelemetry's `feature_flag.key`).
pub const FLAG_LABEL: &str = "feature_flag_key";

/// The label holding the variant handed out, empty for none
/// (OpenTelemetry's `feature_flag.result.variant`).
pub const VARIANT_LABEL: &str = "feature_flag_result_variant";

/// What a family's samples are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    /// `_bucket` and `_count` samples are counters, `_sum` a sum of seconds.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: a whole count, or a real number (a rate, seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Count(u64),
    Real(f64),
}

/// One series: the family's name plus `suffix` (`_bucket`, `_sum`,
/// `_count` in a histogram, else empty), its labels, its value.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) suffix: &'static str,
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: Value,
}

/// A metric family: name, help, kind, and its samples.
#[derive(Clone, Debug)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    pub(crate) samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self { name, help, kind, samples: Vec::new() }
    }

    fn push(&mut self, suffix: &'static str, labels: Vec<(&'static str, String)>, value: Value) {
        self.samples.push(Sample { suffix, labels, value });
    }

    /// A histogram's series: cumulative `_bucket`s with `le`, the `_sum`
    /// in seconds, the `_count`.
    fn histogram(&mut self, labels: &[(&'static str, String)], latency: &Latency) {
        let mut cumulative = 0u64;
        for (i, n) in latency.buckets.iter().enumerate() {
            cumulative += n;
            let le = match LATENCY_BOUNDS.get(i) {
                Some(bound) => bound.as_secs_f64().to_string(),
                None => "+Inf".to_owned(),
            };
            let mut bucket = labels.to_vec();
            bucket.push(("le", le));
            self.push("_bucket", bucket, Value::Count(cumulative));
        }
        self.push("_sum", labels.to_vec(), Value::Real(latency.sum.as_secs_f64()));
        self.push("_count", labels.to_vec(), Value::Count(cumulative));
    }
}

fn flag_stage(flag: &str, stage: &str) -> Vec<(&'static str, String)> {
    vec![(FLAG_LABEL, flag.to_owned()), ("stage", stage.to_owned())]
}

impl Metrics {
    /// Every family, in export order, each with the samples that counted
    /// something; families without samples are left out.
    pub(crate) fn families(&self) -> Vec<Family> {
        let mut evaluations = Family::new(
            "flagstone_evaluations_total",
            Kind::Counter,
            "Flag evaluations by flag, exposing stage, variant and result.",
        );
        for e in &self.evaluations {
            let mut labels = flag_stage(&e.flag, e.stage);
            labels.push((VARIANT_LABEL, e.variant.unwrap_or("").to_owned()));
            labels.push(("result", if e.enabled { "on" } else { "off" }.to_owned()));
            evaluations.push("", labels, Value::Count(e.count));
        }

        let mut outcomes = Family::new(
            "flagstone_outcomes_total",
            Kind::Counter,
            "Outcomes recorded by flag and the stage the context fell in.",
        );
        let mut latency = Family::new(
            "flagstone_latency_seconds",
            Kind::Histogram,
            "Latency recorded by flag and the stage the context fell in.",
        );
        for o in &self.outcomes {
            for (outcome, n) in [("success", o.successes), ("error", o.errors)] {
                if n > 0 {
                    let mut labels = flag_stage(&o.flag, o.stage);
                    labels.push(("outcome", outcome.to_owned()));
                    outcomes.push("", labels, Value::Count(n));
                }
            }
            if o.latency.count() == 0 {
                continue;
            }
            latency.histogram(&flag_stage(&o.flag, o.stage), &o.latency);
        }

        let mut units = Family::new(
            "flagstone_guard_units",
            Kind::Gauge,
            "Units a guard saw in its current window, by group: exposed by the stage it watches, or its control (held-back or not-exposed).",
        );
        let mut sums = Family::new(
            "flagstone_guard_unit_error_rate_sum",
            Kind::Gauge,
            "The sum of those units' own error rates.",
        );
        let mut squares = Family::new(
            "flagstone_guard_unit_error_rate_sum_squares",
            Kind::Gauge,
            "The sum of their squares.",
        );
        let mut cubes = Family::new(
            "flagstone_guard_unit_error_rate_sum_cubes",
            Kind::Gauge,
            "The sum of their cubes.",
        );
        let mut unit_outcomes = Family::new(
            "flagstone_guard_unit_outcomes",
            Kind::Gauge,
            "The outcomes of those units.",
        );
        for g in &self.guards {
            let control = match g.control_group {
                ControlGroup::HeldBack => "held-back",
                ControlGroup::NotExposed => "not-exposed",
            };
            for (group, rates) in [("exposed", &g.exposed), (control, &g.control)] {
                let mut labels = flag_stage(&g.flag, g.stage);
                labels.push(("group", group.to_owned()));
                units.push("", labels.clone(), Value::Count(rates.units));
                sums.push("", labels.clone(), Value::Real(rates.sum));
                squares.push("", labels.clone(), Value::Real(rates.sum_squares));
                cubes.push("", labels.clone(), Value::Real(rates.sum_cubes));
                unit_outcomes.push("", labels, Value::Count(rates.outcomes));
            }
        }

        let mut trips = Family::new(
            "flagstone_guard_trips_total",
            Kind::Counter,
            "Guard trips on this instance, by flag and stage.",
        );
        for t in &self.guard_trips {
            trips.push("", flag_stage(&t.flag, &t.stage), Value::Count(t.count));
        }
        let mut stepped_back = Family::new(
            "flagstone_guard_stepped_back",
            Kind::Gauge,
            "1 for each stage a guard stepped back on the serving version.",
        );
        for s in &self.stepped_back {
            stepped_back.push("", flag_stage(&s.flag, &s.stage), Value::Count(1));
        }
        let mut operations = Family::new(
            "flagstone_migration_operations_total",
            Kind::Counter,
            "Migration reads and writes by flag, stage, step, origin (old or new store) and operation.",
        );
        let mut operation_errors = Family::new(
            "flagstone_migration_errors_total",
            Kind::Counter,
            "Migration reads and writes that returned an error, by flag, stage, step, origin and operation.",
        );
        let mut operation_latency = Family::new(
            "flagstone_migration_latency_seconds",
            Kind::Histogram,
            "Migration read and write latency by flag, stage, step, origin and operation.",
        );
        let mut comparisons = Family::new(
            "flagstone_migration_comparisons_total",
            Kind::Counter,
            "Migration reads of both stores compared, by flag, stage and step.",
        );
        let mut mismatches = Family::new(
            "flagstone_migration_mismatches_total",
            Kind::Counter,
            "Compared migration reads that disagreed, by flag, stage and step.",
        );
        for m in &self.migrations {
            let base = || {
                let mut labels = flag_stage(&m.flag, m.stage);
                labels.push(("step", m.step.as_str().to_owned()));
                labels
            };
            for origin in [crate::migration::Origin::Old, crate::migration::Origin::New] {
                let side = m.origin(origin);
                for (operation, count) in [("read", &side.reads), ("write", &side.writes)] {
                    if count.calls == 0 {
                        continue;
                    }
                    let mut labels = base();
                    labels.push(("origin", origin.as_str().to_owned()));
                    labels.push(("operation", operation.to_owned()));
                    operations.push("", labels.clone(), Value::Count(count.calls));
                    operation_errors.push("", labels.clone(), Value::Count(count.errors));
                    operation_latency.histogram(&labels, &count.latency);
                }
            }
            if m.comparisons > 0 {
                comparisons.push("", base(), Value::Count(m.comparisons));
                mismatches.push("", base(), Value::Count(m.mismatches));
            }
        }

        let mut version = Family::new(
            "flagstone_config_version",
            Kind::Gauge,
            "The version of the config serving.",
        );
        if self.version > 0 {
            version.push("", Vec::new(), Value::Count(self.version));
        }

        [
            evaluations,
            outcomes,
            latency,
            units,
            sums,
            squares,
            cubes,
            unit_outcomes,
            trips,
            stepped_back,
            operations,
            operation_errors,
            operation_latency,
            comparisons,
            mismatches,
            version,
        ]
        .into_iter()
        .filter(|f| !f.samples.is_empty())
        .collect()
    }

    /// The Prometheus text exposition format (version 0.0.4; send it with
    /// [`PROMETHEUS_CONTENT_TYPE`]): `flagstone_evaluations_total`,
    /// `flagstone_outcomes_total`, the `flagstone_latency_seconds`
    /// histogram, the guards' evidence and trips, and
    /// `flagstone_config_version`. Labels: the flag's key in
    /// [`FLAG_LABEL`](crate::observe::FLAG_LABEL), the variant in
    /// [`VARIANT_LABEL`](crate::observe::VARIANT_LABEL) (OpenTelemetry's
    /// attributes, as its Prometheus exporters write them), and `stage`,
    /// `result`, `outcome`, `group`, `le`. Latency is in seconds.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for family in self.families() {
            let (name, kind) = (family.name, family.kind.as_str());
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            for sample in &family.samples {
                out.push_str(name);
                out.push_str(sample.suffix);
                if !sample.labels.is_empty() {
                    out.push('{');
                    for (i, (key, value)) in sample.labels.iter().enumerate() {
                        let comma = if i == 0 { "" } else { "," };
                        let _ = write!(out, "{comma}{key}=\"{}\"", Escaped(value));
                    }
                    out.push('}');
                }
                let _ = match sample.value {
                    Value::Count(n) => writeln!(out, " {n}"),
                    Value::Real(x) => writeln!(out, " {x}"),
                };
            }
        }
        out
    }
}

/// A label value escaped as the exposition format wants: `\`, `"` and
/// newlines.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => std::fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(Escaped("a\"b\\c\nd").to_string(), "a\\\"b\\\\c\\nd");
    }
}
