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

mod window;

use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use serde::Deserialize;
use window::{Counts, Windows};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Length of one counting interval in seconds.
    #[serde(default = "default_interval")]
    interval_secs: u64,
}

fn default_interval() -> u64 {
    300
}

struct VisitorCounter {
    windows: Windows,
}

impl Plugin for VisitorCounter {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.interval_secs == 0 || config.interval_secs > 86_400 {
            return Err("interval_secs must be between 1 and 86400".into());
        }
        Ok(VisitorCounter {
            windows: Windows::new(config.interval_secs * 1000),
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            for done in self.windows.advance_to(s.time_ms) {
                emit(&done);
            }
            self.windows.record(s.device, s.randomized);
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        for done in self.windows.advance_to(now_ms) {
            emit(&done);
        }
    }

    fn on_stop(&mut self, _now_ms: u64) {
        if let Some(partial) = self.windows.take_partial() {
            emit(&partial);
        }
    }
}

fn emit(counts: &Counts) {
    // A refused publish (rate limit, size) is the host's to report; the count is gone either way.
    let _ = publish("counts", counts);
}

export_plugin!(VisitorCounter);
