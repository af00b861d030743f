//! Host side of `plugins/wit`: generated from the same WIT files the SDK uses, one module per
//! plugin kind sharing the data types and host functions.

pub mod analytics {
    wasmtime::component::bindgen!({
        world: "analytics",
        path: "../plugins/wit",
        // A plugin that logs without end within one call is stopped like one that loops.
        imports: { "probegate:plugin/host.log": trappable },
    });
}

pub mod filter {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../plugins/wit",
        with: {
            "probegate:plugin/types": super::analytics::probegate::plugin::types,
            "probegate:plugin/host": super::analytics::probegate::plugin::host,
        },
    });
}

pub use analytics::probegate::plugin::host::Host;
pub use analytics::probegate::plugin::types::{
    Host as TypesHost, LogLevel, PublishError, StateError, Verdict,
};
