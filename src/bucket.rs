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
    // Streamed, so the joined text is never built (no allocation or
    // formatting per flag compiled); the digest is the one-shot hash's.
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(salt.as_bytes());
    hasher.update(b".variant");
    hasher.digest()
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

/// The seed Unleash hashes variant stickiness with (since its client
/// specification 5.0.0; rollouts use seed 0).
pub const UNLEASH_VARIANT_SEED: u32 = 86_028_157;

/// Unleash's normalized hash: `murmur3_x86_32("{group}:{unit}", seed) % n
/// + 1`, in `1..=n` (0 when `n` is 0).
///
/// A flag with `"bucketing": "unleash"` puts `unit` in a rollout of `p`
/// percent when `unleash_normalized_hash(salt, unit, 100, 0) <= p`, and
/// picks its variant with `n` = the total weight and
/// [`UNLEASH_VARIANT_SEED`]: the first variant whose cumulative weight
/// reaches the value. These are Unleash's own numbers, so a unit imported
/// from Unleash stays in its rollout and keeps its variant.
///
/// # Example
///
/// ```
/// // Vectors from Unleash's client specification.
/// assert_eq!(flagstone::unleash_normalized_hash("AB12A", "122", 100, 0), 23);
/// assert_eq!(flagstone::unleash_normalized_hash("AB12A", "155", 100, 0), 100);
/// ```
pub fn unleash_normalized_hash(group: &str, unit: &str, n: u32, seed: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    unleash_hash(group, unit, seed) % n + 1
}

/// MurmurHash3 (x86, 32 bits) of `"{group}:{unit}"`. (Flag evaluation
/// keeps the state after `"{group}:"` instead, made once per config.)
pub(crate) fn unleash_hash(group: &str, unit: &str, seed: u32) -> u32 {
    let mut prefix = Murmur3Prefix::new(group.as_bytes(), seed);
    prefix = prefix.then(b":");
    prefix.finish(unit.as_bytes())
}

/// MurmurHash3 x86_32 part way: the state after a prefix's whole 4-byte
/// blocks, and the 0 to 3 bytes left over. Made once per salt when a
/// config is compiled, so that a check hashes only its unit (and without
/// copying it anywhere).
#[derive(Clone, Debug)]
pub(crate) struct Murmur3Prefix {
    h: u32,
    /// The bytes left over, as the low bytes of a little-endian word.
    pending: u32,
    pending_len: usize,
    len: usize,
}

const M3_C1: u32 = 0xcc9e_2d51;
const M3_C2: u32 = 0x1b87_3593;

#[inline]
fn m3_k(k: u32) -> u32 {
    k.wrapping_mul(M3_C1).rotate_left(15).wrapping_mul(M3_C2)
}

#[inline]
fn m3_block(h: u32, k: u32) -> u32 {
    (h ^ m3_k(k)).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

/// Up to three bytes as the low bytes of a little-endian word.
#[inline]
fn m3_partial(bytes: &[u8], shift: usize) -> u32 {
    bytes.iter().enumerate().fold(0, |word, (i, &b)| word | u32::from(b) << (8 * (shift + i)))
}

impl Murmur3Prefix {
    /// The state after hashing `prefix` with `seed`.
    pub(crate) fn new(prefix: &[u8], seed: u32) -> Self {
        let mut h = seed;
        let mut blocks = prefix.chunks_exact(4);
        for b in &mut blocks {
            h = m3_block(h, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        let rest = blocks.remainder();
        Self { h, pending: m3_partial(rest, 0), pending_len: rest.len(), len: prefix.len() }
    }

    /// The state after more prefix bytes.
    pub(crate) fn then(self, more: &[u8]) -> Self {
        let (mut h, mut pending, mut filled) = (self.h, self.pending, self.pending_len);
        for &b in more {
            pending |= u32::from(b) << (8 * filled);
            filled += 1;
            if filled == 4 {
                h = m3_block(h, pending);
                (pending, filled) = (0, 0);
            }
        }
        Self { h, pending, pending_len: filled, len: self.len + more.len() }
    }

    /// The hash of the prefix followed by `unit`.
    #[inline]
    pub(crate) fn finish(&self, unit: &[u8]) -> u32 {
        let (mut h, mut pending, mut filled) = (self.h, self.pending, self.pending_len);
        let mut rest = unit;
        if filled > 0 {
            // The prefix's last block, completed by the unit's first bytes.
            let take = (4 - filled).min(rest.len());
            pending |= m3_partial(&rest[..take], filled);
            filled += take;
            rest = &rest[take..];
            if filled == 4 {
                h = m3_block(h, pending);
                (pending, filled) = (0, 0);
            }
        }
        if filled == 0 {
            let mut blocks = rest.chunks_exact(4);
            for b in &mut blocks {
                h = m3_block(h, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            let tail = blocks.remainder();
            (pending, filled) = (m3_partial(tail, 0), tail.len());
        }
        if filled > 0 {
            h ^= m3_k(pending);
        }
        // The length is mixed in mod 2^32, as the reference does.
        h ^= (self.len + unit.len()) as u32;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
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
    fn streamed_variant_seeds_are_those_of_the_joined_string() {
        for len in 0..=300 {
            let salt: String = "kéy-".chars().cycle().take(len).collect();
            let joined = format!("{salt}.variant");
            assert_eq!(variant_seed(&salt), xxh3_64(joined.as_bytes()), "{len}");
        }
    }

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
    fn unleash_hashes_match_the_client_specification() {
        // From docs of Unleash's client specification (files 10, 12, 16).
        assert_eq!(unleash_normalized_hash("Feature.flexibleRollout.10", "174", 100, 0), 10);
        assert_eq!(unleash_normalized_hash("AB12A", "122", 100, 0), 23);
        assert_eq!(
            unleash_normalized_hash("Feature.Variants.D", "712", 100, UNLEASH_VARIANT_SEED),
            1
        );
        assert_eq!(unleash_normalized_hash("a", "5", 2, UNLEASH_VARIANT_SEED), 1);
        assert_eq!(unleash_normalized_hash("a", "0", 2, UNLEASH_VARIANT_SEED), 2);
        assert_eq!(unleash_normalized_hash("g", "u", 0, 0), 0);
    }

    #[test]
    fn the_prefix_resuming_murmur3_is_murmur3() {
        // Against TiKV's mur3 over every split of prefix and unit lengths,
        // alignments included, and both seeds.
        let bytes: Vec<u8> =
            (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for seed in [0, UNLEASH_VARIANT_SEED, 0xdead_beef] {
            for p in 0..12 {
                for u in (0..40).chain([63, 64, 65, 200, 288]) {
                    let (prefix, unit) = (&bytes[..p], &bytes[p..p + u]);
                    assert_eq!(
                        Murmur3Prefix::new(prefix, seed).finish(unit),
                        mur3::murmurhash3_x86_32(&bytes[..p + u], seed),
                        "prefix {p} unit {u} seed {seed}"
                    );
                }
            }
        }
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
