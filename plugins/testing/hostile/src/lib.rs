//! A plugin that misbehaves on purpose, chosen by its config, so the tests can prove the host
//! contains it. `{"trap_on": "sightings"}` panics (a wasm trap) on every batch; `"tick"` and
//! `"init"` likewise there; `{"spin_on": "sightings"}` loops forever (fuel must stop it).
//! Between misdeeds it publishes `{"alive": n}` to stream `heartbeat` on each tick, so a test
//! can tell a contained plugin from a dead one.

use probegate_sdk::{Plugin, Sighting, export_plugin, parse_config, publish};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    trap_on: Option<String>,
    #[serde(default)]
    spin_on: Option<String>,
}

struct Hostile {
    config: Config,
    ticks: u64,
}

impl Hostile {
    fn misbehave(&self, at: &str) {
        if self.config.trap_on.as_deref() == Some(at) {
            panic!("hostile plugin traps on {at} as configured");
        }
        if self.config.spin_on.as_deref() == Some(at) {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }
}

impl Plugin for Hostile {
    fn init(config: &str) -> Result<Self, String> {
        let me = Hostile {
            config: parse_config(config)?,
            ticks: 0,
        };
        me.misbehave("init");
        Ok(me)
    }

    fn on_sightings(&mut self, _batch: &[Sighting]) {
        self.misbehave("sightings");
    }

    fn on_tick(&mut self, _now_ms: u64) {
        self.misbehave("tick");
        self.ticks += 1;
        let _ = publish("heartbeat", &serde_json_alive(self.ticks));
    }
}

fn serde_json_alive(n: u64) -> impl serde::Serialize {
    #[derive(serde::Serialize)]
    struct Alive {
        alive: u64,
    }
    Alive { alive: n }
}

export_plugin!(Hostile);
