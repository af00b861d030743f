//! Publishes, on every tick, the (pseudonym, epoch) pairs it was handed since the last one,
//! and how many sightings carried each optional field: what a plugin sees of devices, made
//! visible for the privacy tests. Never deploy it.

use probegate_sdk::{Plugin, Sighting, export_plugin, publish};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Default)]
struct Echo {
    seen: BTreeSet<(u64, u32)>,
    fields: Fields,
}

/// Sightings that carried each optional field, since the last tick.
#[derive(Default, Serialize, PartialEq)]
struct Fields {
    sightings: u64,
    signal: u64,
    frequency: u64,
    sequence: u64,
    ie_signature: u64,
    consent_token: u64,
    tagged: u64,
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
        let f = &mut self.fields;
        for s in batch {
            f.sightings += 1;
            f.signal += u64::from(s.signal_dbm.is_some());
            f.frequency += u64::from(s.freq_mhz.is_some());
            f.sequence += u64::from(s.seq.is_some());
            f.ie_signature += u64::from(s.ie_signature.is_some());
            f.consent_token += u64::from(s.consent_token.is_some());
            f.tagged += u64::from(!s.tags.is_empty());
        }
    }

    fn on_stop(&mut self, now_ms: u64) {
        self.on_tick(now_ms);
    }

    fn on_tick(&mut self, _now_ms: u64) {
        if !self.seen.is_empty() {
            let _ = publish("seen", &Seen { seen: &self.seen });
            self.seen.clear();
        }
        if self.fields.sightings > 0 {
            let _ = publish("fields", &self.fields);
            self.fields = Fields::default();
        }
    }
}

export_plugin!(Echo);
