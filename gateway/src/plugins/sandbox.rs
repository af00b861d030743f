//! The sandbox: engine settings, resource limits, and the two host functions plugins may call.

use super::PluginError;
use super::bindings::{self, LogLevel, PublishError};
use crate::config::{LimitsConfig, is_valid_name};
use serde_json::value::RawValue;
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
    /// Whether precompiled plugin files may be loaded (see `artifact`).
    pub trust_precompiled: bool,
}

impl Limits {
    pub fn from_config(c: &LimitsConfig) -> Limits {
        Limits {
            fuel_per_call: c.fuel_per_call,
            memory_bytes: (c.memory_mib as usize) << 20,
            max_output_bytes: *c.max_output_bytes.get_ref(),
            max_outputs_per_call: c.max_outputs_per_call,
            trust_precompiled: c.trust_precompiled,
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
}

/// The data a plugin's store carries: its limits and what it published during the call.
pub struct HostState {
    pub plugin: Arc<str>,
    pub limits: Limits,
    pub store_limits: StoreLimits,
    pub outputs: Vec<Output>,
    pub refused: u64,
    pub last_refusal: Option<&'static str>,
    pub now_ms: u64,
    published_this_call: u32,
}

impl HostState {
    pub fn new(plugin: Arc<str>, limits: Limits) -> HostState {
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
            outputs: Vec::new(),
            refused: 0,
            last_refusal: None,
            now_ms: 0,
            published_this_call: 0,
        }
    }

    pub fn begin_call(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.published_this_call = 0;
    }

    fn check(&self, stream: &str, payload: String) -> Result<Box<RawValue>, PublishError> {
        if !is_valid_name(stream) {
            return Err(PublishError::BadStreamName);
        }
        if self.published_this_call >= self.limits.max_outputs_per_call {
            return Err(PublishError::RateLimited(self.limits.max_outputs_per_call));
        }
        if payload.len() > self.limits.max_output_bytes as usize {
            return Err(PublishError::TooLarge(self.limits.max_output_bytes));
        }
        RawValue::from_string(payload).map_err(|e| PublishError::NotJson(e.to_string()))
    }
}

impl bindings::probegate::plugin::types::Host for HostState {}

impl bindings::probegate::plugin::host::Host for HostState {
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
}

fn refusal_label(e: &PublishError) -> &'static str {
    match e {
        PublishError::BadStreamName => "bad_stream_name",
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
    bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(|e| PluginError::Engine(e.to_string()))?;
    Ok(linker)
}
