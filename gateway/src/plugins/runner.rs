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
    trap_log: TrapLog,
}

/// A plugin that traps on every call must not flood the router's small log ring: the first
/// trap is logged, then at most one line per interval saying how many followed.
#[derive(Default)]
struct TrapLog {
    last: Option<Instant>,
    unlogged: u64,
}

const TRAP_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl TrapLog {
    fn record(&mut self, plugin: &str, trap: &str) {
        let due = self.last.is_none_or(|t| t.elapsed() >= TRAP_LOG_INTERVAL);
        if due {
            tracing::warn!(
                plugin,
                trap,
                traps_since_last_line = self.unlogged,
                "plugin trapped; it restarts on its next call"
            );
            self.last = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
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
            trap_log: TrapLog::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instantiates and initialises the plugin; an error leaves it not running.
    pub fn start(&mut self) -> Result<(), PluginError> {
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
        store.data_mut().begin_call(0);
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
            if let Err(e) = self.start() {
                tracing::warn!(plugin = %self.name, error = %e, "plugin could not be restarted");
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
        out.append(&mut live.store.data_mut().outputs);
        match result {
            Ok(()) => CallOutcome::Ok,
            Err(trap) => {
                self.traps += 1;
                let text = trap_text(&trap);
                self.trap_log.record(&self.name, &text);
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
