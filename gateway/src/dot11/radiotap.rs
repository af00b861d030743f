//! The radiotap header that Linux monitor interfaces (DLT 127) put in front of each frame
//! (<https://www.radiotap.org>). Only the fields footfall needs are decoded; the rest are walked
//! past using their alignment and size.

use super::{Reject, read};

/// Most per-chain signals kept for one frame: enough for 8x8 access points, in a fixed array so
/// that parsing stays allocation-free.
pub const MAX_CHAINS: usize = 8;

/// The per-chain dBm antenna signals of a frame, in header order (chain 0 first), without the
/// combined signal. Chains beyond [`MAX_CHAINS`] are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainSignals {
    dbm: [i8; MAX_CHAINS],
    len: u8,
}

impl ChainSignals {
    /// Keeps the first [`MAX_CHAINS`] values.
    pub fn from_slice(dbm: &[i8]) -> Self {
        let mut chains = ChainSignals::default();
        for &value in dbm {
            chains.push(value);
        }
        chains
    }

    pub fn as_slice(&self) -> &[i8] {
        self.dbm.get(..usize::from(self.len)).unwrap_or_default()
    }

    fn push(&mut self, dbm: i8) {
        if let Some(slot) = self.dbm.get_mut(usize::from(self.len)) {
            *slot = dbm;
            self.len += 1;
        }
    }
}

/// What the radiotap header says about the frame behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Radio {
    pub signal_dbm: Option<i8>,
    pub chains: ChainSignals,
    pub freq_mhz: Option<u16>,
    /// The first Flags field.
    pub flags: Option<u8>,
    /// Only a preamble was received (a sounding NDP, say): no 802.11 frame follows.
    pub no_psdu: bool,
}

impl Radio {
    /// The frame ends with its 4-byte FCS.
    pub fn fcs_at_end(&self) -> bool {
        self.flags.is_some_and(|flags| flags & FLAG_FCS_AT_END != 0)
    }

    /// The receiver found the FCS wrong: every byte of the frame is suspect.
    pub fn bad_fcs(&self) -> bool {
        self.flags.is_some_and(|flags| flags & FLAG_BAD_FCS != 0)
    }

    /// Takes note of one field of the radiotap namespace.
    fn record(&mut self, field: u32, data: &[u8]) {
        match (field, data) {
            (FIELD_FLAGS, &[flags]) if self.flags.is_none() => self.flags = Some(flags),
            (FIELD_CHANNEL, &[freq_lo, freq_hi, _, _]) if self.freq_mhz.is_none() => {
                self.freq_mhz = Some(u16::from_le_bytes([freq_lo, freq_hi]));
            }
            (FIELD_DBM_ANTSIGNAL, &[dbm]) => {
                let dbm = i8::from_le_bytes([dbm]);
                // Linux puts the combined signal first, then one namespace per chain.
                match self.signal_dbm {
                    None => self.signal_dbm = Some(dbm),
                    Some(_) => self.chains.push(dbm),
                }
            }
            (FIELD_ZERO_LENGTH_PSDU, _) => self.no_psdu = true,
            _ => {}
        }
    }
}

// Presence bits that are not fields: they shape the bitmap itself.
const RADIOTAP_NAMESPACE_NEXT: u32 = 1 << 29;
const VENDOR_NAMESPACE_NEXT: u32 = 1 << 30;
const ANOTHER_BITMAP_FOLLOWS: u32 = 1 << 31;
/// Bits 0..=28 of every presence word describe fields.
const FIELD_BITS: u32 = 29;

const FIELD_FLAGS: u32 = 1;
const FIELD_CHANNEL: u32 = 3;
const FIELD_DBM_ANTSIGNAL: u32 = 5;
const FIELD_ZERO_LENGTH_PSDU: u32 = 26;

const FLAG_FCS_AT_END: u8 = 0x10;
const FLAG_BAD_FCS: u8 = 0x40;

/// The vendor namespace header: OUI (3), sub namespace (1), skip length (u16).
const VENDOR_HEADER_ALIGN: usize = 2;
const VENDOR_HEADER_SIZE: usize = 6;

const OVERRUN: Reject = Reject::Malformed("radiotap field overruns header");

/// Alignment and size of a field of the radiotap namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    align: usize,
    size: usize,
}

const fn layout(align: usize, size: usize) -> Option<Layout> {
    Some(Layout { align, size })
}

/// The defined fields of the radiotap namespace, by bit number. `None` means the field's size is
/// unknown to us (or, for bit 28, that TLVs follow), so nothing after it can be located.
fn field_layout(bit: u32) -> Option<Layout> {
    match bit {
        0 => layout(8, 8),   // TSFT
        1 => layout(1, 1),   // Flags
        2 => layout(1, 1),   // Rate
        3 => layout(2, 4),   // Channel: frequency, flags
        4 => layout(2, 2),   // FHSS
        5 => layout(1, 1),   // dBm antenna signal
        6 => layout(1, 1),   // dBm antenna noise
        7 => layout(2, 2),   // Lock quality
        8 => layout(2, 2),   // TX attenuation
        9 => layout(2, 2),   // dB TX attenuation
        10 => layout(1, 1),  // dBm TX power
        11 => layout(1, 1),  // Antenna
        12 => layout(1, 1),  // dB antenna signal
        13 => layout(1, 1),  // dB antenna noise
        14 => layout(2, 2),  // RX flags
        15 => layout(2, 2),  // TX flags
        16 => layout(1, 1),  // RTS retries
        17 => layout(1, 1),  // Data retries
        18 => layout(4, 8),  // XChannel
        19 => layout(1, 3),  // MCS
        20 => layout(4, 8),  // A-MPDU status
        21 => layout(2, 12), // VHT
        22 => layout(8, 12), // Timestamp
        23 => layout(2, 12), // HE
        24 => layout(2, 12), // HE-MU
        // 25, HE-MU-other-user, is left unknown: Linux and Wireshark do not define its size.
        26 => layout(1, 1), // 0-length PSDU
        27 => layout(2, 4), // L-SIG
        _ => None,
    }
}

/// Splits a DLT 127 frame into what its radiotap header says and the 802.11 frame behind it
/// (still with its FCS, if [`Radio::fcs_at_end`]).
pub(super) fn parse(frame: &[u8]) -> Result<(Radio, &[u8]), Reject> {
    let [version, _pad, len_lo, len_hi] = read::<4>(frame, 0).ok_or(Reject::Truncated)?;
    if version != 0 {
        return Err(Reject::Malformed("radiotap version"));
    }
    let (header, mpdu) = frame
        .split_at_checked(usize::from(u16::from_le_bytes([len_lo, len_hi])))
        .ok_or(Reject::Truncated)?;
    let bitmaps_end = bitmaps_end(header)?;
    let radio = walk_fields(header, bitmaps_end)?;
    Ok((radio, mpdu))
}

/// Offset just past the last presence word, where field data starts.
fn bitmaps_end(header: &[u8]) -> Result<usize, Reject> {
    let mut at = 4;
    loop {
        let word = read_u32(header, at).ok_or(Reject::Malformed(
            "radiotap presence bitmap overruns header",
        ))?;
        at += 4;
        if word & ANOTHER_BITMAP_FOLLOWS == 0 {
            return Ok(at);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    /// The radiotap namespace; `first_bit` is the field number of bit 0 of the current word
    /// (0, 32, 64, … as words chain within one namespace).
    Radiotap { first_bit: u32 },
    /// A vendor namespace, whose data has been skipped as a whole.
    Vendor,
}

fn walk_fields(header: &[u8], bitmaps_end: usize) -> Result<Radio, Reject> {
    let mut radio = Radio::default();
    let mut data = Cursor {
        header,
        at: bitmaps_end,
    };
    let mut namespace = Namespace::Radiotap { first_bit: 0 };
    let mut word_at = 4;
    while word_at < bitmaps_end {
        let word = read_u32(header, word_at).ok_or(OVERRUN)?;
        word_at += 4;
        if let Namespace::Radiotap { first_bit } = namespace {
            for bit in (0..FIELD_BITS).filter(|bit| word & (1 << bit) != 0) {
                let field = first_bit.saturating_add(bit);
                let Some(Layout { align, size }) = field_layout(field) else {
                    // Everything after an unknown field is at an unknown offset: keep what we
                    // have rather than misread the rest.
                    return Ok(radio);
                };
                radio.record(field, data.take(align, size)?);
            }
        }
        if word & ANOTHER_BITMAP_FOLLOWS == 0 {
            break;
        }
        namespace = match (
            word & RADIOTAP_NAMESPACE_NEXT != 0,
            word & VENDOR_NAMESPACE_NEXT != 0,
        ) {
            (true, true) => return Err(Reject::Malformed("radiotap namespace bits conflict")),
            (true, false) => Namespace::Radiotap { first_bit: 0 },
            (false, true) => {
                let vendor_header = data.take(VENDOR_HEADER_ALIGN, VENDOR_HEADER_SIZE)?;
                let &[_, _, _, _, skip_lo, skip_hi] = vendor_header else {
                    return Err(OVERRUN);
                };
                // We know no vendor's fields: skip all of the namespace's data at once.
                data.take(1, usize::from(u16::from_le_bytes([skip_lo, skip_hi])))?;
                Namespace::Vendor
            }
            (false, false) => match namespace {
                Namespace::Radiotap { first_bit } => Namespace::Radiotap {
                    first_bit: first_bit.saturating_add(32),
                },
                Namespace::Vendor => Namespace::Vendor,
            },
        };
    }
    Ok(radio)
}

/// Field data in a radiotap header, consumed front to back.
struct Cursor<'a> {
    header: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Takes the next field; fields are aligned to their natural size relative to the start of
    /// the header, not to the start of the field data.
    fn take(&mut self, align: usize, size: usize) -> Result<&'a [u8], Reject> {
        let start = self.at.checked_next_multiple_of(align).ok_or(OVERRUN)?;
        let end = start.checked_add(size).ok_or(OVERRUN)?;
        let field = self.header.get(start..end).ok_or(OVERRUN)?;
        self.at = end;
        Ok(field)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read::<4>(bytes, at).map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::{ChainSignals, MAX_CHAINS, Radio, parse};
    use crate::dot11::Reject;

    /// Builds a radiotap header from presence words and field bytes, filling in the length.
    fn header(words: &[u32], fields: &[u8]) -> Vec<u8> {
        let mut header = vec![0, 0, 0, 0];
        for word in words {
            header.extend_from_slice(&word.to_le_bytes());
        }
        header.extend_from_slice(fields);
        let len = u16::try_from(header.len()).unwrap().to_le_bytes();
        header[2..4].copy_from_slice(&len);
        header
    }

    fn parse_header(header: &[u8]) -> Result<Radio, Reject> {
        parse(header).map(|(radio, rest)| {
            assert!(rest.is_empty(), "the header length covers the whole header");
            radio
        })
    }

    const CHANNEL_2437: [u8; 4] = [0x85, 0x09, 0xa0, 0x00];

    #[test]
    fn a_header_with_only_channel_and_signal_is_read() {
        // Channel, dBm antenna signal, antenna: what the ESP32 sniffer of the fryza captures wrote.
        let header = header(&[0x0000_0828], &[0x71, 0x09, 0x80, 0x00, 0xae, 0x00]);
        let radio = parse_header(&header).unwrap();
        assert_eq!(radio.freq_mhz, Some(2417));
        assert_eq!(radio.signal_dbm, Some(-82));
        assert_eq!(radio.chains.as_slice(), &[] as &[i8]);
        assert!(!radio.fcs_at_end());
    }

    #[test]
    fn the_bytes_after_the_header_length_are_the_80211_frame() {
        let mut frame = header(&[0x0000_0020], &[0xc4]);
        frame.extend_from_slice(&[0x40, 0x00]);
        let (radio, mpdu) = parse(&frame).unwrap();
        assert_eq!(radio.signal_dbm, Some(-60));
        assert_eq!(mpdu, &[0x40, 0x00]);
    }

    #[test]
    fn tsft_is_aligned_to_8_bytes_from_the_start_of_the_header() {
        // One presence word ends at offset 8: TSFT starts right there, then flags at 16.
        let mut fields = vec![0xaa; 8];
        fields.extend_from_slice(&[0x10, 0xd0]);
        let radio = parse_header(&header(&[0x0000_0023], &fields)).unwrap();
        assert!(radio.fcs_at_end());
        assert_eq!(radio.signal_dbm, Some(-48));

        // Two presence words end at offset 12: TSFT needs 4 bytes of padding first.
        let mut fields = vec![0x00; 4];
        fields.extend_from_slice(&[0xaa; 8]);
        fields.extend_from_slice(&[0x00, 0xd0]);
        let words = [0x8000_0023, 0x0000_0000];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert!(!radio.fcs_at_end());
        assert_eq!(radio.signal_dbm, Some(-48));
    }

    #[test]
    fn the_channel_is_aligned_to_2_bytes_after_an_odd_field() {
        // Flags (1 byte at 8), padding at 9, channel at 10.
        let mut fields = vec![0x00, 0xff];
        fields.extend_from_slice(&CHANNEL_2437);
        fields.push(0xc8);
        let radio = parse_header(&header(&[0x0000_002a], &fields)).unwrap();
        assert_eq!(radio.freq_mhz, Some(2437));
        assert_eq!(radio.signal_dbm, Some(-56));
    }

    #[test]
    fn fields_after_rx_flags_mcs_and_ampdu_are_found() {
        // Signal, RX flags, MCS, A-MPDU status, then a second radiotap namespace with a chain.
        let mut fields = vec![0xc0]; // signal at 12
        fields.push(0); // pad to 14
        fields.extend_from_slice(&[0, 0]); // RX flags at 14
        fields.extend_from_slice(&[0x07, 0x00, 0x05]); // MCS at 16..19
        fields.push(0); // pad to 20
        fields.extend_from_slice(&[0; 8]); // A-MPDU status at 20..28
        fields.push(0xbe); // chain 0 signal at 28
        let words = [0xa018_4020, 0x0000_0020];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-64));
        assert_eq!(radio.chains.as_slice(), &[-66]);
    }

    #[test]
    fn later_signals_in_fresh_radiotap_namespaces_are_per_chain() {
        // Linux mac80211's layout: combined signal, then per chain a namespace with signal and
        // antenna number.
        let words = [0xa000_0828, 0xa000_0820, 0x0000_0820];
        let mut fields = CHANNEL_2437.to_vec();
        fields.extend_from_slice(&[0xda, 0x00, 0xda, 0x00, 0xd4, 0x01]);
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.freq_mhz, Some(2437));
        assert_eq!(radio.signal_dbm, Some(-38));
        assert_eq!(radio.chains.as_slice(), &[-38, -44]);
    }

    #[test]
    fn a_signal_in_a_later_word_is_the_combined_one_when_the_first_has_none() {
        let words = [0xa000_0008, 0x0000_0020];
        let mut fields = CHANNEL_2437.to_vec();
        fields.push(0xb0);
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-80));
        assert!(radio.chains.as_slice().is_empty());
    }

    #[test]
    fn unknown_fields_in_an_extended_bitmap_stop_the_walk_after_the_known_ones() {
        // The second word continues the radiotap namespace with undefined fields 32 and up, as in
        // tcpdump's ieee802.11_exthdr capture; their bytes must not be read as anything.
        let words = [0x8000_0022, 0x0000_00ff];
        let fields = [0x10, 0xc4, 0x40, 0x40, 0x40, 0x40];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert!(radio.fcs_at_end());
        assert_eq!(radio.signal_dbm, Some(-60));
        assert!(radio.chains.as_slice().is_empty());
    }

    #[test]
    fn a_tlv_bitmap_stops_the_walk_after_the_fixed_fields() {
        let words = [0x1000_0020];
        let fields = [0xc4, 0x00, 0x00, 0x00, 0x05, 0x00, 0x01, 0x00, 0xc0];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-60));
        assert!(radio.chains.as_slice().is_empty());
    }

    #[test]
    fn a_vendor_namespace_is_skipped_by_its_skip_length() {
        // Signal (-60), then the vendor namespace header at offset 18 (aligned to 2) with 5 bytes
        // of vendor data whose own bitmap claims fields we do not know, then back to radiotap with
        // a chain signal (-70).
        let words = [0xc000_0020, 0xa000_0003, 0x0000_0020];
        let mut fields = vec![0xc4, 0x00];
        fields.extend_from_slice(&[0x00, 0x11, 0x22, 0x01, 0x05, 0x00]);
        fields.extend_from_slice(&[0xb0, 0xb0, 0xb0, 0xb0, 0xb0]);
        fields.push(0xba);
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-60));
        assert_eq!(radio.chains.as_slice(), &[-70]);
    }

    #[test]
    fn signals_inside_a_vendor_namespace_are_not_read() {
        // The vendor bitmap sets bit 5, which means nothing outside the radiotap namespace.
        let words = [0xc000_0000, 0x0000_0020];
        let fields = [0x00, 0x11, 0x22, 0x00, 0x01, 0x00, 0xc4];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, None);
    }

    #[test]
    fn a_vendor_namespace_spanning_several_words_is_skipped_once() {
        let words = [0xc000_0000, 0x8000_ffff, 0xa000_ffff, 0x0000_0020];
        let fields = [0x00, 0x11, 0x22, 0x00, 0x02, 0x00, 0xee, 0xee, 0xa6];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-90));
    }

    #[test]
    fn a_vendor_skip_length_past_the_header_is_malformed() {
        let words = [0xc000_0000, 0x0000_0001];
        let fields = [0x00, 0x11, 0x22, 0x00, 0xff, 0x00, 0x00];
        assert_eq!(
            parse_header(&header(&words, &fields)),
            Err(Reject::Malformed("radiotap field overruns header"))
        );
    }

    #[test]
    fn the_flags_field_reports_fcs_present_and_bad_fcs() {
        let radio = parse_header(&header(&[0x0000_0002], &[0x10])).unwrap();
        assert!(radio.fcs_at_end() && !radio.bad_fcs());
        let radio = parse_header(&header(&[0x0000_0002], &[0x50])).unwrap();
        assert!(radio.fcs_at_end() && radio.bad_fcs());
    }

    #[test]
    fn a_field_running_past_the_header_length_is_malformed() {
        let truncated_channel = header(&[0x0000_0008], &[0x85, 0x09]);
        assert_eq!(
            parse_header(&truncated_channel),
            Err(Reject::Malformed("radiotap field overruns header"))
        );
    }

    #[test]
    fn a_presence_bitmap_running_past_the_header_length_is_malformed() {
        let header = header(&[0x8000_0000, 0x8000_0000], &[]);
        assert_eq!(
            parse_header(&header),
            Err(Reject::Malformed(
                "radiotap presence bitmap overruns header"
            ))
        );
    }

    #[test]
    fn a_header_length_past_the_capture_is_truncated() {
        let mut frame = header(&[0x0000_0020], &[0xc4]);
        frame[2] = 200;
        assert_eq!(parse(&frame), Err(Reject::Truncated));
        assert_eq!(parse(&[0, 0, 8]), Err(Reject::Truncated));
    }

    #[test]
    fn a_header_length_shorter_than_the_bitmap_is_malformed() {
        assert_eq!(
            parse(&[0, 0, 4, 0, 0, 0, 0, 0]),
            Err(Reject::Malformed(
                "radiotap presence bitmap overruns header"
            ))
        );
    }

    #[test]
    fn only_radiotap_version_0_is_understood() {
        let mut frame = header(&[0x0000_0020], &[0xc4]);
        frame[0] = 1;
        assert_eq!(parse(&frame), Err(Reject::Malformed("radiotap version")));
    }

    #[test]
    fn both_namespace_bits_at_once_are_malformed() {
        let header = header(&[0xe000_0000, 0x0000_0000], &[]);
        assert_eq!(
            parse_header(&header),
            Err(Reject::Malformed("radiotap namespace bits conflict"))
        );
    }

    #[test]
    fn fhss_is_aligned_to_2_bytes() {
        // Rate at 8, padding at 9, FHSS at 10..12, signal at 12.
        let fields = [0x02, 0x00, 0x01, 0x02, 0xc4];
        let radio = parse_header(&header(&[0x0000_0034], &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-60));
    }

    #[test]
    fn he_and_he_mu_fields_are_12_bytes_each() {
        // HE at 12..24, HE-MU at 24..36, L-SIG at 36..40, then a chain at 40.
        let mut fields = vec![0x00; 28];
        fields.push(0xba);
        let words = [0xa980_0000, 0x0000_0020];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, Some(-70));
    }

    #[test]
    fn the_he_mu_other_user_field_stops_the_walk() {
        // Its size is not agreed on, so the signal behind it must not be guessed at.
        let words = [0xa200_0000, 0x0000_0020];
        let fields = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xba];
        let radio = parse_header(&header(&words, &fields)).unwrap();
        assert_eq!(radio.signal_dbm, None);
    }

    #[test]
    fn a_zero_length_psdu_field_says_no_frame_follows() {
        let radio = parse_header(&header(&[0x0400_0020], &[0xc4, 0x01])).unwrap();
        assert!(radio.no_psdu);
        assert_eq!(radio.signal_dbm, Some(-60));
    }

    #[test]
    fn chain_signals_keep_at_most_max_chains() {
        let many: Vec<i8> = (0..20).map(|i| -40 - i).collect();
        let chains = ChainSignals::from_slice(&many);
        assert_eq!(chains.as_slice(), &many[..MAX_CHAINS]);
    }
}
