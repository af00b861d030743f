//! Plugin files: components compiled on the router (`.wasm`) or precompiled off it (`.cwasm`),
//! and the one wasmtime configuration both sides must share.
//!
//! Cranelift has no 32-bit backend and is most of a wasmtime binary, so router builds without
//! the `compiler` feature run plugins that trusted tooling precompiled for them with
//! `probegate plugin precompile --target pulley32` (Pulley bytecode, for mipsel and armv7) or
//! `--target aarch64-unknown-linux-musl` (native code; the host build's `router-targets`
//! feature brings the aarch64 and x86_64 backends). wasmtime accepts such a file only into
//! an engine of the same version and the same settings: [`engine_config`] is the single place
//! that decides those settings, for the daemon's engine and for the precompiler alike.
//!
//! Trust: wasmtime does not validate precompiled code; it runs it as it finds it, so a
//! `.cwasm` can do anything the daemon (root) can. One is loaded only where the site config
//! says `trust_precompiled = true` in `[limits]`, which makes every plugin path of that config
//! a place for code only the operator may write. Bundles add a second gate: their precompiled
//! member is installed only under a key trusted for precompiled code (`bundle::check`); a
//! plugin author's key will not do.

use wasmtime::component::Component;
use wasmtime::{Config, Engine, Precompiled};

/// Deep recursion must end in a trap long before the thread's own stack is in danger.
const MAX_WASM_STACK: usize = 256 * 1024;

/// Where to look for the fix when a precompiled plugin is refused for want of trust.
const UNTRUSTED: &str = "the file is precompiled code, which is not validated when loaded: it is \
    accepted only with `trust_precompiled = true` in [limits] of the site config";

/// The engine settings for `target`, a wasmtime target name ("pulley32",
/// "aarch64-unknown-linux-musl", ...), or for the CPU this binary runs on (`None`).
/// Anything that changes here changes what a precompiled plugin must have been built with.
pub fn engine_config(target: Option<&str>) -> Result<Config, String> {
    let mut config = Config::new();
    // A `pulley` build interprets every plugin, as a 32-bit router does (see `native_target`).
    let target = target.or(cfg!(feature = "pulley").then_some(PULLEY_HERE));
    // Fuel rather than epochs: epochs need 64-bit atomics, which 32-bit MIPS lacks.
    config
        .consume_fuel(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .wasm_component_model(true);
    // For a developer's `perf`: plugin code is otherwise anonymous memory (plugins/README.md).
    if std::env::var_os("PROBEGATE_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(target) = target {
        config
            .target(target)
            .map_err(|e| format!("wasmtime target {target:?}: {e}"))?;
    }
    Ok(config)
}

/// The Pulley target of the CPU this binary runs on.
const PULLEY_HERE: &str = if cfg!(target_pointer_width = "64") {
    "pulley64"
} else {
    "pulley32"
};

/// The wasmtime target this build runs plugins for: what a bundle's precompiled artifact
/// must be made for (`plugin.<target>.cwasm`) to be used here instead of the `.wasm`.
pub fn native_target() -> String {
    if cfg!(feature = "pulley") && cfg!(target_endian = "little") {
        return PULLEY_HERE.into();
    }
    if cfg!(all(not(feature = "compiler"), target_pointer_width = "32")) {
        return if cfg!(target_endian = "big") {
            "pulley32be"
        } else {
            "pulley32"
        }
        .into();
    }
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    };
    format!("{}-unknown-linux-{env}", std::env::consts::ARCH)
}

/// The component in `bytes`: compiled from a `.wasm`, or a precompiled one if `trusted`.
/// The file's contents decide, not its name, so a renamed `.cwasm` is no way around the trust.
pub fn component(engine: &Engine, bytes: &[u8], trusted: bool) -> Result<Component, String> {
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) if trusted => {
            // SAFETY: wasmtime checks the file's format, version and engine settings but not
            // the code; the operator vouched for it (`trust_precompiled`).
            unsafe { Component::deserialize(engine, bytes) }
                .map_err(|e| format!("precompiled plugin does not fit this probegate: {e:#}"))
        }
        Some(Precompiled::Component) => Err(UNTRUSTED.into()),
        Some(Precompiled::Module) => {
            Err("a precompiled core module; plugins are components".into())
        }
        None => compile(engine, bytes),
    }
}

#[cfg(feature = "compiler")]
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    Component::new(engine, bytes).map_err(|e| format!("{e:#}"))
}

#[cfg(not(feature = "compiler"))]
fn compile(_: &Engine, _: &[u8]) -> Result<Component, String> {
    let target = native_target();
    Err(format!(
        "this probegate cannot compile plugins (built without the `compiler` feature); it runs \
         plugins precompiled for it with `probegate plugin precompile --target {target}`"
    ))
}

/// Precompiles the component in `wasm` for `target` (see [`engine_config`]). The plugin is
/// first compiled and linked for this machine, so a plugin the router would refuse at load
/// (a core module, another interface) is refused here instead.
#[cfg(feature = "compiler")]
pub fn precompile(wasm: &[u8], target: &str) -> Result<Vec<u8>, String> {
    if Engine::detect_precompiled(wasm).is_some() {
        return Err("the input is already precompiled; give the .wasm component".into());
    }
    let engine =
        |target| Engine::new(&engine_config(target)?).map_err(|e| format!("wasm engine: {e:#}"));
    let here = engine(None)?;
    let component = Component::new(&here, wasm).map_err(|e| format!("{e:#}"))?;
    super::sandbox::linker(&here)
        .map_err(|e| e.to_string())?
        .instantiate_pre(&component)
        .map_err(|e| format!("{e:#}"))?;
    engine(Some(target))?
        .precompile_component(wasm)
        .map_err(|e| format!("{e:#}"))
}

#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;
    use crate::plugins::bindings::analytics::Analytics;
    use crate::plugins::manifest::Manifest;
    use crate::plugins::sandbox::{HostState, Limits, linker};
    use crate::plugins::state::State;
    use std::path::PathBuf;
    use wasmtime::Store;

    fn plugin(file: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm")
            .join(file);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build-plugins`)", path.display()))
    }

    fn host_engine() -> Engine {
        Engine::new(&engine_config(None).unwrap()).unwrap()
    }

    fn host_triple() -> String {
        format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
    }

    #[test]
    fn a_precompiled_plugin_runs_like_the_wasm_it_came_from() {
        let cwasm = precompile(&plugin("visitor_counter.wasm"), &host_triple()).unwrap();
        let engine = host_engine();
        let component = component(&engine, &cwasm, true).unwrap();
        let limits = Limits {
            fuel_per_call: 10_000_000,
            memory_bytes: 16 << 20,
            max_output_bytes: 16384,
            max_outputs_per_call: 64,
            max_outputs_per_stream_per_minute: 120,
            max_outputs_per_minute: 240,
            max_output_bytes_per_minute: 1 << 20,
            log_lines_per_minute: 60,
            state_bytes: 1024,
            instances: 16,
            tables: 16,
            memories: 2,
            min_cell: 1,
            trust_precompiled: true,
        };
        let manifest = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/visitor_counter.toml"),
        )
        .unwrap();
        let manifest = std::sync::Arc::new(Manifest::parse(&manifest).unwrap());
        let host = HostState::new(
            "vc".into(),
            limits,
            manifest,
            State::default(),
            Default::default(),
        );
        let mut store = Store::new(&engine, host);
        store.limiter(|s| &mut s.store_limits);
        store.set_fuel(10_000_000).unwrap();
        let instance = Analytics::instantiate(&mut store, &component, &linker(&engine).unwrap())
            .expect("the precompiled plugin links against the host's interface");
        instance
            .call_init(&mut store, r#"{"interval_secs":60}"#)
            .unwrap()
            .expect("init accepts its config");
        // Fuel is metered in precompiled code as in compiled code.
        assert!(store.get_fuel().unwrap() < 10_000_000);
    }

    #[test]
    fn precompiled_code_is_refused_unless_the_site_trusts_it() {
        let cwasm = precompile(&plugin("visitor_counter.wasm"), &host_triple()).unwrap();
        let e = component(&host_engine(), &cwasm, false).unwrap_err();
        assert!(e.contains("trust_precompiled = true"), "{e}");
        // Trust is not needed, and changes nothing, for a component compiled here.
        let wasm = plugin("visitor_counter.wasm");
        component(&host_engine(), &wasm, false).unwrap();
        component(&host_engine(), &wasm, true).unwrap();
    }

    #[test]
    fn a_plugin_precompiled_for_another_cpu_is_refused_with_the_reason() {
        let cwasm = precompile(&plugin("visitor_counter.wasm"), "pulley32").unwrap();
        let e = component(&host_engine(), &cwasm, true).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(e.contains("pulley32"), "{e}");
    }

    #[test]
    fn precompile_refuses_what_the_router_would_refuse() {
        // A valid but empty core module: not a component.
        let core_module = b"\0asm\x01\0\0\0";
        assert!(precompile(core_module, "pulley32").is_err());
        let cwasm = precompile(&plugin("visitor_counter.wasm"), "pulley32").unwrap();
        let e = precompile(&cwasm, "pulley32").unwrap_err();
        assert!(e.contains("already precompiled"), "{e}");
    }
}
