//! The Zig example plugin (`plugins/zig/signal-bands`): built like the C one, from the WIT
//! alone through wit-bindgen's C bindings, with the zig that `cargo xtask deps` installs.

use crate::{cplugin, dist, root, run};
use std::path::Path;
use std::process::Command;

const PLUGIN: &str = "signal-bands";
const STEM: &str = "signal_bands";

/// Runs its unit tests natively, builds it into `build/`, and copies it and its manifest to
/// `out` as `signal_bands.wasm` and `signal_bands.toml`.
pub fn build(build: &Path, out: &Path) -> crate::Result {
    let dir = root().join("plugins/zig").join(PLUGIN);
    let build = build.join("zig").join(PLUGIN);
    let zig = dist::ensure_zig()?;
    for arg in [Path::new("--test"), build.as_path()] {
        run(Command::new("sh")
            .arg(dir.join("build.sh"))
            .arg(arg)
            .env("ZIG", &zig)
            .env("WIT_BINDGEN", cplugin::wit_bindgen()))?;
    }
    for (from, to) in [
        (build.join(format!("{STEM}.wasm")), format!("{STEM}.wasm")),
        (dir.join("manifest.toml"), format!("{STEM}.toml")),
    ] {
        // Tests may read the previous copy while we write: write aside, then rename.
        let tmp = out.join(format!(".{to}.tmp"));
        std::fs::copy(&from, &tmp).map_err(|e| format!("{}: {e}", from.display()))?;
        std::fs::rename(&tmp, out.join(&to)).map_err(|e| format!("{e}"))?;
    }
    eprintln!("plugin: target/wasm/{STEM}.wasm (Zig)");
    Ok(())
}
