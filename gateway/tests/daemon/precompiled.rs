//! Plugins precompiled off the router (`probegate plugin precompile`), as routers without a
//! compiler run them: loaded only where the site config trusts precompiled code, and then
//! counting exactly what the .wasm counts.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, Site, Subscriber, capture, plugin, text};
use std::path::Path;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";

/// Precompiles the visitor counter for this machine into the site's directory and points the
/// site's config at it.
fn use_precompiled_counter(site: &Site) {
    let cwasm = site.dir.path().join("visitor_counter.cwasm");
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let out = site
        .command("info")
        .args(["plugin", "precompile", "--target", &target])
        .arg(plugin("visitor_counter.wasm"))
        .arg("-o")
        .arg(&cwasm)
        .output()
        .unwrap();
    assert!(out.status.success(), "precompile: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("bytes, for {target}")));
    // The manifest goes beside the component, whatever form the component takes.
    std::fs::copy(
        plugin("visitor_counter.toml"),
        site.dir.path().join("visitor_counter.toml"),
    )
    .unwrap();
    let wasm = plugin("visitor_counter.wasm").display().to_string();
    let config = std::fs::read_to_string(&site.config).unwrap();
    assert!(config.contains(&wasm));
    std::fs::write(
        &site.config,
        config.replace(&wasm, &cwasm.display().to_string()),
    )
    .unwrap();
}

fn check_config(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
        .arg("check-config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn a_precompiled_plugin_is_refused_unless_the_site_trusts_precompiled_code() {
    let broker = Broker::start();
    let site = Site::new(&broker, &[COUNTER], "");
    use_precompiled_counter(&site);
    let out = check_config(&site.config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plugin visitor-counter"), "{stderr}");
    assert!(stderr.contains("trust_precompiled = true"), "{stderr}");
}

#[test]
fn a_trusted_precompiled_counter_counts_what_the_capture_holds() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[COUNTER], "[limits]\ntrust_precompiled = true\n");
    use_precompiled_counter(&site);
    let checked = check_config(&site.config);
    assert!(checked.status.success(), "{}", text(&checked.stderr));

    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());
    let messages = sub.stream("visitor-counter", "counts");
    assert_eq!(
        expect::rows_of(&messages),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
}

#[test]
fn precompiling_for_an_unknown_target_fails_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.cwasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_probegate"))
        .args(["plugin", "precompile", "--target", "no-such-cpu"])
        .arg(plugin("visitor_counter.wasm"))
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-cpu"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_path.exists());
}
