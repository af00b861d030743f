//! Bundles an attacker (or a careless build) sends a router: signed versions that cannot run,
//! and files dropped into the plugin directory that are not bundles at all (issue 12, items
//! 6 and 7).

use crate::bundles::{CAPTURE, Retailer, bundle, results};
use crate::harness::{Subscriber, capture, plugin, text};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A plugin named `name` in a directory of its own under `scratch`: `wasm` with `manifest`.
fn plugin_files(scratch: &Path, case: &str, wasm: &[u8], manifest: &str) -> PathBuf {
    let dir = scratch.join(case);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("counter.toml"), manifest).unwrap();
    let path = dir.join("counter.wasm");
    std::fs::write(&path, wasm).unwrap();
    path
}

/// The names in `dir` that start with a dot (staged files).
fn staged(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_signed_version_that_cannot_run_is_rolled_back_and_the_old_one_survives_a_restart() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(1, "");
    let v1 = r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1);
    let printed = crate::bundles::ok(&r.push(&site, &v1));
    assert!(printed.contains("\"outcome\":\"installed\""), "{printed}");
    let plugins = site.dir.path().join("plugins");
    let v1_wasm = std::fs::read(plugins.join("counter.wasm")).unwrap();
    let v1_toml = std::fs::read_to_string(plugins.join("counter.toml")).unwrap();

    // Each keeps the version string of the running one: the old installer took the running
    // 1.0.0 for the new version and committed what never ran.
    let ungranted = v1_toml.replace(
        "capabilities = [\"signal\"]",
        "capabilities = [\"signal\", \"sequence\"]",
    );
    assert_ne!(ungranted, v1_toml);
    let bare_core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases = [
        (
            "ungranted",
            v1_wasm.clone(),
            ungranted,
            "which the site config does not grant",
        ),
        (
            "wasi",
            std::fs::read(plugin("wasi_user.wasm")).unwrap(),
            v1_toml.clone(),
            "wasi:",
        ),
        (
            "core-module",
            bare_core_module,
            v1_toml.clone(),
            "a wasm module with a component parser",
        ),
    ];
    for (i, (case, wasm, manifest, why)) in cases.into_iter().enumerate() {
        let files = plugin_files(r.scratch.path(), case, &wasm, &manifest);
        let bad = bundle(&site, &files, 2 + i as u64, &r.keys.secret("retailer"), &[]);
        let out = r.push(&site, &bad);
        let printed = text(&out.stdout);
        assert!(!out.status.success(), "{case}: {printed}");
        assert!(
            printed.contains("\"outcome\":\"rolled_back\""),
            "{case}: {printed}"
        );
        assert!(printed.contains(why), "{case}: {printed}");
        // The running version never stopped.
        r.still_publishing(&mut stream, 2 + i, "counter", "counts");
        assert_eq!(
            std::fs::read(plugins.join("counter.wasm")).unwrap(),
            v1_wasm
        );
        assert_eq!(
            std::fs::read_to_string(plugins.join("counter.toml")).unwrap(),
            v1_toml
        );
        assert!(
            staged(&plugins).is_empty(),
            "{case}: {:?}",
            staged(&plugins)
        );
    }
    // Each reason is bounded and on one line.
    let all = results(&r.sub);
    assert_eq!(all.len(), 4, "{all:?}");
    for res in &all[1..] {
        assert_eq!(res["outcome"], "rolled_back", "{res}");
        let reason = res["reason"].as_str().unwrap();
        assert!(
            reason.len() <= 3 * 512 && !reason.contains('\n'),
            "{reason}"
        );
        // The router's own paths are none of the back office's business.
        assert!(
            !reason.contains("/tmp") && !reason.contains(".new"),
            "{reason}"
        );
    }
    // The kept copy of the running version is still there, and the installed set names it.
    let kept = site.dir.path().join("bundles/previous");
    assert_eq!(std::fs::read(kept.join("counter.wasm")).unwrap(), v1_wasm);
    let late = Subscriber::start(&r.broker);
    assert!(late.wait_for(
        |m| m.topic.ends_with("/plugins-installed")
            && m.json()["data"]["plugins"]["counter"]["sequence"] == 1,
        Duration::from_secs(10)
    ));
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // After a restart the old version runs.
    let sub = Subscriber::start(&r.broker);
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("cannot load"), "{stderr}");
    let statuses: Vec<serde_json::Value> = sub
        .messages()
        .iter()
        .filter(|m| m.topic.ends_with("/plugin-status/counter") && !m.retained)
        .map(|m| m.json()["data"].clone())
        .collect();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| s["state"] == "running"),
        "{statuses:?}"
    );
    assert!(!sub.stream("counter", "counts").is_empty());
}
