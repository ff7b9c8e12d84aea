//! The key index of a compiled config: flag key → [`Hot`] record, as a
//! small table of tags over dense entries. A cohort's large name sets
//! (more than [`FEW`](super::FEW) tenants, users, regions or values) are
//! the same table with no record (`KeyIndex<()>`), so a short name is
//! looked up with no call either.
//!
//! A check by key hashes the key and probes the table, four bytes a slot
//! (a tag and an entry number), so the part of the index a lookup touches
//! at random stays small: 600 KB for 100,000 keys, where slots that held
//! the key and record themselves took 9.6 MB and missed cache (and the
//! TLB) on nearly every check. Only a slot whose tag matches sends the
//! lookup on to its entry, where a key of up to [`INLINE`] bytes (most
//! flag keys) is compared as two words (its bytes and length) beside the
//! flag's hot record. Entries are in the order keys were added, the config's flag
//! order, as the flags and their counter cells are, so checks of flags
//! that sit near each other in the config stream through memory, 40 bytes
//! an entry. Longer keys live in one arena, in the same order.

use xxhash_rust::xxh3::xxh3_64;

use super::hot::Hot;
use super::pack;

/// Key bytes an entry compares inline.
const INLINE: usize = 15;

/// The top byte of a long key's second word: no short key's (its length,
/// at most [`INLINE`]).
const LONG: u64 = 0xff << 56;

/// An empty slot. No full slot is all ones: its entry number, in the
/// slot's high bits, is below the largest those bits hold.
const EMPTY: u32 = u32::MAX;

/// One key and its record; with a [`Hot`] record, 40 bytes: eight
/// entries to five cache lines, so checks of neighbouring flags stream
/// through fewer of them.
#[derive(Clone, Copy)]
struct Entry<V> {
    /// A short key's bytes and length ([`Want::short`]); for a long key,
    /// its start and length in the arena, then [`LONG`].
    words: (u64, u64),
    value: V,
}

/// Keys and their records (flag keys and [`Hot`] records by default);
/// built once per compiled config.
#[derive(Clone)]
pub(crate) struct KeyIndex<V = Hot> {
    /// One and a half slots a key (and 8 more): at most two thirds full,
    /// so probes are short and always reach an empty slot. A slot is
    /// [`EMPTY`] or holds its key's entry number in its high bits (from
    /// `shift` on) and, below them, the key's tag: as many of its
    /// hash's low bits as fit (15 with 100,000 keys, so one probe in
    /// 32,768 past another key's slot reads that key's entry for nothing).
    slots: Box<[u32]>,
    /// Where a slot's entry number starts, at most 31.
    shift: u32,
    /// The bits of a slot below `shift`: its tag.
    tag_mask: u32,
    entries: Vec<Entry<V>>,
    arena: String,
}

impl<V: Copy> KeyIndex<V> {
    /// An index of `entries` (a key given twice keeps its last record).
    /// Keys of 4 GiB or more are left out (no document holds one), and so
    /// are keys past the 4 billionth.
    pub(crate) fn new<'k>(entries: impl ExactSizeIterator<Item = (&'k str, V)>) -> Self {
        let size = entries.len() + entries.len() / 2 + 8;
        Self::with_slots(entries, size)
    }

    /// [`KeyIndex::new`] at most a quarter full, for sets looked up mostly
    /// for names they lack (a cohort's tenants, checked for every tenant):
    /// such a lookup ends at the first empty slot, after 1.4 slots on
    /// average where two thirds full takes 5. Four slots a key are 16
    /// bytes, less than the key's entry.
    pub(crate) fn sparse<'k>(entries: impl ExactSizeIterator<Item = (&'k str, V)>) -> Self {
        let size = entries.len().saturating_mul(4).saturating_add(8);
        Self::with_slots(entries, size)
    }

    fn with_slots<'k>(entries: impl ExactSizeIterator<Item = (&'k str, V)>, size: usize) -> Self {
        // Entry numbers 0..n in the high `bits` bits, none all ones.
        let bits = (usize::BITS - entries.len().leading_zeros()).clamp(1, u32::BITS);
        let shift = u32::BITS - bits;
        let mut index = KeyIndex {
            slots: vec![EMPTY; size].into_boxed_slice(),
            shift,
            tag_mask: u32::MAX.checked_shr(bits).unwrap_or(0),
            entries: Vec::with_capacity(entries.len()),
            arena: String::new(),
        };
        for (key, value) in entries {
            index.insert(key, value);
        }
        index.entries.shrink_to_fit();
        index.arena.shrink_to_fit();
        index
    }

    fn insert(&mut self, key: &str, value: V) {
        let Some(want) = Want::of(key) else { return };
        let (tag, at) = self.place(&want);
        match self.probe(tag, at, &want) {
            Ok(found) => {
                if let Some(entry) = self.entries.get_mut(found) {
                    entry.value = value;
                }
            }
            Err(vacant) => {
                // The entry's number, if it fits above the tag (and is not
                // all ones).
                let number = self.entries.len();
                if (number as u64 + 1) << self.shift > u64::from(u32::MAX) {
                    return;
                }
                let words = match want {
                    Want::Short(words) => words,
                    Want::Long(key) => {
                        let Ok(start) = u32::try_from(self.arena.len()) else { return };
                        self.arena.push_str(key);
                        (u64::from(start) | (key.len() as u64) << 32, LONG)
                    }
                };
                let entry = Entry { words, value };
                if let Some(slot) = self.slots.get_mut(vacant) {
                    *slot = (number as u32) << self.shift | tag;
                    self.entries.push(entry);
                }
            }
        }
    }

    /// The record of `key`, if the index has it.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        if key.len() > INLINE {
            return self.get_long(key);
        }
        // A short key, so the inlined probe compares only packed words.
        self.find(&Want::short(key))
    }

    /// [`KeyIndex::get`] for a key longer than [`INLINE`] (out of line:
    /// it compares bytes in the arena).
    #[inline(never)]
    fn get_long(&self, key: &str) -> Option<&V> {
        self.find(&Want::of(key)?)
    }

    #[inline(always)]
    fn find(&self, want: &Want<'_>) -> Option<&V> {
        let (tag, at) = self.place(want);
        let found = self.probe(tag, at, want).ok()?;
        self.entries.get(found).map(|entry| &entry.value)
    }

    /// Every key's record, to recompute after the flags change.
    pub(crate) fn records_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|e| &mut e.value)
    }

    /// From `at` on, the entry of the key `want` describes (`Ok`), or the
    /// empty slot that ends its run (`Err`). The table is at most two
    /// thirds full, so a run always ends.
    #[inline]
    fn probe(&self, tag: u32, mut at: usize, want: &Want<'_>) -> Result<usize, usize> {
        loop {
            let Some(&slot) = self.slots.get(at) else { return Err(at) };
            if slot == EMPTY {
                return Err(at);
            }
            let number = (slot >> self.shift) as usize;
            if slot & self.tag_mask == tag
                && let Some(entry) = self.entries.get(number)
                && self.holds(entry, want)
            {
                return Ok(number);
            }
            at += 1;
            if at == self.slots.len() {
                at = 0;
            }
        }
    }

    /// The key's tag (the low bits of its hash that a slot keeps below its
    /// entry number) and first slot (the hash's high half, multiplied onto
    /// the table's size): a short key's two words (its length among them),
    /// the second also rotated into the first so that keys differing only
    /// in their last bytes spread, folded by one multiplication; a long
    /// key's xxh3.
    #[inline]
    fn place(&self, want: &Want<'_>) -> (u32, usize) {
        let hash = match *want {
            Want::Short((a, b)) => {
                fold(a ^ b.rotate_left(29) ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344)
            }
            Want::Long(key) => xxh3_64(key.as_bytes()),
        };
        let at = (u128::from(hash) * self.slots.len() as u128) >> 64;
        (hash as u32 & self.tag_mask, at as usize)
    }

    /// Whether an entry whose tag matched holds the key `want` describes:
    /// a short key's words say exactly (a long key's never equal them), a
    /// long key is compared in the arena.
    #[inline]
    fn holds(&self, entry: &Entry<V>, want: &Want<'_>) -> bool {
        match *want {
            Want::Short(words) => entry.words == words,
            Want::Long(key) => {
                let (at, marker) = entry.words;
                let (start, len) = ((at as u32) as usize, (at >> 32) as usize);
                marker == LONG
                    && len == key.len()
                    && self.arena.get(start..start + len) == Some(key)
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
    Short((u64, u64)),
    Long(&'k str),
}

impl<'k> Want<'k> {
    /// A key of up to [`INLINE`] bytes as two words that hold exactly its
    /// bytes and its length: [`pack`]'s words, the second cut down to the
    /// bytes past the first 8 when the two overlap, with the length in its
    /// top byte (which no byte then reaches).
    #[inline(always)]
    fn short(key: &str) -> Self {
        let b = key.as_bytes();
        let len = b.len() as u32;
        let (head, tail) = pack(b);
        // From 8 bytes on, `tail` is the last 8; keep the `len - 8` past
        // `head` (none for 8 bytes: a shift by 64).
        let tail = if len >= 8 {
            tail.checked_shr(8 * 16u32.wrapping_sub(len)).unwrap_or(0)
        } else {
            tail
        };
        Want::Short((head, tail | u64::from(len) << 56))
    }

    /// `None` for a key of 4 GiB or more (no document holds one).
    #[inline]
    fn of(key: &'k str) -> Option<Self> {
        if key.len() <= INLINE {
            Some(Want::short(key))
        } else {
            u32::try_from(key.len()).ok().map(|_| Want::Long(key))
        }
    }
}

impl<V> std::fmt::Debug for KeyIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex").field("keys", &self.entries.len()).finish_non_exhaustive()
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
    fn short_keys_are_packed_exactly() {
        // Keys of every short length differing in one byte at every
        // position, and each against the same bytes one shorter or longer.
        let words = |k: &[u8]| match Want::short(std::str::from_utf8(k).expect("ascii")) {
            Want::Short(words) => words,
            Want::Long(_) => unreachable!(),
        };
        let mut seen = std::collections::HashMap::new();
        for len in 0..=INLINE {
            let base: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            let mut keys = vec![base.clone(), vec![0; len], vec![0x7f; len]];
            for at in 0..len {
                let mut other = base.clone();
                other[at] = b'Z';
                keys.push(other);
            }
            for key in keys {
                if let Some(before) = seen.insert(words(&key), key.clone()) {
                    assert_eq!(before, key, "two keys pack alike");
                }
            }
            assert_eq!(words(&base).1 >> 56, len as u64);
        }
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_number() {
        let index = KeyIndex::new(
            [("a", 1), ("b", 2), ("a", 3)].map(|(k, n)| (k, Hot::absent(n))).into_iter(),
        );
        let off = |key| index.get(key).map(|h| h.off);
        assert_eq!((off("a"), off("b")), (Some(3), Some(2)));
        let empty = KeyIndex::<Hot>::new(std::iter::empty());
        assert!(empty.get("a").is_none());
    }

    #[test]
    fn eight_entries_fit_five_cache_lines() {
        assert_eq!(std::mem::size_of::<Entry<Hot>>(), 40);
        assert_eq!(std::mem::size_of::<Entry<()>>(), 16);
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
                    let (tag, at) = index.place(&want);
                    let found = index.probe(tag, at, &want).expect("present");
                    let slot = (at..)
                        .map(|s| s % index.slots.len())
                        .position(|s| index.slots[s] >> index.shift == found as u32)
                        .expect("in the table");
                    slot + 1
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
