//! The sandbox: engine settings, resource limits, and the two host functions plugins may call.

use super::PluginError;
use super::bindings::{self, LogLevel, PublishError, StateError};
use super::manifest::{Manifest, StreamKind};
use super::state::{State, StateFull};
use crate::config::{Config, is_valid_name};
use crate::untrusted::Escaped;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, StoreLimits, StoreLimitsBuilder};

/// What one plugin may use: the site's `[limits]`, with the instance, table and memory
/// counts its `[[plugin]]` table may raise up to the site's maximum.
#[derive(Clone, Debug)]
pub struct Limits {
    pub fuel_per_call: u64,
    pub memory_bytes: usize,
    pub max_output_bytes: u32,
    pub max_outputs_per_call: u32,
    pub max_outputs_per_stream_per_minute: u32,
    /// Across all the plugin's streams.
    pub max_outputs_per_minute: u32,
    pub max_output_bytes_per_minute: u32,
    /// Log lines per minute of wall time (the log is read in wall time).
    pub log_lines_per_minute: u32,
    pub state_bytes: u32,
    /// Core instances, tables and memories one component may create (a component is
    /// several core instances: the module, adapter shims, a language's runtime).
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
    /// The aggregation guard's minimum cell (a privacy setting, enforced here).
    pub min_cell: u32,
    /// Whether precompiled plugin files may be loaded (see `artifact`).
    pub trust_precompiled: bool,
}

/// A plugin's own instance, table and memory counts (`[[plugin]] limits`), already checked
/// against the site's maximum; `None` keeps the site's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceLimits {
    pub instances: Option<u32>,
    pub tables: Option<u32>,
    pub memories: Option<u32>,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        let c = &config.limits;
        Limits {
            fuel_per_call: c.fuel_per_call,
            memory_bytes: (c.memory_mib as usize) << 20,
            max_output_bytes: *c.max_output_bytes.get_ref(),
            max_outputs_per_call: c.max_outputs_per_call,
            max_outputs_per_stream_per_minute: c.max_outputs_per_stream_per_minute.max(1),
            max_outputs_per_minute: c.max_outputs_per_minute.max(1),
            max_output_bytes_per_minute: *c.max_output_bytes_per_minute.get_ref(),
            log_lines_per_minute: c.log_lines_per_minute,
            state_bytes: c.state_bytes,
            instances: *c.instances.get_ref() as usize,
            tables: *c.tables.get_ref() as usize,
            memories: *c.memories.get_ref() as usize,
            min_cell: *config.privacy.min_cell.get_ref(),
            trust_precompiled: c.trust_precompiled,
        }
    }

    /// These limits with one plugin's own counts.
    pub fn with(&self, own: InstanceLimits) -> Limits {
        let pick = |own: Option<u32>, site: usize| own.map_or(site, |n| n as usize);
        Limits {
            instances: pick(own.instances, self.instances),
            tables: pick(own.tables, self.tables),
            memories: pick(own.memories, self.memories),
            ..self.clone()
        }
    }
}

/// An allowance refilled with time: `per_minute` units a minute, never more than a minute's
/// worth saved up, and a full minute's worth at first.
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn full(per_minute: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, per_minute: u32, now_ms: u64) {
        let capacity = f64::from(per_minute);
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.tokens = (self.tokens + elapsed * capacity / 60_000.0).min(capacity);
        self.at_ms = self.at_ms.max(now_ms);
    }

    fn take(&mut self, per_minute: u32, now_ms: u64) -> bool {
        self.take_n(1, per_minute, now_ms)
    }

    fn take_n(&mut self, n: u64, per_minute: u32, now_ms: u64) -> bool {
        self.refill(per_minute, now_ms);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// What a plugin may still publish and log. Its runner keeps it across instances, so a
/// plugin that traps and restarts does not start with a fresh allowance each time.
#[derive(Default)]
pub struct Budget {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    log: Option<Bucket>,
    /// Log lines refused and not yet reported.
    suppressed: u64,
    /// When suppressed lines were last reported (wall ms).
    reported_at_ms: u64,
    /// The pseudonyms and sighting times the plugin was lately handed, which only its
    /// per-device streams may carry.
    pub recent: super::guard::Recent,
}

impl Budget {
    /// Takes one message of `bytes` from the plugin's allowance (pipeline time), or says
    /// which limit it would break.
    fn publish(&mut self, bytes: usize, limits: &Limits, now_ms: u64) -> Result<(), u32> {
        let (per_minute, bytes_per_minute) = (
            limits.max_outputs_per_minute,
            limits.max_output_bytes_per_minute,
        );
        let messages = self
            .messages
            .get_or_insert_with(|| Bucket::full(per_minute, now_ms));
        messages.refill(per_minute, now_ms);
        if messages.tokens < 1.0 {
            return Err(per_minute);
        }
        let volume = self
            .bytes
            .get_or_insert_with(|| Bucket::full(bytes_per_minute, now_ms));
        if !volume.take_n(bytes as u64, bytes_per_minute, now_ms) {
            return Err(bytes_per_minute);
        }
        messages.tokens -= 1.0;
        Ok(())
    }

    /// Whether one more log line may be written now (wall time); `Some(n)` with the lines
    /// suppressed before it.
    fn log_line(&mut self, per_minute: u32) -> Option<u64> {
        let now_ms = wall_ms();
        let bucket = self
            .log
            .get_or_insert_with(|| Bucket::full(per_minute, now_ms));
        if bucket.take(per_minute, now_ms) {
            self.reported_at_ms = now_ms;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Budget {
    /// Log lines suppressed and not yet reported, when a report is due: a minute after the
    /// last one, or now (`now`: the plugin stops). A flood that never pauses is still told.
    pub fn suppressed_report(&mut self, now: bool) -> Option<u64> {
        // Asked after every plugin call: the clock only when there is something to report.
        if self.suppressed == 0 || !(now || wall_ms() >= self.reported_at_ms + 60_000) {
            return None;
        }
        self.reported_at_ms = wall_ms();
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Milliseconds since the first call: the clock of log allowances.
fn wall_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Log calls one plugin call may make, and their bytes, before the host stops the call as a
/// flood (a trap: the plugin backs off). Lines beyond the rate limit are dropped, but each
/// call still costs the host a copy of the text.
pub const MAX_LOG_CALLS_PER_CALL: u32 = 1_000;
pub const MAX_LOG_BYTES_PER_CALL: usize = 1 << 20;
/// A log line's message is cut to this many bytes.
pub const MAX_LOG_LINE: usize = 512;

/// One message for the back office, checked and ready for the envelope.
#[derive(Debug)]
pub struct Output {
    pub plugin: Arc<str>,
    pub stream: String,
    pub payload: Box<RawValue>,
    /// Pipeline time when it was published.
    pub time_ms: u64,
    pub kind: OutputKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Published by the plugin to one of its streams.
    Stream,
    /// The host's report on the plugin's health: retained, on a topic no plugin can name.
    PluginStatus,
    /// The outcome of a bundle install (`.../bundles/result`).
    BundleResult,
    /// The installed plugin set, retained (`.../plugins-installed`).
    Installed,
}

/// The data a plugin's store carries: its limits and what it published during the call.
pub struct HostState {
    pub plugin: Arc<str>,
    pub limits: Limits,
    pub manifest: Arc<Manifest>,
    pub store_limits: StoreLimits,
    pub outputs: Vec<Output>,
    pub refused: u64,
    pub last_refusal: Option<&'static str>,
    pub now_ms: u64,
    /// The plugin's key-value state; the runner keeps it when an instance is discarded.
    pub state: State,
    published_this_call: u32,
    buckets: HashMap<String, Bucket>,
    budget: Arc<Mutex<Budget>>,
    log_calls: u32,
    log_bytes: usize,
}

impl HostState {
    pub fn new(
        plugin: Arc<str>,
        limits: Limits,
        manifest: Arc<Manifest>,
        state: State,
        budget: Arc<Mutex<Budget>>,
    ) -> HostState {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(TABLE_ELEMENTS)
            .instances(limits.instances)
            .tables(limits.tables)
            .memories(limits.memories)
            .build();
        HostState {
            plugin,
            limits,
            store_limits,
            manifest,
            outputs: Vec::new(),
            refused: 0,
            last_refusal: None,
            now_ms: 0,
            state,
            published_this_call: 0,
            buckets: HashMap::new(),
            budget,
            log_calls: 0,
            log_bytes: 0,
        }
    }

    pub fn begin_call(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.published_this_call = 0;
        self.log_calls = 0;
        self.log_bytes = 0;
    }

    fn check(&mut self, stream: &str, payload: String) -> Result<Box<RawValue>, PublishError> {
        if !is_valid_name(stream) {
            return Err(PublishError::BadStreamName);
        }
        let Some(declared) = self.manifest.streams.get(stream) else {
            return Err(PublishError::UndeclaredStream);
        };
        if self.published_this_call >= self.limits.max_outputs_per_call {
            return Err(PublishError::RateLimited(self.limits.max_outputs_per_call));
        }
        if payload.len() > self.limits.max_output_bytes as usize {
            return Err(PublishError::TooLarge(self.limits.max_output_bytes));
        }
        let now_ms = self.now_ms;
        // The plugin's allowance across all its streams first: a plugin with many streams
        // gets no more room than one with a single stream.
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .publish(payload.len(), &self.limits, now_ms)
            .map_err(PublishError::RateLimited)?;
        let per_minute = self.limits.max_outputs_per_stream_per_minute;
        let bucket = self
            .buckets
            .entry(stream.to_owned())
            .or_insert_with(|| Bucket::full(per_minute, now_ms));
        if !bucket.take(per_minute, now_ms) {
            return Err(PublishError::RateLimited(per_minute));
        }
        if declared.kind == StreamKind::PerDevice {
            return RawValue::from_string(payload)
                .map_err(|e| PublishError::NotJson(e.to_string()));
        }
        // Any other stream is about groups or the store: it must not carry what names one
        // device or one sighting, whatever the site's minimum cell.
        let mut doc: serde_json::Value =
            serde_json::from_str(&payload).map_err(|e| PublishError::NotJson(e.to_string()))?;
        super::guard::refuse_per_device_values(
            &doc,
            &self.budget.lock().unwrap_or_else(|e| e.into_inner()).recent,
        )
        .map_err(PublishError::NotJson)?;
        if declared.kind == StreamKind::Aggregate {
            super::guard::suppress_small_cells(&mut doc, &declared.measures, self.limits.min_cell)
                .map_err(PublishError::NotJson)?;
            let text = serde_json::to_string(&doc).expect("a Value serialises");
            return RawValue::from_string(text).map_err(|e| PublishError::NotJson(e.to_string()));
        }
        RawValue::from_string(payload).map_err(|e| PublishError::NotJson(e.to_string()))
    }
}

/// Elements of one table, at most (function tables of large components run to thousands).
const TABLE_ELEMENTS: usize = 10_000;

impl bindings::TypesHost for HostState {}

impl bindings::Host for HostState {
    fn publish(&mut self, stream_name: String, payload: String) -> Result<(), PublishError> {
        match self.check(&stream_name, payload) {
            Ok(payload) => {
                self.published_this_call += 1;
                // Only a per-device stream's envelope tells the millisecond; any other says
                // the whole second, so its time cannot single out a sighting.
                let per_device = self
                    .manifest
                    .streams
                    .get(&stream_name)
                    .is_some_and(|s| s.kind == StreamKind::PerDevice);
                let time_ms = match per_device {
                    true => self.now_ms,
                    false => self.now_ms - self.now_ms % 1000,
                };
                self.outputs.push(Output {
                    plugin: self.plugin.clone(),
                    stream: stream_name,
                    payload,
                    time_ms,
                    kind: OutputKind::Stream,
                });
                Ok(())
            }
            Err(e) => {
                // Counted here, logged (rate-limited) by the runner: a plugin that floods
                // refused publishes must not flood the log too.
                self.refused += 1;
                self.last_refusal = Some(refusal_label(&e));
                Err(e)
            }
        }
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_calls += 1;
        self.log_bytes += message.len();
        if self.log_calls > MAX_LOG_CALLS_PER_CALL || self.log_bytes > MAX_LOG_BYTES_PER_CALL {
            return Err(wasmtime::Error::msg(format!(
                "log flood: more than {MAX_LOG_CALLS_PER_CALL} log calls or {MAX_LOG_BYTES_PER_CALL} bytes in one call"
            )));
        }
        let enabled = match level {
            LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return Ok(());
        }
        let plugin = &*self.plugin;
        let allowed = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_line(self.limits.log_lines_per_minute);
        let Some(suppressed) = allowed else {
            return Ok(());
        };
        if suppressed > 0 {
            tracing::warn!(
                plugin,
                suppressed,
                "plugin log lines suppressed (over limits.log_lines_per_minute)"
            );
        }
        // Plugins never hold a raw MAC (the gate saw to that), so their text may be logged;
        // escaped, so a line break in it cannot start a line of its own making.
        let message = Escaped::bounded(&message, MAX_LOG_LINE);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    fn now_secs(&mut self) -> u64 {
        self.now_ms / 1000
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).map(<[u8]>::to_vec)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), StateError> {
        if key.is_empty() || key.len() > 64 {
            return Err(StateError::BadKey);
        }
        self.state
            .set(key, value, self.limits.state_bytes as usize)
            .map_err(|StateFull| StateError::Full(self.limits.state_bytes))
    }

    fn state_delete(&mut self, key: String) {
        self.state.delete(&key);
    }
}

fn refusal_label(e: &PublishError) -> &'static str {
    match e {
        PublishError::BadStreamName => "bad_stream_name",
        PublishError::UndeclaredStream => "undeclared_stream",
        PublishError::NotJson(why) if why.starts_with(super::guard::NOT_A_COUNT) => "not_a_count",
        PublishError::NotJson(why) if why.starts_with(super::guard::PER_DEVICE_VALUE) => {
            "per_device_value"
        }
        PublishError::NotJson(_) => "not_json",
        PublishError::TooLarge(_) => "too_large",
        PublishError::RateLimited(_) => "rate_limited",
    }
}

pub fn engine() -> Result<Engine, PluginError> {
    let config = super::artifact::engine_config(None).map_err(PluginError::Engine)?;
    Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))
}

pub fn linker(engine: &Engine) -> Result<Linker<HostState>, PluginError> {
    let mut linker = Linker::new(engine);
    // Both worlds import the same interfaces, so one set of definitions serves both kinds.
    bindings::analytics::Analytics::add_to_linker::<HostState, HasSelf<HostState>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| PluginError::Engine(e.to_string()))?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::{Bucket, Budget, Limits};

    #[test]
    fn a_stream_gets_its_minute_of_messages_at_once_then_one_per_share_of_a_minute() {
        let mut b = Bucket::full(6, 0);
        assert_eq!((0..10).filter(|_| b.take(6, 0)).count(), 6);
        // Six a minute: one more every 10 s of pipeline time, never more than six saved up.
        assert!(!b.take(6, 9_999));
        assert!(b.take(6, 10_000));
        assert_eq!((0..10).filter(|_| b.take(6, 3_600_000)).count(), 6);
    }

    fn limits(per_minute: u32, bytes_per_minute: u32) -> Limits {
        Limits {
            fuel_per_call: 1,
            memory_bytes: 1,
            max_output_bytes: 100,
            max_outputs_per_call: 64,
            max_outputs_per_stream_per_minute: 120,
            max_outputs_per_minute: per_minute,
            max_output_bytes_per_minute: bytes_per_minute,
            log_lines_per_minute: 60,
            state_bytes: 1,
            instances: 16,
            tables: 16,
            memories: 2,
            min_cell: 1,
            trust_precompiled: false,
        }
    }

    #[test]
    fn a_plugins_allowance_spans_all_its_streams_in_messages_and_bytes() {
        let mut b = Budget::default();
        let l = limits(10, 1_000);
        assert_eq!((0..20).filter(|_| b.publish(10, &l, 0).is_ok()).count(), 10);
        assert_eq!(b.publish(10, &l, 0), Err(10));
        // Six seconds give one message back; bytes run out before messages do.
        assert!(b.publish(10, &l, 6_000).is_ok());
        let mut b = Budget::default();
        assert!(b.publish(600, &l, 0).is_ok());
        assert_eq!(b.publish(600, &l, 0), Err(1_000), "the bytes ran out");
        assert!(b.publish(400, &l, 0).is_ok(), "a refusal costs no message");
    }

    #[test]
    fn log_lines_beyond_the_rate_are_counted_and_the_next_line_says_how_many() {
        let mut b = Budget::default();
        assert_eq!((0..100).filter(|_| b.log_line(60).is_some()).count(), 60);
        assert_eq!(b.suppressed, 40);
    }
}
