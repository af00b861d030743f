//! Per-plugin pseudonym spaces: two plugins never see the same identifier for one device.

use super::keys::{keyed_hash, random_key};
use super::memo::Memo;
use super::{DeviceId, Sighting};
use zeroize::Zeroizing;

/// A plugin's own pseudonym space. Its key is random, held in RAM, and replaced whenever the
/// gate's epoch changes, so a plugin's pseudonyms rotate with the gate's.
pub struct PseudonymSpace {
    key: Zeroizing<[u8; 16]>,
    epoch: u32,
    /// This epoch's latest answers, by the gate's pseudonym and by the gate's IE signature.
    devices: Memo,
    signatures: Memo,
}

impl Default for PseudonymSpace {
    fn default() -> Self {
        PseudonymSpace {
            key: random_key(),
            epoch: 0,
            devices: Memo::default(),
            signatures: Memo::default(),
        }
    }
}

impl PseudonymSpace {
    /// The plugin's pseudonym for the sighting's device.
    pub fn pseudonym(&mut self, sighting: &Sighting) -> u64 {
        self.follow_epoch(sighting);
        let DeviceId(id) = sighting.device;
        let key = &self.key;
        self.devices
            .get_or_insert_with(id, || keyed_hash(key, &id.to_le_bytes()))
    }

    /// A new key for a new epoch.
    fn follow_epoch(&mut self, sighting: &Sighting) {
        if sighting.epoch != self.epoch {
            self.key = random_key();
            self.epoch = sighting.epoch;
            self.devices.clear();
            self.signatures.clear();
        }
    }

    /// The plugin's view of the sighting's IE signature (if the gate computed one): joinable
    /// with no other plugin's.
    pub fn signature(&mut self, sighting: &Sighting) -> Option<u64> {
        let signature = sighting.ie_signature?;
        // Same key as pseudonyms; the "ie" prefix keeps the two domains apart.
        self.follow_epoch(sighting);
        let key = &self.key;
        Some(self.signatures.get_or_insert_with(signature, || {
            let mut input = [0u8; 10];
            input[..2].copy_from_slice(b"ie");
            input[2..].copy_from_slice(&signature.to_le_bytes());
            keyed_hash(key, &input)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(device: u64, epoch: u32) -> Sighting {
        Sighting {
            device: DeviceId(device),
            epoch,
            time_ms: 0,
            signal_dbm: None,
            freq_mhz: None,
            randomized: false,
            seq: 0,
            ie_signature: Some(7),
            consent: None,
        }
    }

    #[test]
    fn two_plugins_see_different_pseudonyms_for_one_device() {
        let (mut a, mut b) = (PseudonymSpace::default(), PseudonymSpace::default());
        let s = sighting(42, 1);
        assert_ne!(a.pseudonym(&s), b.pseudonym(&s));
        assert_eq!(a.pseudonym(&s), a.pseudonym(&s));
    }

    #[test]
    fn a_new_epoch_changes_a_plugins_pseudonyms() {
        let mut a = PseudonymSpace::default();
        let first = a.pseudonym(&sighting(42, 1));
        assert_ne!(a.pseudonym(&sighting(42, 2)), first);
        let ie = a.signature(&sighting(42, 2));
        assert_ne!(a.signature(&sighting(42, 3)), ie);
    }

    #[test]
    fn remembered_answers_are_the_answers() {
        // More devices than the memo has slots, so answers come both remembered and anew.
        let mut a = PseudonymSpace::default();
        let first: Vec<_> = (0..2_000u64)
            .map(|d| {
                let mut s = sighting(d.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1);
                s.ie_signature = Some(d % 300);
                (a.pseudonym(&s), a.signature(&s))
            })
            .collect();
        for (d, answer) in first.iter().enumerate().rev() {
            let d = d as u64;
            let mut s = sighting(d.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1);
            s.ie_signature = Some(d % 300);
            assert_eq!((a.pseudonym(&s), a.signature(&s)), *answer);
        }
        let distinct: std::collections::HashSet<_> = first.iter().map(|(p, _)| p).collect();
        assert_eq!(distinct.len(), first.len());
    }
}
