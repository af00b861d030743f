//! One misbehaving plugin never stops the daemon or the other plugins: each hostile act runs
//! beside the visitor counter, whose results must come out exactly as without it.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, text};
use std::time::Instant;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

struct Run {
    sub: Subscriber,
    stderr: String,
    _broker: Broker,
}

impl Run {
    /// A number from the "probegate stopped" summary line.
    fn summary(&self, key: &str) -> u64 {
        crate::harness::summary(&self.stderr, key)
    }

    fn hostile_reports(&self) -> Vec<serde_json::Value> {
        self.sub.plugin_statuses("hostile")
    }
}

fn run_beside(act: &str, on: &str, extra: &str) -> Run {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let config = format!("{{ act = \"{act}\", on = \"{on}\" }}");
    let hostile = PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config: &config,
        allow: "",
    };
    // The hostile plugin runs first, so the counter is called after every one of its failures.
    let site = Site::new(&broker, &[hostile, COUNTER], extra);
    let started = Instant::now();
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(sub.wait_offline());
    eprintln!(
        "containment: {act} on {on}: whole replay {} ms",
        started.elapsed().as_millis()
    );
    let run = Run {
        sub,
        stderr,
        _broker: broker,
    };
    assert_counter_unharmed(&run);
    run
}

fn assert_counter_unharmed(run: &Run) {
    let expected = expect::counts(CAPTURE, 300_000, FLOOR);
    assert!(!expected.is_empty());
    assert_eq!(
        expect::rows_of(&run.sub.stream("visitor-counter", "counts")),
        expected
    );
    let counter = run.sub.plugin_statuses("visitor-counter");
    assert!(
        counter.iter().all(|s| s["state"] == "running"),
        "{counter:?}"
    );
}

fn assert_backed_off_with(run: &Run, reason: &str) {
    let reports = run.hostile_reports();
    let backing_off: Vec<_> = reports
        .iter()
        .filter(|r| r["state"] == "backing_off")
        .collect();
    assert!(!backing_off.is_empty(), "no back-off reported: {reports:?}");
    assert!(
        backing_off[0]["reason"].as_str().unwrap().contains(reason),
        "{:?}",
        backing_off[0]
    );
    assert!(backing_off[0]["retry_at_ms"].as_u64().is_some());
    let took: Vec<u64> = backing_off
        .iter()
        .filter_map(|r| r["failed_call_us"].as_u64())
        .collect();
    if let Some(max) = took.iter().max() {
        eprintln!(
            "containment: {reason}: {} failed calls, each stopped within {max} µs",
            took.len()
        );
    }
}

#[test]
fn a_plugin_that_traps_on_every_batch_is_backed_off_and_the_counter_carries_on() {
    let run = run_beside("trap", "sightings", "");
    assert_backed_off_with(&run, "unreachable");
    // Back-off doubles: far fewer calls reach it than it was offered.
    let traps = run.summary("plugin_traps");
    let skipped = run.summary("plugin_calls_skipped");
    assert!(
        traps >= 3 && skipped > traps,
        "{traps} traps, {skipped} skipped"
    );
    // One warning line however many traps: the router's log ring survives.
    assert_eq!(
        run.stderr.matches("plugin trapped").count(),
        1,
        "{}",
        run.stderr
    );
    // Restarted after each back-off (and failing again at once), as its reports show.
    let restarts = run
        .hostile_reports()
        .iter()
        .filter(|r| r["state"] == "running")
        .count();
    assert!(restarts >= 3, "{:?}", run.hostile_reports());
}

#[test]
fn an_endless_loop_is_stopped_by_fuel() {
    let run = run_beside("spin", "sightings", "[limits]\nfuel_per_call = 2000000");
    assert_backed_off_with(&run, "all fuel consumed");
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let run = run_beside("memory-bomb", "sightings", "[limits]\nmemory_mib = 8");
    assert_backed_off_with(&run, "unreachable");
}

#[test]
fn endless_recursion_is_stopped_by_the_stack_limit() {
    let run = run_beside("recurse", "sightings", "");
    assert_backed_off_with(&run, "call stack exhausted");
}

#[test]
fn a_huge_allocation_in_init_leaves_the_daemon_and_the_counter_running() {
    let run = run_beside("huge-alloc", "init", "");
    assert_backed_off_with(&run, "init");
    assert!(run.summary("plugin_start_failures") >= 1);
    assert!(run.sub.stream("hostile", "heartbeat").is_empty());
}

#[test]
fn an_output_flood_is_cut_at_the_per_call_limit() {
    let run = run_beside("flood", "tick", "[limits]\nmax_outputs_per_call = 10");
    let flood = run.sub.stream("hostile", "flood");
    let ticks = run.sub.stream("hostile", "heartbeat").len();
    assert!(!flood.is_empty());
    // Ten per call went out, the heartbeat of the same call was refused with the rest.
    assert_eq!(ticks, 0);
    assert_eq!(flood.len() % 10, 0, "{} messages", flood.len());
    assert!(run.summary("outputs_refused") >= 99_990);
    assert_eq!(
        run.stderr.matches("plugin publishes refused").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn a_plugin_cannot_publish_outside_its_namespace() {
    let run = run_beside("escape", "tick", "");
    for m in run.sub.messages() {
        if m.topic.contains("hostile") {
            assert!(
                m.topic == "probegate/v1/test-store/gw-1/plugins/hostile/heartbeat"
                    || m.topic == "probegate/v1/test-store/gw-1/plugin-status/hostile",
                "hostile reached {}",
                m.topic
            );
        }
    }
    assert!(!run.sub.stream("hostile", "heartbeat").is_empty());
    assert!(run.summary("outputs_refused") >= 8);
}
