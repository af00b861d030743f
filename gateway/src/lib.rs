//! probegate: probe requests in, pseudonyms, WebAssembly plugins, results on MQTT.
//!
//! The data path, one stage per module:
//! [`capture`] → [`dot11`] → [`privacy`] → [`plugins`] → [`publish`], wired by [`pipeline`]
//! and started by [`daemon`].
//!
//! Without the `daemon` feature only the first stages are built (the capture source, the
//! parsers, the privacy gate and what they use): their unit tests are cross-built for a
//! router CPU and run under qemu (`cargo xtask dist mips --check`), without compiling
//! wasmtime, tokio and the MQTT stack for it a second time.

#[cfg(feature = "daemon")]
mod atomic64;
#[cfg(feature = "daemon")]
pub mod broker;
#[cfg(feature = "daemon")]
pub mod bundle;
/// Without the daemon: only the signature check the consent registry uses.
#[cfg(not(feature = "daemon"))]
pub mod bundle {
    pub mod signing;
}
#[cfg(feature = "daemon")]
pub mod calibrate;
pub mod capture;
mod clock;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod devkit;
pub mod dot11;
pub mod flash;
#[cfg(feature = "daemon")]
pub mod overrides;
#[cfg(feature = "daemon")]
pub mod pipeline;
#[cfg(feature = "daemon")]
pub mod plugins;
pub mod privacy;
#[cfg(feature = "daemon")]
pub mod publish;
#[cfg(feature = "tail")]
pub mod tail;
#[cfg(feature = "daemon")]
pub mod telemetry;
pub use probegate_contract::untrusted;
