//! Reads 802.11 probe requests out of captured frames.
//!
//! Pure parsing: no I/O, no allocation per frame, and no panic on any input, since every byte
//! comes off the air from whoever is in range.

pub(crate) mod ie;
mod mac;
mod probe;
mod radiotap;

use std::fmt;

pub use ie::{Element, Elements};
pub use mac::MacAddr;
pub use probe::ProbeRequest;
pub use radiotap::{ChainSignals, MAX_CHAINS};

/// How captured frames are framed: the libpcap data link type of the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// `DLT_IEEE802_11_RADIO`: a radiotap header, then the 802.11 frame.
    Radiotap,
    /// `DLT_IEEE802_11`: the bare 802.11 frame, assumed to carry no FCS.
    Ieee80211,
}

impl LinkType {
    const DLT_IEEE802_11: i32 = 105;
    const DLT_IEEE802_11_RADIO: i32 = 127;

    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            Self::DLT_IEEE802_11_RADIO => Some(LinkType::Radiotap),
            Self::DLT_IEEE802_11 => Some(LinkType::Ieee80211),
            _ => None,
        }
    }

    pub fn dlt(self) -> i32 {
        match self {
            LinkType::Radiotap => Self::DLT_IEEE802_11_RADIO,
            LinkType::Ieee80211 => Self::DLT_IEEE802_11,
        }
    }
}

/// Why a frame yields no probe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// A well-formed frame of another type: the normal case for most traffic.
    NotProbeRequest,
    /// The capture ends before the frame does (short snap length, or a runt).
    Truncated,
    /// The receiver flagged the frame check sequence as wrong.
    BadFcs,
    /// The transmitter address is a group address, which no real transmitter has.
    MulticastTransmitter,
    /// The frame contradicts itself; the text says how, for debugging.
    Malformed(&'static str),
}

impl Reject {
    /// A stable snake_case label, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::NotProbeRequest => "not_probe_request",
            Reject::Truncated => "truncated",
            Reject::BadFcs => "bad_fcs",
            Reject::MulticastTransmitter => "multicast_transmitter",
            Reject::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::NotProbeRequest => f.write_str("not a probe request"),
            Reject::Truncated => f.write_str("truncated frame"),
            Reject::BadFcs => f.write_str("bad frame check sequence"),
            Reject::MulticastTransmitter => f.write_str("multicast transmitter address"),
            Reject::Malformed(how) => write!(f, "malformed frame: {how}"),
        }
    }
}

impl std::error::Error for Reject {}

/// Length of the frame check sequence that may trail a radiotap frame.
const FCS_LEN: usize = 4;

/// Reads a probe request from one captured frame.
pub fn parse(link: LinkType, frame: &[u8]) -> Result<ProbeRequest<'_>, Reject> {
    parse_with_chains(link, frame).map(|(probe, _)| probe)
}

/// Like [`parse`], also returning the per-chain signals the radiotap header carries after the
/// combined one (empty for [`LinkType::Ieee80211`]).
pub fn parse_with_chains(
    link: LinkType,
    frame: &[u8],
) -> Result<(ProbeRequest<'_>, ChainSignals), Reject> {
    let (radio, mpdu) = match link {
        LinkType::Ieee80211 => (radiotap::Radio::default(), frame),
        LinkType::Radiotap => {
            let (radio, mpdu) = radiotap::parse(frame)?;
            if radio.no_psdu {
                return Err(Reject::NotProbeRequest);
            }
            if radio.bad_fcs() {
                return Err(Reject::BadFcs);
            }
            let mpdu = if radio.fcs_at_end() {
                let without_fcs = mpdu.len().checked_sub(FCS_LEN).ok_or(Reject::Truncated)?;
                mpdu.get(..without_fcs).ok_or(Reject::Truncated)?
            } else {
                mpdu
            };
            (radio, mpdu)
        }
    };
    let probe = probe::parse(mpdu, &radio)?;
    Ok((probe, radio.chains))
}

/// `N` bytes at `at`, if the buffer holds them.
fn read<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..)?.first_chunk::<N>().copied()
}

#[cfg(test)]
mod tests {
    use super::{LinkType, Reject, parse, parse_with_chains};

    const PHONE: [u8; 6] = [0x0e, 0xd6, 0xb5, 0x16, 0xa4, 0x3e];

    /// A wildcard probe request from `PHONE`, sequence number 552.
    fn probe_mpdu() -> Vec<u8> {
        let mut mpdu = vec![0x40, 0x00, 0x00, 0x00];
        mpdu.extend_from_slice(&[0xff; 6]);
        mpdu.extend_from_slice(&PHONE);
        mpdu.extend_from_slice(&[0xff; 6]);
        mpdu.extend_from_slice(&(552u16 << 4).to_le_bytes());
        mpdu.extend_from_slice(&[0, 0, 1, 1, 0x82, 50, 1, 0x0c]);
        mpdu
    }

    /// Radiotap header with flags, channel 2417 MHz and a -64 dBm signal (15 bytes).
    fn radiotap_with_flags(flags: u8) -> Vec<u8> {
        let mut header = vec![0x00, 0x00, 15, 0x00, 0x2a, 0x00, 0x00, 0x00];
        header.extend_from_slice(&[flags, 0x00, 0x71, 0x09, 0xa0, 0x00, 0xc0]);
        header
    }

    fn frame(flags: u8, trailer: &[u8]) -> Vec<u8> {
        let mut frame = radiotap_with_flags(flags);
        frame.extend_from_slice(&probe_mpdu());
        frame.extend_from_slice(trailer);
        frame
    }

    #[test]
    fn link_types_map_to_their_dlt_numbers() {
        assert_eq!(LinkType::from_dlt(127), Some(LinkType::Radiotap));
        assert_eq!(LinkType::from_dlt(105), Some(LinkType::Ieee80211));
        assert_eq!(LinkType::from_dlt(1), None);
        assert_eq!(LinkType::from_dlt(163), None);
        for link in [LinkType::Radiotap, LinkType::Ieee80211] {
            assert_eq!(LinkType::from_dlt(link.dlt()), Some(link));
        }
    }

    #[test]
    fn reject_labels_are_stable_snake_case() {
        let labels = [
            (Reject::NotProbeRequest, "not_probe_request"),
            (Reject::Truncated, "truncated"),
            (Reject::BadFcs, "bad_fcs"),
            (Reject::MulticastTransmitter, "multicast_transmitter"),
            (Reject::Malformed("anything"), "malformed"),
        ];
        for (reject, label) in labels {
            assert_eq!(reject.as_str(), label);
        }
    }

    #[test]
    fn a_radiotap_probe_carries_its_radio_fields() {
        let frame = frame(0x00, &[]);
        let probe = parse(LinkType::Radiotap, &frame).unwrap();
        assert_eq!(probe.transmitter.octets(), PHONE);
        assert_eq!(probe.seq, 552);
        assert_eq!(probe.signal_dbm, Some(-64));
        assert_eq!(probe.freq_mhz, Some(2417));
        assert_eq!(probe.ie_tags().collect::<Vec<_>>(), [0, 1, 50]);
    }

    #[test]
    fn the_fcs_is_not_read_as_an_element_when_the_flags_announce_it() {
        // An FCS whose bytes would parse as one more element (tag 221, length 2).
        let frame = frame(0x10, &[221, 2, 0xaa, 0xbb]);
        let probe = parse(LinkType::Radiotap, &frame).unwrap();
        assert_eq!(probe.ie_tags().collect::<Vec<_>>(), [0, 1, 50]);
        assert_eq!(probe.ies.len(), 8);
    }

    #[test]
    fn without_the_fcs_flag_trailing_bytes_are_elements() {
        let frame = frame(0x00, &[221, 2, 0xaa, 0xbb]);
        let probe = parse(LinkType::Radiotap, &frame).unwrap();
        assert_eq!(probe.ie_tags().collect::<Vec<_>>(), [0, 1, 50, 221]);
    }

    #[test]
    fn a_frame_flagged_with_a_bad_fcs_is_rejected() {
        let frame = frame(0x50, &[0, 0, 0, 0]);
        assert_eq!(parse(LinkType::Radiotap, &frame), Err(Reject::BadFcs));
    }

    #[test]
    fn bytes_behind_a_zero_length_psdu_header_are_not_a_probe() {
        let mut frame = vec![0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01];
        frame.extend_from_slice(&probe_mpdu());
        assert_eq!(
            parse(LinkType::Radiotap, &frame),
            Err(Reject::NotProbeRequest)
        );
    }

    #[test]
    fn a_frame_shorter_than_its_announced_fcs_is_truncated() {
        let mut frame = radiotap_with_flags(0x10);
        frame.extend_from_slice(&[0x40, 0x00, 0x00]);
        assert_eq!(parse(LinkType::Radiotap, &frame), Err(Reject::Truncated));
    }

    #[test]
    fn a_bare_80211_frame_has_no_radio_fields_and_no_fcs() {
        let mpdu = probe_mpdu();
        let (probe, chains) = parse_with_chains(LinkType::Ieee80211, &mpdu).unwrap();
        assert_eq!(probe.seq, 552);
        assert_eq!(probe.signal_dbm, None);
        assert_eq!(probe.freq_mhz, None);
        assert_eq!(probe.ies.len(), 8);
        assert!(chains.as_slice().is_empty());
    }

    #[test]
    fn the_same_bytes_read_under_the_wrong_link_type_are_not_a_probe() {
        let frame = frame(0x00, &[]);
        assert_eq!(
            parse(LinkType::Ieee80211, &frame),
            Err(Reject::NotProbeRequest)
        );
        assert!(parse(LinkType::Radiotap, &probe_mpdu()).is_err());
    }

    #[test]
    fn reject_messages_explain_malformed_frames() {
        let reject = Reject::Malformed("radiotap version");
        assert_eq!(reject.to_string(), "malformed frame: radiotap version");
    }
}
