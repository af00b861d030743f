//! Estimates how many people are present in each fixed window of capture time, under MAC
//! randomization, and says how: stream `occupancy`, one message per window.
//!
//! ```json
//! {"window_start_ms":1676543100000,"window_end_ms":1676543400000,"estimate":25.8,
//!  "method":"universal-dwell+randomized-rate","universal_present":14,"universal_brief":0,
//!  "universal_fixed":0,"randomized_in_room":47,"addresses_per_phone":4.0,
//!  "universal_seen":33,"randomized_seen":64,"sightings":316,"partial":false}
//! ```
//!
//! `estimate = universal_present + randomized_in_room / addresses_per_phone`; the model, its
//! parameters and its measured error are in this plugin's README. Windows are aligned to
//! multiples of `window_secs` since the Unix epoch; silent windows after the first sighting are
//! reported as zeros; `partial` marks the last window when the capture ends before it does.

mod estimator;

use estimator::{Estimate, Estimator, Params, Probe};
use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use serde::Deserialize;

/// The plugin's `config` table. Defaults: see the README for where each comes from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Window length in seconds.
    #[serde(default = "default_window")]
    window_secs: u64,
    /// Signal (dBm) at or above which a sighting was made in the room.
    #[serde(default = "default_room_dbm")]
    room_dbm: i32,
    /// A universal device counts as a person once it has been around this long (seconds).
    #[serde(default = "default_min_dwell")]
    min_dwell_secs: u64,
    /// ...and is fixed equipment, no longer counted, once around this long (seconds).
    #[serde(default = "default_fixed_after")]
    fixed_after_secs: u64,
    /// Distinct in-room randomized addresses one phone shows per minute.
    #[serde(default = "default_rate")]
    phone_addresses_per_min: f64,
}

fn default_window() -> u64 {
    300
}
fn default_room_dbm() -> i32 {
    -75
}
fn default_min_dwell() -> u64 {
    60
}
fn default_fixed_after() -> u64 {
    3 * 3600
}
fn default_rate() -> f64 {
    0.8
}

fn params(config: &str) -> Result<Params, String> {
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
    if !(c.phone_addresses_per_min.is_finite() && c.phone_addresses_per_min > 0.0) {
        return Err("phone_addresses_per_min must be a positive number".into());
    }
    Ok(Params {
        window_ms: c.window_secs * 1000,
        room_dbm: c.room_dbm,
        min_dwell_ms: c.min_dwell_secs * 1000,
        fixed_after_ms: c.fixed_after_secs.saturating_mul(1000),
        addresses_per_phone: c.phone_addresses_per_min * c.window_secs as f64 / 60.0,
    })
}

struct Occupancy {
    estimator: Estimator,
}

impl Plugin for Occupancy {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Occupancy {
            estimator: Estimator::new(params(config)?),
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            let probe = Probe {
                device: s.device,
                epoch: s.epoch,
                time_ms: s.time_ms,
                signal_dbm: s.signal_dbm,
                randomized: s.randomized,
            };
            for done in self.estimator.observe(probe) {
                emit(&done);
            }
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        for done in self.estimator.advance_to(now_ms) {
            emit(&done);
        }
    }

    fn on_stop(&mut self, _now_ms: u64) {
        if let Some(partial) = self.estimator.finish() {
            emit(&partial);
        }
    }
}

fn emit(estimate: &Estimate) {
    // A refused publish (rate limit, size) is the host's to report; the window is gone anyway.
    let _ = publish("occupancy", estimate);
}

export_plugin!(Occupancy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_four_addresses_per_phone_in_five_minutes() {
        let p = params("{}").unwrap();
        assert_eq!(p.window_ms, 300_000);
        assert_eq!(p.room_dbm, -75);
        assert_eq!((p.min_dwell_ms, p.fixed_after_ms), (60_000, 10_800_000));
        assert!((p.addresses_per_phone - 4.0).abs() < 1e-9);
    }

    #[test]
    fn the_rate_scales_with_the_window() {
        let p = params(r#"{"window_secs": 900, "phone_addresses_per_min": 0.5}"#).unwrap();
        assert!((p.addresses_per_phone - 7.5).abs() < 1e-9);
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
            (
                r#"{"phone_addresses_per_min": 0}"#,
                "phone_addresses_per_min",
            ),
            (r#"{"interval_secs": 300}"#, "unknown field"),
        ] {
            let err = params(config).unwrap_err();
            assert!(err.contains(words), "{config}: {err}");
        }
    }
}
