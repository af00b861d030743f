//! A replayed capture reaches the back office as the visitor counter's counts, in envelopes,
//! with the gateway's status retained and its last will in place.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, Site, Subscriber, capture, text};
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

#[test]
fn replayed_counts_arrive_over_mqtt_and_match_the_capture() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");

    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());

    let messages = sub.stream("visitor-counter", "counts");
    let expected = expect::counts(CAPTURE, 300_000, FLOOR);
    assert!(expected.len() > 10, "the capture spans many intervals");
    assert_eq!(expect::rows_of(&messages), expected);

    // Envelopes: one boot, sequence numbers 1..=n without gaps, identity on every message.
    let boot = messages[0]["boot_id"].as_str().unwrap().to_owned();
    let envelopes = sub.envelopes();
    for (i, m) in envelopes.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1));
        assert_eq!(m["boot_id"].as_str(), Some(boot.as_str()));
        assert_eq!(m["site"], "test-store");
        assert_eq!(m["gateway"], "gw-1");
        assert_eq!(m["plugin"], "visitor-counter");
    }
    // The host reported the plugin running, before any of its counts.
    assert_eq!(envelopes[0]["stream"], "status");
    assert_eq!(envelopes[0]["data"]["state"], "running");
    assert!(envelopes[1..].iter().all(|m| m["stream"] == "counts"));
    let topics: Vec<String> = sub.messages().into_iter().map(|m| m.topic).collect();
    assert!(
        topics
            .iter()
            .all(|t| t.starts_with("probegate/v1/test-store/gw-1/"))
    );

    let statuses = sub.statuses();
    assert_eq!(statuses.first().unwrap()["state"], "online");
    assert_eq!(statuses.last().unwrap()["state"], "offline");
    assert_eq!(statuses.last().unwrap()["clean"], true);
    assert_eq!(
        statuses.last().unwrap()["boot_id"].as_str(),
        Some(boot.as_str())
    );

    // A back office that subscribes later still learns the gateway's state: it is retained.
    let late = Subscriber::start(&broker);
    assert!(late.wait_for(
        |m| m.retained && m.topic.ends_with("/status") && m.payload.contains("\"offline\""),
        Duration::from_secs(5)
    ));
}

#[test]
fn a_stream_on_stdin_is_processed_as_it_arrives_and_a_killed_gateway_leaves_its_last_will() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    // Half the capture, and the pipe stays open: results for it must come out regardless.
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 2);
    assert!(
        sub.wait_for(|m| m.topic.ends_with("/counts"), Duration::from_secs(20)),
        "no counts while the stream is still open"
    );
    assert!(sub.wait_for(|m| m.payload.contains("\"online\""), Duration::from_secs(5)));

    stream.kill(); // SIGKILL: no clean goodbye, so the broker must send the will.
    assert!(
        sub.wait_for(
            |m| m.payload.contains("\"offline\"") && m.payload.contains("\"clean\":false"),
            Duration::from_secs(20)
        ),
        "no last will after the gateway died: {:?}",
        sub.statuses()
    );
    let last = sub.statuses().pop().unwrap();
    assert_eq!(last["state"], "offline");
    assert_eq!(last["clean"], false);
    // The default ("auto") spoke MQTT 5 to mosquitto, and the will was left over it.
    assert_eq!(last["mqtt_version"], "5");
}
