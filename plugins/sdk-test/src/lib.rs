//! Unit-test probegate plugins natively, without the daemon.
//!
//! [`Harness`] drives a [`Plugin`] (and [`FilterHarness`] a [`Filter`]) the way the daemon
//! does (init with the config, batches, ticks, messages, stop) while a mock host answers its
//! calls. The mock checks each publish as the daemon's sandbox does with its default limits:
//! the stream must be declared in the manifest, the payload one JSON document of at most
//! 16 KiB, at most 64 publishes per call; on an `aggregate` stream, everything outside the
//! manifest's `measures` must be a count (a negative one, or a string or boolean, is refused
//! with `not-json`), and counts above 0 and below `min_cell` (default 5) become `null`. It keeps the key-value state under the daemon's
//! 64 KiB budget and records every log line. It does not model the per-minute stream rate or
//! fuel and memory limits: `probegate plugin run` runs the real component for that.
//!
//! ```ignore
//! let mut h = Harness::<Footfall>::new(include_str!("../manifest.toml"), r#"{"window_secs": 60}"#)?;
//! h.sightings(&[sighting(1, 60_000), sighting(2, 61_000)]);
//! h.tick(120_000);
//! assert_eq!(h.published_on("counts").len(), 1);
//! ```

// A harness for native tests: on wasm the daemon is the host, and there is nothing to mock.
#![cfg(not(target_arch = "wasm32"))]

use probegate_sdk::native::{Host, set_host};
use probegate_sdk::{Filter, LogLevel, Plugin, PublishError, Sighting, StateError, Verdict};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A sighting of `device` at `time_ms` in epoch 1, with no optional field filled. Fill more
/// with struct update syntax: `Sighting { signal_dbm: Some(-60), ..sighting(1, 1_000) }`.
pub fn sighting(device: u64, time_ms: u64) -> Sighting {
    Sighting {
        device,
        epoch: 1,
        time_ms,
        randomized: false,
        signal_dbm: None,
        freq_mhz: None,
        seq: None,
        ie_signature: None,
        consent_token: None,
        tags: Vec::new(),
    }
}

/// The daemon's default limits that the mock host applies.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `privacy.min_cell`: 1 turns the suppression of small counts off (the rest of the guard
    /// stays).
    pub min_cell: u32,
    pub max_output_bytes: usize,
    pub max_outputs_per_call: u32,
    pub state_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_cell: 5,
            max_output_bytes: 16 * 1024,
            max_outputs_per_call: 64,
            state_bytes: 64 * 1024,
        }
    }
}

/// One message the host accepted, as the back office would receive it in `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub stream: String,
    pub payload: Value,
    /// Pipeline time of the call that published it.
    pub time_ms: u64,
}

#[derive(serde::Deserialize)]
struct Manifest {
    kind: String,
    #[serde(default)]
    streams: BTreeMap<String, Stream>,
}

#[derive(serde::Deserialize)]
struct Stream {
    kind: String,
    /// Documentation only, as in the daemon: every member outside `measures` is a count.
    #[serde(default, rename = "counts")]
    _counts: Option<Vec<String>>,
    #[serde(default)]
    measures: Vec<String>,
}

#[derive(Default)]
struct Record {
    published: Vec<Published>,
    refused: Vec<(String, PublishError)>,
    logs: Vec<(LogLevel, String)>,
    state: BTreeMap<String, Vec<u8>>,
    now_ms: u64,
    this_call: u32,
}

/// The mock host: shared between the harness (which reads it) and the SDK (which calls it).
#[derive(Clone)]
struct MockHost {
    record: Rc<RefCell<Record>>,
    streams: Rc<BTreeMap<String, Stream>>,
    limits: Limits,
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The daemon's aggregation guard: every value outside the top-level members `measures`
/// names must be a count (a number at least 0, null, or arrays and objects of them); counts
/// above 0 and below `min_cell` become null. Anything else refuses the message.
fn suppress_small_cells(doc: &mut Value, measures: &[String], min_cell: u32) -> Result<(), String> {
    fn counts(v: &mut Value, at: &str, min_cell: u32) -> Result<(), String> {
        let not = |what: &str| {
            Err(format!(
                "not a count at \"{}\": {what} (an aggregate stream carries counts; name the member in the manifest's `measures` if it is not one)",
                if at.is_empty() { "/" } else { at }
            ))
        };
        match v {
            Value::Null => Ok(()),
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if x < 0.0 {
                    return not("a negative number");
                }
                if min_cell > 1 && x > 0.0 && x < f64::from(min_cell) {
                    *v = Value::Null;
                }
                Ok(())
            }
            Value::String(_) => not("a string"),
            Value::Bool(_) => not("a boolean"),
            Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .try_for_each(|(i, item)| counts(item, &format!("{at}/{i}"), min_cell)),
            Value::Object(members) => members
                .iter_mut()
                .try_for_each(|(name, m)| counts(m, &format!("{at}/{name}"), min_cell)),
        }
    }
    match doc {
        Value::Object(members) => members
            .iter_mut()
            .filter(|(name, _)| !measures.contains(name))
            .try_for_each(|(name, v)| counts(v, &format!("/{name}"), min_cell)),
        doc => counts(doc, "", min_cell),
    }
}

impl MockHost {
    fn check(&self, stream: &str, payload: &str) -> Result<Value, PublishError> {
        if !valid_name(stream) {
            return Err(PublishError::BadStreamName);
        }
        let Some(declared) = self.streams.get(stream) else {
            return Err(PublishError::UndeclaredStream);
        };
        if self.record.borrow().this_call >= self.limits.max_outputs_per_call {
            return Err(PublishError::RateLimited(self.limits.max_outputs_per_call));
        }
        if payload.len() > self.limits.max_output_bytes {
            return Err(PublishError::TooLarge(self.limits.max_output_bytes as u32));
        }
        let mut doc: Value =
            serde_json::from_str(payload).map_err(|e| PublishError::NotJson(e.to_string()))?;
        if declared.kind == "aggregate" {
            suppress_small_cells(&mut doc, &declared.measures, self.limits.min_cell)
                .map_err(PublishError::NotJson)?;
        }
        Ok(doc)
    }
}

impl Host for MockHost {
    fn publish(&mut self, stream: &str, payload: &str) -> Result<(), PublishError> {
        let checked = self.check(stream, payload);
        let mut r = self.record.borrow_mut();
        match checked {
            Ok(payload) => {
                r.this_call += 1;
                let time_ms = r.now_ms;
                r.published.push(Published {
                    stream: stream.to_owned(),
                    payload,
                    time_ms,
                });
                Ok(())
            }
            Err(e) => {
                r.refused.push((stream.to_owned(), e.clone()));
                Err(e)
            }
        }
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        let message: String = message.chars().take(512).collect();
        self.record.borrow_mut().logs.push((level, message));
    }

    fn now_secs(&mut self) -> u64 {
        self.record.borrow().now_ms / 1000
    }

    fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.record.borrow().state.get(key).cloned()
    }

    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), StateError> {
        if key.is_empty() || key.len() > 64 {
            return Err(StateError::BadKey);
        }
        let mut r = self.record.borrow_mut();
        let used: usize = r.state.iter().map(|(k, v)| k.len() + v.len()).sum();
        let freed = r.state.get(key).map_or(0, |v| key.len() + v.len());
        if used - freed + key.len() + value.len() > self.limits.state_bytes {
            return Err(StateError::Full(self.limits.state_bytes as u32));
        }
        r.state.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn state_delete(&mut self, key: &str) {
        self.record.borrow_mut().state.remove(key);
    }
}

/// The host side both harnesses share: the mock host, installed for this thread while the
/// harness lives, and pipeline time.
struct Core {
    host: MockHost,
}

impl Core {
    fn new(manifest: &str, kind: &str, limits: Limits) -> Result<Core, String> {
        let m: Manifest =
            toml::from_str(manifest).map_err(|e| format!("manifest: {}", e.message().trim()))?;
        if m.kind != kind {
            return Err(format!(
                "the manifest says kind = {:?}; this harness runs {kind} plugins",
                m.kind
            ));
        }
        let host = MockHost {
            record: Rc::default(),
            streams: Rc::new(m.streams),
            limits,
        };
        set_host(Some(Box::new(host.clone())));
        Ok(Core { host })
    }

    /// Starts a call at pipeline time `now_ms` (which never goes back).
    fn begin(&self, now_ms: u64) {
        let mut r = self.host.record.borrow_mut();
        r.now_ms = r.now_ms.max(now_ms);
        r.this_call = 0;
    }

    fn now_ms(&self) -> u64 {
        self.host.record.borrow().now_ms
    }

    fn record(&self) -> std::cell::Ref<'_, Record> {
        self.host.record.borrow()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        set_host(None);
    }
}

macro_rules! recorded {
    () => {
        /// Pipeline time: the latest sighting, tick or stop so far.
        pub fn now_ms(&self) -> u64 {
            self.core.now_ms()
        }

        /// Every message the host accepted, in order.
        pub fn published(&self) -> Vec<Published> {
            self.core.record().published.clone()
        }

        /// The payloads accepted on `stream`, in order.
        pub fn published_on(&self, stream: &str) -> Vec<Value> {
            let r = self.core.record();
            r.published
                .iter()
                .filter(|p| p.stream == stream)
                .map(|p| p.payload.clone())
                .collect()
        }

        /// Forgets what was published so far.
        pub fn clear_published(&mut self) {
            self.core.host.record.borrow_mut().published.clear();
        }

        /// Publishes the host refused, with the stream named and the reason; on a router each
        /// one is counted, and rolls a new bundle back.
        pub fn refused(&self) -> Vec<(String, PublishError)> {
            self.core.record().refused.clone()
        }

        /// The plugin's log lines.
        pub fn logs(&self) -> Vec<(LogLevel, String)> {
            self.core.record().logs.clone()
        }

        /// The plugin's key-value state.
        pub fn state(&self) -> BTreeMap<String, Vec<u8>> {
            self.core.record().state.clone()
        }
    };
}

/// An analytics plugin under test.
pub struct Harness<P: Plugin> {
    plugin: P,
    core: Core,
}

impl<P: Plugin> Harness<P> {
    /// Installs the mock host with the daemon's default limits, then calls `init(config)`;
    /// `manifest` is the plugin's manifest text (e.g. `include_str!("../manifest.toml")`).
    pub fn new(manifest: &str, config: &str) -> Result<Harness<P>, String> {
        Harness::with_limits(manifest, config, Limits::default())
    }

    pub fn with_limits(manifest: &str, config: &str, limits: Limits) -> Result<Harness<P>, String> {
        let core = Core::new(manifest, "analytics", limits)?;
        core.begin(0);
        let plugin = P::init(config)?;
        Ok(Harness { plugin, core })
    }

    /// Delivers a batch (in capture order); pipeline time moves to its last sighting.
    pub fn sightings(&mut self, batch: &[Sighting]) {
        self.core.begin(batch.last().map_or(0, |s| s.time_ms));
        self.plugin.on_sightings(batch);
    }

    pub fn tick(&mut self, now_ms: u64) {
        self.core.begin(now_ms);
        self.plugin.on_tick(self.core.now_ms());
    }

    pub fn message(&mut self, topic: &str, payload: &str) {
        self.core.begin(0);
        self.plugin.on_message(topic, payload);
    }

    pub fn stop(&mut self) {
        self.core.begin(0);
        self.plugin.on_stop(self.core.now_ms());
    }

    pub fn plugin(&mut self) -> &mut P {
        &mut self.plugin
    }

    recorded!();
}

/// A filter under test.
pub struct FilterHarness<F: Filter> {
    filter: F,
    core: Core,
}

impl<F: Filter> FilterHarness<F> {
    /// As [`Harness::new`], for a filter.
    pub fn new(manifest: &str, config: &str) -> Result<FilterHarness<F>, String> {
        let core = Core::new(manifest, "filter", Limits::default())?;
        core.begin(0);
        let filter = F::init(config)?;
        Ok(FilterHarness { filter, core })
    }

    /// The verdicts for `batch`; panics, as the daemon would count a fault, if there is not
    /// exactly one per sighting.
    pub fn filter(&mut self, batch: &[Sighting]) -> Vec<Verdict> {
        self.core.begin(batch.last().map_or(0, |s| s.time_ms));
        let verdicts = self.filter.filter(batch);
        assert_eq!(
            verdicts.len(),
            batch.len(),
            "a filter must return one verdict per sighting: the daemon drops the whole batch otherwise"
        );
        verdicts
    }

    pub fn tick(&mut self, now_ms: u64) {
        self.core.begin(now_ms);
        self.filter.on_tick(self.core.now_ms());
    }

    pub fn message(&mut self, topic: &str, payload: &str) {
        self.core.begin(0);
        self.filter.on_message(topic, payload);
    }

    pub fn stop(&mut self) {
        self.core.begin(0);
        self.filter.on_stop(self.core.now_ms());
    }

    recorded!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use probegate_sdk::{log, now_secs, publish, state};

    /// Counts devices; logs at init; keeps a total in state.
    struct Devices(std::collections::HashSet<u64>);

    impl Plugin for Devices {
        fn init(config: &str) -> Result<Self, String> {
            if config.contains("refuse") {
                return Err("refused".into());
            }
            log(LogLevel::Info, "started");
            Ok(Devices(Default::default()))
        }
        fn on_sightings(&mut self, batch: &[Sighting]) {
            self.0.extend(batch.iter().map(|s| s.device));
        }
        fn on_stop(&mut self, now_ms: u64) {
            let n = self.0.len();
            let _ = publish("counts", &serde_json::json!({"devices": n, "at": now_ms}));
            let _ = state::set_json("total", &n);
            let e = publish("elsewhere", &1);
            assert!(matches!(e, Err(PublishError::UndeclaredStream)));
            assert_eq!(now_secs(), now_ms / 1000);
        }
    }

    const MANIFEST: &str = r#"
        name = "devices"
        version = "1.0.0"
        kind = "analytics"
        interface = "0.2"
        [streams.counts]
        kind = "aggregate"
        counts = ["devices"]
        measures = ["at"]
    "#;

    #[test]
    fn publishes_logs_and_state_are_recorded_and_small_counts_suppressed() {
        let mut h = Harness::<Devices>::new(MANIFEST, "{}").unwrap();
        h.sightings(&[sighting(1, 5_000), sighting(2, 6_000), sighting(1, 7_000)]);
        h.stop();
        assert_eq!(h.logs(), vec![(LogLevel::Info, "started".to_owned())]);
        let counts = h.published_on("counts");
        // Two devices, below min_cell 5: null, as the daemon publishes it. `at` is no count.
        assert_eq!(
            counts,
            vec![serde_json::json!({"devices": null, "at": 7_000})]
        );
        assert_eq!(h.refused().len(), 1);
        assert_eq!(h.state()["total"], b"2");
    }

    #[test]
    fn min_cell_1_turns_the_guard_off_and_init_errors_come_back() {
        let limits = Limits {
            min_cell: 1,
            ..Limits::default()
        };
        let mut h = Harness::<Devices>::with_limits(MANIFEST, "{}", limits).unwrap();
        h.sightings(&[sighting(1, 5_000)]);
        h.stop();
        assert_eq!(h.published_on("counts")[0]["devices"], 1);
        drop(h);
        assert_eq!(
            Harness::<Devices>::new(MANIFEST, "refuse").err(),
            Some("refused".into())
        );
        let filter_manifest = MANIFEST.replace("analytics", "filter");
        assert!(Harness::<Devices>::new(&filter_manifest, "{}").is_err());
    }
}
