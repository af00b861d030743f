//! The plugin host: retailers' WebAssembly components in wasmtime sandboxes.
//!
//! Each plugin gets its own store, limits, pseudonym space and MQTT namespace. Every call runs
//! on the pipeline's own thread, never on an async worker, and a trap in one plugin only costs
//! that plugin its instance.

pub mod artifact;
mod bindings;
mod health;
pub mod reload;
mod runner;
mod sandbox;

pub use runner::{CallOutcome, PluginRunner, PluginStatus, status_output};
pub use sandbox::{Limits, Output, OutputKind};

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

/// How to treat a plugin that cannot load or start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// `check-config`: every plugin must load and initialise.
    Strict,
    /// The daemon: report the broken plugin and run the others. A plugin whose init fails is
    /// retried with back-off; one that cannot even be compiled is left out until a restart.
    Tolerant,
}

/// Every configured plugin, loaded, compiled and initialised, in configured order.
pub struct PluginSet {
    pub runners: Vec<PluginRunner>,
    /// Status reports produced while loading, for the publisher.
    pub reports: Vec<Output>,
    /// Watches the plugin files for replacement, removal and (re)appearance.
    pub reloader: reload::Reloader,
}

impl PluginSet {
    pub fn load(config: &Config, mode: LoadMode) -> Result<PluginSet, PluginError> {
        let limits = Limits::from_config(&config.limits);
        let engine = sandbox::engine()?;
        let linker = sandbox::linker(&engine)?;
        // Pipeline time starts with the first frame; until then it is 0, which also lets a
        // plugin that failed here be retried at the first call.
        let now = 0;
        let mut runners = Vec::with_capacity(config.plugins.len());
        let mut reports = Vec::new();
        let mut watched = Vec::with_capacity(config.plugins.len());
        for plugin in &config.plugins {
            let path = config.plugin_path(plugin);
            watched.push(reload::Watched::new(
                plugin.name().to_owned(),
                path.clone(),
                plugin.config_json(),
            ));
            let loaded = PluginRunner::load(
                &engine,
                &linker,
                plugin.name(),
                &path,
                plugin.config_json(),
                limits.clone(),
            );
            let mut runner = match (loaded, mode) {
                (Ok(runner), _) => runner,
                (Err(e), LoadMode::Strict) => return Err(e),
                (Err(e), LoadMode::Tolerant) => {
                    tracing::error!("{e}; running without it");
                    let reason = e.to_string();
                    let status = PluginStatus {
                        state: "failed",
                        failures: 1,
                        traps: 0,
                        reason: Some(&reason),
                        retry_at_ms: None,
                        failed_call_us: None,
                    };
                    reports.push(status_output(plugin.name().into(), now, &status));
                    continue;
                }
            };
            let started = runner.launch(now, &mut reports);
            if mode == LoadMode::Strict {
                started?;
            }
            runners.push(runner);
        }
        let reloader = reload::Reloader::new(engine, linker, limits, watched);
        Ok(PluginSet {
            runners,
            reports,
            reloader,
        })
    }
}
