//! Privacy invariant 1: no raw MAC address of the input leaves the router, in any form, in
//! any MQTT message, in the log at trace level, or in any file the run writes.

use crate::expect;
use crate::harness::{Broker, COUNTER, PluginEntry, Subscriber, capture, text};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// The capture with the most distinct addresses.
const CAPTURE: &str = "fryza-sc6-61/sc6-61_2022-10-19.pcap";

/// Finds every MAC of `macs` written in `haystack` as hex (any case, with ':' or '-' between
/// octets or without) or as a decimal 48-bit number. One linear pass: a trace log is large.
fn leaks(haystack: &str, macs: &BTreeSet<[u8; 6]>) -> Vec<String> {
    let wanted: HashSet<u64> = macs.iter().map(as_int).collect();
    let mut found = Vec::new();
    // Hex: drop the separators, then test every 12-digit window of each run of hex digits.
    let folded: Vec<u8> = haystack
        .bytes()
        .filter(|b| *b != b':' && *b != b'-')
        .map(|b| b.to_ascii_lowercase())
        .collect();
    for run in folded.split(|b| !b.is_ascii_hexdigit()) {
        for window in run.windows(12) {
            let text = std::str::from_utf8(window).unwrap();
            let value = u64::from_str_radix(text, 16).unwrap();
            if wanted.contains(&value) {
                found.push(text.to_owned());
            }
        }
    }
    for run in haystack.split(|c: char| !c.is_ascii_digit()) {
        if run.parse::<u64>().is_ok_and(|v| wanted.contains(&v)) {
            found.push(run.to_owned());
        }
    }
    found
}

fn as_int(mac: &[u8; 6]) -> u64 {
    mac.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))
}

fn files_under(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path.display().to_string(), text(&bytes)));
        }
    }
}

#[test]
fn the_scanner_finds_a_mac_where_there_is_one() {
    let mac = expect::mac("0e:d6:b5:16:a4:3e");
    let macs = BTreeSet::from([mac]);
    assert_eq!(leaks("x 0E-D6-B5-16-A4-3E y", &macs).len(), 1);
    assert_eq!(leaks("x 0e:d6:b5:16:a4:3e y", &macs).len(), 1);
    assert_eq!(leaks("x=0ed6b516a43e0", &macs).len(), 1);
    assert_eq!(leaks("id=16315323950142", &macs).len(), 1);
    assert!(leaks("nothing here", &macs).is_empty());
}

#[test]
fn no_raw_mac_reaches_mqtt_the_trace_log_or_disk() {
    let macs: BTreeSet<[u8; 6]> = expect::probes(CAPTURE).iter().map(|p| p.sa).collect();
    assert!(macs.len() > 1000, "a capture with many devices");

    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let hostile = PluginEntry {
        name: "hostile",
        file: "hostile.wasm",
        config: "{ act = \"trap\", on = \"sightings\" }",
        allow: "",
    };
    // Consent paths too: a key, an opt-out in the registry, the summary on MQTT.
    // The occupancy plugin links randomized addresses with sequence numbers and IE
    // signatures: what it publishes is scanned too.
    let occupancy = crate::occupancy::OCCUPANCY;
    // So does the visitor counter granted its optional capabilities, and it follows phones.
    let linked = PluginEntry {
        name: "counter-linked",
        file: "visitor_counter.wasm",
        config: "{ interval_secs = 300, visits = {} }",
        allow: r#"["signal", "sequence", "ie-signature"]"#,
    };
    let site = crate::consent::consent_site(
        &broker,
        &[COUNTER, hostile, occupancy, linked],
        "log = \"trace\"",
    );
    let opted_out = *macs.iter().find(|m| m[0] & 3 == 0).unwrap();
    let id = crate::consent::consent_id(&site, &opted_out);
    crate::consent::opt_out_at_start(&site, &id);
    // Every crate at trace, the MQTT client's packet dumps included, except the wasm
    // compiler's and stack walker's internals: tens of MB about registers and frames, produced
    // while compiling plugins before any sighting exists and while unwinding traps.
    let out = site.replay(
        &capture(CAPTURE),
        "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
         wasmtime_internal_cranelift=info,wasmtime_internal_unwinder=info",
    );
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());

    let log = text(&out.stderr) + &text(&out.stdout);
    assert!(log.lines().count() > 100, "the trace log is substantial");
    assert!(log.contains("plugin trapped"), "error paths were exercised");
    assert!(
        log.contains("consent registry loaded"),
        "consent paths were exercised"
    );
    assert!(
        !log.contains("dropped_opted_out=0 "),
        "the opt-out was exercised"
    );
    let mut found = leaks(&log, &macs);

    let messages = sub.messages();
    assert!(messages.len() > 20);
    assert!(
        !sub.stream("occupancy", "occupancy").is_empty(),
        "the occupancy plugin published"
    );
    let linked_visits = sub.stream("counter-linked", "visits");
    assert!(
        !linked_visits.is_empty()
            && linked_visits
                .iter()
                .all(|m| m["data"]["method"] == "linked/1"),
        "the visitor counter linked and published"
    );
    for m in &messages {
        found.extend(leaks(&format!("{} {}", m.topic, m.payload), &macs));
    }

    let mut files = Vec::new();
    files_under(site.dir.path(), &mut files);
    for (path, content) in &files {
        found.extend(
            leaks(content, &macs)
                .into_iter()
                .map(|l| format!("{path}: {l}")),
        );
    }
    assert!(
        found.is_empty(),
        "raw MACs leaked: {:?}",
        &found[..found.len().min(10)]
    );

    // The site's consent key, in hex or as its two halves, appears in no log line and no
    // message; on disk it is only in its own file.
    let key = std::fs::read_to_string(site.dir.path().join("consent.key")).unwrap();
    let key = key.trim().to_lowercase();
    assert_eq!(key.len(), 64);
    let pieces = [&key[..], &key[..32], &key[32..]];
    // Positive control: the scan sees the key where it is.
    assert!(
        files
            .iter()
            .any(|(path, content)| path.ends_with("consent.key") && content.contains(&key))
    );
    let everywhere = std::iter::once(("log".to_owned(), log.to_lowercase()))
        .chain(
            messages
                .iter()
                .map(|m| (m.topic.clone(), m.payload.to_lowercase())),
        )
        .chain(
            files
                .iter()
                .filter(|(path, _)| !path.ends_with("consent.key"))
                .map(|(path, content)| (path.clone(), content.to_lowercase())),
        );
    for (place, text) in everywhere {
        for piece in pieces {
            assert!(!text.contains(piece), "the consent key leaked into {place}");
        }
    }
}
