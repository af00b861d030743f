//! The plugin written in C (`plugins/c/visit-tally`), built from the WIT alone, runs in the
//! daemon beside the Rust visitor counter: its per-minute counts equal those computed from
//! the tshark oracle, and a back-office `reset` reaches it over MQTT.

use crate::expect::{self, Row};
use crate::harness::{
    Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, record_offsets, text,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";
const MINUTE_MS: u64 = 60_000;
const TOPICS: &str = "probegate/v1/test-store/gw-1/plugins/visit-tally";

const TALLY: PluginEntry<'static> = PluginEntry {
    name: "visit-tally",
    file: "visit_tally.wasm",
    config: "{ interval_secs = 60 }",
    allow: "",
};

/// (start, devices, randomized, sightings, partial): what the plugin's README promises,
/// derived from the visitor counter's oracle rows. A device's address is either randomized
/// or not, so distinct devices are the two kinds added; minutes without sightings are not
/// published.
fn tally_rows(rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter()
        .filter(|&(_, _, _, sightings, _)| sightings > 0)
        .map(|(start, u, r, n, partial)| (start, u + r, r, n, partial))
        .collect()
}

fn rows_of(data: &[Value]) -> Vec<Row> {
    data.iter()
        .map(|d| {
            let start = d["start_ms"].as_u64().unwrap();
            assert_eq!(d["end_ms"].as_u64(), Some(start + MINUTE_MS), "{d}");
            (
                start,
                d["devices"].as_u64().unwrap(),
                d["randomized"].as_u64().unwrap(),
                d["sightings"].as_u64().unwrap(),
                d["partial"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_c_plugin_counts_each_minute_exactly_beside_the_rust_counter() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER, TALLY], "");

    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());

    let data: Vec<Value> = sub
        .stream("visit-tally", "tally")
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    let expected = tally_rows(expect::counts(CAPTURE, MINUTE_MS, FLOOR));
    assert!(expected.len() > 50, "the capture spans many busy minutes");
    assert!(
        expected.iter().any(|r| r.1 > r.2 && r.2 > 0),
        "some minutes mix universal and randomized devices"
    );
    assert_eq!(rows_of(&data), expected);

    // The Rust plugin beside it is undisturbed, and the C one never trapped.
    assert_eq!(
        expect::rows_of(&sub.stream("visitor-counter", "counts")),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
    let statuses = sub.plugin_statuses("visit-tally");
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| s["state"] == "running"),
        "{statuses:?}"
    );
    assert!(text(&out.stderr).contains(" plugin_traps=0 "));
}

#[test]
fn the_c_plugin_refuses_a_config_it_does_not_understand() {
    let broker = Broker::start();
    for (config, why) in [
        (
            "{ interval_secs = 0 }",
            "interval_secs must be a whole number",
        ),
        (
            "{ interval_secs = 1.5 }",
            "interval_secs must be a whole number",
        ),
        ("{ intreval_secs = 60 }", "unknown config key"),
    ] {
        let site = Site::new(&broker, &[PluginEntry { config, ..TALLY }], "");
        let out = site
            .command("warn")
            .arg("check-config")
            .arg(&site.config)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{config}: {}",
            text(&out.stderr)
        );
        let said = text(&out.stdout) + &text(&out.stderr);
        assert!(said.contains(why), "{config}: {said}");
    }
    let site = Site::new(&broker, &[TALLY], "");
    let out = site
        .command("warn")
        .arg("check-config")
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// mosquitto_sub on the plugin's own topics. Not the harness's subscriber: that one checks
/// every topic under `probegate/` against docs/schemas, which has no schema for a plugin's
/// command topic, so the command this test sends would fail it.
struct PluginTopics {
    child: Child,
    messages: Arc<Mutex<Vec<(String, Value)>>>,
}

impl PluginTopics {
    fn start(broker: &Broker) -> PluginTopics {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
            .args(["-t", &format!("{TOPICS}/#"), "-F", "%t %p"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((topic, payload)) = line.split_once(' ') {
                    let json = serde_json::from_str(payload).unwrap_or(Value::Null);
                    sink.lock().unwrap().push((topic.to_owned(), json));
                }
            }
        });
        let topics = PluginTopics { child, messages };
        // A marker under the subscription comes back once it is in place.
        let deadline = Instant::now() + Duration::from_secs(10);
        while topics.data("_ready").is_empty() {
            assert!(Instant::now() < deadline, "mosquitto_sub never subscribed");
            mosquitto_pub(broker, &format!("{TOPICS}/_ready"), "null");
            sleep(Duration::from_millis(200));
        }
        topics
    }

    /// The `data` of every enveloped message on `stream`, in arrival order.
    fn data(&self, stream: &str) -> Vec<Value> {
        let topic = format!("{TOPICS}/{stream}");
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, m)| m.get("data").cloned().unwrap_or(Value::Null))
            .collect()
    }

    fn wait_for_count(&self, stream: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.data(stream).len() < n {
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for PluginTopics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_pub(broker: &Broker, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_reset_over_mqtt_discards_the_open_minute_and_only_that() {
    let broker = Broker::start();
    let topics = PluginTopics::start(&broker);
    let site = Site::new(&broker, &[TALLY], "");

    // Where the stream pauses: after the first half of the frames.
    let bytes = std::fs::read(capture(CAPTURE)).unwrap();
    let fed = record_offsets(&bytes).len() / 2;
    let times = expect::frame_times(CAPTURE);
    let now_ms = *times[..fed].iter().max().unwrap();
    let open_start = now_ms - now_ms % MINUTE_MS;
    // The reset drops what the open minute counted before it; later sightings count again.
    let cut = |p: &expect::Probe| !(p.frame <= fed && p.time_ms >= open_start);
    let without_reset = tally_rows(expect::counts(CAPTURE, MINUTE_MS, FLOOR));
    let expected = tally_rows(expect::counts_where(CAPTURE, MINUTE_MS, FLOOR, cut));
    assert_ne!(
        expected, without_reset,
        "the pause must fall in a busy minute"
    );
    let closed_before = without_reset
        .iter()
        .filter(|r| r.0 + MINUTE_MS <= now_ms)
        .count();

    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 2);
    assert!(
        topics.wait_for_count("tally", closed_before, Duration::from_secs(20)),
        "the minutes before the pause were not published"
    );
    // The daemon reads the rest of what was fed within microseconds; the acknowledgement's
    // time below proves it did before the command arrived.
    sleep(Duration::from_secs(1));
    let acked = (0..3).any(|_| {
        mosquitto_pub(
            &broker,
            "probegate/v1/test-store/gw-1/cmd/plugins/visit-tally/reset",
            "{}",
        );
        topics.wait_for_count("control", 1, Duration::from_secs(5))
    });
    assert!(acked, "no acknowledgement of the reset");
    let ack = &topics.data("control")[0];
    assert_eq!(ack["command"], "reset");
    assert_eq!(ack["now_secs"].as_u64(), Some(now_ms / 1000), "{ack}");

    let out = stream.finish();
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(topics.wait_for_count("tally", expected.len(), Duration::from_secs(10)));
    sleep(Duration::from_millis(200));
    assert_eq!(rows_of(&topics.data("tally")), expected);
    assert_eq!(topics.data("control").len(), 1);
}
