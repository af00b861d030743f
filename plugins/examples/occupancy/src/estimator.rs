//! The occupancy estimator: fixed, epoch-aligned windows and the people model. A state machine
//! with no I/O, tested on the host.
//!
//! Per window, people = `universal_present + randomized_in_room / addresses_per_phone`:
//! - A *universal* (factory) address is one device for the whole key epoch, so it can be
//!   followed across windows: it counts as one person in a window where it was seen in the
//!   room, once it has been around (first to latest sighting this epoch) for `min_dwell`, and
//!   no longer once it has been around for `fixed_after` (fixed equipment: staff PCs, displays).
//! - A *randomized* address lasts minutes, so nothing is followed: the distinct randomized
//!   addresses seen in the room during the window are divided by how many one phone shows in a
//!   window (a rate, calibrated per site).

use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Named in every message, so a consumer knows how the number was made.
pub const METHOD: &str = "universal-dwell+randomized-rate";

/// Beyond this many empty windows in one jump (a clock step, a long silent night with a tiny
/// window) we skip ahead rather than publish a flood of zeros.
const MAX_EMPTY_WINDOWS: u64 = 1_000;

/// Universal devices remembered per key epoch. Past it, new ones are not followed, so they
/// never pass the dwell filter: a flood of made-up addresses cannot exhaust memory.
pub const MAX_TRACKED: usize = 20_000;

/// The estimator's parameters, in the units it works in.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Window length.
    pub window_ms: u64,
    /// A sighting at least this strong was made in the room; weaker ones come from next door,
    /// the corridor or the street. Sightings without a signal count as in the room.
    pub room_dbm: i32,
    /// A universal device counts once it has been around this long.
    pub min_dwell_ms: u64,
    /// A universal device around this long is fixed equipment and stops counting.
    pub fixed_after_ms: u64,
    /// Distinct in-room randomized addresses one phone shows per window.
    pub addresses_per_phone: f64,
}

/// One sighting, as much of it as the estimator uses.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub device: u64,
    pub epoch: u32,
    pub time_ms: u64,
    pub signal_dbm: Option<i8>,
    pub randomized: bool,
}

/// One window's estimate with the inputs it was made from; the `occupancy` stream's message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// People present, to one decimal.
    pub estimate: f64,
    pub method: &'static str,
    /// Universal devices seen in the room, around for `min_dwell` but not `fixed_after`.
    pub universal_present: u32,
    /// Universal devices seen in the room but not around long enough yet: not counted.
    pub universal_brief: u32,
    /// Universal devices seen in the room that are fixed equipment: not counted.
    pub universal_fixed: u32,
    /// Distinct randomized addresses seen in the room.
    pub randomized_in_room: u32,
    /// The divisor used for them (the configured rate times the window length).
    pub addresses_per_phone: f64,
    /// Distinct universal addresses seen at any signal (the naive count's share).
    pub universal_seen: u32,
    /// Distinct randomized addresses seen at any signal (the naive count's share).
    pub randomized_seen: u32,
    /// Sightings in the window.
    pub sightings: u32,
    /// The capture ended before the window did.
    pub partial: bool,
}

/// When a universal device was first and last seen in this key epoch.
#[derive(Debug, Clone, Copy)]
struct Around {
    first_ms: u64,
    last_ms: u64,
}

pub struct Estimator {
    p: Params,
    start_ms: Option<u64>,
    epoch: Option<u32>,
    around: HashMap<u64, Around>,
    universal_in_room: HashSet<u64>,
    universal_seen: HashSet<u64>,
    randomized_in_room: HashSet<u64>,
    randomized_seen: HashSet<u64>,
    sightings: u32,
}

impl Estimator {
    pub fn new(p: Params) -> Self {
        Estimator {
            p,
            start_ms: None,
            epoch: None,
            around: HashMap::new(),
            universal_in_room: HashSet::new(),
            universal_seen: HashSet::new(),
            randomized_in_room: HashSet::new(),
            randomized_seen: HashSet::new(),
            sightings: 0,
        }
    }

    /// Closes the windows that end at or before the sighting, then counts it in the open one
    /// (a late sighting counts in the open window).
    pub fn observe(&mut self, probe: Probe) -> Vec<Estimate> {
        let done = self.advance_to(probe.time_ms);
        if self.epoch != Some(probe.epoch) {
            // New keys: every pseudonym changed, so what we know about the old ones is useless.
            self.epoch = Some(probe.epoch);
            self.around.clear();
        }
        let in_room = probe
            .signal_dbm
            .is_none_or(|dbm| i32::from(dbm) >= self.p.room_dbm);
        if probe.randomized {
            self.randomized_seen.insert(probe.device);
            if in_room {
                self.randomized_in_room.insert(probe.device);
            }
        } else {
            self.universal_seen.insert(probe.device);
            if in_room {
                self.universal_in_room.insert(probe.device);
            }
            let t = probe.time_ms;
            if let Some(a) = self.around.get_mut(&probe.device) {
                a.first_ms = a.first_ms.min(t);
                a.last_ms = a.last_ms.max(t);
            } else if self.around.len() < MAX_TRACKED {
                self.around.insert(
                    probe.device,
                    Around {
                        first_ms: t,
                        last_ms: t,
                    },
                );
            }
        }
        self.sightings = self.sightings.saturating_add(1);
        done
    }

    /// Closes every window that ends at or before `now_ms` and returns them in order.
    pub fn advance_to(&mut self, now_ms: u64) -> Vec<Estimate> {
        let len = self.p.window_ms;
        let mut done = Vec::new();
        let aligned_now = now_ms - now_ms % len;
        let Some(mut start) = self.start_ms else {
            self.start_ms = Some(aligned_now);
            return done;
        };
        if aligned_now > start.saturating_add(MAX_EMPTY_WINDOWS * len) {
            done.push(self.close(start, false));
            self.start_ms = Some(aligned_now);
            return done;
        }
        while now_ms >= start + len {
            done.push(self.close(start, false));
            start += len;
        }
        self.start_ms = Some(start);
        done
    }

    /// The open window, if it saw anything, marked partial.
    pub fn finish(&mut self) -> Option<Estimate> {
        let start = self.start_ms?;
        if self.sightings == 0 {
            return None;
        }
        Some(self.close(start, true))
    }

    fn close(&mut self, start: u64, partial: bool) -> Estimate {
        let (mut present, mut brief, mut fixed) = (0u32, 0u32, 0u32);
        for device in &self.universal_in_room {
            match self.around.get(device).map(|a| a.last_ms - a.first_ms) {
                Some(d) if d >= self.p.fixed_after_ms => fixed += 1,
                Some(d) if d >= self.p.min_dwell_ms => present += 1,
                _ => brief += 1,
            }
        }
        let randomized = self.randomized_in_room.len() as u32;
        let people = f64::from(present) + f64::from(randomized) / self.p.addresses_per_phone;
        let estimate = Estimate {
            window_start_ms: start,
            window_end_ms: start + self.p.window_ms,
            estimate: round_to(people, 10.0),
            method: METHOD,
            universal_present: present,
            universal_brief: brief,
            universal_fixed: fixed,
            randomized_in_room: randomized,
            addresses_per_phone: round_to(self.p.addresses_per_phone, 1000.0),
            universal_seen: self.universal_seen.len() as u32,
            randomized_seen: self.randomized_seen.len() as u32,
            sightings: self.sightings,
            partial,
        };
        self.universal_in_room.clear();
        self.universal_seen.clear();
        self.randomized_in_room.clear();
        self.randomized_seen.clear();
        self.sightings = 0;
        estimate
    }
}

fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn params() -> Params {
        Params {
            window_ms: 5 * MIN,
            room_dbm: -75,
            min_dwell_ms: MIN,
            fixed_after_ms: 180 * MIN,
            addresses_per_phone: 4.0,
        }
    }

    fn universal(device: u64, time_ms: u64, dbm: i8) -> Probe {
        Probe {
            device,
            epoch: 1,
            time_ms,
            signal_dbm: Some(dbm),
            randomized: false,
        }
    }

    fn randomized(device: u64, time_ms: u64, dbm: i8) -> Probe {
        Probe {
            randomized: true,
            ..universal(device, time_ms, dbm)
        }
    }

    /// Feeds the probes, then closes every window up to `until_ms`.
    fn run(p: Params, probes: &[Probe], until_ms: u64) -> Vec<Estimate> {
        let mut e = Estimator::new(p);
        let mut out: Vec<Estimate> = probes.iter().flat_map(|&pr| e.observe(pr)).collect();
        out.extend(e.advance_to(until_ms));
        out
    }

    #[test]
    fn a_universal_device_counts_once_it_has_dwelt() {
        // Seen at 0:10 and 1:20 in window 0, then once in window 1.
        let probes = [
            universal(7, 10_000, -50),
            universal(7, 80_000, -50),
            universal(7, 400_000, -50),
        ];
        let out = run(params(), &probes, 10 * MIN);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].universal_present, out[0].estimate), (1, 1.0));
        // One sighting is enough once the device is known to stay.
        assert_eq!(out[1].universal_present, 1);
        assert_eq!(out[1].sightings, 1);
    }

    #[test]
    fn a_universal_device_seen_once_is_brief_and_not_counted() {
        let out = run(params(), &[universal(7, 10_000, -50)], 5 * MIN);
        assert_eq!((out[0].universal_present, out[0].universal_brief), (0, 1));
        assert_eq!(out[0].estimate, 0.0);
        assert_eq!(out[0].universal_seen, 1);
    }

    #[test]
    fn weak_sightings_are_outside_the_room_but_still_seen() {
        let probes = [
            universal(1, 0, -90),
            universal(1, 200_000, -90),
            randomized(2, 1_000, -80),
            randomized(3, 2_000, -75),
        ];
        let out = run(params(), &probes, 5 * MIN);
        let w = &out[0];
        assert_eq!(
            w.universal_present + w.universal_brief + w.universal_fixed,
            0
        );
        assert_eq!((w.randomized_in_room, w.randomized_seen), (1, 2));
        assert_eq!(w.universal_seen, 1);
        assert_eq!(w.estimate, 0.3); // 1 / 4, rounded
    }

    #[test]
    fn a_device_strong_once_in_the_window_is_in_the_room() {
        let probes = [
            universal(1, 0, -90),
            universal(1, 100_000, -60),
            universal(1, 200_000, -90),
        ];
        let out = run(params(), &probes, 5 * MIN);
        assert_eq!(out[0].universal_present, 1);
    }

    #[test]
    fn a_sighting_without_signal_counts_as_in_the_room() {
        let mut p = randomized(9, 0, 0);
        p.signal_dbm = None;
        let out = run(params(), &[p], 5 * MIN);
        assert_eq!(out[0].randomized_in_room, 1);
    }

    #[test]
    fn randomized_addresses_are_divided_by_the_rate() {
        let probes: Vec<Probe> = (0..10)
            .flat_map(|d| {
                [
                    randomized(d, d * 1000, -60),
                    randomized(d, d * 1000 + 1, -60),
                ]
            })
            .collect();
        let out = run(params(), &probes, 5 * MIN);
        assert_eq!(out[0].randomized_in_room, 10);
        assert_eq!(out[0].estimate, 2.5);
        assert_eq!(out[0].sightings, 20);
        assert_eq!(out[0].method, METHOD);
        assert_eq!(out[0].addresses_per_phone, 4.0);
    }

    #[test]
    fn universal_and_randomized_add_up() {
        let probes = [
            universal(1, 0, -50),
            universal(1, 70_000, -50),
            randomized(2, 1_000, -60),
            randomized(3, 2_000, -60),
        ];
        let out = run(params(), &probes, 5 * MIN);
        assert_eq!(out[0].estimate, 1.5);
    }

    #[test]
    fn a_device_around_for_hours_is_fixed_equipment() {
        // A PC probing every minute for four hours, and nothing else.
        let probes: Vec<Probe> = (0..240).map(|m| universal(5, m * MIN, -40)).collect();
        let out = run(params(), &probes, 240 * MIN);
        assert_eq!(out.len(), 48);
        let counted: Vec<u32> = out.iter().map(|w| w.universal_present).collect();
        // A person from the first window on (seen at 0 to 4 min: it dwelt)...
        assert!(counted[..36].iter().all(|&c| c == 1), "{counted:?}");
        // From three hours on it is equipment, not a person.
        assert!(out[36..].iter().all(|w| w.universal_present == 0));
        assert!(out[36..].iter().all(|w| w.universal_fixed == 1));
        assert!(out[36..].iter().all(|w| w.estimate == 0.0));
    }

    #[test]
    fn fixed_equipment_stays_fixed_after_a_silence() {
        let mut probes: Vec<Probe> = (0..=180).map(|m| universal(5, m * MIN, -40)).collect();
        probes.push(universal(5, 300 * MIN, -40));
        let out = run(params(), &probes, 305 * MIN);
        assert_eq!(out.last().unwrap().universal_fixed, 1);
    }

    #[test]
    fn a_new_key_epoch_forgets_every_device() {
        let mut probes: Vec<Probe> = (0..=180).map(|m| universal(5, m * MIN, -40)).collect();
        // The same pseudonym value in the next epoch is another device: it starts over.
        let next = |t| Probe {
            epoch: 2,
            ..universal(5, t, -40)
        };
        probes.push(next(185 * MIN));
        probes.push(next(186 * MIN + 30_000));
        let out = run(params(), &probes, 190 * MIN);
        let last = out.last().unwrap();
        assert_eq!((last.universal_present, last.universal_fixed), (1, 0));
    }

    #[test]
    fn silent_windows_are_reported_as_zeros() {
        let out = run(params(), &[randomized(1, 0, -50)], 17 * MIN);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].estimate, 0.0);
        assert_eq!(out[2].sightings, 0);
        assert_eq!(
            (out[2].window_start_ms, out[2].window_end_ms),
            (10 * MIN, 15 * MIN)
        );
    }

    #[test]
    fn windows_are_aligned_to_the_unix_epoch() {
        let out = run(params(), &[randomized(1, 7 * MIN + 5, -50)], 11 * MIN);
        assert_eq!(out[0].window_start_ms, 5 * MIN);
    }

    #[test]
    fn a_huge_time_jump_does_not_flood() {
        let mut e = Estimator::new(params());
        e.observe(randomized(1, 0, -50));
        assert_eq!(e.advance_to(10_000_000_000).len(), 1);
    }

    #[test]
    fn a_late_sighting_counts_in_the_open_window() {
        let mut e = Estimator::new(params());
        e.observe(randomized(1, 6 * MIN, -50));
        assert!(e.observe(randomized(2, 4 * MIN, -50)).is_empty());
        let out = e.advance_to(10 * MIN);
        assert_eq!(out[0].randomized_in_room, 2);
    }

    #[test]
    fn the_open_window_is_published_partial_only_if_it_saw_something() {
        let mut e = Estimator::new(params());
        e.advance_to(0);
        assert!(e.finish().is_none());
        e.observe(randomized(1, 1_000, -50));
        let w = e.finish().unwrap();
        assert!(w.partial);
        assert_eq!(w.randomized_seen, 1);
    }

    #[test]
    fn past_the_tracking_cap_new_universal_devices_never_count() {
        let mut e = Estimator::new(params());
        for d in 0..MAX_TRACKED as u64 + 1 {
            e.observe(universal(d, 0, -50));
        }
        e.observe(universal(MAX_TRACKED as u64, 120_000, -50));
        e.observe(universal(0, 120_000, -50));
        let w = &e.advance_to(5 * MIN)[0];
        assert_eq!(w.universal_present, 1);
        assert_eq!(w.universal_brief, MAX_TRACKED as u32);
    }
}
