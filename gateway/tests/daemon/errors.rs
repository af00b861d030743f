//! Bad input gets a clear error, a non-zero exit, no panic, and loses nothing already read.

use crate::harness::{Broker, COUNTER, Site, Subscriber, capture, text};
use std::process::Command;

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_pcap_is_refused_clearly() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "");
    let bogus = site.dir.path().join("bogus.pcap");
    std::fs::write(&bogus, b"this is not a capture file at all, just text\n").unwrap();
    let out = site.replay(&bogus, "info");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bogus.pcap: cannot open"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn a_capture_of_another_link_type_is_refused_by_name() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "");
    let ethernet = site.dir.path().join("ethernet.pcap");
    crate::harness::empty_pcap(&ethernet, 1);
    let out = site.replay(&ethernet, "info");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("link type 1 (EN10MB) is not 802.11"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
}

#[test]
fn a_truncated_capture_fails_but_what_was_read_is_published() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    let bytes = std::fs::read(capture("fryza-sc6-61/sc6-61_2023-10-20.pcap")).unwrap();
    let cut = site.dir.path().join("cut.pcap");
    // Cut inside a packet, as a full disk or a dying recorder leaves it.
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).unwrap();
    let out = site.replay(&cut, "info");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a damaged capture must not look like success"
    );
    assert!(stderr.contains("cut.pcap: read failed after"), "{stderr}");
    assert_no_panic(&stderr);
    assert!(sub.wait_offline());
    let counts = sub.stream("visitor-counter", "counts");
    assert!(
        counts.len() > 3,
        "the intact part was counted and published"
    );
    assert_eq!(counts.last().unwrap()["data"]["partial"], true);
}

#[test]
fn check_config_points_at_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probegate.toml");
    std::fs::write(
        &path,
        "[gateway]\nsite = \"s\"\nid = \"g\"\n\n[mqtt]\nhost = \"localhost\"\nprot = 1883\n",
    )
    .unwrap();
    let out = check_config(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("probegate.toml:7:1:"), "{stderr}");
    assert!(stderr.contains("prot"), "{stderr}");
}

fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_probegate"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn the_shipped_configs_are_valid() {
    crate::harness::plugin("visitor_counter.wasm");
    let demo = check_config(&crate::harness::repo().join("config/demo.toml"));
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    // The production config names the router's plugin path; point it at the built plugin.
    let shipped =
        std::fs::read_to_string(crate::harness::repo().join("config/probegate.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("probegate.toml");
    let wasm = crate::harness::plugin("visitor_counter.wasm");
    let replaced = shipped.replace(
        "/usr/lib/probegate/plugins/visitor_counter.wasm",
        &wasm.display().to_string(),
    );
    assert_ne!(
        replaced, shipped,
        "the shipped config names the plugin path"
    );
    std::fs::write(&local, replaced).unwrap();
    let out = check_config(&local);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_config_refuses_a_plugin_that_does_not_load() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "");
    let config = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        config.replace("visitor_counter.wasm", "missing.wasm"),
    )
    .unwrap();
    let out = check_config(&site.config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("plugin visitor-counter: cannot load"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn a_plugin_that_imports_wasi_is_refused_by_name_and_the_others_run() {
    // Built for wasm32-wasip2: its println! and clock read are WASI imports. The host links
    // none, so the plugin gets no file system, network, clock or randomness of its own.
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let wasi = crate::harness::PluginEntry {
        name: "wasi-user",
        file: "wasi_user.wasm",
        config: "{}",
        allow: "",
    };
    let site = Site::new(&broker, &[wasi, COUNTER], "");
    let out = check_config(&site.config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plugin wasi-user: cannot load"), "{stderr}");
    assert!(stderr.contains("wasi:"), "{stderr}");

    let out = site.replay(&capture("fryza-sc6-61/sc6-61_2023-10-20.pcap"), "info");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sub.wait_offline());
    let refused = sub.plugin_statuses("wasi-user");
    assert!(
        refused
            .iter()
            .any(|s| s["state"] == "failed"
                && s["reason"].as_str().is_some_and(|r| r.contains("wasi:"))),
        "{refused:?}"
    );
    assert!(!sub.stream("visitor-counter", "counts").is_empty());
}

#[test]
fn a_live_interface_that_is_not_wifi_is_refused_clearly() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "[capture]\ninterface = \"lo\"");
    let out = site
        .command("info")
        .args(["run", "--config"])
        .arg(&site.config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    // As root (CI) libpcap opens lo and we refuse its link type; otherwise it refuses us.
    assert!(
        stderr.contains("lo: link type 1 (EN10MB) is not 802.11")
            || stderr.contains("lo: cannot open"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
}
