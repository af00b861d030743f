//! `cargo xtask dist <target> [--full] [--check]`: cross-builds `probegate` for a router CPU and
//! packages it for OpenWrt: an `.ipk` (opkg, up to 24.10) in `target/dist/` and an `.apk`
//! (apk-tools v3, OpenWrt 25.x; see `apk.rs`) in `target/dist/<arch>/`.
//!
//! Router builds are runtime-only: plugins are precompiled off the router by the host build
//! (Pulley bytecode for 32-bit CPUs, native code for 64-bit ones) and the package's config
//! trusts them. `--full` (64-bit only) builds the `probegate-full` variant, which keeps
//! Cranelift and compiles `.wasm` plugins on the router.
//!
//! - Tools, installed when missing: zig and cargo-zigbuild (PyPI's `ziglang` and
//!   `cargo-zigbuild`, by `pip install --target` into `$CARGO_TARGET_DIR/cross/tools/`), the
//!   Rust target (rustup), flex and bison (apt, to build libpcap), qemu-user (apt, for
//!   `--check`).
//! - libpcap is linked statically: built by `zig cc` for the target from Debian's source
//!   package (`apt-get source libpcap`), once, cached under
//!   `$CARGO_TARGET_DIR/cross/libpcap/<triple>/`.
//! - The daemon is built with the release profile (size-optimised, stripped) into
//!   `$CARGO_TARGET_DIR/cross/cargo/` (one for every triple, which share their build scripts
//!   and proc macros), so host builds keep their own directory warm.
//! - `--check` unpacks the packages and checks their structure and fields, then runs the packaged
//!   binary under qemu-user: it replays a real capture through the packaged visitor-counter
//!   plugin to a mosquitto on 127.0.0.1, and a `mosquitto_sub` must receive the same counts as
//!   from the host build, between an `online` and a clean `offline` status.
//!
//! The `.ipk` is written with std and the `tar` and `gzip` commands.

use crate::apk;
use crate::{Reaper, Result, cargo_target_dir, dpkg_installed, is_root, root, run, wait_for_port};
use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One router CPU: the Rust target, what zig calls it, and the opkg architecture string the
/// package must carry exactly (opkg refuses any other).
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    /// The package's name: `probegate`, or `probegate-full` for the variant that compiles
    /// plugins on the router (`--full`).
    package: &'static str,
    triple: &'static str,
    zig: &'static str,
    opkg_arch: &'static str,
    qemu: &'static str,
    /// ELF `e_machine` of the target's binaries.
    elf_machine: u16,
    /// ELF class: 32 or 64 bits.
    elf_bits: u8,
    /// No std for this target can be downloaded: nightly's `-Zbuild-std` builds it from
    /// rust-src, with the same flags as everything else.
    build_std: bool,
    /// For rustc, on this target only (std included, with build-std).
    rustflags: &'static [&'static str],
    /// The gateway's cargo features (default features are left out; `daemon` is the daemon
    /// itself, see gateway/Cargo.toml).
    features: &'static str,
    /// The wasmtime target plugins are precompiled for, when the router build has no
    /// compiler: the package then ships `.cwasm` files and a config that trusts them.
    precompile_for: Option<&'static str>,
    /// `--check` also runs the library's unit tests (the parsers, the privacy gate) under
    /// qemu: worth it on one 32-bit big-endian target, where libc's struct layouts and the
    /// byte order differ from the host's.
    unit_tests: bool,
}

const TARGETS: &[Target] = &[
    Target {
        name: "aarch64",
        package: PACKAGE,
        triple: "aarch64-unknown-linux-musl",
        zig: "aarch64-linux-musl",
        opkg_arch: "aarch64_cortex-a53",
        qemu: "qemu-aarch64",
        elf_machine: 183,
        elf_bits: 64,
        build_std: false,
        rustflags: &[],
        // Runtime only, like every router build: Cranelift would be 75-90 % of the binary,
        // and the plugins are precompiled off the router (`--full` keeps the compiler).
        features: "daemon",
        precompile_for: Some("aarch64-unknown-linux-musl"),
        unit_tests: false,
    },
    Target {
        name: "mipsel",
        package: PACKAGE,
        triple: "mipsel-unknown-linux-musl",
        // Soft-float, like OpenWrt's mipsel_24kc userland and Rust's target.
        zig: "mipsel-linux-musleabi",
        opkg_arch: "mipsel_24kc",
        qemu: "qemu-mipsel",
        elf_machine: 8,
        elf_bits: 32,
        build_std: true,
        rustflags: ZIG_MUSL_32,
        // No Cranelift backend for 32-bit CPUs: wasmtime runs Pulley bytecode.
        features: "daemon",
        precompile_for: Some("pulley32"),
        // mips's run covers the 32-bit layouts, with the other byte order than the host's.
        unit_tests: false,
    },
    Target {
        name: "mips",
        package: PACKAGE,
        triple: "mips-unknown-linux-musl",
        // Big-endian, soft-float: OpenWrt's ath79 and older MIPS routers (mips_24kc).
        zig: "mips-linux-musleabi",
        opkg_arch: "mips_24kc",
        qemu: "qemu-mips",
        elf_machine: 8,
        elf_bits: 32,
        build_std: true,
        rustflags: ZIG_MUSL_32,
        // Pulley's big-endian flavour: its bytecode and the wasm memory it addresses keep
        // their byte order, which the interpreter must know when the plugin is precompiled.
        features: "daemon",
        precompile_for: Some("pulley32be"),
        // 32 bits and big-endian: libc's layouts (the pcap packet header) and the parsers'
        // byte order both differ from the host's. The replay (radiotap, 802.11, pcap
        // headers, Pulley) exercises them end to end too.
        unit_tests: true,
    },
    Target {
        name: "armv7",
        package: PACKAGE,
        triple: "armv7-unknown-linux-musleabihf",
        zig: "arm-linux-musleabihf",
        opkg_arch: "arm_cortex-a7_neon-vfpv4",
        qemu: "qemu-arm",
        elf_machine: 40,
        elf_bits: 32,
        // rustup lists a std for this target, but it could not be downloaded here.
        build_std: true,
        rustflags: ZIG_MUSL_32,
        // Cranelift has no 32-bit ARM backend either.
        features: "daemon",
        precompile_for: Some("pulley32"),
        // mips's run covers the 32-bit layouts.
        unit_tests: false,
    },
    Target {
        name: "x86_64",
        package: PACKAGE,
        triple: "x86_64-unknown-linux-musl",
        zig: "x86_64-linux-musl",
        // OpenWrt's x86/64 target: PC-style routers and virtual machines.
        opkg_arch: "x86_64",
        qemu: "qemu-x86_64",
        elf_machine: 62,
        elf_bits: 64,
        build_std: false,
        rustflags: &[],
        features: "daemon",
        precompile_for: Some("x86_64-unknown-linux-musl"),
        unit_tests: false,
    },
];

/// rustc flags for the 32-bit targets, whose std is built here (build-std) and linked by zig.
const ZIG_MUSL_32: &[&str] = &[
    // zig brings musl and the C runtime objects; Rust's own copies would clash.
    "-Clink-self-contained=no",
    // Rust's 32-bit musl targets link dynamically by default; routers need static.
    "-Ctarget-feature=+crt-static",
    // zig's musl is 1.2, whose time fields are 64 bits wide on 32-bit CPUs (its
    // `struct timeval` is 16 bytes), and libpcap is compiled against it; without this cfg the
    // libc crate keeps musl 1.1's 8-byte timeval for pcap's packet header. (Reported to read
    // as caplen 0; a build without it still replayed the check's capture correctly here on
    // 2026-11-30, libc 0.2.191 and zig 0.17.1, so the replay check alone may not catch its
    // absence.)
    "--cfg",
    "libc_unstable_musl_v1_2",
];

/// `--full`: the variant that compiles plugins on the router (64-bit CPUs only), for stores
/// that load `.wasm` plugins directly. It replaces `probegate`, as OpenWrt's `-full` variants
/// (dnsmasq-full, ...) replace theirs.
fn full_variant(target: &Target) -> Result<Target> {
    if target.elf_bits != 64 {
        return Err(format!(
            "{}: Cranelift has no 32-bit backend, so there is no --full build",
            target.name
        ));
    }
    Ok(Target {
        package: FULL_PACKAGE,
        // `compiler` brings `daemon`.
        features: "compiler",
        precompile_for: None,
        ..*target
    })
}

/// Versions installed when missing; the ones this task was checked with.
const ZIGLANG: &str = "ziglang==0.17.1";
const CARGO_ZIGBUILD: &str = "0.24.0";
/// The toolchain for `-Zbuild-std` (unstable). The machine's nightly: any recent one builds
/// std from its own rust-src.
const NIGHTLY: &str = "nightly";
/// Host packages: libpcap's grammar and scanner need bison and flex; `apt-get source` needs
/// dpkg-dev to unpack and patch the source package.
const BUILD_APT: &[&str] = &["flex", "bison", "dpkg-dev"];

/// The crate and binary, and the default package's name.
const PACKAGE: &str = "probegate";
const FULL_PACKAGE: &str = "probegate-full";
/// The package's conffiles (the site config, the UCI file): opkg and apk keep the user's
/// edited copies on upgrade.
const CONFFILES: &[&str] = &["/etc/probegate/probegate.toml", "/etc/config/probegate"];
/// The user and group the daemon runs as, created at install: opkg reads `Require-User`
/// from the control file, apk `lib/apk/packages/<name>.rusers` (OpenWrt's `USERID`).
const REQUIRE_USER: &str = "probegate:probegate";
const PLUGIN: &str = "visitor_counter.wasm";
/// The capture `--check` replays under qemu (a day in a university lab, many intervals).
const CHECK_CAPTURE: &str = "gateway/tests/data/fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// The package's files: path on the router, where it comes from, mode.
fn data_files(target: &Target, binary: &Path) -> Vec<(String, PathBuf, u32)> {
    let root = root();
    let plugins = root.join("target/wasm");
    let stem = PLUGIN.trim_end_matches(".wasm");
    let (config, plugin) = match target.precompile_for {
        Some(_) => (
            built_dir(target).join("probegate.toml"),
            built_dir(target)
                .join("plugins")
                .join(format!("{stem}.cwasm")),
        ),
        None => (root.join("config/probegate.toml"), plugins.join(PLUGIN)),
    };
    let plugin_name = plugin.file_name().expect("a file").to_string_lossy();
    let mut files: Vec<(String, PathBuf, u32)> = vec![
        ("usr/bin/probegate".into(), binary.to_owned(), 0o755),
        (
            "etc/init.d/probegate".into(),
            root.join("openwrt/files/probegate.init"),
            0o755,
        ),
        // It may hold the broker password: readable by root only until the init script hands
        // it to group probegate (0640), the daemon's.
        ("etc/probegate/probegate.toml".into(), config, 0o600),
        (
            "etc/config/probegate".into(),
            root.join("openwrt/files/probegate.config"),
            0o644,
        ),
        // Starts the daemon when its monitor interface appears, stops it when it goes.
        (
            "etc/hotplug.d/net/50-probegate".into(),
            root.join("openwrt/files/probegate.hotplug"),
            0o644,
        ),
        // What sysupgrade keeps with "keep settings".
        (
            "lib/upgrade/keep.d/probegate".into(),
            root.join("openwrt/files/probegate.keep"),
            0o644,
        ),
        // CAP_NET_RAW, all the capture needs, for procd to hand to user probegate.
        (
            "etc/capabilities/probegate.json".into(),
            root.join("openwrt/files/probegate.capabilities"),
            0o644,
        ),
        (
            format!("usr/lib/probegate/plugins/{plugin_name}"),
            plugin,
            0o644,
        ),
    ];
    // The daemon loads no plugin without its manifest, beside the component.
    files.push((
        format!("usr/lib/probegate/plugins/{stem}.toml"),
        plugins.join(format!("{stem}.toml")),
        0o644,
    ));
    files
}

/// Where the cross build leaves the binary.
fn built_binary(target: &Target) -> PathBuf {
    cross_target_dir()
        .join(target.triple)
        .join("release")
        .join(PACKAGE)
}

/// The runtime-only router binary for `name` (`x86_64`, `mipsel`, ...), built as
/// `cargo xtask dist` builds it: the bench measures what routers run.
pub fn router_binary(name: &str) -> Result<PathBuf> {
    let target = target_named(name)?;
    dist(&[name.into()])?;
    Ok(built_binary(&target))
}

fn target_named(name: &str) -> Result<Target> {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .copied()
        .ok_or_else(|| format!("no router target {name:?}"))
}

/// What is made for `target` besides the binary: precompiled plugins, the config that
/// trusts them.
fn built_dir(target: &Target) -> PathBuf {
    cross_dir().join(target.triple).join("files")
}

pub fn dist(args: &[String]) -> Result {
    let usage = || {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!(
            "usage: cargo xtask dist {} [--full] [--check] [--sizes]",
            names.join(" | ")
        )
    };
    let mut target = None;
    let mut check = false;
    let mut full = false;
    let mut sizes = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            "--sizes" => sizes = true,
            "--full" => full = true,
            name => target = Some(*TARGETS.iter().find(|t| t.name == name).ok_or_else(usage)?),
        }
    }
    let mut target = target.ok_or_else(usage)?;
    if full {
        target = full_variant(&target)?;
    }
    let target = &target;
    let start = Instant::now();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    let mut step = |name: &'static str, since: &mut Instant| {
        eprintln!("dist: {name} took {:.1} s", since.elapsed().as_secs_f64());
        times.push((name, since.elapsed()));
        *since = Instant::now();
    };
    let mut since = Instant::now();

    crate::deps()?;
    let zig = tools(target, check)?;
    step("tools", &mut since);
    let (pcap_dir, pcap_version) = libpcap(target, &zig)?;
    step("libpcap", &mut since);
    crate::build_plugins()?;
    step("plugins", &mut since);
    if check || target.precompile_for.is_some() {
        // The host build: it precompiles plugins, and `--check` compares with its results.
        // Built as `cargo xtask test` builds it (with the test targets' features unified in),
        // so in CI this is already done; a plain `cargo build -p probegate` resolves some
        // shared dependencies' features differently and rebuilds wasmtime for minutes.
        run(Command::new("cargo").current_dir(root()).args([
            "test",
            "--locked",
            "--workspace",
            "--no-run",
        ]))?;
        step("host build", &mut since);
    }
    let binary = cross_build(target, &zig, &pcap_dir, &pcap_version, Strip::Yes)?;
    step("cross build", &mut since);
    if sizes {
        let unstripped = cross_build(target, &zig, &pcap_dir, &pcap_version, Strip::No)?;
        println!(
            "dist: where the bytes of {} go (the same build, unstripped):\n{}",
            binary.display(),
            crate::sizes::breakdown(&unstripped)?
        );
        step("size breakdown", &mut since);
    }
    if let Some(wasm_target) = target.precompile_for {
        precompile(target, wasm_target)?;
        step("precompile", &mut since);
    }
    let size = file_size(&binary)?;
    let ipk = package(target, &binary)?;
    let apk = apk_package(target, &binary)?;
    step("package", &mut since);
    println!(
        "dist: {} ({}, release profile, stripped): {} bytes ({:.2} MB)",
        binary.display(),
        target.triple,
        size,
        size as f64 / 1e6
    );
    println!("dist: {} ({} bytes)", ipk.display(), file_size(&ipk)?);
    println!("dist: {} ({} bytes)", apk.display(), file_size(&apk)?);
    if check {
        let unpacked = check_package(target, &ipk)?;
        check_apk_package(target, &apk)?;
        step("package check", &mut since);
        replay_under_qemu(target, &unpacked)?;
        step("qemu replay", &mut since);
        if target.unit_tests {
            unit_tests_under_qemu(target, &zig, &pcap_dir, &pcap_version)?;
            step("unit tests under qemu", &mut since);
        }
    }
    let steps: Vec<String> = times
        .iter()
        .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
        .collect();
    println!(
        "dist {}: done in {:.1} s ({}); binary {} bytes",
        target.name,
        start.elapsed().as_secs_f64(),
        steps.join(", "),
        size
    );
    Ok(())
}

fn file_size(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs what the cross build (and the check) needs, if missing; returns the zig binary.
fn tools(target: &Target, check: bool) -> Result<PathBuf> {
    let mut wanted: Vec<&str> = BUILD_APT.to_vec();
    if check {
        wanted.push("qemu-user");
    }
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !dpkg_installed(p)).collect();
    if !missing.is_empty() {
        run(&mut apt(&["update", "-qq"]))?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&missing);
        run(&mut apt(&install))?;
    }
    if target.build_std {
        let installed = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            NIGHTLY,
        ]))?;
        if !installed.lines().any(|l| l == "rust-src") {
            run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                NIGHTLY,
            ]))?;
        }
    } else {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|l| l == target.triple) {
            run(Command::new("rustup").args(["target", "add", target.triple]))?;
        }
    }
    let zig = ensure_zig()?;
    ensure_zigbuild()?;
    Ok(zig)
}

/// Our cargo-zigbuild, of the pinned version, beside zig: PyPI's `cargo-zigbuild` wheel
/// carries the prebuilt binary (2 MB to fetch), where `cargo install` compiles it for minutes
/// on a fresh machine; `cargo install` only where pip has no wheel for this machine. Ours
/// rather than one on PATH, whose version may differ.
fn ensure_zigbuild() -> Result {
    let ours = zigbuild();
    let current = Command::new(&ours)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("cargo-zigbuild {CARGO_ZIGBUILD}")
        });
    if current {
        return Ok(());
    }
    // No dependencies: its wheel asks for any ziglang, and ours is pinned (ZIGLANG).
    let from_pypi = run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--upgrade",
            "--target",
        ])
        .arg(zig_dir())
        .arg(format!("cargo-zigbuild=={CARGO_ZIGBUILD}")));
    if from_pypi.is_err() || !ours.is_file() {
        run(Command::new("cargo")
            .args(["install", "--locked", "cargo-zigbuild", "--version"])
            .arg(CARGO_ZIGBUILD)
            .arg("--root")
            .arg(zig_dir()))?;
    }
    Ok(())
}

/// Where [`ensure_zigbuild`] puts cargo-zigbuild (pip's `--target` and cargo's `--root` both
/// put programs in `bin/`).
fn zigbuild() -> PathBuf {
    zig_dir().join("bin/cargo-zigbuild")
}

/// Where `pip install --target` puts PyPI's `ziglang` for us.
/// zig, installed from PyPI if missing: the cross builds link with it, and the Zig plugin
/// template (`probegate plugin new --lang zig`, tested with the daemon) compiles with it.
pub fn ensure_zig() -> Result<PathBuf> {
    if let Some(zig) = find_zig() {
        return Ok(zig);
    }
    // Into a directory of our own: no change to the machine's Python, and allowed where
    // Debian's Python refuses global installs (PEP 668).
    run(Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--target"])
        .arg(zig_dir())
        .arg(ZIGLANG))?;
    Ok(find_zig().ok_or("pip installed ziglang, but its zig binary is not there")?)
}

fn zig_dir() -> PathBuf {
    cross_dir().join("tools/ziglang")
}

/// The zig that PyPI's `ziglang` package ships (ours, else the Python's), or one on PATH.
fn find_zig() -> Option<PathBuf> {
    let ours = zig_dir().join("ziglang/zig");
    if ours.is_file() {
        return Some(ours);
    }
    let from_pip = Command::new("python3")
        .args([
            "-c",
            "import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), 'zig'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    from_pip.or_else(|| {
        env::var_os("PATH").and_then(|paths| {
            env::split_paths(&paths)
                .map(|d| d.join("zig"))
                .find(|p| p.is_file())
        })
    })
}

/// A command run as root: directly when we are root (as in CI), else through sudo.
fn as_root(args: &[&str]) -> Command {
    let mut all: Vec<&str> = if is_root() { vec![] } else { vec!["sudo"] };
    all.extend_from_slice(args);
    let mut cmd = Command::new(all[0]);
    cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn apt(args: &[&str]) -> Command {
    let mut all = vec!["apt-get"];
    all.extend_from_slice(args);
    as_root(&all)
}

fn cross_dir() -> PathBuf {
    cargo_target_dir().join("cross")
}

/// cargo's target directory for every router triple: one, so what runs on the build machine
/// (proc macros, build scripts: ~90 units, wit-parser and regex among them) is compiled once
/// for all the triples built with the same toolchain, not once per triple.
fn cross_target_dir() -> PathBuf {
    cross_dir().join("cargo")
}

/// One libpcap build at a time: `cargo xtask test` builds them in the background
/// ([`prebuild_libpcap`]) while a `dist` may ask for the same one.
static LIBPCAP_BUILD: Mutex<()> = Mutex::new(());

/// Installs the cross tools for the targets named, then builds libpcap for each in a thread
/// of its own, so `cargo xtask test` can do it while it compiles the workspace: mostly one
/// core's work (configure), ~25 s per triple, which the host build's serial stretches hide.
pub fn prebuild_libpcap(names: &[&str]) -> Result<std::thread::JoinHandle<Result>> {
    let mut targets: Vec<Target> = Vec::new();
    for name in names {
        let target = target_named(name)?;
        if !targets.iter().any(|t| t.triple == target.triple) {
            targets.push(target);
        }
    }
    // Here, not in the thread: installs must not race the main thread's.
    let mut zig = ensure_zig()?;
    for target in &targets {
        zig = tools(target, true)?;
    }
    Ok(std::thread::spawn(move || {
        let start = Instant::now();
        for target in &targets {
            libpcap(target, &zig)?;
        }
        eprintln!(
            "libpcap for {} triples ready after {:.1} s in the background",
            targets.len(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }))
}

/// A static libpcap for the target, built once from Debian's source package with `zig cc`.
/// Returns the directory holding `libpcap.a` and libpcap's version.
fn libpcap(target: &Target, zig: &Path) -> Result<(PathBuf, String)> {
    let _one_at_a_time = LIBPCAP_BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let base = cross_dir().join("libpcap");
    let src_parent = base.join("src");
    let source = match find_source(&src_parent)? {
        Some(dir) => dir,
        None => {
            fetch_source(&src_parent)?;
            find_source(&src_parent)?.ok_or("apt-get source libpcap left no libpcap-* directory")?
        }
    };
    let version = source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libpcap-"))
        .ok_or("unexpected libpcap source directory name")?
        .to_owned();
    let out = base.join(target.triple);
    let lib = out.join("lib");
    let configure_args = [
        format!("--host={}", target.triple),
        "--disable-shared".into(),
        "--with-pcap=linux".into(),
        "--without-libnl".into(),
        "--disable-usb".into(),
        "--disable-netmap".into(),
        "--disable-bluetooth".into(),
        "--disable-dbus".into(),
        "--disable-rdma".into(),
        "--disable-remote".into(),
        "--without-dpdk".into(),
        "--without-dag".into(),
        "--without-septel".into(),
        "--without-snf".into(),
        "--without-turbocap".into(),
    ];
    let cc = format!("{} cc -target {}", zig.display(), target.zig);
    // What the cached library was built from: a change to any of it rebuilds.
    let stamp = format!("{}\n{cc}\n{}\n", source.display(), configure_args.join(" "));
    let stamp_file = out.join("built-from");
    if lib.join("libpcap.a").is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp)
    {
        eprintln!(
            "libpcap {version} for {}: cached in {}",
            target.triple,
            lib.display()
        );
        return Ok((lib, version));
    }
    let build = out.join("build");
    if build.exists() {
        io(&build, fs::remove_dir_all(&build))?;
    }
    io(&build, fs::create_dir_all(&build))?;
    io(&lib, fs::create_dir_all(&lib))?;
    run(Command::new(source.join("configure"))
        .current_dir(&build)
        .args(&configure_args)
        .arg(format!("CC={cc}"))
        .arg(format!("AR={} ar", zig.display()))
        .arg(format!("RANLIB={} ranlib", zig.display()))
        .arg("CFLAGS=-Os -fPIC")
        .stdout(Stdio::null()))?;
    run(Command::new("make")
        .current_dir(&build)
        .args(["-j2", "libpcap.a"])
        // Debian's patch reads the shared library's version from debian/changelog, which a
        // build outside the source tree does not see; the static library does not use it.
        .arg(format!("LIBVERSION={version}"))
        .stdout(Stdio::null()))?;
    io(
        &lib,
        fs::copy(build.join("libpcap.a"), lib.join("libpcap.a")),
    )?;
    io(&stamp_file, fs::write(&stamp_file, stamp))?;
    io(&build, fs::remove_dir_all(&build))?;
    eprintln!(
        "libpcap {version} for {}: built in {}",
        target.triple,
        lib.display()
    );
    Ok((lib, version))
}

fn find_source(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(io(dir, fs::read_dir(dir))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.join("configure").is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libpcap-"))
        }))
}

/// `apt-get source libpcap` into `dir`, adding Debian's deb-src line first if apt has none.
fn fetch_source(dir: &Path) -> Result {
    io(dir, fs::create_dir_all(dir))?;
    let source = |dir: &Path| {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(dir).args(["source", "-qq", "libpcap"]);
        cmd
    };
    if run(&mut source(dir)).is_ok() {
        return Ok(());
    }
    let codename =
        output(Command::new("sh").args(["-c", ". /etc/os-release && echo $VERSION_CODENAME"]))?;
    let codename = codename.trim();
    if codename.is_empty() {
        return Err("cannot tell the Debian release for a deb-src line".into());
    }
    let list = Path::new("/etc/apt/sources.list.d/probegate-deb-src.sources");
    eprintln!("adding {} for apt-get source", list.display());
    let text = format!(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: {codename}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    let tmp = dir.join("probegate-deb-src.sources");
    io(&tmp, fs::write(&tmp, text))?;
    run(as_root(&["cp"]).arg(&tmp).arg(list))?;
    run(&mut apt(&["update", "-qq"]))?;
    run(&mut source(dir))
}

#[derive(PartialEq)]
enum Strip {
    Yes,
    /// For the size breakdown: symbols kept, in a target directory of its own so the packaged
    /// build stays warm.
    No,
}

/// `cargo zigbuild --release` for the target, linking the static libpcap. Returns the binary.
fn cross_build(
    target: &Target,
    zig: &Path,
    pcap_dir: &Path,
    pcap_version: &str,
    strip: Strip,
) -> Result<PathBuf> {
    let mut target_dir = cross_target_dir();
    let mut cmd = Command::new(zigbuild());
    cross_env(&mut cmd, target, zig, pcap_dir, pcap_version);
    if strip == Strip::No {
        target_dir = cross_dir().join("cargo-unstripped");
        cmd.env("CARGO_PROFILE_RELEASE_STRIP", "false");
    }
    // Ours, called as `cargo zigbuild` calls it (cargo would take the first on its path).
    cmd.args(["zigbuild", "--release", "--locked", "-p", PACKAGE])
        // Default features add back-office tools (`tail`, with JSON Schema validation) and
        // plugin signing: a router has no use for them and the flash is small.
        .arg("--no-default-features")
        .args(["--features", target.features])
        .args(["--target", target.triple, "--target-dir"])
        .arg(&target_dir);
    if target.build_std {
        // The release profile aborts on panic, so std needs no unwinder.
        cmd.arg("-Zbuild-std=std,panic_abort");
    }
    run(&mut cmd)?;
    let binary = target_dir.join(target.triple).join("release").join(PACKAGE);
    if !binary.is_file() {
        return Err(format!("{} was not built", binary.display()));
    }
    Ok(binary)
}

/// The target's name as it appears in cargo's environment variables.
fn env_triple(target: &Target) -> String {
    target.triple.to_uppercase().replace('-', "_")
}

/// Sets up `cmd` (cargo or cargo-zigbuild) to build for `target`: toolchain, zig, rustflags,
/// the static libpcap.
fn cross_env(cmd: &mut Command, target: &Target, zig: &Path, pcap_dir: &Path, pcap_version: &str) {
    cmd.current_dir(root())
        .env("CARGO_ZIGBUILD_ZIG_PATH", zig)
        // The pcap crate links `-lpcap` from here; only libpcap.a is there, so it is static.
        .env("LIBPCAP_LIBDIR", pcap_dir)
        .env("LIBPCAP_VER", pcap_version);
    if target.build_std {
        // Through rustup's proxy, so cargo-zigbuild's own cargo and rustc are nightly too.
        // `cargo xtask` runs us with CARGO naming the stable cargo, which cargo-zigbuild
        // would call instead of the proxy.
        cmd.env("RUSTUP_TOOLCHAIN", NIGHTLY).env_remove("CARGO");
    }
    if !target.rustflags.is_empty() {
        // Per target, so build scripts and proc macros for the host are not affected.
        cmd.env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", env_triple(target)),
            target.rustflags.join(" "),
        );
    }
}

/// Precompiles the packaged plugin for the router's wasmtime with the host build, the same
/// probegate version with the same engine settings (the router refuses anything else), and
/// writes the config that trusts it.
fn precompile(target: &Target, wasm_target: &str) -> Result {
    let dir = built_dir(target);
    let plugins = dir.join("plugins");
    io(&plugins, fs::create_dir_all(&plugins))?;
    let stem = PLUGIN.trim_end_matches(".wasm");
    run(Command::new(cargo_target_dir().join("debug").join(PACKAGE))
        .args(["plugin", "precompile", "--target", wasm_target])
        .arg(root().join("target/wasm").join(PLUGIN))
        .arg("-o")
        .arg(plugins.join(format!("{stem}.cwasm"))))?;
    let source = root().join("config/probegate.toml");
    let mut config = io(&source, fs::read_to_string(&source))?;
    for (from, to) in [
        (
            format!("plugins/{PLUGIN}\""),
            format!("plugins/{stem}.cwasm\""),
        ),
        (
            "\ntrust_precompiled = false\n".to_owned(),
            "\ntrust_precompiled = true\n".to_owned(),
        ),
    ] {
        ensure(config.matches(&from).count() == 1, || {
            format!("{} does not hold {from:?} exactly once", source.display())
        })?;
        config = config.replace(&from, &to);
    }
    let out = dir.join("probegate.toml");
    io(&out, fs::write(&out, &config))?;
    // For the feed Makefile (openwrt/net/probegate), which cannot make them: the plugin,
    // its manifest and the config, by wasmtime target.
    let feed = root().join("target/dist/plugins").join(wasm_target);
    io(&feed, fs::create_dir_all(&feed))?;
    for (name, from) in [
        (
            format!("{stem}.cwasm"),
            plugins.join(format!("{stem}.cwasm")),
        ),
        (
            format!("{stem}.toml"),
            root().join("target/wasm").join(format!("{stem}.toml")),
        ),
        ("probegate.toml".to_owned(), out.clone()),
    ] {
        io(&from, fs::copy(&from, feed.join(name)))?;
    }
    Ok(())
}

/// The workspace version, read from the root Cargo.toml at run time (see `root`).
fn version() -> Result<String> {
    let manifest = root().join("Cargo.toml");
    let text = io(&manifest, fs::read_to_string(&manifest))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            let v = v.trim_start().trim_start_matches('=').trim();
            return Ok(v.trim_matches('"').to_owned());
        }
    }
    Err(format!(
        "{}: no [workspace.package] version",
        manifest.display()
    ))
}

fn description() -> Result<String> {
    let manifest = root().join("gateway/Cargo.toml");
    let text = io(&manifest, fs::read_to_string(&manifest))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("description"))
        .map(|v| {
            v.trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .ok_or_else(|| format!("{}: no description", manifest.display()))
}

/// Files' modification time in the package: SOURCE_DATE_EPOCH, else the last commit's time,
/// so that rebuilding the same commit gives the same archives.
fn mtime() -> String {
    if let Ok(s) = env::var("SOURCE_DATE_EPOCH") {
        return s;
    }
    Command::new("git")
        .current_dir(root())
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "0".into())
}

const POSTINST: &str = "#!/bin/sh
# Enables the service and starts it (only `start` on upgrade), as OpenWrt's own packages do
# through default_postinst. When an image is built (IPKG_INSTROOT set) it only enables.
[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0
[ -s \"${IPKG_INSTROOT}/lib/functions.sh\" ] || exit 0
. \"${IPKG_INSTROOT}/lib/functions.sh\"
default_postinst \"$0\" \"$@\"
";

const PRERM: &str = "#!/bin/sh
# Stops the service and disables it (only `stop` on upgrade), as OpenWrt's own packages do
# through default_prerm.
[ -s \"${IPKG_INSTROOT}/lib/functions.sh\" ] || exit 0
. \"${IPKG_INSTROOT}/lib/functions.sh\"
default_prerm \"$0\" \"$@\"
";

fn conffiles_text() -> String {
    CONFFILES.iter().map(|c| format!("{c}\n")).collect()
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result {
    if let Some(dir) = path.parent() {
        io(dir, fs::create_dir_all(dir))?;
    }
    io(path, fs::write(path, contents))?;
    io(
        path,
        fs::set_permissions(path, fs::Permissions::from_mode(mode)),
    )
}

/// `tar` of `members` (relative to `dir`) owned by root, gzip'd without a name or time stamp.
fn tar_gz(dir: &Path, members: &[&str], out: &Path) -> Result {
    let file = io(out, fs::File::create(out))?;
    let mut tar = Command::new("tar");
    tar.current_dir(dir)
        .args(["--format=gnu", "--numeric-owner", "--owner=0", "--group=0"])
        .arg(format!("--mtime=@{}", mtime()))
        .args(["-cf", "-", "--no-recursion"])
        .args(members)
        .stdout(Stdio::piped());
    eprintln!("+ {tar:?} | gzip -9n > {}", out.display());
    let mut tar_child = tar.spawn().map_err(|e| format!("cannot run tar: {e}"))?;
    let gzip = Command::new("gzip")
        .arg("-9n")
        .stdin(tar_child.stdout.take().expect("piped"))
        .stdout(file)
        .status()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    let tar_status = tar_child.wait().map_err(|e| format!("tar: {e}"))?;
    if !tar_status.success() || !gzip.success() {
        return Err(format!(
            "tar | gzip for {} failed: {tar_status}, {gzip}",
            out.display()
        ));
    }
    Ok(())
}

/// Every entry under `dir`, as `./path` (directories with a trailing `/`), for `tar
/// --no-recursion`, so the archive lists exactly what was staged.
fn members(dir: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result {
        let mut entries: Vec<_> = io(dir, fs::read_dir(dir))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                out.push(format!("{name}/"));
                walk(&e.path(), &format!("{name}/"), out)?;
            } else {
                out.push(name);
            }
        }
        Ok(())
    }
    let mut out = vec!["./".to_owned()];
    walk(dir, "./", &mut out)?;
    Ok(out)
}

/// Builds `target/dist/probegate_<version>_<arch>.ipk`.
/// A directory name of its own for each package, for staging and checks.
fn work_name(target: &Target) -> String {
    format!("{}_{}", target.package, target.opkg_arch)
}

/// The control lines that keep the two variants apart: the full one provides `probegate`,
/// and each conflicts with the other.
fn variant_fields(target: &Target) -> String {
    if target.package == PACKAGE {
        // Declared both ways, so opkg names the conflict whichever is installed first
        // (otherwise it only sees clashing files, and --force-overwrite would keep both).
        return format!("Conflicts: {FULL_PACKAGE}\n");
    }
    format!("Provides: {PACKAGE}\nConflicts: {PACKAGE}\n")
}

fn package(target: &Target, binary: &Path) -> Result<PathBuf> {
    let version = version()?;
    let stage = cross_dir().join("pkg").join(work_name(target));
    if stage.exists() {
        io(&stage, fs::remove_dir_all(&stage))?;
    }
    let data = stage.join("data");
    let control = stage.join("control");
    let outer = stage.join("outer");
    for dir in [&data, &control, &outer] {
        io(dir, fs::create_dir_all(dir))?;
    }
    let mut installed_size = 0;
    for (path, from, mode) in data_files(target, binary) {
        let bytes = io(&from, fs::read(&from))?;
        installed_size += bytes.len() as u64;
        write_file(&data.join(path), &bytes, mode)?;
    }
    // Directories 0755: tar records the staging tree's modes.
    for dir in members(&data)?.iter().filter(|m| m.ends_with('/')) {
        let path = data.join(dir);
        io(
            &path,
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)),
        )?;
    }
    let control_text = format!(
        "Package: {}\nVersion: {version}\nDepends: libc\n{}Require-User: {REQUIRE_USER}\nLicense: Apache-2.0\nSection: net\nArchitecture: {}\nInstalled-Size: {installed_size}\nDescription: {}\n",
        target.package,
        variant_fields(target),
        target.opkg_arch,
        description()?
    );
    write_file(&control.join("control"), control_text.as_bytes(), 0o644)?;
    write_file(
        &control.join("conffiles"),
        conffiles_text().as_bytes(),
        0o644,
    )?;
    write_file(&control.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    write_file(&control.join("prerm"), PRERM.as_bytes(), 0o755)?;
    io(
        &control,
        fs::set_permissions(&control, fs::Permissions::from_mode(0o755)),
    )?;
    io(
        &data,
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)),
    )?;

    let data_members = members(&data)?;
    let data_refs: Vec<&str> = data_members.iter().map(String::as_str).collect();
    tar_gz(&data, &data_refs, &outer.join("data.tar.gz"))?;
    let control_members = members(&control)?;
    let control_refs: Vec<&str> = control_members.iter().map(String::as_str).collect();
    tar_gz(&control, &control_refs, &outer.join("control.tar.gz"))?;
    write_file(&outer.join("debian-binary"), b"2.0\n", 0o644)?;

    let dist = root().join("target/dist");
    io(&dist, fs::create_dir_all(&dist))?;
    let name = format!("{}_{version}_{}.ipk", target.package, target.opkg_arch);
    let tmp = dist.join(format!(".{name}.tmp"));
    // opkg reads an .ipk as a gzip'd tar (not ar), members in this order.
    tar_gz(
        &outer,
        &["./debian-binary", "./control.tar.gz", "./data.tar.gz"],
        &tmp,
    )?;
    let ipk = dist.join(&name);
    io(&ipk, fs::rename(&tmp, &ipk))?;
    Ok(ipk)
}

/// The apk version of the package: apk requires the `-r<release>` part (OpenWrt's
/// `PKG_VERSION-rPKG_RELEASE`; the feed Makefile's PKG_RELEASE is 1).
fn apk_version() -> Result<String> {
    Ok(format!("{}-r1", version()?))
}

/// OpenWrt 25.x's package (apk-tools v3): the same files and scripts' effect as the `.ipk`,
/// in `target/dist/<arch>/<name>-<version>.apk` (OpenWrt names apk files without the arch,
/// so each arch has its own directory, as in OpenWrt's `bin/packages/<arch>/`).
fn apk_package(target: &Target, binary: &Path) -> Result<PathBuf> {
    let mut files = data_files(target, binary)
        .into_iter()
        .map(|(path, from, mode)| Ok((path, io(&from, fs::read(&from))?, mode)))
        .collect::<Result<Vec<_>>>()?;
    files.push((
        rusers_path(target),
        format!("{REQUIRE_USER}\n").into_bytes(),
        0o644,
    ));
    let scripts = apk::openwrt_scripts(target.package);
    let scripts: Vec<(&str, &str)> = scripts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let dir = root().join("target/dist").join(target.opkg_arch);
    io(&dir, fs::create_dir_all(&dir))?;
    let out = dir.join(format!("{}-{}.apk", target.package, apk_version()?));
    apk::write_apk(&apk_meta(target)?, &files, &scripts, &out)?;
    Ok(out)
}

/// Where apk's post-install (`add_group_and_user`) finds the user to create.
fn rusers_path(target: &Target) -> String {
    format!("lib/apk/packages/{}.rusers", target.package)
}

fn apk_meta(target: &Target) -> Result<apk::ApkMeta> {
    let version = apk_version()?;
    let mut depends = vec!["libc".to_owned()];
    let mut provides = vec![];
    if target.package != PACKAGE {
        depends.push(format!("!{PACKAGE}"));
        provides.push(format!("{PACKAGE}={version}"));
    } else {
        depends.push(format!("!{FULL_PACKAGE}"));
    }
    Ok(apk::ApkMeta {
        name: target.package.into(),
        version,
        arch: target.opkg_arch.into(),
        description: description()?,
        license: "Apache-2.0".into(),
        url: None,
        maintainer: None,
        depends,
        provides,
        conffiles: CONFFILES.iter().map(|c| c.to_string()).collect(),
        mtime: mtime().parse().map_err(|e| format!("mtime: {e}"))?,
    })
}

/// Reads the `.apk` back with a parser of its own and checks it as apk would see it: every
/// digest, the fields, and exactly the `.ipk`'s files with their bytes and modes, plus
/// OpenWrt's bookkeeping files and scripts.
fn check_apk_package(target: &Target, path: &Path) -> Result {
    let found = apk::check_apk(path)?;
    found.verify()?;
    let want = apk_meta(target)?;
    ensure(
        (&found.name, &found.version, &found.arch) == (&want.name, &want.version, &want.arch),
        || {
            format!(
                "apk name/version/arch {} {} {}",
                found.name, found.version, found.arch
            )
        },
    )?;
    ensure(
        found.depends == want.depends && found.provides == want.provides,
        || {
            format!(
                "apk depends {:?} provides {:?}",
                found.depends, found.provides
            )
        },
    )?;
    let lists = format!("lib/apk/packages/{}.", target.package);
    let mut expected: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    for (path, from, mode) in data_files(target, &built_binary(target)) {
        expected.insert(path, (io(&from, fs::read(&from))?, mode));
    }
    for file in &found.files {
        if file.path.starts_with(&lists) {
            continue;
        }
        let (bytes, mode) = expected
            .remove(&file.path)
            .ok_or_else(|| format!("apk holds an unexpected {}", file.path))?;
        ensure(file.data == bytes, || {
            format!("apk {}: other bytes", file.path)
        })?;
        ensure(file.mode & 0o7777 == mode, || {
            format!("apk {}: mode {:o}", file.path, file.mode)
        })?;
        ensure(file.user == "root" && file.group == "root", || {
            format!("apk {}: owned by {}:{}", file.path, file.user, file.group)
        })?;
    }
    ensure(expected.is_empty(), || {
        format!("apk lacks {:?}", expected.keys().collect::<Vec<_>>())
    })?;
    let rusers = found.file(&rusers_path(target)).map(|f| f.data.clone());
    ensure(
        rusers == Some(format!("{REQUIRE_USER}\n").into_bytes()),
        || format!("apk {} is {rusers:?}", rusers_path(target)),
    )?;
    for suffix in ["list", "conffiles", "conffiles_static"] {
        ensure(found.file(&format!("{lists}{suffix}")).is_some(), || {
            format!("apk lacks {lists}{suffix}")
        })?;
    }
    let scripts: Vec<&str> = found.scripts.keys().map(String::as_str).collect();
    ensure(
        scripts == ["post-install", "post-upgrade", "pre-deinstall"],
        || format!("apk scripts {scripts:?}"),
    )?;
    println!(
        "check: {} is an apk v3 package ({}, unsigned) with every digest right; fields, files, \
         modes and OpenWrt's scripts and lists are as expected",
        path.display(),
        found.compression
    );
    Ok(())
}

/// One line of `tar -tv --numeric-owner`.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    size: u64,
    name: String,
}

fn list(archive: &Path) -> Result<Vec<Entry>> {
    let text = output(
        Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(archive),
    )?;
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 {
                return Err(format!("{}: unexpected entry {line:?}", archive.display()));
            }
            Ok(Entry {
                mode: f[0].to_owned(),
                owner: f[1].to_owned(),
                size: f[2].parse().map_err(|_| format!("bad size in {line:?}"))?,
                name: f[5].to_owned(),
            })
        })
        .collect()
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result {
    if ok { Ok(()) } else { Err(what()) }
}

fn extract(archive: &Path, into: &Path) -> Result {
    io(into, fs::create_dir_all(into))?;
    run(Command::new("tar")
        .args(["--no-same-owner", "-xzf"])
        .arg(archive)
        .arg("-C")
        .arg(into))
}

/// Unpacks the package and checks it as opkg and a store's router would see it. Returns the
/// directory holding the unpacked data tree.
fn check_package(target: &Target, ipk: &Path) -> Result<PathBuf> {
    let version = version()?;
    let name = ipk.file_name().unwrap_or_default().to_string_lossy();
    ensure(
        name == format!("{}_{version}_{}.ipk", target.package, target.opkg_arch),
        || format!("package name {name}"),
    )?;
    let head = io(ipk, fs::read(ipk))?;
    ensure(head.starts_with(&[0x1f, 0x8b]), || {
        "the .ipk is not gzip (opkg refuses an ar outer)".into()
    })?;
    let outer: Vec<String> = list(ipk)?.into_iter().map(|e| e.name).collect();
    ensure(
        outer == ["./debian-binary", "./control.tar.gz", "./data.tar.gz"],
        || format!("outer members {outer:?}"),
    )?;

    let dir = cross_dir().join("check").join(work_name(target));
    if dir.exists() {
        io(&dir, fs::remove_dir_all(&dir))?;
    }
    extract(ipk, &dir)?;
    let debian_binary = dir.join("debian-binary");
    ensure(
        io(&debian_binary, fs::read(&debian_binary))? == b"2.0\n",
        || "debian-binary is not \"2.0\\n\"".into(),
    )?;

    // Control archive: exactly these members, root-owned, scripts executable.
    let control_tgz = dir.join("control.tar.gz");
    let control_entries = list(&control_tgz)?;
    let control_names: BTreeSet<&str> = control_entries.iter().map(|e| e.name.as_str()).collect();
    let want: BTreeSet<&str> = ["./", "./conffiles", "./control", "./postinst", "./prerm"].into();
    ensure(control_names == want, || {
        format!("control.tar.gz holds {control_names:?}")
    })?;
    for e in &control_entries {
        ensure(e.owner == "0/0", || {
            format!("control {} owned by {}", e.name, e.owner)
        })?;
        let want_mode = match e.name.as_str() {
            "./" => "drwxr-xr-x",
            "./postinst" | "./prerm" => "-rwxr-xr-x",
            _ => "-rw-r--r--",
        };
        ensure(e.mode == want_mode, || {
            format!("control {} mode {}", e.name, e.mode)
        })?;
    }
    let control_dir = dir.join("control");
    extract(&control_tgz, &control_dir)?;
    for script in ["postinst", "prerm"] {
        let path = control_dir.join(script);
        let text = io(&path, fs::read_to_string(&path))?;
        ensure(text.starts_with("#!/bin/sh\n"), || {
            format!("{script} is not a sh script")
        })?;
    }
    let fields = control_fields(&io(
        &control_dir,
        fs::read_to_string(control_dir.join("control")),
    )?)?;
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    ensure(field("Package") == target.package, || {
        format!("Package {:?}", field("Package"))
    })?;
    ensure(field("Version") == version, || {
        format!("Version {:?}", field("Version"))
    })?;
    ensure(field("Architecture") == target.opkg_arch, || {
        format!("Architecture {:?}", field("Architecture"))
    })?;
    ensure(field("Depends") == "libc", || {
        format!("Depends {:?}", field("Depends"))
    })?;
    ensure(field("Require-User") == REQUIRE_USER, || {
        format!("Require-User {:?}", field("Require-User"))
    })?;
    let (provides, conflicts) = if target.package == PACKAGE {
        ("", FULL_PACKAGE)
    } else {
        (PACKAGE, PACKAGE)
    };
    for (key, want) in [("Provides", provides), ("Conflicts", conflicts)] {
        ensure(field(key) == want, || format!("{key} {:?}", field(key)))?;
    }
    ensure(!field("Description").is_empty(), || "no Description".into())?;
    let conffiles = io(
        &control_dir,
        fs::read_to_string(control_dir.join("conffiles")),
    )?;
    ensure(conffiles == conffiles_text(), || {
        format!("conffiles {conffiles:?}")
    })?;

    // Data archive: exactly the expected tree, root-owned, with the sources' bytes.
    let data_tgz = dir.join("data.tar.gz");
    let data_entries = list(&data_tgz)?;
    let data_dir = dir.join("data");
    extract(&data_tgz, &data_dir)?;
    let files = data_files(target, &built_binary(target));
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for (path, _, mode) in &files {
        want.insert(format!("./{path}"), mode_string(*mode, false));
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            want.insert(format!("./{}/", p.display()), mode_string(0o755, true));
            parent = p.parent();
        }
    }
    want.insert("./".into(), mode_string(0o755, true));
    let got: BTreeMap<String, String> = data_entries
        .iter()
        .map(|e| (e.name.clone(), e.mode.clone()))
        .collect();
    ensure(got == want, || {
        format!("data.tar.gz holds {got:?}, expected {want:?}")
    })?;
    for e in &data_entries {
        ensure(e.owner == "0/0", || {
            format!("data {} owned by {}", e.name, e.owner)
        })?;
    }
    let installed: u64 = data_entries.iter().map(|e| e.size).sum();
    ensure(field("Installed-Size") == installed.to_string(), || {
        format!(
            "Installed-Size {} but the files hold {installed} bytes",
            field("Installed-Size")
        )
    })?;
    let mut keys: BTreeSet<&str> = [
        "Architecture",
        "Depends",
        "Description",
        "Installed-Size",
        "License",
        "Package",
        "Require-User",
        "Section",
        "Version",
    ]
    .into();
    keys.insert("Conflicts");
    if target.package != PACKAGE {
        keys.insert("Provides");
    }
    ensure(
        fields.keys().map(String::as_str).collect::<BTreeSet<_>>() == keys,
        || format!("control fields {:?}", fields.keys()),
    )?;
    for (path, from, _) in &files {
        let packaged = data_dir.join(path);
        ensure(
            io(&packaged, fs::read(&packaged))? == io(from, fs::read(from))?,
            || format!("/{path} differs from {}", from.display()),
        )?;
    }
    for conffile in CONFFILES {
        ensure(data_dir.join(&conffile[1..]).is_file(), || {
            format!("conffile {conffile} is not in the data tree")
        })?;
    }
    check_elf(target, &data_dir.join("usr/bin/probegate"))?;
    println!(
        "check: {} is a gzip'd tar of debian-binary, control.tar.gz, data.tar.gz; control fields, conffiles, scripts (0755) and the root-owned data tree are as expected",
        ipk.display()
    );
    Ok(data_dir)
}

fn mode_string(mode: u32, dir: bool) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn control_fields(text: &str) -> Result<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| format!("control line {line:?} is not `Field: value`"))?;
        if fields.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("control field {k} twice"));
        }
    }
    Ok(fields)
}

/// The binary is for the target's CPU, needs no dynamic loader (libpcap and musl are linked
/// in) and carries no symbol table (stripped).
fn check_elf(target: &Target, path: &Path) -> Result {
    let b = io(path, fs::read(path))?;
    let big = big_endian(target);
    let u16_at = |o: usize| {
        let x = [b[o], b[o + 1]];
        if big {
            u16::from_be_bytes(x)
        } else {
            u16::from_le_bytes(x)
        }
    };
    let u32_at = |o: usize| {
        let x: [u8; 4] = b[o..o + 4].try_into().expect("4 bytes");
        if big {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    };
    let u64_at = |o: usize| {
        let x: [u8; 8] = b[o..o + 8].try_into().expect("8 bytes");
        (if big {
            u64::from_be_bytes(x)
        } else {
            u64::from_le_bytes(x)
        }) as usize
    };
    let class = if target.elf_bits == 64 { 2 } else { 1 };
    let data = if big { 2 } else { 1 };
    ensure(
        b.len() > 64 && b.starts_with(&[0x7f, b'E', b'L', b'F', class, data]),
        || {
            format!(
                "{} is not a {}-bit {}-endian ELF",
                path.display(),
                target.elf_bits,
                if big { "big" } else { "little" }
            )
        },
    )?;
    // The header's offsets and sizes sit at other places in the two ELF classes.
    let (phoff, shoff, ph_at, sh_at) = if target.elf_bits == 64 {
        (u64_at(32), u64_at(40), 54, 58)
    } else {
        (u32_at(28) as usize, u32_at(32) as usize, 42, 46)
    };
    ensure(u16_at(18) == target.elf_machine, || {
        format!(
            "{} is for ELF machine {}, not {}",
            path.display(),
            u16_at(18),
            target.elf_machine
        )
    })?;
    let (phentsize, phnum) = (u16_at(ph_at) as usize, u16_at(ph_at + 2) as usize);
    let interp = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3);
    ensure(!interp, || {
        format!("{} needs a dynamic loader (PT_INTERP)", path.display())
    })?;
    let (shentsize, shnum) = (u16_at(sh_at) as usize, u16_at(sh_at + 2) as usize);
    let symtab = (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == 2);
    ensure(!symtab, || {
        format!("{} is not stripped (.symtab)", path.display())
    })?;
    Ok(())
}

/// The targets whose CPU stores the most significant byte first (MIPS as ath79 runs it).
fn big_endian(target: &Target) -> bool {
    target.triple.starts_with("mips-")
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Lines `mosquitto_sub -F "%t %p"` prints, collected by a thread.
struct Subscriber {
    _child: Reaper,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn start(port: u16) -> Result<Subscriber> {
        let mut child = Reaper(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", "probegate/#", "-F", "%t %p"])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?,
        );
        let stdout = child.0.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                sink.lock().expect("not poisoned").push(line);
            }
        });
        let sub = Subscriber {
            _child: child,
            lines,
        };
        // mosquitto_sub says nothing once subscribed: publish markers until one comes back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sub.wait_for(
            |l| l.starts_with("probegate/_ready "),
            Duration::from_millis(300),
        ) {
            if Instant::now() > deadline {
                return Err("mosquitto_sub never subscribed".into());
            }
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-t", "probegate/_ready", "-m", "ready"])
                .status()
                .map_err(|e| format!("cannot run mosquitto_pub: {e}"))?;
        }
        Ok(sub)
    }

    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .lines
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|l| pred(l))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Payloads on topics under `prefix` ending in `suffix`, in arrival order.
    fn payloads(&self, prefix: &str, suffix: &str) -> Vec<String> {
        self.lines
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|l| l.split_once(' '))
            .filter(|(t, _)| t.starts_with(prefix) && t.ends_with(suffix))
            .map(|(_, p)| p.to_owned())
            .collect()
    }
}

/// The raw JSON text of `key` at the top level of a JSON object (compact or not).
fn json_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut expecting_key = false;
    let mut current_key: Option<&str> = None;
    let mut value_start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expecting_key {
                    current_key = text.get(start..i);
                    expecting_key = false;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                expecting_key = depth == 1;
            }
            b':' if depth == 1 && current_key == Some(key) => value_start = Some(i + 1),
            b',' if depth == 1 => {
                if let Some(s) = value_start {
                    return text.get(s..i).map(str::trim);
                }
                expecting_key = true;
                current_key = None;
            }
            b'}' | b']' => {
                if depth == 1
                    && let Some(s) = value_start
                {
                    return text.get(s..i).map(str::trim);
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Replays a real capture with the packaged binary under qemu and the packaged plugin, and
/// compares what a subscriber receives with the same replay by the host build.
fn replay_under_qemu(target: &Target, unpacked: &Path) -> Result {
    let host_binary = cargo_target_dir().join("debug").join(PACKAGE);

    let work = cross_dir()
        .join("check")
        .join(format!("{}-replay", work_name(target)));
    if work.exists() {
        io(&work, fs::remove_dir_all(&work))?;
    }
    io(&work, fs::create_dir_all(&work))?;
    let port = free_port()?;
    let broker_conf = work.join("mosquitto.conf");
    io(
        &broker_conf,
        fs::write(
            &broker_conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        ),
    )?;
    let _broker = Reaper(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&broker_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto: {e}"))?,
    );
    wait_for_port(port)?;
    let sub = Subscriber::start(port)?;
    // The router runs the plugin as packaged (precompiled where it cannot compile); the host
    // build compiles the .wasm it came from.
    let packaged = data_files(target, Path::new(""))
        .into_iter()
        .find(|(path, _, _)| {
            path.starts_with("usr/lib/probegate/plugins/") && !path.ends_with(".toml")
        })
        .map(|(path, _, _)| unpacked.join(path))
        .ok_or("the package holds no plugin")?;
    let limits = if target.precompile_for.is_some() {
        "[limits]\ntrust_precompiled = true\n\n"
    } else {
        ""
    };
    let capture = root().join(CHECK_CAPTURE);

    let replay = |gateway: &str,
                  plugin: &Path,
                  limits: &str,
                  program: &mut Command|
     -> Result<Duration> {
        let config = work.join(format!("{gateway}.toml"));
        io(
            &config,
            fs::write(
                &config,
                format!(
                    "[gateway]\nsite = \"dist-check\"\nid = \"{gateway}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\n[privacy]\nsignal_floor_dbm = -95\n\n{limits}[[plugin]]\nname = \"visitor-counter\"\npath = \"{}\"\nconfig = {{ interval_secs = 300 }}\n",
                    plugin.display()
                ),
            ),
        )?;
        let start = Instant::now();
        let out = program
            .current_dir(&work)
            .env("RUST_LOG", "info")
            .args(["replay", "--config"])
            .arg(&config)
            .arg(&capture)
            .output()
            .map_err(|e| format!("cannot run {program:?}: {e}"))?;
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure(out.status.success(), || {
            format!("{gateway}: replay failed ({}):\n{stderr}", out.status)
        })?;
        if let Some(summary) = stderr.lines().find(|l| l.contains("probegate stopped")) {
            eprintln!("{gateway}: {}", summary.trim());
        }
        let topic = format!("probegate/v1/dist-check/{gateway}/status");
        ensure(
            sub.wait_for(
                |l| l.starts_with(&topic) && l.contains("\"offline\""),
                Duration::from_secs(20),
            ),
            || format!("{gateway}: no offline status arrived"),
        )?;
        Ok(took)
    };

    let mut qemu = Command::new(target.qemu);
    qemu.arg(unpacked.join("usr/bin/probegate"));
    let qemu_took = replay("gw-qemu", &packaged, limits, &mut qemu)?;
    let host_took = replay(
        "gw-host",
        &root().join("target/wasm").join(PLUGIN),
        "",
        &mut Command::new(&host_binary),
    )?;

    let counts = |gateway: &str| -> Result<Vec<String>> {
        sub.payloads(
            &format!("probegate/v1/dist-check/{gateway}/"),
            "/plugins/visitor-counter/counts",
        )
        .iter()
        .map(|p| {
            json_value(p, "data")
                .map(str::to_owned)
                .ok_or_else(|| format!("{gateway}: counts message without data: {p}"))
        })
        .collect()
    };
    let (qemu_counts, host_counts) = (counts("gw-qemu")?, counts("gw-host")?);
    ensure(qemu_counts.len() > 10, || {
        format!("only {} counts from the qemu run", qemu_counts.len())
    })?;
    ensure(qemu_counts == host_counts, || {
        format!(
            "the {} build's counts differ from the host build's:\nqemu: {qemu_counts:#?}\nhost: {host_counts:#?}",
            target.triple
        )
    })?;
    let sightings: u64 = qemu_counts
        .iter()
        .filter_map(|d| json_value(d, "sightings")?.parse::<u64>().ok())
        .sum();
    ensure(sightings > 0, || "the counts hold no sightings".into())?;
    let statuses = sub.payloads("probegate/v1/dist-check/gw-qemu/status", "");
    let state = |p: &String| json_value(p, "state").unwrap_or_default().to_owned();
    ensure(
        statuses.first().map(state).as_deref() == Some("\"online\""),
        || format!("the first status was not online: {statuses:?}"),
    )?;
    let last = statuses.last().cloned().unwrap_or_default();
    ensure(
        state(&last) == "\"offline\"" && json_value(&last, "clean") == Some("true"),
        || format!("the last status was not a clean offline: {last}"),
    )?;
    println!(
        "check: under {}, {} replayed {} through the packaged visitor counter ({}) in {:.1} s (host build {:.1} s): {} counts ({sightings} sightings) equal to the host build's, status online then clean offline",
        target.qemu,
        target.triple,
        CHECK_CAPTURE,
        packaged.file_name().unwrap_or_default().to_string_lossy(),
        qemu_took.as_secs_f64(),
        host_took.as_secs_f64(),
        qemu_counts.len()
    );
    Ok(())
}

/// Fewer passing tests than this means the build left tests out (a `cfg` gone wrong): the run
/// fails rather than passing on what is left.
const QEMU_MIN_TESTS: u32 = 70;

/// Cross-builds the library's unit tests for `target` without the `daemon` feature and runs
/// them under qemu-user: those of the parsers (radiotap and 802.11 read raw bytes whose
/// layout must not depend on the CPU) and of the privacy gate (hashing, keys, consent), and
/// the few of what they use. The capture source (libpcap's packet header, whose layout
/// depends on the C library) is compiled and linked with them; the replay runs it. Without
/// the daemon the library is only these, so the build compiles a few small crates for the
/// test profile, not wasmtime, tokio and rustls once more (the daemon's, which the replay
/// checks on the CPU as packaged).
fn unit_tests_under_qemu(
    target: &Target,
    zig: &Path,
    pcap_dir: &Path,
    pcap_version: &str,
) -> Result {
    // cargo-zigbuild's own test command: `cargo zigbuild` only builds.
    let mut cmd = Command::new(zigbuild());
    cross_env(&mut cmd, target, zig, pcap_dir, pcap_version);
    cmd.args([
        "test",
        "--locked",
        "-p",
        PACKAGE,
        "--lib",
        "--no-default-features",
        "--profile",
        "cross-test",
    ]);
    cmd.args(["--target", target.triple, "--target-dir"])
        .arg(cross_target_dir())
        .env(
            format!("CARGO_TARGET_{}_RUNNER", env_triple(target)),
            target.qemu,
        );
    if target.build_std {
        // Tests unwind (the harness catches panics): std with its default crates and `test`.
        cmd.arg("-Zbuild-std");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    ensure(out.status.success(), || {
        format!("unit tests under {} failed: {}", target.qemu, out.status)
    })?;
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    ensure(passed >= QEMU_MIN_TESTS, || {
        format!("only {passed} unit tests ran under {}", target.qemu)
    })?;
    let modules = ["dot11::", "privacy::"];
    for module in modules {
        ensure(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("test {module}")) && l.ends_with(" ... ok")),
            || format!("no unit test of {module} ran under {}", target.qemu),
        )?;
    }
    println!(
        "check: {passed} unit tests of the library without the daemon ({}) passed on {} under {}",
        modules.join(" "),
        target.triple,
        target.qemu
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_reads_top_level_keys_only() {
        let text = r#"{"v":1,"stream":"counts","data":{"sightings":44,"partial":false},"x":[1,{"data":2}]}"#;
        assert_eq!(
            json_value(text, "data"),
            Some(r#"{"sightings":44,"partial":false}"#)
        );
        assert_eq!(json_value(text, "stream"), Some(r#""counts""#));
        assert_eq!(json_value(text, "v"), Some("1"));
        assert_eq!(json_value(text, "x"), Some(r#"[1,{"data":2}]"#));
        assert_eq!(json_value(text, "sightings"), None);
        let data = json_value(text, "data").unwrap();
        assert_eq!(json_value(data, "sightings"), Some("44"));
        assert_eq!(json_value(data, "partial"), Some("false"));
        assert_eq!(json_value(r#"{"a":"x,}\"y","b":2}"#, "b"), Some("2"));
    }

    #[test]
    fn modes_read_as_tar_lists_them() {
        assert_eq!(mode_string(0o755, true), "drwxr-xr-x");
        assert_eq!(mode_string(0o600, false), "-rw-------");
    }

    #[test]
    fn control_fields_refuse_duplicates() {
        assert!(control_fields("Package: a\nPackage: b\n").is_err());
        assert_eq!(control_fields("Package: a\n").unwrap()["Package"], "a");
    }

    /// The packages' maintainer scripts, the init and hotplug scripts, the UCI file and keep.d
    /// through install, configuration, reload, upgrade (opkg and apk), removal, a boot with
    /// the monitor interface 60 s late and sysupgrade's keep list: `openwrt/tests/run.sh`, fed
    /// the scripts exactly as `package` and `apk_package` write them.
    #[test]
    fn maintainer_and_init_scripts_under_procd() {
        let dir = env::temp_dir().join(format!("probegate-scripts-{}", std::process::id()));
        let mut scripts: Vec<(String, String)> = vec![
            ("postinst".into(), POSTINST.into()),
            ("prerm".into(), PRERM.into()),
            (
                "control".into(),
                format!("Package: {PACKAGE}\nRequire-User: {REQUIRE_USER}\n"),
            ),
            ("rusers".into(), format!("{REQUIRE_USER}\n")),
        ];
        for (name, text) in apk::openwrt_scripts(PACKAGE) {
            scripts.push((name.into(), text));
        }
        for (name, text) in &scripts {
            write_file(&dir.join(name), text.as_bytes(), 0o755).unwrap();
        }
        let out = Command::new("bash")
            .arg(root().join("openwrt/tests/run.sh"))
            .arg(&dir)
            .output()
            .expect("bash runs");
        let _ = fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "openwrt/tests/run.sh failed");
        assert!(stdout.contains(" checks passed, 0 failed"));
    }

    /// The feed Makefile in a tree laid out as an SDK with the packages feed: `make -n`
    /// prints the cargo command, libpcap's linking and the files installed
    /// (`openwrt/tests/feed.sh`, stand-in SDK includes).
    #[test]
    fn feed_makefile_under_make_n() {
        let out = Command::new("bash")
            .arg(root().join("openwrt/tests/feed.sh"))
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "openwrt/tests/feed.sh failed");
        assert!(stdout.contains(": 0 failed"));
    }
}
