//! A test filter that judges by a rule from its config, or fails on command: the chain and
//! fail-closed tests use it. Never deploy it.
//!
//! `act`: "drop-universal" (drop devices with factory addresses), "tag-randomized" (tag the
//! others "randomized"), "trap" (panic on every batch), "short" (answer one verdict too few).

use probegate_sdk::{Filter, Sighting, Verdict, export_filter, parse_config};
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    act: String,
}

struct Gatekeeper {
    act: String,
}

impl Filter for Gatekeeper {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        match config.act.as_str() {
            "drop-universal" | "tag-randomized" | "trap" | "short" => {
                Ok(Gatekeeper { act: config.act })
            }
            other => Err(format!("unknown act {other:?}")),
        }
    }

    fn filter(&mut self, batch: &[Sighting]) -> Vec<Verdict> {
        match self.act.as_str() {
            "drop-universal" => batch
                .iter()
                .map(|s| match s.randomized {
                    true => Verdict::Pass,
                    false => Verdict::Drop,
                })
                .collect(),
            "tag-randomized" => batch
                .iter()
                .map(|s| match s.randomized {
                    true => Verdict::Tag(vec!["randomized".into()]),
                    false => Verdict::Pass,
                })
                .collect(),
            "trap" => panic!("gatekeeper told to trap"),
            _ => vec![Verdict::Pass; batch.len().saturating_sub(1)],
        }
    }
}

export_filter!(Gatekeeper);
