//! A plugin that misbehaves on purpose, as its config says, so tests can prove the host
//! contains it. Config: `{ act = "...", on = "init" | "sightings" | "tick" }` where act is
//! - `trap`: panic (a wasm trap);
//! - `spin`: loop forever (fuel must stop it);
//! - `memory-bomb`: allocate until memory runs out (the memory limit must stop it);
//! - `huge-alloc`: ask for 1 GiB at once;
//! - `recurse`: recurse without end (the wasm stack limit must stop it);
//! - `flood`: publish 100,000 messages in one call (the per-call limit must refuse them);
//! - `escape`: publish to stream names that try to leave the plugin's topic namespace;
//! - `stream-flood`: publish `count` (default 64) messages to each of its 100 streams `s0`..`s99`;
//! - `log-flood`: write `count` (default 100,000) log lines in one call;
//! - `log-forge`: log a message whose line breaks and escape codes try to forge daemon lines;
//! - `init-error` (on `init`): refuse to start with a 4 MiB error.
//! - `bad-counts`: publish, once, to its aggregate stream `agg` what the aggregation guard must
//!   refuse or fix (a negative count, a count in a string, a boolean, a small count in a member
//!   the manifest does not name) and one good message; it logs each refusal's reason.
//!
//! - `time-leak` (on `sightings`): try to make its output joinable with another plugin's:
//!   publish `{"n": sightings, "at": now_secs}` to `s0` during its first 50 deliveries of sightings (so the
//!   envelope's time would be the batch's), and on every tick (instead of the heartbeat) publish what it was handed since, as
//!   `{"t": [time_ms, ...], "d": [pseudonym, ...]}` on `flood`, 100 sightings a message; the
//!   first refusal's reason goes to the log.
//!
//! `count` also sets how many messages `flood` publishes per call (default 100,000).
//!
//! When it is not misbehaving it publishes `{"alive": n}` to stream `heartbeat` on each tick,
//! so a test can tell a contained plugin from a dead one.

use probegate_sdk::{LogLevel, Plugin, Sighting, export_plugin, log, parse_config, publish};
use serde::{Deserialize, Serialize};
use std::hint::black_box;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    act: String,
    on: String,
    #[serde(default)]
    count: Option<u64>,
}

/// What `log-forge` writes: a line break, then what a daemon line looks like, then escape
/// codes that would clear a terminal and colour the rest.
pub const FORGED: &str =
    "harmless\nFORGED  INFO probegate::bundle::install: installed plugin=evil\r\x1b[2J\x1b[31mred";

/// What `bad-counts` publishes to `agg` (manifest: `counts = ["visitors"]`, `measures =
/// ["start_ms"]`): refused, refused, refused, published with `hidden` as null, published as is.
pub const BAD_COUNTS: [&str; 5] = [
    r#"{"start_ms":3,"visitors":-3}"#,
    r#"{"start_ms":3,"visitors":"2"}"#,
    r#"{"start_ms":3,"visitors":10,"flag":true}"#,
    r#"{"start_ms":3,"visitors":10,"hidden":{"deep":[2]}}"#,
    r#"{"start_ms":3,"visitors":7}"#,
];

struct Hostile {
    config: Config,
    ticks: u64,
    /// `time-leak`: the sightings handed since the last tick, as (time, pseudonym).
    leak: Vec<(u64, u64)>,
    told: bool,
    deliveries: u32,
}

/// `time-leak`'s message during a delivery: how many sightings, and the pipeline second.
#[derive(Serialize)]
struct During {
    n: usize,
    at: u64,
}

#[derive(Serialize)]
struct Leak {
    t: Vec<u64>,
    d: Vec<u64>,
}

#[derive(Serialize)]
struct Alive {
    alive: u64,
}

fn recurse(depth: u64) -> u64 {
    // The array keeps each frame large, and black_box stops the optimiser from looping it.
    // The exit is one no run can reach, so the recursion only ends at the stack limit.
    let frame = black_box([depth; 16]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + frame[(depth % 16) as usize]
}

fn misbehave(act: &str, count: Option<u64>) {
    match act {
        "trap" => panic!("hostile plugin traps as configured"),
        "spin" => {
            let mut x: u64 = 1;
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "huge-alloc" => {
            black_box(Vec::<u8>::with_capacity(1 << 30));
        }
        "recurse" => {
            black_box(recurse(0));
        }
        "flood" => {
            for i in 0..count.unwrap_or(100_000) {
                let _ = publish("flood", &Alive { alive: i });
            }
        }
        "stream-flood" => {
            for s in 0..100 {
                let stream = format!("s{s}");
                for i in 0..count.unwrap_or(64) {
                    let _ = publish(&stream, &Alive { alive: i });
                }
            }
        }
        "log-flood" => {
            for i in 0..count.unwrap_or(100_000) {
                log(
                    LogLevel::Warn,
                    &format!("flooding the log, line {i}, with some padding to make it long"),
                );
            }
        }
        "log-forge" => log(LogLevel::Warn, FORGED),
        "escape" => {
            for stream in [
                "../status",
                "a/b",
                "#",
                "+",
                "",
                "UPPER",
                "$SYS",
                // A valid name the manifest does not declare.
                "sneaky",
                "x".repeat(40).as_str(),
            ] {
                let _ = publish(stream, &Alive { alive: 0 });
            }
        }
        "bad-counts" => {
            for doc in BAD_COUNTS {
                let sent = probegate_sdk::bindings::probegate::plugin::host::publish("agg", doc);
                if let Err(probegate_sdk::PublishError::NotJson(why)) = sent {
                    log(LogLevel::Warn, &format!("agg refused: {why}"));
                }
            }
        }
        other => panic!("unknown act {other}"),
    }
}

impl Hostile {
    fn at(&self, when: &str) {
        if self.config.on == when {
            misbehave(&self.config.act, self.config.count);
        }
    }
}

impl Plugin for Hostile {
    fn init(config: &str) -> Result<Self, String> {
        let me = Hostile {
            config: parse_config(config)?,
            ticks: 0,
            leak: Vec::new(),
            told: false,
            deliveries: 0,
        };
        if me.config.act == "init-error" {
            return Err("e".repeat(4 << 20));
        }
        me.at("init");
        Ok(me)
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        if self.config.act == "time-leak" {
            self.leak
                .extend(batch.iter().map(|s| (s.time_ms, s.device)));
            // A few are enough to show where their time goes; thousands would only swamp
            // the test's subscriber.
            if self.deliveries < 50 {
                self.deliveries += 1;
                let at = probegate_sdk::now_secs();
                let _ = publish("s0", &During { n: batch.len(), at });
            }
            return;
        }
        self.at("sightings");
    }

    fn on_tick(&mut self, _now_ms: u64) {
        if self.config.act == "time-leak" {
            for chunk in std::mem::take(&mut self.leak).chunks(100) {
                let (t, d) = chunk.iter().copied().unzip();
                if let Err(e) = publish("flood", &Leak { t, d })
                    && !std::mem::replace(&mut self.told, true)
                {
                    log(LogLevel::Warn, &format!("time-leak refused: {e:?}"));
                }
            }
            return;
        }
        self.at("tick");
        self.ticks += 1;
        let _ = publish("heartbeat", &Alive { alive: self.ticks });
    }
}

export_plugin!(Hostile);
