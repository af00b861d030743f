//! MQTT ingest: an MQTT 5 shared subscription to the whole tree, so several instances split
//! the load, plus plain subscriptions to the retained topics, which a broker never sends to a
//! shared subscription. Each message is validated against its schema, stored, and only then
//! acknowledged (manual acks): a crash before the write means a redelivery, never a loss.

use crate::db::Db;
use crate::store;
use anyhow::{Context, Result, bail};
use probegate_contract::schemas::Validators;
use probegate_contract::topic::Topic;
use probegate_contract::untrusted::Escaped;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Where to connect: `mqtt://[user:password@]host[:port]`.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker> {
        let rest = url
            .strip_prefix("mqtt://")
            .with_context(|| format!("--broker takes mqtt://host:port, not {url:?}"))?;
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((auth, hp)) => {
                let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, rest),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .with_context(|| format!("--broker: {p:?} is not a port"))?,
            ),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            bail!("--broker names no host: {url:?}");
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

/// Counters the health page and the tests read.
#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub repeats: AtomicU64,
    pub invalid: AtomicU64,
    pub subscribed: AtomicBool,
}

/// Topics whose last message the broker retains: subscribed plainly, as a shared subscription
/// gets no retained messages.
const RETAINED: &[&str] = &[
    "probegate/v1/+/+/status",
    "probegate/v1/+/+/consent",
    "probegate/v1/+/+/plugin-status/+",
    "probegate/v1/+/+/plugins-installed",
];

pub struct Ingest {
    pub client: AsyncClient,
    pub stats: Arc<Stats>,
}

/// Connects, and runs the ingest loop on its own task for as long as the service runs.
pub fn start(
    broker: &Broker,
    group: &str,
    db: Db,
    discovery: Option<crate::homeassistant::Discovery>,
) -> Ingest {
    let mut id_bytes = [0u8; 6];
    getrandom::fill(&mut id_bytes).expect("the OS random number generator works");
    let id = format!(
        "probegate-backoffice-{}",
        probegate_contract::consent::to_hex(&id_bytes)
    );
    let mut options = MqttOptions::new(id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(true);
    options.set_manual_acks(true);
    options.set_max_packet_size(Some(8 << 20));
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, eventloop) = AsyncClient::new(options, 1000);
    let stats = Arc::new(Stats::default());
    let shared = format!("$share/{group}/{}", probegate_contract::topic::ALL);
    tokio::spawn(run(
        client.clone(),
        eventloop,
        shared,
        db,
        stats.clone(),
        discovery,
    ));
    Ingest { client, stats }
}

async fn run(
    client: AsyncClient,
    mut eventloop: rumqttc::v5::EventLoop,
    shared: String,
    db: Db,
    stats: Arc<Stats>,
    mut discovery: Option<crate::homeassistant::Discovery>,
) {
    let validators = Validators::new();
    // Acks wait here when the client's request queue is full: awaiting room there would stop
    // this loop from polling the event loop, the only thing that empties the queue.
    let mut unacked: std::collections::VecDeque<rumqttc::v5::mqttbytes::v5::Publish> =
        Default::default();
    loop {
        while let Some(p) = unacked.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unacked.pop_front();
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("connected to the broker; subscribing to {shared}");
                if let Some(d) = &mut discovery {
                    d.forget();
                }
                let mut topics = vec![shared.clone()];
                topics.extend(RETAINED.iter().map(|t| t.to_string()));
                for topic in topics {
                    if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce).await {
                        tracing::error!("cannot subscribe: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                stats.subscribed.store(true, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let stored = handle(&db, &validators, &stats, &p.topic, &p.payload).await;
                if let (Some(d), true) = (&mut discovery, stored) {
                    announce(
                        &client,
                        d,
                        std::str::from_utf8(&p.topic).unwrap_or_default(),
                    );
                }
                unacked.push_back(p);
            }
            Ok(_) => {}
            Err(e) => {
                stats.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!("broker connection: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Publishes a gateway's Home Assistant sensor config the first time one of its occupancy
/// windows is stored. `try_publish`: awaiting room in the client's queue would stop this loop
/// from polling the event loop; a full queue leaves the gateway for its next window.
fn announce(client: &AsyncClient, discovery: &mut crate::homeassistant::Discovery, topic: &str) {
    use crate::homeassistant::{PLUGIN, STREAM};
    let Some(Topic::Plugin {
        site,
        gateway,
        plugin: PLUGIN,
        stream: STREAM,
    }) = Topic::parse(topic)
    else {
        return;
    };
    if !discovery.needs(site, gateway) {
        return;
    }
    let (config_topic, config) = discovery.sensor(site, gateway);
    match client.try_publish(config_topic, QoS::AtLeastOnce, true, config.to_string()) {
        Ok(()) => {
            tracing::info!("Home Assistant discovery: announced the occupancy of {site}/{gateway}");
            discovery.done(site, gateway);
        }
        Err(e) => tracing::warn!("Home Assistant discovery: {e}; retrying with the next window"),
    }
}

/// Validates and stores one message; whether it was valid and is stored (now or before).
async fn handle(
    db: &Db,
    validators: &Validators,
    stats: &Stats,
    topic: &[u8],
    payload: &[u8],
) -> bool {
    let Ok(topic) = std::str::from_utf8(topic) else {
        stats.invalid.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    // Clearing a retained message (an empty payload) is the broker's business, not data.
    if payload.is_empty() {
        return false;
    }
    // Anyone who may publish under the tree picks the topic, and schema errors quote the
    // payload: both are cut and escaped before they reach the log.
    let shown = Escaped::new(topic);
    let Some(parsed) = Topic::parse(topic) else {
        stats.invalid.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{shown}: not on the probegate topic tree; ignored");
        return false;
    };
    if matches!(parsed, Topic::Command { .. }) {
        return false;
    }
    if let Err(e) = validators.check(topic, payload) {
        stats.invalid.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("refused: {}", Escaped::new(&e));
        return false;
    }
    // A database error is retried: a message is acknowledged only once it is stored.
    let mut wait = Duration::from_millis(100);
    loop {
        match store::store(db, &parsed, payload).await {
            Ok(true) => {
                stats.stored.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Ok(false) => {
                stats.repeats.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(e) if e.root_cause().is::<serde_json::Error>() => {
                // Valid by its schema yet not what this service reads: nothing to retry.
                stats.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{shown}: cannot read: {}", Escaped::new(&format!("{e:#}")));
                return false;
            }
            Err(e) => {
                tracing::error!(
                    "{shown}: cannot store: {}; retrying",
                    Escaped::new(&format!("{e:#}"))
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_bad_ones_say_why() {
        let b = Broker::parse("mqtt://127.0.0.1:18830").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 18830));
        let b = Broker::parse("mqtt://bo:secret@broker.example").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("broker.example", 1883));
        assert_eq!(b.credentials, Some(("bo".into(), "secret".into())));
        assert!(
            Broker::parse("tcp://x")
                .unwrap_err()
                .to_string()
                .contains("mqtt://")
        );
        assert!(
            Broker::parse("mqtt://x:y")
                .unwrap_err()
                .to_string()
                .contains("port")
        );
    }
}
