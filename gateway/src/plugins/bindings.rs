//! Host side of `plugins/wit`: generated from the same WIT files the SDK uses.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../plugins/wit",
});

// `self::` because the generated module `probegate` shares its name with this crate.
pub use self::probegate::plugin::types::{LogLevel, PublishError};
