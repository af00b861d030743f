//! The service beside other systems, against real mosquitto and a real replay: Home
//! Assistant MQTT discovery (retained sensor configs whose templates read the real
//! messages), and the JSON lines export for Kafka (every message once, keys unique).

use crate::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Evaluates the one template form the discovery configs use, `{{ value_json.a.b }}` with
/// an optional `| tojson`, on a real payload: the path must lead somewhere.
fn eval(template: &str, payload: &Value) -> Value {
    let inner = template
        .strip_prefix("{{ value_json")
        .and_then(|t| t.strip_suffix(" }}"))
        .unwrap_or_else(|| panic!("not a value_json path: {template}"));
    let path = inner.strip_suffix(" | tojson").unwrap_or(inner);
    let mut at = payload;
    for key in path.split('.').skip(1) {
        at = at
            .get(key)
            .unwrap_or_else(|| panic!("{template}: no {key} in {at}"));
    }
    at.clone()
}

/// Keys Home Assistant's MQTT sensor takes (its docs, "MQTT Sensor", configuration
/// variables, and the discovery docs' `device` and `origin` blocks), as far as we use them.
const SENSOR_KEYS: &[&str] = &[
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "unit_of_measurement",
    "state_class",
    "json_attributes_topic",
    "json_attributes_template",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "qos",
    "device",
    "origin",
];
const DEVICE_KEYS: &[&str] = &["identifiers", "name", "manufacturer", "model", "sw_version"];
const ORIGIN_KEYS: &[&str] = &["name", "sw_version", "support_url"];

fn keys_within(doc: &Value, allowed: &[&str], what: &str) {
    for key in doc.as_object().unwrap().keys() {
        assert!(allowed.contains(&key.as_str()), "{what}: unknown key {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_and_the_kafka_export_describe_the_real_messages() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_binary();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let config = service_config(dir.path(), KEY);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[home_assistant]\ndiscovery = true\n"),
    )
    .unwrap();
    let db_path = dir.path().join("bo.db");
    let db = format!("sqlite:{}", db_path.display());
    let service = Service::start(&broker, &db, &config);
    let site = site_config(dir.path(), &broker, KEY);
    let out = Command::new(&daemon)
        .args(["replay", "--config"])
        .arg(&site)
        .arg(repo().join(CAPTURE))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    service.settle();

    // Home Assistant: one retained sensor config for the one gateway with occupancy.
    let configs = retained(&broker, "homeassistant/#");
    assert_eq!(configs.len(), 1, "{configs:?}");
    let (retain, topic, payload) = &configs[0];
    assert!(retain, "the config is retained");
    assert_eq!(
        topic,
        "homeassistant/sensor/probegate-test-store/gw-1-occupancy/config"
    );
    let c: Value = serde_json::from_str(payload).unwrap();
    keys_within(&c, SENSOR_KEYS, "sensor");
    keys_within(&c["device"], DEVICE_KEYS, "device");
    keys_within(&c["origin"], ORIGIN_KEYS, "origin");
    assert!(
        c.get("device_class").is_none(),
        "people have no device class"
    );
    assert_eq!(c["unit_of_measurement"], "people");
    // A device block needs a unique id; every entity needs a state topic.
    assert!(c["unique_id"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        c["device"]["identifiers"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    );
    assert!(c["origin"]["name"].is_string());

    // The state topic is the gateway's occupancy stream, and the templates read the real
    // messages on it: the estimate, and an attributes object with low and high.
    let all = sub.all();
    let windows: Vec<&Value> = all
        .iter()
        .filter(|(t, _)| *t == c["state_topic"])
        .map(|(_, v)| v)
        .collect();
    assert!(windows.len() > 5, "{} occupancy messages", windows.len());
    assert_eq!(c["json_attributes_topic"], c["state_topic"]);
    for w in &windows {
        let state = eval(c["value_template"].as_str().unwrap(), w);
        assert!(state.is_number(), "{state}");
        assert_eq!(state, w["data"]["estimate"]);
        let attributes = eval(c["json_attributes_template"].as_str().unwrap(), w);
        assert!(
            attributes["low"].is_number() && attributes["high"].is_number(),
            "{attributes}"
        );
        assert!(attributes["low"].as_f64() <= state.as_f64());
        assert!(state.as_f64() <= attributes["high"].as_f64());
    }
    // Availability: the template on the gateway's real statuses gives exactly the payloads
    // the config names: online while it ran, offline (retained) now that it stopped.
    let status_topic = c["availability_topic"].as_str().unwrap();
    let statuses: Vec<Value> = all
        .iter()
        .filter(|(t, _)| t == status_topic)
        .map(|(_, v)| v.clone())
        .collect();
    let template = c["availability_template"].as_str().unwrap();
    let states: BTreeSet<String> = statuses
        .iter()
        .map(|s| eval(template, s).as_str().unwrap().to_owned())
        .collect();
    let named: BTreeSet<String> = [&c["payload_available"], &c["payload_not_available"]]
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, named, "{statuses:?}");
    let retained_status = retained(&broker, status_topic);
    let (_, _, last) = retained_status.last().expect("the status is retained");
    assert_eq!(
        eval(template, &serde_json::from_str(last).unwrap()),
        c["payload_not_available"]
    );

    // Kafka: the export of what the service stored is every envelope the broker carried,
    // once, unchanged, keyed by its dedup key and topic'd by its schema.
    let out = Command::new(env!("CARGO_BIN_EXE_probegate-backoffice"))
        .args(["export", "--jsonl", "--db", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut broker_envelopes: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for (t, v) in &all {
        if v.get("seq").is_some() {
            let key = format!(
                "{}/{}/{}/{}",
                v["site"].as_str().unwrap(),
                v["gateway"].as_str().unwrap(),
                v["boot_id"].as_str().unwrap(),
                v["seq"]
            );
            broker_envelopes.insert(key, (t.clone(), v.clone()));
        }
    }
    let mut keys = BTreeSet::new();
    let mut lines = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        lines += 1;
        let l: Value = serde_json::from_str(line).unwrap();
        let key = l["key"].as_str().unwrap().to_owned();
        assert!(keys.insert(key.clone()), "key {key} twice");
        let (mqtt_topic, sent) = broker_envelopes
            .get(&key)
            .unwrap_or_else(|| panic!("{key}: not on the broker"));
        assert_eq!(&l["value"], sent, "{key}: the value is the message as sent");
        assert_eq!(l["partition_key"], sent["site"]);
        let levels: Vec<&str> = mqtt_topic.split('/').collect();
        let want_topic = match &levels[4..] {
            ["plugins", plugin, stream] => format!("probegate.plugins.{plugin}.{stream}"),
            ["plugin-status", _] => "probegate.plugin-status".into(),
            ["bundles", "result"] => "probegate.bundles.result".into(),
            ["plugins-installed"] => "probegate.plugins-installed".into(),
            other => panic!("{other:?}"),
        };
        assert_eq!(l["topic"], want_topic.as_str());
    }
    assert!(lines > 100, "{lines} lines");
    assert_eq!(
        keys,
        broker_envelopes.keys().cloned().collect::<BTreeSet<_>>(),
        "every envelope exactly once"
    );
    // Redeliveries happened (retained plugin statuses come on two subscriptions), yet each
    // is one line.
    let health = service.health();
    assert!(health["repeats"].as_u64() > Some(0), "{health}");
}
