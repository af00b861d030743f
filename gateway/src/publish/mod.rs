//! Publishing to the back office over MQTT: the topic tree, the envelope, one session.

mod envelope;
mod link;
pub mod outbox;
pub mod schemas;
mod session;
pub mod spool;

pub use envelope::{Envelope, Identity, Status, Topics};
pub use link::{MqttProtocol, Version};
pub use session::{Session, SessionReport, TlsFiles};
