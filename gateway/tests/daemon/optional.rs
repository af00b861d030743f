//! Optional capabilities: a plugin that lists `sequence` and `ie-signature` under
//! `optional-capabilities` loads on the default grant and sees those fields only where the site
//! grants them. The visitor counter links a phone's randomized addresses when granted, and says
//! so in every message's `method`; on the default grant it publishes what it always did.

use crate::expect;
use crate::harness::{Broker, FLOOR, PluginEntry, Site, Subscriber, capture, plugin, text};
use serde_json::Value;

/// A lecture day: up to 17 people, many phones of one model.
const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-03-08.pcap";

const DEFAULT_GRANT: PluginEntry<'static> = PluginEntry {
    name: "visitor-counter",
    file: "visitor_counter.wasm",
    config: "{ interval_secs = 300, visits = {} }",
    allow: "",
};

const LINKING: PluginEntry<'static> = PluginEntry {
    allow: r#"["signal", "sequence", "ie-signature"]"#,
    ..DEFAULT_GRANT
};

/// Replays the day through a site with `entries`, to the end; the broker lives as long as
/// the subscriber's messages are read.
fn replay(entries: &[PluginEntry]) -> (Broker, Subscriber) {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, entries, "");
    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());
    (broker, sub)
}

fn methods(messages: &[Value]) -> Vec<&str> {
    let mut m: Vec<&str> = messages
        .iter()
        .map(|m| m["data"]["method"].as_str().unwrap_or("none"))
        .collect();
    m.dedup();
    m
}

/// Randomized visitors and passers-by over the day.
fn randomized_visits(messages: &[Value]) -> (u64, u64) {
    messages.iter().fold((0, 0), |(v, p), m| {
        let r = &m["data"]["randomized"];
        (
            v + r["visitors"].as_u64().unwrap(),
            p + r["passers_by"].as_u64().unwrap(),
        )
    })
}

#[test]
fn the_visitor_counter_links_phones_only_when_granted_and_says_so() {
    let (_b1, plain) = replay(&[DEFAULT_GRANT]);
    let plain_counts = plain.stream("visitor-counter", "counts");
    let plain_visits = plain.stream("visitor-counter", "visits");
    assert!(plain_counts.len() > 10 && plain_visits.len() > 10);
    // The default grant: loaded, publishing what it always did, tagged.
    assert_eq!(
        expect::rows_of(&plain_counts),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
    assert_eq!(methods(&plain_counts), ["addresses/1"]);
    assert_eq!(methods(&plain_visits), ["addresses/1"]);
    for m in &plain_counts {
        for key in ["linked", "low", "high"] {
            assert!(m["data"].get(key).is_none(), "{key} in {m}");
        }
    }

    let (_b2, linked) = replay(&[LINKING]);
    let linked_counts = linked.stream("visitor-counter", "counts");
    let linked_visits = linked.stream("visitor-counter", "visits");
    assert_eq!(methods(&linked_counts), ["linked/1"]);
    assert_eq!(methods(&linked_visits), ["linked/1"]);
    // The address counts are the same; the phones linked from them are fewer, within a range.
    assert_eq!(
        expect::rows_of(&linked_counts),
        expect::rows_of(&plain_counts)
    );
    let (mut addresses, mut phones) = (0, 0);
    for m in &linked_counts {
        let n = |k: &str| {
            m["data"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} in {m}"))
        };
        assert!(
            n("low") <= n("linked") && n("linked") <= n("high") && n("high") <= n("randomized"),
            "{m}"
        );
        addresses += n("randomized");
        phones += n("linked");
    }
    assert!(
        phones * 10 < addresses * 9,
        "linking should merge a lecture day's addresses: {phones} phones from {addresses} addresses"
    );
    assert_eq!(linked_visits.len(), plain_visits.len());
    let (plain_v, plain_p) = randomized_visits(&plain_visits);
    let (linked_v, linked_p) = randomized_visits(&linked_visits);
    eprintln!(
        "{CAPTURE}: randomized visitors {plain_v} by address, {linked_v} linked; passers-by {plain_p} by address, {linked_p} linked; phones·windows {phones} of {addresses} addresses"
    );
    assert!(
        linked_v + linked_p < plain_v + plain_p,
        "linked phones should be far fewer than addresses: {linked_v}+{linked_p} against {plain_v}+{plain_p}"
    );
    // A linked stay spans several addresses: stays that were too short by address become
    // visits, and fewer short ones are left as passers-by.
    assert!(linked_v > plain_v, "{linked_v} vs {plain_v}");
    assert!(linked_p < plain_p, "{linked_p} vs {plain_p}");
}

#[test]
fn an_optional_capability_not_granted_is_never_seen() {
    // The echo test plugin, asking for sequence and ie-signature as optional, beside a copy of
    // its component (a manifest sits beside its component).
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("echo_optional.wasm");
    std::fs::copy(plugin("echo.wasm"), &wasm).unwrap();
    let manifest = std::fs::read_to_string(plugin("echo.toml")).unwrap();
    let manifest = manifest.replace(
        "capabilities = [\"per-device-output\"]",
        "capabilities = [\"per-device-output\"]\noptional-capabilities = [\"sequence\", \"ie-signature\"]",
    );
    assert!(manifest.contains("optional-capabilities"));
    std::fs::write(dir.path().join("echo_optional.toml"), manifest).unwrap();
    let file = wasm.to_str().unwrap();

    let fields = |allow: &str| {
        let (_broker, sub) = replay(&[PluginEntry {
            name: "echo",
            file,
            config: "{}",
            allow,
        }]);
        let seen = sub.stream("echo", "fields");
        assert!(
            !seen.is_empty(),
            "echo published no fields with allow = {allow}"
        );
        let sum = |k: &str| -> u64 { seen.iter().map(|m| m["data"][k].as_u64().unwrap()).sum() };
        (sum("sightings"), sum("sequence"), sum("ie_signature"))
    };
    // Neither optional capability granted: loaded, and neither field ever present.
    let (sightings, seq, sig) = fields(r#"["signal", "frequency", "per-device-output"]"#);
    assert!(sightings > 1000);
    assert_eq!((seq, sig), (0, 0));
    // One of the two granted: that field on every sighting, the other still never.
    let (sightings, seq, sig) = fields(r#"["signal", "per-device-output", "sequence"]"#);
    assert_eq!((seq, sig), (sightings, 0));
    // Both.
    let (sightings, seq, sig) =
        fields(r#"["signal", "per-device-output", "sequence", "ie-signature"]"#);
    // Every probe of the day carries information elements, hence a signature.
    assert_eq!((seq, sig), (sightings, sightings));
}

/// The README's comparison: randomized visits and passers-by on every shared day, by address
/// and linked (run with `-- --nocapture` for the table). There is no hand count of visits, so
/// this asserts only what linking must do on any day: it never finds more passers-by, since
/// every linked stay is the union of address stays.
#[test]
fn visits_with_and_without_linking_on_every_day() {
    const DAYS: [&str; 7] = [
        "2022-10-19",
        "2023-02-16",
        "2023-03-08",
        "2024-03-22",
        "2023-10-20",
        "2023-04-15",
        "2023-04-17",
    ];
    eprintln!(
        "day          | randomized visitors by address / linked | passers-by by address / linked | universal visitors"
    );
    for day in DAYS {
        let pcap = format!("fryza-sc6-61/sc6-61_{day}.pcap");
        let run = |entry: PluginEntry| {
            let broker = Broker::start();
            let sub = Subscriber::start(&broker);
            let site = Site::new(&broker, &[entry], "");
            let out = site.replay(&capture(&pcap), "info");
            assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
            assert!(sub.wait_offline());
            let visits = sub.stream("visitor-counter", "visits");
            let universal: u64 = visits
                .iter()
                .map(|m| m["data"]["universal"]["visitors"].as_u64().unwrap())
                .sum();
            (randomized_visits(&visits), universal)
        };
        let ((plain_v, plain_p), universal) = run(DEFAULT_GRANT);
        let ((linked_v, linked_p), linked_universal) = run(LINKING);
        eprintln!(
            "{day}   | {plain_v:>5} / {linked_v:<5} | {plain_p:>5} / {linked_p:<5} | {universal} / {linked_universal}"
        );
        assert!(linked_p <= plain_p, "{day}: {linked_p} vs {plain_p}");
    }
}
