//! The C example plugin (`plugins/c/visit-tally`): its tools and its build.
//!
//! It is built from `plugins/wit` alone, with bindings generated at every build and never
//! committed, so a change to the contract that C cannot follow breaks this build.

use crate::{dpkg_installed, is_root, plugin_target_dir, root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian 12's clang 14 targets wasm32 out of the box; `wasi-libc` gives it malloc and the
/// string functions the generated bindings call.
const APT_PACKAGES: &[&str] = &["clang", "lld", "wasi-libc"];
/// The wit-bindgen the Rust SDK uses, so both languages see the contract the same way.
const WIT_BINDGEN: &str = "0.61.1";
const PLUGIN: &str = "visit-tally";
const STEM: &str = "visit_tally";

/// Installs clang, wasi-libc and the `wit-bindgen` CLI if missing.
pub fn deps() -> crate::Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        let apt = |args: &[&str]| {
            let mut cmd = if is_root() {
                Command::new("apt-get")
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("apt-get");
                sudo
            };
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        run(&mut apt(&["update", "-qq"]))?;
        run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))?;
    }
    let have = Command::new(wit_bindgen())
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("wit-bindgen-cli {WIT_BINDGEN}")
        });
    if !have {
        // Into a root of our own, so a developer's wit-bindgen of another version stays as
        // it is. Only the C generator, though that saves just ten of ~145 crates: most of
        // the minutes go to the wasm-tools crates every generator needs. Unoptimised: it
        // reads a few small WIT files, and compiles in far less time than optimised.
        run(Command::new("cargo")
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .args(["install", "wit-bindgen-cli", "--version", WIT_BINDGEN])
            .args([
                "--locked",
                "--no-default-features",
                "--features",
                "c",
                "--root",
            ])
            .arg(tools_root()))?;
    }
    Ok(())
}

/// Builds the C plugin into `build/` and copies it and its manifest to `out` as
/// `visit_tally.wasm` and `visit_tally.toml`.
pub fn build(build: &Path, out: &Path) -> crate::Result {
    let dir = root().join("plugins/c").join(PLUGIN);
    let build = build.join("c").join(PLUGIN);
    run(Command::new("sh")
        .arg(dir.join("build.sh"))
        .arg(&build)
        .env("WIT_BINDGEN", wit_bindgen()))?;
    for (from, to) in [
        (build.join(format!("{STEM}.wasm")), format!("{STEM}.wasm")),
        (dir.join("manifest.toml"), format!("{STEM}.toml")),
    ] {
        // Tests may read the previous copy while we write: write aside, then rename.
        let tmp = out.join(format!(".{to}.tmp"));
        std::fs::copy(&from, &tmp).map_err(|e| format!("{}: {e}", from.display()))?;
        std::fs::rename(&tmp, out.join(&to)).map_err(|e| format!("{e}"))?;
    }
    eprintln!("plugin: target/wasm/{STEM}.wasm (C)");
    Ok(())
}

/// Kept with the plugins' build, so CI that keeps that warm keeps the tool too.
fn tools_root() -> PathBuf {
    plugin_target_dir().join("tools")
}

pub(crate) fn wit_bindgen() -> PathBuf {
    tools_root().join("bin/wit-bindgen")
}
