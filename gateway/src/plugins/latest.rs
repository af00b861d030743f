//! The latest distinct keyed hashes a plugin was handed, for the guard ([`super::guard`]).
//!
//! Looked into for every sighting and every plugin, so its size is what costs: a general
//! hash map of 8,192 pseudonyms with their serial numbers took ~270 KiB a plugin, beyond a
//! core's L2 cache with four plugins, and a lookup was a trip to memory (on the store day the
//! guard was ~15 % of the plugin thread). Here the keys sit once, in insertion order, in a
//! ring, and the index into it is a table of 2-byte ring positions: 96 KiB a plugin.
//!
//! Keys are keyed hashes (pseudonyms, IE signatures), spread evenly over 64 bits by keys no
//! plugin and no sender of frames knows: their low bits are the table index, with no
//! hashing, and nobody can choose keys that pile up in one place.

/// Distinct keys held: the latest this many inserted.
pub const CAPACITY: usize = 8_192;
/// Table slots: twice the keys, so a look at a key's place ends within a slot or two.
const SLOTS: usize = 2 * CAPACITY;
const _: () = assert!(CAPACITY <= u16::MAX as usize && SLOTS.is_power_of_two());

pub struct Latest {
    /// Insertion `n` is at `n % CAPACITY`, over the one `CAPACITY` insertions before it.
    ring: Box<[u64]>,
    /// Insertions so far.
    inserted: u64,
    /// Open addressing with linear probing: a key's ring position + 1, 0 for an empty slot.
    slots: Box<[u16]>,
}

impl Default for Latest {
    fn default() -> Self {
        Latest {
            ring: vec![0; CAPACITY].into_boxed_slice(),
            inserted: 0,
            slots: vec![0; SLOTS].into_boxed_slice(),
        }
    }
}

fn home(key: u64) -> usize {
    key as usize & (SLOTS - 1)
}

impl Latest {
    /// The serial number of `key`'s insertion (0 for the first key), if it is held.
    pub fn serial(&self, key: u64) -> Option<u64> {
        self.find(key).map(|(_, pos)| self.serial_at(pos))
    }

    /// Inserts `key`, which must not be held, forgetting the oldest if full; its serial number.
    pub fn insert(&mut self, key: u64) -> u64 {
        debug_assert!(self.find(key).is_none());
        let n = self.inserted;
        let pos = (n % CAPACITY as u64) as usize;
        if n >= CAPACITY as u64 {
            let (slot, _) = self
                .find(self.ring[pos])
                .expect("every key in the ring is in the table");
            self.remove_slot(slot);
        }
        self.ring[pos] = key;
        let mut i = home(key);
        while self.slots[i] != 0 {
            i = (i + 1) & (SLOTS - 1);
        }
        self.slots[i] = pos as u16 + 1;
        self.inserted += 1;
        n
    }

    /// Insertions so far.
    #[cfg(test)]
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Whether the key inserted as number `n` is still held.
    pub fn holds(&self, n: u64) -> bool {
        self.inserted - n <= CAPACITY as u64
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inserted.min(CAPACITY as u64) as usize
    }

    /// The table slot and ring position of `key`.
    fn find(&self, key: u64) -> Option<(usize, usize)> {
        let mut i = home(key);
        loop {
            let pos = usize::from(self.slots[i]).checked_sub(1)?;
            if self.ring[pos] == key {
                return Some((i, pos));
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }

    /// The latest insertion at ring position `pos`.
    fn serial_at(&self, pos: usize) -> u64 {
        let last = self.inserted - 1;
        last - (last - pos as u64) % CAPACITY as u64
    }

    /// Empties slot `i`, moving back the keys after it that would no longer be found.
    fn remove_slot(&mut self, mut i: usize) {
        let mask = SLOTS - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let entry = self.slots[j];
            if entry == 0 {
                break;
            }
            let h = home(self.ring[usize::from(entry) - 1]);
            // The key at `j` may move to `i` if its home is not between the two (cyclically):
            // a search for it, starting at its home, passes `i` on the way to `j`.
            if (j.wrapping_sub(h) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = entry;
                i = j;
            }
        }
        self.slots[i] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};

    /// Checks `latest` against a plain set of the latest `CAPACITY` distinct keys, over a
    /// stream drawn from `pool` keys, each key `key(i)`.
    fn against_a_model(key: impl Fn(u64) -> u64, pool: u64, steps: u64, check_every: u64) {
        let mut latest = Latest::default();
        let (mut model, mut order) = (HashSet::new(), VecDeque::new());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..steps {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = key(rng % pool);
            if latest.serial(k).is_none() {
                let n = latest.insert(k);
                assert_eq!(n + 1, latest.inserted());
            }
            if model.insert(k) {
                order.push_back(k);
                if order.len() > CAPACITY {
                    model.remove(&order.pop_front().unwrap());
                }
            }
            if step % check_every == 0 {
                assert_eq!(latest.len(), model.len());
                for i in 0..pool {
                    let k = key(i);
                    assert_eq!(
                        latest.serial(k).is_some(),
                        model.contains(&k),
                        "step {step}"
                    );
                }
            }
        }
        // Serial numbers: the order of insertion.
        let serials: Vec<u64> = order.iter().map(|&k| latest.serial(k).unwrap()).collect();
        assert!(serials.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*serials.last().unwrap(), latest.inserted() - 1);
    }

    #[test]
    fn holds_exactly_the_latest_distinct_keys() {
        let spread = |i: u64| i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5555;
        against_a_model(spread, CAPACITY as u64 * 2, CAPACITY as u64 * 8, 211);
    }

    /// Keys that share their table home in runs, and runs that wrap past the table's end:
    /// removal must move back exactly the keys a search would otherwise miss.
    #[test]
    fn holds_them_when_keys_crowd_into_the_same_slots() {
        let crowded = |i: u64| ((i / 8) * 5 % SLOTS as u64 + SLOTS as u64 - 3) | (i << 32);
        against_a_model(crowded, CAPACITY as u64 * 2, CAPACITY as u64 * 6, 503);
    }

    #[test]
    fn a_key_is_held_for_capacity_insertions() {
        let mut latest = Latest::default();
        assert_eq!(latest.insert(7), 0);
        for i in 1..CAPACITY as u64 {
            latest.insert(i << 20);
        }
        assert_eq!(latest.serial(7), Some(0));
        latest.insert(u64::MAX);
        assert_eq!(latest.serial(7), None);
        assert_eq!(latest.serial(1 << 20), Some(1));
        assert_eq!(latest.serial(u64::MAX), Some(CAPACITY as u64));
        assert_eq!(latest.len(), CAPACITY);
    }
}
