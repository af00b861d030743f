//! The frame parser against real captures: every probe request must read exactly as tshark reads
//! it (the oracle files, see `tests/data/README.md`), and no truncation or mutation of a real
//! frame may make the parser panic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use probegate::dot11::{self, LinkType, MAX_CHAINS, ProbeRequest, Reject};

/// Every capture under `tests/data`, each with its oracle beside it as `<capture>.probes.tsv`.
const CAPTURES: &[&str] = &[
    "tcpdump/ieee802.11_exthdr.pcap",
    "tcpdump/ieee802.11_meshid.pcap",
    "fryza-sc6-61/sc6-61_2022-10-19.pcap",
    "fryza-sc6-61/sc6-61_2023-02-16.pcap",
    "fryza-sc6-61/sc6-61_2023-03-08.pcap",
    "fryza-sc6-61/sc6-61_2023-04-15.pcap",
    "fryza-sc6-61/sc6-61_2023-04-17.pcap",
    "fryza-sc6-61/sc6-61_2023-10-20.pcap",
    "fryza-sc6-61/sc6-61_2024-03-22.pcap",
    "handmade/radiotap-edge-cases.pcap",
];

/// Probe requests tshark shows that we reject on purpose: (capture, why, how many). Each one is
/// also checked against the oracle row (see `rejection_is_explained`).
const EXPECTED_REJECTIONS: &[(&str, Reject, usize)] = &[
    // 179 probes from 81 addresses with the group bit set, presumably from the authors'
    // anonymisation of addresses (the dataset's CSV marks them as not randomized); the other
    // days have none. No real transmitter has a group address.
    (
        "fryza-sc6-61/sc6-61_2022-10-19.pcap",
        Reject::MulticastTransmitter,
        179,
    ),
];

/// Whether the oracle row itself shows why we reject the probe.
fn rejection_is_explained(reject: Reject, row: &Row) -> bool {
    match reject {
        Reject::MulticastTransmitter => u8::from_str_radix(&row.sa[..2], 16).unwrap() & 1 == 1,
        // A new kind of rejection needs its own evidence here before it may be excused.
        _ => false,
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

struct Capture {
    link: LinkType,
    /// Frame number `i + 1` is `frames[i]`, as tshark numbers them.
    frames: Vec<Vec<u8>>,
}

fn read_capture(name: &str) -> Capture {
    let path = data_dir().join(name);
    let mut capture = pcap::Capture::from_file(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let dlt = capture.get_datalink().0;
    let link = LinkType::from_dlt(dlt).unwrap_or_else(|| panic!("{name}: unexpected DLT {dlt}"));
    let mut frames = Vec::new();
    loop {
        match capture.next_packet() {
            Ok(packet) => frames.push(packet.data.to_vec()),
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => panic!("{name}: reading packet {}: {e}", frames.len() + 1),
        }
    }
    Capture { link, frames }
}

/// One probe request as the oracle writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    sa: String,
    seq: u16,
    /// Combined signal first, then the per-chain ones.
    dbm_all: Vec<i8>,
    freq: Option<u16>,
    ssid_len: Option<u8>,
    tags: Vec<u8>,
}

const ORACLE_HEADER: &str = "frame\tsa\tseq\tdbm_antsignal_all\tfreq\tssid_len\ttag_numbers";

fn read_oracle(name: &str) -> BTreeMap<u32, Row> {
    let path = data_dir().join(format!("{name}.probes.tsv"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(ORACLE_HEADER), "{}", path.display());
    let mut rows = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let at = || format!("{}:{}", path.display(), i + 2);
        let fields: Vec<&str> = line.split('\t').collect();
        let [frame, sa, seq, dbm_all, freq, ssid_len, tags] = fields[..] else {
            panic!("{}: expected 7 fields", at());
        };
        let row = Row {
            sa: sa.to_owned(),
            seq: seq.parse().unwrap_or_else(|e| panic!("{}: seq: {e}", at())),
            dbm_all: parse_list(dbm_all).unwrap_or_else(|e| panic!("{}: dBm: {e}", at())),
            freq: parse_optional(freq).unwrap_or_else(|e| panic!("{}: freq: {e}", at())),
            ssid_len: parse_optional(ssid_len).unwrap_or_else(|e| panic!("{}: ssid: {e}", at())),
            tags: parse_list(tags).unwrap_or_else(|e| panic!("{}: tags: {e}", at())),
        };
        let frame = frame
            .parse()
            .unwrap_or_else(|e| panic!("{}: frame: {e}", at()));
        assert!(rows.insert(frame, row).is_none(), "{}: frame repeats", at());
    }
    rows
}

fn parse_optional<T: std::str::FromStr>(field: &str) -> Result<Option<T>, T::Err> {
    if field.is_empty() {
        Ok(None)
    } else {
        field.parse().map(Some)
    }
}

fn parse_list<T: std::str::FromStr>(field: &str) -> Result<Vec<T>, T::Err> {
    if field.is_empty() {
        Ok(Vec::new())
    } else {
        field.split(',').map(str::parse).collect()
    }
}

/// The oracle's spelling of an address: the test may print one, the crate may not.
fn colon_hex(octets: [u8; 6]) -> String {
    let mut text = String::new();
    for (i, octet) in octets.iter().enumerate() {
        let separator = if i == 0 { "" } else { ":" };
        write!(text, "{separator}{octet:02x}").unwrap();
    }
    text
}

fn row_of(probe: &ProbeRequest<'_>, chains: &[i8]) -> Row {
    Row {
        sa: colon_hex(probe.transmitter.octets()),
        seq: probe.seq,
        dbm_all: probe
            .signal_dbm
            .into_iter()
            .chain(chains.iter().copied())
            .collect(),
        freq: probe.freq_mhz,
        ssid_len: probe.ssid_len,
        tags: probe.ie_tags().collect(),
    }
}

/// Parses every frame of a capture and holds the probe requests against the oracle. Returns how
/// many probes were compared.
fn check_capture(name: &str) -> usize {
    let capture = read_capture(name);
    let oracle = read_oracle(name);
    let mut problems = Vec::new();
    let mut compared = 0;
    let mut rejected = BTreeMap::<&str, usize>::new();
    let excused: Vec<Reject> = EXPECTED_REJECTIONS
        .iter()
        .filter(|&&(capture, _, _)| capture == name)
        .map(|&(_, why, _)| why)
        .collect();
    for (number, frame) in (1..).zip(&capture.frames) {
        match (
            dot11::parse_with_chains(capture.link, frame),
            oracle.get(&number),
        ) {
            (Ok((probe, chains)), Some(expected)) => {
                let actual = row_of(&probe, chains.as_slice());
                if actual == *expected {
                    compared += 1;
                } else {
                    problems.push(format!(
                        "frame {number}: read {actual:?}, tshark {expected:?}"
                    ));
                }
            }
            (Ok(_), None) => {
                problems.push(format!("frame {number}: tshark sees no probe request"));
            }
            (Err(reject), Some(row))
                if excused.contains(&reject) && rejection_is_explained(reject, row) =>
            {
                *rejected.entry(reject.as_str()).or_default() += 1;
            }
            (Err(reject), Some(row)) => problems.push(format!(
                "frame {number}: tshark sees a probe request {row:?}, we reject it: {reject}"
            )),
            (Err(Reject::NotProbeRequest), None) => {}
            (Err(reject), None) => problems.push(format!(
                "frame {number}: a frame of another type should be not_probe_request, is {reject}"
            )),
        }
    }
    let frame_count = u32::try_from(capture.frames.len()).unwrap();
    if let Some((&beyond, _)) = oracle.range(frame_count + 1..).next() {
        problems.push(format!(
            "the oracle has frame {beyond} of only {frame_count}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{name}: {} problems, the first:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    let expected_rejected: BTreeMap<&str, usize> = EXPECTED_REJECTIONS
        .iter()
        .filter(|&&(capture, _, _)| capture == name)
        .map(|&(_, why, count)| (why.as_str(), count))
        .collect();
    assert_eq!(rejected, expected_rejected, "{name}: rejections");
    let rejected_total: usize = rejected.values().sum();
    assert_eq!(compared + rejected_total, oracle.len());
    eprintln!(
        "{name}: {compared} probe requests equal to tshark's, rejected on purpose: {rejected:?}"
    );
    compared
}

#[test]
fn every_capture_in_the_data_folder_is_checked() {
    let mut on_disk = Vec::new();
    for folder in std::fs::read_dir(data_dir()).unwrap() {
        let folder = folder.unwrap();
        if !folder.file_type().unwrap().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(folder.path()).unwrap() {
            let file_name = file.unwrap().file_name().into_string().unwrap();
            if file_name.ends_with(".pcap") {
                let folder_name = folder.file_name().into_string().unwrap();
                on_disk.push(format!("{folder_name}/{file_name}"));
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = CAPTURES.iter().map(|&c| c.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn extended_bitmaps_of_tcpdump_exthdr_read_as_tshark_reads_them() {
    assert_eq!(check_capture("tcpdump/ieee802.11_exthdr.pcap"), 6);
}

#[test]
fn per_chain_namespaces_of_tcpdump_meshid_read_as_tshark_reads_them() {
    assert_eq!(check_capture("tcpdump/ieee802.11_meshid.pcap"), 1);
}

#[test]
fn handmade_radiotap_edge_cases_read_as_tshark_reads_them() {
    assert_eq!(check_capture("handmade/radiotap-edge-cases.pcap"), 8);
}

#[test]
fn fryza_2022_10_19_reads_as_tshark_reads_it() {
    assert_eq!(
        check_capture("fryza-sc6-61/sc6-61_2022-10-19.pcap"),
        8375 - 179
    );
}

#[test]
fn fryza_2023_02_16_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2023-02-16.pcap"), 6802);
}

#[test]
fn fryza_2023_03_08_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2023-03-08.pcap"), 12166);
}

#[test]
fn fryza_2023_04_15_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2023-04-15.pcap"), 2804);
}

#[test]
fn fryza_2023_04_17_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2023-04-17.pcap"), 511);
}

#[test]
fn fryza_2023_10_20_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2023-10-20.pcap"), 1697);
}

#[test]
fn fryza_2024_03_22_reads_as_tshark_reads_it() {
    assert_eq!(check_capture("fryza-sc6-61/sc6-61_2024-03-22.pcap"), 4207);
}

/// A tiny deterministic generator, so a failure reproduces exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Values that sit on the edges of lengths, flags and namespace bits.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x7f, 0x80, 0xff,
];

fn mutate(rng: &mut XorShift, frame: &mut Vec<u8>) {
    // Half the edits land in the first 64 bytes, where the radiotap and 802.11 headers are.
    let position = |rng: &mut XorShift, len: usize| {
        if rng.below(2) == 0 {
            rng.below(len.min(64))
        } else {
            rng.below(len)
        }
    };
    for _ in 0..=rng.below(4) {
        let at = position(rng, frame.len());
        match rng.below(7) {
            0 if at < frame.len() => frame[at] ^= 1 << rng.below(8),
            1 if at < frame.len() => frame[at] = rng.byte(),
            2 if at < frame.len() => frame[at] = INTERESTING[rng.below(INTERESTING.len())],
            3 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                for byte in frame.iter_mut().skip(at).take(4) {
                    *byte = value;
                }
            }
            4 => frame.truncate(at),
            5 => frame.insert(at.min(frame.len()), rng.byte()),
            6 if at < frame.len() => {
                frame.remove(at);
            }
            _ => {}
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `frame` as both link types; a panic is reported with the input that caused it, and a
/// probe request read from garbage must still be self-consistent.
fn parse_must_not_panic(frame: &[u8]) {
    for link in [LinkType::Radiotap, LinkType::Ieee80211] {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            if let Ok((probe, chains)) = dot11::parse_with_chains(link, frame) {
                let frame_range = frame.as_ptr_range();
                let ies_range = probe.ies.as_ptr_range();
                assert!(frame_range.start <= ies_range.start && ies_range.end <= frame_range.end);
                assert!(probe.seq < 4096);
                assert!(!probe.transmitter.is_multicast());
                assert!(probe.ie_tags().count() <= probe.ies.len() / 2);
                assert!(chains.as_slice().len() <= MAX_CHAINS);
                let first = probe.elements().next();
                if let Some(ssid_len) = probe.ssid_len {
                    assert_eq!(
                        first.map(|e| (e.tag, e.body.len())),
                        Some((0, ssid_len.into()))
                    );
                }
                let _ = format!("{probe:?}");
            }
        }));
        if outcome.is_err() {
            panic!("{link:?} frame {} made the parser panic", hex(frame));
        }
    }
}

/// Frames to mutate: every frame of the small captures (extended bitmaps, several namespaces,
/// vendor namespaces, FCS, other frame types) and the first few of each big one.
fn seed_frames() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for name in CAPTURES {
        let capture = read_capture(name);
        let take = if name.starts_with("fryza-sc6-61/") {
            5
        } else {
            usize::MAX
        };
        seeds.extend(capture.frames.into_iter().take(take));
    }
    seeds
}

#[test]
fn no_truncation_of_a_real_frame_makes_the_parser_panic() {
    for frame in seed_frames() {
        for len in 0..=frame.len() {
            parse_must_not_panic(&frame[..len]);
        }
    }
}

#[test]
fn no_mutation_of_a_real_frame_makes_the_parser_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for seed in seed_frames() {
        for _ in 0..3000 {
            let mut frame = seed.clone();
            mutate(&mut rng, &mut frame);
            parse_must_not_panic(&frame);
            accepted += usize::from(dot11::parse(LinkType::Radiotap, &frame).is_ok());
        }
    }
    // Guards against mutations so wild that the parser never gets past the headers.
    assert!(accepted > 1000, "only {accepted} mutated frames parsed");
}
