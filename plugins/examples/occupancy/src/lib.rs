//! People present in each fixed window of capture time, counting phones rather than
//! addresses, with an interval: stream `occupancy`, one message per window.
//!
//! ```json
//! {"window_start_ms":1676543400000,"window_end_ms":1676544300000,"estimate":17.4,"low":14.0,
//!  "high":22.0,"method":"linked-devices/3","devices":33,"universal_present":2,
//!  "universal_brief":3,"universal_fixed":0,"linked_present":31,"linked_brief":10,
//!  "randomized_in_room":123,"links":111,"ambiguous_links":79,"people_per_device":0.528,
//!  "universal_seen":60,"randomized_seen":196,"sightings":879,"visits":{...},
//!  "dwell_bins_min":[15,30,60,120],"partial":false}
//! ```
//!
//! The linking and counting are `probegate-linking`'s (the same code `probegate calibrate`
//! fits natively); this crate reads the config and publishes. The method, its parameters and
//! its measured error are in this plugin's README.

use probegate_linking::{
    CountParams, Counter, DWELL_EDGES_MIN, LinkParams, Model, Observation, VisitTally, WindowCounts,
};
use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use serde::{Deserialize, Serialize};

/// Named in every message; changes whenever the method does, so a back office never mixes
/// numbers made two ways.
pub const METHOD: &str = "linked-devices/3";

/// The plugin's `config` table; `probegate calibrate` writes the last four per site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_window")]
    window_secs: u64,
    #[serde(default = "default_min_dwell")]
    min_dwell_secs: u64,
    #[serde(default = "default_fixed_after")]
    fixed_after_secs: u64,
    #[serde(default = "default_room_dbm")]
    room_dbm: i32,
    #[serde(default = "default_rate")]
    people_per_device: f64,
    #[serde(default = "default_low")]
    interval_low: f64,
    #[serde(default = "default_high")]
    interval_high: f64,
}

fn default_window() -> u64 {
    900
}
fn default_min_dwell() -> u64 {
    CountParams::default().min_dwell_ms / 1000
}
fn default_fixed_after() -> u64 {
    3 * 3600
}
fn default_room_dbm() -> i32 {
    LinkParams::default().room_dbm
}
fn default_rate() -> f64 {
    Model::default().rate
}
fn default_low() -> f64 {
    Model::default().q_low
}
fn default_high() -> f64 {
    Model::default().q_high
}

fn settings(config: &str) -> Result<(CountParams, Model), String> {
    let c: Config = parse_config(config)?;
    if c.window_secs == 0 || c.window_secs > 86_400 {
        return Err("window_secs must be between 1 and 86400".into());
    }
    if !(-120..=0).contains(&c.room_dbm) {
        return Err("room_dbm must be between -120 and 0".into());
    }
    if c.min_dwell_secs >= c.fixed_after_secs {
        return Err("min_dwell_secs must be less than fixed_after_secs".into());
    }
    if !(c.people_per_device.is_finite() && c.people_per_device > 0.0) {
        return Err("people_per_device must be a positive number".into());
    }
    if !(c.interval_low.is_finite() && c.interval_high.is_finite())
        || c.interval_low > c.interval_high
    {
        return Err("interval_low must be a number no greater than interval_high".into());
    }
    let count = CountParams {
        window_ms: c.window_secs * 1000,
        link: LinkParams {
            room_dbm: c.room_dbm,
            ..LinkParams::default()
        },
        min_dwell_ms: c.min_dwell_secs * 1000,
        fixed_after_ms: c.fixed_after_secs.saturating_mul(1000),
    };
    let model = Model {
        rate: c.people_per_device,
        q_low: c.interval_low,
        q_high: c.interval_high,
    };
    Ok((count, model))
}

/// One window's message.
#[derive(Debug, Serialize)]
pub struct Message {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// People present, to one decimal, and the interval around it.
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub method: &'static str,
    /// Devices counted: `universal_present + linked_present`.
    pub devices: u32,
    pub universal_present: u32,
    pub universal_brief: u32,
    pub universal_fixed: u32,
    pub linked_present: u32,
    pub linked_brief: u32,
    pub randomized_in_room: u32,
    pub links: u32,
    pub ambiguous_links: u32,
    pub people_per_device: f64,
    pub universal_seen: u32,
    pub randomized_seen: u32,
    pub sightings: u32,
    /// Stays that ended in the window (silent for 10 minutes, or cut by a rotation or the end
    /// of the capture), universal devices and linked phones apart.
    pub visits: VisitsByKind,
    /// The upper edges, in minutes, of the `dwell` bins in `visits` (the last bin is open).
    pub dwell_bins_min: [u64; 4],
    pub partial: bool,
}

#[derive(Debug, Serialize)]
pub struct VisitsByKind {
    pub universal: Visits,
    pub linked: Visits,
}

#[derive(Debug, Serialize)]
pub struct Visits {
    /// Stays of at least `min_dwell_secs`, and their dwell by bin.
    pub visits: u32,
    pub dwell: [u32; 5],
    /// Shorter stays.
    pub passers_by: u32,
}

impl From<&VisitTally> for Visits {
    fn from(t: &VisitTally) -> Self {
        Visits {
            visits: t.visits,
            dwell: t.dwell,
            passers_by: t.passers_by,
        }
    }
}

pub fn message(w: &WindowCounts, model: &Model) -> Message {
    let e = model.estimate(w.devices());
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    Message {
        window_start_ms: w.window_start_ms,
        window_end_ms: w.window_end_ms,
        estimate: tenth(e.estimate),
        low: tenth(e.low),
        high: tenth(e.high),
        method: METHOD,
        devices: w.devices(),
        universal_present: w.universal_present,
        universal_brief: w.universal_brief,
        universal_fixed: w.universal_fixed,
        linked_present: w.linked_present,
        linked_brief: w.linked_brief,
        randomized_in_room: w.randomized_in_room,
        links: w.links,
        ambiguous_links: w.ambiguous_links,
        people_per_device: (model.rate * 1000.0).round() / 1000.0,
        universal_seen: w.universal_seen,
        randomized_seen: w.randomized_seen,
        sightings: w.sightings,
        visits: VisitsByKind {
            universal: (&w.visits_universal).into(),
            linked: (&w.visits_linked).into(),
        },
        dwell_bins_min: DWELL_EDGES_MIN,
        partial: w.partial,
    }
}

struct Occupancy {
    counter: Counter,
    model: Model,
}

impl Occupancy {
    fn emit(&self, windows: Vec<WindowCounts>) {
        for w in &windows {
            // A refused publish (rate limit, size) is the host's to report; the window is gone.
            let _ = publish("occupancy", &message(w, &self.model));
        }
    }
}

impl Plugin for Occupancy {
    fn init(config: &str) -> Result<Self, String> {
        let (count, model) = settings(config)?;
        Ok(Occupancy {
            counter: Counter::new(count),
            model,
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            let done = self.counter.observe(&Observation {
                device: s.device,
                epoch: s.epoch,
                time_ms: s.time_ms,
                randomized: s.randomized,
                signal_dbm: s.signal_dbm,
                seq: s.seq,
                ie_signature: s.ie_signature,
            });
            self.emit(done);
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        let done = self.counter.advance_to(now_ms);
        self.emit(done);
    }

    fn on_stop(&mut self, _now_ms: u64) {
        let last = self.counter.finish();
        self.emit(last.into_iter().collect());
    }
}

export_plugin!(Occupancy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_fitted_ones_at_fifteen_minutes() {
        let (count, model) = settings("{}").unwrap();
        assert_eq!(count.window_ms, 900_000);
        assert_eq!(count.link.room_dbm, LinkParams::default().room_dbm);
        assert_eq!(
            (count.min_dwell_ms, count.fixed_after_ms),
            (300_000, 10_800_000)
        );
        assert_eq!(model, Model::default());
    }

    #[test]
    fn a_calibrated_config_is_taken_as_written() {
        let (count, model) = settings(
            r#"{"window_secs": 300, "room_dbm": -70, "people_per_device": 0.6,
                "interval_low": -1.5, "interval_high": 2.0}"#,
        )
        .unwrap();
        assert_eq!((count.window_ms, count.link.room_dbm), (300_000, -70));
        assert_eq!((model.rate, model.q_low, model.q_high), (0.6, -1.5, 2.0));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (config, words) in [
            (r#"{"window_secs": 0}"#, "window_secs"),
            (r#"{"room_dbm": 10}"#, "room_dbm"),
            (
                r#"{"min_dwell_secs": 7200, "fixed_after_secs": 3600}"#,
                "min_dwell_secs",
            ),
            (r#"{"people_per_device": 0}"#, "people_per_device"),
            (
                r#"{"interval_low": 1, "interval_high": -1}"#,
                "interval_low",
            ),
            (r#"{"phone_addresses_per_min": 0.8}"#, "unknown field"),
        ] {
            let err = settings(config).unwrap_err();
            assert!(err.contains(words), "{config}: {err}");
        }
    }

    #[test]
    fn a_message_carries_the_estimate_its_interval_and_its_inputs() {
        let w = WindowCounts {
            window_start_ms: 0,
            window_end_ms: 900_000,
            universal_present: 4,
            linked_present: 16,
            ..WindowCounts::default()
        };
        let model = Model {
            rate: 0.5,
            q_low: -1.0,
            q_high: 1.0,
        };
        let m = message(&w, &model);
        assert_eq!((m.devices, m.estimate), (20, 10.0));
        // 6.68–13.32, widened to whole people.
        assert_eq!((m.low, m.high), (6.0, 14.0));
        assert_eq!(m.method, METHOD);
    }
}
