//! Counting phones, not addresses: links one device's addresses within a key epoch
//! ([`link`]), counts the devices present per window ([`Counter`]) and turns the count into
//! people with an interval ([`model`]). Used by the occupancy and visitor-counter plugins
//! inside the router's WebAssembly sandbox, and natively by `probegate calibrate` and
//! `cargo xtask evaluate`, so a calibration fits exactly what the plugins run.
//!
//! Everything lives in memory and is forgotten when the key epoch changes. See README.md for
//! the method, where it comes from and what it is worth.

pub mod hash;
pub mod link;
pub mod model;

pub use link::{LinkParams, Linker, Placement};
pub use model::Model;

use hash::FastMap;

/// One sighting, as much of it as linking uses: the fields of the plugin interface's
/// `sighting` under the capabilities `signal`, `sequence` and `ie-signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub device: u64,
    pub epoch: u32,
    pub time_ms: u64,
    pub randomized: bool,
    pub signal_dbm: Option<i8>,
    pub seq: Option<u16>,
    pub ie_signature: Option<u64>,
}

/// Beyond this many empty windows in one jump (a clock step, a silent night with a tiny
/// window) we skip ahead rather than report a flood of zeros.
const MAX_EMPTY_WINDOWS: u64 = 1_000;

/// What is counted, and over which windows.
#[derive(Debug, Clone, PartialEq)]
pub struct CountParams {
    pub window_ms: u64,
    pub link: LinkParams,
    /// A device (cluster) counts once it has been around this long: one burst of a passer-by
    /// does not.
    pub min_dwell_ms: u64,
    /// ...and no longer once it has been around this long: fixed equipment.
    pub fixed_after_ms: u64,
}

impl Default for CountParams {
    fn default() -> Self {
        CountParams {
            window_ms: 900_000,
            link: LinkParams::default(),
            // Calibrated on the Fryza lab (README.md): shorter clusters are mostly fragments
            // of a phone linking lost, or passers-by.
            min_dwell_ms: 300_000,
            fixed_after_ms: 3 * 3_600_000,
        }
    }
}

/// One window's counts: what the estimate is made from, and the naive counts beside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// Universal devices whose stay in the room overlaps the window (heard in the room in it,
    /// or within the linking horizon before it), around for `min_dwell` but not `fixed_after`.
    pub universal_present: u32,
    /// Universal devices heard in the room, not around long enough yet.
    pub universal_brief: u32,
    /// Universal devices heard in the room that are fixed equipment.
    pub universal_fixed: u32,
    /// Clusters of randomized addresses whose stay in the room overlaps the window, around for
    /// `min_dwell` but not `fixed_after`: phones, as far as linking can tell.
    pub linked_present: u32,
    /// Clusters of randomized addresses heard in the room, not around long enough yet.
    pub linked_brief: u32,
    /// Distinct randomized addresses heard in the room.
    pub randomized_in_room: u32,
    /// New randomized addresses linked to an earlier cluster in this window...
    pub links: u32,
    /// ...of which with more than one candidate and no sequence number to decide.
    pub ambiguous_links: u32,
    /// Distinct universal / randomized addresses at any signal: the naive counts.
    pub universal_seen: u32,
    pub randomized_seen: u32,
    pub sightings: u32,
    /// Visits that ended in this window: universal devices and linked phones apart.
    pub visits_universal: VisitTally,
    pub visits_linked: VisitTally,
    /// The window is incomplete: the counter started after it began (the plugin's first window
    /// after a start or a key rotation), or the capture ended before it did.
    pub partial: bool,
}

/// Upper edges (minutes) of the dwell bins of [`VisitTally::dwell`]; the last bin is open.
pub const DWELL_EDGES_MIN: [u64; 4] = [15, 30, 60, 120];

/// Devices (clusters) heard in the room whose stay ended: once silent for the linking horizon
/// (`LinkParams::max_gap_ms`), at a key rotation, or when the capture ends (cut short).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VisitTally {
    /// Stays of at least `min_dwell`...
    pub visits: u32,
    /// ...and shorter ones.
    pub passers_by: u32,
    /// Visits by dwell: below 15 min, 15–30, 30–60, 60–120, 120 and more.
    pub dwell: [u32; 5],
}

impl VisitTally {
    pub fn add(&mut self, other: &VisitTally) {
        self.visits += other.visits;
        self.passers_by += other.passers_by;
        for (a, b) in self.dwell.iter_mut().zip(other.dwell) {
            *a += b;
        }
    }
}

impl WindowCounts {
    /// The devices the people estimate rests on.
    pub fn devices(&self) -> u32 {
        self.universal_present + self.linked_present
    }
}

#[derive(Default)]
struct Tally {
    universal_present: u32,
    universal_brief: u32,
    universal_fixed: u32,
    linked_present: u32,
    linked_brief: u32,
}

/// Links sightings and closes fixed windows aligned to multiples of `window_ms` since the
/// Unix epoch (so two gateways report the same windows). Silent windows after the first
/// sighting are reported with zeros.
///
/// A device counts in every window its *stay* overlaps: from its first sighting in the room
/// to its last plus the linking horizon (`LinkParams::max_gap_ms`), the same stay a visit
/// measures. An idle phone may not probe for many minutes (a lecture, a queue); while it could
/// still be linked it is taken to be there, rather than counted only in the windows it
/// happened to probe in.
pub struct Counter {
    p: CountParams,
    linker: Linker,
    start_ms: Option<u64>,
    /// The open window began before the counter's first sighting or tick: it is incomplete.
    started_late: bool,
    /// What the open window counted of an epoch that ended during it.
    settled: Tally,
    /// Visits that ended in the open window: universal, linked.
    ended: [VisitTally; 2],
    /// The open window's addresses, each with what it was heard as ([`Heard`]): one lookup a
    /// sighting for the three distinct counts.
    heard: FastMap<u64, u8>,
    randomized_in_room: u32,
    universal_seen: u32,
    randomized_seen: u32,
    links: u32,
    ambiguous_links: u32,
    sightings: u32,
}

impl Counter {
    pub fn new(p: CountParams) -> Self {
        Counter {
            linker: Linker::new(p.link.clone()),
            p,
            start_ms: None,
            started_late: false,
            settled: Tally::default(),
            ended: Default::default(),
            heard: FastMap::default(),
            randomized_in_room: 0,
            universal_seen: 0,
            randomized_seen: 0,
            links: 0,
            ambiguous_links: 0,
            sightings: 0,
        }
    }

    pub fn params(&self) -> &CountParams {
        &self.p
    }

    /// Closes the windows that end at or before the sighting, then counts it in the open one.
    pub fn observe(&mut self, o: &Observation) -> Vec<WindowCounts> {
        let done = self.advance_to(o.time_ms);
        if self.linker.epoch().is_some_and(|e| e != o.epoch) {
            // The old epoch's clusters are about to be forgotten: count them now.
            let tally = self.tally(self.start_ms.unwrap_or(o.time_ms));
            add(&mut self.settled, &tally);
            self.linker.clear_room_marks();
            self.end_visits(None);
        }
        let placed = self.linker.observe(o);
        let mut heard_as = if o.randomized {
            Heard::RANDOMIZED
        } else {
            Heard::UNIVERSAL
        };
        if placed.in_room {
            if let Some(id) = placed.cluster {
                // Its stay may reach the windows up to the linking horizon after this.
                self.linker.mark_in_room(id, o.time_ms);
            }
            if o.randomized {
                heard_as |= Heard::RANDOMIZED_IN_ROOM;
            }
        }
        let flags = self.heard.entry(o.device).or_insert(0);
        let new = heard_as & !*flags;
        *flags |= heard_as;
        self.randomized_seen += u32::from(new & Heard::RANDOMIZED != 0);
        self.universal_seen += u32::from(new & Heard::UNIVERSAL != 0);
        self.randomized_in_room += u32::from(new & Heard::RANDOMIZED_IN_ROOM != 0);
        if let Placement::Linked { ambiguous } = placed.placement {
            self.links += 1;
            self.ambiguous_links += u32::from(ambiguous);
        }
        self.sightings = self.sightings.saturating_add(1);
        done
    }

    /// Closes every window that ends at or before `now_ms` and returns them in order.
    pub fn advance_to(&mut self, now_ms: u64) -> Vec<WindowCounts> {
        let len = self.p.window_ms;
        let mut done = Vec::new();
        let aligned_now = now_ms - now_ms % len;
        let Some(mut start) = self.start_ms else {
            self.start_ms = Some(aligned_now);
            self.started_late = now_ms > aligned_now;
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
    pub fn finish(&mut self) -> Option<WindowCounts> {
        let start = self.start_ms?;
        if self.sightings == 0 {
            return None;
        }
        Some(self.close(start, true))
    }

    /// The devices whose stay overlaps the window that starts at `start_ms`.
    fn tally(&self, start_ms: u64) -> Tally {
        let mut t = Tally::default();
        let horizon = self.p.link.max_gap_ms;
        for (c, last) in self.linker.room_marks() {
            if last.saturating_add(horizon) < start_ms {
                continue;
            }
            let dwell = c.dwell_ms();
            let (present, brief) = if c.universal {
                (&mut t.universal_present, &mut t.universal_brief)
            } else {
                (&mut t.linked_present, &mut t.linked_brief)
            };
            if dwell >= self.p.fixed_after_ms {
                // Randomized clusters that stay for hours are as fixed as universal ones.
                t.universal_fixed += 1;
            } else if dwell >= self.p.min_dwell_ms {
                *present += 1;
            } else {
                *brief += 1;
            }
        }
        t
    }

    /// Counts the visits of clusters silent since `silent_since_ms` (every open one: `None`).
    fn end_visits(&mut self, silent_since_ms: Option<u64>) {
        for (universal, dwell) in self.linker.take_ended(silent_since_ms) {
            let t = &mut self.ended[usize::from(!universal)];
            if dwell >= self.p.min_dwell_ms {
                t.visits += 1;
                let minutes = dwell / 60_000;
                let bin = DWELL_EDGES_MIN
                    .iter()
                    .take_while(|&&e| minutes >= e)
                    .count();
                t.dwell[bin] += 1;
            } else {
                t.passers_by += 1;
            }
        }
    }

    fn close(&mut self, start: u64, partial: bool) -> WindowCounts {
        let end = start + self.p.window_ms;
        self.end_visits(if partial {
            None
        } else {
            Some(end.saturating_sub(self.p.link.max_gap_ms))
        });
        let [visits_universal, visits_linked] = std::mem::take(&mut self.ended);
        let mut t = self.tally(start);
        add(&mut t, &std::mem::take(&mut self.settled));
        let counts = WindowCounts {
            window_start_ms: start,
            window_end_ms: start + self.p.window_ms,
            universal_present: t.universal_present,
            universal_brief: t.universal_brief,
            universal_fixed: t.universal_fixed,
            linked_present: t.linked_present,
            linked_brief: t.linked_brief,
            randomized_in_room: self.randomized_in_room,
            links: self.links,
            ambiguous_links: self.ambiguous_links,
            universal_seen: self.universal_seen,
            randomized_seen: self.randomized_seen,
            sightings: self.sightings,
            visits_universal,
            visits_linked,
            partial: partial || self.started_late,
        };
        self.started_late = false;
        // Stays that ended before the next window cannot reach it (nor any later one).
        let horizon = self.p.link.max_gap_ms;
        self.linker
            .retain_room_marks(|last| last.saturating_add(horizon) >= end);
        self.heard.clear();
        self.randomized_in_room = 0;
        self.universal_seen = 0;
        self.randomized_seen = 0;
        self.links = 0;
        self.ambiguous_links = 0;
        self.sightings = 0;
        counts
    }
}

/// What an address was heard as in the open window (bits of [`Counter::heard`]'s values).
struct Heard;

impl Heard {
    const RANDOMIZED: u8 = 1;
    const UNIVERSAL: u8 = 2;
    const RANDOMIZED_IN_ROOM: u8 = 4;
}

fn add(into: &mut Tally, t: &Tally) {
    into.universal_present += t.universal_present;
    into.universal_brief += t.universal_brief;
    into.universal_fixed += t.universal_fixed;
    into.linked_present += t.linked_present;
    into.linked_brief += t.linked_brief;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn params() -> CountParams {
        CountParams {
            window_ms: 5 * MIN,
            min_dwell_ms: MIN,
            ..CountParams::default()
        }
    }

    fn obs(device: u64, time_ms: u64, dbm: i8, randomized: bool) -> Observation {
        Observation {
            device,
            epoch: 1,
            time_ms,
            randomized,
            signal_dbm: Some(dbm),
            seq: None,
            ie_signature: Some(device % 2),
        }
    }

    fn run(probes: &[Observation], until_ms: u64) -> Vec<WindowCounts> {
        let mut c = Counter::new(params());
        let mut out: Vec<WindowCounts> = probes.iter().flat_map(|o| c.observe(o)).collect();
        out.extend(c.advance_to(until_ms));
        out
    }

    #[test]
    fn a_phone_changing_addresses_counts_once_once_it_has_dwelt() {
        // One phone: a new address every 40 s for four minutes, same model, same signal.
        let probes: Vec<Observation> = (0..6).map(|i| obs(2 * i, i * 40_000, -60, true)).collect();
        let w = &run(&probes, 5 * MIN)[0];
        assert_eq!(w.randomized_in_room, 6);
        assert_eq!((w.linked_present, w.linked_brief), (1, 0));
        assert_eq!(w.links, 5);
        assert_eq!(w.devices(), 1);
    }

    #[test]
    fn a_passer_by_heard_once_or_weakly_does_not_count() {
        let w = &run(
            &[
                obs(1, 0, -60, true),
                obs(3, 100_000, -85, true),
                obs(3, 200_000, -85, true),
                obs(5, 0, -60, false),
                obs(5, 30_000, -60, false),
            ],
            5 * MIN,
        )[0];
        assert_eq!(w.devices(), 0);
        assert_eq!((w.linked_brief, w.universal_brief), (1, 1));
        assert_eq!((w.randomized_seen, w.universal_seen), (2, 1));
    }

    #[test]
    fn fixed_equipment_stops_counting_after_hours() {
        let probes: Vec<Observation> = (0..=50).map(|i| obs(1, i * 5 * MIN, -50, false)).collect();
        let out = run(&probes, 255 * MIN);
        assert_eq!(out[1].universal_present, 1);
        assert_eq!(out[40].universal_fixed, 1);
        assert_eq!(out[40].devices(), 0);
    }

    #[test]
    fn silent_windows_are_reported_and_the_last_one_is_partial() {
        let mut c = Counter::new(params());
        c.observe(&obs(1, 0, -60, true));
        let out = c.observe(&obs(1, 16 * MIN, -60, true));
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].sightings, 0);
        assert!(!out[0].partial && !out[2].partial);
        let last = c.finish().unwrap();
        assert!(last.partial);
        assert_eq!(last.window_start_ms, 15 * MIN);
    }

    #[test]
    fn a_linked_phone_makes_one_visit_with_its_whole_dwell() {
        // One phone for 20 minutes, a new address every 40 s; then silence.
        let probes: Vec<Observation> = (0..30).map(|i| obs(2 * i, i * 40_000, -60, true)).collect();
        let out = run(&probes, 60 * MIN);
        let linked: VisitTally = out.iter().fold(VisitTally::default(), |mut a, w| {
            a.add(&w.visits_linked);
            a
        });
        assert_eq!((linked.visits, linked.passers_by), (1, 0));
        assert_eq!(linked.dwell, [0, 1, 0, 0, 0], "19.3 minutes: the 15-30 bin");
        // Ended once silent for the linking horizon (10 min after 19:20): in 25-30.
        assert_eq!(out[5].visits_linked.visits, 1);
    }

    #[test]
    fn a_universal_device_that_comes_back_makes_a_second_visit() {
        let mut probes: Vec<Observation> = (0..10).map(|i| obs(1, i * MIN, -60, false)).collect();
        probes.extend((0..10).map(|i| obs(1, 60 * MIN + i * MIN, -60, false)));
        let out = run(&probes, 120 * MIN);
        let total = out.iter().map(|w| w.visits_universal.visits).sum::<u32>();
        assert_eq!(total, 2);
    }

    #[test]
    fn a_device_counts_while_its_stay_lasts_though_it_went_quiet() {
        // Heard for four minutes, then silent: its stay lasts until 10 minutes (the linking
        // horizon) after its last sighting, 14:00, so it counts in the windows to 10:00-15:00.
        let probes: Vec<Observation> = (0..5).map(|i| obs(1, i * MIN, -60, false)).collect();
        let out = run(&probes, 30 * MIN);
        let present: Vec<u32> = out.iter().map(|w| w.universal_present).collect();
        assert_eq!(present, [1, 1, 1, 0, 0, 0]);
        assert_eq!(out[1].sightings, 0);
    }

    #[test]
    fn strong_one_off_universal_addresses_do_not_count() {
        // Two people with a phone each, and every 10 s a new universal address heard once at
        // a strong signal (as on 2022-10-19: up to 119 such addresses in a window).
        let mut probes: Vec<Observation> = Vec::new();
        for i in 0..90 {
            let t = i * 10_000;
            probes.push(obs(1_000 + i, t, -50, false));
            if i % 3 == 0 {
                probes.push(obs(1, t, -60, true));
                probes.push(obs(2, t, -62, false));
            }
        }
        probes.sort_by_key(|o| o.time_ms);
        let out = run(&probes, 15 * MIN);
        let w = &out[1];
        assert_eq!(w.universal_seen, 31);
        assert_eq!(w.devices(), 2);
        // Brief: this window's 30 and, their stays not over, the previous window's.
        assert_eq!(w.universal_brief, 60);
    }

    #[test]
    fn a_window_that_began_before_the_first_sighting_is_partial() {
        let mut c = Counter::new(params());
        c.observe(&obs(1, MIN, -60, true));
        let out = c.advance_to(10 * MIN);
        assert!(out[0].partial);
        assert!(!out[1].partial);
    }

    #[test]
    fn a_rotation_mid_window_keeps_what_the_old_epoch_counted() {
        let mut c = Counter::new(params());
        c.observe(&obs(1, 0, -60, false));
        c.observe(&obs(1, 2 * MIN, -60, false));
        let mut next = obs(1, 3 * MIN, -60, false);
        next.epoch = 2;
        c.observe(&next);
        let w = &c.advance_to(5 * MIN)[0];
        // Present in the old epoch; brief again (a stranger) in the new one.
        assert_eq!((w.universal_present, w.universal_brief), (1, 1));
    }
}
