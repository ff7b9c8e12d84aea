//! The key index of a compiled config: flag key → number, in one flat
//! table whose slots hold short keys inline.
//!
//! A check by key hashes the key and reads one 32-byte slot; a key of up
//! to [`INLINE`] bytes (most flag keys) is compared right there, as two
//! words ([`pack`]), so a lookup that misses cache misses once, where a
//! hash map of boxed keys misses on its control bytes, its bucket and the
//! key's own allocation. Longer keys live in one arena, in the order they
//! were added.

use std::hash::BuildHasher;

use super::pack;

/// Key bytes a slot compares inline.
const INLINE: usize = 16;

/// The `len` of an empty slot.
const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    /// The key hash's top 32 bits (the low bits chose the slot).
    hash: u32,
    value: u32,
    /// The key's length, or [`EMPTY`].
    len: u32,
    /// A long key's start in the arena.
    start: u32,
    /// A short key's bytes, packed.
    words: (u64, u64),
}

const VACANT: Slot = Slot { hash: 0, value: 0, len: EMPTY, start: 0, words: (0, 0) };

/// Flag keys and their numbers; built once per compiled config.
#[derive(Clone)]
pub(crate) struct KeyIndex {
    /// A power of two, at least twice the keys: probes are short and
    /// always reach an empty slot.
    slots: Box<[Slot]>,
    arena: String,
    hasher: foldhash::fast::FixedState,
}

impl KeyIndex {
    /// An index of `entries` (a key given twice keeps its last number).
    /// Keys of 4 GiB or more are left out (no document holds one).
    pub(crate) fn new<'k>(entries: impl ExactSizeIterator<Item = (&'k str, u32)>) -> Self {
        let size = (entries.len() * 2).max(8).next_power_of_two();
        let mut index = KeyIndex {
            slots: vec![VACANT; size].into_boxed_slice(),
            arena: String::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x666c_6167_7374_6f6e),
        };
        for (key, value) in entries {
            index.insert(key, value);
        }
        index.arena.shrink_to_fit();
        index
    }

    fn insert(&mut self, key: &str, value: u32) {
        let Some(want) = Want::of(key) else { return };
        let (hash, at) = self.place(key);
        match self.probe(hash, at, &want) {
            Ok(found) => {
                if let Some(slot) = self.slots.get_mut(found) {
                    slot.value = value;
                }
            }
            Err(vacant) => {
                let mut slot = Slot { hash, value, ..VACANT };
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

    /// The number of `key`, if the index has it.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        let want = Want::of(key)?;
        let (hash, at) = self.place(key);
        let found = self.probe(hash, at, &want).ok()?;
        self.slots.get(found).map(|slot| slot.value)
    }

    /// From `at` on, the slot holding the key `want` describes (`Ok`), or
    /// the empty slot that ends its run (`Err`). The table is at most half
    /// full, so a run always ends.
    #[inline]
    fn probe(&self, hash: u32, mut at: usize, want: &Want<'_>) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        loop {
            let Some(slot) = self.slots.get(at) else { return Err(at) };
            if slot.len == EMPTY {
                return Err(at);
            }
            if slot.hash == hash && self.holds(slot, want) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    #[inline]
    fn place(&self, key: &str) -> (u32, usize) {
        let hash = self.hasher.hash_one(key);
        ((hash >> 32) as u32, (hash as usize) & (self.slots.len() - 1))
    }

    /// Whether a full slot holds the key `want` describes.
    #[inline]
    fn holds(&self, slot: &Slot, want: &Want<'_>) -> bool {
        match *want {
            Want::Short { len, words } => slot.len == len && slot.words == words,
            Want::Long(key) => {
                let start = slot.start as usize;
                slot.len as usize == key.len()
                    && self.arena.get(start..start + key.len()) == Some(key)
            }
        }
    }
}

/// A key as slots compare it: packed when short, else its text.
enum Want<'k> {
    Short { len: u32, words: (u64, u64) },
    Long(&'k str),
}

impl<'k> Want<'k> {
    /// `None` for a key of 4 GiB or more (no document holds one).
    #[inline]
    fn of(key: &'k str) -> Option<Self> {
        if key.len() <= INLINE {
            Some(Want::Short { len: key.len() as u32, words: pack(key.as_bytes()) })
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
        let index = KeyIndex::new(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(index.get(key), Some(i as u32), "{key:?}");
        }
        for absent in
            ["flag-5000", "flag-", "a", "a\0\0", "seventeen-bytes-A", "sixteen-bytes-aB", "x"]
        {
            assert_eq!(index.get(absent), None, "{absent:?}");
        }
        let arena = keys.iter().filter(|k| k.len() > INLINE).map(|k| k.len()).sum::<usize>();
        assert_eq!(index.arena.len(), arena);
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_number() {
        let index = KeyIndex::new([("a", 1), ("b", 2), ("a", 3)].into_iter());
        assert_eq!((index.get("a"), index.get("b")), (Some(3), Some(2)));
        let empty = KeyIndex::new(std::iter::empty());
        assert_eq!(empty.get("a"), None);
    }
}
