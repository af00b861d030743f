//! The outbox: a broker that goes away loses the back office nothing, and when the outbox
//! overflows, the gap record says exactly which messages are missing.

use crate::expect;
use crate::harness::{Broker, PluginEntry, Site, Subscriber, capture, summary, text};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// One-minute intervals: about a hundred messages from this capture.
const COUNTER: PluginEntry<'static> = PluginEntry {
    name: "visitor-counter",
    file: "visitor_counter.wasm",
    config: "{ interval_secs = 60 }",
    allow: "",
};

/// Every enveloped message by seq, and how many copies of each arrived.
pub(crate) fn by_seq(sub: &Subscriber) -> BTreeMap<u64, (serde_json::Value, usize)> {
    let mut out: BTreeMap<u64, (serde_json::Value, usize)> = BTreeMap::new();
    for m in sub.envelopes() {
        if let Some(seq) = m["seq"].as_u64() {
            out.entry(seq).or_insert((m.clone(), 0)).1 += 1;
        }
    }
    out
}

/// After a run through an outage (`what`): it succeeded, the outage was noticed, and the
/// subscriber holds every seq the run published. Returns the run's log and what arrived.
fn assert_nothing_lost(
    out: std::process::Output,
    sub: &Subscriber,
    what: &str,
) -> (String, BTreeMap<u64, (serde_json::Value, usize)>) {
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mqtt connection failed"),
        "the outage happened: {stderr}"
    );
    assert!(sub.wait_for(
        |m| m.payload.contains("\"clean\":true") && m.payload.contains("\"offline\""),
        Duration::from_secs(20)
    ));
    let published = summary(&stderr, "published");
    assert_eq!(summary(&stderr, "mqtt_unacknowledged"), 0, "{stderr}");
    // The default ("auto") spoke MQTT 5 to mosquitto through the whole outage: a broker
    // that goes away is no reason to fall back to 3.1.1.
    assert!(
        sub.statuses().iter().all(|s| s["mqtt_version"] == "5"),
        "{:?}",
        sub.statuses()
    );
    assert!(!stderr.contains("3.1.1"), "{stderr}");
    let received = by_seq(sub);
    let missing: Vec<u64> = (1..=published)
        .filter(|s| !received.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "lost seqs {missing:?} of {published}");
    let duplicates: usize = received.values().map(|(_, n)| n - 1).sum();
    eprintln!("outbox: {published} messages across {what}, {duplicates} duplicates");
    (stderr, received)
}

#[test]
fn a_broker_restarted_mid_stream_loses_nothing() {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-restart");
    let site = Site::new(&broker, &[COUNTER], "");
    site.mqtt_settings("metrics_interval_secs = 1");
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 3);
    assert!(sub.wait_for(|m| m.topic.ends_with("/counts"), Duration::from_secs(20)));

    broker.stop();
    // The gateway keeps capturing and counting while the broker is away.
    stream.feed_to(2, 3);
    sleep(Duration::from_secs(2));
    broker.restart();
    let (_, received) = assert_nothing_lost(stream.finish(), &sub, "a broker restart");

    // Metrics went out meanwhile, with the pipeline's counters.
    let metrics: Vec<serde_json::Value> = sub
        .messages()
        .iter()
        .filter(|m| m.topic == "probegate/v1/test-store/gw-1/metrics")
        .map(|m| m.json())
        .collect();
    assert!(
        !metrics.is_empty(),
        "no metrics in a run of several seconds"
    );
    assert!(
        metrics.iter().any(|m| m["frames"].as_u64() > Some(0)),
        "{metrics:?}"
    );

    // Deduplicated by seq, the counts are exactly those of an undisturbed run.
    let counts: Vec<serde_json::Value> = received
        .values()
        .map(|(m, _)| m.clone())
        .filter(|m| m["stream"] == "counts")
        .collect();
    assert_eq!(
        expect::rows_of(&counts),
        expect::counts(CAPTURE, 60_000, crate::harness::FLOOR)
    );
}

/// Replays the whole capture while the broker is away, brings it back after 3 s, and waits
/// for the clean offline; the daemon's stderr.
fn replay_through_outage(site: &Site, broker: &mut Broker, sub: &Subscriber) -> String {
    broker.stop();
    let child = site
        .replay_command("info", capture(CAPTURE))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_secs(3));
    broker.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_for(
        |m| m.payload.contains("\"clean\":true") && m.payload.contains("\"offline\""),
        Duration::from_secs(20)
    ));
    stderr
}

/// Every sequence number the gap records name, each record checked for consistency.
pub(crate) fn reported_gaps(sub: &Subscriber) -> BTreeSet<u64> {
    let mut reported = BTreeSet::new();
    for m in sub.messages().iter().filter(|m| m.topic.ends_with("/gaps")) {
        let g = m.json();
        let runs: Vec<(u64, u64)> = g["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
            .collect();
        assert_eq!(g["first_seq"].as_u64(), Some(runs[0].0));
        assert_eq!(g["last_seq"].as_u64(), Some(runs[runs.len() - 1].1));
        let count: u64 = runs.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!(g["count"].as_u64(), Some(count));
        assert_eq!(g["reason"], "outbox_full");
        for (first, last) in runs {
            let before = reported.len();
            reported.extend(first..=last);
            assert_eq!(
                reported.len() as u64 - before as u64,
                last - first + 1,
                "reported twice"
            );
        }
    }
    reported
}

#[test]
fn an_overflowing_outbox_reports_exactly_what_it_dropped() {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-overflow");
    let site = Site::new(&broker, &[COUNTER], "");
    site.mqtt_settings("outbox_max_messages = 20");

    // The whole capture is processed while the broker is away: far more than 20 messages.
    let stderr = replay_through_outage(&site, &mut broker, &sub);

    let published = summary(&stderr, "published");
    let dropped = summary(&stderr, "mqtt_dropped");
    assert!(
        published > 40 && dropped > 0,
        "{published} published, {dropped} dropped"
    );
    let received: BTreeSet<u64> = by_seq(&sub).into_keys().collect();
    let reported = reported_gaps(&sub);
    let missing: BTreeSet<u64> = (1..=published).filter(|s| !received.contains(s)).collect();
    assert_eq!(
        missing, reported,
        "the gap records name exactly the missing messages"
    );
    assert_eq!(reported.len() as u64, dropped);
    assert!(received.is_disjoint(&reported));
    // What was dropped was only what did not fit: a full outbox of 20 still delivers ~20.
    assert!(
        received.len() >= 15,
        "only {} messages survived the outage",
        received.len()
    );
}

#[test]
fn messages_in_flight_when_the_link_goes_silent_are_sent_again() {
    let broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-blackhole");
    let proxy = crate::harness::Proxy::start(broker.port);
    let site = Site::new(&broker, &[COUNTER], "");
    let config = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        config.replace(
            &format!("port = {}", broker.port),
            &format!("port = {}", proxy.port),
        ),
    )
    .unwrap();
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 3);
    assert!(sub.wait_for(|m| m.topic.ends_with("/counts"), Duration::from_secs(20)));

    // Silence: what the gateway sends now goes out on a connection that still looks alive,
    // and is never acknowledged.
    proxy.blackhole(true);
    stream.feed_to(2, 3);
    // keep_alive_secs = 5: the client notices within about two keep-alive periods.
    sleep(Duration::from_secs(12));
    proxy.blackhole(false);
    assert_nothing_lost(stream.finish(), &sub, "a silent link");
}

#[test]
fn a_daemon_killed_during_an_outage_sends_its_spool_after_a_restart() {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-sigkill");
    let site = Site::new(&broker, &[COUNTER], "");
    site.mqtt_settings("outbox_spool_after_secs = 0\noutbox_segment_messages = 1");
    broker.stop();
    // All of the capture's results: the counter's intervals and its "running" status.
    let expected = expect::counts(CAPTURE, 60_000, crate::harness::FLOOR).len() + 1;
    let spool = site.dir.path().join("spool");
    let segments = || std::fs::read_dir(&spool).map_or(0, |d| d.count());

    let mut first = site
        .replay_command("info", capture(CAPTURE))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while segments() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} segments",
            segments()
        );
        sleep(Duration::from_millis(50));
    }
    first.kill().unwrap(); // SIGKILL: no clean stop, nothing flushed by the daemon itself
    first.wait().unwrap();

    broker.restart();
    // A second run with nothing to capture: it only has the spool to send.
    let empty = site.dir.path().join("empty.pcap");
    crate::harness::empty_pcap(&empty, 127);
    let out = site.replay(&empty, "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("resending what an earlier run left in the spool"),
        "{stderr}"
    );
    assert!(sub.wait_for(
        |m| m.payload.contains("\"clean\":true") && m.payload.contains("\"offline\""),
        Duration::from_secs(20)
    ));

    let envelopes = sub.envelopes();
    let boots: BTreeSet<&str> = envelopes
        .iter()
        .filter_map(|m| m["boot_id"].as_str())
        .collect();
    assert_eq!(boots.len(), 2, "both runs published: {boots:?}");
    // The second run captured nothing, so every count comes from the killed one.
    let killed_boot = envelopes
        .iter()
        .find(|m| m["stream"] == "counts")
        .and_then(|m| m["boot_id"].as_str())
        .unwrap()
        .to_owned();
    let seqs: BTreeSet<u64> = envelopes
        .iter()
        .filter(|m| m["boot_id"] == killed_boot.as_str())
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (1..=expected as u64).collect(),
        "every message of the killed run"
    );
    assert_eq!(segments(), 0, "delivered segments are deleted");
}

#[test]
fn a_full_outbox_gives_up_the_low_priority_stream_and_names_exactly_its_dropped_seqs() {
    // One component twice: an hourly-ish stream that matters and a chatty one that may go.
    const KEEP: PluginEntry<'static> = PluginEntry {
        name: "counter-keep",
        file: "visitor_counter.wasm",
        config: "{ interval_secs = 600 }",
        allow: "",
    };
    const CHATTY: PluginEntry<'static> = PluginEntry {
        name: "counter-chatty",
        file: "visitor_counter.wasm",
        config: "{ interval_secs = 60 }",
        allow: "",
    };
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-priority");
    let site = Site::new(&broker, &[KEEP, CHATTY], "");
    site.mqtt_settings(
        "outbox_max_messages = 30\n\
         drop_priority = { \"counter-keep/counts\" = \"high\", \"counter-chatty/counts\" = \"low\" }",
    );
    let keep_rows = expect::counts(CAPTURE, 600_000, crate::harness::FLOOR);
    let chatty_rows = expect::counts(CAPTURE, 60_000, crate::harness::FLOOR);
    // Everything but the chatty stream fits: its 30 places are what the test is about.
    assert!(keep_rows.len() + 2 < 30 && chatty_rows.len() > 60);

    let stderr = replay_through_outage(&site, &mut broker, &sub);

    let published = summary(&stderr, "published");
    let dropped = summary(&stderr, "mqtt_dropped");
    assert_eq!(published as usize, keep_rows.len() + chatty_rows.len() + 2);
    let received = by_seq(&sub);
    let reported = reported_gaps(&sub);
    let missing: BTreeSet<u64> = (1..=published)
        .filter(|s| !received.contains_key(s))
        .collect();
    assert!(dropped > 0);
    assert_eq!(
        missing, reported,
        "the gap records name exactly the missing seqs"
    );
    assert_eq!(reported.len() as u64, dropped);

    // Every high-priority message and both plugin statuses (normal) arrived; what is
    // missing is the low-priority stream's, and nothing else.
    let of = |plugin: &str, stream: &str| -> Vec<serde_json::Value> {
        received
            .values()
            .map(|(m, _)| m.clone())
            .filter(|m| m["plugin"] == plugin && m["stream"] == stream)
            .collect()
    };
    assert_eq!(expect::rows_of(&of("counter-keep", "counts")), keep_rows);
    assert_eq!(of("counter-keep", "status").len(), 1);
    assert_eq!(of("counter-chatty", "status").len(), 1);
    let chatty = of("counter-chatty", "counts");
    assert_eq!(chatty.len() + missing.len(), chatty_rows.len());
    // Oldest first within the class: the chatty stream's survivors are its latest rows.
    assert_eq!(
        expect::rows_of(&chatty),
        chatty_rows[chatty_rows.len() - chatty.len()..]
    );
}

/// A tmpfs of `kib` KiB mounted at `path` for the test's life: a flash that fills up.
struct SmallFlash(std::path::PathBuf);

impl SmallFlash {
    /// None when this process may not mount (not root): the test says so and skips.
    fn mount(path: &std::path::Path, kib: u32) -> Option<SmallFlash> {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFlash(path.to_owned()))
    }

    fn files(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for SmallFlash {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_flash_during_an_outage_loses_nothing_and_leaves_no_debris() {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-full-flash");
    let site = Site::new(&broker, &[COUNTER], "");
    // Every message its own segment, spooled at once: 4 pages of flash hold 4 of them.
    site.mqtt_settings("outbox_spool_after_secs = 0\noutbox_segment_messages = 1");
    let Some(flash) = SmallFlash::mount(&site.dir.path().join("spool"), 16) else {
        eprintln!(
            "SKIPPED a_full_flash_during_an_outage: mounting a tmpfs needs root (CI is root)"
        );
        return;
    };
    broker.stop();
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(9, 10);
    // The flash fills: some segments written, then ENOSPC.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while flash.files().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "{:?}", flash.files());
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_secs(1));
    broker.restart();
    let (stderr, _) = assert_nothing_lost(stream.finish(), &sub, "a full flash");
    assert!(
        stderr.contains("cannot write to the spool; its messages stay in RAM"),
        "{stderr}"
    );
    // One line per attempt, and attempts paused after a failure: no log flood.
    assert_eq!(
        stderr.matches("cannot write to the spool").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        flash.files(),
        Vec::<String>::new(),
        "delivered segments deleted, no half-written file left"
    );
}
