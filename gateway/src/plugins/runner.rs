//! One plugin's life: instantiate, init, call with fuel, and start afresh after a trap.

use super::PluginError;
use super::bindings::{Verdict, analytics, filter};
use super::health::Health;
use super::lower::SightingView;
use super::manifest::{Capability, Kind, Manifest, StreamKind};
use super::sandbox::{Budget, HostState, Limits, Output, OutputKind};
use super::state::State;
use crate::privacy::{PseudonymSpace, Sighting};
use crate::untrusted::{self, Escaped};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Func, Linker};
use wasmtime::{Engine, Store};

/// What delivering a batch did: how the call went and, from a filter, one verdict per
/// sighting.
#[derive(Debug)]
pub struct Delivery {
    pub outcome: CallOutcome,
    pub verdicts: Option<Vec<Verdict>>,
}

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
    /// The plugin cannot start and is not retried (see [`PluginError::Failed`]); skipped.
    Failed,
}

/// The two kinds of plugin, as instantiated from their worlds, each with the export that
/// takes sightings (called with [`SightingView`]s rather than the bindings' own records).
enum Instance {
    Analytics(analytics::Analytics, Func),
    Filter(filter::Filter, Func),
}

struct Live {
    store: Store<HostState>,
    instance: Instance,
}

/// The optional fields of a sighting a plugin is given: those its granted capabilities name
/// (its manifest's required ones and the optional ones the site grants), looked up once at
/// load rather than per sighting.
#[derive(Clone, Copy)]
struct Sees {
    signal: bool,
    frequency: bool,
    sequence: bool,
    ie_signature: bool,
    consent: bool,
}

impl Sees {
    fn of(capabilities: &[Capability]) -> Sees {
        let has = |c: Capability| capabilities.contains(&c);
        Sees {
            signal: has(Capability::Signal),
            frequency: has(Capability::Frequency),
            sequence: has(Capability::Sequence),
            ie_signature: has(Capability::IeSignature),
            consent: has(Capability::Consent),
        }
    }
}

/// `views`, emptied, with its allocation, for views that borrow from elsewhere: collecting an
/// emptied `Vec` into one of a type of the same size and alignment reuses its buffer.
fn reuse<'a, 'b>(mut views: Vec<SightingView<'a>>) -> Vec<SightingView<'b>> {
    views.clear();
    views.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// At most this many tags per sighting reach later plugins (the WIT promises it).
const MAX_TAGS: usize = 4;

pub struct PluginRunner {
    name: Arc<str>,
    engine: Engine,
    linker: Linker<HostState>,
    component: Component,
    config_json: String,
    limits: Limits,
    manifest: Arc<Manifest>,
    /// The capabilities whose fields the plugin is given: the manifest's required ones and
    /// the optional ones this site grants.
    sees: Sees,
    space: PseudonymSpace,
    /// The buffer of each batch's views, kept empty between calls: delivering sightings does
    /// not allocate once warm.
    views: Vec<SightingView<'static>>,
    /// Whether it has a stream that is not per-device, where the host refuses what it was
    /// lately handed (see `guard::Recent`): only then is that remembered.
    guarded: bool,
    live: Option<Live>,
    /// The key-value state while no instance holds it.
    state: State,
    /// The key epoch of the last sighting delivered (0: none yet).
    epoch: u32,
    pub traps: u64,
    refused: u64,
    refused_total: u64,
    health: Health,
    trap_log: WarnLimiter,
    restart_log: WarnLimiter,
    refusal_log: WarnLimiter,
    /// What it may still publish and log, across its instances.
    budget: Arc<Mutex<Budget>>,
    /// Why it cannot start, once that is known not to change by trying again.
    failed_for_good: Option<String>,
    /// What it published while handed sightings, on streams that are not per-device: held
    /// until the next tick (or stop), so neither the envelope's time nor the moment of
    /// sending tells which sighting it followed.
    held: Vec<Output>,
    /// Whether the call under way is a delivery of sightings.
    holding: bool,
    /// Pipeline time of this plugin's next tick; set by the first event it sees.
    next_tick_ms: Option<u64>,
}

/// A status reason (an init error, a trap, a load error) is cut to this many bytes: the
/// plugin's status is retained at the broker and must stay small.
pub const MAX_REASON: usize = 512;

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
        tracing::warn!(
            plugin,
            detail = %Escaped::new(detail),
            since_last_line = self.unlogged,
            "{message}"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Components already compiled, by the SHA-256 of their file and whether precompiled code
/// was trusted for them.
#[derive(Default)]
pub struct Compiled(std::collections::HashMap<([u8; 32], bool), Component>);

impl PluginRunner {
    /// Reads the manifest beside `path`, checks it against what the site `granted`, and
    /// compiles the component; nothing of the plugin runs yet.
    pub fn load(
        engine: &Engine,
        linker: &Linker<HostState>,
        name: &str,
        path: &Path,
        config_json: String,
        limits: Limits,
        granted: &[Capability],
    ) -> Result<PluginRunner, PluginError> {
        let mut compiled = Compiled::default();
        PluginRunner::load_sharing(
            engine,
            linker,
            name,
            path,
            config_json,
            limits,
            granted,
            &mut compiled,
        )
    }

    /// [`PluginRunner::load`], compiling a file only if `compiled` lacks its contents: several
    /// `[[plugin]]` entries of one file cost one compilation (~0.2 s each here, far more on a
    /// router) and share its code in memory.
    #[allow(clippy::too_many_arguments)]
    pub fn load_sharing(
        engine: &Engine,
        linker: &Linker<HostState>,
        name: &str,
        path: &Path,
        config_json: String,
        limits: Limits,
        granted: &[Capability],
        compiled: &mut Compiled,
    ) -> Result<PluginRunner, PluginError> {
        let manifest = super::manifest::path_for(path);
        Self::load_from(
            engine,
            linker,
            name,
            (path, &manifest),
            config_json,
            limits,
            granted,
            compiled,
        )
    }

    /// [`PluginRunner::load_sharing`] with the manifest at a path of its own (a staged
    /// bundle's files are not named as installed ones are).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load_from(
        engine: &Engine,
        linker: &Linker<HostState>,
        name: &str,
        (path, manifest_path): (&Path, &Path),
        config_json: String,
        limits: Limits,
        granted: &[Capability],
        compiled: &mut Compiled,
    ) -> Result<PluginRunner, PluginError> {
        let load_err = |reason: String| PluginError::Load {
            name: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        // The component first: "no manifest" for a plugin that is not there at all misleads.
        if let Err(e) = std::fs::metadata(path) {
            return Err(load_err(e.to_string()));
        }
        let manifest = Manifest::load_from(manifest_path).map_err(|e| load_err(e.to_string()))?;
        manifest
            .check_grants(granted)
            .map_err(|e| PluginError::Refused {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let sees = manifest.sees(granted);
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let key = (
            <sha2::Sha256 as sha2::Digest>::digest(&bytes).into(),
            limits.trust_precompiled,
        );
        let component = match compiled.0.get(&key) {
            Some(component) => component.clone(),
            None => {
                let component =
                    super::artifact::component(engine, &bytes, limits.trust_precompiled)
                        .map_err(load_err)?;
                compiled.0.insert(key, component.clone());
                component
            }
        };
        // Type-check imports and exports now, so a plugin built for another interface or
        // another kind than its manifest says fails at load, not at its first call.
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("{e:#}")))?;
        let exports = match manifest.kind {
            Kind::Analytics => analytics::AnalyticsPre::new(pre).map(drop),
            Kind::Filter => filter::FilterPre::new(pre).map(drop),
        };
        exports.map_err(|e| {
            load_err(format!(
                "the manifest says kind = \"{}\", but the component does not export that world: {e:#}",
                manifest.kind.as_str()
            ))
        })?;
        let guarded = manifest
            .streams
            .values()
            .any(|s| s.kind != StreamKind::PerDevice);
        Ok(PluginRunner {
            name: name.into(),
            guarded,
            views: Vec::new(),
            engine: engine.clone(),
            linker: linker.clone(),
            component,
            config_json,
            limits,
            manifest: Arc::new(manifest),
            sees: Sees::of(&sees),
            space: PseudonymSpace::default(),
            live: None,
            state: State::default(),
            epoch: 0,
            traps: 0,
            refused: 0,
            refused_total: 0,
            health: Health::default(),
            trap_log: WarnLimiter::default(),
            restart_log: WarnLimiter::default(),
            refusal_log: WarnLimiter::default(),
            budget: Arc::default(),
            failed_for_good: None,
            held: Vec::new(),
            holding: false,
            next_tick_ms: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Traps and refused publishes since this runner was loaded: what a health window watches.
    pub fn breaches(&self) -> u64 {
        self.traps + self.refused_total
    }

    /// Whether the plugin is down: trapped and backing off, or unable to start.
    pub fn is_failing(&self) -> bool {
        self.live.is_none() && (self.health.failures() > 0 || self.failed_for_good.is_some())
    }

    pub fn kind(&self) -> Kind {
        self.manifest.kind
    }

    /// When this plugin's next tick is due, counted from the first pipeline time it is shown:
    /// the next multiple of its manifest's `tick_secs` (default 1) after it.
    pub fn next_tick_ms(&mut self, now_ms: u64) -> u64 {
        let every = self.tick_every_ms();
        *self
            .next_tick_ms
            .get_or_insert(now_ms - now_ms % every + every)
    }

    /// Moves the schedule on after a tick at `now_ms`.
    pub fn ticked(&mut self, now_ms: u64) {
        let every = self.tick_every_ms();
        self.next_tick_ms = Some(now_ms - now_ms % every + every);
    }

    fn tick_every_ms(&self) -> u64 {
        u64::from(self.manifest.tick_secs.unwrap_or(1)) * 1000
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// Hands this plugin's pseudonym space to its successor (a reloaded version), so a
    /// device keeps its pseudonym across the reload within the key epoch.
    pub(super) fn inherit_space(&mut self, from: &mut PluginRunner) {
        std::mem::swap(&mut self.space, &mut from.space);
    }

    /// Gives a successor (not started yet) a copy of this version's key-value state, so its
    /// init sees it; the copy is dropped if the successor is refused.
    pub(super) fn lend_state(&self, to: &mut PluginRunner) {
        to.state = match &self.live {
            Some(live) => live.store.data().state.clone(),
            None => self.state.clone(),
        };
    }

    /// Reports "running" (after a reload swapped this version in).
    pub(super) fn announce(&self, out: &mut Vec<Output>, now_ms: u64) {
        self.report_running(out, now_ms);
    }

    /// Publishes the host refused since the last call of this method.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Starts the plugin and reports it: "running"; "backing_off" with the reason (it is
    /// retried on a later call); or "failed" when trying again could only fail again. The
    /// error is returned for callers that must refuse to go on.
    pub fn launch(&mut self, now_ms: u64, out: &mut Vec<Output>) -> Result<(), PluginError> {
        match self.start(now_ms) {
            Ok(()) => {
                self.report_running(out, now_ms);
                Ok(())
            }
            Err(e @ PluginError::Failed { .. }) => {
                let reason = e.to_string();
                tracing::error!(
                    plugin = %self.name,
                    reason = %Escaped::new(&reason),
                    "plugin cannot start; it stays stopped"
                );
                self.health.failed(now_ms);
                let status = PluginStatus {
                    state: "failed",
                    failures: self.health.failures(),
                    traps: self.traps,
                    reason: Some(&reason),
                    retry_at_ms: None,
                    failed_call_us: None,
                    version: Some(&self.manifest.version),
                    kind: Some(self.manifest.kind.as_str()),
                };
                out.push(status_output(self.name.clone(), now_ms, &status));
                self.failed_for_good = Some(reason);
                Err(e)
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
        // Whatever the plugin hands back is cut before it is kept anywhere: a 4 MiB error
        // must not become 4 MiB statuses.
        let bounded = |reason: &str| untrusted::bound(reason, MAX_REASON).into_owned();
        let init_err = |reason: &str| PluginError::Init {
            name: self.name.to_string(),
            reason: bounded(reason),
        };
        let for_good = |reason: String| PluginError::Failed {
            name: self.name.to_string(),
            reason: bounded(&reason),
        };
        let host = HostState::new(
            self.name.clone(),
            self.limits.clone(),
            self.manifest.clone(),
            std::mem::take(&mut self.state),
            self.budget.clone(),
        );
        let mut store = Store::new(&self.engine, host);
        store.limiter(|s| &mut s.store_limits);
        store
            .set_fuel(self.limits.fuel_per_call)
            .map_err(|e| init_err(&e.to_string()))?;
        let kind = self.manifest.kind;
        let instance = self
            .linker
            .instantiate(&mut store, &self.component)
            .and_then(|raw| {
                let export = match kind {
                    Kind::Analytics => "on-sightings",
                    Kind::Filter => "filter",
                };
                let Some(takes) = raw.get_func(&mut store, export) else {
                    return Err(wasmtime::Error::msg(format!("no export {export}")));
                };
                Ok(match kind {
                    Kind::Analytics => {
                        takes.typed::<(&[SightingView],), ()>(&store)?;
                        Instance::Analytics(analytics::Analytics::new(&mut store, &raw)?, takes)
                    }
                    Kind::Filter => {
                        takes.typed::<(&[SightingView],), (Vec<Verdict>,)>(&store)?;
                        Instance::Filter(filter::Filter::new(&mut store, &raw)?, takes)
                    }
                })
            });
        let instance = match instance {
            Ok(instance) => instance,
            // Instantiation does the same thing every time: more instances, tables or
            // memory than the limits allow, or an import the host lacks, stays so.
            Err(e) => {
                self.state = std::mem::take(&mut store.data_mut().state);
                let text = format!("{e:#}");
                let hint = if text.contains("count too high") {
                    " (a [[plugin]] table may raise it: limits = { instances = N, tables = N, memories = N }, up to [limits] max_instances, max_tables, max_memories)"
                } else {
                    ""
                };
                return Err(for_good(format!("cannot instantiate: {text}{hint}")));
            }
        };
        store.data_mut().begin_call(now_ms);
        let result = match &instance {
            Instance::Analytics(p, _) => p.call_init(&mut store, &self.config_json),
            Instance::Filter(p, _) => p.call_init(&mut store, &self.config_json),
        };
        match result {
            Ok(Ok(())) => {
                self.live = Some(Live { store, instance });
                Ok(())
            }
            // The plugin's own verdict on its config: the same config gets the same answer.
            Ok(Err(reason)) => {
                self.state = std::mem::take(&mut store.data_mut().state);
                Err(for_good(format!(
                    "init refused to start: {}",
                    untrusted::bound(&reason, MAX_REASON)
                )))
            }
            Err(trap) => {
                self.state = std::mem::take(&mut store.data_mut().state);
                Err(init_err(&format!("trapped: {}", trap_text(&trap))))
            }
        }
    }

    /// Delivers `sightings` (in capture order, so epochs never decrease) with the tags
    /// filters gave them (`tags` is empty, or one entry per sighting). A filter answers with
    /// one verdict per sighting; a filter that cannot answer drops them all, so a broken
    /// consent filter never leaks a device. At a key rotation the plugin is restarted between
    /// the last sighting of the old epoch and the first of the new one: it publishes what it
    /// holds (on-stop) and starts empty, so no per-device state can outlive the keys it was
    /// built on, whatever the plugin's author did.
    pub fn on_sightings(
        &mut self,
        sightings: &[Sighting],
        tags: &[Vec<String>],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Delivery {
        let split = sightings
            .iter()
            .position(|s| s.epoch > self.epoch)
            .unwrap_or(sightings.len());
        if split == sightings.len() {
            return self.deliver(sightings, tags, now_ms, out);
        }
        let (old, new) = sightings.split_at(split);
        let (old_tags, new_tags) = tags.split_at(if tags.is_empty() { 0 } else { split });
        let mut first = self.deliver(old, old_tags, now_ms, out);
        let rotated = self.epoch != 0;
        self.epoch = new[0].epoch;
        if rotated {
            self.restart_empty(new[0].time_ms, out, "keys rotated");
        }
        let second = self.deliver(new, new_tags, now_ms, out);
        if let (Some(a), Some(b)) = (first.verdicts.as_mut(), second.verdicts) {
            a.extend(b);
        }
        if second.outcome != CallOutcome::Ok {
            first.outcome = second.outcome;
        }
        first
    }

    /// Lets the plugin publish what it holds (on-stop), then drops its instance and its
    /// key-value state: the next call starts a fresh one from init, with no per-device state.
    /// Used when the state must not survive: a key rotation, a new opt-out.
    pub fn restart_empty(&mut self, now_ms: u64, out: &mut Vec<Output>, why: &str) {
        self.state.clear();
        if self.live.is_none() {
            return;
        }
        self.on_stop(now_ms, out);
        self.live = None;
        self.state.clear();
        tracing::info!(plugin = %self.name, epoch = self.epoch, "{why}: plugin restarted empty");
    }

    fn deliver(
        &mut self,
        sightings: &[Sighting],
        tags: &[Vec<String>],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Delivery {
        let kind = self.manifest.kind;
        if sightings.is_empty() {
            return Delivery {
                outcome: CallOutcome::Ok,
                verdicts: (kind == Kind::Filter).then(Vec::new),
            };
        }
        let mut batch = reuse(std::mem::take(&mut self.views));
        let budget = self.budget.clone();
        let mut budget = budget.lock().unwrap_or_else(|e| e.into_inner());
        for (i, s) in sightings.iter().enumerate() {
            let tags = tags.get(i).map_or(&[][..], |t| &t[..t.len().min(MAX_TAGS)]);
            let view = self.visible(s, tags);
            if self.guarded {
                budget
                    .recent
                    .saw(view.device, view.ie_signature, view.time_ms);
            }
            batch.push(view);
        }
        drop(budget);
        let expected = batch.len();
        self.holding = true;
        // Typed at every call (checked at start too): a look at the types costs less than
        // the call, and no `unsafe` is needed.
        let (outcome, verdicts) = self.call(now_ms, out, |instance, store| match instance {
            Instance::Analytics(_, takes) => takes
                .typed::<(&[SightingView],), ()>(&*store)?
                .call(&mut *store, (&batch,))
                .map(|()| None),
            Instance::Filter(_, takes) => {
                let (verdicts,) = takes
                    .typed::<(&[SightingView],), (Vec<Verdict>,)>(&*store)?
                    .call(&mut *store, (&batch,))?;
                if verdicts.len() != expected {
                    return Err(wasmtime::Error::msg(format!(
                        "filter returned {} verdicts for {expected} sightings",
                        verdicts.len()
                    )));
                }
                Ok(Some(verdicts))
            }
        });
        self.holding = false;
        self.views = reuse(batch);
        let verdicts = match kind {
            Kind::Analytics => None,
            Kind::Filter => Some(
                verdicts
                    .flatten()
                    .unwrap_or_else(|| vec![Verdict::Drop; expected]),
            ),
        };
        Delivery { outcome, verdicts }
    }

    /// What this plugin may see of a sighting: only the fields its granted capabilities name.
    fn visible<'a>(&mut self, s: &'a Sighting, tags: &'a [String]) -> SightingView<'a> {
        let sees = self.sees;
        SightingView {
            device: self.space.pseudonym(s),
            epoch: s.epoch,
            time_ms: s.time_ms,
            randomized: s.randomized,
            signal_dbm: s.signal_dbm.filter(|_| sees.signal),
            freq_mhz: s.freq_mhz.filter(|_| sees.frequency),
            seq: sees.sequence.then_some(s.seq),
            ie_signature: if sees.ie_signature {
                self.space.signature(s)
            } else {
                None
            },
            consent_token: s.consent.as_deref().filter(|_| sees.consent),
            tags,
        }
    }

    pub fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) -> CallOutcome {
        self.release_held(now_ms, out);
        self.call(now_ms, out, |instance, store| match instance {
            Instance::Analytics(p, _) => p.call_on_tick(store, now_ms),
            Instance::Filter(p, _) => p.call_on_tick(store, now_ms),
        })
        .0
    }

    pub fn on_message(
        &mut self,
        topic: &str,
        payload: &str,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> CallOutcome {
        self.call(now_ms, out, |instance, store| match instance {
            Instance::Analytics(p, _) => p.call_on_message(store, topic, payload),
            Instance::Filter(p, _) => p.call_on_message(store, topic, payload),
        })
        .0
    }

    pub fn on_stop(&mut self, now_ms: u64, out: &mut Vec<Output>) -> CallOutcome {
        self.release_held(now_ms, out);
        let outcome = self
            .call(now_ms, out, |instance, store| match instance {
                Instance::Analytics(p, _) => p.call_on_stop(store, now_ms),
                Instance::Filter(p, _) => p.call_on_stop(store, now_ms),
            })
            .0;
        self.report_suppressed(true);
        outcome
    }

    /// Sends what was held since the last tick, stamped with the whole second of `now_ms`.
    fn release_held(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        for mut o in self.held.drain(..) {
            o.time_ms = now_ms - now_ms % 1000;
            out.push(o);
        }
    }

    /// Says how many of the plugin's log lines the rate limit kept out, once a minute at most
    /// (`now`: at once).
    fn report_suppressed(&self, now: bool) {
        let due = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .suppressed_report(now);
        if let Some(suppressed) = due {
            tracing::warn!(
                plugin = %self.name,
                suppressed,
                "plugin log lines suppressed (over limits.log_lines_per_minute)"
            );
        }
    }

    fn call<R>(
        &mut self,
        now_ms: u64,
        out: &mut Vec<Output>,
        f: impl FnOnce(&Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> (CallOutcome, Option<R>) {
        if self.live.is_none() {
            if self.failed_for_good.is_some() {
                return (CallOutcome::Failed, None);
            }
            if !self.health.may_run(now_ms) {
                return (CallOutcome::BackingOff, None);
            }
            // The previous instance failed: a fresh one starts from init. What it held in
            // memory is lost, which the contract tells plugin authors to expect.
            if self.launch(now_ms, out).is_err() {
                return (CallOutcome::NotRunning, None);
            }
        }
        let Some(live) = self.live.as_mut() else {
            return (CallOutcome::NotRunning, None);
        };
        live.store.data_mut().begin_call(now_ms);
        if let Err(e) = live.store.set_fuel(self.limits.fuel_per_call) {
            tracing::error!(plugin = %self.name, error = %e, "cannot set fuel");
        }
        let started = Instant::now();
        let result = f(&live.instance, &mut live.store);
        // Only a failed call reports its duration: a successful one reads the clock once.
        let failed_us = result
            .is_err()
            .then(|| started.elapsed().as_micros() as u64);
        // What the plugin published before a trap was valid when published: keep it.
        let state = live.store.data_mut();
        if self.holding {
            for o in state.outputs.drain(..) {
                let per_device = self
                    .manifest
                    .streams
                    .get(&o.stream)
                    .is_some_and(|s| s.kind == StreamKind::PerDevice);
                match per_device {
                    true => out.push(o),
                    false => self.held.push(o),
                }
            }
        } else {
            out.append(&mut state.outputs);
        }
        let refused = std::mem::take(&mut state.refused);
        if let Some(label) = state.last_refusal.take() {
            self.refusal_log
                .warn(&self.name, label, "plugin publishes refused by the host");
        }
        self.refused += refused;
        self.refused_total += refused;
        self.report_suppressed(false);
        match result {
            Ok(r) => {
                if self.health.succeeded(now_ms) {
                    self.report_running(out, now_ms);
                }
                (CallOutcome::Ok, Some(r))
            }
            Err(trap) => {
                self.traps += 1;
                let text = trap_text(&trap);
                self.trap_log.warn(
                    &self.name,
                    &text,
                    "plugin trapped; it restarts after a back-off",
                );
                // The key-value state is the host's, not the instance's: it survives.
                if let Some(mut dead) = self.live.take() {
                    self.state = std::mem::take(&mut dead.store.data_mut().state);
                }
                self.failed(out, now_ms, &text, failed_us);
                (CallOutcome::Trapped(text), None)
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
            version: Some(&self.manifest.version),
            kind: Some(self.manifest.kind.as_str()),
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
            version: Some(&self.manifest.version),
            kind: Some(self.manifest.kind.as_str()),
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
    /// From the plugin's manifest, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

pub fn status_output(plugin: Arc<str>, now_ms: u64, status: &PluginStatus) -> Output {
    // Every reason is cut and escaped here, whoever built the status: it is retained at the
    // broker, and shown to people.
    let reason = status.reason.map(|r| untrusted::escape(r, MAX_REASON));
    let status = PluginStatus {
        reason: reason.as_deref(),
        ..*status
    };
    let json = serde_json::to_string(&status).expect("status serialises");
    Output {
        plugin,
        stream: "status".into(),
        payload: serde_json::value::RawValue::from_string(json).expect("valid JSON"),
        time_ms: now_ms,
        kind: OutputKind::PluginStatus,
    }
}

fn trap_text(e: &wasmtime::Error) -> String {
    let text = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}")
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_owned(),
    };
    untrusted::bound(&text, MAX_REASON).into_owned()
}

#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;
    use crate::privacy::DeviceId;
    use std::path::PathBuf;

    /// The hostile test plugin as `spy`, built by `cargo xtask build-plugins`.
    fn spy(dir: &Path) -> PluginRunner {
        let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm");
        let wasm = dir.join("spy.wasm");
        std::fs::copy(built.join("hostile.wasm"), &wasm)
            .expect("run `cargo xtask build-plugins` first");
        std::fs::copy(built.join("hostile.toml"), dir.join("spy.toml")).unwrap();
        let engine = super::super::sandbox::engine().unwrap();
        let linker = super::super::sandbox::linker(&engine).unwrap();
        let limits = Limits {
            fuel_per_call: 100_000_000,
            memory_bytes: 64 << 20,
            max_output_bytes: 16384,
            max_outputs_per_call: 64,
            max_outputs_per_stream_per_minute: 120,
            max_outputs_per_minute: 240,
            max_output_bytes_per_minute: 1 << 20,
            log_lines_per_minute: 60,
            state_bytes: 1024,
            instances: 16,
            tables: 16,
            memories: 2,
            min_cell: 1,
            trust_precompiled: false,
        };
        let config = r#"{"act":"time-leak","on":"sightings"}"#.to_owned();
        PluginRunner::load(&engine, &linker, "spy", &wasm, config, limits, &[]).unwrap()
    }

    fn sighting(device: u64, time_ms: u64) -> Sighting {
        Sighting {
            device: DeviceId(device),
            epoch: 1,
            time_ms,
            signal_dbm: None,
            freq_mhz: None,
            randomized: false,
            seq: 0,
            ie_signature: None,
            consent: None,
        }
    }

    #[test]
    fn what_a_plugin_publishes_while_handed_sightings_waits_for_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = spy(dir.path());
        let mut out = Vec::new();
        runner.start(0).unwrap();
        let batch = [
            sighting(1, 1_697_803_200_123),
            sighting(2, 1_697_803_200_456),
        ];
        runner.on_sightings(&batch, &[], 1_697_803_200_456, &mut out);
        assert!(out.is_empty(), "{out:?}");
        runner.on_tick(1_697_803_201_000, &mut out);
        // The held message, stamped with the tick; then what the tick published (the leak of
        // both sightings' times and pseudonyms, refused).
        let held: Vec<&Output> = out.iter().filter(|o| o.stream == "s0").collect();
        assert_eq!(held.len(), 1, "{out:?}");
        assert_eq!(held[0].time_ms, 1_697_803_201_000);
        assert!(out.iter().all(|o| o.stream != "flood"), "{out:?}");
        assert_eq!(runner.take_refused(), 1);
    }
}
