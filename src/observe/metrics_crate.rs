//! Export to the `metrics` crate (feature `metrics`).

use metrics::Label;

use super::Metrics;
use super::export::{Kind, Value};

/// Publishes a store's counts to the `metrics` crate's recorder, as the
/// same series [`Metrics::to_prometheus`] writes: the same names, the same
/// labels ([`FLAG_LABEL`](super::FLAG_LABEL),
/// [`VARIANT_LABEL`](super::VARIANT_LABEL), `stage`, ...), the same units
/// (seconds). Call it on a timer (or before each scrape) with a fresh
/// [`FlagStore::metrics`]: counters are set to their totals
/// (`absolute`), gauges to their values.
///
/// The `metrics` facade takes no prebuilt histogram, so
/// `flagstone_latency_seconds` goes out as its Prometheus series: the
/// `_bucket` (with `le`) and `_count` counters and the `_sum` in seconds
/// (a gauge, the facade's counters holding only integers). A dashboard's
/// `histogram_quantile(0.99, rate(flagstone_latency_seconds_bucket[5m]))`
/// works on either export.
///
/// [`FlagStore::metrics`]: crate::FlagStore::metrics
pub fn export_to_metrics(metrics: &Metrics) {
    for family in metrics.families() {
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
            Kind::Histogram => {}
        }
        for sample in family.samples {
            let name = format!("{}{}", family.name, sample.suffix);
            let labels: Vec<Label> =
                sample.labels.into_iter().map(|(key, value)| Label::new(key, value)).collect();
            match (family.kind, sample.value) {
                (Kind::Counter | Kind::Histogram, Value::Count(n)) => {
                    metrics::counter!(name, labels).absolute(n);
                }
                (_, Value::Count(n)) => metrics::gauge!(name, labels).set(n as f64),
                (_, Value::Real(x)) => metrics::gauge!(name, labels).set(x),
            }
        }
    }
}
