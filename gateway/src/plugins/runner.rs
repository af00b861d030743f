//! One plugin's life: instantiate, init, call with fuel, and start afresh after a trap.

use super::PluginError;
use super::bindings::{self, Sighting as WitSighting};
use super::health::Health;
use super::sandbox::{HostState, Limits, Output, OutputKind};
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
    /// The plugin failed recently and sits out its back-off; the call was skipped.
    BackingOff,
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
    /// The key epoch of the last sighting delivered (0: none yet).
    epoch: u32,
    pub traps: u64,
    refused: u64,
    health: Health,
    trap_log: WarnLimiter,
    restart_log: WarnLimiter,
    refusal_log: WarnLimiter,
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
        let component = super::artifact::component(engine, &bytes, limits.trust_precompiled)
            .map_err(load_err)?;
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
            epoch: 0,
            traps: 0,
            refused: 0,
            health: Health::default(),
            trap_log: WarnLimiter::default(),
            restart_log: WarnLimiter::default(),
            refusal_log: WarnLimiter::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands this plugin's pseudonym space to its successor (a reloaded version), so a
    /// device keeps its pseudonym across the reload within the key epoch.
    pub(super) fn inherit_space(&mut self, from: &mut PluginRunner) {
        std::mem::swap(&mut self.space, &mut from.space);
    }

    /// Reports "running" (after a reload swapped this version in).
    pub(super) fn announce(&self, out: &mut Vec<Output>, now_ms: u64) {
        self.report_running(out, now_ms);
    }

    /// Publishes the host refused since the last call of this method.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Starts the plugin and reports it: "running", or "backing_off" with the reason (it is
    /// retried on a later call). The error is returned for callers that must refuse to go on.
    pub fn launch(&mut self, now_ms: u64, out: &mut Vec<Output>) -> Result<(), PluginError> {
        match self.start(now_ms) {
            Ok(()) => {
                self.report_running(out, now_ms);
                Ok(())
            }
            Err(e) => {
                self.restart_log
                    .warn(&self.name, &e.to_string(), "plugin could not be started");
                self.failed(out, now_ms, &e.to_string(), None);
                Err(e)
            }
        }
    }

    /// Instantiates and initialises the plugin at pipeline time `now_ms`; an error leaves it
    /// not running. What init publishes goes out with the next call's outputs.
    pub(super) fn start(&mut self, now_ms: u64) -> Result<(), PluginError> {
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

    /// Delivers `sightings` (in capture order, so epochs never decrease). At a key rotation
    /// the plugin is restarted between the last sighting of the old epoch and the first of
    /// the new one: it publishes what it holds (on-stop) and starts empty, so no per-device
    /// state can outlive the keys it was built on, whatever the plugin's author did.
    pub fn on_sightings(
        &mut self,
        sightings: &[Sighting],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> CallOutcome {
        let split = sightings
            .iter()
            .position(|s| s.epoch > self.epoch)
            .unwrap_or(sightings.len());
        if split == sightings.len() {
            return self.deliver(sightings, now_ms, out);
        }
        let (old, new) = sightings.split_at(split);
        let mut outcome = CallOutcome::Ok;
        if !old.is_empty() {
            outcome = self.deliver(old, now_ms, out);
        }
        let rotated = self.epoch != 0;
        self.epoch = new[0].epoch;
        if rotated {
            self.restart_empty(new[0].time_ms, out, "keys rotated");
        }
        match self.deliver(new, now_ms, out) {
            CallOutcome::Ok => outcome,
            failed => failed,
        }
    }

    /// Lets the plugin publish what it holds (on-stop), then drops its instance: the next call
    /// starts a fresh one from init, with no per-device state. Used when the state must not
    /// survive: a key rotation, a new opt-out.
    pub fn restart_empty(&mut self, now_ms: u64, out: &mut Vec<Output>, why: &str) {
        if self.live.is_none() {
            return;
        }
        self.on_stop(now_ms, out);
        self.live = None;
        tracing::info!(plugin = %self.name, epoch = self.epoch, "{why}: plugin restarted empty");
    }

    fn deliver(
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
            if !self.health.may_run(now_ms) {
                return CallOutcome::BackingOff;
            }
            // The previous instance failed: a fresh one starts from init. Its state is lost,
            // which the contract tells plugin authors to expect.
            if self.launch(now_ms, out).is_err() {
                return CallOutcome::NotRunning;
            }
        }
        let Some(live) = self.live.as_mut() else {
            return CallOutcome::NotRunning;
        };
        live.store.data_mut().begin_call(now_ms);
        if let Err(e) = live.store.set_fuel(self.limits.fuel_per_call) {
            tracing::error!(plugin = %self.name, error = %e, "cannot set fuel");
        }
        let started = Instant::now();
        let result = f(&live.plugin, &mut live.store);
        let call_us = started.elapsed().as_micros() as u64;
        // What the plugin published before a trap was valid when published: keep it.
        let state = live.store.data_mut();
        out.append(&mut state.outputs);
        let refused = std::mem::take(&mut state.refused);
        if let Some(label) = state.last_refusal.take() {
            self.refusal_log
                .warn(&self.name, label, "plugin publishes refused by the host");
        }
        self.refused += refused;
        match result {
            Ok(()) => {
                if self.health.succeeded(now_ms) {
                    self.report_running(out, now_ms);
                }
                CallOutcome::Ok
            }
            Err(trap) => {
                self.traps += 1;
                let text = trap_text(&trap);
                self.trap_log.warn(
                    &self.name,
                    &text,
                    "plugin trapped; it restarts after a back-off",
                );
                self.live = None;
                self.failed(out, now_ms, &text, Some(call_us));
                CallOutcome::Trapped(text)
            }
        }
    }

    fn failed(&mut self, out: &mut Vec<Output>, now_ms: u64, reason: &str, call_us: Option<u64>) {
        let retry_at = self.health.failed(now_ms);
        let status = PluginStatus {
            state: "backing_off",
            failures: self.health.failures(),
            traps: self.traps,
            reason: Some(reason),
            retry_at_ms: Some(retry_at),
            failed_call_us: call_us,
        };
        out.push(status_output(self.name.clone(), now_ms, &status));
    }

    /// Queues "running" for the back office (retained on the plugin's status topic).
    fn report_running(&self, out: &mut Vec<Output>, now_ms: u64) {
        let status = PluginStatus {
            state: "running",
            failures: self.health.failures(),
            traps: self.traps,
            reason: None,
            retry_at_ms: None,
            failed_call_us: None,
        };
        out.push(status_output(self.name.clone(), now_ms, &status));
    }
}

/// The document on `.../plugin-status/{plugin}`; see docs/mqtt.md.
#[derive(serde::Serialize)]
pub struct PluginStatus<'a> {
    /// "running", "backing_off" (failed, retried at `retry_at_ms`), or "failed" (cannot load).
    pub state: &'a str,
    /// Consecutive failures; a minute without one resets it.
    pub failures: u32,
    /// Traps since the daemon started.
    pub traps: u64,
    pub reason: Option<&'a str>,
    pub retry_at_ms: Option<u64>,
    /// How long the failing call ran before the host stopped it: the containment time.
    pub failed_call_us: Option<u64>,
}

pub fn status_output(plugin: Arc<str>, now_ms: u64, status: &PluginStatus) -> Output {
    let json = serde_json::to_string(status).expect("status serialises");
    Output {
        plugin,
        stream: "status".into(),
        payload: serde_json::value::RawValue::from_string(json).expect("valid JSON"),
        time_ms: now_ms,
        kind: OutputKind::PluginStatus,
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
