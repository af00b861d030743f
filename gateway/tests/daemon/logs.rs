//! A plugin's `log` is bounded and cannot forge lines: a flood leaves stderr small and the
//! replay about as fast as without it, and a line break or escape code in a message stays
//! inside that message's line.

use crate::harness::{Broker, COUNTER, PluginEntry, Site, Subscriber, capture, summary, text};
use std::time::{Duration, Instant};

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

/// Replays the capture with the hostile plugin (if `act`) beside the counter; the daemon's
/// stderr and how long the replay took.
fn replay(hostile: Option<&str>) -> (String, Duration) {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let mut plugins = vec![COUNTER];
    if let Some(config) = hostile {
        plugins.insert(
            0,
            PluginEntry {
                name: "hostile",
                file: "hostile.wasm",
                config,
                allow: "",
            },
        );
    }
    let site = Site::new(&broker, &plugins, "");
    let started = Instant::now();
    let out = site.replay(&capture(CAPTURE), "info");
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
    assert!(sub.wait_offline());
    assert!(!sub.stream("visitor-counter", "counts").is_empty());
    (stderr, took)
}

#[test]
fn a_log_flood_leaves_stderr_small_and_the_replay_fast() {
    let (normal, normal_took) = replay(None);
    for config in [
        // Under the per-call cap: only the rate limit holds it.
        "{ act = \"log-flood\", on = \"tick\", count = 900 }",
        // Far over it: the call is stopped as a flood and the plugin backs off.
        "{ act = \"log-flood\", on = \"tick\", count = 10000000 }",
    ] {
        let (stderr, took) = replay(Some(config));
        let lines = stderr.matches("flooding the log").count();
        eprintln!(
            "logs: {config}: {} bytes of stderr ({} without the flood), {lines} flood lines, {} ms ({} ms without)",
            stderr.len(),
            normal.len(),
            took.as_millis(),
            normal_took.as_millis()
        );
        // 60 lines a minute of wall time, and the replay is over in seconds.
        assert!(
            lines <= 60 * (took.as_secs() as usize / 60 + 2),
            "{lines} lines"
        );
        assert!(
            stderr.len() < normal.len() + 64 * 1024,
            "{} bytes",
            stderr.len()
        );
        assert!(
            stderr.contains("plugin log lines suppressed") || lines < 60,
            "the suppression is said"
        );
        assert!(
            took < normal_took * 10 + Duration::from_secs(5),
            "{took:?} against {normal_took:?}"
        );
        assert_eq!(
            summary(&stderr, "plugin_traps") > 0,
            config.contains("10000000")
        );
    }
}

#[test]
fn a_line_break_in_a_plugin_message_cannot_forge_a_log_line() {
    let (stderr, _) = replay(Some("{ act = \"log-forge\", on = \"tick\" }"));
    assert!(
        stderr.contains("installed plugin=evil"),
        "the message was logged"
    );
    for line in stderr.lines() {
        assert!(!line.starts_with("FORGED"), "forged line: {line:?}");
        if line.contains("installed plugin=evil") {
            assert!(line.contains("harmless\\nFORGED"), "{line:?}");
        }
    }
    assert!(!stderr.contains('\x1b'), "an escape code reached the log");
    assert!(!stderr.contains('\r'), "a carriage return reached the log");
}
