//! The 802.11 probe request: a management frame a device sends while looking for networks.

use std::fmt;

use super::ie::{Elements, TAG_SSID};
use super::radiotap::Radio;
use super::{MacAddr, Reject, read};

/// Frame control, first byte: protocol version 0, type 0 (management), subtype 4.
const PROBE_REQUEST: u8 = 0x40;
/// Frame control, second byte.
const FLAG_PROTECTED: u8 = 0x40;
/// On a management frame the Order bit announces a 4-byte HT Control field after the header.
const FLAG_ORDER: u8 = 0x80;

const HEADER_LEN: usize = 24;
const HT_CONTROL_LEN: usize = 4;
const ADDR2_AT: usize = 10;
const SEQ_CTRL_AT: usize = 22;

/// A probe request, borrowed from the captured frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// Address 2, the transmitter (and source) address.
    pub transmitter: MacAddr,
    /// The 12-bit sequence number, without the fragment number.
    pub seq: u16,
    /// The combined dBm antenna signal: the first one in the radiotap header.
    pub signal_dbm: Option<i8>,
    /// The radiotap channel field's frequency.
    pub freq_mhz: Option<u16>,
    /// Length of the SSID element when the first element is one (the standard puts it first);
    /// 0 is the wildcard SSID.
    pub ssid_len: Option<u8>,
    /// The tagged parameters (information elements), as received.
    pub ies: &'a [u8],
}

impl<'a> ProbeRequest<'a> {
    /// Whether the transmitter address is locally administered, as randomized addresses are.
    pub fn randomized(&self) -> bool {
        self.transmitter.is_locally_administered()
    }

    /// Tag numbers of the information elements in order; stops at a truncated element.
    pub fn ie_tags(&self) -> impl Iterator<Item = u8> + '_ {
        self.elements().map(|element| element.tag)
    }

    /// The information elements in order; stops at a truncated element.
    pub fn elements(&self) -> Elements<'a> {
        Elements::new(self.ies)
    }
}

// PRIVACY: the elements carry the SSIDs a device looks for, so only their size is shown; the
// transmitter prints redacted by itself.
impl fmt::Debug for ProbeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeRequest")
            .field("transmitter", &self.transmitter)
            .field("seq", &self.seq)
            .field("signal_dbm", &self.signal_dbm)
            .field("freq_mhz", &self.freq_mhz)
            .field("ssid_len", &self.ssid_len)
            .field("ies_len", &self.ies.len())
            .finish()
    }
}

/// Reads a probe request from an 802.11 frame without FCS.
pub(super) fn parse<'a>(mpdu: &'a [u8], radio: &Radio) -> Result<ProbeRequest<'a>, Reject> {
    let [frame_control, flags] = read::<2>(mpdu, 0).ok_or(Reject::Truncated)?;
    if frame_control != PROBE_REQUEST {
        return Err(Reject::NotProbeRequest);
    }
    // Probe requests are never protected; the body of one that says so would be ciphertext.
    if flags & FLAG_PROTECTED != 0 {
        return Err(Reject::Malformed("protected probe request"));
    }
    let transmitter = MacAddr::new(read::<6>(mpdu, ADDR2_AT).ok_or(Reject::Truncated)?);
    let seq_ctrl = read::<2>(mpdu, SEQ_CTRL_AT).ok_or(Reject::Truncated)?;
    if transmitter.is_multicast() {
        return Err(Reject::MulticastTransmitter);
    }
    let body_at = if flags & FLAG_ORDER != 0 {
        HEADER_LEN + HT_CONTROL_LEN
    } else {
        HEADER_LEN
    };
    let ies = mpdu.get(body_at..).ok_or(Reject::Truncated)?;
    let ssid_len = Elements::new(ies)
        .next()
        .filter(|element| element.tag == TAG_SSID)
        .and_then(|ssid| u8::try_from(ssid.body.len()).ok());
    Ok(ProbeRequest {
        transmitter,
        seq: u16::from_le_bytes(seq_ctrl) >> 4,
        signal_dbm: radio.signal_dbm,
        freq_mhz: radio.freq_mhz,
        ssid_len,
        ies,
    })
}

#[cfg(test)]
mod tests {
    use super::{ProbeRequest, parse};
    use crate::dot11::Reject;
    use crate::dot11::ie::Element;
    use crate::dot11::radiotap::Radio;

    const PHONE: [u8; 6] = [0x0e, 0xd6, 0xb5, 0x16, 0xa4, 0x3e];
    const PC: [u8; 6] = [0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4];

    /// A probe request header from `transmitter` with sequence number 0x123, fragment 5.
    fn header(transmitter: [u8; 6]) -> Vec<u8> {
        let mut frame = vec![0x40, 0x00, 0x00, 0x00];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&transmitter);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[0x35, 0x12]);
        frame
    }

    fn probe_with(transmitter: [u8; 6], ies: &[u8]) -> Vec<u8> {
        let mut frame = header(transmitter);
        frame.extend_from_slice(ies);
        frame
    }

    fn no_radio() -> Radio {
        Radio::default()
    }

    #[test]
    fn a_wildcard_probe_gives_transmitter_sequence_and_elements() {
        let ies = [
            0, 0, 1, 2, 0x82, 0x84, 50, 1, 0x0c, 221, 3, 0x00, 0x50, 0xf2,
        ];
        let frame = probe_with(PHONE, &ies);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.transmitter.octets(), PHONE);
        assert_eq!(probe.seq, 0x123);
        assert_eq!(probe.ssid_len, Some(0));
        assert_eq!(probe.ies, &ies);
        assert_eq!(probe.ie_tags().collect::<Vec<_>>(), [0, 1, 50, 221]);
        assert!(probe.randomized());
    }

    #[test]
    fn a_directed_probe_reports_the_ssid_length_but_not_the_ssid() {
        let frame = probe_with(PC, &[0, 4, b'o', b'm', b'u', b's', 1, 1, 0x82]);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.ssid_len, Some(4));
        assert!(!probe.randomized());
        let printed = format!("{probe:?}");
        assert!(!printed.contains("111"), "{printed}"); // b'o' is 111
        assert_eq!(
            printed,
            "ProbeRequest { transmitter: MacAddr(<redacted>), seq: 291, signal_dbm: None, \
             freq_mhz: None, ssid_len: Some(4), ies_len: 9 }"
        );
    }

    #[test]
    fn a_probe_without_elements_has_no_ssid_length() {
        let frame = header(PHONE);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.ssid_len, None);
        assert_eq!(probe.ie_tags().count(), 0);
    }

    #[test]
    fn an_ssid_element_that_is_not_first_is_not_the_ssid() {
        let frame = probe_with(PHONE, &[1, 1, 0x82, 0, 3, b'a', b'b', b'c']);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.ssid_len, None);
    }

    #[test]
    fn a_truncated_ssid_element_has_no_length() {
        let frame = probe_with(PHONE, &[0, 9, b'a']);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.ssid_len, None);
        assert_eq!(probe.ie_tags().count(), 0);
    }

    #[test]
    fn the_radio_fields_come_from_the_radiotap_header() {
        let radio = Radio {
            signal_dbm: Some(-71),
            freq_mhz: Some(5745),
            ..Radio::default()
        };
        let frame = header(PHONE);
        let probe = parse(&frame, &radio).unwrap();
        assert_eq!(probe.signal_dbm, Some(-71));
        assert_eq!(probe.freq_mhz, Some(5745));
    }

    #[test]
    fn the_ht_control_field_of_an_ordered_frame_is_not_an_element() {
        let mut frame = header(PHONE);
        frame[1] = 0x80;
        frame.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0, 0, 1, 1, 0x82]);
        let probe = parse(&frame, &no_radio()).unwrap();
        assert_eq!(probe.ssid_len, Some(0));
        assert_eq!(probe.ie_tags().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn other_frame_types_are_not_probe_requests() {
        for frame_control in [0x50, 0x80, 0x48, 0xd4, 0x41, 0x42] {
            let mut frame = header(PHONE);
            frame[0] = frame_control;
            assert_eq!(
                parse(&frame, &no_radio()),
                Err(Reject::NotProbeRequest),
                "{frame_control:#x}"
            );
        }
    }

    #[test]
    fn a_short_frame_is_truncated_but_a_short_other_frame_is_not_a_probe() {
        let frame = header(PHONE);
        for len in [0, 1, 2, 15, 23] {
            assert_eq!(parse(&frame[..len], &no_radio()), Err(Reject::Truncated));
        }
        // An ACK is 10 bytes: it is told apart by its type, not by its length.
        assert_eq!(
            parse(&[0xd4, 0, 0, 0, 1, 2, 3, 4, 5, 6], &no_radio()),
            Err(Reject::NotProbeRequest)
        );
        let mut ordered = header(PHONE);
        ordered[1] = 0x80;
        ordered.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&ordered, &no_radio()), Err(Reject::Truncated));
    }

    #[test]
    fn a_multicast_transmitter_is_rejected() {
        let frame = probe_with([0x01, 0x00, 0x5e, 0, 0, 1], &[0, 0]);
        assert_eq!(
            parse(&frame, &no_radio()),
            Err(Reject::MulticastTransmitter)
        );
    }

    #[test]
    fn a_protected_probe_request_is_malformed() {
        let mut frame = probe_with(PHONE, &[0, 0]);
        frame[1] = 0x40;
        assert_eq!(
            parse(&frame, &no_radio()),
            Err(Reject::Malformed("protected probe request"))
        );
    }

    #[test]
    fn elements_expose_tags_and_bodies() {
        let frame = probe_with(PHONE, &[0, 0, 50, 1, 0x0c]);
        let probe: ProbeRequest<'_> = parse(&frame, &no_radio()).unwrap();
        let elements: Vec<_> = probe.elements().collect();
        assert_eq!(
            elements,
            [
                Element { tag: 0, body: &[] },
                Element {
                    tag: 50,
                    body: &[0x0c]
                }
            ]
        );
    }
}
