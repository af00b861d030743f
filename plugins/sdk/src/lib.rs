//! Write a probegate plugin in Rust.
//!
//! Implement [`Plugin`] for a type that holds your state, then name it in [`export_plugin!`]:
//!
//! ```ignore
//! use probegate_sdk::{export_plugin, publish, Plugin, Sighting};
//!
//! struct Counter { seen: u64 }
//!
//! impl Plugin for Counter {
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Counter { seen: 0 }) }
//!     fn on_sightings(&mut self, batch: &[Sighting]) { self.seen += batch.len() as u64; }
//!     fn on_stop(&mut self, _now_ms: u64) {
//!         let _ = publish("total", &serde_json::json!({ "sightings": self.seen }));
//!     }
//! }
//!
//! export_plugin!(Counter);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` and the linker
//! `wasm-component-ld` (see `plugins/README.md`); the result is a component the daemon loads.
//! The contract itself, with every guarantee, is `plugins/wit/plugin.wit`.

use std::cell::RefCell;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "probegate_sdk::bindings",
    });
}

pub use bindings::probegate::plugin::types::{LogLevel, PublishError, Sighting};

/// A plugin's state and behaviour. One value lives per plugin instance.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its `config` table (a JSON object). An error refuses the start.
    fn init(config: &str) -> Result<Self, String>;
    /// A batch of sightings in capture-time order.
    fn on_sightings(&mut self, _batch: &[Sighting]) {}
    /// Pipeline time reached `now_ms`; every sighting before it was delivered.
    fn on_tick(&mut self, _now_ms: u64) {}
    /// The capture ended or the daemon is stopping: publish partial results now.
    fn on_stop(&mut self, _now_ms: u64) {}
}

/// Parses the plugin's config JSON into a serde type, with a message fit for the operator.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("bad plugin config: {e}"))
}

/// Publishes `payload` as JSON to this plugin's stream `stream`.
pub fn publish<T: serde::Serialize + ?Sized>(
    stream: &str,
    payload: &T,
) -> Result<(), PublishError> {
    let text = serde_json::to_string(payload).map_err(|e| PublishError::NotJson(e.to_string()))?;
    bindings::probegate::plugin::host::publish(stream, &text)
}

/// Writes a line to the daemon's log.
pub fn log(level: LogLevel, message: &str) {
    bindings::probegate::plugin::host::log(level, message);
}

// Wasm plugins are single-threaded and the host never overlaps calls, so one slot suffices.
thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub mod runtime {
    use super::*;

    fn with<P: Plugin>(f: impl FnOnce(&mut P)) {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            // The host always calls init first; a missing instance means init failed and the
            // host should not have called us, so doing nothing is the safe answer.
            if let Some(p) = slot.as_mut().and_then(|b| b.downcast_mut::<P>()) {
                f(p);
            }
        });
    }

    pub fn init<P: Plugin>(config: String) -> Result<(), String> {
        let plugin = P::init(&config)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }
    pub fn on_sightings<P: Plugin>(batch: Vec<Sighting>) {
        with::<P>(|p| p.on_sightings(&batch));
    }
    pub fn on_tick<P: Plugin>(now_ms: u64) {
        with::<P>(|p| p.on_tick(now_ms));
    }
    pub fn on_stop<P: Plugin>(now_ms: u64) {
        with::<P>(|p| p.on_stop(now_ms));
    }
}

/// Exports a [`Plugin`] type as the component's entry points.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __ProbegateExports;
        impl $crate::bindings::Guest for __ProbegateExports {
            fn init(config: String) -> Result<(), String> {
                $crate::runtime::init::<$plugin>(config)
            }
            fn on_sightings(batch: Vec<$crate::Sighting>) {
                $crate::runtime::on_sightings::<$plugin>(batch)
            }
            fn on_tick(now_ms: u64) {
                $crate::runtime::on_tick::<$plugin>(now_ms)
            }
            fn on_stop(now_ms: u64) {
                $crate::runtime::on_stop::<$plugin>(now_ms)
            }
        }
        $crate::bindings::export!(__ProbegateExports);
    };
}
