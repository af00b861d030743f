//! Visits: passers-by against visitors, dwell times, new against repeat. A state machine with
//! no I/O and no WIT types, so its tests run on the host.
//!
//! Per device (pseudonym) two things are tracked:
//! - its *presence*: sightings at any signal, none more than `max_gap` after the previous one;
//! - its *stay*, inside the presence: opened by a sighting at or above `enter_dbm`, kept open by
//!   sightings at or above `stay_dbm` no more than `max_gap` apart, and ended by its last such
//!   sighting. A stay that lasted (first to last sighting) at least `min_visit` is a *visit*.
//!
//! A visit is attributed to the interval holding its last sighting; a presence that ended
//! without a visit is one passer-by, attributed to the interval holding its last sighting. An
//! interval is final, and published, once pipeline time has passed its end by `max_gap`: from
//! then on nothing can extend a stay or presence that ended inside it.

use probegate_linking::hash::{FastMap, FastSet};
use serde::Serialize;
use std::collections::BTreeMap;

/// What makes a visit; the plugin's `visits` config, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub interval_ms: u64,
    pub enter_dbm: i32,
    pub stay_dbm: i32,
    pub max_gap_ms: u64,
    pub min_visit_ms: u64,
    /// Dwell histogram bin edges in minutes, strictly increasing.
    pub dwell_bins_min: Vec<u32>,
}

/// One kind of address's numbers for one interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Visits that ended in the interval (`new + repeat`).
    pub visitors: u32,
    /// Presences that ended in the interval without a visit.
    pub passers_by: u32,
    /// Visits by a device with no earlier visit in this key epoch.
    pub new: u32,
    /// Visits by a device that had completed one before in this key epoch.
    pub repeat: u32,
    /// Visits by dwell time: `dwell[0]` below the first edge, `dwell[i]` from edge `i-1` up
    /// to edge `i`, the last from the last edge up.
    pub dwell: Vec<u32>,
}

impl Tally {
    fn empty(bins: usize) -> Tally {
        Tally {
            visitors: 0,
            passers_by: 0,
            new: 0,
            repeat: 0,
            dwell: vec![0; bins],
        }
    }
}

/// One message of the `visits` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visits {
    pub interval_start_ms: u64,
    pub interval_end_ms: u64,
    pub universal: Tally,
    pub randomized: Tally,
    /// The configured edges, so a message can be read without the site's config.
    pub dwell_bins_min: Vec<u32>,
    /// The pipeline stopped before the interval was final: visits still open were cut there.
    pub partial: bool,
}

/// At most this many empty intervals go out in one call. Only a jump in pipeline time (a
/// silent stretch of a replay, a clock step) finalises more than one or two at once, and a
/// flood of zeros would run into the host's outputs-per-call limit.
const MAX_QUIET_PER_CALL: u32 = 16;

struct Stay {
    first_ms: u64,
    last_ms: u64,
}

struct Presence {
    randomized: bool,
    last_ms: u64,
    stay: Option<Stay>,
    /// A visit ended inside this presence, so it is no passer-by.
    visited: bool,
}

/// The interval tallies not yet published, by interval start: universal, randomized.
type Pending = BTreeMap<u64, [Tally; 2]>;

pub struct Tracker {
    rules: Rules,
    present: FastMap<u64, Presence>,
    /// Devices with a completed visit: the plugin restarts empty at every key rotation, so
    /// this holds exactly the current epoch's visitors.
    visited: FastSet<u64>,
    pending: Pending,
    /// Start of the oldest interval not yet published; set by the first sighting.
    next_ms: Option<u64>,
    now_ms: u64,
}

impl Tracker {
    pub fn new(rules: Rules) -> Tracker {
        Tracker {
            rules,
            present: FastMap::default(),
            visited: FastSet::default(),
            pending: BTreeMap::new(),
            next_ms: None,
            now_ms: 0,
        }
    }

    /// Pipeline time reached `now_ms`: returns the intervals that became final, in order.
    pub fn advance_to(&mut self, now_ms: u64) -> Vec<Visits> {
        // Ticks fall on whole seconds and may trail a sighting already delivered.
        self.now_ms = self.now_ms.max(now_ms);
        let Some(mut next) = self.next_ms else {
            return Vec::new();
        };
        let len = self.rules.interval_ms;
        let final_until = self.now_ms.saturating_sub(self.rules.max_gap_ms);
        if next + len > final_until {
            return Vec::new();
        }
        self.sweep();
        let mut out = Vec::new();
        let mut quiet = 0;
        while next + len <= final_until {
            match self.pending.remove(&next) {
                Some(cell) => {
                    out.push(self.message(next, cell, false));
                    quiet = 0;
                }
                None if quiet < MAX_QUIET_PER_CALL => {
                    let bins = self.bins();
                    out.push(self.message(next, [Tally::empty(bins), Tally::empty(bins)], false));
                    quiet += 1;
                }
                None => {
                    let first_open = final_until - final_until % len;
                    next = self
                        .pending
                        .keys()
                        .next()
                        .copied()
                        .filter(|&start| start < first_open)
                        .unwrap_or(first_open);
                    continue;
                }
            }
            next += len;
        }
        self.next_ms = Some(next);
        out
    }

    /// One sighting; call [`Tracker::advance_to`] with its time first.
    pub fn record(&mut self, device: u64, time_ms: u64, randomized: bool, signal: Option<i8>) {
        let len = self.rules.interval_ms;
        self.next_ms.get_or_insert(time_ms - time_ms % len);
        let signal = signal.map(i32::from);
        // A sighting without a signal cannot tell the store from the street: it keeps the
        // device present but neither opens nor extends a stay.
        let enters = signal.is_some_and(|s| s >= self.rules.enter_dbm);
        let stays = signal.is_some_and(|s| s >= self.rules.stay_dbm);
        // Only this device can have gone stale by `time_ms` in a way that matters now; the
        // others are swept before an interval is published.
        if let Some(p) = self.present.get_mut(&device) {
            let ended = close_if_stale(
                p,
                device,
                time_ms,
                &self.rules,
                &mut self.visited,
                &mut self.pending,
                self.next_ms,
            );
            if ended {
                self.present.remove(&device);
            }
        }
        let p = self.present.entry(device).or_insert(Presence {
            randomized,
            last_ms: time_ms,
            stay: None,
            visited: false,
        });
        p.last_ms = p.last_ms.max(time_ms);
        match &mut p.stay {
            Some(stay) if stays => stay.last_ms = stay.last_ms.max(time_ms),
            Some(_) => {}
            None if enters => {
                p.stay = Some(Stay {
                    first_ms: time_ms,
                    last_ms: time_ms,
                })
            }
            None => {}
        }
    }

    /// The pipeline stops at `now_ms`: publishes what became final, then ends every open stay
    /// and presence at its last sighting and publishes every interval that holds anything,
    /// marked partial.
    pub fn stop(&mut self, now_ms: u64) -> Vec<Visits> {
        let mut out = self.advance_to(now_ms);
        for (device, mut p) in std::mem::take(&mut self.present) {
            end_stay(
                &mut p,
                device,
                &self.rules,
                &mut self.visited,
                &mut self.pending,
                self.next_ms,
            );
            end_presence(&p, &self.rules, &mut self.pending, self.next_ms);
        }
        for (start, cell) in std::mem::take(&mut self.pending) {
            out.push(self.message(start, cell, true));
        }
        out
    }

    /// Ends every stay and presence that has been silent for longer than `max_gap`.
    fn sweep(&mut self) {
        let now = self.now_ms;
        let Tracker {
            rules,
            present,
            visited,
            pending,
            next_ms,
            ..
        } = self;
        present.retain(|&device, p| {
            !close_if_stale(p, device, now, rules, visited, pending, *next_ms)
        });
    }

    fn bins(&self) -> usize {
        self.rules.dwell_bins_min.len() + 1
    }

    fn message(&self, start: u64, [universal, randomized]: [Tally; 2], partial: bool) -> Visits {
        Visits {
            interval_start_ms: start,
            interval_end_ms: start + self.rules.interval_ms,
            universal,
            randomized,
            dwell_bins_min: self.rules.dwell_bins_min.clone(),
            partial,
        }
    }
}

/// Ends `p`'s stay if it has been silent at stay level for longer than `max_gap` at `now`,
/// and the presence if it has been silent altogether; true when the presence ended.
fn close_if_stale(
    p: &mut Presence,
    device: u64,
    now: u64,
    rules: &Rules,
    visited: &mut FastSet<u64>,
    pending: &mut Pending,
    next_ms: Option<u64>,
) -> bool {
    if p.stay
        .as_ref()
        .is_some_and(|s| now.saturating_sub(s.last_ms) > rules.max_gap_ms)
    {
        end_stay(p, device, rules, visited, pending, next_ms);
    }
    if now.saturating_sub(p.last_ms) > rules.max_gap_ms {
        end_presence(p, rules, pending, next_ms);
        return true;
    }
    false
}

fn end_stay(
    p: &mut Presence,
    device: u64,
    rules: &Rules,
    visited: &mut FastSet<u64>,
    pending: &mut Pending,
    next_ms: Option<u64>,
) {
    let Some(stay) = p.stay.take() else { return };
    let dwell_ms = stay.last_ms - stay.first_ms;
    if dwell_ms < rules.min_visit_ms {
        return;
    }
    p.visited = true;
    let tally = tally_at(pending, rules, next_ms, stay.last_ms, p.randomized);
    tally.visitors += 1;
    if visited.insert(device) {
        tally.new += 1;
    } else {
        tally.repeat += 1;
    }
    let bin = rules
        .dwell_bins_min
        .iter()
        .take_while(|&&edge| dwell_ms >= u64::from(edge) * 60_000)
        .count();
    tally.dwell[bin] += 1;
}

fn end_presence(p: &Presence, rules: &Rules, pending: &mut Pending, next_ms: Option<u64>) {
    if !p.visited {
        tally_at(pending, rules, next_ms, p.last_ms, p.randomized).passers_by += 1;
    }
}

/// The tally of the interval holding `time_ms`; one already published cannot change, so a
/// late arrival (a sighting stamped before a tick already delivered) counts in the oldest
/// open one.
fn tally_at<'a>(
    pending: &'a mut Pending,
    rules: &Rules,
    next_ms: Option<u64>,
    time_ms: u64,
    randomized: bool,
) -> &'a mut Tally {
    let start = (time_ms - time_ms % rules.interval_ms).max(next_ms.unwrap_or(0));
    let bins = rules.dwell_bins_min.len() + 1;
    let cell = pending
        .entry(start)
        .or_insert_with(|| [Tally::empty(bins), Tally::empty(bins)]);
    &mut cell[usize::from(randomized)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    /// 10-minute intervals, enter at -65, stay at -80, 5-minute gaps, 5-minute visits.
    fn rules() -> Rules {
        Rules {
            interval_ms: 10 * MIN,
            enter_dbm: -65,
            stay_dbm: -80,
            max_gap_ms: 5 * MIN,
            min_visit_ms: 5 * MIN,
            dwell_bins_min: vec![10, 30],
        }
    }

    /// Feeds `(device, minute, dBm)` in time order, then stops at `stop_min`.
    fn run(sightings: &[(u64, u64, i8)], stop_min: u64) -> Vec<Visits> {
        let mut t = Tracker::new(rules());
        let mut out = Vec::new();
        for &(device, minute, dbm) in sightings {
            out.extend(t.advance_to(minute * MIN));
            t.record(device, minute * MIN, device >= 100, Some(dbm));
        }
        out.extend(t.stop(stop_min * MIN));
        out
    }

    fn tally(visitors: u32, passers_by: u32, new: u32, repeat: u32, dwell: [u32; 3]) -> Tally {
        Tally {
            visitors,
            passers_by,
            new,
            repeat,
            dwell: dwell.to_vec(),
        }
    }

    #[test]
    fn a_strong_long_stay_is_a_visit_and_a_brief_one_a_passer_by() {
        // Device 1 enters strong and stays for 7 minutes at stay level; device 2 is strong
        // for 3 minutes only.
        let out = run(
            &[
                (1, 1, -60),
                (2, 1, -50),
                (1, 4, -78),
                (2, 4, -50),
                (1, 8, -75),
            ],
            40,
        );
        // Both end in [0, 10): final once time passed 10 + 5 minutes.
        assert_eq!(out[0].interval_start_ms, 0);
        assert!(!out[0].partial);
        assert_eq!(out[0].universal, tally(1, 1, 1, 0, [1, 0, 0]));
        assert_eq!(out[0].randomized, Tally::empty(3));
    }

    #[test]
    fn never_at_enter_signal_is_a_passer_by_however_long() {
        let sightings: Vec<_> = (0..30).map(|m| (1, m, -70)).collect();
        let out = run(&sightings, 100);
        let total: u32 = out.iter().map(|v| v.universal.passers_by).sum();
        let visits: u32 = out.iter().map(|v| v.universal.visitors).sum();
        assert_eq!((total, visits), (1, 0));
        // Attributed to the interval of its last sighting (minute 29).
        let at = out.iter().find(|v| v.universal.passers_by == 1).unwrap();
        assert_eq!(at.interval_start_ms, 20 * MIN);
    }

    #[test]
    fn a_gap_longer_than_max_gap_ends_the_visit_and_a_gap_of_exactly_max_gap_does_not() {
        // 0..5 exactly max_gap apart: one visit of 5 minutes. Then a 6-minute gap, and a
        // second stay 11..16: a second visit, by a device that visited before.
        let out = run(&[(1, 0, -60), (1, 5, -60), (1, 11, -60), (1, 16, -79)], 60);
        let all: Vec<&Tally> = out.iter().map(|v| &v.universal).collect();
        assert_eq!(*all[0], tally(1, 0, 1, 0, [1, 0, 0]));
        assert_eq!(*all[1], tally(1, 0, 0, 1, [1, 0, 0]));
        assert!(all[2..].iter().all(|t| **t == Tally::empty(3)));
    }

    #[test]
    fn weak_sightings_keep_the_device_present_but_do_not_extend_its_stay() {
        // Enters at 0, stays at 2 (a 2-minute stay, too short), then weak every 4 minutes: the
        // stay ends at 2, and the presence, visit-less, is one passer-by at minute 14.
        let out = run(
            &[
                (1, 0, -60),
                (1, 2, -70),
                (1, 6, -85),
                (1, 10, -85),
                (1, 14, -85),
            ],
            60,
        );
        assert_eq!(out[1].interval_start_ms, 10 * MIN);
        assert_eq!(out[1].universal, tally(0, 1, 0, 0, [0, 0, 0]));
        assert_eq!(out[0].universal, Tally::empty(3));
    }

    #[test]
    fn dwell_lands_in_the_bin_of_its_length() {
        // Visits of 9, 10 and 31 minutes: bins <10, 10..30, >=30.
        let mut s = Vec::new();
        for (device, minutes) in [(1u64, 9u64), (2, 10), (3, 31)] {
            for m in 0..=minutes {
                s.push((device, m, -60i8));
            }
        }
        s.sort_by_key(|&(d, m, _)| (m, d));
        let out = run(&s, 200);
        let dwell = out.iter().fold(vec![0; 3], |mut acc, v| {
            for (a, n) in acc.iter_mut().zip(&v.universal.dwell) {
                *a += n;
            }
            acc
        });
        assert_eq!(dwell, vec![1, 1, 1]);
    }

    #[test]
    fn universal_and_randomized_are_tallied_apart() {
        // Device 100 and up are randomized in `run`.
        let out = run(&[(100, 1, -60), (100, 6, -60), (2, 7, -90)], 60);
        assert_eq!(out[0].randomized, tally(1, 0, 1, 0, [1, 0, 0]));
        assert_eq!(out[0].universal, tally(0, 1, 0, 0, [0, 0, 0]));
    }

    #[test]
    fn an_interval_waits_for_max_gap_after_its_end_before_it_is_published() {
        let mut t = Tracker::new(rules());
        assert!(t.advance_to(0).is_empty());
        t.record(1, MIN, false, Some(-60));
        assert!(t.advance_to(14 * MIN + 59_999).is_empty());
        let out = t.advance_to(15 * MIN);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].universal.passers_by, 1);
    }

    #[test]
    fn a_visit_open_at_stop_is_published_partial_and_empty_open_intervals_are_not() {
        let mut t = Tracker::new(rules());
        let mut out = Vec::new();
        for m in 0..=25 {
            out.extend(t.advance_to(m * MIN));
            t.record(1, m * MIN, false, Some(-60));
        }
        // At 27 minutes [0, 10) and [10, 20) are final and empty; [20, 30) is not, and the
        // stay open since minute 0 ends in it, at 25.
        out.extend(t.stop(27 * MIN));
        assert_eq!(out.len(), 3);
        for v in &out[..2] {
            assert!(!v.partial);
            assert_eq!(v.universal, Tally::empty(3));
        }
        assert_eq!(out[2].interval_start_ms, 20 * MIN);
        assert!(out[2].partial);
        assert_eq!(out[2].universal, tally(1, 0, 1, 0, [0, 1, 0]));
    }

    #[test]
    fn a_long_silence_publishes_a_bounded_number_of_zeros() {
        let mut t = Tracker::new(rules());
        t.advance_to(0);
        t.record(1, 0, false, Some(-60));
        let out = t.advance_to(10_000 * MIN);
        assert!(
            out.len() <= 1 + MAX_QUIET_PER_CALL as usize,
            "{}",
            out.len()
        );
        assert_eq!(out[0].universal.passers_by, 1);
        // After the jump, intervals follow on from the last final one, without a hole.
        t.record(2, 10_000 * MIN, false, Some(-60));
        let later = t.advance_to(10_020 * MIN);
        let starts: Vec<u64> = later.iter().map(|v| v.interval_start_ms / MIN).collect();
        assert_eq!(starts, [9_990, 10_000]);
        assert_eq!(later[1].universal.passers_by, 1);
    }

    #[test]
    fn a_sighting_without_signal_neither_enters_nor_stays() {
        let mut t = Tracker::new(rules());
        for m in 0..=20 {
            t.advance_to(m * MIN);
            t.record(1, m * MIN, false, None);
        }
        let out = t.stop(21 * MIN);
        let u: Vec<&Tally> = out.iter().map(|v| &v.universal).collect();
        assert_eq!(u.iter().map(|t| t.visitors).sum::<u32>(), 0);
        assert_eq!(u.iter().map(|t| t.passers_by).sum::<u32>(), 1);
    }
}
