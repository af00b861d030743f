//! probegate: probe requests in, pseudonyms, WebAssembly plugins, results on MQTT.
//!
//! The data path, one stage per module:
//! [`capture`] → [`dot11`] → [`privacy`] → [`plugins`] → [`publish`], wired by [`pipeline`]
//! and started by [`daemon`].

mod atomic64;
pub mod broker;
pub mod bundle;
pub mod calibrate;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod devkit;
pub mod dot11;
pub mod flash;
pub mod overrides;
pub mod pipeline;
pub mod plugins;
pub mod privacy;
pub mod publish;
#[cfg(feature = "tail")]
pub mod tail;
pub mod telemetry;
pub use probegate_contract::untrusted;
