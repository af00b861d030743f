//! One MQTT session with an outbox: nothing the gateway publishes at QoS 1 is forgotten
//! until the broker acknowledges it, across reconnects.
//!
//! Two tasks. The *transport* task owns rumqttc's event loops and only forwards their
//! events; it also picks the MQTT version of each connection attempt ([`Negotiation`]).
//! The *driver* task owns the [`Outbox`] and is the only one that hands messages to
//! rumqttc, so the order of handing equals the order of rumqttc's packet ids. When the
//! connection drops, the transport waits until the driver has taken everything back, then
//! empties rumqttc's queue, so no stale copy can go out after the reconnect.

use super::envelope::{Envelope, Identity, Status, Topics};
use super::link::{self, Clients, Happened, Links, MqttProtocol, Negotiation, Version};
use super::outbox::{Delivered, Dropped, Entry, Outbox, Priority};
use super::spool::Spool;
use crate::atomic64::AtomicU64;
use crate::config::MqttConfig;
use crate::plugins::{Output, OutputKind};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Large enough for any plugin message the limits allow, with its envelope.
const MAX_PACKET: usize = 256 * 1024;
/// Commands from the back office: a full consent list (`replace`) can be large. A larger
/// packet is a protocol error that costs the connection.
const MAX_INCOMING: usize = 8 * 1024 * 1024;
/// Messages handed to rumqttc at once; the rest wait in the outbox.
const WINDOW: usize = 32;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    /// Plugin messages published (the last envelope `seq`).
    pub published: u64,
    /// Every QoS 1 message queued: plugin messages, statuses, reports, gap records.
    pub sent: u64,
    /// Of those, acknowledged by the broker.
    pub acknowledged: u64,
    /// Still in the outbox when the session closed (lost unless a later run resends them).
    pub unacknowledged: u64,
    /// Plugin messages the full outbox dropped (each run reported in a gap record).
    pub dropped: u64,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    dropped: AtomicU64,
}

/// The PEM files TLS needs, read before the session starts so a missing file is a start-up
/// error, not an endless reconnect loop.
pub struct TlsFiles {
    pub ca: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub fn load(config: &crate::config::Config) -> Result<Option<TlsFiles>, std::io::Error> {
        let Some(tls) = &config.mqtt.tls else {
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            let path = config.resolve(path);
            std::fs::read(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let client = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(std::io::Error::other(
                    "mqtt.tls: client_cert_file and client_key_file go together",
                ));
            }
        };
        // rumqttc builds its rustls config from the process-wide provider: ring, installed
        // once (a second install fails harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Some(TlsFiles {
            ca: read(&tls.ca_file)?,
            client,
        }))
    }
}

/// What the session asks of the driver.
enum Request {
    Publish(Entry),
    /// Only the newest of its topic matters (metrics, retained summaries).
    PublishLatest(Entry),
    /// Copy everything unacknowledged to the spool (the daemon is stopping); replies with
    /// how many messages are now safe on flash.
    SpoolAll(oneshot::Sender<usize>),
}

/// What the transport task tells the driver.
enum TransportEvent {
    Connected(Version),
    Sent(u16),
    Acknowledged(u16),
    Command(String, Vec<u8>),
    /// The connection dropped; the transport waits for the reply before it reconnects.
    Lost(oneshot::Sender<()>),
}

pub struct Session {
    clients: Clients,
    /// The version of the last connection that came up (none yet: `None`).
    version: watch::Receiver<Option<Version>>,
    /// `[mqtt] drop_priority`, by "plugin/stream".
    priorities: HashMap<String, Priority>,
    identity: Identity,
    topics: Topics,
    seq: u64,
    to_driver: mpsc::Sender<Request>,
    unacknowledged: watch::Receiver<usize>,
    stats: Arc<Stats>,
    closing: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// Messages on the topics the session subscribed to (commands from the back office).
    commands: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Session {
    /// Starts connecting; the session retries by itself whenever the broker is unreachable.
    /// `subscribe` lists the command topics to (re)subscribe to after every connect.
    /// `tls` is the broker's CA and an optional client certificate and key, all PEM.
    /// `spool_dir` is where unacknowledged messages go to flash (none: RAM only).
    pub fn start(
        config: &MqttConfig,
        identity: Identity,
        subscribe: Vec<String>,
        tls: Option<TlsFiles>,
        spool_dir: Option<&std::path::Path>,
    ) -> Session {
        let topics = Topics::new(&identity);
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("probegate-{}-{}", identity.site, identity.gateway));
        let transport = tls.map(|tls| {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
                ca: tls.ca,
                alpn: None,
                client_auth: tls.client,
            })
        });
        let (clients, links) = link::open(&link::Settings {
            config,
            identity: &identity,
            client_id,
            transport,
            max_incoming: MAX_INCOMING,
            max_outgoing: MAX_PACKET,
            queue: 2 * WINDOW,
        });
        let (version_tx, version) = watch::channel(None);
        let stats = Arc::new(Stats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let (events_tx, events_rx) = mpsc::channel(256);
        let (to_driver, entries_rx) = mpsc::channel(64);
        let (unacknowledged_tx, unacknowledged) = watch::channel(0);
        let (commands_tx, commands) = mpsc::channel(64);
        let min_backoff = Duration::from_millis(config.reconnect_min_ms.max(10));
        let transport = Transport {
            min_backoff,
            max_backoff: Duration::from_millis(config.reconnect_max_ms).max(min_backoff),
            events: events_tx,
            closing: closing.clone(),
            broker: format!("{}:{}", config.host, config.port),
            links,
            negotiation: Negotiation::new(config.protocol),
            version: version_tx,
        };
        let mut outbox =
            Outbox::with_policy(config.outbox_max_messages, WINDOW, config.outbox_drop);
        let spool = spool_dir.and_then(|dir| match Spool::open(dir) {
            Ok((spool, left)) => {
                if !left.is_empty() {
                    tracing::info!(messages = left.len(), "resending what an earlier run left in the spool");
                }
                let mut spool = spool;
                for (segment, entry) in left {
                    // An earlier boot's retained status would overwrite this boot's "online".
                    if entry.topic == topics.status() {
                        spool.release(segment);
                        continue;
                    }
                    stats.sent.fetch_add(1, Ordering::SeqCst);
                    outbox.push_spooled(entry, segment);
                }
                Some(spool)
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot use the spool; the outbox stays in RAM only");
                None
            }
        });
        let driver = Driver {
            clients: clients.clone(),
            version: None,
            outbox,
            spool,
            spool_after: Duration::from_secs(config.outbox_spool_after_secs),
            spool_retry_at: None,
            segment_messages: config.outbox_segment_messages.max(1),
            down_since: Some(std::time::Instant::now()),
            status_topic: topics.status(),
            gaps_topic: topics.gaps(),
            identity: identity.clone(),
            subscribe,
            subscriptions_owed: 0,
            stats: stats.clone(),
            unacknowledged: unacknowledged_tx,
            commands: commands_tx,
            pending_commands: std::collections::VecDeque::new(),
            pending_command_bytes: 0,
            gaps_reported: std::time::Instant::now(),
            drop_log: HashMap::new(),
        };
        let tasks = vec![
            tokio::spawn(transport.run()),
            tokio::spawn(driver.run(events_rx, entries_rx)),
        ];
        let priorities = config
            .drop_priority
            .iter()
            .map(|(stream, priority)| (stream.get_ref().clone(), *priority))
            .collect();
        Session {
            clients,
            version,
            priorities,
            identity,
            topics,
            seq: 0,
            to_driver,
            unacknowledged,
            stats,
            closing,
            tasks,
            commands,
        }
    }

    async fn queue(&mut self, entry: Entry) {
        self.stats.sent.fetch_add(1, Ordering::SeqCst);
        if self.to_driver.send(Request::Publish(entry)).await.is_err() {
            tracing::error!("mqtt session ended; message lost");
        }
    }

    /// Publishes a retained document of the host's own (not enveloped), e.g. a summary.
    /// Only the latest per topic waits during an outage.
    pub async fn publish_retained(&mut self, topic: String, body: Vec<u8>) {
        self.queue_latest(Entry::host(topic, body, true)).await;
    }

    async fn queue_latest(&mut self, entry: Entry) {
        self.stats.sent.fetch_add(1, Ordering::SeqCst);
        if self
            .to_driver
            .send(Request::PublishLatest(entry))
            .await
            .is_err()
        {
            tracing::error!("mqtt session ended; message lost");
        }
    }

    /// Wraps `output` in the envelope and puts it in the outbox.
    pub async fn publish(&mut self, output: &Output) {
        self.seq += 1;
        let envelope = Envelope::wrap(&self.identity, self.seq, output);
        let body = serde_json::to_vec(&envelope).expect("envelope serialises");
        let (topic, retain) = self.topics.for_output(output);
        let priority = self
            .priorities
            .get(&format!("{}/{}", output.plugin, output.stream))
            .copied()
            .unwrap_or_default();
        // Only a plugin's own streams can be dropped for room, and they count against its
        // share of the outbox; what the host reports about it (status, bundles) cannot.
        let owner = (output.kind == OutputKind::Stream).then(|| output.plugin.clone());
        self.queue(Entry {
            seq: Some(self.seq),
            topic,
            body,
            retain,
            priority,
            owner,
        })
        .await;
    }

    /// Publishes everything from `rx` until it closes, handing each command that arrives
    /// meanwhile to `on_command`, which may answer with a retained (topic, body).
    ///
    /// Every `metrics_every`, `metrics()` is published to `.../metrics` (not retained).
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Output>,
        mut on_command: impl FnMut(&str, &[u8]) -> Option<(String, Vec<u8>)>,
        metrics_every: Duration,
        metrics: impl Fn() -> Vec<u8>,
    ) {
        let mut tick = tokio::time::interval(metrics_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; nothing happened yet
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let topic = self.topics.metrics();
                    self.queue_latest(Entry::host(topic, metrics(), false)).await;
                }
                output = rx.recv() => match output {
                    Some(output) => self.publish(&output).await,
                    None => break,
                },
                Some((topic, payload)) = self.commands.recv() => {
                    if let Some((topic, body)) = on_command(&topic, &payload) {
                        self.publish_retained(topic, body).await;
                    }
                }
            }
        }
    }

    /// Waits (up to `grace`) until the broker acknowledged everything, marks the gateway
    /// offline (cleanly, retained) and disconnects. Every step is bounded: with the broker
    /// unreachable a stopping daemon must still stop.
    ///
    /// At a reboot procd kills the daemon about a second after asking it to stop, so what
    /// matters goes first: whatever the broker has not acknowledged after
    /// [`STOP_ESSENTIALS`] is written to the spool, then "offline" is queued (never spooled:
    /// sent at the next start it would mark that run offline), and only then comes the longer
    /// wait for the rest.
    pub async fn close(mut self, grace: Duration) -> SessionReport {
        self.wait_empty(STOP_ESSENTIALS.min(grace)).await;
        let mut spooled = 0;
        if *self.unacknowledged.borrow() > 0 {
            let (reply, done) = oneshot::channel();
            if self.to_driver.send(Request::SpoolAll(reply)).await.is_ok() {
                spooled = done.await.unwrap_or(0);
            }
        }
        // The status names the protocol of the connection that carries it: a session that
        // never connected yet waits (bounded) for one first.
        let _ = tokio::time::timeout(grace, self.version.wait_for(Option::is_some)).await;
        let version = *self.version.borrow();
        let offline = Status::new(&self.identity, "offline", true, version).to_json();
        let status_topic = self.topics.status();
        self.publish_retained(status_topic, offline).await;
        self.wait_empty(grace).await;
        let left = *self.unacknowledged.borrow() as u64;
        if left > 0 {
            tracing::warn!(
                unacknowledged = left,
                spooled,
                "stopping with messages the broker never acknowledged; spooled ones go out at the next start"
            );
        }
        let report = SessionReport {
            published: self.seq,
            sent: self.stats.sent.load(Ordering::SeqCst),
            acknowledged: self.stats.acknowledged.load(Ordering::SeqCst),
            unacknowledged: left,
            dropped: self.stats.dropped.load(Ordering::SeqCst),
        };
        self.closing.store(true, Ordering::SeqCst);
        let client = match version {
            Some(version) => self.clients.get(version),
            None => self.clients.preferred(),
        };
        // A clean DISCONNECT makes the broker drop the last will. While anything, the offline
        // status perhaps among it, is still unacknowledged, the status may not be out yet:
        // leave without one, and the broker publishes the will (the same offline status).
        if left == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
        }
        for task in &mut self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut *task).await;
            task.abort();
        }
        report
    }

    async fn wait_empty(&mut self, grace: Duration) {
        // The driver may not have counted the last queued message yet: give it a moment.
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(grace, async {
            loop {
                let pending = *self.unacknowledged.borrow_and_update();
                let in_channel = self.to_driver.max_capacity() - self.to_driver.capacity();
                if pending == 0 && in_channel == 0 {
                    return;
                }
                if self.unacknowledged.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// Owns rumqttc's event loops; forwards what the driver needs, in order.
struct Transport {
    min_backoff: Duration,
    max_backoff: Duration,
    events: mpsc::Sender<TransportEvent>,
    closing: Arc<AtomicBool>,
    broker: String,
    links: Links,
    negotiation: Negotiation,
    version: watch::Sender<Option<Version>>,
}

impl Transport {
    async fn run(mut self) {
        let mut backoff = self.min_backoff;
        let mut up = false;
        loop {
            let version = self.negotiation.next();
            let event = match self.links.get_mut(version).poll().await {
                Ok(Happened::Connected) => {
                    if self.negotiation.connected() {
                        tracing::info!(broker = %self.broker, "the broker does not take MQTT 5: using MQTT 3.1.1 for the rest of this run");
                    }
                    tracing::info!(broker = %self.broker, mqtt = version.as_str(), "connected to broker");
                    up = true;
                    backoff = self.min_backoff;
                    self.version.send_replace(Some(version));
                    TransportEvent::Connected(version)
                }
                Ok(Happened::Sent(pkid)) => TransportEvent::Sent(pkid),
                Ok(Happened::Acknowledged(pkid)) => TransportEvent::Acknowledged(pkid),
                Ok(Happened::Received(topic, payload)) => TransportEvent::Command(topic, payload),
                Ok(Happened::Disconnected) => break,
                Ok(Happened::Other) => continue,
                Err(failure) => {
                    if self.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    let (done, taken_back) = oneshot::channel();
                    if self.events.send(TransportEvent::Lost(done)).await.is_err() {
                        break;
                    }
                    let _ = taken_back.await;
                    // The driver took everything back; what it handed over in the meantime
                    // must not go out after the reconnect as well, even into a resumed
                    // session.
                    self.links.get_mut(version).clean();
                    let was_up = std::mem::replace(&mut up, false);
                    if !was_up && self.negotiation.failed(failure.version_refused) {
                        tracing::debug!(broker = %self.broker, error = %failure.error, "the broker refused MQTT 5; trying MQTT 3.1.1");
                        continue;
                    }
                    if !was_up
                        && failure.version_refused
                        && self.negotiation.protocol() == MqttProtocol::V5
                    {
                        tracing::warn!(broker = %self.broker, "the broker may not take MQTT 5, which mqtt.protocol demands; \"auto\" would fall back to 3.1.1");
                    }
                    tracing::warn!(broker = %self.broker, mqtt = version.as_str(), error = %failure.error, retry_in = ?backoff, "mqtt connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    continue;
                }
            };
            if self.events.send(event).await.is_err() {
                break;
            }
        }
    }
}

/// How long a stopping session gives the broker before it writes what is unacknowledged to
/// the spool: well inside the second procd allows at a reboot.
pub const STOP_ESSENTIALS: Duration = Duration::from_millis(300);

/// How long spooling pauses after a failed write.
const SPOOL_RETRY: Duration = Duration::from_secs(60);

/// Owns the outbox and hands messages to rumqttc.
struct Driver {
    clients: Clients,
    /// The version of the current (or last) connection: whose client gets the messages.
    version: Option<Version>,
    outbox: Outbox,
    spool: Option<Spool>,
    spool_after: Duration,
    /// After a failed write (a full flash, most likely) the outage spooling waits this long
    /// before it tries again, rather than failing, and logging, at every message.
    spool_retry_at: Option<std::time::Instant>,
    segment_messages: usize,
    /// Since when the broker has been unreachable (set at start: not connected yet).
    down_since: Option<std::time::Instant>,
    status_topic: String,
    gaps_topic: String,
    identity: Identity,
    subscribe: Vec<String>,
    subscriptions_owed: usize,
    stats: Arc<Stats>,
    unacknowledged: watch::Sender<usize>,
    commands: mpsc::Sender<(String, Vec<u8>)>,
    /// Commands received but not yet taken by the session: a bundle arrives as a burst of
    /// chunks, and none may be lost because the consumer was busy. Bounded by bytes.
    pending_commands: std::collections::VecDeque<(String, Vec<u8>)>,
    pending_command_bytes: usize,
    /// When drops were last taken from the outbox and reported.
    gaps_reported: std::time::Instant,
    drop_log: HashMap<Arc<str>, DropLog>,
}

/// Commands waiting for the session at most; beyond, new ones are dropped (and logged).
const MAX_PENDING_COMMAND_BYTES: usize = 32 << 20;

/// A gap record: one plugin's messages the gateway had to drop, so the back office knows.
#[derive(Serialize)]
struct GapRecord<'a> {
    v: u8,
    site: &'a str,
    gateway: &'a str,
    boot_id: &'a str,
    plugin: &'a str,
    /// The first seq of the first run and the last of the last.
    first_seq: u64,
    last_seq: u64,
    /// Messages dropped: the sum over the runs.
    count: u64,
    /// Each run of dropped seqs, `[first, last]`, in order; the seqs between runs arrived.
    runs: Vec<[u64; 2]>,
    reason: &'a str,
}

/// How often the drops are taken from the outbox and reported, at most.
const GAP_EVERY: Duration = Duration::from_secs(1);
/// Runs in one gap record, at most: a record stays a few KiB.
const RUNS_PER_RECORD: usize = 128;
/// One log line per plugin per this long about its dropped messages, at most.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The drops of one plugin not yet logged.
#[derive(Default)]
struct DropLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
    runs: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<TransportEvent>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        let mut requests_open = true;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let commands = self.commands.clone();
        loop {
            tokio::select! {
                permit = commands.reserve(), if !self.pending_commands.is_empty() => {
                    if let (Ok(permit), Some(command)) = (permit, self.pending_commands.pop_front()) {
                        self.pending_command_bytes -= command.1.len();
                        permit.send(command);
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                request = requests.recv(), if requests_open => match request {
                    Some(Request::Publish(entry)) => self.outbox.push(entry),
                    Some(Request::PublishLatest(entry)) => self.outbox.push_latest(entry),
                    Some(Request::SpoolAll(reply)) => {
                        // After a failed write the pause holds here too: a full flash is
                        // not tried (and logged) again within the minute.
                        if self.spool_retry_at.is_none_or(|t| std::time::Instant::now() >= t) {
                            self.spool_up_to(usize::MAX);
                        }
                        let _ = reply.send(self.outbox.len() - self.outbox.unspooled());
                    }
                    None => requests_open = false,
                },
                _ = tick.tick() => {}
            }
            // Gap records wait for a connection, so that during an outage they neither fill
            // the outbox nor push out the messages they would report; the outbox keeps the
            // runs merged meanwhile.
            // At most one report a second: a flood's drops, scattered between the messages
            // that went out, merge into a few records rather than one per message.
            if self.outbox.is_connected()
                && self.outbox.has_gaps()
                && self.gaps_reported.elapsed() >= GAP_EVERY
            {
                self.gaps_reported = std::time::Instant::now();
                for dropped in self.outbox.take_gaps() {
                    self.record_gap(dropped);
                }
            }
            let spool_due = self
                .spool_retry_at
                .is_none_or(|t| std::time::Instant::now() >= t);
            if spool_due
                && self
                    .down_since
                    .is_some_and(|t| t.elapsed() >= self.spool_after)
            {
                // A long outage: copy to flash in whole segments, so a power cut or a
                // killed daemon loses at most what has not filled a segment yet.
                while self.outbox.unspooled() >= self.segment_messages {
                    if !self.spool_up_to(self.segment_messages) {
                        break;
                    }
                }
            }
            self.pump();
            // Drops not yet reported count as unfinished business: a stopping session waits
            // for their gap records.
            self.unacknowledged
                .send_replace(self.outbox.len() + usize::from(self.outbox.has_gaps()));
        }
    }

    /// Writes up to `max` unspooled messages as segments; false if nothing could be written.
    fn spool_up_to(&mut self, max: usize) -> bool {
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        let mut left = max;
        while left > 0 && self.outbox.unspooled() > 0 {
            let n = left.min(self.segment_messages);
            match self.outbox.spool(n, |entries| spool.write(entries)) {
                Ok(0) => break,
                Ok(written) => left = left.saturating_sub(written),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_secs = SPOOL_RETRY.as_secs(), "cannot write to the spool; its messages stay in RAM");
                    self.spool_retry_at = Some(std::time::Instant::now() + SPOOL_RETRY);
                    return false;
                }
            }
        }
        true
    }

    fn on_event(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Connected(version) => {
                self.version = Some(version);
                self.down_since = None;
                self.outbox.connected();
                // The last will may have marked us offline meanwhile, and a clean (or
                // expired) session has forgotten our subscriptions. Both go first.
                self.stats.sent.fetch_add(1, Ordering::SeqCst);
                let online = Status::new(&self.identity, "online", true, Some(version));
                self.outbox.push_first(Entry::host(
                    self.status_topic.clone(),
                    online.to_json(),
                    true,
                ));
                self.subscriptions_owed = self.subscribe.len();
            }
            TransportEvent::Sent(pkid) => self.outbox.sent(pkid),
            TransportEvent::Acknowledged(pkid) => {
                if let Some(Delivered { segment }) = self.outbox.acknowledged(pkid) {
                    self.stats.acknowledged.fetch_add(1, Ordering::SeqCst);
                    if let (Some(segment), Some(spool)) = (segment, self.spool.as_mut()) {
                        spool.release(segment);
                    }
                }
            }
            TransportEvent::Command(topic, payload) => {
                if self.pending_command_bytes + payload.len() > MAX_PENDING_COMMAND_BYTES {
                    tracing::warn!(topic = %crate::untrusted::Escaped::new(&topic), "command dropped: too many waiting");
                } else {
                    self.pending_command_bytes += payload.len();
                    self.pending_commands.push_back((topic, payload));
                }
            }
            TransportEvent::Lost(done) => {
                self.down_since.get_or_insert_with(std::time::Instant::now);
                self.outbox.disconnected();
                let _ = done.send(());
            }
        }
    }

    /// Publishes one plugin's drops as gap records of at most [`RUNS_PER_RECORD`] runs, and
    /// logs them: the first time at once, then at most once a minute per plugin with the
    /// count since the last line.
    fn record_gap(&mut self, dropped: Dropped) {
        let count: u64 = dropped.runs.iter().map(|g| g.count).sum();
        self.stats.dropped.fetch_add(count, Ordering::SeqCst);
        let log = self.drop_log.entry(dropped.plugin.clone()).or_default();
        log.unlogged += count;
        log.runs += dropped.runs.len() as u64;
        if log.last.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            tracing::warn!(
                plugin = %crate::untrusted::Escaped::new(&dropped.plugin),
                count = log.unlogged,
                runs = log.runs,
                first_seq = dropped.runs[0].first_seq,
                "outbox full: plugin messages dropped (each run in a gap record)"
            );
            *log = DropLog {
                last: Some(std::time::Instant::now()),
                ..DropLog::default()
            };
        }
        for runs in dropped.runs.chunks(RUNS_PER_RECORD) {
            let (first, last) = (runs[0], runs[runs.len() - 1]);
            let record = GapRecord {
                v: 1,
                site: &self.identity.site,
                gateway: &self.identity.gateway,
                boot_id: &self.identity.boot_id,
                plugin: &dropped.plugin,
                first_seq: first.first_seq,
                last_seq: last.last_seq,
                count: runs.iter().map(|g| g.count).sum(),
                runs: runs.iter().map(|g| [g.first_seq, g.last_seq]).collect(),
                reason: "outbox_full",
            };
            self.stats.sent.fetch_add(1, Ordering::SeqCst);
            self.outbox.push_unbounded(Entry::host(
                self.gaps_topic.clone(),
                serde_json::to_vec(&record).expect("gap record serialises"),
                false,
            ));
        }
    }

    /// Hands over what the window allows, in order.
    fn pump(&mut self) {
        let Some(version) = self.version else {
            return; // never connected: nothing to hand over, nothing to subscribe
        };
        let client = self.clients.get(version);
        while self.subscriptions_owed > 0 {
            let topic = &self.subscribe[self.subscribe.len() - self.subscriptions_owed];
            if !client.try_subscribe(topic) {
                break;
            }
            self.subscriptions_owed -= 1;
        }
        while let Some(entry) = self.outbox.hand_next() {
            if !client.try_publish(entry) {
                self.outbox.unhand_last();
                break;
            }
        }
    }
}
