//! What a plugin hands the host is bounded, and a plugin that cannot start for good is
//! `failed`, not retried for ever: a 4 MiB init error, and a component over its instance
//! limit.

use crate::harness::{Broker, COUNTER, PluginEntry, Site, Subscriber, capture, summary, text};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

/// Replays the capture through stdin, and reads the daemon's peak RSS (KiB) just before
/// the input ends, once `ready` holds for what the subscriber got. Returns stderr and RSS.
fn replay_measured(
    site: &Site,
    sub: &Subscriber,
    ready: impl Fn(&Subscriber) -> bool,
) -> (String, u64) {
    let mut child = site
        .replay_command("info", "-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read(capture(CAPTURE)).unwrap())
        .unwrap();
    assert!(sub.wait_until(ready, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_offline());
    (stderr, hwm)
}

fn counting(sub: &Subscriber) -> bool {
    !sub.stream("visitor-counter", "counts").is_empty()
}

#[test]
fn a_huge_init_error_leaves_one_small_failed_status_and_a_modest_daemon() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let (_, alone_kib) = replay_measured(&Site::new(&broker, &[COUNTER], ""), &sub, counting);
    drop(sub);

    let sub = Subscriber::start(&broker);
    let hostile = PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config: "{ act = \"init-error\", on = \"init\" }",
        allow: "",
    };
    let site = Site::new(&broker, &[hostile, COUNTER], "");
    let (stderr, kib) = replay_measured(&site, &sub, counting);
    let statuses: Vec<crate::harness::Message> = sub
        .messages()
        .into_iter()
        .filter(|m| m.topic.ends_with("/plugin-status/hostile"))
        .collect();
    eprintln!(
        "limits: init error of 4 MiB: {} statuses of at most {} bytes; peak RSS {kib} KiB ({alone_kib} KiB without)",
        statuses.len(),
        statuses.iter().map(|m| m.payload.len()).max().unwrap_or(0)
    );
    assert_eq!(statuses.len(), 1, "tried once, not again: {statuses:?}");
    let status = statuses[0].json();
    assert_eq!(status["data"]["state"], "failed", "{status}");
    let reason = status["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("init refused to start: eeee"), "{reason}");
    assert!(reason.contains("bytes more"), "the cut is said: {reason}");
    assert!(
        statuses[0].payload.len() <= 1024,
        "{}",
        statuses[0].payload.len()
    );
    assert!(
        kib < alone_kib + 48 * 1024,
        "{kib} KiB against {alone_kib} KiB"
    );
    assert!(stderr.len() < 8 * 1024, "{} bytes of stderr", stderr.len());
    assert!(summary(&stderr, "plugin_calls_skipped") > 0);
    assert_eq!(
        summary(&stderr, "plugin_start_failures"),
        0,
        "never retried"
    );
    let counter = sub.plugin_statuses("visitor-counter");
    assert!(
        counter.iter().all(|s| s["state"] == "running"),
        "{counter:?}"
    );
}

#[test]
fn a_component_over_its_instance_limit_is_failed_with_the_way_out_and_runs_when_raised() {
    for (instances, runs) in [(1, false), (64, true)] {
        // A broker each: the first run's retained status would otherwise greet the second.
        let broker = Broker::start();
        let sub = Subscriber::start(&broker);
        let allow = format!("[\"signal\", \"frequency\"]\nlimits = {{ instances = {instances} }}");
        let counter = PluginEntry {
            allow: &allow,
            ..COUNTER
        };
        let site = Site::new(&broker, &[counter], "[limits]\nmax_instances = 64");
        let out = site.replay(&capture(CAPTURE), "info");
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(sub.wait_offline());
        let statuses = sub.plugin_statuses("visitor-counter");
        if runs {
            assert!(
                statuses.iter().all(|s| s["state"] == "running"),
                "{statuses:?}"
            );
            assert!(counting(&sub));
            continue;
        }
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        assert_eq!(statuses[0]["state"], "failed", "{statuses:?}");
        let reason = statuses[0]["reason"].as_str().unwrap();
        assert!(reason.contains("instance count too high"), "{reason}");
        assert!(reason.contains("limits = { instances = N"), "{reason}");
        assert!(!counting(&sub));
        assert_eq!(
            summary(&stderr, "plugin_start_failures"),
            0,
            "never retried"
        );
    }
}

#[test]
fn a_plugin_may_not_raise_its_instance_limit_past_the_sites_maximum() {
    let broker = Broker::start();
    let counter = PluginEntry {
        allow: "[\"signal\"]\nlimits = { instances = 65 }",
        ..COUNTER
    };
    let site = Site::new(&broker, &[counter], "");
    let out = site
        .command("info")
        .arg("check-config")
        .arg(&site.config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("plugin.limits.instances must be between 1 and 64 ([limits] max_instances)"),
        "{stderr}"
    );
}
