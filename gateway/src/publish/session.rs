//! One MQTT session: rumqttc's event loop on its own task, status with last will, and a
//! count of acknowledgements so a replay can tell when the broker has everything.

use super::envelope::{Envelope, Identity, Status, Topics};
use crate::config::MqttConfig;
use crate::plugins::{Output, OutputKind};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Large enough for any plugin message the limits allow, with its envelope.
const MAX_PACKET: usize = 256 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a publish waiting for room in the client's queue checks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    /// Plugin messages handed to the client (the last envelope `seq`).
    pub published: u64,
    /// Every QoS 1 message handed to the client: plugin messages and status updates.
    pub sent: u64,
    /// PUBACKs received for them.
    pub acknowledged: u64,
}

pub struct Session {
    client: AsyncClient,
    identity: Identity,
    topics: Topics,
    seq: u64,
    /// QoS 1 publishes handed to the client, and PUBACKs received.
    sent: Arc<AtomicU64>,
    acked: watch::Receiver<u64>,
    closing: Arc<AtomicBool>,
    driver: JoinHandle<()>,
    /// Messages on the topics the session subscribed to (commands from the back office).
    commands: mpsc::Receiver<(String, Vec<u8>)>,
    /// Plugin messages given up because the daemon stopped while the broker was unreachable.
    dropped_at_stop: u64,
}

impl Session {
    /// Starts connecting; the session retries by itself whenever the broker is unreachable.
    /// `subscribe` lists the command topics to (re)subscribe to after every connect.
    pub fn start(config: &MqttConfig, identity: Identity, subscribe: Vec<String>) -> Session {
        let topics = Topics::new(&identity);
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("probegate-{}-{}", identity.site, identity.gateway));
        let mut options = MqttOptions::new(client_id, &config.host, config.port);
        options
            .set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                topics.status(),
                Status::new(&identity, "offline", false).to_json(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        let (client, eventloop) = AsyncClient::new(options, 64);
        let sent = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let (acked_tx, acked) = watch::channel(0);
        let (commands_tx, commands) = mpsc::channel(64);
        let driver = Driver {
            client: client.clone(),
            status_topic: topics.status(),
            online: Status::new(&identity, "online", true).to_json(),
            subscribe,
            sent: sent.clone(),
            acked: acked_tx,
            closing: closing.clone(),
            commands: commands_tx,
            broker: format!("{}:{}", config.host, config.port),
        };
        let driver = tokio::spawn(driver.run(eventloop));
        Session {
            client,
            identity,
            topics,
            seq: 0,
            sent,
            acked,
            closing,
            driver,
            commands,
            dropped_at_stop: 0,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Publishes a retained document of the host's own (not enveloped), e.g. a summary.
    pub async fn publish_retained(&mut self, topic: String, body: Vec<u8>) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, body)
            .await
        {
            tracing::error!(error = %e, "mqtt client closed; message lost");
        }
    }

    /// Wraps `output` in the envelope and queues it (QoS 1). Waits while the client's queue
    /// is full, which is the back-pressure the plugin stage feels; once `stop` is set it
    /// waits no more (the broker is unreachable and the daemon must stop) and drops it.
    pub async fn publish(&mut self, output: &Output, stop: &AtomicBool) {
        self.seq += 1;
        let envelope = Envelope {
            v: 1,
            site: &self.identity.site,
            gateway: &self.identity.gateway,
            boot_id: &self.identity.boot_id,
            seq: self.seq,
            time_ms: output.time_ms,
            plugin: &output.plugin,
            stream: &output.stream,
            data: &output.payload,
        };
        let body = serde_json::to_vec(&envelope).expect("envelope serialises");
        let (topic, retain) = match output.kind {
            OutputKind::Stream => (
                self.topics.plugin_output(&output.plugin, &output.stream),
                false,
            ),
            OutputKind::PluginStatus => (self.topics.plugin_status(&output.plugin), true),
        };
        loop {
            // A publish future dropped before it completes has queued nothing: retrying is safe.
            let queued = self
                .client
                .publish(topic.clone(), QoS::AtLeastOnce, retain, body.clone());
            match tokio::time::timeout(STOP_POLL, queued).await {
                Ok(Ok(())) => {
                    self.sent.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "mqtt client closed; message lost");
                    return;
                }
                Err(_) if stop.load(Ordering::Relaxed) => {
                    self.dropped_at_stop += 1;
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// Publishes everything from `rx` until it closes, handing each command that arrives
    /// meanwhile to `on_command`, which may answer with a retained (topic, body).
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Output>,
        stop: &AtomicBool,
        mut on_command: impl FnMut(&str, &[u8]) -> Option<(String, Vec<u8>)>,
    ) {
        loop {
            tokio::select! {
                output = rx.recv() => match output {
                    Some(output) => self.publish(&output, stop).await,
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
    /// unreachable the client's queue may be full, and a stopping daemon must still stop.
    pub async fn close(mut self, grace: Duration) -> SessionReport {
        self.wait_acked(grace).await;
        let offline = Status::new(&self.identity, "offline", true).to_json();
        let queued = self
            .client
            .publish(self.topics.status(), QoS::AtLeastOnce, true, offline);
        if matches!(tokio::time::timeout(grace, queued).await, Ok(Ok(()))) {
            self.sent.fetch_add(1, Ordering::SeqCst);
            self.wait_acked(grace).await;
        }
        if self.dropped_at_stop > 0 {
            tracing::warn!(
                dropped = self.dropped_at_stop,
                "stopped while the broker was unreachable; plugin messages lost"
            );
        }
        let report = SessionReport {
            published: self.seq,
            sent: self.sent.load(Ordering::SeqCst),
            acknowledged: *self.acked.borrow(),
        };
        self.closing.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.driver).await;
        self.driver.abort();
        report
    }

    async fn wait_acked(&mut self, grace: Duration) {
        let sent = self.sent.load(Ordering::SeqCst);
        let waited = tokio::time::timeout(grace, self.acked.wait_for(|a| *a >= sent))
            .await
            .is_ok();
        if !waited {
            let acked = *self.acked.borrow();
            tracing::warn!(
                sent,
                acked,
                "broker did not acknowledge every message in time"
            );
        }
    }
}

/// Owns rumqttc's event loop: counts acknowledgements, keeps the "online" status and the
/// command subscriptions in place across reconnects, and forwards incoming commands.
struct Driver {
    client: AsyncClient,
    status_topic: String,
    online: Vec<u8>,
    subscribe: Vec<String>,
    sent: Arc<AtomicU64>,
    acked: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
    commands: mpsc::Sender<(String, Vec<u8>)>,
    broker: String,
}

impl Driver {
    async fn run(self, mut eventloop: rumqttc::EventLoop) {
        let mut backoff = Duration::from_millis(250);
        // After every (re)connect the last will may have marked us offline meanwhile, and a
        // clean session has forgotten our subscriptions: both are owed again. The client's
        // queue can be full right after an outage, so debts are retried on every event.
        let mut online_owed = false;
        let mut subscriptions_owed = 0;
        loop {
            if online_owed
                && self
                    .client
                    .try_publish(
                        &self.status_topic,
                        QoS::AtLeastOnce,
                        true,
                        self.online.clone(),
                    )
                    .is_ok()
            {
                self.sent.fetch_add(1, Ordering::SeqCst);
                online_owed = false;
            }
            while subscriptions_owed > 0 {
                let topic = &self.subscribe[self.subscribe.len() - subscriptions_owed];
                if self.client.try_subscribe(topic, QoS::AtLeastOnce).is_err() {
                    break;
                }
                subscriptions_owed -= 1;
            }
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %self.broker, "connected to broker");
                    backoff = Duration::from_millis(250);
                    online_owed = true;
                    subscriptions_owed = self.subscribe.len();
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => self.acked.send_modify(|a| *a += 1),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let message = (p.topic.clone(), p.payload.to_vec());
                    if self.commands.try_send(message).is_err() {
                        tracing::warn!(topic = %p.topic, "command dropped: too many queued");
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    if self.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    tracing::warn!(broker = %self.broker, error = %e, retry_in = ?backoff, "mqtt connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
