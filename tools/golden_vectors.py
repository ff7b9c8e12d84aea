#!/usr/bin/env python3
"""Golden vectors for flagstone's bucketing spec, from an independent implementation.

Uses the `xxhash` package from PyPI (bindings to the reference C library), not
the Rust crate, so the Rust implementation is checked against someone else's
reading of xxh3; and `mmh3` (bindings to Austin Appleby's MurmurHash3) for the
Unleash-compatible bucketing. Regenerate with:

    pip install xxhash mmh3 && python3 tools/golden_vectors.py > tests/it/testdata/golden.json

The spec (docs/bucketing.md):
    holdback bucket = bucket(salt + ":holdback", unit)
    seed   = xxh3_64(salt)
    h      = xxh3_64_with_seed(unit, seed)
    bucket = (h * 100_000) >> 64
    vseed  = xxh3_64(salt + ".variant");  hv = xxh3_64_with_seed(unit, vseed)
    x      = (hv * total_weight) >> 64;   first variant whose cumulative weight > x
"""
import importlib.metadata
import json
import mmh3
import xxhash

UNLEASH_VARIANT_SEED = 86028157


def bucket(salt: str, unit: str) -> int:
    seed = xxhash.xxh3_64_intdigest(salt.encode())
    h = xxhash.xxh3_64_intdigest(unit.encode(), seed=seed)
    return (h * 100_000) >> 64


def variant(salt: str, unit: str, weights: list[int]) -> int:
    vseed = xxhash.xxh3_64_intdigest((salt + ".variant").encode())
    hv = xxhash.xxh3_64_intdigest(unit.encode(), seed=vseed)
    x = (hv * sum(weights)) >> 64
    acc = 0
    for i, w in enumerate(weights):
        acc += w
        if acc > x:
            return i
    raise AssertionError("unreachable: x < total weight")


# Units of every length class xxh3 treats differently: 0, 1-3, 4-8, 9-16,
# 17-128, 129-240 and over 240 bytes, plus non-ASCII UTF-8.
units = [
    "", "a", "t-1", "acme", "u-42", "t-104", "t-221", "bank-1", "eu-west",
    "acme-internal", "tenant-0000000001", "user@example.com",
    "a-unit-with-exactly-thirty-two-b", "x" * 100, "y" * 129, "z" * 200,
    "w" * 240, "v" * 241, "long-" * 100, "müller", "東京-tenant", "🚀",
]
salts = ["new-checkout", "dark-mode", "", "salt with spaces", "ß-salt"]

vectors = []
for i, unit in enumerate(units):
    salt = salts[i % len(salts)]
    vectors.append({"salt": salt, "unit": unit, "bucket": bucket(salt, unit)})
for unit in ["t-104", "t-221", "acme"]:
    vectors.append({"salt": "new-checkout", "unit": unit, "bucket": bucket("new-checkout", unit)})

weights_cases = [[50, 50], [1, 2, 3], [10, 0, 90], [1], [33, 33, 34], [4294967295, 4294967295]]
variants = []
for i, unit in enumerate(units[:16]):
    weights = weights_cases[i % len(weights_cases)]
    salt = salts[i % len(salts)]
    variants.append({"salt": salt, "unit": unit, "weights": weights,
                     "index": variant(salt, unit, weights)})

# A guard's holdback bucket: the bucket under the salt + ":holdback".
holdbacks = []
for i, unit in enumerate(units):
    salt = salts[i % len(salts)]
    holdbacks.append({"salt": salt, "unit": unit, "bucket": bucket(salt + ":holdback", unit)})


def unleash_normalized(group: str, unit: str, n: int, seed: int) -> int:
    """Unleash's normalizedHash: murmur3_x86_32("{group}:{unit}", seed) % n + 1."""
    return mmh3.hash(f"{group}:{unit}".encode(), seed, signed=False) % n + 1


def unleash_variant(group: str, unit: str, weights: list[int]) -> int:
    target = unleash_normalized(group, unit, sum(weights), UNLEASH_VARIANT_SEED)
    acc = 0
    for i, w in enumerate(weights):
        acc += w
        if acc >= target:
            return i
    raise AssertionError("unreachable: target <= total weight")


# Unleash bucketing ("bucketing": "unleash"): rollouts with seed 0 over 100,
# variants with seed 86028157 over the total weight.
unleash = []
for i, unit in enumerate(units):
    group = salts[i % len(salts)]
    unleash.append({"group": group, "unit": unit, "n": 100, "seed": 0,
                    "normalized": unleash_normalized(group, unit, 100, 0)})
    unleash.append({"group": group, "unit": unit, "n": 1000, "seed": UNLEASH_VARIANT_SEED,
                    "normalized": unleash_normalized(group, unit, 1000, UNLEASH_VARIANT_SEED)})
unleash_variants = []
for i, unit in enumerate(units[:16]):
    weights = weights_cases[i % len(weights_cases)][:]
    if sum(weights) >= 2**32:
        weights = [500, 500]
    group = salts[i % len(salts)]
    unleash_variants.append({"group": group, "unit": unit, "weights": weights,
                             "index": unleash_variant(group, unit, weights)})

print(json.dumps({
    "generator": "tools/golden_vectors.py with xxhash " + xxhash.VERSION + " and mmh3 " + importlib.metadata.version("mmh3"),
    "buckets": vectors,
    "variants": variants,
    "holdbacks": holdbacks,
    "unleash": unleash,
    "unleash_variants": unleash_variants,
}, indent=1, ensure_ascii=False))
