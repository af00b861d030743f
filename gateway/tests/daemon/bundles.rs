//! Plugin bundles through the daemon, driven by the retailer's CLI: a signed bundle installs
//! and publishes; tampered, wrongly signed and replayed ones are refused by name while the
//! running version carries on; a version that traps in its health window is rolled back; a
//! daemon killed mid-install comes back with the old set; a site push reaches three gateways.

use crate::harness::{Broker, Site, Stream, Subscriber, plugin, text};
use probegate::bundle::format;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub(crate) const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// `probegate plugin ...` as a retailer runs it.
pub(crate) fn cli(site: &Site, args: &[&str]) -> Output {
    site.command("info")
        .arg("plugin")
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn ok(out: &Output) -> String {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    all
}

pub(crate) struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// A key pair made with the CLI; its public line for the routers' config.
    fn new(site: &Site, name: &str) -> (Keys, String) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(name);
        let printed = ok(&cli(site, &["keygen", base.to_str().unwrap()]));
        let line = printed
            .split("trusted_keys = [\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        (Keys { dir }, line)
    }

    pub(crate) fn secret(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }
}

/// A component plus manifest named `name` at `version`, from a built plugin.
pub(crate) fn plugin_as(dir: &Path, from: &str, name: &str, version: &str) -> PathBuf {
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin(&format!("{from}.wasm")), &wasm).unwrap();
    let manifest = std::fs::read_to_string(plugin(&format!("{from}.toml"))).unwrap();
    let manifest = manifest
        .lines()
        .map(|l| match l {
            l if l.starts_with("name = ") => format!("name = \"{name}\""),
            l if l.starts_with("version = ") => format!("version = \"{version}\""),
            l => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
    wasm
}

/// Builds and signs a bundle with the CLI; its path.
pub(crate) fn bundle(
    site: &Site,
    wasm: &Path,
    sequence: u64,
    key: &Path,
    extra: &[&str],
) -> PathBuf {
    let out = wasm.with_extension(format!("{sequence}.pgb"));
    let seq = sequence.to_string();
    let mut args = vec![
        "build",
        wasm.to_str().unwrap(),
        "--sequence",
        &seq,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&cli(site, &args));
    ok(&cli(
        site,
        &[
            "sign",
            out.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    ));
    out
}

/// `plugin push` to the test broker; `target` names where (and may set its own --timeout).
fn push(site: &Site, broker: &Broker, bundle: &Path, target: &[&str]) -> Output {
    let port = broker.port.to_string();
    let mut args = vec![
        "push",
        bundle.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ];
    if !target.contains(&"--timeout") {
        args.extend(["--timeout", "30"]);
    }
    args.extend_from_slice(target);
    cli(site, &args)
}

/// A site that takes bundles signed by `key` into `<site>/plugins`.
fn bundle_site(broker: &Broker, key: &str, health_secs: u64, plugins_toml: &str) -> Site {
    let extra = format!(
        "plugin_dir = \"plugins\"\n[bundles]\ntrusted_keys = [\"{key}\"]\nhealth_secs = {health_secs}\n"
    );
    let site = Site::new(broker, &[], &extra);
    std::fs::create_dir(site.dir.path().join("plugins")).unwrap();
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config += plugins_toml;
    std::fs::write(&site.config, config).unwrap();
    site
}

pub(crate) fn results(sub: &Subscriber) -> Vec<serde_json::Value> {
    sub.messages()
        .iter()
        .filter(|m| m.topic.ends_with("/bundles/result"))
        .map(|m| m.json()["data"].clone())
        .collect()
}

/// Rewrites one member of a signed bundle, keeping its signature.
fn tamper(bundle: &Path, member: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let b = format::unpack(&std::fs::read(bundle).unwrap(), usize::MAX).unwrap();
    let mut manifest = b.manifest_bytes.clone();
    let mut files = b.files.clone();
    match member {
        format::MANIFEST => edit(&mut manifest),
        _ => edit(files.get_mut(member).unwrap()),
    }
    let out = bundle.with_extension(format!("tampered-{}.pgb", member.replace('.', "-")));
    std::fs::write(
        &out,
        format::pack(&manifest, b.signature.as_deref(), &files),
    )
    .unwrap();
    out
}

/// What the tests start from: a broker, the back office's subscriber, a retailer's signing
/// key and a scratch directory for the bundles the retailer makes.
pub(crate) struct Retailer {
    pub(crate) broker: Broker,
    pub(crate) sub: Subscriber,
    pub(crate) scratch: tempfile::TempDir,
    pub(crate) keys: Keys,
    /// The public key's line, for the routers' config.
    public: String,
}

impl Retailer {
    pub(crate) fn new() -> Retailer {
        let broker = Broker::start();
        let sub = Subscriber::start(&broker);
        // The CLI needs a site to run in before the gateway's exists.
        let (keys, public) = Keys::new(&Site::new(&broker, &[], ""), "retailer");
        Retailer {
            broker,
            sub,
            scratch: tempfile::tempdir().unwrap(),
            keys,
            public,
        }
    }

    /// Gateway gw-1, taking this retailer's bundles, online and fed part of the capture.
    pub(crate) fn gateway(&self, health_secs: u64, plugins_toml: &str) -> (Site, Stream) {
        let site = bundle_site(&self.broker, &self.public, health_secs, plugins_toml);
        let stream = feeding(&site, &self.sub);
        (site, stream)
    }

    /// A bundle of the built plugin `from` as `name` at `version`, signed by the retailer.
    pub(crate) fn bundle(
        &self,
        site: &Site,
        from: &str,
        name: &str,
        version: &str,
        sequence: u64,
    ) -> PathBuf {
        let wasm = plugin_as(self.scratch.path(), from, name, version);
        bundle(site, &wasm, sequence, &self.keys.secret("retailer"), &[])
    }

    /// Pushes `bundle` to gw-1 and waits for its result.
    pub(crate) fn push(&self, site: &Site, bundle: &Path) -> Output {
        push(
            site,
            &self.broker,
            bundle,
            &["--to-gateway", "test-store/gw-1"],
        )
    }

    /// Feeds the capture up to `part` eighths and asserts that `plugin` publishes more of
    /// `stream_name` than before: the running version carries on.
    pub(crate) fn still_publishing(
        &self,
        stream: &mut Stream,
        part: usize,
        plugin: &str,
        stream_name: &str,
    ) {
        let before = self.sub.stream(plugin, stream_name).len();
        stream.feed_to(part, 8);
        assert!(
            self.sub.wait_until(
                |sub| sub.stream(plugin, stream_name).len() > before,
                Duration::from_secs(20)
            ),
            "{plugin} stopped publishing {stream_name}"
        );
    }
}

/// Starts the daemon on a stream of the capture and waits until it is online (a push is
/// plain MQTT: a gateway not yet subscribed would miss it).
pub(crate) fn feeding(site: &Site, sub: &Subscriber) -> Stream {
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 8);
    let config = std::fs::read_to_string(&site.config).unwrap();
    let gateway = config
        .split("id = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let status = format!("probegate/v1/test-store/{gateway}/status");
    assert!(sub.wait_for(
        |m| m.topic == status && m.payload.contains("\"online\""),
        Duration::from_secs(20)
    ));
    // The subscriptions follow the online status on the same connection.
    std::thread::sleep(Duration::from_millis(300));
    stream
}

#[test]
fn a_signed_bundle_installs_and_bad_ones_are_refused_by_name() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(1, "");
    let (stranger, _) = Keys::new(&site, "stranger");

    let good = r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1);
    let printed = ok(&r.push(&site, &good));
    assert!(printed.contains("\"outcome\":\"installed\""), "{printed}");
    stream.feed_to(2, 8);
    assert!(r.sub.wait_for(
        |m| m.topic.ends_with("/plugins/counter/counts"),
        Duration::from_secs(20)
    ));

    let v2 = plugin_as(r.scratch.path(), "visitor_counter", "counter", "1.1.0");
    let next = bundle(&site, &v2, 2, &r.keys.secret("retailer"), &[]);
    let cases = [
        (
            tamper(&next, format::COMPONENT, |b| b[100] ^= 1),
            "tampered",
        ),
        (
            tamper(&next, format::MANIFEST, |b| b.extend_from_slice(b" ")),
            "bad_signature",
        ),
        (
            bundle(&site, &v2, 3, &stranger.secret("stranger"), &[]),
            "unknown_key",
        ),
        (good.clone(), "replayed"),
    ];
    for (i, (bad, code)) in cases.iter().enumerate() {
        let out = r.push(&site, bad);
        let printed = text(&out.stdout);
        assert!(!out.status.success(), "{code}: {printed}");
        assert!(
            printed.contains(&format!("\"code\":\"{code}\"")),
            "{code}: {printed}"
        );
        r.still_publishing(&mut stream, 3 + i, "counter", "counts");
    }
    let versions: Vec<String> = r
        .sub
        .plugin_statuses("counter")
        .iter()
        .filter_map(|s| s["version"].as_str().map(str::to_owned))
        .collect();
    assert!(versions.iter().all(|v| v == "1.0.0"), "{versions:?}");
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The installed set is retained, and names the committed version.
    let late = Subscriber::start(&r.broker);
    assert!(late.wait_for(
        |m| m.topic.ends_with("/plugins-installed")
            && m.json()["data"]["plugins"]["counter"]["version"] == "1.0.0",
        Duration::from_secs(10)
    ));
    assert_eq!(results(&r.sub).len(), 5);
}

#[test]
fn a_full_flash_refuses_a_bundle_and_the_running_version_stays() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(1, "");
    let v1 = r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1);
    let printed = ok(&r.push(&site, &v1));
    assert!(printed.contains("\"outcome\":\"installed\""), "{printed}");

    // The flash is full: the new component's staging file is the kernel's always-full
    // device, so writing it fails with ENOSPC, after the manifest was staged.
    let plugins = site.dir.path().join("plugins");
    std::os::unix::fs::symlink("/dev/full", plugins.join(".counter.wasm.new")).unwrap();
    let v2 = r.bundle(&site, "visitor_counter", "counter", "2.0.0", 2);
    let out = r.push(&site, &v2);
    let printed = text(&out.stdout);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("\"code\":\"io\""), "{printed}");
    assert!(printed.contains("No space left on device"), "{printed}");

    // The running version was never touched and carries on; nothing staged is left.
    r.still_publishing(&mut stream, 4, "counter", "counts");
    let mut files: Vec<String> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["counter.toml", "counter.wasm"]);
    let manifest = std::fs::read_to_string(plugins.join("counter.toml")).unwrap();
    assert!(manifest.contains("version = \"1.0.0\""), "{manifest}");

    // With room again, the same bundle installs.
    let printed = ok(&r.push(&site, &v2));
    assert!(printed.contains("\"outcome\":\"installed\""), "{printed}");
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The site config for a plugin named "beacon" that both versions run under: echo ignores
/// the config; the hostile plugin traps on its first tick.
const BEACON: &str = "[[plugin]]\nname = \"beacon\"\nconfig = { act = \"trap\", on = \"tick\" }\nallow = [\"per-device-output\"]\n";

#[test]
fn a_version_that_traps_in_its_health_window_is_rolled_back() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(3, BEACON);
    ok(&r.push(&site, &r.bundle(&site, "echo", "beacon", "1.0.0", 1)));
    // The hostile manifest asks for nothing; the echo one for per-device-output: both granted.
    let bad = r.bundle(&site, "hostile", "beacon", "2.0.0", 2);
    let pushing = std::thread::spawn({
        let (config_dir, port) = (site.dir.path().to_owned(), r.broker.port);
        let bad = bad.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
                .current_dir(config_dir)
                .args([
                    "plugin",
                    "push",
                    bad.to_str().unwrap(),
                    "--host",
                    "127.0.0.1",
                ])
                .args([
                    "--port",
                    &port.to_string(),
                    "--to-gateway",
                    "test-store/gw-1",
                    "--timeout",
                    "30",
                ])
                .output()
                .unwrap()
        }
    });
    // Sightings keep coming, so the new version ticks (and traps) inside its window.
    for part in 2..=6 {
        std::thread::sleep(Duration::from_millis(700));
        stream.feed_to(part, 8);
    }
    let out = pushing.join().unwrap();
    let printed = text(&out.stdout);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("\"outcome\":\"rolled_back\""), "{printed}");
    // The old version is back and publishing.
    let seen_before = r.sub.stream("beacon", "seen").len();
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(r.sub.stream("beacon", "seen").len() > seen_before);
    let last = r.sub.plugin_statuses("beacon").last().cloned().unwrap();
    assert_eq!(last["version"], "1.0.0", "{last}");
    let on_disk = std::fs::read_to_string(site.dir.path().join("plugins/beacon.toml")).unwrap();
    assert!(on_disk.contains("version = \"1.0.0\""));
}

#[test]
fn a_daemon_killed_during_an_install_comes_back_with_the_old_set() {
    let r = Retailer::new();
    // A long health window: the kill lands inside it.
    let site = bundle_site(&r.broker, &r.public, 60, BEACON);
    // Version 1 installed by hand, as over SSH.
    let dir = site.dir.path().join("plugins");
    plugin_as(&dir, "echo", "beacon", "1.0.0");
    let mut stream = feeding(&site, &r.sub);

    let next = r.bundle(&site, "echo", "beacon", "2.0.0", 1);
    let pusher = std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
        .current_dir(site.dir.path())
        .args([
            "plugin",
            "push",
            next.to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &r.broker.port.to_string(),
            "--to-gateway",
            "test-store/gw-1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pusher = scopeguard(pusher);
    assert!(
        r.sub.wait_until(
            |sub| sub
                .plugin_statuses("beacon")
                .iter()
                .any(|s| s["version"] == "2.0.0"),
            Duration::from_secs(20)
        ),
        "{:?}",
        r.sub.plugin_statuses("beacon")
    );
    stream.feed_to(2, 8);
    stream.kill();
    let _ = pusher.0.kill();

    // Back up: the interrupted install is undone before any plugin loads.
    let sub = Subscriber::start(&r.broker);
    let stream = site.replay_stream(CAPTURE);
    let out = stream.finish();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("an install was interrupted"), "{stderr}");
    // What this boot reported (the broker also replays the killed boot's retained status).
    let statuses: Vec<serde_json::Value> = sub
        .messages()
        .iter()
        .filter(|m| m.topic.ends_with("/plugin-status/beacon") && !m.retained)
        .map(|m| m.json()["data"].clone())
        .collect();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| s["version"] == "1.0.0"),
        "{statuses:?}"
    );
    assert!(!sub.stream("beacon", "seen").is_empty());
    let manifest = std::fs::read_to_string(dir.join("beacon.toml")).unwrap();
    assert!(manifest.contains("version = \"1.0.0\""));
    let wasm = std::fs::read(dir.join("beacon.wasm")).unwrap();
    assert_eq!(wasm, std::fs::read(plugin("echo.wasm")).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!site.dir.path().join("bundles/journal.json").exists());
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(child: std::process::Child) -> Guard {
    Guard(child)
}

#[test]
fn site_and_fleet_pushes_reach_every_gateway_and_report_each_result() {
    let r = Retailer::new();
    let sites: Vec<Site> = (1..=3)
        .map(|n| {
            let site = bundle_site(&r.broker, &r.public, 1, "");
            let config = std::fs::read_to_string(&site.config)
                .unwrap()
                .replace("id = \"gw-1\"", &format!("id = \"gw-{n}\""));
            std::fs::write(&site.config, config).unwrap();
            site
        })
        .collect();
    let mut streams: Vec<Stream> = sites.iter().map(|s| feeding(s, &r.sub)).collect();

    let b = r.bundle(&sites[0], "visitor_counter", "counter", "1.0.0", 1);
    let printed = ok(&push(
        &sites[0],
        &r.broker,
        &b,
        &[
            "--site",
            "test-store",
            "--expect",
            "3",
            "--chunk-bytes",
            "1000",
        ],
    ));
    for n in 1..=3 {
        assert!(
            printed.contains(&format!("test-store/gw-{n}: ")),
            "{printed}"
        );
    }
    assert_eq!(
        printed.matches("\"outcome\":\"installed\"").count(),
        3,
        "{printed}"
    );
    // The same for every gateway of every site.
    let b2 = r.bundle(&sites[0], "visitor_counter", "counter", "1.1.0", 2);
    let printed = ok(&push(
        &sites[0],
        &r.broker,
        &b2,
        &["--fleet", "--expect", "3"],
    ));
    assert_eq!(printed.matches("\"installed\"").count(), 3, "{printed}");
    for s in &mut streams {
        s.feed_to(4, 8);
    }
    for (n, s) in streams.into_iter().enumerate() {
        let out = s.finish();
        assert!(out.status.success(), "gw-{}: {}", n + 1, text(&out.stderr));
    }
    assert_eq!(results(&r.sub).len(), 6);
}

#[test]
fn list_shows_the_installed_set_and_a_signed_removal_stops_the_plugin() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(1, "");
    ok(&r.push(
        &site,
        &r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1),
    ));

    let port = r.broker.port.to_string();
    let listed = ok(&cli(
        &site,
        &["list", "--host", "127.0.0.1", "--port", &port],
    ));
    assert!(listed.contains("test-store/gw-1: "), "{listed}");
    assert!(listed.contains("\"version\":\"1.0.0\""), "{listed}");

    // A removal needs a signature and a higher sequence like any bundle.
    let secret = r.keys.secret("retailer");
    let remove = |sequence: &str| {
        cli(
            &site,
            &[
                "remove",
                "counter",
                "--sequence",
                sequence,
                "--key",
                secret.to_str().unwrap(),
                "--to-gateway",
                "test-store/gw-1",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--timeout",
                "20",
            ],
        )
    };
    let replayed = remove("1");
    assert!(!replayed.status.success());
    assert!(text(&replayed.stdout).contains("\"code\":\"replayed\""));
    let removed = ok(&remove("2"));
    assert!(removed.contains("\"outcome\":\"removed\""), "{removed}");
    assert!(r.sub.wait_until(
        |sub| {
            sub.plugin_statuses("counter")
                .iter()
                .any(|s| s["state"] == "removed")
        },
        Duration::from_secs(10)
    ));
    assert!(!site.dir.path().join("plugins/counter.wasm").exists());
    stream.feed_to(4, 8);
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = ok(&cli(
        &site,
        &["list", "--host", "127.0.0.1", "--port", &port],
    ));
    assert!(listed.contains("\"removed\":true"), "{listed}");
}

#[test]
fn precompiled_code_installs_only_under_a_key_trusted_for_it() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let scratch = tempfile::tempdir().unwrap();
    let probe = Site::new(&broker, &[], "");
    let (keys, vendor) = Keys::new(&probe, "vendor");
    let (author, author_key) = Keys::new(&probe, "author");
    // The author may ship plugins; only the vendor's tooling may ship native code.
    let extra = format!(
        "plugin_dir = \"plugins\"\n[limits]\ntrust_precompiled = true\n[bundles]\n\
         trusted_keys = [\"{vendor}\", \"{author_key}\"]\ntrusted_precompiled_keys = [\"{vendor}\"]\nhealth_secs = 1\n"
    );
    let site = Site::new(&broker, &[], &extra);
    std::fs::create_dir(site.dir.path().join("plugins")).unwrap();
    let mut stream = feeding(&site, &sub);

    let wasm = plugin_as(scratch.path(), "visitor_counter", "counter", "1.0.0");
    let native = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cwasm = scratch.path().join(format!("plugin.{native}.cwasm"));
    ok(&cli(
        &site,
        &[
            "precompile",
            "--target",
            &native,
            wasm.to_str().unwrap(),
            "-o",
            cwasm.to_str().unwrap(),
        ],
    ));
    let with_code = ["--precompiled", cwasm.to_str().unwrap()];
    let refused = push(
        &site,
        &broker,
        &bundle(&site, &wasm, 1, &author.secret("author"), &with_code),
        &["--to-gateway", "test-store/gw-1"],
    );
    assert!(!refused.status.success());
    assert!(text(&refused.stdout).contains("\"code\":\"precompiled_untrusted\""));

    let installed = ok(&push(
        &site,
        &broker,
        &bundle(&site, &wasm, 2, &keys.secret("vendor"), &with_code),
        &["--to-gateway", "test-store/gw-1"],
    ));
    assert!(
        installed.contains("\"outcome\":\"installed\""),
        "{installed}"
    );
    // What runs is the precompiled code, not the component.
    let on_disk = std::fs::read(site.dir.path().join("plugins/counter.wasm")).unwrap();
    assert_eq!(on_disk, std::fs::read(&cwasm).unwrap());
    stream.feed_to(4, 8);
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/plugins/counter/counts"),
        Duration::from_secs(20)
    ));
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_bundle_pushed_while_a_gateway_is_offline_installs_when_it_is_back() {
    let r = Retailer::new();
    let (site, first) = r.gateway(1, "");
    first.kill();
    // The push gives up waiting for the gateway, but the broker keeps the chunks for it.
    let b = r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1);
    let out = push(
        &site,
        &r.broker,
        &b,
        &["--to-gateway", "test-store/gw-1", "--timeout", "2"],
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(results(&r.sub).is_empty());

    let mut second = feeding(&site, &r.sub);
    assert!(
        r.sub.wait_until(
            |sub| results(sub).iter().any(|res| res["outcome"] == "installed"),
            Duration::from_secs(20)
        ),
        "{:?}",
        results(&r.sub)
    );
    r.still_publishing(&mut second, 4, "counter", "counts");
    let out = second.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
