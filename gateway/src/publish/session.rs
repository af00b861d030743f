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
}

impl Session {
    /// Starts connecting; the session retries by itself whenever the broker is unreachable.
    pub fn start(config: &MqttConfig, identity: Identity) -> Session {
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
        let online = Status::new(&identity, "online", true).to_json();
        let driver = tokio::spawn(drive(
            eventloop,
            client.clone(),
            topics.status(),
            online,
            sent.clone(),
            acked_tx,
            closing.clone(),
            format!("{}:{}", config.host, config.port),
        ));
        Session {
            client,
            identity,
            topics,
            seq: 0,
            sent,
            acked,
            closing,
            driver,
        }
    }

    /// Wraps `output` in the envelope and queues it (QoS 1). Waits while the client's queue
    /// is full, which is the back-pressure the plugin stage feels.
    pub async fn publish(&mut self, output: &Output) {
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
        self.sent.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, retain, body)
            .await
        {
            tracing::error!(error = %e, "mqtt client closed; message lost");
        }
    }

    /// Publishes everything from `rx` until it closes.
    pub async fn publish_all(&mut self, mut rx: mpsc::Receiver<Output>) {
        while let Some(output) = rx.recv().await {
            self.publish(&output).await;
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

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    status_topic: String,
    online: Vec<u8>,
    sent: Arc<AtomicU64>,
    acked: watch::Sender<u64>,
    closing: Arc<AtomicBool>,
    broker: String,
) {
    let mut backoff = Duration::from_millis(250);
    // After every (re)connect the last will may have marked us offline meanwhile, so "online"
    // is owed again. The client's queue can be full right after an outage: the debt is then
    // retried on every later event until it is paid.
    let mut online_owed = false;
    loop {
        if online_owed
            && client
                .try_publish(&status_topic, QoS::AtLeastOnce, true, online.clone())
                .is_ok()
        {
            sent.fetch_add(1, Ordering::SeqCst);
            online_owed = false;
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(%broker, "connected to broker");
                backoff = Duration::from_millis(250);
                online_owed = true;
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => acked.send_modify(|a| *a += 1),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if closing.load(Ordering::SeqCst) {
                    break;
                }
                tracing::warn!(%broker, error = %e, retry_in = ?backoff, "mqtt connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
