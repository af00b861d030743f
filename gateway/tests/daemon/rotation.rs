//! Key rotation through the daemon: when capture time crosses the configured local time, every
//! device gets a new pseudonym (a new epoch) and no pseudonym of the old epoch comes back.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, text};
use std::collections::BTreeSet;

/// An empty night in the lab: a few machines probing.
const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

#[test]
fn crossing_the_rotation_time_gives_every_device_a_new_pseudonym() {
    // Rotate at the first whole minute after the middle of the capture, in UTC.
    let times = expect::frame_times(CAPTURE);
    let middle_minute = (times[times.len() / 2] / 60_000 + 1) % 1440;
    let rotate_at = format!("{:02}:{:02}", middle_minute / 60, middle_minute % 60);

    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let echo = PluginEntry {
        name: "echo",
        file: "echo.wasm",
        config: "{}",
        allow: "[\"per-device-output\"]",
    };
    let site = Site::new(
        &broker,
        &[echo, COUNTER, crate::occupancy::OCCUPANCY],
        &format!("privacy.rotate_at = \"{rotate_at}\"\nprivacy.rotate_every_hours = 24"),
    );
    let out = site
        .command("info")
        .env("TZ", "UTC")
        .args(["replay", "--config"])
        .arg(&site.config)
        .arg(capture(CAPTURE))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pseudonym keys rotated"), "{stderr}");
    assert!(sub.wait_offline());

    let mut by_epoch: [BTreeSet<u64>; 3] = Default::default();
    for m in sub.stream("echo", "seen") {
        for pair in m["data"]["seen"].as_array().unwrap() {
            let (device, epoch) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
            by_epoch[epoch as usize].insert(device);
        }
    }
    assert!(by_epoch[0].is_empty());
    assert!(
        !by_epoch[1].is_empty() && !by_epoch[2].is_empty(),
        "{by_epoch:?}"
    );
    assert!(
        by_epoch[1].is_disjoint(&by_epoch[2]),
        "a pseudonym survived the rotation: {by_epoch:?}"
    );
    // Exactly one pseudonym per device and epoch: as many as distinct addresses on each side.
    let mid = times[times.len() / 2];
    let rotation = mid - mid % 86_400_000 + middle_minute * 60_000;
    let macs = |before: bool| -> usize {
        expect::probes(CAPTURE)
            .iter()
            .filter(|p| p.sa[0] & 1 == 0 && p.dbm.is_none_or(|d| d >= FLOOR))
            .filter(|p| (p.time_ms < rotation) == before)
            .map(|p| p.sa)
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        (by_epoch[1].len(), by_epoch[2].len()),
        (macs(true), macs(false)),
        "{by_epoch:?}"
    );

    // The host restarted every plugin at the rotation, so no per-device state of the old
    // epoch can survive in any plugin (the occupancy plugin's links included): each was
    // started afresh once more (and said so).
    assert_eq!(
        stderr
            .matches("keys rotated: plugin restarted empty")
            .count(),
        3,
        "{stderr}"
    );
    // The occupancy plugin's old instance published its open window at the rotation, marked
    // partial, and the new one started counting from nothing.
    let windows = sub.stream("occupancy", "occupancy");
    assert!(
        windows.iter().any(|m| m["data"]["partial"] == true
            && m["data"]["window_end_ms"].as_u64().unwrap() > rotation),
        "{windows:?}"
    );
    for plugin in ["echo", "visitor-counter", "occupancy"] {
        let starts = sub
            .plugin_statuses(plugin)
            .iter()
            .filter(|s| s["state"] == "running")
            .count();
        assert_eq!(starts, 2, "{plugin}: {:?}", sub.plugin_statuses(plugin));
    }
}
