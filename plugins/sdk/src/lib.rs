//! Write a probegate plugin in Rust.
//!
//! An *analytics* plugin implements [`Plugin`] for a type that holds its state and names it in
//! [`export_plugin!`]:
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
//! A *filter* implements [`Filter`] and is exported with [`export_filter!`]. Either kind
//! ships a manifest, `<name>.toml` beside `<name>.wasm` (see `plugins/README.md`), naming its
//! streams and capabilities.
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` and the linker
//! `wasm-component-ld` (see `plugins/README.md`); the result is a component the daemon loads.
//! The contract itself, with every guarantee, is `plugins/wit/plugin.wit`.

use std::cell::RefCell;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "analytics",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "probegate_sdk::bindings",
    });
}

#[doc(hidden)]
pub mod filter_bindings {
    wit_bindgen::generate!({
        world: "filter",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "probegate_sdk::filter_bindings",
        // One set of data types and host functions for both kinds, so helpers work for both.
        with: {
            "probegate:plugin/types@0.2.0": crate::bindings::probegate::plugin::types,
            "probegate:plugin/host@0.2.0": crate::bindings::probegate::plugin::host,
        },
    });
}

pub use bindings::probegate::plugin::types::{
    LogLevel, PublishError, Sighting, StateError, Verdict,
};

// On wasm the daemon answers the host calls; in a native unit test, the host a test harness
// installed does (see [`native`] and the probegate-sdk-test crate).
#[cfg(target_arch = "wasm32")]
use bindings::probegate::plugin::host;
#[cfg(not(target_arch = "wasm32"))]
use native::calls as host;

/// An analytics plugin's state and behaviour. One value lives per plugin instance.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its `config` table (a JSON object). An error refuses the start.
    fn init(config: &str) -> Result<Self, String>;
    /// A batch of sightings in capture-time order.
    fn on_sightings(&mut self, _batch: &[Sighting]) {}
    /// Pipeline time reached `now_ms`; every sighting before it was delivered.
    fn on_tick(&mut self, _now_ms: u64) {}
    /// A control message from the back office to this plugin.
    fn on_message(&mut self, _topic: &str, _payload: &str) {}
    /// The capture ended, the daemon is stopping or the host restarts the plugin empty:
    /// publish partial results now.
    fn on_stop(&mut self, _now_ms: u64) {}
}

/// A filter's state and behaviour: it judges sightings before analytics plugins see them.
pub trait Filter: Sized + 'static {
    /// Builds the filter from its `config` table (a JSON object). An error refuses the start.
    fn init(config: &str) -> Result<Self, String>;
    /// One verdict per sighting of `batch`, in order.
    fn filter(&mut self, batch: &[Sighting]) -> Vec<Verdict>;
    /// Pipeline time reached `now_ms`.
    fn on_tick(&mut self, _now_ms: u64) {}
    /// A control message from the back office to this filter (e.g. a new exclusion list).
    fn on_message(&mut self, _topic: &str, _payload: &str) {}
    /// The capture ended, the daemon is stopping or the host restarts the filter empty.
    fn on_stop(&mut self, _now_ms: u64) {}
}

/// Parses the plugin's config JSON into a serde type, with a message fit for the operator.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("bad plugin config: {e}"))
}

/// Publishes `payload` as JSON to this plugin's stream `stream` (declared in its manifest).
pub fn publish<T: serde::Serialize + ?Sized>(
    stream: &str,
    payload: &T,
) -> Result<(), PublishError> {
    let text = serde_json::to_string(payload).map_err(|e| PublishError::NotJson(e.to_string()))?;
    host::publish(stream, &text)
}

/// Writes a line to the daemon's log.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Pipeline time in whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    host::now_secs()
}

/// The plugin's small RAM-only key-value state (see the WIT for what clears it).
pub mod state {
    use super::{StateError, host};

    /// The bytes stored under `key`, if any.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::state_get(key)
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
        host::state_set(key, value)
    }

    /// Removes `key`.
    pub fn delete(key: &str) {
        host::state_delete(key)
    }

    /// Reads `key` as JSON into `T`; `None` if absent or unreadable.
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    /// Stores `value` under `key` as JSON.
    pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|_| StateError::BadKey)?;
        set(key, &bytes)
    }
}

// Wasm plugins are single-threaded and the host never overlaps calls, so one slot suffices.
thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub mod runtime {
    use super::*;

    /// Runs `f` on the instance; `None` when init never succeeded (the host does not call
    /// then, so doing nothing is the safe answer).
    pub fn with<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            slot.as_mut().and_then(|b| b.downcast_mut::<T>()).map(f)
        })
    }

    pub fn install<T: 'static>(value: T) {
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(value)));
    }

    pub fn init<P: Plugin>(config: String) -> Result<(), String> {
        install(P::init(&config)?);
        Ok(())
    }

    pub fn init_filter<F: Filter>(config: String) -> Result<(), String> {
        install(F::init(&config)?);
        Ok(())
    }

    pub fn filter<F: Filter>(batch: Vec<Sighting>) -> Vec<Verdict> {
        // Without an instance, say nothing rather than guess: the host treats a short answer
        // as a fault, and a broken filter then drops instead of passing.
        with::<F, _>(|f| f.filter(&batch)).unwrap_or_default()
    }
}

/// Exports an analytics [`Plugin`] type as the component's entry points.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __ProbegateExports;
        impl $crate::bindings::Guest for __ProbegateExports {
            fn on_sightings(batch: Vec<$crate::Sighting>) {
                $crate::runtime::with::<$plugin, _>(|p| {
                    <$plugin as $crate::Plugin>::on_sightings(p, &batch)
                });
            }
            fn init(config: String) -> Result<(), String> {
                $crate::runtime::init::<$plugin>(config)
            }
            fn on_tick(now_ms: u64) {
                $crate::runtime::with::<$plugin, _>(|p| {
                    <$plugin as $crate::Plugin>::on_tick(p, now_ms)
                });
            }
            fn on_message(topic: String, payload: String) {
                $crate::runtime::with::<$plugin, _>(|p| {
                    <$plugin as $crate::Plugin>::on_message(p, &topic, &payload)
                });
            }
            fn on_stop(now_ms: u64) {
                $crate::runtime::with::<$plugin, _>(|p| {
                    <$plugin as $crate::Plugin>::on_stop(p, now_ms)
                });
            }
        }
        $crate::bindings::export!(__ProbegateExports);
    };
}

/// Exports a [`Filter`] type as the component's entry points.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        struct __ProbegateExports;
        impl $crate::filter_bindings::Guest for __ProbegateExports {
            fn filter(batch: Vec<$crate::Sighting>) -> Vec<$crate::Verdict> {
                $crate::runtime::filter::<$filter>(batch)
            }
            fn init(config: String) -> Result<(), String> {
                $crate::runtime::init_filter::<$filter>(config)
            }
            fn on_tick(now_ms: u64) {
                $crate::runtime::with::<$filter, _>(|f| {
                    <$filter as $crate::Filter>::on_tick(f, now_ms)
                });
            }
            fn on_message(topic: String, payload: String) {
                $crate::runtime::with::<$filter, _>(|f| {
                    <$filter as $crate::Filter>::on_message(f, &topic, &payload)
                });
            }
            fn on_stop(now_ms: u64) {
                $crate::runtime::with::<$filter, _>(|f| {
                    <$filter as $crate::Filter>::on_stop(f, now_ms)
                });
            }
        }
        $crate::filter_bindings::export!(__ProbegateExports);
    };
}

/// The host for native builds (`cargo test` on your machine): a test harness installs one,
/// such as `probegate_sdk_test::MockHost`. On wasm this module does not exist: the daemon is
/// the host.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::{LogLevel, PublishError, StateError};
    use std::cell::RefCell;

    /// What a plugin can ask of its host: the WIT interface `host`.
    pub trait Host {
        fn publish(&mut self, stream: &str, payload: &str) -> Result<(), PublishError>;
        fn log(&mut self, level: LogLevel, message: &str);
        fn now_secs(&mut self) -> u64;
        fn state_get(&mut self, key: &str) -> Option<Vec<u8>>;
        fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), StateError>;
        fn state_delete(&mut self, key: &str);
    }

    thread_local! {
        static HOST: RefCell<Option<Box<dyn Host>>> = const { RefCell::new(None) };
    }

    /// Makes `host` answer this thread's host calls; returns the one it replaces. Tests run
    /// on threads of their own, so each test can have its own host.
    pub fn set_host(host: Option<Box<dyn Host>>) -> Option<Box<dyn Host>> {
        HOST.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), host))
    }

    fn with<R>(f: impl FnOnce(&mut dyn Host) -> R) -> R {
        HOST.with(|slot| {
            let mut slot = slot.borrow_mut();
            let host = slot.as_deref_mut().expect(
                "a host call outside wasm with no host installed: test through probegate_sdk_test::Harness",
            );
            f(host)
        })
    }

    #[doc(hidden)]
    pub mod calls {
        use super::*;

        pub fn publish(stream: &str, payload: &str) -> Result<(), PublishError> {
            with(|h| h.publish(stream, payload))
        }
        pub fn log(level: LogLevel, message: &str) {
            with(|h| h.log(level, message))
        }
        pub fn now_secs() -> u64 {
            with(|h| h.now_secs())
        }
        pub fn state_get(key: &str) -> Option<Vec<u8>> {
            with(|h| h.state_get(key))
        }
        pub fn state_set(key: &str, value: &[u8]) -> Result<(), StateError> {
            with(|h| h.state_set(key, value))
        }
        pub fn state_delete(key: &str) {
            with(|h| h.state_delete(key))
        }
    }
}
