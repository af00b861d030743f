//! Fixed, epoch-aligned counting windows: a state machine with no I/O, tested on the host.

use probegate_linking::hash::FastSet;
use serde::Serialize;

/// What one interval saw; serialised as the `counts` stream's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub interval_start_ms: u64,
    pub interval_end_ms: u64,
    pub universal: u32,
    pub randomized: u32,
    pub sightings: u32,
    pub partial: bool,
    /// Only when the plugin links addresses (it was granted `sequence` and `ie-signature`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub linked: Option<Linked>,
}

/// Randomized addresses linked into phones: what the interval saw, with the range the
/// linking's ambiguity leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    /// Distinct clusters of randomized addresses: phones, as far as linking can tell.
    pub linked: u32,
    /// The same count if every ambiguous link was right...
    pub low: u32,
    /// ...and if every one was wrong (each such cluster two phones), at most `randomized`.
    pub high: u32,
}

/// Beyond this many empty intervals in one jump (a clock step, a long silent night with a
/// tiny interval) we skip ahead rather than publish a flood of zeros.
const MAX_EMPTY_WINDOWS: u64 = 1_000;

pub struct Windows {
    len_ms: u64,
    start_ms: Option<u64>,
    universal: FastSet<u64>,
    randomized: FastSet<u64>,
    sightings: u32,
    /// With linking: the randomized clusters heard in the window, and those of them that
    /// took an ambiguous link.
    linking: bool,
    clusters: FastSet<u64>,
    ambiguous: FastSet<u64>,
}

impl Windows {
    pub fn new(len_ms: u64) -> Self {
        Windows {
            len_ms,
            start_ms: None,
            universal: FastSet::default(),
            randomized: FastSet::default(),
            sightings: 0,
            linking: false,
            clusters: FastSet::default(),
            ambiguous: FastSet::default(),
        }
    }

    /// Adds the `linked`, `low` and `high` counts to every window from now on.
    pub fn link(&mut self) {
        self.linking = true;
    }

    /// Counts a randomized address's cluster in the current window; `ambiguous`: the cluster
    /// took a link with more than one candidate at some point.
    pub fn record_cluster(&mut self, cluster: u64, ambiguous: bool) {
        self.clusters.insert(cluster);
        if ambiguous {
            self.ambiguous.insert(cluster);
        }
    }

    /// Closes every window that ends at or before `now_ms` and returns them in order.
    pub fn advance_to(&mut self, now_ms: u64) -> Vec<Counts> {
        let mut done = Vec::new();
        let Some(mut start) = self.start_ms else {
            self.start_ms = Some(now_ms - now_ms % self.len_ms);
            return done;
        };
        let aligned_now = now_ms - now_ms % self.len_ms;
        if aligned_now > start.saturating_add(MAX_EMPTY_WINDOWS * self.len_ms) {
            done.push(self.close(start, false));
            self.start_ms = Some(aligned_now);
            return done;
        }
        while now_ms >= start + self.len_ms {
            done.push(self.close(start, false));
            start += self.len_ms;
        }
        self.start_ms = Some(start);
        done
    }

    /// Counts one sighting in the current window (late sightings count in the current one).
    pub fn record(&mut self, device: u64, randomized: bool) {
        if randomized {
            self.randomized.insert(device);
        } else {
            self.universal.insert(device);
        }
        self.sightings = self.sightings.saturating_add(1);
    }

    /// The open window, if it saw anything, marked partial.
    pub fn take_partial(&mut self) -> Option<Counts> {
        let start = self.start_ms?;
        if self.sightings == 0 {
            return None;
        }
        Some(self.close(start, true))
    }

    fn close(&mut self, start: u64, partial: bool) -> Counts {
        let counts = Counts {
            interval_start_ms: start,
            interval_end_ms: start + self.len_ms,
            universal: self.universal.len() as u32,
            randomized: self.randomized.len() as u32,
            sightings: self.sightings,
            partial,
            linked: self.linking.then(|| {
                let linked = self.clusters.len() as u32;
                Linked {
                    linked,
                    low: linked,
                    high: (linked + self.ambiguous.len() as u32).min(self.randomized.len() as u32),
                }
            }),
        };
        self.clusters.clear();
        self.ambiguous.clear();
        self.universal.clear();
        self.randomized.clear();
        self.sightings = 0;
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_seen_twice_in_one_window_counts_once() {
        let mut w = Windows::new(1000);
        assert!(w.advance_to(10).is_empty());
        w.record(7, false);
        w.record(7, false);
        w.record(8, true);
        let done = w.advance_to(1000);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].universal, done[0].randomized, done[0].sightings),
            (1, 1, 3)
        );
        assert_eq!(
            (done[0].interval_start_ms, done[0].interval_end_ms),
            (0, 1000)
        );
    }

    #[test]
    fn silent_windows_are_reported_as_zeros() {
        let mut w = Windows::new(1000);
        w.advance_to(0);
        w.record(1, false);
        let done = w.advance_to(3500);
        assert_eq!(done.len(), 3);
        assert_eq!(done[2].universal + done[2].randomized, 0);
        assert_eq!(done[2].interval_start_ms, 2000);
    }

    #[test]
    fn a_huge_time_jump_does_not_flood() {
        let mut w = Windows::new(1000);
        w.advance_to(0);
        assert_eq!(w.advance_to(10_000_000_000).len(), 1);
    }

    #[test]
    fn the_open_window_is_published_partial_only_if_it_saw_something() {
        let mut w = Windows::new(1000);
        w.advance_to(0);
        assert!(w.take_partial().is_none());
        w.record(1, true);
        let p = w.take_partial().unwrap();
        assert!(p.partial);
        assert_eq!(p.randomized, 1);
        assert_eq!(p.linked, None);
    }

    #[test]
    fn linked_counts_clusters_and_widens_high_by_the_ambiguous_ones() {
        let mut w = Windows::new(1000);
        w.link();
        w.advance_to(0);
        // Four addresses, two phones as linked; one of them took an ambiguous link.
        for (address, cluster, ambiguous) in [
            (1, 10, false),
            (2, 10, false),
            (3, 11, false),
            (4, 11, true),
        ] {
            w.record(address, true);
            w.record_cluster(cluster, ambiguous);
        }
        let done = w.advance_to(1000);
        let l = done[0].linked.clone().unwrap();
        assert_eq!((l.linked, l.low, l.high), (2, 2, 3));
        assert_eq!(done[0].randomized, 4);
        let json = serde_json::to_string(&done[0]).unwrap();
        assert!(
            json.ends_with(r#""partial":false,"linked":2,"low":2,"high":3}"#),
            "{json}"
        );
    }
}
