//! The sandbox: engine settings, resource limits, and the two host functions plugins may call.

use super::PluginError;
use super::bindings::{self, LogLevel, PublishError, StateError};
use super::manifest::{Manifest, StreamKind};
use super::state::{State, StateFull};
use crate::config::{Config, is_valid_name};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, StoreLimits, StoreLimitsBuilder};

/// What one plugin may use; the same for every plugin of a site for now.
#[derive(Clone, Debug)]
pub struct Limits {
    pub fuel_per_call: u64,
    pub memory_bytes: usize,
    pub max_output_bytes: u32,
    pub max_outputs_per_call: u32,
    pub max_outputs_per_stream_per_minute: u32,
    pub state_bytes: u32,
    /// The aggregation guard's minimum cell (a privacy setting, enforced here).
    pub min_cell: u32,
    /// Whether precompiled plugin files may be loaded (see `artifact`).
    pub trust_precompiled: bool,
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
            state_bytes: c.state_bytes,
            min_cell: *config.privacy.min_cell.get_ref(),
            trust_precompiled: c.trust_precompiled,
        }
    }
}

/// A stream's publish allowance: a bucket of one minute's worth, refilled by pipeline time.
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn take(&mut self, per_minute: u32, now_ms: u64) -> bool {
        let capacity = f64::from(per_minute);
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.tokens = (self.tokens + elapsed * capacity / 60_000.0).min(capacity);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

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
}

impl HostState {
    pub fn new(
        plugin: Arc<str>,
        limits: Limits,
        manifest: Arc<Manifest>,
        state: State,
    ) -> HostState {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(10_000)
            // A component is several core instances (the module plus adapter shims).
            .instances(16)
            .tables(16)
            .memories(2)
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
        }
    }

    pub fn begin_call(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.published_this_call = 0;
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
        let per_minute = self.limits.max_outputs_per_stream_per_minute;
        let now_ms = self.now_ms;
        let bucket = self
            .buckets
            .entry(stream.to_owned())
            .or_insert_with(|| Bucket {
                tokens: f64::from(per_minute),
                at_ms: now_ms,
            });
        if !bucket.take(per_minute, now_ms) {
            return Err(PublishError::RateLimited(per_minute));
        }
        if declared.kind == StreamKind::Aggregate && self.limits.min_cell > 1 {
            let mut doc: serde_json::Value =
                serde_json::from_str(&payload).map_err(|e| PublishError::NotJson(e.to_string()))?;
            super::guard::suppress_small_cells(
                &mut doc,
                declared.counts.as_deref(),
                self.limits.min_cell,
            );
            let text = serde_json::to_string(&doc).expect("a Value serialises");
            return RawValue::from_string(text).map_err(|e| PublishError::NotJson(e.to_string()));
        }
        RawValue::from_string(payload).map_err(|e| PublishError::NotJson(e.to_string()))
    }
}

impl bindings::TypesHost for HostState {}

impl bindings::Host for HostState {
    fn publish(&mut self, stream_name: String, payload: String) -> Result<(), PublishError> {
        match self.check(&stream_name, payload) {
            Ok(payload) => {
                self.published_this_call += 1;
                self.outputs.push(Output {
                    plugin: self.plugin.clone(),
                    stream: stream_name,
                    payload,
                    time_ms: self.now_ms,
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

    fn log(&mut self, level: LogLevel, message: String) {
        // Plugins never hold a raw MAC (the gate saw to that), so their text is safe to log;
        // it is still bounded so a plugin cannot flood the router's log buffer.
        let message: String = message.chars().take(512).collect();
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
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
    use super::Bucket;

    #[test]
    fn a_stream_gets_its_minute_of_messages_at_once_then_one_per_share_of_a_minute() {
        let mut b = Bucket {
            tokens: 6.0,
            at_ms: 0,
        };
        assert_eq!((0..10).filter(|_| b.take(6, 0)).count(), 6);
        // Six a minute: one more every 10 s of pipeline time, never more than six saved up.
        assert!(!b.take(6, 9_999));
        assert!(b.take(6, 10_000));
        assert_eq!((0..10).filter(|_| b.take(6, 3_600_000)).count(), 6);
    }
}
