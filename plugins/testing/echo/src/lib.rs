//! Publishes, on every tick, the (pseudonym, epoch) pairs it was handed since the last one:
//! what a plugin sees of devices, made visible for the privacy tests. Never deploy it.

use probegate_sdk::{Plugin, Sighting, export_plugin, publish};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Default)]
struct Echo {
    seen: BTreeSet<(u64, u32)>,
}

#[derive(Serialize)]
struct Seen<'a> {
    seen: &'a BTreeSet<(u64, u32)>,
}

impl Plugin for Echo {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Echo::default())
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        self.seen.extend(batch.iter().map(|s| (s.device, s.epoch)));
    }

    fn on_tick(&mut self, _now_ms: u64) {
        if !self.seen.is_empty() {
            let _ = publish("seen", &Seen { seen: &self.seen });
            self.seen.clear();
        }
    }
}

export_plugin!(Echo);
