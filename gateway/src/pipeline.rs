//! Wires the stages: capture → parse → privacy gate → plugins → publisher.
//!
//! Capture and gate share one thread (parsing and hashing cost well under a microsecond a
//! frame); the plugins run on a second thread so wasm never blocks the async runtime that
//! speaks MQTT. A bounded channel joins the two: a recorded capture waits for the plugins, a
//! live one counts what it cannot hand over.

use crate::bundle::install::Installer;
use crate::capture::{CaptureError, LossStats, Next, PcapSource};
use crate::dot11;
use crate::plugins::reload::Reloader;
use crate::plugins::{CallOutcome, Kind, Output, PluginRunner, PluginSet, Verdict};
use crate::privacy::{Gate, Refusal, Registry, Sighting};
use crate::telemetry::Counters;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Sightings delivered to plugins in one call, at most.
pub const MAX_BATCH: usize = 256;
/// Room between the capture thread and the plugin thread, in events (see [`channel_depth`]).
pub const CHANNEL_DEPTH: usize = 4096;
/// How long a partial batch may wait for more sightings before it is delivered anyway.
const BATCH_LINGER: Duration = Duration::from_millis(200);
/// From a radio or a stream, how long a batch's first sighting may wait for company: an event
/// (a coupon) must reach MQTT within tens of milliseconds, and at a quiet store's few probes a
/// second every sighting waits this long. Calls are cheap at a store's rates (a few µs), and a
/// backlog still fills whole batches. A recorded file has no one waiting and keeps the large
/// batches.
pub const LATENCY_BOUND: Duration = Duration::from_millis(10);
/// Steps (sightings and clock marks) a recorded file's capture thread hands over at once:
/// handing them over one by one cost a futex wake-up each, a tenth of the replay's time
/// (docs/performance.md). Clock marks travel in the chunk: sent on their own, each also cut the
/// chunk before it short, and on the store day chunks held ~40 sightings, not 64.
const CHUNK: usize = 256;
/// Events handled back to back between looks at the wall clock (the latency bound, the
/// reloader, control messages): reading the clock per event was a tenth of the stage's time.
const EVENTS_PER_LOOK: u32 = 64;
const TICK_MS: u64 = 1000;

/// The depth of the channel from the capture thread to the plugin thread. A recorded file's
/// events are chunks of [`CHUNK`] steps: it gets as many sightings in flight as a stream or
/// a radio, not 256 times as many (16 MB of backlog while the plugins are the slower side,
/// which is most of a replay's peak RSS).
pub fn channel_depth(recording: bool) -> usize {
    if recording {
        CHANNEL_DEPTH / CHUNK
    } else {
        CHANNEL_DEPTH
    }
}

/// What the capture thread tells the plugin thread.
pub enum Event {
    Sighting(Sighting),
    /// Sightings and clock marks in capture order, from a recorded file: one hand-over (and
    /// one wake-up of the plugin thread) for many.
    Steps(Vec<Step>),
    /// Pipeline time reached this instant without a sighting: a live source idled, or frames
    /// arrived that the parser or the gate dropped. Windows still close on time.
    Clock(u64),
}

/// One step of a recorded file's chunk: [`Event::Sighting`] or [`Event::Clock`].
pub enum Step {
    Sighting(Sighting),
    Clock(u64),
}

fn sightings_in(steps: &[Step]) -> u64 {
    steps
        .iter()
        .filter(|s| matches!(s, Step::Sighting(_)))
        .count() as u64
}

/// A back-office control message for one plugin (`.../cmd/plugins/{plugin}/{topic}`).
#[derive(Debug)]
pub struct PluginMessage {
    pub plugin: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the MQTT side hands the plugin stage.
#[derive(Debug)]
pub enum Control {
    Message(PluginMessage),
    /// A whole bundle, reassembled from its chunks.
    Bundle {
        push_id: String,
        bytes: Vec<u8>,
    },
    /// A push whose chunks add up to more than a bundle may be: abandoned unassembled.
    Oversize {
        push_id: String,
    },
}

/// Reads `source` to its end (or until `stop`), gating every probe, and sends the sightings.
/// `loss` receives the kernel's capture-loss counters of a live source, about once a second.
pub fn run_capture(
    mut source: PcapSource,
    mut gate: Gate,
    counters: &Counters,
    tx: SyncSender<Event>,
    stop: &AtomicBool,
    loss: &Mutex<Option<LossStats>>,
) -> Result<(), CaptureError> {
    let link = source.link_type();
    let live = source.is_live();
    // Only a regular file has no one waiting: a stream or a radio hands sightings over as
    // they come, for the latency bound.
    let recording = source.is_recording();
    let mut loss_read_at = 0;
    // Time only needs to reach the plugin thread once a second when no sighting carries it.
    let mut clock_sent = 0;
    let mut clock = |gate: &mut Gate, now: u64| {
        gate.rotate_if_due(now);
        (now >= clock_sent + TICK_MS).then(|| {
            clock_sent = now;
            Event::Clock(now)
        })
    };
    let mut last_frame_ms = 0;
    // A recorded file's steps, not yet handed over; always empty for a stream or a radio.
    let mut chunk = Vec::with_capacity(CHUNK);
    while !stop.load(Ordering::Relaxed) {
        let event = match source.next_frame()? {
            Next::End => {
                // The end of a recording is as late as its last frame, whatever that frame was.
                chunk.push(Step::Clock(last_frame_ms));
                let _ = tx.send(Event::Steps(std::mem::take(&mut chunk)));
                break;
            }
            Next::Idle => clock(&mut gate, wall_ms()),
            Next::Frame(frame) => {
                Counters::add(&counters.frames, 1);
                last_frame_ms = last_frame_ms.max(frame.time_ms);
                match dot11::parse(link, frame.data) {
                    Err(reason) => {
                        counters.reject(reason);
                        clock(&mut gate, frame.time_ms)
                    }
                    Ok(probe) => match gate.admit(probe, frame.time_ms) {
                        Ok(sighting) => Some(Event::Sighting(sighting)),
                        Err(refusal) => {
                            Counters::add(
                                match refusal {
                                    Refusal::BelowSignalFloor => &counters.dropped_signal_floor,
                                    Refusal::OptedOut => &counters.dropped_opted_out,
                                },
                                1,
                            );
                            clock(&mut gate, frame.time_ms)
                        }
                    },
                }
            }
        };
        if live && wall_ms() >= loss_read_at + TICK_MS {
            loss_read_at = wall_ms();
            if let (Some(now), Ok(mut shared)) = (source.loss(), loss.lock()) {
                *shared = Some(now);
            }
        }
        let Some(event) = event else { continue };
        let event = if recording {
            match event {
                Event::Sighting(s) => chunk.push(Step::Sighting(s)),
                Event::Clock(now) => chunk.push(Step::Clock(now)),
                Event::Steps(steps) => chunk.extend(steps),
            }
            if chunk.len() < CHUNK {
                continue;
            }
            Event::Steps(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
        } else {
            event
        };
        if live {
            match tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(Event::Sighting(_))) => {
                    Counters::add(&counters.dropped_backpressure, 1)
                }
                Err(TrySendError::Full(Event::Steps(lost))) => {
                    Counters::add(&counters.dropped_backpressure, sightings_in(&lost))
                }
                Err(TrySendError::Full(Event::Clock(_))) => {}
                Err(TrySendError::Disconnected(_)) => break,
            }
        } else if tx.send(event).is_err() {
            break;
        }
    }
    // Stopped mid-file: what was read is still handed over.
    if !chunk.is_empty() {
        let _ = tx.send(Event::Steps(chunk));
    }
    if let Some(loss) = source.loss() {
        tracing::info!(?loss, "capture closed");
    }
    Ok(())
}

/// The plugin stage as a state machine: sightings and time in, plugin calls and outputs out.
pub struct PluginStage {
    runners: Vec<PluginRunner>,
    reloader: Reloader,
    /// The consent registry, to notice new opt-outs, and the count last acted on.
    consent: Option<(Arc<RwLock<Registry>>, u64)>,
    batch: Vec<Sighting>,
    /// Tags filters gave the batch's sightings: empty, or one entry per sighting.
    tags: Vec<Vec<String>>,
    /// The earliest tick any plugin is due (see [`PluginRunner::next_tick_ms`]); `None`
    /// after the set of plugins may have changed.
    next_tick_ms: Option<u64>,
    now_ms: u64,
    outputs: Vec<Output>,
    counters: Arc<Counters>,
    installer: Option<Installer>,
    /// See [`LATENCY_BOUND`]; `None` for a recorded file.
    latency_bound: Option<Duration>,
    /// When the pending batch's first sighting arrived, under a latency bound.
    batch_since: Option<Instant>,
}

impl PluginStage {
    pub fn new(set: PluginSet, counters: Arc<Counters>) -> PluginStage {
        PluginStage {
            runners: set.runners,
            reloader: set.reloader,
            consent: None,
            batch: Vec::with_capacity(MAX_BATCH),
            tags: Vec::new(),
            next_tick_ms: None,
            now_ms: 0,
            outputs: set.reports,
            counters,
            installer: None,
            latency_bound: None,
            batch_since: None,
        }
    }

    /// Delivers every batch at most `bound` of wall time after its first sighting arrived.
    pub fn with_latency_bound(mut self, bound: Duration) -> PluginStage {
        self.latency_bound = Some(bound);
        self
    }

    pub fn sighting(&mut self, s: Sighting) {
        Counters::add(&self.counters.sightings, 1);
        self.take(s);
    }

    /// [`PluginStage::sighting`], counted by the caller: a chunk is counted once, not per
    /// sighting (an atomic add per sighting, on a line the capture thread writes too).
    fn take(&mut self, s: Sighting) {
        self.advance(s.time_ms);
        if self.batch.is_empty() && self.latency_bound.is_some() {
            self.batch_since = Some(Instant::now());
        }
        self.batch.push(s);
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    /// Pipeline time moved to `now_ms` without a sighting.
    pub fn clock(&mut self, now_ms: u64) {
        self.advance(now_ms);
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Sighting(s) => self.sighting(s),
            Event::Steps(chunk) => {
                Counters::add(&self.counters.sightings, sightings_in(&chunk));
                for step in chunk {
                    match step {
                        Step::Sighting(s) => self.take(s),
                        Step::Clock(now) => self.clock(now),
                    }
                }
            }
            Event::Clock(now) => self.clock(now),
        }
    }

    /// How long the stage may wait for the next event before the pending batch is due.
    fn patience(&self) -> Duration {
        match (self.latency_bound, self.batch_since) {
            (Some(bound), Some(since)) => bound.saturating_sub(since.elapsed()),
            _ => BATCH_LINGER,
        }
    }

    /// Delivers the pending batch if it waited its latency bound.
    fn flush_if_due(&mut self) {
        if self.patience().is_zero() {
            self.flush();
        }
    }

    /// Delivers the pending batch through the chain: every filter in configured order, then
    /// every analytics plugin with what the filters passed.
    pub fn flush(&mut self) {
        for kind in [Kind::Filter, Kind::Analytics] {
            for runner in self.runners.iter_mut().filter(|r| r.kind() == kind) {
                if self.batch.is_empty() {
                    break;
                }
                let delivery =
                    runner.on_sightings(&self.batch, &self.tags, self.now_ms, &mut self.outputs);
                count_call(&self.counters, runner, &delivery.outcome);
                if let Some(verdicts) = delivery.verdicts {
                    let down = delivery.outcome != CallOutcome::Ok;
                    apply_verdicts(
                        &mut self.batch,
                        &mut self.tags,
                        verdicts,
                        &self.counters,
                        down,
                    );
                }
            }
        }
        self.batch.clear();
        self.tags.clear();
        self.batch_since = None;
    }

    /// Hands a back-office message to the plugin it names.
    pub fn message(&mut self, message: PluginMessage) {
        let runner = self.runners.iter_mut().find(|r| r.name() == message.plugin);
        let (Some(runner), Ok(payload)) = (runner, std::str::from_utf8(&message.payload)) else {
            Counters::add(&self.counters.plugin_messages_refused, 1);
            tracing::warn!(plugin = %crate::untrusted::Escaped::new(&message.plugin), "message for an unknown plugin, or not UTF-8: dropped");
            return;
        };
        // Sightings collected before the message are judged by the rules before it.
        let outcome = runner.on_message(&message.topic, payload, self.now_ms, &mut self.outputs);
        count_call(&self.counters, runner, &outcome);
    }

    /// The source ended or the daemon stops: deliver what is pending and let plugins flush.
    pub fn finish(&mut self) {
        self.flush();
        for runner in &mut self.runners {
            let outcome = runner.on_stop(self.now_ms, &mut self.outputs);
            count_call(&self.counters, runner, &outcome);
        }
    }

    /// Installs the bundles handed to [`PluginStage::bundle`].
    pub fn with_installer(mut self, installer: Installer) -> PluginStage {
        self.installer = Some(installer);
        self
    }

    /// A whole bundle arrived: checked now, installed between batches.
    pub fn bundle(&mut self, push_id: &str, bytes: Result<&[u8], ()>) {
        match &mut self.installer {
            Some(installer) => match bytes {
                Ok(bytes) => installer.offer(push_id, bytes, &mut self.outputs, self.now_ms),
                Err(()) => installer.refuse_oversize(push_id, &mut self.outputs, self.now_ms),
            },
            None => tracing::warn!(push_id, "a bundle arrived, but bundles are not set up here"),
        }
    }

    /// Moves an install along (see [`Installer::step`]); pending sightings go to the versions
    /// they were collected for first.
    pub fn install_step(&mut self) {
        if !self.installer.as_ref().is_some_and(Installer::busy) {
            return;
        }
        self.flush();
        let installer = self.installer.as_mut().expect("checked");
        installer.step(
            &mut self.runners,
            &mut self.reloader,
            self.now_ms,
            &mut self.outputs,
        );
        // A plugin installed now keeps its own tick cadence from now on.
        self.next_tick_ms = None;
    }

    /// Watches `registry` for new opt-outs (see [`PluginStage::reload_changed`]).
    pub fn with_consent(mut self, registry: Arc<RwLock<Registry>>) -> PluginStage {
        self.consent = Some((registry, 0));
        self
    }

    /// Swaps in plugins whose files changed, and restarts every plugin empty after a new
    /// opt-out (checked every few seconds of wall time: well within a minute).
    pub fn reload_changed(&mut self) {
        if !self.reloader.due() {
            return;
        }
        if let Some((registry, seen)) = &mut self.consent {
            let added = registry.read().map_or(*seen, |r| r.opt_outs_added());
            if added != *seen {
                *seen = added;
                self.flush();
                for runner in &mut self.runners {
                    runner.restart_empty(self.now_ms, &mut self.outputs, "new opt-out");
                }
            }
        }
        // The pending batch goes to the versions it was collected for.
        self.flush();
        if let Some(installer) = &mut self.installer {
            installer.take_drop_ins(&mut self.outputs, self.now_ms);
        }
        self.reloader
            .check(&mut self.runners, self.now_ms, &mut self.outputs);
        self.next_tick_ms = None;
    }

    /// Takes what plugins published so far.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        Counters::add(&self.counters.outputs, self.outputs.len() as u64);
        self.outputs.drain(..)
    }

    /// Ticks fall on whole seconds of pipeline time, for each plugin on multiples of its
    /// manifest's `tick_secs`; a sighting at or past the next tick first closes the batch before
    /// it, so `on-tick(now)` follows every sighting older than `now`. Between ticks a batch
    /// grows: with no plugin due every second, a recorded file's batches span many seconds.
    fn advance(&mut self, time_ms: u64) {
        self.now_ms = self.now_ms.max(time_ms);
        let now = self.now_ms;
        let next = match self.next_tick_ms {
            Some(next) => next,
            None => self.earliest_tick(),
        };
        if now < next {
            return;
        }
        self.flush();
        let tick = now - now % TICK_MS;
        for runner in &mut self.runners {
            if runner.next_tick_ms(now) > now {
                continue;
            }
            let outcome = runner.on_tick(tick, &mut self.outputs);
            count_call(&self.counters, runner, &outcome);
            runner.ticked(tick);
        }
        self.earliest_tick();
    }

    /// The earliest tick any plugin is due; a plugin new to the stage counts from now.
    fn earliest_tick(&mut self) -> u64 {
        let now = self.now_ms;
        let earliest = self
            .runners
            .iter_mut()
            .map(|r| r.next_tick_ms(now))
            .min()
            .unwrap_or(now - now % TICK_MS + TICK_MS);
        self.next_tick_ms = Some(earliest);
        earliest
    }
}

/// Keeps what a filter passed, with its tags. `down`: the filter could not judge (its verdicts
/// are all drops), counted apart from its own decisions.
fn apply_verdicts(
    batch: &mut Vec<Sighting>,
    tags: &mut Vec<Vec<String>>,
    verdicts: Vec<Verdict>,
    counters: &Counters,
    down: bool,
) {
    let tagging = verdicts.iter().any(|v| matches!(v, Verdict::Tag(_)));
    if tagging && tags.is_empty() {
        tags.resize(batch.len(), Vec::new());
    }
    let mut dropped = 0;
    let mut keep = Vec::with_capacity(verdicts.len());
    for (i, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            Verdict::Pass => keep.push(true),
            Verdict::Drop => {
                dropped += 1;
                keep.push(false);
            }
            Verdict::Tag(new) => {
                keep.push(true);
                tags[i].extend(new.into_iter().filter(|t| crate::config::is_valid_name(t)));
            }
        }
    }
    let counter = if down {
        &counters.dropped_filter_down
    } else {
        &counters.dropped_by_filter
    };
    Counters::add(counter, dropped);
    if dropped == 0 {
        return;
    }
    let mut i = 0;
    batch.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    if !tags.is_empty() {
        let mut i = 0;
        tags.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

fn count_call(counters: &Counters, runner: &mut PluginRunner, outcome: &CallOutcome) {
    Counters::add(&counters.outputs_refused, runner.take_refused());
    match outcome {
        CallOutcome::Ok => Counters::add(&counters.plugin_calls, 1),
        CallOutcome::Trapped(_) => {
            Counters::add(&counters.plugin_calls, 1);
            Counters::add(&counters.plugin_traps, 1);
        }
        CallOutcome::NotRunning => Counters::add(&counters.plugin_start_failures, 1),
        CallOutcome::BackingOff | CallOutcome::Failed => {
            Counters::add(&counters.plugin_calls_skipped, 1)
        }
    }
}

/// Runs the plugin stage until the capture side hangs up or `stop` is set, sending outputs on.
pub fn run_plugins(
    mut stage: PluginStage,
    rx: Receiver<Event>,
    messages: Receiver<Control>,
    out: tokio::sync::mpsc::Sender<Output>,
    stop: &AtomicBool,
) {
    let send = |stage: &mut PluginStage| -> bool {
        stage.outputs.is_empty() || stage.drain_outputs().all(|o| out.blocking_send(o).is_ok())
    };
    // Events taken without waiting since the clock was last read.
    let mut streak = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let next = match rx.try_recv() {
            Ok(event) => Ok(event),
            Err(TryRecvError::Empty) => {
                streak = 0;
                rx.recv_timeout(stage.patience())
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match next {
            Ok(event) => stage.handle(event),
            // A stream that pauses (or a quiet radio) still gets its sightings delivered.
            Err(RecvTimeoutError::Timeout) => stage.flush(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // A backlog is read without the clock; every so often, and after every wait, the
        // batch's age, control messages, reloads and installs get their look.
        streak += 1;
        if streak >= EVENTS_PER_LOOK || streak == 1 {
            streak = streak.min(1);
            stage.flush_if_due();
            while let Ok(control) = messages.try_recv() {
                stage.flush();
                match control {
                    Control::Message(message) => stage.message(message),
                    Control::Bundle { push_id, bytes } => stage.bundle(&push_id, Ok(&bytes)),
                    Control::Oversize { push_id } => stage.bundle(&push_id, Err(())),
                }
            }
            stage.reload_changed();
            stage.install_step();
        }
        if !send(&mut stage) {
            tracing::error!("publisher is gone; stopping the plugin stage");
            return;
        }
    }
    // On a stop request, what the capture already handed over is still delivered.
    while let Ok(event) = rx.try_recv() {
        stage.handle(event);
    }
    stage.finish();
    send(&mut stage);
}

pub use crate::clock::wall_ms;
