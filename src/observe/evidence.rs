//! The statistics of guards: is the exposed group credibly worse than its
//! control? One public function per test, over plain counts, so that a
//! flag's guard (on one instance's traffic) and the fleet controller
//! `flagstone rollout` (on the fleet's, summed from Prometheus) run exactly
//! the same code.
//!
//! - [`compare_error_rates`]: the mean of the units' own error rates, exposed
//!   against control, by ratio or by absolute increase.
//! - [`compare_latency`]: the exposed group's latency at a quantile against
//!   the control's, from the fixed log-scale histograms.
//! - [`sample_ratio_mismatch`]: whether the split of units between exposed
//!   and held-back departs from the configured one.
//!
//! The first two are **always valid**: a guard may look after every
//! outcome, and a healthy stage still trips with probability at most
//! `1 - confidence` over a window. Each builds a confidence sequence for the
//! difference the rule cares about (exposed minus ratio × control, or minus
//! control plus the increase) and trips when its lower bound is above zero.
//! The sequence is Robbins' normal mixture over the difference's
//! information (its inverse variance), with the units' sample variances
//! plugged in: an asymptotic confidence sequence in the sense of
//! Waudby-Smith, Arnold, Wu, Howard and Ramdas (2021). `docs/guards.md` has
//! the formulas, the references, what is exact and what is approximate, and
//! the false-trip rate and power measured by seeded simulation.

use super::metrics::{LATENCY_BOUNDS, LATENCY_BUCKETS, Latency};

/// One group's units over a window: how many, and the sums of their error
/// rates (each unit's errors over its outcomes), of their squares and of
/// their cubes.
///
/// Sums, so the evidence of several instances adds up: a unit seen by two
/// instances counts twice, once with each one's rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UnitRates {
    /// Units with at least one outcome.
    pub units: u64,
    /// Their outcomes, in all.
    pub outcomes: u64,
    /// The sum of their error rates.
    pub sum: f64,
    /// The sum of the squares of their error rates.
    pub sum_squares: f64,
    /// The sum of the cubes of their error rates (for the skewness).
    pub sum_cubes: f64,
}

impl UnitRates {
    /// Rates from their sums (as exported, or summed over instances).
    pub fn new(units: u64, outcomes: u64, sum: f64, sum_squares: f64, sum_cubes: f64) -> Self {
        Self { units, outcomes, sum, sum_squares, sum_cubes }
    }

    /// Adds one unit with `errors` among its `outcomes` (none without an
    /// outcome).
    pub fn add(&mut self, outcomes: u64, errors: u64) {
        if outcomes == 0 {
            return;
        }
        let rate = (errors.min(outcomes) as f64) / outcomes as f64;
        self.units += 1;
        self.outcomes += outcomes;
        self.sum += rate;
        self.sum_squares += rate * rate;
        self.sum_cubes += rate * rate * rate;
    }

    /// Takes a unit added with these counts out again (its counts moved).
    pub fn remove(&mut self, outcomes: u64, errors: u64) {
        if outcomes == 0 {
            return;
        }
        let rate = (errors.min(outcomes) as f64) / outcomes as f64;
        self.units = self.units.saturating_sub(1);
        self.outcomes = self.outcomes.saturating_sub(outcomes);
        self.sum -= rate;
        self.sum_squares -= rate * rate;
        self.sum_cubes -= rate * rate * rate;
    }

    /// Adds another group's (another instance's) units.
    pub fn merge(&mut self, other: &UnitRates) {
        self.units += other.units;
        self.outcomes += other.outcomes;
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
        self.sum_cubes += other.sum_cubes;
    }

    /// The third central moment of the units' rates (their skewness times
    /// the variance to the 3/2); 0 without units.
    pub fn third_moment(&self) -> f64 {
        if self.units == 0 {
            return 0.0;
        }
        let n = self.units as f64;
        let mean = self.sum / n;
        self.sum_cubes / n - 3.0 * mean * self.sum_squares / n + 2.0 * mean * mean * mean
    }

    /// The mean error rate over units; 0 without units.
    pub fn mean(&self) -> f64 {
        if self.units == 0 { 0.0 } else { self.sum / self.units as f64 }
    }

    /// The sample variance of the units' rates; 0 with fewer than two.
    pub fn variance(&self) -> f64 {
        if self.units < 2 {
            return 0.0;
        }
        let n = self.units as f64;
        ((self.sum_squares - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }
}

/// What counts as a regression of the error rate.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ErrorRule {
    /// The exposed mean is above this many times the control's.
    Ratio(f64),
    /// The exposed mean is above the control's plus this.
    Increase(f64),
}

/// What a test found.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Comparison {
    /// The exposed group's statistic (mean unit error rate, or the share of
    /// requests over the latency threshold).
    pub exposed: f64,
    /// The control's.
    pub control: f64,
    /// The estimated difference the rule is about: for a ratio, the log of
    /// exposed over control minus the log of the ratio; for an increase,
    /// exposed minus control minus the increase (for latency, the shares'
    /// difference). Above 0 is worse.
    pub difference: f64,
    /// The lower end of its confidence sequence at this look: the guard
    /// trips when it is above 0.
    pub lower: f64,
    /// The upper end: below 0, the stage is credibly within the rule.
    pub upper: f64,
    /// Whether the exposed group is credibly worse: the stage should step back.
    pub regressed: bool,
    /// Whether both groups had enough evidence to decide at all.
    pub enough: bool,
}

/// How far below a difference estimated with variance `variance` its true
/// value may be, at every look, with probability at most `1 - confidence`:
/// the one-sided normal-mixture boundary of Howard, Ramdas, McAuliffe and
/// Sekhon (2021, eq. 14) over the difference's information `I = 1/variance`,
/// `sqrt(2 (I + ρ) ln(sqrt((I + ρ)/ρ) / (2α) + 1)) / I`, with `ρ` chosen so
/// the boundary is narrowest at information `tuned`.
pub fn mixture_width(variance: f64, tuned: f64, confidence: f64) -> f64 {
    let alpha = (1.0 - confidence).clamp(1e-12, 0.5);
    let information = 1.0 / variance.max(1e-18);
    // For the two-sided mixture the best ρ at I is I/x with
    // x = 2L + ln(1 + x), L = ln(1/α) (x ≈ 8 at α = 0.05); the one-sided
    // boundary is flat enough near it that the same choice serves.
    let two_l = 2.0 * (1.0 / alpha).ln();
    let mut x = two_l;
    for _ in 0..8 {
        x = two_l + (1.0 + x).ln();
    }
    let rho = tuned.max(1e-18) / x;
    let v = information + rho;
    let width = (2.0 * v * ((v / rho).sqrt() / (2.0 * alpha) + 1.0).ln()).sqrt();
    width / information
}

/// Whether the exposed units' mean error rate is credibly worse than the
/// control's by `rule`, with `confidence` over every look (an always-valid
/// test); nothing is decided until both groups have `min_units` units.
///
/// # Example
///
/// ```
/// use flagstone::observe::evidence::{ErrorRule, UnitRates, compare_error_rates};
///
/// let (mut exposed, mut control) = (UnitRates::default(), UnitRates::default());
/// for i in 0..300 {
///     // Ten outcomes a unit: 15% errors exposed, 2.5% in the control.
///     exposed.add(10, if i % 10 < 3 { 5 } else { 0 });
///     control.add(10, if i % 20 == 0 { 5 } else { 0 });
/// }
/// let c = compare_error_rates(&exposed, &control, ErrorRule::Ratio(2.0), 0.95, 100);
/// assert!(c.regressed && c.lower > 0.0);
/// let same = compare_error_rates(&control, &control, ErrorRule::Ratio(2.0), 0.95, 100);
/// assert!(!same.regressed);
/// ```
pub fn compare_error_rates(
    exposed: &UnitRates,
    control: &UnitRates,
    rule: ErrorRule,
    confidence: f64,
    min_units: u64,
) -> Comparison {
    let enough = exposed.units >= min_units && control.units >= min_units;
    let (n_e, n_c) = (exposed.units.max(1) as f64, control.units.max(1) as f64);
    let m = min_units.max(1) as f64;
    // The difference the rule is about: exposed - k × control - d.
    let (k, d) = match rule {
        ErrorRule::Ratio(ratio) => (ratio, 0.0),
        ErrorRule::Increase(increase) => (1.0, increase),
    };
    let difference = exposed.mean() - k * control.mean() - d;
    let variance = exposed.variance() / n_e + k * k * control.variance() / n_c;
    // Tuned for the look at which the guard first may decide.
    let tuned = 1.0 / ((exposed.variance() + k * k * control.variance()) / m).max(1e-18);
    let third =
        exposed.third_moment() / (n_e * n_e) - k.powi(3) * control.third_moment() / (n_c * n_c);
    let width = mixture_width(variance, tuned, confidence);
    // Unit error rates are skewed to the right (most units have none, a
    // few have many): unless the two groups' skews cancel, the difference's
    // upper tail is heavier than a normal's. A Cornish-Fisher correction
    // widens the bound by the difference's skewness, never narrows it.
    let sd = variance.max(1e-36).sqrt();
    let (z, skew) = (width / sd, (third / sd.powi(3)).max(0.0));
    let width = width + sd * skew * (z * z - 1.0).max(0.0) / 6.0;
    Comparison {
        exposed: exposed.mean(),
        control: control.mean(),
        difference,
        lower: difference - width,
        upper: difference + width,
        regressed: enough && difference - width > 0.0,
        enough,
    }
}

/// The latency at `quantile` of a histogram, interpolated within its
/// bucket as if latencies were log-uniform there (linear in the first);
/// `None` without samples.
pub fn latency_quantile(histogram: &Latency, quantile: f64) -> Option<f64> {
    let total = histogram.count();
    if total == 0 {
        return None;
    }
    let target = quantile.clamp(0.0, 1.0) * total as f64;
    let mut below = 0.0;
    for (i, &n) in histogram.buckets.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && below + n >= target {
            let within = ((target - below) / n).clamp(0.0, 1.0);
            let Some(hi) = LATENCY_BOUNDS.get(i).map(|b| b.as_secs_f64()) else {
                // Above every bound: the last bound is all that is known.
                return LATENCY_BOUNDS.last().map(|b| b.as_secs_f64());
            };
            if i == 0 {
                return Some(hi * within);
            }
            let lo = hi / 2.0;
            return Some(lo * (hi / lo).powf(within));
        }
        below += n;
    }
    LATENCY_BOUNDS.last().map(|b| b.as_secs_f64())
}

/// The share of a histogram's samples above `seconds`, interpolated as
/// [`latency_quantile`] does.
pub fn share_above(histogram: &Latency, seconds: f64) -> f64 {
    share_above_by(histogram, seconds, true)
}

/// The share of a histogram's samples surely above `seconds`: only the
/// buckets wholly above it. A lower bound, so that no guess about how
/// latencies spread within a bucket can make a stage look slower.
pub fn share_surely_above(histogram: &Latency, seconds: f64) -> f64 {
    share_above_by(histogram, seconds, false)
}

fn share_above_by(histogram: &Latency, seconds: f64, interpolate: bool) -> f64 {
    let total = histogram.count();
    if total == 0 {
        return 0.0;
    }
    let mut above = 0.0;
    for (i, &n) in histogram.buckets.iter().enumerate() {
        let n = n as f64;
        let lo =
            if i == 0 { 0.0 } else { LATENCY_BOUNDS.get(i - 1).map_or(0.0, |b| b.as_secs_f64()) };
        // The last bucket has no bound: taken as one more doubling.
        let hi = LATENCY_BOUNDS.get(i).map_or(2.0 * lo, |b| b.as_secs_f64());
        if seconds <= lo {
            above += n;
        } else if seconds < hi && interpolate {
            above += if i == 0 {
                n * (hi - seconds) / hi
            } else {
                n * (hi / seconds).ln() / (hi / lo).ln()
            };
        }
    }
    (above / total as f64).clamp(0.0, 1.0)
}

/// Whether the exposed group's latency at `quantile` is credibly above
/// `max_ratio` times the control's, with `confidence` over every look.
///
/// The quantile comparison is one of shares: if the exposed group's
/// quantile is above `max_ratio × t` (t the control's quantile), more than
/// `1 - quantile` of its requests are slower than `max_ratio × t`. The test
/// compares that share with the control's share above `t` (which is
/// `1 - quantile`), with the confidence sequence of
/// [`compare_error_rates`] on proportions of requests. Nothing is decided
/// until both groups have `min_samples` requests and enough for the
/// quantile (`10 / (1 - quantile)`).
pub fn compare_latency(
    exposed: &Latency,
    control: &Latency,
    quantile: f64,
    max_ratio: f64,
    confidence: f64,
    min_samples: u64,
) -> Comparison {
    let needed = min_samples.max((10.0 / (1.0 - quantile).max(1e-6)).ceil() as u64);
    let (n_e, n_c) = (exposed.count(), control.count());
    let threshold = latency_quantile(control, quantile).unwrap_or(f64::INFINITY);
    // The exposed share counts only buckets wholly above the threshold:
    // with log2 buckets, a ratio that falls within a bucket is rounded up
    // to the bucket's end (a 1.5x rule may act as 2x), never down.
    let p_e = share_surely_above(exposed, max_ratio * threshold);
    let p_c = share_above(control, threshold);
    let difference = p_e - p_c;
    let (ne, nc) = (n_e.max(1) as f64, n_c.max(1) as f64);
    // A share's variance, floored at one request's worth so a clean group
    // does not claim certainty.
    let var = |p: f64, n: f64| (p * (1.0 - p)).max(1.0 / n) / n;
    let variance = var(p_e, ne) + var(p_c, nc);
    let m = needed as f64;
    let tuned = 1.0 / (var(p_e, m) + var(p_c, m)).max(1e-18);
    let width = mixture_width(variance, tuned, confidence);
    let enough = n_e >= needed && n_c >= needed;
    Comparison {
        exposed: p_e,
        control: p_c,
        difference,
        lower: difference - width,
        upper: difference + width,
        regressed: enough && difference - width > 0.0,
        enough,
    }
}

/// What the sample-ratio check found.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SampleRatio {
    /// The share of units held back, as seen.
    pub control_share: f64,
    /// The share configured.
    pub expected: f64,
    /// The log Bayes factor against the configured split; the split
    /// mismatches when it passes `ln(1000)` (p < 0.001, anytime-valid).
    pub log_bayes_factor: f64,
    /// Whether the split departs from the configured one.
    pub mismatch: bool,
}

/// Whether `control_units : exposed_units` departs from a control share of
/// `expected` (the holdback as a fraction): a binomial mixture SPRT with a
/// Beta prior centred on `expected` (Lindon and Malek 2022), anytime-valid
/// at p < 0.001. A mismatch means the groups are not comparable (held-back
/// contexts recording fewer outcomes, say): a guard then decides nothing.
pub fn sample_ratio_mismatch(exposed_units: u64, control_units: u64, expected: f64) -> SampleRatio {
    let h = expected.clamp(1e-6, 1.0 - 1e-6);
    let (n_c, n_e) = (control_units as f64, exposed_units as f64);
    // A prior worth 100 units, centred on the expected share.
    let (a, b) = (100.0 * h, 100.0 * (1.0 - h));
    let log_bayes_factor =
        ln_beta(n_c + a, n_e + b) - ln_beta(a, b) - n_c * h.ln() - n_e * (1.0 - h).ln();
    let total = n_c + n_e;
    SampleRatio {
        control_share: if total > 0.0 { n_c / total } else { 0.0 },
        expected: h,
        log_bayes_factor,
        mismatch: log_bayes_factor > 1000f64.ln(),
    }
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7: relative error below 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// How many latency buckets a histogram has (re-exported for the controller).
pub const BUCKETS: usize = LATENCY_BUCKETS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        for (n, fact) in [(1.0, 1.0f64), (2.0, 1.0), (5.0, 24.0), (11.0, 3_628_800.0)] {
            assert!((ln_gamma(n) - fact.ln()).abs() < 1e-10, "{n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-10);
    }

    #[test]
    fn unit_rates_add_and_merge() {
        let mut a = UnitRates::default();
        a.add(4, 0);
        a.add(2, 2);
        a.add(0, 0);
        let mut b = UnitRates::new(1, 2, 0.5, 0.25, 0.125);
        b.merge(&a);
        assert_eq!((b.units, b.outcomes), (3, 8));
        assert!((b.mean() - 0.5).abs() < 1e-12);
        assert!((b.variance() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn quantiles_and_shares_invert_each_other() {
        let mut h = Latency::default();
        h.buckets[3] = 50; // 1 ms .. 2 ms
        h.buckets[4] = 50; // 2 ms .. 4 ms
        let median = latency_quantile(&h, 0.5).expect("samples");
        assert!((median - 0.002).abs() < 1e-9, "{median}");
        let p90 = latency_quantile(&h, 0.9).expect("samples");
        assert!((share_above(&h, p90) - 0.1).abs() < 1e-9);
        assert_eq!(share_above(&h, 0.0001), 1.0);
        assert_eq!(share_above(&h, 1.0), 0.0);
    }

    #[test]
    fn a_split_as_configured_is_no_mismatch_and_a_missing_control_is() {
        assert!(!sample_ratio_mismatch(900, 100, 0.1).mismatch);
        assert!(!sample_ratio_mismatch(910, 90, 0.1).mismatch);
        assert!(sample_ratio_mismatch(1000, 20, 0.1).mismatch);
        assert!(sample_ratio_mismatch(700, 300, 0.1).mismatch);
    }
}
