//! {{name}}: a filter that drops sightings weaker than `min_dbm` (devices outside the store)
//! and tags randomized ones, publishing how many it passed and dropped per window.

use probegate_sdk::{Filter, Sighting, Verdict, export_filter, parse_config, publish};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_min_dbm")]
    min_dbm: i8,
    #[serde(default = "default_window")]
    window_secs: u64,
}

fn default_min_dbm() -> i8 {
    -75
}

fn default_window() -> u64 {
    900
}

pub struct Gate {
    min_dbm: i8,
    window_ms: u64,
    start_ms: Option<u64>,
    passed: u64,
    dropped: u64,
}

impl Gate {
    /// The verdict for one sighting: a pure function, easy to test.
    pub fn judge(&self, s: &Sighting) -> Verdict {
        match s.signal_dbm {
            Some(dbm) if dbm < self.min_dbm => Verdict::Drop,
            _ if s.randomized => Verdict::Tag(vec!["randomized".into()]),
            _ => Verdict::Pass,
        }
    }

    fn publish_window(&mut self) {
        let Some(start_ms) = self.start_ms.take() else {
            return;
        };
        let doc = serde_json::json!({
            "start_ms": start_ms, "passed": self.passed, "dropped": self.dropped,
        });
        (self.passed, self.dropped) = (0, 0);
        let _ = publish("verdicts", &doc);
    }
}

impl Filter for Gate {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        if c.window_secs == 0 {
            return Err("window_secs must be at least 1".into());
        }
        Ok(Gate {
            min_dbm: c.min_dbm,
            window_ms: c.window_secs * 1000,
            start_ms: None,
            passed: 0,
            dropped: 0,
        })
    }

    fn filter(&mut self, batch: &[Sighting]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| {
                self.on_tick(s.time_ms);
                self.start_ms
                    .get_or_insert(s.time_ms - s.time_ms % self.window_ms);
                let verdict = self.judge(s);
                match verdict {
                    Verdict::Drop => self.dropped += 1,
                    _ => self.passed += 1,
                }
                verdict
            })
            .collect()
    }

    fn on_tick(&mut self, now_ms: u64) {
        if self
            .start_ms
            .is_some_and(|start| now_ms >= start + self.window_ms)
        {
            self.publish_window();
        }
    }

    fn on_stop(&mut self, _now_ms: u64) {
        self.publish_window();
    }
}

export_filter!(Gate);

#[cfg(test)]
mod tests {
    use super::*;
    use probegate_sdk_test::{FilterHarness, sighting};

    const MANIFEST: &str = include_str!("../{{stem}}.toml");

    #[test]
    fn weak_sightings_are_dropped_and_randomized_ones_tagged() {
        let mut h = FilterHarness::<Gate>::new(MANIFEST, r#"{"min_dbm": -70}"#).unwrap();
        let weak = Sighting {
            signal_dbm: Some(-80),
            ..sighting(1, 1_000)
        };
        let near = Sighting {
            signal_dbm: Some(-60),
            ..sighting(2, 2_000)
        };
        let random = Sighting {
            randomized: true,
            ..sighting(3, 3_000)
        };
        let verdicts = h.filter(&[weak, near, random]);
        assert!(matches!(verdicts[0], Verdict::Drop));
        assert!(matches!(verdicts[1], Verdict::Pass));
        assert!(matches!(&verdicts[2], Verdict::Tag(t) if t == &["randomized"]));
        h.stop();
        // Two passed, one dropped: below the default min_cell, so both are null.
        let doc = &h.published_on("verdicts")[0];
        assert_eq!(doc["passed"], serde_json::Value::Null);
        assert_eq!(doc["start_ms"], 0);
    }
}
