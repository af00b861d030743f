//! The MQTT contract between a probegate gateway and its back office (docs/mqtt.md), in one
//! place both sides build from: which topic carries what, the JSON Schemas of docs/schemas
//! (embedded from the files, never copied), the payloads the back office reads, and the
//! consent id both sides must compute alike.

pub mod consent;
pub mod payload;
pub mod schemas;
pub mod topic;
pub mod untrusted;
