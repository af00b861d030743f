//! MQTT 5 where the broker takes it, 3.1.1 where it does not or where the config says so;
//! every message delivered either way, and the status says which version the link speaks.

use crate::harness::summary;
use crate::harness::{
    Broker, COUNTER, GATEWAY_STATUS, Mqtt311Only, Refusal, Site, Subscriber, broker_log, capture,
    logging_broker, text,
};
use crate::outbox::by_seq;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";
const CLIENT: &str = "probegate-test-store-gw-1";

/// A whole replay, then: it succeeded, every seq it published arrived, and every status it
/// sent names `version`. Returns the daemon's log.
fn replay_delivers_everything_over(site: &Site, sub: &Subscriber, version: &str) -> String {
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_for(
        |m| m.topic == GATEWAY_STATUS
            && m.payload.contains("\"clean\":true")
            && m.payload.contains("\"offline\""),
        Duration::from_secs(10)
    ));
    assert_eq!(summary(&stderr, "mqtt_unacknowledged"), 0, "{stderr}");
    let published = summary(&stderr, "published");
    assert!(published > 10, "{stderr}");
    let received = by_seq(sub);
    let missing: Vec<u64> = (1..=published)
        .filter(|s| !received.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "lost seqs {missing:?} of {published}: {stderr}\n{:#?}",
        sub.messages()
    );
    let statuses = sub.statuses();
    assert_eq!(statuses.first().unwrap()["state"], "online");
    assert_eq!(statuses.last().unwrap()["clean"], true);
    for status in &statuses {
        assert_eq!(status["mqtt_version"], version, "{status}");
    }
    assert!(
        stderr.contains(&format!("mqtt=\"{version}\""))
            || stderr.contains(&format!("mqtt={version}")),
        "{stderr}"
    );
    stderr
}

#[test]
fn auto_speaks_5_to_mosquitto_and_delivers_every_message() {
    let broker = logging_broker();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    let stderr = replay_delivers_everything_over(&site, &sub, "5");
    assert!(!stderr.contains("3.1.1"), "{stderr}");
    // mosquitto's own word: protocol p5 is MQTT 5 (p2 would be 3.1.1).
    let log = broker_log(&broker);
    assert!(log.contains(&format!("as {CLIENT} (p5,")), "{log}");
    // The retained status reaches a late subscriber over 5 as well.
    let late = Subscriber::start(&broker);
    assert!(late.wait_for(
        |m| m.retained && m.topic == GATEWAY_STATUS && m.payload.contains("\"mqtt_version\":\"5\""),
        Duration::from_secs(5)
    ));
}

#[test]
fn forced_311_speaks_311_and_delivers_every_message() {
    let broker = logging_broker();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    site.mqtt_settings("protocol = \"3.1.1\"");
    replay_delivers_everything_over(&site, &sub, "3.1.1");
    let log = broker_log(&broker);
    assert!(log.contains(&format!("as {CLIENT} (p2,")), "{log}");
    assert!(!log.contains("(p5,"), "{log}");
}

/// The site's broker address replaced by `port` (a front in between).
fn through(site: &Site, broker: &Broker, port: u16) {
    let config = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        config.replace(
            &format!("port = {}", broker.port),
            &format!("port = {port}"),
        ),
    )
    .unwrap();
}

const FALLBACK: &str = "the broker does not take MQTT 5: using MQTT 3.1.1 for the rest of this run";

#[test]
fn a_broker_refusing_5_gets_311_and_every_message() {
    let broker = logging_broker();
    let sub = Subscriber::start(&broker);
    let old = Mqtt311Only::start(broker.port, Refusal::Connack);
    let site = Site::new(&broker, &[COUNTER], "");
    through(&site, &broker, old.port);
    let stderr = replay_delivers_everything_over(&site, &sub, "3.1.1");
    assert_eq!(stderr.matches(FALLBACK).count(), 1, "{stderr}");
    assert!(
        !stderr.contains("mqtt connection failed"),
        "a refusal of 5 is no failure: {stderr}"
    );
    // One v5 attempt, then 3.1.1 from then on.
    assert_eq!(old.levels(), vec![5, 4]);
}

#[test]
fn a_broker_hanging_up_on_5_gets_311_and_the_last_will_goes_over_it() {
    let broker = logging_broker();
    let sub = Subscriber::start(&broker);
    let old = Mqtt311Only::start(broker.port, Refusal::HangUp);
    let site = Site::new(&broker, &[COUNTER], "");
    through(&site, &broker, old.port);
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 2);
    assert!(sub.wait_for(|m| m.topic.ends_with("/counts"), Duration::from_secs(20)));
    assert_eq!(sub.statuses()[0]["mqtt_version"], "3.1.1");
    stream.kill();
    assert!(
        sub.wait_for(
            |m| m.topic == GATEWAY_STATUS && m.payload.contains("\"clean\":false"),
            Duration::from_secs(20)
        ),
        "no last will: {:?}",
        sub.statuses()
    );
    let will = sub.statuses().pop().unwrap();
    assert_eq!(will["state"], "offline");
    assert_eq!(will["mqtt_version"], "3.1.1");
    assert_eq!(old.levels(), vec![5, 4]);
    assert!(broker_log(&broker).contains(&format!("as {CLIENT} (p2,")));
}
