//! A seeded load generator: a store's day of probe requests as a radiotap pcap, and the
//! statistics that compare a capture with the shared real ones.
//!
//! `cargo xtask loadgen --probes N [--days D] [--seed S] --out FILE|-` (`-`: stdout): `N`
//! probes a day, `D` days one after the other.
//!
//! The model, per device class (shares and rates from what phones are documented and seen to
//! do; the real captures in tests/data are a lab, not a store, so they check the shape):
//! - shoppers arrive all day (more at lunch and after work); most stay minutes (log-normal
//!   dwell, median 12 min), many only pass the door (10-60 s, weak signal);
//! - iOS-like phones probe from a randomized (locally administered) address that changes
//!   every 15 min or so, 1-3 probes a burst on the sniffer's channel, a burst every ~45 s;
//!   Android-like ones take a new random address for every burst, 2-5 probes, every ~60 s;
//!   a few older phones and
//!   gadgets use their universal address; each class has its own information elements, with
//!   per-model capability bytes;
//! - fixed devices (staff PCs, a printer, a display) probe all day with universal addresses.
//!
//! Records come out in time order from a heap of devices in the store, so memory stays flat
//! at any size: 10 M probes are streamed, never held.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// 2026-03-14 (a Saturday) 08:00 UTC: the store opens.
const OPEN_MS: u64 = 1_773_475_200_000;
/// Open 08:00-21:00.
const DAY_MS: u64 = 13 * 3_600_000;
const FIXED_DEVICES: usize = 8;

/// splitmix64: small, seeded, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Class {
    Ios,
    Android,
    Universal,
    Fixed,
}

struct Profile {
    class: Class,
    /// Share of shoppers' phones.
    share: f64,
    burst: (u64, u64),
    /// Mean seconds between bursts.
    scan_secs: f64,
    /// Element ids in order; lengths and contents are filled per model.
    tags: &'static [u8],
}

const PROFILES: [Profile; 4] = [
    Profile {
        class: Class::Ios,
        share: 0.52,
        burst: (1, 3),
        scan_secs: 45.0,
        tags: &[0, 1, 50, 3, 45, 127, 191, 221, 255],
    },
    Profile {
        class: Class::Android,
        share: 0.40,
        burst: (2, 5),
        scan_secs: 60.0,
        tags: &[0, 1, 50, 3, 45, 127, 107, 191, 221, 255],
    },
    Profile {
        class: Class::Universal,
        share: 0.08,
        burst: (1, 3),
        scan_secs: 30.0,
        tags: &[0, 1, 50, 3, 45, 221],
    },
    Profile {
        class: Class::Fixed,
        share: 0.0,
        burst: (1, 2),
        scan_secs: 120.0,
        tags: &[0, 1, 50, 3, 45, 127],
    },
];

const OUIS: [[u8; 3]; 6] = [
    [0x3c, 0x22, 0xfb],
    [0x8c, 0xf5, 0xa3],
    [0xdc, 0xfb, 0x48],
    [0x40, 0xec, 0x99],
    [0xf0, 0x18, 0x98],
    [0x00, 0x1b, 0x63],
];
const CHANNELS: [u16; 3] = [2412, 2437, 2462];

struct Device {
    profile: usize,
    model: u8,
    mac: [u8; 6],
    seq: u16,
    signal: f64,
    leave_ms: u64,
    rotate_ms: u64,
    burst_left: u64,
}

/// One probe request record, ready for a pcap.
pub struct Probe {
    pub time_ms: u64,
    pub frame: Vec<u8>,
}

/// The day's probe requests in time order, until `total` of them.
pub struct StoreDay {
    rng: Rng,
    total: u64,
    emitted: u64,
    devices: Vec<Option<Device>>,
    free: Vec<usize>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    next_arrival_ms: u64,
    /// Mean shopper arrivals per second at the busiest hour.
    peak_rate: f64,
    peak_busyness: f64,
    /// A calibration run: counts, builds no frames.
    dry: bool,
    fixed_probes: u64,
}

/// Relative arrival rate at `ms` after opening: a lunch peak and an after-work one.
fn busyness(ms: u64) -> f64 {
    let h = ms as f64 / 3_600_000.0 + 8.0;
    let bump = |at: f64, width: f64| (-((h - at) / width).powi(2)).exp();
    0.35 + 0.5 * bump(12.5, 1.2) + 0.65 * bump(17.5, 1.5)
}

/// Expected probes a shopper makes (mean over classes, dwell and passers-by).
fn probes_per_shopper() -> f64 {
    // Passers-by (45 %): ~35 s; visitors: log-normal dwell, median 12 min (mean ~16 min).
    let stay = 0.45 * 35.0 + 0.55 * 16.0 * 60.0;
    PROFILES[..3]
        .iter()
        .map(|p| {
            let burst = (p.burst.0 + p.burst.1) as f64 / 2.0;
            p.share * burst * (1.0 + stay / p.scan_secs)
        })
        .sum()
}

impl StoreDay {
    pub fn new(seed: u64, total: u64) -> StoreDay {
        // Shoppers' probes grow with the arrival rate, the fixed devices' do not: a dry run at
        // a tenth of a first guess tells the rate that makes the day a little longer than
        // `total`, where it is cut.
        let guess = total as f64 / probes_per_shopper() / (DAY_MS as f64 / 1000.0) / 0.6;
        let mut pilot = StoreDay::at_rate(seed ^ 0x5eed, u64::MAX, guess / 10.0, true);
        let pilot_probes = pilot.by_ref().count() as u64;
        let shoppers = pilot_probes.saturating_sub(pilot.fixed_probes).max(1);
        let wanted = (total as f64 * 1.01 - pilot.fixed_probes as f64).max(0.0);
        StoreDay::at_rate(seed, total, guess / 10.0 * wanted / shoppers as f64, false)
    }

    fn at_rate(seed: u64, total: u64, peak_rate: f64, dry: bool) -> StoreDay {
        let minutes = (0..DAY_MS / 60_000).map(|m| busyness(m * 60_000));
        let mut day = StoreDay {
            rng: Rng::new(seed),
            total,
            emitted: 0,
            devices: Vec::new(),
            free: Vec::new(),
            due: BinaryHeap::new(),
            next_arrival_ms: OPEN_MS,
            peak_rate,
            peak_busyness: minutes.fold(0.0, f64::max),
            dry,
            fixed_probes: 0,
        };
        for _ in 0..FIXED_DEVICES {
            day.arrive(OPEN_MS, Some(3));
        }
        day.schedule_arrival();
        day
    }

    /// Draws the next shopper's arrival by thinning a Poisson process at the peak rate.
    fn schedule_arrival(&mut self) {
        let peak = self.peak_busyness;
        let mut t = self.next_arrival_ms as f64;
        loop {
            t += self.rng.exp(1000.0 / self.peak_rate.max(1e-9));
            let at = t as u64;
            if at >= OPEN_MS + DAY_MS || self.rng.unit() < busyness(at - OPEN_MS) / peak {
                self.next_arrival_ms = at;
                return;
            }
        }
    }

    fn arrive(&mut self, now: u64, fixed: Option<usize>) {
        let rng = &mut self.rng;
        let profile = fixed.unwrap_or_else(|| {
            let pick = rng.unit();
            let mut acc = 0.0;
            PROFILES[..3]
                .iter()
                .position(|p| {
                    acc += p.share;
                    pick < acc
                })
                .unwrap_or(2)
        });
        let (stay_ms, signal) = if fixed.is_some() {
            (DAY_MS + 3_600_000, -45.0 - rng.unit() * 25.0)
        } else if rng.unit() < 0.45 {
            (rng.range(10_000, 60_000), -84.0 - rng.unit() * 10.0)
        } else {
            let minutes = (12f64.ln() + 0.8 * rng.normal()).exp().clamp(1.0, 240.0);
            ((minutes * 60_000.0) as u64, -55.0 - rng.unit() * 25.0)
        };
        let device = Device {
            profile,
            model: rng.range(0, 5) as u8,
            mac: [0; 6],
            seq: rng.range(0, 4095) as u16,
            signal,
            leave_ms: now + stay_ms,
            rotate_ms: 0,
            burst_left: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.devices[slot] = Some(device);
                slot
            }
            None => {
                self.devices.push(Some(device));
                self.devices.len() - 1
            }
        };
        let first = now + self.rng.range(0, 5_000);
        self.due.push(Reverse((first, slot)));
    }

    fn new_mac(rng: &mut Rng, randomized: bool) -> [u8; 6] {
        let r = rng.next().to_le_bytes();
        if randomized {
            // Locally administered, unicast.
            [(r[0] & 0xfc) | 0x02, r[1], r[2], r[3], r[4], r[5]]
        } else {
            let oui = OUIS[(r[0] as usize) % OUIS.len()];
            [oui[0], oui[1], oui[2], r[3], r[4], r[5]]
        }
    }

    /// One probe from the device in `slot` at `now`; reschedules or retires it.
    fn probe(&mut self, now: u64, slot: usize) -> Probe {
        let rng = &mut self.rng;
        let d = self.devices[slot]
            .as_mut()
            .expect("scheduled devices exist");
        let p = &PROFILES[d.profile];
        if d.burst_left == 0 {
            d.burst_left = rng.range(p.burst.0, p.burst.1);
            let rotate = match p.class {
                Class::Android => true,
                Class::Ios => now >= d.rotate_ms,
                Class::Universal | Class::Fixed => d.mac == [0; 6],
            };
            if rotate {
                d.mac = StoreDay::new_mac(rng, matches!(p.class, Class::Ios | Class::Android));
                d.rotate_ms = now + rng.range(10, 20) * 60_000;
            }
        }
        d.burst_left -= 1;
        d.seq = (d.seq + 1) % 4096;
        let channel = CHANNELS[(d.burst_left as usize) % CHANNELS.len()];
        let signal = (d.signal + 3.0 * rng.normal()).clamp(-100.0, -20.0) as i8;
        if p.class == Class::Fixed {
            self.fixed_probes += 1;
        }
        let frame = if self.dry {
            Vec::new()
        } else {
            let tags: Vec<u8> = p
                .tags
                .iter()
                .copied()
                .filter(|&t| model_has(p.class, d.model, t))
                .chain(model_extra(p.class, d.model))
                .collect();
            frame(d.mac, d.seq, channel, signal, &tags, d.model, p.class)
        };
        let next = if d.burst_left > 0 {
            now + rng.range(8, 30)
        } else {
            now + (rng.exp(p.scan_secs * 1000.0) as u64).max(3_000)
        };
        if next < d.leave_ms {
            self.due.push(Reverse((next, slot)));
        } else {
            self.devices[slot] = None;
            self.free.push(slot);
        }
        Probe {
            time_ms: now,
            frame,
        }
    }
}

impl Iterator for StoreDay {
    type Item = Probe;

    fn next(&mut self) -> Option<Probe> {
        if self.emitted >= self.total {
            return None;
        }
        loop {
            let due = self.due.peek().map(|Reverse((t, _))| *t);
            if self.next_arrival_ms < OPEN_MS + DAY_MS
                && due.is_none_or(|t| self.next_arrival_ms < t)
            {
                let at = self.next_arrival_ms;
                self.arrive(at, None);
                self.schedule_arrival();
                continue;
            }
            let Reverse((now, slot)) = self.due.pop()?;
            self.emitted += 1;
            return Some(self.probe(now, slot));
        }
    }
}

/// Older models lack the newer capabilities (VHT, HE, extended capabilities).
fn model_has(class: Class, model: u8, tag: u8) -> bool {
    match tag {
        191 => model >= 1 || class == Class::Fixed,
        255 => model >= 3,
        127 => model >= 1 || class == Class::Universal,
        _ => true,
    }
}

/// Elements some models add at the end: operating classes, RM capabilities, a second
/// vendor element.
fn model_extra(class: Class, model: u8) -> impl Iterator<Item = u8> {
    let extra: &[u8] = match (class, model) {
        (Class::Ios, 2 | 4) => &[70],
        (Class::Ios, 5) => &[70, 59],
        (Class::Android, 2) => &[59],
        (Class::Android, 4 | 5) => &[59, 70],
        (Class::Universal, 3..) => &[221],
        _ => &[],
    };
    extra.iter().copied()
}

/// Radiotap (flags, channel, antenna signal) and a wildcard probe request.
pub fn frame(
    sa: [u8; 6],
    seq: u16,
    freq: u16,
    dbm: i8,
    tags: &[u8],
    model: u8,
    class: Class,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(160);
    f.extend([0x00, 0x00, 15, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00]);
    f.extend(freq.to_le_bytes());
    f.extend([0xa0, 0x00, dbm as u8]);
    f.extend([0x40, 0x00, 0x00, 0x00]);
    f.extend([0xff; 6]);
    f.extend(sa);
    f.extend([0xff; 6]);
    f.extend((seq << 4).to_le_bytes());
    for &tag in tags {
        let body: Vec<u8> = match tag {
            0 => Vec::new(),
            1 => vec![0x02, 0x04, 0x0b, 0x16, 0x0c, 0x12, 0x18, 0x24],
            50 => vec![0x30, 0x48, 0x60, 0x6c],
            3 => vec![((freq - 2407) / 5) as u8],
            45 => {
                let mut ht = vec![0u8; 26];
                ht[0] = 0x2c | (model & 3);
                ht[1] = 0x01 + model;
                ht[2] = 0x17;
                ht[3] = 0xff;
                ht
            }
            127 => vec![0x04, 0x00, 0x0a, 0x02, 0x01, 0x40, 0x40 | model, 0x00, 0x01],
            107 => vec![0x0f],
            70 => vec![0x72, 0x00, 0x00, 0x00, 0x00],
            59 => vec![0x51, 0x51, 0x53, 0x54],
            191 => {
                let mut vht = vec![0u8; 12];
                vht[0] = 0x31 + model;
                vht[1] = 0x71;
                vht
            }
            221 => match class {
                Class::Ios => vec![0x00, 0x17, 0xf2, 0x0a, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00],
                _ => vec![0x00, 0x10, 0x18, 0x02, 0x00, 0x00, 0x1c, 0x00, 0x00],
            },
            255 => {
                let mut he = vec![0u8; 23];
                he[0] = 35;
                he[1] = 0x01 + model;
                he
            }
            _ => vec![0],
        };
        f.push(tag);
        f.push(body.len() as u8);
        f.extend(body);
    }
    f
}

/// A pcap file header for radiotap frames.
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    h[16..20].copy_from_slice(&65535u32.to_le_bytes());
    h[20..24].copy_from_slice(&127u32.to_le_bytes());
    h
}

pub fn write_record(out: &mut impl Write, time_ms: u64, frame: &[u8]) -> io::Result<()> {
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&((time_ms / 1000) as u32).to_le_bytes());
    header[4..8].copy_from_slice(&((time_ms % 1000 * 1000) as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    out.write_all(&header)?;
    out.write_all(frame)
}

/// Writes the day as a pcap to `out`.
pub fn write_day(seed: u64, probes: u64, out: impl Write) -> io::Result<u64> {
    write_days(seed, probes, 1, out)
}

/// `days` store days of `probes` each, one after the other (seeds `seed`, `seed + 1`, ...):
/// a longer capture at the same density.
pub fn write_days(seed: u64, probes: u64, days: u64, out: impl Write) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    out.write_all(&pcap_header())?;
    let mut n = 0;
    for day in 0..days {
        for p in StoreDay::new(seed + day, probes) {
            write_record(&mut out, p.time_ms + day * 86_400_000, &p.frame)?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// The frames of `captures` (classic little-endian pcaps, same link type), `times` over,
/// each repetition shifted to start a day after the previous one's last frame. Returns the
/// frame count.
pub fn repeat_captures(captures: &[&Path], times: u32, out: impl Write) -> Result<u64, String> {
    let mut records = Vec::new();
    let mut link = None;
    for path in captures {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dlt = read_header(&bytes).ok_or(format!("{}: not a pcap", path.display()))?;
        if link.replace(dlt).is_some_and(|l| l != dlt) {
            return Err("captures of different link types".into());
        }
        records.extend(records_of(&bytes).map(|(t, f)| (t, f.to_vec())));
    }
    let (first, last) = (
        records.iter().map(|r| r.0).min().unwrap_or(0),
        records.iter().map(|r| r.0).max().unwrap_or(0),
    );
    let mut out = BufWriter::new(out);
    let mut header = pcap_header();
    header[20..24].copy_from_slice(&link.unwrap_or(127).to_le_bytes());
    out.write_all(&header).map_err(|e| e.to_string())?;
    let span = last - first + 86_400_000;
    for round in 0..u64::from(times) {
        for (t, frame) in &records {
            write_record(&mut out, t + round * span, frame).map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(records.len() as u64 * u64::from(times))
}

fn read_header(bytes: &[u8]) -> Option<u32> {
    (bytes.get(..4)? == [0xd4, 0xc3, 0xb2, 0xa1]).then_some(())?;
    Some(u32::from_le_bytes(bytes.get(20..24)?.try_into().ok()?))
}

/// (time in ms, frame) of each record of a classic little-endian microsecond pcap.
fn records_of(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 24;
    std::iter::from_fn(move || {
        let h = bytes.get(at..at + 16)?;
        let word = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap()) as u64;
        let len = word(8) as usize;
        let frame = bytes.get(at + 16..at + 16 + len)?;
        at += 16 + len;
        Some((word(0) * 1000 + word(4) / 1000, frame))
    })
}

/// What the comparison table shows of one capture.
#[derive(Default)]
pub struct Stats {
    pub probes: u64,
    pub hours: f64,
    pub addresses: u64,
    /// Share of distinct transmitter addresses that are locally administered.
    pub randomized_addresses: f64,
    /// Share of probes sent from such addresses.
    pub randomized_probes: f64,
    /// Mean probes in a burst (same address, under 200 ms apart).
    pub burst: f64,
    /// Distinct element-id sequences.
    pub ie_sets: u64,
    pub median_dbm: i32,
    /// Median probes per universal address.
    pub per_universal: u64,
}

/// Statistics of the probe requests in a radiotap or plain 802.11 pcap, read from `input`.
pub fn stats(mut input: impl Read) -> Result<Stats, String> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let dlt = read_header(&bytes).ok_or("not a classic little-endian pcap")?;
    let mut s = Stats::default();
    let mut last: HashMap<[u8; 6], u64> = HashMap::new();
    let mut per_address: HashMap<[u8; 6], u64> = HashMap::new();
    let mut sets: HashSet<Vec<u8>> = HashSet::new();
    let mut signals = Vec::new();
    let (mut bursts, mut randomized) = (0u64, 0u64);
    let (mut first, mut end) = (u64::MAX, 0);
    for (t, frame) in records_of(&bytes) {
        let (mpdu, dbm) = match dlt {
            127 => match radiotap(frame) {
                Some(r) => r,
                None => continue,
            },
            105 => (frame, None),
            _ => return Err(format!("link type {dlt}")),
        };
        if mpdu.len() < 24 || mpdu[0] != 0x40 || mpdu[10] & 1 == 1 {
            continue;
        }
        let sa: [u8; 6] = mpdu[10..16].try_into().unwrap();
        s.probes += 1;
        first = first.min(t);
        end = end.max(t);
        if last
            .insert(sa, t)
            .is_none_or(|prev| t.saturating_sub(prev) > 200)
        {
            bursts += 1;
        }
        *per_address.entry(sa).or_default() += 1;
        randomized += u64::from(sa[0] & 2 != 0);
        let mut tags = Vec::new();
        let mut at = 24;
        while at + 2 <= mpdu.len() {
            tags.push(mpdu[at]);
            at += 2 + mpdu[at + 1] as usize;
        }
        sets.insert(tags);
        signals.extend(dbm);
    }
    s.hours = end.saturating_sub(first) as f64 / 3_600_000.0;
    s.addresses = per_address.len() as u64;
    let local = per_address.keys().filter(|a| a[0] & 2 != 0).count();
    s.randomized_addresses = local as f64 / s.addresses.max(1) as f64;
    s.randomized_probes = randomized as f64 / s.probes.max(1) as f64;
    s.burst = s.probes as f64 / bursts.max(1) as f64;
    s.ie_sets = sets.len() as u64;
    signals.sort_unstable();
    s.median_dbm = signals.get(signals.len() / 2).map_or(0, |&d| i32::from(d));
    let mut universal: Vec<u64> = per_address
        .iter()
        .filter(|(a, _)| a[0] & 2 == 0)
        .map(|(_, n)| *n)
        .collect();
    universal.sort_unstable();
    s.per_universal = universal.get(universal.len() / 2).copied().unwrap_or(0);
    Ok(s)
}

/// The MPDU after a radiotap header, and the antenna signal if the header has one.
fn radiotap(frame: &[u8]) -> Option<(&[u8], Option<i8>)> {
    let len = u16::from_le_bytes(frame.get(2..4)?.try_into().ok()?) as usize;
    let present = u32::from_le_bytes(frame.get(4..8)?.try_into().ok()?);
    let mut at = 8;
    let mut word = present;
    while word & (1 << 31) != 0 {
        word = u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?);
        at += 4;
    }
    // Fields 0-5 in order: TSFT (8, aligned 8), flags, rate, channel (4, aligned 2), FHSS (2),
    // antenna signal (1).
    let mut dbm = None;
    for (bit, size, align) in [
        (0, 8, 8),
        (1, 1, 1),
        (2, 1, 1),
        (3, 4, 2),
        (4, 2, 2),
        (5, 1, 1),
    ] {
        if present & (1 << bit) == 0 {
            continue;
        }
        at = at.div_ceil(align) * align;
        if bit == 5 {
            dbm = frame.get(at).map(|&b| b as i8);
        }
        at += size;
    }
    Some((frame.get(len..)?, dbm))
}

/// `cargo xtask loadgen --probes N [--seed S] --out FILE|-`
pub fn main(args: &[String]) -> Result<(), String> {
    let mut probes = 1_000_000;
    let mut seed = 1;
    let mut days = 1;
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--probes" => probes = value()?.parse().map_err(|e| format!("--probes: {e}"))?,
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--days" => days = value()?.parse().map_err(|e| format!("--days: {e}"))?,
            "--out" => out = Some(value()?.clone()),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    let out =
        out.ok_or("usage: cargo xtask loadgen --probes N [--days D] [--seed S] --out FILE|-")?;
    let n = if out == "-" {
        write_days(seed, probes, days, io::stdout().lock())
    } else {
        let file = std::fs::File::create(&out).map_err(|e| format!("{out}: {e}"))?;
        write_days(seed, probes, days, file)
    }
    .map_err(|e| format!("writing {out}: {e}"))?;
    eprintln!("{n} probe requests, seed {seed}");
    Ok(())
}
