//! The key index of a compiled config: flag key → [`Hot`] record, in one
//! flat table whose slots hold short keys inline.
//!
//! A check by key hashes the key and reads one 64-byte slot, one cache
//! line: a key of up to [`INLINE`] bytes (most flag keys) is compared right
//! there, as two words ([`pack`]), and the slot holds the flag's hot record
//! too, so a check of a common flag that misses cache misses once here,
//! where a hash map of boxed keys misses on its control bytes, its bucket,
//! the key's own allocation and then the flag. Longer keys live in one
//! arena, in the order they were added.

use xxhash_rust::xxh3::xxh3_64;

use super::hot::Hot;
use super::pack;

/// Key bytes a slot compares inline.
const INLINE: usize = 16;

/// The `len` of an empty slot.
const EMPTY: u32 = u32::MAX;

/// One key and its record, on a cache line of its own.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Slot {
    /// A short key's bytes, packed.
    words: (u64, u64),
    /// A long key's tag: its hash's low 32 bits (the high bits chose the
    /// slot). Short keys are told apart by their words and length alone.
    hash: u32,
    /// The key's length, or [`EMPTY`].
    len: u32,
    /// A long key's start in the arena.
    start: u32,
    hot: Hot,
}

const VACANT: Slot = Slot { words: (0, 0), hash: 0, len: EMPTY, start: 0, hot: Hot::absent(0) };

/// Flag keys and their records; built once per compiled config.
#[derive(Clone)]
pub(crate) struct KeyIndex {
    /// One and a half slots a key (and 8 more): at most two thirds full,
    /// so probes are short and always reach an empty slot, and the table
    /// is small enough that a large config's lookups miss cache (and the
    /// TLB) less.
    slots: Box<[Slot]>,
    arena: String,
}

impl KeyIndex {
    /// An index of `entries` (a key given twice keeps its last record).
    /// Keys of 4 GiB or more are left out (no document holds one).
    pub(crate) fn new<'k>(entries: impl ExactSizeIterator<Item = (&'k str, Hot)>) -> Self {
        let size = entries.len() + entries.len() / 2 + 8;
        let mut index =
            KeyIndex { slots: vec![VACANT; size].into_boxed_slice(), arena: String::new() };
        for (key, hot) in entries {
            index.insert(key, hot);
        }
        index.arena.shrink_to_fit();
        index
    }

    fn insert(&mut self, key: &str, hot: Hot) {
        let Some(want) = Want::of(key) else { return };
        let (hash, at) = self.place(&want);
        match self.probe(hash, at, &want) {
            Ok(found) => {
                if let Some(slot) = self.slots.get_mut(found) {
                    slot.hot = hot;
                }
            }
            Err(vacant) => {
                let mut slot = Slot { hash, hot, ..VACANT };
                match want {
                    Want::Short { len, words } => (slot.len, slot.words) = (len, words),
                    Want::Long(key) => {
                        let Ok(start) = u32::try_from(self.arena.len()) else { return };
                        (slot.len, slot.start) = (key.len() as u32, start);
                        self.arena.push_str(key);
                    }
                }
                if let Some(vacant) = self.slots.get_mut(vacant) {
                    *vacant = slot;
                }
            }
        }
    }

    /// The record of `key`, if the index has it.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&Hot> {
        if key.len() > INLINE {
            return self.get_long(key);
        }
        // A short key, so the inlined probe compares only packed words.
        self.find(&Want::short(key))
    }

    /// [`KeyIndex::get`] for a key longer than [`INLINE`] (out of line:
    /// it compares bytes in the arena).
    #[inline(never)]
    fn get_long(&self, key: &str) -> Option<&Hot> {
        self.find(&Want::of(key)?)
    }

    #[inline(always)]
    fn find(&self, want: &Want<'_>) -> Option<&Hot> {
        let (hash, at) = self.place(want);
        let found = self.probe(hash, at, want).ok()?;
        self.slots.get(found).map(|slot| &slot.hot)
    }

    /// Every key's record, to recompute after the flags change.
    pub(crate) fn records_mut(&mut self) -> impl Iterator<Item = &mut Hot> {
        self.slots.iter_mut().filter(|s| s.len != EMPTY).map(|s| &mut s.hot)
    }

    /// From `at` on, the slot holding the key `want` describes (`Ok`), or
    /// the empty slot that ends its run (`Err`). The table is at most two
    /// thirds full, so a run always ends.
    #[inline]
    fn probe(&self, hash: u32, mut at: usize, want: &Want<'_>) -> Result<usize, usize> {
        loop {
            let Some(slot) = self.slots.get(at) else { return Err(at) };
            if slot.len == EMPTY {
                return Err(at);
            }
            if self.holds(slot, hash, want) {
                return Ok(at);
            }
            at += 1;
            if at == self.slots.len() {
                at = 0;
            }
        }
    }

    /// The key's tag (the hash's low half) and first slot (its high half,
    /// multiplied onto the table's size): a short key's two packed words
    /// and length folded by one multiplication, a long key's xxh3.
    #[inline]
    fn place(&self, want: &Want<'_>) -> (u32, usize) {
        let hash = match *want {
            Want::Short { len, words: (a, b) } => {
                fold(a ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344 ^ u64::from(len) << 59)
            }
            Want::Long(key) => xxh3_64(key.as_bytes()),
        };
        let at = (u128::from(hash) * self.slots.len() as u128) >> 64;
        (hash as u32, at as usize)
    }

    /// Whether a full slot holds the key `want` (of hash `hash`)
    /// describes: a short key's length and words say exactly, a long key
    /// is compared in the arena when its hash matches.
    #[inline]
    fn holds(&self, slot: &Slot, hash: u32, want: &Want<'_>) -> bool {
        match *want {
            Want::Short { len, words } => slot.len == len && slot.words == words,
            Want::Long(key) => {
                let start = slot.start as usize;
                slot.hash == hash
                    && slot.len as usize == key.len()
                    && self.arena.get(start..start + key.len()) == Some(key)
            }
        }
    }
}

/// The two halves of a full 64 × 64-bit product, xored (as foldhash and
/// wyhash mix).
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// A key as slots compare it: packed when short, else its text.
enum Want<'k> {
    Short { len: u32, words: (u64, u64) },
    Long(&'k str),
}

impl<'k> Want<'k> {
    /// A key of up to [`INLINE`] bytes, packed.
    #[inline(always)]
    fn short(key: &str) -> Self {
        Want::Short { len: key.len() as u32, words: pack(key.as_bytes()) }
    }

    /// `None` for a key of 4 GiB or more (no document holds one).
    #[inline]
    fn of(key: &'k str) -> Option<Self> {
        if key.len() <= INLINE {
            Some(Want::short(key))
        } else {
            u32::try_from(key.len()).ok().filter(|&len| len != EMPTY).map(|_| Want::Long(key))
        }
    }
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.slots.iter().filter(|s| s.len != EMPTY).count();
        f.debug_struct("KeyIndex").field("keys", &keys).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_short_and_long_and_nothing_else() {
        let mut keys: Vec<String> = (0..5000).map(|i| format!("flag-{i}")).collect();
        keys.push(String::new());
        keys.push("sixteen-bytes-ab".into());
        keys.push("seventeen-bytes-a".into());
        keys.push("eight-by".into());
        keys.push("a\0".into());
        keys.push("é-ünïcode-keys-that-are-rather-long-indeed".into());
        keys.extend((0..300).map(|i| format!("a-key-long-enough-to-live-in-the-arena-{i}")));
        let index = numbered(keys.iter().map(String::as_str));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(index.get(key).map(|h| h.off), Some(i as u32), "{key:?}");
        }
        for absent in
            ["flag-5000", "flag-", "a", "a\0\0", "seventeen-bytes-A", "sixteen-bytes-aB", "x"]
        {
            assert!(index.get(absent).is_none(), "{absent:?}");
        }
        let arena = keys.iter().filter(|k| k.len() > INLINE).map(|k| k.len()).sum::<usize>();
        assert_eq!(index.arena.len(), arena);
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_number() {
        let index = KeyIndex::new(
            [("a", 1), ("b", 2), ("a", 3)].map(|(k, n)| (k, Hot::absent(n))).into_iter(),
        );
        let off = |key| index.get(key).map(|h| h.off);
        assert_eq!((off("a"), off("b")), (Some(3), Some(2)));
        let empty = KeyIndex::new(std::iter::empty());
        assert!(empty.get("a").is_none());
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn keys_that_differ_only_in_their_digits_spread_over_the_table() {
        // Generated keys share their head and most of their tail; the
        // probes must stay short all the same.
        for keys in [
            (0..100_000).map(|i| format!("filler-{i}")).collect::<Vec<_>>(),
            (0..20_000).map(|i| format!("team-checkout.flag-{i:05}")).collect(),
            (0..20_000).map(|i| format!("f{i}")).collect(),
        ] {
            let index = numbered(keys.iter().map(String::as_str));
            let probes: usize = keys
                .iter()
                .map(|key| {
                    let want = Want::of(key).expect("short enough");
                    let (hash, at) = index.place(&want);
                    let found = index.probe(hash, at, &want).expect("present");
                    (found + index.slots.len() - at) % index.slots.len() + 1
                })
                .sum();
            // Linear probing in a table two thirds full averages 2 slots a
            // lookup when the hash is as good as random.
            let mean = probes as f64 / keys.len() as f64;
            assert!(mean < 2.3, "{} keys like {:?}: {mean} slots a lookup", keys.len(), keys[1]);
        }
    }

    /// An index of `keys`, each recording its position as its `off` cell.
    fn numbered<'k>(keys: impl Iterator<Item = &'k str>) -> KeyIndex {
        let entries: Vec<(&str, Hot)> =
            keys.enumerate().map(|(i, k)| (k, Hot::absent(i as u32))).collect();
        KeyIndex::new(entries.into_iter())
    }
}
