//! The plugin host: retailers' WebAssembly components in wasmtime sandboxes.
//!
//! Each plugin gets its own store, limits, pseudonym space and MQTT namespace. Every call runs
//! on the pipeline's own thread, never on an async worker, and a trap in one plugin only costs
//! that plugin its instance.

pub mod artifact;
mod bindings;
mod guard;
mod health;
mod latest;
mod lower;
pub mod manifest;
pub mod reload;
mod runner;
mod sandbox;
mod state;

pub use bindings::Verdict;
pub use manifest::Kind;
pub use runner::{CallOutcome, Delivery, PluginRunner, PluginStatus, status_output};
pub use sandbox::{InstanceLimits, Limits, Output, OutputKind};

use crate::config::Config;
use crate::untrusted::Escaped;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {name}: cannot load {path}: {reason}")]
    Load {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("plugin {name}: not loaded: {reason}")]
    Refused { name: String, reason: String },
    #[error("plugin {name}: init refused to start: {reason}")]
    Init { name: String, reason: String },
    /// A fault that another attempt would only repeat (the component cannot be
    /// instantiated within its limits, or its init refused its config): not retried until
    /// the plugin's file or the daemon's config changes.
    #[error("plugin {name}: {reason} (not retried until the plugin or its config changes)")]
    Failed { name: String, reason: String },
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
        let limits = Limits::from_config(config);
        let engine = sandbox::engine()?;
        let linker = sandbox::linker(&engine)?;
        // Pipeline time starts with the first frame; until then it is 0, which also lets a
        // plugin that failed here be retried at the first call.
        let now = 0;
        let mut watched: Vec<reload::Watched> = config
            .plugins
            .iter()
            .map(|plugin| {
                reload::Watched::new(
                    plugin.name().to_owned(),
                    config.plugin_path(plugin),
                    plugin.config_json(),
                    plugin.granted(),
                    plugin.instance_limits(),
                )
            })
            .collect();
        let dir = config.plugin_dir();
        if let Some(dir) = &dir {
            watched.extend(reload::discover(dir, &watched));
        }
        let mut runners = Vec::with_capacity(watched.len());
        let mut reports = Vec::new();
        let mut compiled = runner::Compiled::default();
        for w in &watched {
            let loaded = PluginRunner::load_sharing(
                &engine,
                &linker,
                &w.name,
                &w.path,
                w.config_json.clone(),
                limits.with(w.own_limits),
                &w.granted,
                &mut compiled,
            );
            let mut runner = match (loaded, mode) {
                (Ok(runner), _) => runner,
                (Err(e), LoadMode::Strict) => return Err(e),
                (Err(e), LoadMode::Tolerant) => {
                    let reason = e.to_string();
                    tracing::error!("{}; running without it", Escaped::bounded(&reason, 2048));
                    let status = PluginStatus {
                        state: "failed",
                        failures: 1,
                        traps: 0,
                        reason: Some(&reason),
                        retry_at_ms: None,
                        failed_call_us: None,
                        version: None,
                        kind: None,
                    };
                    reports.push(status_output(w.name.as_str().into(), now, &status));
                    continue;
                }
            };
            let started = runner.launch(now, &mut reports);
            if mode == LoadMode::Strict {
                started?;
            }
            runners.push(runner);
        }
        let reloader = reload::Reloader::new(engine, linker, limits, watched, dir);
        Ok(PluginSet {
            runners,
            reports,
            reloader,
        })
    }
}
