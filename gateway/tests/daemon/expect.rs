//! What the visitor counter must report for a capture, computed without any probegate code:
//! addresses and signals from the tshark oracle, times from the pcap headers.

use std::collections::{BTreeSet, HashMap};

pub struct Probe {
    /// 1-based, as tshark numbers frames.
    pub frame: usize,
    pub time_ms: u64,
    pub sa: [u8; 6],
    pub dbm: Option<i32>,
}

/// Every frame's capture time, in frame order.
pub fn frame_times(capture: &str) -> Vec<u64> {
    let mut cap = pcap::Capture::from_file(super::harness::capture(capture)).unwrap();
    let mut times = Vec::new();
    while let Ok(p) = cap.next_packet() {
        times.push(p.header.ts.tv_sec as u64 * 1000 + p.header.ts.tv_usec as u64 / 1000);
    }
    times
}

/// Every probe request of `capture` (a name under tests/data), in frame order.
pub fn probes(capture: &str) -> Vec<Probe> {
    let path = super::harness::capture(capture);
    let times = frame_times(capture);
    let oracle = std::fs::read_to_string(format!("{}.probes.tsv", path.display())).unwrap();
    oracle
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let frame: usize = cols[0].parse().unwrap();
            Probe {
                frame,
                time_ms: times[frame - 1],
                sa: mac(cols[1]),
                dbm: cols[3].split(',').next().and_then(|d| d.parse().ok()),
            }
        })
        .collect()
}

pub fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

/// (interval start, universal, randomized, sightings, partial) per interval, as the
/// visitor-counter plugin's README defines them.
pub type Row = (u64, u64, u64, u64, bool);

/// The counter's rows for a whole capture: probes that pass the gate are counted, and every
/// frame (dropped ones too) moves time on, closing the intervals it passes.
pub fn counts(capture: &str, interval_ms: u64, floor: i32) -> Vec<Row> {
    counts_where(capture, interval_ms, floor, |_| true)
}

/// As [`counts`], counting only the probes `keep` accepts (e.g. not an opted-out device).
pub fn counts_where(
    capture: &str,
    interval_ms: u64,
    floor: i32,
    keep: impl Fn(&Probe) -> bool,
) -> Vec<Row> {
    let admitted: HashMap<u64, Vec<[u8; 6]>> = probes(capture)
        .into_iter()
        .filter(|p| p.sa[0] & 1 == 0 && p.dbm.is_none_or(|d| d >= floor) && keep(p))
        .fold(HashMap::new(), |mut m, p| {
            m.entry(p.time_ms).or_insert_with(Vec::new).push(p.sa);
            m
        });
    let mut rows = Vec::new();
    let mut start: Option<u64> = None;
    let mut seen: HashMap<bool, BTreeSet<[u8; 6]>> = HashMap::new();
    let mut sightings = 0;
    let mut times = frame_times(capture);
    times.dedup();
    for t in times {
        if let Some(s) = start.as_mut() {
            while t >= *s + interval_ms {
                rows.push(close(&mut seen, &mut sightings, *s, false));
                *s += interval_ms;
            }
        }
        for sa in admitted.get(&t).into_iter().flatten() {
            start.get_or_insert(t - t % interval_ms);
            seen.entry(sa[0] & 2 != 0).or_default().insert(*sa);
            sightings += 1;
        }
    }
    if let Some(s) = start.filter(|_| sightings > 0) {
        rows.push(close(&mut seen, &mut sightings, s, true));
    }
    rows
}

fn close(
    seen: &mut HashMap<bool, BTreeSet<[u8; 6]>>,
    sightings: &mut u64,
    start: u64,
    partial: bool,
) -> Row {
    let n = |r: bool| seen.get(&r).map_or(0, |s| s.len() as u64);
    let row = (start, n(false), n(true), *sightings, partial);
    seen.clear();
    *sightings = 0;
    row
}

/// The same rows, read from the plugin's messages.
pub fn rows_of(messages: &[serde_json::Value]) -> Vec<Row> {
    messages
        .iter()
        .map(|m| {
            let d = &m["data"];
            (
                d["interval_start_ms"].as_u64().unwrap(),
                d["universal"].as_u64().unwrap(),
                d["randomized"].as_u64().unwrap(),
                d["sightings"].as_u64().unwrap(),
                d["partial"].as_bool().unwrap(),
            )
        })
        .collect()
}
