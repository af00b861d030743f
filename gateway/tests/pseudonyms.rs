//! Why the pseudonyms are keyed: an attacker who knows the algorithm and the OUI of a device
//! can enumerate all 2^24 addresses of that OUI in under a second. Against a plain hash that
//! recovers the MAC; against probegate's keyed pseudonyms (key in RAM only) it finds nothing.

use probegate::dot11::{MacAddr, ProbeRequest};
use probegate::privacy::{Gate, PseudonymSpace, RotationSchedule, TimeZone};
use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// A real device of the Fryza lab (a fixed PC with a universal address).
const DEVICE: [u8; 6] = [0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4];

fn sip(key: &[u8; 16], bytes: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(bytes);
    h.finish()
}

/// Tries every address of the OUI; returns those whose hash under `guess` equals `target`.
fn search_oui(oui: [u8; 3], target: u64, guess: impl Fn(&[u8; 6]) -> u64) -> Vec<[u8; 6]> {
    (0u32..1 << 24)
        .map(|nic| {
            let [_, a, b, c] = nic.to_be_bytes();
            [oui[0], oui[1], oui[2], a, b, c]
        })
        .filter(|mac| guess(mac) == target)
        .collect()
}

#[test]
fn an_unkeyed_hash_of_a_mac_is_reversed_by_enumerating_its_oui() {
    // What "anonymous hashed MACs" usually are: a public function of the address.
    let published = sip(&[0; 16], &DEVICE);
    let found = search_oui([0xdc, 0xfb, 0x48], published, |mac| sip(&[0; 16], mac));
    assert_eq!(found, vec![DEVICE]);
}

#[test]
fn a_keyed_pseudonym_is_not_found_by_enumerating_its_oui() {
    let schedule = RotationSchedule {
        at_minute: 240,
        every_hours: 24,
        zone: TimeZone::FixedOffsetSecs(0),
    };
    let mut gate = Gate::new(schedule, -127);
    let probe = ProbeRequest {
        transmitter: MacAddr::new(DEVICE),
        seq: 0,
        signal_dbm: Some(-50),
        freq_mhz: Some(2412),
        ssid_len: Some(0),
        ies: &[],
    };
    let sighting = gate.admit(probe, 1_700_000_000_000).unwrap();
    // What a plugin sees, and so what it could publish.
    let published = PseudonymSpace::default().pseudonym(&sighting);

    // The attacker knows SipHash-2-4 and the OUI, not the keys: with the guesses an attacker
    // would try (no key, the gateway-level id as if it were the pseudonym), nothing matches.
    let found = search_oui([0xdc, 0xfb, 0x48], published, |mac| sip(&[0; 16], mac));
    assert!(found.is_empty(), "{} candidates matched", found.len());
    let found = search_oui([0xdc, 0xfb, 0x48], sighting.device.0, |mac| {
        sip(&[0; 16], &sip(&[0; 16], mac).to_le_bytes())
    });
    assert!(found.is_empty(), "{} candidates matched", found.len());
}
