//! Export to the `metrics` crate (feature `metrics`).

use super::Metrics;

/// Publishes a store's counts to the `metrics` crate's recorder: the
/// totals of [`Metrics`] as absolute counter values, so call it on a timer
/// (or before each scrape) with a fresh [`FlagStore::metrics`].
///
/// Labels follow OpenTelemetry's feature-flag semantic conventions where
/// one applies (`feature_flag.key`, `feature_flag.result.variant`), plus
/// `stage`, `result` and `outcome`. Counters:
/// `flagstone_evaluations_total`, `flagstone_outcomes_total`, and
/// `flagstone_latency_seconds_count` and `flagstone_latency_microseconds_sum` (the `metrics` facade has no
/// bucketed histogram to hand prebuilt buckets to; use
/// [`Metrics::to_prometheus`] for those).
///
/// [`FlagStore::metrics`]: crate::FlagStore::metrics
pub fn export_to_metrics(metrics: &Metrics) {
    for e in metrics.evaluations() {
        metrics::counter!(
            "flagstone_evaluations_total",
            "feature_flag.key" => e.flag.clone(),
            "stage" => e.stage,
            "feature_flag.result.variant" => e.variant.unwrap_or(""),
            "result" => if e.enabled { "on" } else { "off" },
        )
        .absolute(e.count);
    }
    for o in metrics.outcomes() {
        for (outcome, n) in [("success", o.successes), ("error", o.errors)] {
            metrics::counter!(
                "flagstone_outcomes_total",
                "feature_flag.key" => o.flag.clone(),
                "stage" => o.stage,
                "outcome" => outcome,
            )
            .absolute(n);
        }
        let count = o.latency.count();
        if count > 0 {
            let labels = [("feature_flag.key", o.flag.clone()), ("stage", o.stage.to_owned())];
            metrics::counter!("flagstone_latency_seconds_count", &labels).absolute(count);
            // Whole microseconds: a counter holds integers.
            let micros = u64::try_from(o.latency.sum.as_micros()).unwrap_or(u64::MAX);
            metrics::counter!("flagstone_latency_microseconds_sum", &labels).absolute(micros);
        }
    }
}
