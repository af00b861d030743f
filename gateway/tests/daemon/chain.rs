//! The plugin chain through the daemon: filters judge every sighting before any analytics
//! plugin sees it, a broken filter fails closed, each plugin sees only the fields its granted
//! capabilities name, and aggregate streams lose their small cells.

use crate::expect;
use crate::harness::{
    Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, plugin, summary, text,
};
use std::path::Path;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

fn gatekeeper(act: &str) -> String {
    format!("{{ act = \"{act}\" }}")
}

/// Replays the capture to its end; the daemon's stderr.
fn replay(site: &Site, sub: &Subscriber) -> String {
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(sub.wait_offline());
    stderr
}

/// Waits (10 s at most) until an echo plugin's `fields` stream adds up to `n` sightings: under
/// a full test run the last messages can come well after the offline status that
/// `wait_offline` waits for.
fn wait_for_sightings(sub: &Subscriber, plugin: &str, n: u64) {
    let seen = |s: &Subscriber| -> u64 {
        s.stream(plugin, "fields")
            .iter()
            .filter_map(|m| m["data"]["sightings"].as_u64())
            .sum()
    };
    sub.wait_until(|s| seen(s) >= n, Duration::from_secs(10));
}

/// Probes the gate admits, as the oracle sees them.
fn admitted() -> Vec<expect::Probe> {
    expect::probes(CAPTURE)
        .into_iter()
        .filter(|p| p.sa[0] & 1 == 0 && p.dbm.is_none_or(|d| d >= FLOOR))
        .collect()
}

#[test]
fn a_filter_runs_before_every_analytics_plugin_whatever_the_config_order() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let config = gatekeeper("drop-universal");
    let filter = PluginEntry {
        name: "gatekeeper",
        file: "gatekeeper.wasm",
        config: &config,
        allow: "",
    };
    // Listed after the counter: filters still run first.
    let site = Site::new(&broker, &[COUNTER, filter], "");
    let stderr = replay(&site, &sub);

    let expected = expect::counts_where(
        CAPTURE,
        300_000,
        FLOOR,
        |p| p.sa[0] & 2 != 0, /* randomized */
    );
    let rows = expect::rows_of(&sub.stream("visitor-counter", "counts"));
    assert_eq!(rows, expected);
    assert!(
        rows.iter().all(|r| r.1 == 0),
        "no universal device got through"
    );
    let universal = admitted().iter().filter(|p| p.sa[0] & 2 == 0).count() as u64;
    assert!(universal > 0, "the capture has universal devices to drop");
    assert_eq!(summary(&stderr, "dropped_by_filter"), universal);
    assert_eq!(summary(&stderr, "dropped_filter_down"), 0);
    let statuses = sub.plugin_statuses("gatekeeper");
    assert_eq!(statuses[0]["kind"], "filter");
}

#[test]
fn tags_from_a_filter_reach_the_analytics_plugins() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let config = gatekeeper("tag-randomized");
    let filter = PluginEntry {
        name: "gatekeeper",
        file: "gatekeeper.wasm",
        config: &config,
        allow: "",
    };
    let echo = PluginEntry {
        name: "echo",
        file: "echo.wasm",
        config: "{}",
        allow: "[\"per-device-output\"]",
    };
    let site = Site::new(&broker, &[filter, echo], "");
    replay(&site, &sub);
    let admitted = admitted();
    wait_for_sightings(&sub, "echo", admitted.len() as u64);
    let (mut sightings, mut tagged) = (0, 0);
    for m in sub.stream("echo", "fields") {
        sightings += m["data"]["sightings"].as_u64().unwrap();
        tagged += m["data"]["tagged"].as_u64().unwrap();
    }
    let randomized = admitted.iter().filter(|p| p.sa[0] & 2 != 0).count() as u64;
    assert_eq!(sightings, admitted.len() as u64);
    assert_eq!(tagged, randomized);
    assert!(0 < tagged && tagged < sightings);
}

#[test]
fn a_broken_filter_fails_closed() {
    for act in ["trap", "short"] {
        let broker = Broker::start();
        let sub = Subscriber::start(&broker);
        let config = gatekeeper(act);
        let filter = PluginEntry {
            name: "gatekeeper",
            file: "gatekeeper.wasm",
            config: &config,
            allow: "",
        };
        let site = Site::new(&broker, &[filter, COUNTER], "");
        let stderr = replay(&site, &sub);
        // Nothing the filter could not judge reached the counter.
        let counted: u64 = expect::rows_of(&sub.stream("visitor-counter", "counts"))
            .iter()
            .map(|r| r.3)
            .sum();
        assert_eq!(counted, 0, "{act}");
        assert_eq!(
            summary(&stderr, "dropped_filter_down"),
            admitted().len() as u64,
            "{act}"
        );
        let reports = sub.plugin_statuses("gatekeeper");
        assert!(
            reports.iter().any(|s| s["state"] == "backing_off"),
            "{act}: {reports:?}"
        );
        // The daemon and the counter carried on: the counter is still reported running.
        assert!(
            sub.plugin_statuses("visitor-counter")
                .iter()
                .all(|s| s["state"] == "running")
        );
    }
}

/// Installs the echo plugin as `<name>.wasm` in `dir` with a manifest asking for `caps`.
fn echo_asking(dir: &Path, name: &str, caps: &str) -> String {
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin("echo.wasm"), &wasm).unwrap();
    let manifest = std::fs::read_to_string(plugin("echo.toml"))
        .unwrap()
        .replace(
            "capabilities = [\"per-device-output\"]",
            &format!("capabilities = {caps}"),
        );
    assert!(manifest.contains(caps));
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
    wasm.display().to_string()
}

#[test]
fn each_plugin_sees_only_the_fields_its_capabilities_name() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[], "");
    let all = r#"["signal", "frequency", "sequence", "ie-signature", "per-device-output"]"#;
    let plain = echo_asking(site.dir.path(), "plain", r#"["per-device-output"]"#);
    let nosy = echo_asking(site.dir.path(), "nosy", all);
    let greedy = echo_asking(
        site.dir.path(),
        "greedy",
        r#"["per-device-output", "consent"]"#,
    );
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    for (name, path) in [("plain", &plain), ("nosy", &nosy), ("greedy", &greedy)] {
        let allow = match name {
            "plain" => r#"["per-device-output"]"#,
            // Everything but consent: greedy asks for consent and must be refused.
            _ => all,
        };
        config += &format!("[[plugin]]\nname = \"{name}\"\npath = \"{path}\"\nallow = {allow}\n\n");
    }
    std::fs::write(&site.config, config).unwrap();
    replay(&site, &sub);
    let admitted = admitted();
    let n = admitted.len() as u64;
    for plugin in ["plain", "nosy"] {
        wait_for_sightings(&sub, plugin, n);
    }

    let totals = |plugin: &str| {
        let mut t = std::collections::BTreeMap::<String, u64>::new();
        for m in sub.stream(plugin, "fields") {
            for (k, v) in m["data"].as_object().unwrap() {
                *t.entry(k.clone()).or_default() += v.as_u64().unwrap();
            }
        }
        t
    };
    let with_signal = admitted.iter().filter(|p| p.dbm.is_some()).count() as u64;

    let plain = totals("plain");
    assert_eq!(plain["sightings"], n);
    for field in [
        "signal",
        "frequency",
        "sequence",
        "ie_signature",
        "consent_token",
    ] {
        assert_eq!(plain[field], 0, "plain saw {field}");
    }
    let nosy = totals("nosy");
    assert_eq!(nosy["sightings"], n);
    assert_eq!(nosy["signal"], with_signal);
    assert!(with_signal > 0);
    assert_eq!(nosy["sequence"], n);
    assert_eq!(nosy["ie_signature"], n);
    assert_eq!(nosy["consent_token"], 0);

    assert!(sub.stream("greedy", "seen").is_empty());
    let refused = sub.plugin_statuses("greedy");
    assert!(
        refused.iter().any(|s| s["state"] == "failed"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("\"consent\""))),
        "{refused:?}"
    );
}

#[test]
fn small_cells_never_leave_the_router() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    // The shipped default minimum cell: the harness turns the guard off unless told.
    let site = Site::new(&broker, &[COUNTER], "privacy.min_cell = 5");
    replay(&site, &sub);

    let expected = expect::counts(CAPTURE, 300_000, FLOOR);
    let messages = sub.stream("visitor-counter", "counts");
    assert_eq!(messages.len(), expected.len());
    let mut suppressed = 0;
    for (m, row) in messages.iter().zip(&expected) {
        let d = &m["data"];
        assert_eq!(d["interval_start_ms"].as_u64(), Some(row.0));
        for (field, n) in [
            ("universal", row.1),
            ("randomized", row.2),
            ("sightings", row.3),
        ] {
            if (1..5).contains(&n) {
                assert!(d[field].is_null(), "{field} = {n} was published: {d}");
                suppressed += 1;
            } else {
                assert_eq!(d[field].as_u64(), Some(n), "{field}: {d}");
            }
        }
    }
    assert!(suppressed > 0, "the capture has small cells to suppress");
}
