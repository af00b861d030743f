//! Every captured frame comes from whoever is in radio range: the parser must survive any bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use probegate::dot11::{self, LinkType};

fuzz_target!(|frame: &[u8]| {
    for link in [LinkType::Radiotap, LinkType::Ieee80211] {
        let Ok((probe, chains)) = dot11::parse_with_chains(link, frame) else {
            continue;
        };
        // What parses must be self-consistent, not merely not crash.
        let frame_range = frame.as_ptr_range();
        let ies_range = probe.ies.as_ptr_range();
        assert!(frame_range.start <= ies_range.start && ies_range.end <= frame_range.end);
        assert!(probe.seq < 4096);
        assert!(!probe.transmitter.is_multicast());
        assert!(chains.as_slice().len() <= dot11::MAX_CHAINS);
        assert!(probe.ie_tags().count() <= probe.ies.len() / 2);
        if let Some(ssid_len) = probe.ssid_len {
            let first = probe.elements().next().map(|e| (e.tag, e.body.len()));
            assert_eq!(first, Some((0, usize::from(ssid_len))));
        }
        assert_eq!(dot11::parse(link, frame), Ok(probe));
    }
});
