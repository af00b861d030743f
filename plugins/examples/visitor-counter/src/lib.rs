//! Counts the distinct devices seen in each fixed interval of capture time.
//!
//! Universal (factory) MAC addresses and randomized ones are counted apart: a phone that
//! randomizes shows up as several "devices" per interval, so `randomized` over-counts people
//! while `universal` is close to one per device. Stream `counts`, one message per interval:
//!
//! ```json
//! {"interval_start_ms":1666191600000,"interval_end_ms":1666191900000,
//!  "universal":4,"randomized":11,"sightings":93,"partial":false}
//! ```
//! Intervals are aligned to multiples of `interval_secs` since the Unix epoch, so two gateways
//! report the same windows. Empty intervals after the first sighting are reported as zeros;
//! `partial` marks the last interval when the capture ends before it does.
//!
//! With a `visits` table in its config, the plugin also publishes stream `visits` over the
//! same intervals: passers-by against visitors, dwell times, new against repeat visitors
//! (`src/visits.rs` and the README say exactly what each number means).
//!
//! Granted the optional capabilities `sequence` and `ie-signature`, the plugin links a phone's
//! randomized addresses within the key epoch (`probegate-linking`): `counts` adds the phones
//! so linked with a range, and `visits` follows phones instead of addresses. Every message
//! names its `method`, so a back office never mixes the two.

mod visits;
mod window;

use probegate_linking::hash::FastSet;
use probegate_linking::{LinkParams, Linker, Observation, Placement};
use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use serde::{Deserialize, Serialize};
use visits::{Rules, Tracker};
use window::{Counts, Windows};

/// Each address is a device: what a site on the default grant gets, as in version 0.3.
pub const BY_ADDRESS: &str = "addresses/1";
/// A phone's randomized addresses linked within the key epoch (plugins/linking).
pub const LINKED: &str = "linked/1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Length of one counting interval in seconds.
    #[serde(default = "default_interval")]
    interval_secs: u64,
    /// Visit analytics; off without the table, because its thresholds only mean something
    /// once chosen for the store's layout (and back offices get no stream they did not ask for).
    #[serde(default)]
    visits: Option<VisitsConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitsConfig {
    /// A stay starts with a sighting at or above this signal (dBm).
    #[serde(default = "default_enter")]
    enter_dbm: i32,
    /// ...and goes on with sightings at or above this one.
    #[serde(default = "default_stay")]
    stay_dbm: i32,
    /// Longest silence (seconds) between stay-level sightings inside one stay, and between any
    /// sightings inside one presence.
    #[serde(default = "default_gap")]
    max_gap_secs: u64,
    /// A stay at least this long (first to last sighting, seconds) is a visit.
    #[serde(default = "default_min_visit")]
    min_visit_secs: u64,
    /// Dwell histogram edges in minutes, strictly increasing.
    #[serde(default = "default_bins")]
    dwell_bins_min: Vec<u32>,
}

fn default_interval() -> u64 {
    300
}
fn default_enter() -> i32 {
    -70
}
fn default_stay() -> i32 {
    -80
}
fn default_gap() -> u64 {
    300
}
fn default_min_visit() -> u64 {
    300
}
fn default_bins() -> Vec<u32> {
    vec![15, 30, 60, 120]
}

impl VisitsConfig {
    fn rules(&self, interval_secs: u64) -> Result<Rules, String> {
        if self.stay_dbm > self.enter_dbm {
            return Err("visits.stay_dbm must not be above visits.enter_dbm".into());
        }
        if !(-120..=0).contains(&self.stay_dbm) || !(-120..=0).contains(&self.enter_dbm) {
            return Err("visits.enter_dbm and visits.stay_dbm must be between -120 and 0".into());
        }
        // The `visits` stream trails `counts` by max_gap_secs: an hour is already a lot.
        if self.max_gap_secs == 0 || self.max_gap_secs > 3600 {
            return Err("visits.max_gap_secs must be between 1 and 3600".into());
        }
        if self.min_visit_secs > 86_400 {
            return Err("visits.min_visit_secs must be at most 86400".into());
        }
        let bins = &self.dwell_bins_min;
        if bins.len() > 12 || bins.first() == Some(&0) || bins.windows(2).any(|w| w[0] >= w[1]) {
            return Err(
                "visits.dwell_bins_min must be at most 12 strictly increasing minutes above 0"
                    .into(),
            );
        }
        Ok(Rules {
            interval_ms: interval_secs * 1000,
            enter_dbm: self.enter_dbm,
            stay_dbm: self.stay_dbm,
            max_gap_ms: self.max_gap_secs * 1000,
            min_visit_ms: self.min_visit_secs * 1000,
            dwell_bins_min: bins.clone(),
        })
    }
}

/// Decided by the first sighting: the host passes `seq` and `ie_signature` only when the site
/// grants the optional capabilities, and grants do not change while the plugin runs.
enum Mode {
    Undecided,
    ByAddress,
    Linked(Box<Linking>),
}

struct Linking {
    linker: Linker,
    /// Clusters that took a link with more than one candidate in this epoch.
    ambiguous: FastSet<u64>,
}

struct VisitorCounter {
    windows: Windows,
    visits: Option<Tracker>,
    mode: Mode,
    /// What a new randomized address must be heard at to be linked: the stay level when
    /// visits are on (a phone in the store), else the linking's default room level.
    link_dbm: i32,
}

impl VisitorCounter {
    fn method(&self) -> &'static str {
        match self.mode {
            Mode::Linked(_) => LINKED,
            _ => BY_ADDRESS,
        }
    }

    /// The key under which the visit tracker follows this sighting: its address, or with
    /// linking its phone (cluster); `None`: past the linker's bound, not followed.
    fn place(&mut self, s: &Sighting) -> Option<u64> {
        if let Mode::Undecided = self.mode {
            self.mode = if s.seq.is_some() && s.ie_signature.is_some() {
                self.windows.link();
                Mode::Linked(Box::new(Linking {
                    linker: Linker::new(LinkParams {
                        room_dbm: self.link_dbm,
                        ..LinkParams::default()
                    }),
                    ambiguous: FastSet::default(),
                }))
            } else {
                Mode::ByAddress
            };
        }
        let Mode::Linked(l) = &mut self.mode else {
            return Some(s.device);
        };
        if l.linker.epoch().is_some_and(|e| e != s.epoch) {
            l.ambiguous.clear();
        }
        let placed = l.linker.observe(&Observation {
            device: s.device,
            epoch: s.epoch,
            time_ms: s.time_ms,
            randomized: s.randomized,
            signal_dbm: s.signal_dbm,
            seq: s.seq,
            ie_signature: s.ie_signature,
        });
        let cluster = placed.cluster?;
        if placed.placement == (Placement::Linked { ambiguous: true }) {
            l.ambiguous.insert(cluster);
        }
        if s.randomized {
            let ambiguous = l.ambiguous.contains(&cluster);
            self.windows.record_cluster(cluster, ambiguous);
        }
        Some(cluster)
    }
}

impl Plugin for VisitorCounter {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.interval_secs == 0 || config.interval_secs > 86_400 {
            return Err("interval_secs must be between 1 and 86400".into());
        }
        let visits = match &config.visits {
            Some(v) => Some(Tracker::new(v.rules(config.interval_secs)?)),
            None => None,
        };
        let link_dbm = config
            .visits
            .as_ref()
            .map_or(LinkParams::default().room_dbm, |v| v.stay_dbm);
        Ok(VisitorCounter {
            windows: Windows::new(config.interval_secs * 1000),
            visits,
            mode: Mode::Undecided,
            link_dbm,
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            let method = self.method();
            for done in self.windows.advance_to(s.time_ms) {
                emit(&done, method);
            }
            if let Some(tracker) = &mut self.visits {
                for done in tracker.advance_to(s.time_ms) {
                    emit_visits(&done, method);
                }
            }
            self.windows.record(s.device, s.randomized);
            let key = self.place(s);
            if let (Some(tracker), Some(key)) = (&mut self.visits, key) {
                tracker.record(key, s.time_ms, s.randomized, s.signal_dbm);
            }
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        let method = self.method();
        for done in self.windows.advance_to(now_ms) {
            emit(&done, method);
        }
        if let Some(tracker) = &mut self.visits {
            for done in tracker.advance_to(now_ms) {
                emit_visits(&done, method);
            }
        }
    }

    fn on_stop(&mut self, now_ms: u64) {
        let method = self.method();
        if let Some(partial) = self.windows.take_partial() {
            emit(&partial, method);
        }
        if let Some(tracker) = &mut self.visits {
            for done in tracker.stop(now_ms) {
                emit_visits(&done, method);
            }
        }
    }
}

/// A message with the method that made it, last.
#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(flatten)]
    message: &'a T,
    method: &'static str,
}

fn emit(counts: &Counts, method: &'static str) {
    // A refused publish (rate limit, size) is the host's to report; the count is gone either way.
    let _ = publish(
        "counts",
        &Tagged {
            message: counts,
            method,
        },
    );
}

fn emit_visits(visits: &visits::Visits, method: &'static str) {
    let _ = publish(
        "visits",
        &Tagged {
            message: visits,
            method,
        },
    );
}

export_plugin!(VisitorCounter);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Result<Option<Rules>, String> {
        let config: Config = parse_config(json)?;
        config
            .visits
            .map(|v| v.rules(config.interval_secs))
            .transpose()
    }

    #[test]
    fn visits_are_off_without_the_table_and_an_empty_table_takes_the_defaults() {
        assert_eq!(rules(r#"{"interval_secs":60}"#), Ok(None));
        let r = rules(r#"{"visits":{}}"#).unwrap().unwrap();
        assert_eq!((r.enter_dbm, r.stay_dbm), (-70, -80));
        assert_eq!((r.max_gap_ms, r.min_visit_ms), (300_000, 300_000));
        assert_eq!(r.dwell_bins_min, [15, 30, 60, 120]);
        assert_eq!(r.interval_ms, 300_000);
    }

    #[test]
    fn nonsense_visit_rules_refuse_the_start() {
        for bad in [
            r#"{"visits":{"enter_dbm":-80,"stay_dbm":-70}}"#,
            r#"{"visits":{"max_gap_secs":0}}"#,
            r#"{"visits":{"dwell_bins_min":[30,15]}}"#,
            r#"{"visits":{"dwell_bins_min":[0,15]}}"#,
            r#"{"visits":{"enter_dbm":-50,"stay_dbm":-200}}"#,
            r#"{"visits":{"enter_dmb":-50}}"#,
        ] {
            assert!(rules(bad).is_err(), "{bad}");
        }
    }
}
