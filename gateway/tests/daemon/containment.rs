//! One misbehaving plugin never stops the daemon or the other plugins.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, text};
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

fn run_beside(hostile_config: &str, extra: &str) -> (Subscriber, String, Broker) {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let hostile = PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config: hostile_config,
    };
    // The hostile plugin runs first, so the counter is called after every one of its failures.
    let site = Site::new(&broker, &[hostile, COUNTER], extra);
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(sub.wait_for(
        |m| m.payload.contains("\"offline\""),
        Duration::from_secs(10)
    ));
    (sub, stderr, broker)
}

fn assert_counter_unharmed(sub: &Subscriber) {
    let expected = expect::counts(CAPTURE, 300_000, FLOOR);
    assert!(!expected.is_empty());
    assert_eq!(
        expect::rows_of(&sub.stream("visitor-counter", "counts")),
        expected
    );
}

#[test]
fn a_plugin_that_traps_on_every_batch_leaves_the_daemon_and_the_counter_publishing() {
    let (sub, stderr, _broker) = run_beside("{ trap_on = \"sightings\" }", "");
    assert!(stderr.contains("plugin trapped"), "{stderr}");
    assert_counter_unharmed(&sub);
    // Dozens of traps, one log line: a router's log ring must survive a broken plugin.
    let traps: u64 = stderr
        .split("plugin_traps=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts traps");
    assert!(traps > 50, "{traps} traps");
    assert_eq!(stderr.matches("plugin trapped").count(), 1, "{stderr}");
    // Restarted after each trap, it keeps answering ticks.
    assert!(!sub.stream("hostile", "heartbeat").is_empty());
}

#[test]
fn a_plugin_in_an_endless_loop_is_stopped_by_fuel() {
    let (sub, stderr, _broker) = run_beside(
        "{ spin_on = \"sightings\" }",
        "[limits]\nfuel_per_call = 2000000",
    );
    assert!(stderr.contains("all fuel consumed"), "{stderr}");
    assert_counter_unharmed(&sub);
}
