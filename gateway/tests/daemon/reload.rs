//! Hot reload through the daemon: replacing a plugin's file swaps it in without a restart,
//! a replacement that cannot start is refused while the old version carries on, removing
//! the file stops the plugin, and the other plugins lose nothing throughout.

use crate::expect;
use crate::harness::{Broker, FLOOR, PluginEntry, Site, Subscriber, plugin, text};
use std::path::Path;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// Installs `from` and its manifest as `to` the way an operator should: write beside it,
/// rename into place, manifest first.
fn install(from: &Path, to: &Path) {
    for ext in ["toml", "wasm"] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from.with_extension(ext), &tmp).unwrap();
        std::fs::rename(&tmp, to.with_extension(ext)).unwrap();
    }
}

#[test]
fn plugins_are_swapped_refused_and_removed_while_the_others_carry_on() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let stable = PluginEntry {
        name: "stable",
        file: "visitor_counter.wasm",
        config: "{ interval_secs = 300 }",
        allow: "",
    };
    let site = Site::new(&broker, &[stable], "");
    // "counter" lives in the site directory, where the test replaces it; no config table,
    // so any of the example plugins can start under its name.
    let counter = site.dir.path().join("counter.wasm");
    install(&plugin("visitor_counter.wasm"), &counter);
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    // Granted what the occupancy plugin (installed under this name below) asks for.
    config += &format!(
        "[[plugin]]\nname = \"counter\"\npath = \"{}\"\n\
         allow = [\"signal\", \"sequence\", \"ie-signature\"]\n",
        counter.display()
    );
    std::fs::write(&site.config, config).unwrap();

    let mut stream = site.replay_stream(CAPTURE);
    let status_is = |state: &'static str| {
        move |m: &crate::harness::Message| {
            m.topic.ends_with("/plugin-status/counter") && m.payload.contains(state)
        }
    };

    stream.feed_to(1, 4);
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/plugins/counter/counts"),
        Duration::from_secs(20)
    ));

    // A "new version" that cannot start with this config (the hostile plugin needs one).
    install(&plugin("hostile.wasm"), &counter);
    assert!(
        sub.wait_for(status_is("\"reload_failed\""), Duration::from_secs(10)),
        "{:?}",
        sub.plugin_statuses("counter")
    );
    let before = sub.stream("counter", "counts").len();
    stream.feed_to(2, 4);
    assert!(
        sub.wait_until(
            |sub| sub.stream("counter", "counts").len() > before,
            Duration::from_secs(20)
        ),
        "the old version carries on after a refused reload"
    );

    // A version whose manifest asks for more than the site grants is refused by name.
    install(&plugin("echo.wasm"), &counter);
    assert!(
        sub.wait_until(
            |sub| sub
                .plugin_statuses("counter")
                .iter()
                .filter(|s| s["state"] == "reload_failed")
                .any(|s| s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("\"per-device-output\""))),
            Duration::from_secs(10)
        ),
        "{:?}",
        sub.plugin_statuses("counter")
    );
    assert!(sub.stream("counter", "seen").is_empty());

    // A version that starts: the occupancy plugin takes over under the same name.
    install(&plugin("occupancy.wasm"), &counter);
    let running = |sub: &Subscriber| {
        sub.plugin_statuses("counter")
            .iter()
            .filter(|s| s["state"] == "running")
            .count()
    };
    assert!(sub.wait_until(|sub| running(sub) >= 2, Duration::from_secs(10)));
    stream.feed_to(3, 4);
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/plugins/counter/occupancy"),
        Duration::from_secs(20)
    ));

    // Removed: the plugin stops.
    std::fs::remove_file(&counter).unwrap();
    assert!(sub.wait_for(status_is("\"removed\""), Duration::from_secs(10)));
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sub.wait_offline());

    // The other plugin saw every sighting: its counts are exactly those of a quiet run.
    assert_eq!(
        expect::rows_of(&sub.stream("stable", "counts")),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
}

#[test]
fn the_plugin_directory_starts_what_is_dropped_in_and_stops_what_is_removed() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[], "plugin_dir = \"plugins\"");
    let dir = site.dir.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    // Configured by name only: its file is found in the directory.
    install(&plugin("visitor_counter.wasm"), &dir.join("counter.wasm"));
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config += "[[plugin]]\nname = \"counter\"\nconfig = { interval_secs = 300 }\n";
    std::fs::write(&site.config, config).unwrap();

    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 4);
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/plugins/counter/counts"),
        Duration::from_secs(20)
    ));

    // Dropped in without any config: it runs under its file name, with the default grant.
    let extra = dir.join("extra.wasm");
    install(&plugin("visitor_counter.wasm"), &extra);
    assert!(
        sub.wait_until(
            |sub| sub
                .plugin_statuses("extra")
                .iter()
                .any(|s| s["state"] == "running" && s["version"].is_string()),
            Duration::from_secs(10)
        ),
        "{:?}",
        sub.plugin_statuses("extra")
    );
    stream.feed_to(3, 4);
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/plugins/extra/counts"),
        Duration::from_secs(20)
    ));

    std::fs::remove_file(&extra).unwrap();
    assert!(sub.wait_until(
        |sub| {
            sub.plugin_statuses("extra")
                .iter()
                .any(|s| s["state"] == "removed")
        },
        Duration::from_secs(10)
    ));
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sub.wait_offline());
    // The configured plugin saw every sighting throughout.
    assert_eq!(
        expect::rows_of(&sub.stream("counter", "counts")),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
}
