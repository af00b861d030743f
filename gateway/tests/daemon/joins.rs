//! Two plugins' outputs cannot be joined device by device through what the host lets out
//! (issue 12, item 4). Two copies of a plugin that publish every sighting's capture time and
//! pseudonym on an ordinary (event) stream joined 387 of 387 devices 1:1 before; now the host
//! refuses those values on every stream that is not per-device, holds what a plugin publishes
//! while handed sightings until the next tick, and stamps such messages to the whole second.

use crate::expect;
use crate::harness::{
    Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, summary, text,
};
use std::collections::{BTreeSet, HashMap};

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";
const SPY: &str = "{ act = \"time-leak\", on = \"sightings\" }";

/// The (time, pseudonym) pairs a spy got out.
fn leaked(sub: &Subscriber, spy: &str) -> Vec<(u64, u64)> {
    sub.stream(spy, "flood")
        .iter()
        .flat_map(|m| {
            let d = &m["data"];
            let t = d["t"].as_array().cloned().unwrap_or_default();
            let p = d["d"].as_array().cloned().unwrap_or_default();
            t.into_iter()
                .zip(p)
                .map(|(t, p)| (t.as_u64().unwrap(), p.as_u64().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Devices of `a` matched to exactly one device of `b` (and it to them alone) by capture
/// times that only one device had in each.
fn joined(a: &[(u64, u64)], b: &[(u64, u64)]) -> (usize, usize) {
    let by_time = |pairs: &[(u64, u64)]| {
        let mut m: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        for &(t, d) in pairs {
            m.entry(t).or_default().insert(d);
        }
        m
    };
    let (ta, tb) = (by_time(a), by_time(b));
    let mut links: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    let mut back: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for (t, da) in &ta {
        if let Some(db) = tb.get(t)
            && da.len() == 1
            && db.len() == 1
        {
            let (x, y) = (*da.first().unwrap(), *db.first().unwrap());
            links.entry(x).or_default().insert(y);
            back.entry(y).or_default().insert(x);
        }
    }
    let one_to_one = links
        .values()
        .filter(|ys| ys.len() == 1 && back[ys.first().unwrap()].len() == 1)
        .count();
    let devices = a.iter().map(|p| p.1).collect::<BTreeSet<_>>().len();
    (one_to_one, devices)
}

#[test]
fn two_plugins_cannot_publish_what_joins_their_devices() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let spy = |name| PluginEntry {
        name,
        file: "hostile.wasm",
        config: SPY,
        allow: "",
    };
    let site = Site::new(&broker, &[spy("spy-a"), spy("spy-b"), COUNTER], "");
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_offline());

    let (a, b) = (leaked(&sub, "spy-a"), leaked(&sub, "spy-b"));
    let (one_to_one, devices) = joined(&a, &b);
    eprintln!(
        "joins: {} and {} sightings got out; {one_to_one} of {devices} devices joined 1:1",
        a.len(),
        b.len()
    );
    assert_eq!(one_to_one, 0, "{one_to_one} of {devices} devices joined");
    assert!(a.is_empty() && b.is_empty(), "{} {}", a.len(), b.len());

    // They tried, and were told why; the host counted and logged the refusals.
    assert!(
        stderr.contains("time-leak refused") && stderr.contains("a per-device value at"),
        "{stderr}"
    );
    assert!(stderr.contains("per_device_value"), "{stderr}");
    assert!(summary(&stderr, "outputs_refused") > 0, "{stderr}");

    // What they published while handed sightings went out at the next tick, and no envelope
    // of a stream that is not per-device tells a millisecond.
    let during = sub.stream("spy-a", "s0");
    assert!(!during.is_empty());

    for (plugin, stream) in [
        ("spy-a", "s0"),
        ("spy-b", "s0"),
        ("visitor-counter", "counts"),
    ] {
        for m in sub.stream(plugin, stream) {
            assert_eq!(
                m["time_ms"].as_u64().unwrap() % 1000,
                0,
                "{plugin}/{stream}: {m}"
            );
        }
    }

    // The counter beside them publishes exactly the capture's counts.
    let rows = expect::rows_of(&sub.stream("visitor-counter", "counts"));
    assert_eq!(rows, expect::counts(CAPTURE, 300_000, FLOOR));
}
