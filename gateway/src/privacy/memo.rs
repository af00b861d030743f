//! A small memo of values worked out from keyed hashes, for the plugin stage's per-sighting work.
//!
//! A phone probes in bursts, so a plugin is handed the same device many times in a row: on a
//! generated store day 42 % of a plugin's sightings repeat the one before. Remembering the last
//! few hundred answers spares a SipHash per sighting for its pseudonym, and a look into a
//! table of thousands of entries (a cache miss) for the guard's record of what it was handed.
//!
//! Keys are keyed hashes (a device's pseudonym, an IE signature), spread evenly over 64 bits
//! by a key nobody outside the process knows, so their low bits pick the slot: direct-mapped,
//! a newer key replacing an older one in its slot, no hashing and no probing.

use zeroize::Zeroize;

/// Slots, a power of two: 4 KiB a memo, which stays in the L1 cache beside a plugin's data.
const SLOTS: usize = 256;

pub struct Memo {
    slots: Box<Slots>,
}

struct Slots {
    keys: [u64; SLOTS],
    values: [u64; SLOTS],
}

fn slot(key: u64) -> usize {
    key as usize & (SLOTS - 1)
}

impl Default for Memo {
    fn default() -> Self {
        let mut memo = Memo {
            slots: Box::new(Slots {
                keys: [0; SLOTS],
                values: [0; SLOTS],
            }),
        };
        memo.clear();
        memo
    }
}

impl Memo {
    /// The value remembered for `key`, if its slot still holds it.
    pub fn get(&self, key: u64) -> Option<u64> {
        let i = slot(key);
        (self.slots.keys[i] == key).then(|| self.slots.values[i])
    }

    /// The value remembered for `key`, or `make`'s, then remembered.
    pub fn get_or_insert_with(&mut self, key: u64, make: impl FnOnce() -> u64) -> u64 {
        self.get(key).unwrap_or_else(|| {
            let value = make();
            self.put(key, value);
            value
        })
    }

    pub fn put(&mut self, key: u64, value: u64) {
        let i = slot(key);
        self.slots.keys[i] = key;
        self.slots.values[i] = value;
    }

    /// Forgets every value (and overwrites them: they may be pseudonyms of a retired key).
    pub fn clear(&mut self) {
        self.slots.values.zeroize();
        // An empty slot holds a key that cannot be looked up there: one whose low bits name
        // another slot. No key value is set aside as "empty", so every key can be remembered.
        for (i, key) in self.slots.keys.iter_mut().enumerate() {
            *key = !(i as u64);
        }
    }
}

impl Drop for Memo {
    fn drop(&mut self) {
        self.slots.keys.zeroize();
        self.slots.values.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_was_put_until_its_slot_is_taken() {
        let mut memo = Memo::default();
        assert_eq!(memo.get(7), None);
        memo.put(7, 70);
        assert_eq!(memo.get(7), Some(70));
        // Same low bits, another key: it takes the slot.
        memo.put(7 + SLOTS as u64, 71);
        assert_eq!(memo.get(7), None);
        assert_eq!(memo.get(7 + SLOTS as u64), Some(71));
    }

    #[test]
    fn an_empty_memo_answers_no_key_not_even_the_ones_its_empty_slots_hold() {
        let memo = Memo::default();
        for i in 0..SLOTS as u64 {
            assert_eq!(memo.get(i), None);
            assert_eq!(
                memo.get(!i),
                None,
                "the empty mark of slot {}",
                !i as usize % SLOTS
            );
            assert_eq!(memo.get(u64::MAX - i), None);
        }
    }

    #[test]
    fn clear_forgets_everything() {
        let mut memo = Memo::default();
        for k in 0..1000 {
            memo.put(k * 7919, k);
        }
        memo.clear();
        assert!((0..1000).all(|k| memo.get(k * 7919).is_none()));
    }
}
