#!/usr/bin/env python3
"""Golden vectors for flagstone's bucketing spec, from an independent implementation.

Uses the `xxhash` package from PyPI (bindings to the reference C library), not
the Rust crate, so the Rust implementation is checked against someone else's
reading of xxh3. Regenerate with:

    pip install xxhash && python3 tools/golden_vectors.py > tests/it/testdata/golden.json

The spec (docs/bucketing.md):
    holdback bucket = bucket(salt + ":holdback", unit)
    seed   = xxh3_64(salt)
    h      = xxh3_64_with_seed(unit, seed)
    bucket = (h * 100_000) >> 64
    vseed  = xxh3_64(salt + ".variant");  hv = xxh3_64_with_seed(unit, vseed)
    x      = (hv * total_weight) >> 64;   first variant whose cumulative weight > x
"""
import json
import xxhash


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

print(json.dumps({
    "generator": "tools/golden_vectors.py with xxhash " + xxhash.VERSION,
    "buckets": vectors,
    "variants": variants,
    "holdbacks": holdbacks,
}, indent=1, ensure_ascii=False))
