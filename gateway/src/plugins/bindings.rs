//! Host side of `plugins/wit`: generated from the same WIT files the SDK uses.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../plugins/wit",
});

pub use probegate::plugin::types::{LogLevel, PublishError};
