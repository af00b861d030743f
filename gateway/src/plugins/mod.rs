//! The plugin host: retailers' WebAssembly components in wasmtime sandboxes.
//!
//! Each plugin gets its own store, limits, pseudonym space and MQTT namespace. Every call runs
//! on the pipeline's own thread, never on an async worker, and a trap in one plugin only costs
//! that plugin its instance.

mod bindings;
mod runner;
mod sandbox;

pub use runner::{CallOutcome, PluginRunner};
pub use sandbox::{Limits, Output};

use crate::config::Config;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {name}: cannot load {path}: {reason}")]
    Load {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name}: init refused to start: {reason}")]
    Init { name: String, reason: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// Every configured plugin, loaded, compiled and initialised, in configured order.
pub struct PluginSet {
    pub runners: Vec<PluginRunner>,
}

impl PluginSet {
    /// Loads all plugins from `config`. A plugin that fails to load or to init is an error:
    /// at start-up the operator must hear of it, not find a silent gap in the data later.
    pub fn load(config: &Config) -> Result<PluginSet, PluginError> {
        let limits = Limits::from_config(&config.limits);
        let engine = sandbox::engine()?;
        let linker = sandbox::linker(&engine)?;
        let mut runners = Vec::with_capacity(config.plugins.len());
        for plugin in &config.plugins {
            let path = config.plugin_path(plugin);
            let mut runner = PluginRunner::load(
                &engine,
                &linker,
                plugin.name(),
                &path,
                plugin.config_json(),
                limits.clone(),
            )?;
            runner.start(crate::pipeline::wall_ms())?;
            runners.push(runner);
        }
        Ok(PluginSet { runners })
    }
}
