//! The aggregation guard through the daemon (issue 12, item 5): on an aggregate stream
//! everything outside the manifest's `measures` is a count, so a negative count, a count in a
//! string or a boolean is refused, and a small count in a member the manifest does not name is
//! suppressed like any other, while the shipped counter publishes what it always did.

use crate::expect;
use crate::harness::{
    Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, summary, text,
};
use serde_json::json;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

#[test]
fn negative_hidden_and_string_counts_do_not_leave_the_router() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let hostile = PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config: "{ act = \"bad-counts\", on = \"init\" }",
        allow: "",
    };
    let site = Site::new(&broker, &[hostile, COUNTER], "privacy.min_cell = 5");
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_offline());

    // Of five messages, the two made of counts (and the measure) went out, the small count
    // in the member the manifest does not name suppressed; the measure kept its 3.
    let agg: Vec<serde_json::Value> = sub
        .stream("hostile", "agg")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(
        agg,
        [
            json!({"start_ms": 3, "visitors": 10, "hidden": {"deep": [null]}}),
            json!({"start_ms": 3, "visitors": 7}),
        ]
    );
    // Each refusal reached the plugin with its reason, and the host counted and logged it.
    for reason in [
        "agg refused: not a count at \"/visitors\": a negative number",
        "agg refused: not a count at \"/visitors\": a string",
        "agg refused: not a count at \"/flag\": a boolean",
    ] {
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
    assert_eq!(summary(&stderr, "outputs_refused"), 3, "{stderr}");
    assert!(
        stderr.contains("plugin publishes refused by the host") && stderr.contains("not_a_count"),
        "{stderr}"
    );

    // The shipped counter, under the same guard, publishes exactly the capture's counts
    // (small ones as null).
    let expected = expect::counts(CAPTURE, 300_000, FLOOR);
    let counts = sub.stream("visitor-counter", "counts");
    assert_eq!(counts.len(), expected.len());
    for (m, row) in counts.iter().zip(&expected) {
        let d = &m["data"];
        assert_eq!(d["interval_start_ms"].as_u64(), Some(row.0), "{d}");
        assert!(d["partial"].is_boolean(), "{d}");
        for (field, n) in [
            ("universal", row.1),
            ("randomized", row.2),
            ("sightings", row.3),
        ] {
            match n {
                1..5 => assert!(d[field].is_null(), "{field}: {d}"),
                n => assert_eq!(d[field].as_u64(), Some(n), "{field}: {d}"),
            }
        }
    }
}
