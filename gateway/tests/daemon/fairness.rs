//! A plugin's flood costs that plugin only: beside a plugin that publishes as much as the
//! host lets it, the visitor counter's messages come out exactly as when it runs alone,
//! with the broker up and through an outage, and the drops are reported in a few records.

use crate::expect;
use crate::harness::{Broker, PluginEntry, Site, Subscriber, capture, summary, text};
use crate::outbox::{by_seq, reported_gaps};
use std::collections::BTreeSet;
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// One-minute intervals: many counter messages among the flood.
const COUNTER: PluginEntry<'static> = PluginEntry {
    name: "visitor-counter",
    file: "visitor_counter.wasm",
    config: "{ interval_secs = 60 }",
    allow: "",
};

/// The counter's count messages from one run, as the back office stores them (by seq).
fn counter_rows(sub: &Subscriber) -> Vec<expect::Row> {
    let counts: Vec<serde_json::Value> = by_seq(sub)
        .into_values()
        .map(|(m, _)| m)
        .filter(|m| m["plugin"] == "visitor-counter" && m["stream"] == "counts")
        .collect();
    expect::rows_of(&counts)
}

/// Replays the capture with `plugins`, the broker away for the first 3 s when `outage`.
fn run(plugins: &[PluginEntry], outage: bool, mqtt: &str) -> (Subscriber, String, Broker) {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-fairness");
    let site = Site::new(&broker, plugins, "");
    if !mqtt.is_empty() {
        site.mqtt_settings(mqtt);
    }
    if outage {
        broker.stop();
    }
    let child = site
        .replay_command("info", capture(CAPTURE))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if outage {
        sleep(Duration::from_secs(3));
        broker.restart();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_for(
        |m| m.payload.contains("\"clean\":true") && m.payload.contains("\"offline\""),
        Duration::from_secs(30)
    ));
    (sub, stderr, broker)
}

fn flooder(config: &str) -> PluginEntry<'_> {
    PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config,
        allow: "",
    }
}

/// The counter beside the flooder: its rows equal the lone run's, none of its messages is
/// missing, every missing seq is the flooder's and named in a gap record, and the log and
/// the gap topic stay small.
fn assert_flood_costs_the_flooder_only(config: &str, outage: bool, mqtt: &str) {
    let expected = expect::counts(CAPTURE, 60_000, crate::harness::FLOOR);
    let (alone, _, _b) = run(&[COUNTER], outage, mqtt);
    assert_eq!(counter_rows(&alone), expected);
    drop(alone);

    let (sub, stderr, _b) = run(&[flooder(config), COUNTER], outage, mqtt);
    assert_eq!(counter_rows(&sub), expected, "{config}, outage {outage}");
    let counter = sub.plugin_statuses("visitor-counter");
    assert!(
        counter.iter().all(|s| s["state"] == "running"),
        "{counter:?}"
    );

    let published = summary(&stderr, "published");
    let received = by_seq(&sub);
    let reported = reported_gaps(&sub);
    let missing: BTreeSet<u64> = (1..=published)
        .filter(|s| !received.contains_key(s))
        .collect();
    assert_eq!(
        missing, reported,
        "the gap records name exactly the missing seqs"
    );
    assert_eq!(summary(&stderr, "mqtt_dropped"), reported.len() as u64);
    let records: Vec<serde_json::Value> = sub
        .messages()
        .iter()
        .filter(|m| m.topic.ends_with("/gaps"))
        .map(|m| m.json())
        .collect();
    assert!(
        records.iter().all(|g| g["plugin"] == "hostile"),
        "{records:?}"
    );
    let warns = stderr.matches("plugin messages dropped").count();
    eprintln!(
        "fairness: {config} outage={outage}: {published} published, {} dropped in {} gap records, {warns} log lines, {} outputs refused",
        reported.len(),
        records.len(),
        summary(&stderr, "outputs_refused"),
    );
    assert!(warns <= 3, "{warns} lines about drops");
    assert!(records.len() <= 200, "{} gap records", records.len());
    // The plugin's allowance spans its streams: the many-stream flood gets no more out than
    // one stream's (240 a minute of capture time by default, a minute's worth at once).
    let hostile = received
        .values()
        .filter(|(m, _)| m["plugin"] == "hostile")
        .count() as u64
        + reported.len() as u64;
    let minutes = (expected.last().unwrap().0 - expected[0].0) / 60_000 + 2;
    assert!(
        hostile <= 240 * (minutes + 1),
        "{hostile} flood messages in {minutes} minutes"
    );
}

/// With the broker up on loopback the outbox keeps up (nothing is dropped): this run checks
/// the per-plugin allowance and that nothing of the counter's is lost on the way.
#[test]
fn a_thousand_messages_a_call_cost_the_counter_nothing() {
    assert_flood_costs_the_flooder_only(
        "{ act = \"flood\", on = \"tick\", count = 1000 }",
        false,
        "outbox_max_messages = 150",
    );
}

#[test]
fn a_hundred_streams_flooded_through_an_outage_cost_the_counter_nothing() {
    assert_flood_costs_the_flooder_only(
        "{ act = \"stream-flood\", on = \"tick\", count = 64 }",
        true,
        "outbox_max_messages = 300",
    );
}

#[test]
fn a_thousand_messages_a_call_through_an_outage_cost_the_counter_nothing() {
    assert_flood_costs_the_flooder_only(
        "{ act = \"flood\", on = \"tick\", count = 1000 }",
        true,
        "",
    );
}
