//! Stopping within the second procd allows at a reboot or sysupgrade: SIGTERM, then SIGKILL
//! about 1 s later whatever the init script's term_timeout says. In that second the back
//! office must hear "offline", and whatever the broker has not acknowledged must be on flash.

use crate::harness::{Broker, COUNTER, GATEWAY_STATUS, Site, Subscriber, capture, text};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";
/// What procd gives a daemon at a reboot between SIGTERM and SIGKILL.
const PROCD_GRACE: Duration = Duration::from_secs(1);

/// `probegate replay -` fed the capture by a thread, a slice every few milliseconds, the way a
/// busy radio delivers frames: the daemon is mid-stream whenever the test stops it.
fn live_replay(site: &Site) -> Child {
    let mut child = site.spawn_stdin_replay("info");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = std::fs::read(capture(CAPTURE)).unwrap();
    std::thread::spawn(move || {
        for chunk in bytes.chunks(4096) {
            if stdin.write_all(chunk).is_err() {
                return; // the daemon is gone
            }
            sleep(Duration::from_millis(3));
        }
        // Held open: a radio does not end.
        sleep(Duration::from_secs(60));
    });
    child
}

fn sigterm(child: &Child) -> Instant {
    let pid = child.id() as libc::pid_t;
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    Instant::now()
}

/// Waits up to `limit` for the child to exit; how long it took, if it did.
fn exited_within(child: &mut Child, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(5));
    }
    None
}

fn offline(m: &crate::harness::Message) -> bool {
    m.topic == GATEWAY_STATUS
        && m.payload.contains("\"offline\"")
        && m.payload.contains("\"clean\":true")
}

#[test]
fn sigterm_under_load_sends_offline_within_a_second() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    let mut daemon = live_replay(&site);
    // Under way: connected, and results flowing.
    assert!(sub.wait_for(
        |m| m.payload.contains("\"online\""),
        Duration::from_secs(20)
    ));
    assert!(sub.wait_for(|m| m.topic.ends_with("/counts"), Duration::from_secs(30)));
    let term = sigterm(&daemon);
    assert!(
        sub.wait_for(offline, PROCD_GRACE),
        "no clean offline within {PROCD_GRACE:?} of SIGTERM"
    );
    let heard = term.elapsed();
    let exit = exited_within(&mut daemon, PROCD_GRACE);
    let out = daemon.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    eprintln!("stop: offline at the broker {heard:?} after SIGTERM, exit after {exit:?}");
    assert!(
        exit.is_some(),
        "still running {PROCD_GRACE:?} after SIGTERM: {stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("never acknowledged"), "{stderr}");
    // The counter's partial interval, flushed at the stop, reached the broker before it.
    let counts = sub.stream("visitor-counter", "counts");
    assert!(
        counts.last().is_some_and(|c| c["data"]["partial"] == true),
        "{counts:?}"
    );
}

#[test]
fn sigterm_with_the_broker_gone_spools_everything_within_a_second() {
    let mut broker = Broker::persistent();
    let sub = Subscriber::persistent(&broker, "back-office-stop");
    let site = Site::new(&broker, &[COUNTER], "");
    let spool = site.dir.path().join("spool");
    let segments = || std::fs::read_dir(&spool).map_or(0, |d| d.count());
    let mut daemon = live_replay(&site);
    assert!(sub.wait_for(
        |m| m.payload.contains("\"online\""),
        Duration::from_secs(20)
    ));
    // The uplink dies; results pile up in RAM (nothing is spooled yet: the outage is young).
    broker.stop();
    sleep(Duration::from_millis(1500));
    assert_eq!(segments(), 0, "spooled before the stop");

    let term = sigterm(&daemon);
    let deadline = term + PROCD_GRACE;
    while segments() == 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
    let spooled_after = term.elapsed();
    // procd's SIGKILL, on time; a daemon still running then loses what it held in RAM.
    sleep(deadline.saturating_duration_since(Instant::now()));
    let _ = daemon.kill();
    daemon.wait().unwrap();
    eprintln!("stop: spool written {spooled_after:?} after SIGTERM");
    assert!(segments() > 0, "nothing spooled within {PROCD_GRACE:?}");

    // The next start sends it: every message of the stopped run arrives, its partial
    // interval (published during the stop) included.
    broker.restart();
    let empty = site.dir.path().join("empty.pcap");
    crate::harness::empty_pcap(&empty, 127);
    let out = site.replay(&empty, "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("resending what an earlier run left in the spool"),
        "{stderr}"
    );
    assert!(sub.wait_for(offline, Duration::from_secs(20)));
    let envelopes = sub.envelopes();
    let stopped_boot = envelopes
        .iter()
        .find(|m| m["stream"] == "counts")
        .and_then(|m| m["boot_id"].as_str())
        .expect("counts from the stopped run")
        .to_owned();
    let of_stopped: Vec<&serde_json::Value> = envelopes
        .iter()
        .filter(|m| m["boot_id"] == stopped_boot.as_str())
        .collect();
    let seqs: BTreeSet<u64> = of_stopped
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    let last = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (1..=last).collect(),
        "a message of the stopped run was lost"
    );
    assert!(
        of_stopped
            .iter()
            .any(|m| m["stream"] == "counts" && m["data"]["partial"] == true),
        "the partial interval flushed at the stop did not arrive"
    );
    assert_eq!(segments(), 0, "delivered segments are deleted");
}
