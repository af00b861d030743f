//! Project tasks that need more than one cargo command: `cargo xtask <task>`.
//!
//! - `deps`: installs what the build and tests need from Debian and rustup, if missing.
//! - `build-plugins`: builds every plugin in `plugins/` to a component in `target/wasm/`.
//! - `demo`: replays a real capture through the visitor counter and shows the MQTT messages.
//! - `test [--release]`: everything CI checks: fmt and clippy, tests of both workspaces, then
//!   `dist <target> --check` for aarch64, mipsel and mips, and `dist aarch64 --full --check`;
//!   then each step's time. `--release` checks every package, armv7's and x86_64's too.
//! - `evaluate [--data DIR] [--window-secs N] [--out FILE]`: the occupancy plugin against the
//!   hand-counted Fryza days, leave one day out (`evaluate.rs`).
//! - `dist <target> [--full] [--check] [--sizes]`: cross-builds and packages for OpenWrt (see
//!   `dist.rs`); `--sizes` also prints where the binary's bytes go (`sizes.rs`).
//! - `loadgen --probes N [--seed S] --out FILE|-`: a seeded store's day as a pcap (`loadgen.rs`).
//! - `bench [--quick]`: measures and rewrites docs/performance.md (`bench.rs`).
//!
//! Few dependencies (deflate and SHA-256 for the `.apk`), so the task runner builds in seconds.

mod apk;
mod bench;
mod cplugin;
mod dist;
mod evaluate;
mod loadgen;
mod sizes;
mod zigplugin;

use std::env;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

const APT_PACKAGES: &[&str] = &[
    "mosquitto",
    "mosquitto-clients",
    "libpcap-dev",
    "pkg-config",
    // The TLS tests make their own CA.
    "openssl",
    // The OpenWrt script tests (openwrt/tests/) run the init script with jshn-style JSON and
    // the feed Makefile under `make -n`.
    "jq",
    "make",
    // The back office's end-to-end tests: a PostgreSQL server of their own, and a headless
    // browser that signs in to the dashboard.
    "postgresql",
    "chromium",
    "chromium-driver",
    // The back office reads store time zones from the system's zone database.
    "tzdata",
];
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The test plugin that imports WASI is built for this target, so the host's refusal is tested.
const WASI_TARGET: &str = "wasm32-wasip2";
const DEMO_PORT: u16 = 18830;
/// Where the demo's back office serves its dashboard.
const DEMO_BACKOFFICE_PORT: u16 = 18080;
const DEMO_CAPTURE: &str = "gateway/tests/data/fryza-sc6-61/sc6-61_2024-03-22.pcap";

fn main() {
    let task = env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "deps" => deps(),
        "build-plugins" => deps().and_then(|_| build_plugins()),
        "demo" => demo(),
        "test" => test(env::args().nth(2).as_deref() == Some("--release")),
        "dist" => dist::dist(&env::args().skip(2).collect::<Vec<_>>()),
        "evaluate" => evaluate::evaluate(&env::args().skip(2).collect::<Vec<_>>()),
        "loadgen" => loadgen::main(&env::args().skip(2).collect::<Vec<_>>()),
        "bench" => bench::main(&env::args().skip(2).collect::<Vec<_>>()),
        _ => Err(
            "usage: cargo xtask deps | build-plugins | demo | test | dist | evaluate | loadgen | bench"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("xtask {task}: {e}");
        std::process::exit(1);
    }
}

/// The workspace root of *this* invocation. Read at run time: with a shared target dir, cargo
/// may reuse an xtask binary built from another clone, whose compile-time path is stale.
fn root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Installs only what is missing, so a prepared machine is not touched (and needs no root).
fn deps() -> Result {
    apt_install(APT_PACKAGES)?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the {WASM_TARGET} target: {e}"))?;
    for target in [WASM_TARGET, WASI_TARGET] {
        if !String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|l| l == target)
        {
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    cplugin::deps()?;
    dist::ensure_zig()?;
    Ok(())
}

/// Those of the Debian `packages` that are missing.
fn apt_install(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
        let apt = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.to_vec();
            all.push("apt-get");
            all.extend_from_slice(args);
            let mut cmd = Command::new(all[0]);
            cmd.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        run(&mut apt(&["update", "-qq"]))?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&missing);
        run(&mut apt(&install))?;
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Where cargo puts the plugins' build; beside the host's, so CI can keep both warm.
fn plugin_target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => root().join("target/plugins"),
    }
}

/// Builds every plugin and copies the components to `target/wasm/<name>.wasm`, the path the
/// configs and tests use.
fn build_plugins() -> Result {
    let target_dir = plugin_target_dir();
    run(Command::new("cargo")
        .current_dir(root().join("plugins"))
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir))?;
    let built = target_dir.join(WASM_TARGET).join("release");
    let out = root().join("target/wasm");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let entries = std::fs::read_dir(&built).map_err(|e| format!("{}: {e}", built.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path.file_name().expect("a file");
            // Tests may read the previous copy while we write: write aside, then rename.
            let tmp = out.join(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::copy(&path, &tmp).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::rename(&tmp, out.join(name)).map_err(|e| format!("{e}"))?;
            eprintln!("plugin: target/wasm/{}", name.to_string_lossy());
        }
    }
    // wasip2's default linker makes the component; std's println! becomes WASI imports.
    run(Command::new("cargo")
        .current_dir(root().join("plugins"))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "wasi-user",
            "--target",
            WASI_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir))?;
    let wasi_user = target_dir.join(WASI_TARGET).join("release/wasi_user.wasm");
    let tmp = out.join(".wasi_user.wasm.tmp");
    std::fs::copy(&wasi_user, &tmp).map_err(|e| format!("{}: {e}", wasi_user.display()))?;
    std::fs::rename(&tmp, out.join("wasi_user.wasm")).map_err(|e| format!("{e}"))?;
    cplugin::build(&target_dir, &out)?;
    zigplugin::build(&target_dir, &out)?;
    copy_manifests(&out)
}

/// Each plugin's `manifest.toml` goes beside its component as `<component>.toml`, where the
/// daemon looks for it.
fn copy_manifests(out: &Path) -> Result {
    for group in ["examples", "testing"] {
        let dir = root().join("plugins").join(group);
        let crates = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in crates.flatten() {
            let manifest = entry.path().join("manifest.toml");
            if !manifest.exists() {
                continue;
            }
            let stem = entry.file_name().to_string_lossy().replace('-', "_");
            let tmp = out.join(format!(".{stem}.toml.tmp"));
            std::fs::copy(&manifest, &tmp).map_err(|e| format!("{}: {e}", manifest.display()))?;
            std::fs::rename(&tmp, out.join(format!("{stem}.toml"))).map_err(|e| format!("{e}"))?;
        }
    }
    Ok(())
}

struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on port {port} after 10 s"))
}

/// Starts a private mosquitto and a subscriber, replays a real capture, prints what arrives.
fn demo() -> Result {
    deps()?;
    build_plugins()?;
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--locked",
        "-p",
        "probegate",
        "-p",
        "probegate-backoffice",
    ]))?;
    for (port, what) in [
        (DEMO_PORT, "its broker"),
        (DEMO_BACKOFFICE_PORT, "the back office"),
    ] {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Err(format!(
                "port {port} is taken; the demo needs it for {what}"
            ));
        }
    }
    let _broker = Reaper(
        Command::new("mosquitto")
            .args(["-p", &DEMO_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto: {e}"))?,
    );
    wait_for_port(DEMO_PORT)?;
    let _backoffice = start_demo_backoffice()?;
    let mut sub = Reaper(
        Command::new("mosquitto_sub")
            .args([
                "-p",
                &DEMO_PORT.to_string(),
                "-q",
                "1",
                "-v",
                "-t",
                "probegate/#",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?,
    );
    let lines = BufReader::new(sub.0.stdout.take().expect("piped"));
    let printer = std::thread::spawn(move || {
        let mut count = 0;
        for line in lines.lines().map_while(std::result::Result::ok) {
            println!("{line}");
            count += 1;
            if line.contains("\"state\":\"offline\"") {
                break;
            }
        }
        count
    });
    sleep(Duration::from_millis(300));
    println!(
        "# replaying {DEMO_CAPTURE} through the visitor-counter plugin; messages as the back office receives them:"
    );
    let binary = cargo_target_dir().join("debug/probegate");
    run(Command::new(binary).current_dir(root()).args([
        "replay",
        "--config",
        "config/demo.toml",
        DEMO_CAPTURE,
    ]))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !printer.is_finished() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    drop(sub);
    let count = printer.join().unwrap_or(0);
    println!(
        "# {count} messages received over MQTT (gateway online, plugin statuses, per 15-minute interval a count, visits and occupancy, gateway offline)"
    );
    println!(
        "# the back office has stored them: http://127.0.0.1:{DEMO_BACKOFFICE_PORT}/site/demo-store (sign in as demo / probegate-demo)"
    );
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        println!("# Ctrl-C stops the back office and the broker");
        loop {
            sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

/// The back office on the demo's broker, with a fresh SQLite file and the demo's staff
/// account (backoffice/demo/backoffice.toml).
fn start_demo_backoffice() -> Result<Reaper> {
    let db = cargo_target_dir().join("demo-backoffice.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let child = Command::new(cargo_target_dir().join("debug/probegate-backoffice"))
        .current_dir(root())
        .arg("--broker")
        .arg(format!("mqtt://127.0.0.1:{DEMO_PORT}"))
        .arg("--db")
        .arg(format!("sqlite:{}", db.display()))
        .arg("--listen")
        .arg(format!("127.0.0.1:{DEMO_BACKOFFICE_PORT}"))
        .args([
            "--config",
            "backoffice/demo/backoffice.toml",
            "--rollup-secs",
            "2",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the back office: {e}"))?;
    let reaper = Reaper(child);
    wait_for_port(DEMO_BACKOFFICE_PORT)?;
    Ok(reaper)
}

fn cargo_target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// What CI runs: every test with real mosquitto, libpcap and wasm plugins, then the linters.
/// Ends with each step's time (also when a step fails), so a cold run shows where it went.
fn test(release: bool) -> Result {
    let mut times = StepTimes::default();
    let result = test_steps(&mut times, if release { RELEASE_DIST } else { CI_DIST });
    times.print();
    result
}

/// Each step's name and seconds, in order.
#[derive(Default)]
struct StepTimes(Vec<(String, Duration)>);

impl StepTimes {
    fn time<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let result = step();
        let name = if result.is_ok() {
            name.to_owned()
        } else {
            format!("{name} (failed)")
        };
        self.0.push((name, start.elapsed()));
        result
    }

    fn print(&self) {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        println!("xtask test: step times");
        for (name, took) in &self.0 {
            println!("{:>8.1} s  {name}", took.as_secs_f64());
        }
        println!("{:>8.1} s  total", total.as_secs_f64());
    }
}

/// The router builds CI checks, all with the release profile, as shipped (a profile without
/// fat LTO was measured and saved little on two cores; openwrt/README.md): aarch64, mipsel and
/// mips (with the library's unit tests under qemu: 32 bits, big-endian), then the full aarch64
/// variant. armv7 and x86_64 are left to the release checks (`RELEASE_DIST`), and x86_64 also
/// to `cargo xtask bench` (which builds and runs it): each checks nothing the others do not
/// but its name, its instruction set and qemu (armv7 is a 32-bit little-endian CPU running
/// Pulley bytecode, as mipsel; x86_64 a 64-bit one running native code precompiled off the
/// router, as aarch64). They left per-commit CI when cold runs took 34 (x86_64) and then
/// 38-49 minutes (armv7; two cores, at times shared), against a budget of 28.
const CI_DIST: &[&[&str]] = &[&["aarch64"], &["mipsel"], &["mips"], &["aarch64", "--full"]];

/// Every package a release ships, checked: `cargo xtask test --release`.
const RELEASE_DIST: &[&[&str]] = &[
    &["aarch64"],
    &["mipsel"],
    &["mips"],
    &["armv7"],
    &["x86_64"],
    &["aarch64", "--full"],
];

fn test_steps(times: &mut StepTimes, dists: &[&[&str]]) -> Result {
    times.time("deps and plugins", || {
        deps()?;
        build_plugins()
    })?;
    // The router builds' libpcaps, while the workspace compiles (see prebuild_libpcap).
    let names: Vec<&str> = dists.iter().map(|args| args[0]).collect();
    let libpcap = times.time("cross tools", || dist::prebuild_libpcap(&names))?;
    let host_checks = host_checks(times);
    // Joined even when a check failed, so no build is left running.
    let libpcap = times.time("libpcap (rest of the background builds)", || {
        libpcap
            .join()
            .unwrap_or_else(|_| Err("the libpcap build thread panicked".into()))
    });
    host_checks?;
    libpcap?;
    // The router builds: cross-built, packaged (.ipk and .apk), the packages checked, and run
    // under qemu. Each runs plugins precompiled off the router (native code on 64-bit CPUs,
    // Pulley bytecode on 32-bit ones); mips's library unit tests run under qemu too (a
    // 32-bit big-endian CPU, a C library with 64-bit time fields); the full aarch64 variant
    // compiles plugins itself.
    for target in dists {
        let mut args: Vec<String> = target.iter().map(|a| (*a).to_owned()).collect();
        args.push("--check".to_owned());
        times.time(&format!("dist {}", args.join(" ")), || dist::dist(&args))?;
    }
    Ok(())
}

/// fmt and clippy, then the tests of both workspaces.
fn host_checks(times: &mut StepTimes) -> Result {
    let plugins = root().join("plugins");
    let host = host_triple()?;
    // Lints first: they fail in minutes, and a clippy run after the tests made the next host
    // build compile ring and its dependents again (its build script ran again).
    times.time("fmt", || {
        run(Command::new("cargo")
            .current_dir(root())
            .args(["fmt", "--all", "--check"]))?;
        run(Command::new("cargo")
            .current_dir(&plugins)
            .args(["fmt", "--all", "--check"]))
    })?;
    times.time("clippy", || {
        run(Command::new("cargo").current_dir(root()).args([
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    times.time("clippy (plugins)", || {
        run(Command::new("cargo")
            .current_dir(&plugins)
            .args(["clippy", "--locked", "--all-targets", "--target-dir"])
            .arg(plugin_target_dir())
            .args(["--", "-D", "warnings"]))
    })?;
    // Plugin logic is ordinary Rust: its unit tests run natively.
    times.time("plugin unit tests", || {
        run(Command::new("cargo")
            .current_dir(&plugins)
            .args(["test", "--locked", "--target", &host, "--target-dir"])
            .arg(plugin_target_dir().join("host"))
            .args([
                "-p",
                "visitor-counter",
                "-p",
                "occupancy",
                "-p",
                "probegate-linking",
            ])
            .args(["-p", "coupon-trigger", "-p", "consent-filter"]))
    })?;
    times.time("workspace tests", || {
        run(Command::new("cargo")
            .current_dir(root())
            .args(["test", "--locked", "--workspace"]))
    })
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV names no host".into())
}
