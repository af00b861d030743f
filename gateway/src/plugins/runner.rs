//! One plugin's life: instantiate, init, call with fuel, and start afresh after a trap.

use super::PluginError;
use super::bindings::{self, Sighting as WitSighting};
use super::sandbox::{HostState, Limits, Output};
use crate::privacy::{PseudonymSpace, Sighting};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// How a call into the plugin went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// The plugin trapped or ran out of fuel; its instance was discarded.
    Trapped(String),
    /// No instance could be made (init failed or trapped); the call was skipped.
    NotRunning,
}

struct Live {
    store: Store<HostState>,
    plugin: bindings::Plugin,
}

pub struct PluginRunner {
    name: Arc<str>,
    engine: Engine,
    linker: Linker<HostState>,
    component: Component,
    config_json: String,
    limits: Limits,
    space: PseudonymSpace,
    live: Option<Live>,
    /// Reused for every batch, so delivering sightings does not allocate once warm.
    batch: Vec<WitSighting>,
    pub traps: u64,
    pub calls: u64,
    refused: u64,
    trap_log: WarnLimiter,
    restart_log: WarnLimiter,
}

/// A plugin that fails on every call must not flood the router's small log ring: the first
/// failure is logged, then at most one line per interval saying how many followed.
#[derive(Default)]
struct WarnLimiter {
    last: Option<Instant>,
    unlogged: u64,
}

const WARN_INTERVAL: Duration = Duration::from_secs(60);

impl WarnLimiter {
    fn warn(&mut self, plugin: &str, detail: &str, message: &str) {
        if self.last.is_some_and(|t| t.elapsed() < WARN_INTERVAL) {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(plugin, detail, since_last_line = self.unlogged, "{message}");
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

impl PluginRunner {
    pub fn load(
        engine: &Engine,
        linker: &Linker<HostState>,
        name: &str,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<PluginRunner, PluginError> {
        let load_err = |reason: String| PluginError::Load {
            name: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let component = Component::new(engine, &bytes).map_err(|e| load_err(format!("{e:#}")))?;
        // Type-check the imports now, so a plugin built for another interface fails at load.
        linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("{e:#}")))?;
        Ok(PluginRunner {
            name: name.into(),
            engine: engine.clone(),
            linker: linker.clone(),
            component,
            config_json,
            limits,
            space: PseudonymSpace::default(),
            live: None,
            batch: Vec::new(),
            traps: 0,
            calls: 0,
            refused: 0,
            trap_log: WarnLimiter::default(),
            restart_log: WarnLimiter::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes the host refused since the last call of this method.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Instantiates and initialises the plugin at pipeline time `now_ms`; an error leaves it
    /// not running. What init publishes goes out with the next call's outputs.
    pub fn start(&mut self, now_ms: u64) -> Result<(), PluginError> {
        let init_err = |reason: String| PluginError::Init {
            name: self.name.to_string(),
            reason,
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.name.clone(), self.limits.clone()),
        );
        store.limiter(|s| &mut s.store_limits);
        store
            .set_fuel(self.limits.fuel_per_call)
            .map_err(|e| init_err(e.to_string()))?;
        let plugin = bindings::Plugin::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| init_err(format!("{e:#}")))?;
        store.data_mut().begin_call(now_ms);
        match plugin.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => {
                self.live = Some(Live { store, plugin });
                Ok(())
            }
            Ok(Err(reason)) => Err(init_err(reason)),
            Err(trap) => Err(init_err(format!("trapped: {}", trap_text(&trap)))),
        }
    }

    pub fn on_sightings(
        &mut self,
        sightings: &[Sighting],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> CallOutcome {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        batch.extend(sightings.iter().map(|s| WitSighting {
            device: self.space.pseudonym(s),
            epoch: s.epoch,
            time_ms: s.time_ms,
            signal_dbm: s.signal_dbm,
            freq_mhz: s.freq_mhz,
            randomized: s.randomized,
        }));
        let outcome = self.call(now_ms, out, |p, store| p.call_on_sightings(store, &batch));
        self.batch = batch;
        outcome
    }

    pub fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) -> CallOutcome {
        self.call(now_ms, out, |p, store| p.call_on_tick(store, now_ms))
    }

    pub fn on_stop(&mut self, now_ms: u64, out: &mut Vec<Output>) -> CallOutcome {
        self.call(now_ms, out, |p, store| p.call_on_stop(store, now_ms))
    }

    fn call(
        &mut self,
        now_ms: u64,
        out: &mut Vec<Output>,
        f: impl FnOnce(&bindings::Plugin, &mut Store<HostState>) -> wasmtime::Result<()>,
    ) -> CallOutcome {
        if self.live.is_none() {
            // The previous instance trapped: a fresh one starts from init. Its state is lost,
            // which the contract tells plugin authors to expect.
            if let Err(e) = self.start(now_ms) {
                self.restart_log
                    .warn(&self.name, &e.to_string(), "plugin could not be restarted");
                return CallOutcome::NotRunning;
            }
        }
        let Some(live) = self.live.as_mut() else {
            return CallOutcome::NotRunning;
        };
        self.calls += 1;
        live.store.data_mut().begin_call(now_ms);
        if let Err(e) = live.store.set_fuel(self.limits.fuel_per_call) {
            tracing::error!(plugin = %self.name, error = %e, "cannot set fuel");
        }
        let result = f(&live.plugin, &mut live.store);
        // What the plugin published before a trap was valid when published: keep it.
        let state = live.store.data_mut();
        out.append(&mut state.outputs);
        self.refused += std::mem::take(&mut state.refused);
        match result {
            Ok(()) => CallOutcome::Ok,
            Err(trap) => {
                self.traps += 1;
                let text = trap_text(&trap);
                self.trap_log.warn(
                    &self.name,
                    &text,
                    "plugin trapped; it restarts on its next call",
                );
                self.live = None;
                CallOutcome::Trapped(text)
            }
        }
    }
}

fn trap_text(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}")
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_owned(),
    }
}
