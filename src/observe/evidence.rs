//! The statistics of guards: is the exposed group credibly worse than its
//! control? One public test per question, over plain counts, so that a
//! flag's guard (on one instance's traffic) and the fleet controller
//! `flagstone rollout` (on the fleet's, summed from Prometheus) run exactly
//! the same code.
//!
//! - [`ErrorTest`]: the mean of the units' own error rates, exposed against
//!   control, by ratio or by absolute increase.
//! - [`LatencyTest`]: the exposed group's latency at a quantile against the
//!   control's, from the fixed log-scale histograms.
//! - [`sample_ratio_mismatch`]: whether the split of units between exposed
//!   and held-back departs from the configured one.
//!
//! The first two are sequential: a guard may look every second, and a
//! stage at the rule's edge (say exactly twice the control's errors under a
//! 2x rule) trips with probability at most `1 - confidence` over a window
//! however often it looks. Each is a one-sided normal-mixture test (the
//! mSPRT of Johari et al., Robbins' mixture) on the difference the rule is
//! about, in information time, with small-sample corrections: units count
//! once they have [`MIN_UNIT_OUTCOMES`] outcomes, the variance is the larger
//! of the groups' own and the one implied at the rule's edge, a one-sided
//! Hall correction for skew, and the threshold at `ln(2/α)`. That is
//! asymptotically valid, not a theorem for small samples: `docs/guards.md`
//! has the formulas, the references, why no exact test can work at a 1%
//! error rate with a few hundred units, and the error rates measured by
//! seeded simulation.

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

/// Units count in [`UnitRates`] once they have this many outcomes in the
/// window: a unit's rate over one or two requests is 0 or 1, and such units
/// make the difference's distribution far from normal.
pub const MIN_UNIT_OUTCOMES: u64 = 10;

/// The number of units at which the test's boundary is narrowest (it is
/// flat around it: four times more or fewer costs little).
pub const TARGET_UNITS: u64 = 200;

/// A sequential test of "exposed is worse than control by this rule", over
/// one window: keep it between looks, [`ErrorTest::check`] at every look.
///
/// It remembers one number, the calibration of information time at the
/// first look with enough units, so the same test must see the same
/// window's evidence grow (start a new one for a new window).
///
/// # Example
///
/// ```
/// use flagstone::observe::evidence::{ErrorRule, ErrorTest, UnitRates};
///
/// let (mut exposed, mut control) = (UnitRates::default(), UnitRates::default());
/// for i in 0..300 {
///     // Twenty outcomes a unit: 15% errors exposed, 2.5% in the control.
///     exposed.add(20, if i % 10 < 3 { 10 } else { 0 });
///     control.add(20, if i % 20 == 0 { 10 } else { 0 });
/// }
/// let mut test = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100);
/// let c = test.check(&exposed, &control);
/// assert!(c.regressed && c.lower > 0.0);
/// let mut same = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100);
/// assert!(!same.check(&control, &control).regressed);
/// ```
#[derive(Clone, Debug)]
pub struct ErrorTest {
    rule: ErrorRule,
    confidence: f64,
    min_units: u64,
    target: f64,
    /// `w_E + k^2 w_C` at the first look with enough units.
    calibration: Option<f64>,
}

impl ErrorTest {
    /// A test of `rule` with `confidence`, deciding nothing until each
    /// group has `min_units` units (of at least [`MIN_UNIT_OUTCOMES`]).
    pub fn new(rule: ErrorRule, confidence: f64, min_units: u64) -> Self {
        let target = min_units.max(TARGET_UNITS) as f64;
        Self { rule, confidence, min_units: min_units.max(1), target, calibration: None }
    }

    /// Looks at the evidence so far.
    pub fn check(&mut self, exposed: &UnitRates, control: &UnitRates) -> Comparison {
        let (k, d) = match self.rule {
            ErrorRule::Ratio(ratio) => (ratio, 0.0),
            ErrorRule::Increase(increase) => (1.0, increase),
        };
        sequential(
            exposed,
            control,
            k,
            d,
            self.confidence,
            self.min_units,
            self.target,
            &mut self.calibration,
        )
    }
}

/// The one-sided normal-mixture test of `exposed - k × control - d > 0`
/// (`docs/guards.md`, section "The test").
#[allow(clippy::too_many_arguments)]
fn sequential(
    exposed: &UnitRates,
    control: &UnitRates,
    k: f64,
    d: f64,
    confidence: f64,
    min_units: u64,
    target: f64,
    calibration: &mut Option<f64>,
) -> Comparison {
    let alpha = (1.0 - confidence).clamp(1e-9, 0.5);
    let (n_e, n_c) = (exposed.units as f64, control.units as f64);
    let (m_e, m_c) = (exposed.mean(), control.mean());
    let difference = m_e - k * m_c - d;
    let enough = exposed.units >= min_units && control.units >= min_units;
    let nothing = |enough| Comparison {
        exposed: m_e,
        control: m_c,
        difference,
        lower: f64::NEG_INFINITY,
        upper: f64::INFINITY,
        regressed: false,
        enough,
    };
    if exposed.units < 2 || control.units < 2 {
        return nothing(false);
    }
    // The means at the rule's edge nearest the data (a score test's
    // restricted estimate): a control that looks clean only because its few
    // failing units have not shown up yet is not taken at its word.
    let mu_c0 = ((n_e * (m_e - d) + n_c * m_c) / (k * n_e + n_c)).max(0.0);
    let mu_e0 = k * mu_c0 + d;
    let mut pooled = *exposed;
    pooled.merge(control);
    // Variance over mean: as seen, or the pooled groups' for a group
    // without errors, but never below a binomial's (units whose rates
    // agree too well are not more certain than their outcomes make them).
    let dispersion = |g: &UnitRates| {
        let seen = if g.mean() > 0.0 {
            g.variance() / g.mean()
        } else {
            pooled.variance() / pooled.mean().max(1e-12)
        };
        let per_unit = (g.outcomes as f64 / g.units.max(1) as f64).max(1.0);
        seen.max((1.0 - g.mean()).max(0.0) / per_unit)
    };
    let w_e = exposed.variance().max(dispersion(exposed) * mu_e0);
    let w_c = control.variance().max(dispersion(control) * mu_c0);
    let variance = w_e / n_e + k * k * w_c / n_c;
    if !(variance > 0.0 && variance.is_finite()) {
        return nothing(enough);
    }
    let sd = variance.sqrt();
    let t = (difference / sd).clamp(-1e6, 1e6);
    // Hall's correction for the skew of unit rates, only ever against a trip.
    let gamma = (exposed.third_moment() / (n_e * n_e)
        - k.powi(3) * control.third_moment() / (n_c * n_c))
        / variance.powf(1.5);
    let corrected = t + gamma * (2.0 * t * t + 1.0) / 6.0 + gamma * gamma * t.powi(3) / 27.0;
    let t = if corrected.is_finite() { t.min(corrected) } else { t };
    // Information time, calibrated at the first look with enough units: V
    // is about the number of units then, and grows as unit rates sharpen.
    if enough && calibration.is_none() {
        *calibration = Some(w_e + k * k * w_c);
    }
    let Some(c0) = *calibration else { return nothing(false) };
    let v = c0 / variance;
    let s = t * v.sqrt();
    let two_l = 2.0 * (1.0 / (2.0 * alpha)).ln();
    let rho = target / (two_l + (1.0 + two_l).ln());
    let log_m = 0.5 * (4.0 * rho / (v + rho)).ln()
        + s * s / (2.0 * (v + rho))
        + ln_phi(s / (v + rho).sqrt());
    // The reported bound: the closed two-sided mixture at α/2.
    let b = ((v + rho) * ((1.0 + v / rho).ln() + 2.0 * (2.0 / alpha).ln())).sqrt();
    let width = sd * b / v.sqrt();
    Comparison {
        exposed: m_e,
        control: m_c,
        difference,
        lower: difference - width,
        upper: difference + width,
        regressed: enough && difference > 0.0 && log_m >= (2.0 / alpha).ln(),
        enough,
    }
}

/// `ln Φ(x)`, the log of the standard normal distribution function.
fn ln_phi(x: f64) -> f64 {
    (0.5 * erfc(-x / std::f64::consts::SQRT_2)).max(1e-300).ln()
}

/// The complementary error function (Numerical Recipes' Chebyshev fit,
/// relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
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
        } else if seconds < hi {
            above += if i == 0 {
                n * (hi - seconds) / hi
            } else {
                n * (hi / seconds).ln() / (hi / lo).ln()
            };
        }
    }
    (above / total as f64).clamp(0.0, 1.0)
}

/// A sequential test of "the exposed group's latency at a quantile is
/// above `max_ratio` times the control's", over one window.
///
/// With log2 buckets, a quantile is known to a bucket. The test reads the
/// control's quantile bucket `b*` (the first bound past which at most
/// `1 - quantile` of its requests lie), then compares the exposed share of
/// requests above a real bound `b` (the first at or past `max_ratio × b*`,
/// one bucket up for ratios up to 2) with the control's share above
/// `b / max_ratio`, interpolated linearly in log latency (which overstates
/// it where latencies thin out, above the mode: the careful side). The
/// difference of the two shares is tested as [`ErrorTest`] tests rates,
/// with requests for units. A 1.5x ratio trips from about 2x; at exactly
/// 1.5x it does not (`docs/guards.md` has the measurements).
#[derive(Clone, Debug)]
pub struct LatencyTest {
    quantile: f64,
    max_ratio: f64,
    confidence: f64,
    min_requests: u64,
    calibration: Option<f64>,
}

impl LatencyTest {
    /// A test at `quantile` for `max_ratio`, deciding nothing until both
    /// groups have `min_requests` requests, and enough for the quantile
    /// (`10 / (1 - quantile)`).
    pub fn new(quantile: f64, max_ratio: f64, confidence: f64, min_requests: u64) -> Self {
        let needed = min_requests.max((10.0 / (1.0 - quantile).max(1e-6)).ceil() as u64);
        Self {
            quantile,
            max_ratio: max_ratio.max(1.0),
            confidence,
            min_requests: needed,
            calibration: None,
        }
    }

    /// Looks at the window's histograms so far.
    pub fn check(&mut self, exposed: &Latency, control: &Latency) -> Comparison {
        let above = |h: &Latency, j: i64| -> f64 {
            // The share of requests above bound j (j = -1: all, past the last: none).
            let total = h.count() as f64;
            if j < 0 || total == 0.0 {
                return if total == 0.0 { 0.0 } else { 1.0 };
            }
            let j = j as usize;
            h.buckets.iter().skip(j + 1).sum::<u64>() as f64 / total
        };
        let bounds = LATENCY_BOUNDS.len() as i64;
        let star =
            (0..bounds).find(|&j| above(control, j) <= 1.0 - self.quantile).unwrap_or(bounds - 1);
        let up = self.max_ratio.log2();
        let j_e = (star + up.ceil() as i64 - 1).clamp(0, bounds - 1);
        let u = j_e as f64 - up;
        let (i0, f) = (u.floor() as i64, u - u.floor());
        // Per request: exposed 1 above b_jE; control (1 - f)·1[above b_i0] + f·1[above b_i0+1].
        let (n_e, n_c) = (exposed.count(), control.count());
        let y = above(exposed, j_e);
        let (lo, hi) = (above(control, i0), above(control, i0 + 1));
        let sum = y * n_e as f64;
        let e = UnitRates::new(n_e, n_e, sum, sum, sum);
        // Values 1 (above b_i0+1), 1 - f (between), 0 (below b_i0).
        let (p1, pmid) = (hi, (lo - hi).max(0.0));
        let (mid, n) = (1.0 - f, n_c as f64);
        let c = UnitRates::new(
            n_c,
            n_c,
            (p1 + pmid * mid) * n,
            (p1 + pmid * mid * mid) * n,
            (p1 + pmid * mid.powi(3)) * n,
        );
        sequential(
            &e,
            &c,
            1.0,
            0.0,
            self.confidence,
            self.min_requests,
            TARGET_UNITS as f64 * 10.0,
            &mut self.calibration,
        )
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

/// What the mismatch test found: the share of compared reads that
/// disagreed, against the most a guard allows.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct MismatchTest {
    /// Mismatches over comparisons.
    pub rate: f64,
    /// The log of the test's likelihood ratio against a rate of at most
    /// the allowed one.
    pub log_likelihood_ratio: f64,
    /// Whether the rate is credibly above the allowed one.
    pub regressed: bool,
}

/// Whether `mismatches` of `comparisons` put a stage's mismatch rate
/// credibly above `max_rate`: a one-sample sequential test, anytime-valid
/// at `1 - confidence`. Its statistic is a uniform mixture of likelihood
/// ratios for rates `max_rate * 2^(j/2)` (j = 1, 2, ... below 1) against
/// `max_rate`: each is a supermartingale whenever the true rate is at most
/// `max_rate`, so their mixture is too, and by Ville's inequality it
/// passes `1 / (1 - confidence)` with probability at most
/// `1 - confidence`, however often it is looked at. Fewer than
/// `min_comparisons` comparisons decide nothing.
pub fn mismatch_test(
    comparisons: u64,
    mismatches: u64,
    max_rate: f64,
    confidence: f64,
    min_comparisons: u64,
) -> MismatchTest {
    let n = comparisons as f64;
    let k = mismatches.min(comparisons) as f64;
    let rate = if comparisons == 0 { 0.0 } else { k / n };
    let p0 = max_rate.clamp(1e-12, 1.0 - 1e-9);
    let mut terms = Vec::with_capacity(80);
    let mut j = 1;
    loop {
        let p = p0 * 2f64.powf(f64::from(j) / 2.0);
        if p >= 1.0 || j > 80 {
            break;
        }
        terms.push(k * (p / p0).ln() + (n - k) * ((1.0 - p) / (1.0 - p0)).ln());
        j += 1;
    }
    // log of the mean of exp(terms), stably.
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_likelihood_ratio = if terms.is_empty() {
        f64::NEG_INFINITY
    } else {
        top + (terms.iter().map(|t| (t - top).exp()).sum::<f64>() / terms.len() as f64).ln()
    };
    let threshold = (1.0 / (1.0 - confidence).max(1e-12)).ln();
    MismatchTest {
        rate,
        log_likelihood_ratio,
        regressed: comparisons >= min_comparisons && log_likelihood_ratio >= threshold,
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
    fn the_mismatch_test_trips_on_a_bad_rate_and_rarely_on_a_good_one() {
        // 1% mismatching against an allowed 0.1%: credible within 2,000.
        assert!(mismatch_test(2_000, 20, 0.001, 0.95, 100).regressed);
        // At the allowed rate: no trip.
        assert!(!mismatch_test(100_000, 100, 0.001, 0.95, 100).regressed);
        // Too few comparisons decide nothing.
        assert!(!mismatch_test(50, 50, 0.001, 0.95, 100).regressed);
        // Anytime-valid: healthy streams (rate at the limit) looked at after
        // every comparison trip at most about 5% of the time.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut tripped = 0;
        for _ in 0..200 {
            let (mut n, mut k) = (0u64, 0u64);
            for _ in 0..5_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                n += 1;
                k += u64::from(((state >> 11) as f64 / (1u64 << 53) as f64) < 0.01);
                if n % 25 == 0 && mismatch_test(n, k, 0.01, 0.95, 100).regressed {
                    tripped += 1;
                    break;
                }
            }
        }
        assert!(tripped <= 20, "{tripped} of 200 healthy streams tripped");
    }

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

    fn group(units: u64, outcomes: u64, errors_every: u64, errors: u64) -> UnitRates {
        let mut g = UnitRates::default();
        for i in 0..units {
            g.add(outcomes, if errors_every > 0 && i % errors_every == 0 { errors } else { 0 });
        }
        g
    }

    #[test]
    fn an_error_test_decides_nothing_below_its_minimum() {
        let (bad, good) = (group(50, 20, 2, 10), group(50, 20, 50, 1));
        let c = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100).check(&bad, &good);
        assert!(!c.enough && !c.regressed, "{c:?}");
        let c = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 40).check(&bad, &good);
        assert!(c.enough && c.regressed, "{c:?}");
    }

    #[test]
    fn an_increase_rule_trips_above_the_increase_only() {
        // Exposed 10%, control 5%: 5 points more, in units that differ.
        let (mut exposed, mut control) = (UnitRates::default(), UnitRates::default());
        for i in 0..1_000 {
            exposed.add(20, i % 5);
            control.add(20, i % 3);
        }
        let mut within = ErrorTest::new(ErrorRule::Increase(0.08), 0.95, 100);
        let c = within.check(&exposed, &control);
        assert!(!c.regressed && c.upper < 0.0, "credibly within 8 points: {c:?}");
        let mut over = ErrorTest::new(ErrorRule::Increase(0.01), 0.95, 100);
        assert!(over.check(&exposed, &control).regressed);
    }

    #[test]
    fn units_that_agree_too_well_are_no_more_certain_than_their_outcomes() {
        // Every unit at exactly 10% and 5%: no spread between units, but
        // 20 outcomes each cannot pin a rate down to nothing.
        let (exposed, control) = (group(100, 20, 1, 2), group(100, 20, 1, 1));
        let c = ErrorTest::new(ErrorRule::Increase(0.04), 0.95, 100).check(&exposed, &control);
        assert!(c.upper.is_finite() && c.lower.is_finite() && !c.regressed, "{c:?}");
    }

    #[test]
    fn a_clean_control_is_not_taken_at_its_word() {
        // Exposed: 3 failing units of 200; control: none yet. A ratio to 0
        // is infinite, but three units are not evidence of a 2x regression.
        let (exposed, control) = (group(200, 20, 67, 10), group(200, 20, 0, 0));
        let c = ErrorTest::new(ErrorRule::Ratio(2.0), 0.95, 100).check(&exposed, &control);
        assert!(!c.regressed, "{c:?}");
    }

    #[test]
    fn a_latency_test_compares_shares_above_a_real_bound() {
        let mut control = Latency::default();
        let mut slow = Latency::default();
        for b in 2..6 {
            control.buckets[b] = 1_000;
            slow.buckets[b + 2] = 1_000; // 4x slower.
        }
        let mut test = LatencyTest::new(0.9, 1.5, 0.95, 100);
        assert!(test.check(&slow, &control).regressed);
        let mut same = LatencyTest::new(0.9, 1.5, 0.95, 100);
        assert!(!same.check(&control, &control).regressed);
        // Too few requests for a p99.
        let mut few = Latency::default();
        few.buckets[9] = 500;
        let mut test = LatencyTest::new(0.99, 1.5, 0.95, 100);
        assert!(!test.check(&few, &control).enough);
    }
}
