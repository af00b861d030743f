//! A plugin that reaches for the outside world: built for `wasm32-wasip2`, its `println!` and
//! clock reads become WASI imports (stdout, clocks, environment). The host links no WASI, so
//! it must refuse to load this, by name. Never deploy it.

use probegate_sdk::{Plugin, Sighting, export_plugin};

struct WasiUser;

impl Plugin for WasiUser {
    fn init(_config: &str) -> Result<Self, String> {
        println!(
            "hello from inside the sandbox, at {:?}",
            std::time::SystemTime::now()
        );
        Ok(WasiUser)
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        println!("{} sightings", batch.len());
    }
}

export_plugin!(WasiUser);
