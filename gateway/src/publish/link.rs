//! The MQTT connection in either protocol version. rumqttc has one client and event loop for
//! 3.1.1 and another, with types of its own, for 5; this module puts both behind one face so
//! the session's transport and driver are written once, and both versions keep the outbox's
//! semantics (hand-over order equals packet-id order) unchanged.

use super::envelope::{Identity, Status, Topics};
use super::outbox::Entry;
use crate::config::MqttConfig;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use std::time::Duration;

/// `[mqtt] protocol`: which MQTT version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttProtocol {
    /// 5 where the broker takes it, 3.1.1 otherwise.
    #[default]
    Auto,
    V5,
    V311,
}

impl<'de> serde::Deserialize<'de> for MqttProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "mqtt.protocol must be \"auto\", \"5\" or \"3.1.1\"";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MqttProtocol;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MqttProtocol, E> {
                match v {
                    "auto" => Ok(MqttProtocol::Auto),
                    "5" => Ok(MqttProtocol::V5),
                    "3.1.1" => Ok(MqttProtocol::V311),
                    _ => Err(E::custom(EXPECTED)),
                }
            }
            // `protocol = 5` is what people write; 3.1.1 cannot be a TOML number.
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MqttProtocol, E> {
                match v {
                    5 => Ok(MqttProtocol::V5),
                    _ => Err(E::custom(EXPECTED)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The version one connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    /// As in the config and in the status document's `mqtt_version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// Where messages are handed over; one per version in use.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The event loop behind a [`Client`].
pub enum Link {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the session needs to know of one step of the event loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Happened {
    Connected,
    /// A publish went out with this packet id.
    Sent(u16),
    Acknowledged(u16),
    /// A message on a topic we subscribed to.
    Received(String, Vec<u8>),
    /// Our own disconnect went out: the session is over.
    Disconnected,
    Other,
}

#[derive(Debug)]
pub struct Failure {
    pub error: String,
    /// On a v5 attempt: the broker answered the CONNECT as a broker without MQTT 5 does (a
    /// refusal of the version, a CONNACK that is not a v5 one, or hanging up before any).
    pub version_refused: bool,
}

/// The clients of the versions in use, for the driver and the session.
#[derive(Clone)]
pub struct Clients {
    v5: Option<Client>,
    v311: Option<Client>,
}

impl Clients {
    pub fn get(&self, version: Version) -> &Client {
        let client = match version {
            Version::V5 => &self.v5,
            Version::V311 => &self.v311,
        };
        client
            .as_ref()
            .expect("the transport only uses versions it has a link for")
    }

    /// The client of the version tried first.
    pub fn preferred(&self) -> &Client {
        self.v5
            .as_ref()
            .or(self.v311.as_ref())
            .expect("at least one version is in use")
    }
}

/// The event loops of the versions in use, for the transport.
pub struct Links {
    v5: Option<Link>,
    v311: Option<Link>,
}

impl Links {
    pub fn get_mut(&mut self, version: Version) -> &mut Link {
        let link = match version {
            Version::V5 => &mut self.v5,
            Version::V311 => &mut self.v311,
        };
        link.as_mut()
            .expect("the negotiation only picks versions the config allows")
    }
}

/// Connection settings shared by both versions.
pub struct Settings<'a> {
    pub config: &'a MqttConfig,
    pub identity: &'a Identity,
    pub client_id: String,
    pub transport: Option<rumqttc::Transport>,
    pub max_incoming: usize,
    pub max_outgoing: usize,
    /// rumqttc's request queue: what the driver may hand over beyond what is in flight.
    pub queue: usize,
}

/// One client and event loop per version the config allows. Nothing connects before the
/// transport polls.
pub fn open(settings: &Settings) -> (Clients, Links) {
    let wanted = |v: Version| match settings.config.protocol {
        MqttProtocol::Auto => true,
        MqttProtocol::V5 => v == Version::V5,
        MqttProtocol::V311 => v == Version::V311,
    };
    let (mut clients, mut links) = (
        Clients {
            v5: None,
            v311: None,
        },
        Links {
            v5: None,
            v311: None,
        },
    );
    if wanted(Version::V5) {
        let mut options = v5_options(settings);
        options.set_network_options(network_options());
        let (client, link) = v5::AsyncClient::new(options, settings.queue);
        clients.v5 = Some(Client::V5(client));
        links.v5 = Some(Link::V5(Box::new(link)));
    }
    if wanted(Version::V311) {
        let (client, mut link) = rumqttc::AsyncClient::new(v311_options(settings), settings.queue);
        link.set_network_options(network_options());
        clients.v311 = Some(Client::V311(client));
        links.v311 = Some(Link::V311(Box::new(link)));
    }
    (clients, links)
}

/// Without TCP_NODELAY a small write waits for the broker's delayed ACK of the one before
/// (Nagle against delayed ACK, ~40 ms on Linux): every stop waited that long for the last
/// acknowledgements, and so could a coupon. rumqttc already writes what it has in one go.
fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

fn keep_alive(config: &MqttConfig) -> Duration {
    Duration::from_secs(config.keep_alive_secs.max(5))
}

/// The last will names the version of the connection that leaves it.
fn will_body(identity: &Identity, version: Version) -> Vec<u8> {
    Status::new(identity, "offline", false, Some(version)).to_json()
}

fn v311_options(s: &Settings) -> rumqttc::MqttOptions {
    let c = s.config;
    let mut options = rumqttc::MqttOptions::new(&s.client_id, &c.host, c.port);
    options
        .set_keep_alive(keep_alive(c))
        .set_clean_session(c.session_expiry_secs == 0)
        .set_max_packet_size(s.max_incoming, s.max_outgoing)
        .set_last_will(rumqttc::LastWill::new(
            Topics::new(s.identity).status(),
            will_body(s.identity, Version::V311),
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &c.username {
        options.set_credentials(user, c.password.clone().unwrap_or_default());
    }
    if let Some(transport) = &s.transport {
        options.set_transport(transport.clone());
    }
    options
}

fn v5_options(s: &Settings) -> v5::MqttOptions {
    let c = s.config;
    let mut options = v5::MqttOptions::new(&s.client_id, &c.host, c.port);
    let will_properties = p5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: Some(JSON.into()),
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    // The broker's CONNACK sets the outgoing limit; ours tells the broker to discard a
    // command too large for us instead of breaking the connection with it.
    let persistent = c.session_expiry_secs > 0;
    options
        .set_keep_alive(keep_alive(c))
        .set_clean_start(!persistent)
        .set_session_expiry_interval(persistent.then_some(c.session_expiry_secs))
        .set_max_packet_size(Some(s.max_incoming as u32))
        // rumqttc sizes a table by this limit up front, 216 bytes a slot: its default (65,535)
        // took 13.5 MiB of a router's RAM before the first message. 100 is what MQTT 3.1.1
        // connections use; the outbox queues the rest, and brokers grant less (mosquitto: 20).
        .set_outgoing_inflight_upper_limit(100)
        .set_last_will(p5::LastWill::new(
            Topics::new(s.identity).status(),
            will_body(s.identity, Version::V5),
            v5::mqttbytes::QoS::AtLeastOnce,
            true,
            Some(will_properties),
        ));
    if let Some(user) = &c.username {
        options.set_credentials(user, c.password.clone().unwrap_or_default());
    }
    if let Some(transport) = &s.transport {
        options.set_transport(transport.clone());
    }
    options
}

/// Every payload the gateway publishes is a JSON document; v5 can say so.
const JSON: &str = "application/json";

impl Client {
    /// Hands `entry` over at QoS 1; false if rumqttc's queue is full.
    pub fn try_publish(&self, entry: &Entry) -> bool {
        let (topic, body) = (entry.topic.clone(), entry.body.clone());
        match self {
            Client::V311(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, entry.retain, body)
                .is_ok(),
            Client::V5(c) => {
                let properties = p5::PublishProperties {
                    content_type: Some(JSON.into()),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    topic,
                    v5::mqttbytes::QoS::AtLeastOnce,
                    entry.retain,
                    body,
                    properties,
                )
                .is_ok()
            }
        }
    }

    /// Subscribes at QoS 1; false if rumqttc's queue is full.
    pub fn try_subscribe(&self, topic: &str) -> bool {
        match self {
            Client::V311(c) => c.try_subscribe(topic, rumqttc::QoS::AtLeastOnce).is_ok(),
            Client::V5(c) => c
                .try_subscribe(topic, v5::mqttbytes::QoS::AtLeastOnce)
                .is_ok(),
        }
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.disconnect().await.is_ok(),
            Client::V5(c) => c.disconnect().await.is_ok(),
        };
    }
}

impl Link {
    pub async fn poll(&mut self) -> Result<Happened, Failure> {
        use rumqttc::Outgoing;
        match self {
            Link::V311(link) => {
                use rumqttc::{Event, Packet};
                match link.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Happened::Connected),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Happened::Sent(pkid)),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        Ok(Happened::Acknowledged(ack.pkid))
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Ok(Happened::Received(p.topic, p.payload.to_vec()))
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Happened::Disconnected),
                    Ok(_) => Ok(Happened::Other),
                    Err(e) => Err(Failure {
                        error: e.to_string(),
                        version_refused: false,
                    }),
                }
            }
            Link::V5(link) => {
                use v5::{Event, Incoming};
                match link.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => Ok(Happened::Connected),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Happened::Sent(pkid)),
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        if !matches!(
                            ack.reason,
                            p5::PubAckReason::Success | p5::PubAckReason::NoMatchingSubscribers
                        ) {
                            // Sending it again would be refused again: the outbox counts it
                            // as delivered, as a 3.1.1 broker's silent acknowledgement would.
                            tracing::warn!(pkid = ack.pkid, reason = ?ack.reason, "the broker refused a message");
                        }
                        Ok(Happened::Acknowledged(ack.pkid))
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => Ok(Happened::Received(
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    )),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Happened::Disconnected),
                    Ok(_) => Ok(Happened::Other),
                    Err(e) => Err(Failure {
                        version_refused: refuses_v5(&e),
                        error: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Forgets everything rumqttc still holds for the lost connection (see the transport).
    /// rumqttc keeps unacknowledged publishes to send again when the broker resumes the
    /// session; the outbox already resends them, so they would go out twice.
    pub fn clean(&mut self) {
        match self {
            Link::V311(link) => {
                link.clean();
                link.pending.clear();
            }
            Link::V5(link) => {
                link.clean();
                link.pending.clear();
            }
        }
    }
}

/// Whether a failed v5 attempt looks like a broker without MQTT 5. A 3.1.1 broker answers a
/// v5 CONNECT with a 3.1.1 CONNACK "unacceptable protocol version" and hangs up (rumqttc's
/// v5 reader cannot parse that CONNACK and sees the hang-up), or just hangs up. A broker
/// that is down refuses the TCP connection instead, and a silent one times out: neither is
/// taken for a refusal.
fn refuses_v5(e: &v5::ConnectionError) -> bool {
    use std::io::ErrorKind;
    use v5::{ConnectionError, StateError};
    match e {
        ConnectionError::ConnectionRefused(code) => matches!(
            code,
            p5::ConnectReturnCode::UnsupportedProtocolVersion
                | p5::ConnectReturnCode::RefusedProtocolVersion
        ),
        ConnectionError::NotConnAck(_) => true,
        ConnectionError::MqttState(
            StateError::ConnectionAborted | StateError::Deserialization(_),
        ) => true,
        ConnectionError::MqttState(StateError::Io(e)) | ConnectionError::Io(e) => matches!(
            e.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// Which version the next connection attempt uses, from what the earlier ones taught.
///
/// With "auto", attempts start with 5. A v5 attempt the broker refuses as a 3.1.1 broker
/// would is followed at once by a 3.1.1 attempt; once 3.1.1 has connected it is kept for
/// the rest of the run. A 3.1.1 attempt that fails before that goes back to 5: the refusal
/// was not about the version after all (a proxy in front of a broker that is down hangs up
/// just the same).
#[derive(Debug)]
pub struct Negotiation {
    protocol: MqttProtocol,
    next: Version,
    settled: bool,
}

impl Negotiation {
    pub fn new(protocol: MqttProtocol) -> Negotiation {
        Negotiation {
            protocol,
            next: match protocol {
                MqttProtocol::V311 => Version::V311,
                MqttProtocol::Auto | MqttProtocol::V5 => Version::V5,
            },
            settled: false,
        }
    }

    pub fn protocol(&self) -> MqttProtocol {
        self.protocol
    }

    pub fn next(&self) -> Version {
        self.next
    }

    /// The attempt with `next()` connected. True the first time "auto" settles on 3.1.1:
    /// the one moment worth a log line.
    pub fn connected(&mut self) -> bool {
        let fell_back =
            self.protocol == MqttProtocol::Auto && self.next == Version::V311 && !self.settled;
        self.settled |= fell_back;
        fell_back
    }

    /// The attempt with `next()` failed before the broker accepted it. True if the next
    /// attempt (with the other version) should follow at once.
    pub fn failed(&mut self, version_refused: bool) -> bool {
        if self.protocol != MqttProtocol::Auto {
            return false;
        }
        match self.next {
            Version::V5 if version_refused => {
                self.next = Version::V311;
                true
            }
            Version::V311 if !self.settled => {
                self.next = Version::V5;
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_5_then_311_at_once_and_keeps_311_once_it_connected() {
        let mut n = Negotiation::new(MqttProtocol::Auto);
        assert_eq!(n.next(), Version::V5);
        assert!(!n.failed(false), "a broker that is down is no refusal");
        assert_eq!(n.next(), Version::V5);
        assert!(n.failed(true));
        assert_eq!(n.next(), Version::V311);
        assert!(n.connected(), "the fall-back is logged");
        assert!(!n.failed(false));
        assert_eq!(n.next(), Version::V311, "kept for the rest of the run");
        assert!(!n.connected(), "logged once");
    }

    #[test]
    fn auto_goes_back_to_5_when_311_fails_too_before_connecting() {
        let mut n = Negotiation::new(MqttProtocol::Auto);
        assert!(n.failed(true));
        assert!(!n.failed(false));
        assert_eq!(n.next(), Version::V5);
        assert!(!n.connected(), "5 connecting is no fall-back");
        assert_eq!(n.next(), Version::V5);
    }

    #[test]
    fn a_forced_version_never_changes() {
        for (protocol, version) in [
            (MqttProtocol::V5, Version::V5),
            (MqttProtocol::V311, Version::V311),
        ] {
            let mut n = Negotiation::new(protocol);
            assert!(!n.failed(true));
            assert_eq!(n.next(), version);
            assert!(!n.connected());
        }
    }
}
