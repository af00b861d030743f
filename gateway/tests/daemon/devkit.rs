//! The plugin developer's commands: `plugin run` and `replay --print` print what the daemon
//! would publish, with no broker; what they print is compared with what a real daemon replay
//! delivered through mosquitto.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, Site, Subscriber, capture, plugin, repo, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// One message as the back office sees it, without the boot id (random per run).
fn comparable(topic: &str, envelope: &Value) -> (String, Value) {
    let mut envelope = envelope.clone();
    let boot = envelope
        .as_object_mut()
        .unwrap()
        .remove("boot_id")
        .expect("every envelope has a boot id");
    assert_eq!(boot.as_str().map(str::len), Some(16));
    (topic.to_owned(), envelope)
}

/// The JSON lines a devkit command printed, checked against docs/schemas as the back office
/// would check them.
fn printed(out: &Output) -> Vec<(String, Value)> {
    let validators = probegate::publish::schemas::Validators::new();
    text(&out.stdout)
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let topic = line["topic"].as_str().unwrap();
            let payload = serde_json::to_vec(&line["payload"]).unwrap();
            validators.check(topic, &payload).unwrap();
            comparable(topic, &line["payload"])
        })
        .collect()
}

#[test]
fn plugin_run_and_replay_print_print_exactly_what_a_daemon_replay_publishes() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());
    let published: Vec<(String, Value)> = sub
        .messages()
        .iter()
        .filter(|m| m.topic.contains("/plugin"))
        .map(|m| comparable(&m.topic, &m.json()))
        .collect();
    let counts = sub.stream("visitor-counter", "counts");
    assert_eq!(
        expect::rows_of(&counts),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );

    // The component alone, with the site's privacy settings and names.
    let run = site
        .command("info")
        .args(["plugin", "run"])
        .arg(plugin(COUNTER.file))
        .arg("--input")
        .arg(capture(CAPTURE))
        .args(["--config", r#"{"interval_secs": 300}"#, "--site"])
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(run.status.success(), "plugin run: {}", text(&run.stderr));
    assert_eq!(printed(&run), published);
    assert!(
        text(&run.stderr).contains(&format!("{} messages printed", published.len())),
        "{}",
        text(&run.stderr)
    );

    // The whole site config, printed instead of published: the broker sees nothing new.
    let before = sub.messages().len();
    let print = site
        .command("info")
        .args(["replay", "--print", "--config"])
        .arg(&site.config)
        .arg(capture(CAPTURE))
        .output()
        .unwrap();
    assert!(
        print.status.success(),
        "replay --print: {}",
        text(&print.stderr)
    );
    assert_eq!(printed(&print), published);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sub.messages().len(), before, "replay --print published");
}

/// Sightings written by hand: the default site's aggregation guard applies (min_cell 5), and
/// a line that goes back in time is refused by its number.
#[test]
fn plugin_run_takes_json_sightings_with_the_daemons_guard() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sightings.jsonl");
    // Minute one: six universal devices; minute two: two, and one randomized.
    let mut lines = String::from("# device numbers stand for devices; they are not MACs\n");
    for d in 0..6 {
        lines += &format!(
            "{{\"device\": {d}, \"time_ms\": {}, \"signal_dbm\": -50}}\n",
            60_000 + d * 1000
        );
    }
    for d in 0..2 {
        lines += &format!("{{\"device\": {d}, \"time_ms\": {}}}\n", 120_000 + d * 1000);
    }
    lines += "{\"device\": 9, \"time_ms\": 125000, \"randomized\": true}\n";
    std::fs::write(&input, &lines).unwrap();
    let run = |input: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
            .args(["plugin", "run"])
            .arg(plugin(COUNTER.file))
            .arg("--input")
            .arg(input)
            .args(["--config", r#"{"interval_secs": 60}"#])
            .output()
            .unwrap()
    };
    let out = run(&input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data: Vec<Value> = printed(&out)
        .into_iter()
        .filter(|(topic, _)| topic == "probegate/v1/dev/local/plugins/visitor-counter/counts")
        .map(|(_, m)| m["data"].clone())
        .collect();
    assert_eq!(data.len(), 2, "{data:?}");
    assert_eq!(
        (&data[0]["interval_start_ms"], &data[0]["universal"]),
        (&Value::from(60_000), &Value::from(6))
    );
    // Two devices and one: below the minimum cell, so the host published null.
    assert_eq!(data[1]["universal"], Value::Null);
    assert_eq!(data[1]["randomized"], Value::Null);
    assert_eq!(data[1]["partial"], true);

    lines += "{\"device\": 1, \"time_ms\": 5}\n";
    std::fs::write(&input, &lines).unwrap();
    let out = run(&input);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sightings.jsonl:11: time_ms"), "{stderr}");
}

#[test]
fn plugin_run_exits_1_when_the_plugin_traps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.jsonl");
    std::fs::write(&input, "{\"device\": 1, \"time_ms\": 1000}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
        .args(["plugin", "run"])
        .arg(plugin("hostile.wasm"))
        .arg("--input")
        .arg(&input)
        .args(["--config", r#"{"act": "trap", "on": "sightings"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let statuses: Vec<Value> = printed(&out)
        .into_iter()
        .filter(|(topic, _)| topic.ends_with("/plugin-status/hostile"))
        .map(|(_, m)| m["data"].clone())
        .collect();
    assert!(
        statuses.iter().any(|s| s["state"] == "backing_off"),
        "{statuses:?}"
    );
    assert!(
        text(&out.stderr).contains("1 traps"),
        "{}",
        text(&out.stderr)
    );
}

/// Where the tools the non-Rust templates need were installed by `cargo xtask build-plugins`
/// (wit-bindgen) and `cargo xtask deps` or `dist` (zig, from PyPI's ziglang).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn sh(dir: &Path, args: &[&str]) -> Output {
    let tools = target_dir().join("plugins/tools/bin");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let zig = target_dir().join("cross/tools/ziglang/ziglang/zig");
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir)
        .args(args)
        .env("PATH", path)
        // Rust projects share one target directory, so a rerun compiles only the plugin.
        .env("CARGO_TARGET_DIR", target_dir().join("devkit-projects"));
    if zig.is_file() {
        cmd.env("ZIG", zig);
    }
    cmd.output().unwrap()
}

/// Every template, as a developer uses it: `plugin new` in a directory outside the
/// repository, `./build.sh test`, `./build.sh`, then `plugin run` on a shared capture; the
/// windows it prints must hold what the tshark oracle says the capture holds.
#[test]
fn every_template_builds_tests_and_runs_outside_the_repository() {
    let plugin = plugin(COUNTER.file); // builds wit-bindgen with the plugins
    drop(plugin);
    let home = tempfile::tempdir().unwrap();
    assert!(!home.path().starts_with(repo()));
    let site = home.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            "privacy.signal_floor_dbm = {FLOOR}\nprivacy.min_cell = 1\n[gateway]\nsite = \"dev\"\nid = \"local\"\n[mqtt]\nhost = \"localhost\"\n"
        ),
    )
    .unwrap();
    // (start, universal, randomized, sightings) per 300 s window that saw anything.
    let expected: Vec<(u64, u64, u64, u64)> = expect::counts(CAPTURE, 300_000, FLOOR)
        .into_iter()
        .filter(|r| r.3 > 0)
        .map(|(start, u, r, s, _)| (start, u, r, s))
        .collect();
    assert!(expected.len() > 10);
    // What every filter template drops by default (min_dbm -75), per window, from the oracle:
    // probes the privacy gate lets through (universal or randomized, above the floor) but weaker.
    let mut weak = std::collections::HashMap::<u64, u64>::new();
    for p in expect::probes(CAPTURE) {
        if p.sa[0] & 1 == 0 && p.dbm.is_some_and(|d| (FLOOR..-75).contains(&d)) {
            *weak.entry(p.time_ms - p.time_ms % 300_000).or_default() += 1;
        }
    }
    let total_weak: u64 = weak.values().sum();
    let total: u64 = expected.iter().map(|r| r.3).sum();
    assert!(
        total_weak > 0 && total_weak < total,
        "{total_weak} of {total}"
    );
    let probegate = env!("CARGO_BIN_EXE_probegate");
    for (name, lang, kind) in [
        ("foot-fall", "rust", "analytics"),
        ("door-gate", "rust", "filter"),
        ("tally-c", "c", "analytics"),
        ("gate-c", "c", "filter"),
        ("tally-zig", "zig", "analytics"),
        ("gate-zig", "zig", "filter"),
    ] {
        let new = Command::new(probegate)
            .current_dir(home.path())
            .args(["plugin", "new", name, "--lang", lang, "--kind", kind])
            .output()
            .unwrap();
        assert!(new.status.success(), "{name}: {}", text(&new.stderr));
        let dir = home.path().join(name);
        for step in [&["build.sh", "test"][..], &["build.sh"][..]] {
            let out = sh(&dir, step);
            assert!(
                out.status.success(),
                "{name}: {step:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let stem = name.replace('-', "_");
        let run = Command::new(probegate)
            .current_dir(&dir)
            .args(["plugin", "run", &format!("{stem}.wasm"), "--input"])
            .arg(capture(CAPTURE))
            .args(["--config", r#"{"window_secs": 300}"#, "--site"])
            .arg(&site)
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", text(&run.stderr));
        let windows: Vec<Value> = printed(&run)
            .into_iter()
            .filter(|(topic, _)| {
                topic.starts_with(&format!("probegate/v1/dev/local/plugins/{name}/"))
            })
            .map(|(_, m)| m["data"].clone())
            .collect();
        let n = |v: &Value, k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{name}: {k} in {v}"))
        };
        let got: Vec<(u64, u64, u64, u64)> = match (lang, kind) {
            ("rust", "analytics") => windows
                .iter()
                .map(|w| (n(w, "start_ms"), n(w, "universal"), n(w, "randomized"), 0))
                .collect(),
            (_, "filter") => windows
                .iter()
                .map(|w| (n(w, "start_ms"), n(w, "passed"), n(w, "dropped"), 0))
                .collect(),
            _ => windows
                .iter()
                .map(|w| (n(w, "start_ms"), 0, 0, n(w, "sightings")))
                .collect(),
        };
        let want: Vec<(u64, u64, u64, u64)> = expected
            .iter()
            .map(|&(start, u, r, s)| match (lang, kind) {
                ("rust", "analytics") => (start, u, r, 0),
                (_, "filter") => {
                    let dropped = weak.get(&start).copied().unwrap_or(0);
                    (start, s - dropped, dropped, 0)
                }
                _ => (start, 0, 0, s),
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

/// The Zig example (`plugins/zig/signal-bands`, built and unit-tested natively by `cargo
/// xtask build-plugins`) through `plugin run` on a shared capture: each minute's bands must
/// be what the tshark oracle's signal readings put in them.
#[test]
fn the_zig_example_puts_each_minute_in_the_bands_the_oracle_does() {
    let home = tempfile::tempdir().unwrap();
    let site = home.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            "privacy.signal_floor_dbm = {FLOOR}\nprivacy.min_cell = 1\n[gateway]\nsite = \"dev\"\nid = \"local\"\n[mqtt]\nhost = \"localhost\"\n"
        ),
    )
    .unwrap();
    // start -> [near, mid, far, unknown] for every probe the privacy gate lets through.
    let mut want = std::collections::BTreeMap::<u64, [u64; 4]>::new();
    for p in expect::probes(CAPTURE) {
        if p.sa[0] & 1 != 0 || p.dbm.is_some_and(|d| d < FLOOR) {
            continue;
        }
        let band = match p.dbm {
            Some(d) if d >= -60 => 0,
            Some(d) if d >= -75 => 1,
            Some(_) => 2,
            None => 3,
        };
        want.entry(p.time_ms - p.time_ms % 60_000).or_default()[band] += 1;
    }
    // The capture must exercise every band with a reading, or the test proves little.
    for band in 0..3 {
        assert!(
            want.values().map(|b| b[band]).sum::<u64>() > 0,
            "band {band}"
        );
    }
    let run = Command::new(env!("CARGO_BIN_EXE_probegate"))
        .args(["plugin", "run"])
        .arg(plugin("signal_bands.wasm"))
        .arg("--input")
        .arg(capture(CAPTURE))
        .args(["--config", r#"{"interval_secs": 60}"#, "--site"])
        .arg(&site)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let got: Vec<Value> = printed(&run)
        .into_iter()
        .filter(|(topic, _)| topic == "probegate/v1/dev/local/plugins/signal-bands/bands")
        .map(|(_, m)| m["data"].clone())
        .collect();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let rows: Vec<(u64, [u64; 4])> = got
        .iter()
        .map(|w| {
            let bands = [n(w, "near"), n(w, "mid"), n(w, "far"), n(w, "unknown")];
            assert_eq!(n(w, "sightings"), bands.iter().sum::<u64>(), "{w}");
            (n(w, "start_ms"), bands)
        })
        .collect();
    assert_eq!(rows, want.into_iter().collect::<Vec<_>>());
    let partial: Vec<bool> = got.iter().map(|w| w["partial"] == true).collect();
    assert_eq!(partial.iter().filter(|p| **p).count(), 1);
    assert_eq!(partial.last(), Some(&true));
}
