//! The bucketing spec: a compatibility contract shared with every other
//! implementation of flagstone.
//!
//! ```text
//! seed   = xxh3_64(salt as UTF-8)                       // salt defaults to the flag key; seed 0
//! h      = xxh3_64_with_seed(unit as UTF-8, seed)       // unit = the bucket_by value
//! bucket = ((h as u128 * 100_000) >> 64) as u32         // 0 ..= 99_999
//! in percent p  <=>  bucket < round(p * 1000)           // p in 0..=100, at most 3 decimals
//! variant: vseed = xxh3_64((salt + ".variant") as UTF-8); hv = xxh3_64_with_seed(unit, vseed);
//!          x = (hv as u128 * total_weight) >> 64; first variant in array order whose
//!          cumulative weight > x
//! holdback: the bucket above under the salt (salt + ":holdback"); held back <=> < round(h * 1000)
//! ```
//!
//! `docs/bucketing.md` carries the golden vectors, computed by an independent
//! implementation; `tests/it/golden.rs` holds the crate to them. Changing any
//! number here is a breaking change.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The number of buckets: a unit's bucket is in `0..BUCKETS`.
///
/// One bucket is a thousandth of a percent, so a percentage with three
/// decimals maps onto a whole number of buckets.
pub const BUCKETS: u32 = 100_000;

/// The bucket (`0..100_000`) of `unit` under `salt`, exactly as flag
/// evaluation computes it.
///
/// A unit is in a rollout of `p` percent when its bucket is below
/// `round(p * 1000)`. Raising the percentage only ever adds units, and two
/// flags with different salts bucket independently.
///
/// # Example
///
/// ```
/// let b = flagstone::bucket("new-checkout", "t-104");
/// assert!(b < flagstone::BUCKETS);
/// // The same unit lands in the same bucket everywhere, every time.
/// assert_eq!(b, flagstone::bucket("new-checkout", "t-104"));
/// ```
#[inline]
pub fn bucket(salt: &str, unit: &str) -> u32 {
    bucket_seeded(salt_seed(salt), unit)
}

/// The variant index that the spec picks for `unit` among `weights`, or
/// `None` when `weights` is empty or sums to zero.
///
/// This is the variant half of the spec, exposed so that other
/// implementations can check themselves against it (the flag's salt is
/// given here; `".variant"` is appended as the spec says).
///
/// # Example
///
/// ```
/// let i = flagstone::variant_index("new-checkout", "t-104", &[50, 50]);
/// assert!(matches!(i, Some(0) | Some(1)));
/// assert_eq!(flagstone::variant_index("new-checkout", "t-104", &[]), None);
/// ```
pub fn variant_index(salt: &str, unit: &str, weights: &[u32]) -> Option<usize> {
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut total = 0u64;
    for &w in weights {
        total += u64::from(w);
        cumulative.push(total);
    }
    if total == 0 {
        return None;
    }
    let x = variant_point(variant_seed(salt), unit, total);
    cumulative.iter().position(|&c| c > x)
}

/// The holdback bucket (`0..100_000`) of `unit` for a flag with this salt:
/// the spec's bucket under the salt `salt + ":holdback"`. A guard with
/// `holdback: h` holds a unit of the newest stage's new audience back
/// when this bucket is below `round(h * 1000)`.
///
/// Independent of the unit's rollout bucket, so a holdback takes the same
/// share of every percentage, and the same units on every instance.
///
/// # Example
///
/// ```
/// let b = flagstone::holdback_bucket("new-checkout", "t-104");
/// assert!(b < flagstone::BUCKETS);
/// assert_ne!(b, flagstone::bucket("new-checkout", "t-104"));
/// ```
pub fn holdback_bucket(salt: &str, unit: &str) -> u32 {
    bucket_seeded(holdback_seed(salt), unit)
}

/// The holdback seed of a salt: `xxh3_64(salt + ":holdback")`.
pub(crate) fn holdback_seed(salt: &str) -> u64 {
    xxh3_64(format!("{salt}:holdback").as_bytes())
}

/// The seed of a salt: `xxh3_64(salt)`.
#[inline]
pub(crate) fn salt_seed(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The variant seed of a salt: `xxh3_64(salt + ".variant")`.
pub(crate) fn variant_seed(salt: &str) -> u64 {
    xxh3_64(format!("{salt}.variant").as_bytes())
}

/// The bucket of a unit under an already computed seed.
#[inline]
pub(crate) fn bucket_seeded(seed: u64, unit: &str) -> u32 {
    let h = xxh3_64_with_seed(unit.as_bytes(), seed);
    // Multiply-shift maps the hash onto 0..100_000 without the bias of `%`.
    ((u128::from(h) * u128::from(BUCKETS)) >> 64) as u32
}

/// The point in `0..total_weight` that picks a unit's variant.
#[inline]
pub(crate) fn variant_point(vseed: u64, unit: &str, total_weight: u64) -> u64 {
    let h = xxh3_64_with_seed(unit.as_bytes(), vseed);
    ((u128::from(h) * u128::from(total_weight)) >> 64) as u64
}

/// The bucket threshold of a percentage: `round(p * 1000)`.
///
/// Callers pass a validated `p` in `0..=100`; anything else saturates into
/// `0..=BUCKETS` rather than wrapping.
pub(crate) fn threshold(percent: f64) -> u32 {
    let t = (percent * 1000.0).round();
    if t.is_nan() || t <= 0.0 {
        0
    } else if t >= f64::from(BUCKETS) {
        BUCKETS
    } else {
        t as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_in_range() {
        for i in 0..10_000 {
            assert!(bucket("salt", &format!("unit-{i}")) < BUCKETS);
        }
    }

    #[test]
    fn thresholds_round_to_thousandths_of_a_percent() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(5.0), 5_000);
        assert_eq!(threshold(0.1), 100);
        assert_eq!(threshold(12.345), 12_345);
        assert_eq!(threshold(100.0), BUCKETS);
        assert_eq!(threshold(f64::NAN), 0);
        assert_eq!(threshold(1e9), BUCKETS);
    }

    #[test]
    fn variant_index_follows_cumulative_weights() {
        // All weight on the second variant: everyone gets it.
        for i in 0..100 {
            assert_eq!(variant_index("s", &format!("u{i}"), &[0, 7, 0]), Some(1));
        }
        assert_eq!(variant_index("s", "u", &[0, 0]), None);
    }
}
