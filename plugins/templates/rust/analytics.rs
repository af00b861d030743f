//! {{name}}: distinct devices per window of pipeline time, universal and randomized apart,
//! on the aggregate stream `counts`.

use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use std::collections::HashSet;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_window")]
    window_secs: u64,
}

fn default_window() -> u64 {
    900
}

pub struct Counter {
    window_ms: u64,
    start_ms: Option<u64>,
    /// Pseudonyms seen in this window: [universal, randomized].
    devices: [HashSet<u64>; 2],
}

impl Counter {
    fn publish_window(&mut self, partial: bool) {
        let Some(start_ms) = self.start_ms.take() else {
            return;
        };
        let [universal, randomized] = std::mem::take(&mut self.devices).map(|d| d.len());
        let counts = serde_json::json!({
            "start_ms": start_ms, "universal": universal, "randomized": randomized,
            "partial": partial,
        });
        // A refused publish is logged and counted by the host; there is no retry.
        let _ = publish("counts", &counts);
    }
}

impl Plugin for Counter {
    fn init(config: &str) -> Result<Self, String> {
        let Config { window_secs } = parse_config(config)?;
        if window_secs == 0 {
            return Err("window_secs must be at least 1".into());
        }
        Ok(Counter {
            window_ms: window_secs * 1000,
            start_ms: None,
            devices: Default::default(),
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            self.on_tick(s.time_ms);
            // Windows start on a multiple of their length: 10:00, 10:15, ...
            self.start_ms
                .get_or_insert(s.time_ms - s.time_ms % self.window_ms);
            self.devices[s.randomized as usize].insert(s.device);
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        // Every sighting before now_ms has been delivered: a window that ended is complete.
        if self
            .start_ms
            .is_some_and(|start| now_ms >= start + self.window_ms)
        {
            self.publish_window(false);
        }
    }

    fn on_stop(&mut self, _now_ms: u64) {
        self.publish_window(true);
    }
}

export_plugin!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use probegate_sdk::Sighting;
    use probegate_sdk_test::{Harness, Limits, sighting};

    const MANIFEST: &str = include_str!("../{{stem}}.toml");

    #[test]
    fn a_window_counts_each_device_once_and_closes_on_time() {
        // min_cell 1: the counts as computed; the default (5) would publish small ones as null.
        let limits = Limits {
            min_cell: 1,
            ..Limits::default()
        };
        let mut h =
            Harness::<Counter>::with_limits(MANIFEST, r#"{"window_secs": 60}"#, limits).unwrap();
        let random = Sighting {
            randomized: true,
            ..sighting(3, 62_000)
        };
        h.sightings(&[
            sighting(1, 60_000),
            sighting(2, 61_000),
            sighting(1, 90_000),
            random,
        ]);
        assert!(h.published().is_empty(), "the window is still open");
        h.tick(120_000);
        let counts = h.published_on("counts");
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0]["start_ms"], 60_000);
        assert_eq!(counts[0]["universal"], 2);
        assert_eq!(counts[0]["randomized"], 1);
        assert!(h.refused().is_empty());
    }

    #[test]
    fn small_counts_reach_the_back_office_as_null() {
        let mut h = Harness::<Counter>::new(MANIFEST, "{}").unwrap();
        h.sightings(&[sighting(1, 1_000)]);
        h.stop();
        assert_eq!(
            h.published_on("counts")[0]["universal"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn a_zero_window_is_refused() {
        assert!(Harness::<Counter>::new(MANIFEST, r#"{"window_secs": 0}"#).is_err());
    }
}
