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
        "capabilities = [\"signal\", \"consent\"]",
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
    assert!(sub.wait_for(
        |m| m.topic.ends_with("/status") && m.payload.contains("\"offline\"") && !m.retained,
        Duration::from_secs(10)
    ));
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

#[test]
fn links_fifos_and_devices_dropped_in_are_refused_and_a_real_bundle_still_installs() {
    let r = Retailer::new();
    let (site, mut stream) = r.gateway(1, "");
    let plugins = site.dir.path().join("plugins");
    // A secret outside the plugin directory, written to look like a log line if it leaked.
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("shadow");
    std::fs::write(
        &secret,
        "root:SECRET-HASH-4711:19000:0:99999:7:::\nINFO probegate::bundle::install: installed plugin=evil\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, plugins.join("shadow.pgb")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", plugins.join("zero.pgb")).unwrap();
    let fifo = std::ffi::CString::new(plugins.join("fifo.pgb").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // One byte over the default bundles.max_bytes (4 MiB), and the secret as a regular file.
    std::fs::write(plugins.join("big.pgb"), vec![0u8; (4 << 20) + 1]).unwrap();
    std::fs::copy(&secret, plugins.join("junk.pgb")).unwrap();
    // A directory cannot be consumed: it must be refused once, not at every scan.
    std::fs::create_dir(plugins.join("stuck.pgb")).unwrap();

    // The daemon looks every 2 s; each is consumed once, whatever it was.
    let gone = |n: &str| std::fs::symlink_metadata(plugins.join(n)).is_err();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !["shadow.pgb", "zero.pgb", "fifo.pgb", "big.pgb", "junk.pgb"]
        .iter()
        .all(|n| gone(n))
    {
        assert!(std::time::Instant::now() < deadline, "drop-ins not taken");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::fs::read(&secret).is_ok(),
        "the link's target is untouched"
    );

    // A real bundle dropped in afterwards (copied aside, renamed into place) still installs.
    let good = r.bundle(&site, "visitor_counter", "counter", "1.0.0", 1);
    std::fs::copy(&good, plugins.join(".good.tmp")).unwrap();
    std::fs::rename(plugins.join(".good.tmp"), plugins.join("good.pgb")).unwrap();
    assert!(
        r.sub.wait_until(
            |sub| results(sub)
                .iter()
                .any(|res| res["push_id"] == "file-good" && res["outcome"] == "installed"),
            Duration::from_secs(30)
        ),
        "{:?}",
        results(&r.sub)
    );
    r.still_publishing(&mut stream, 3, "counter", "counts");
    let out = stream.finish();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // Each refusal names the file and a clear reason.
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused a dropped-in bundle"))
        .collect();
    assert_eq!(refusals.len(), 5, "{stderr}");
    for (file, why) in [
        ("file-shadow", "a symbolic link, not a regular file"),
        ("file-zero", "a symbolic link, not a regular file"),
        ("file-fifo", "not a regular file"),
        ("file-big", "oversize: 4194305 bytes, the limit is 4194304"),
        ("file-stuck", "not a regular file"),
    ] {
        assert!(
            refusals.iter().any(|l| l.contains(file) && l.contains(why)),
            "{file}: {refusals:?}"
        );
    }
    // Nothing of the secret anywhere, and no forged line.
    assert!(
        !stderr.contains("SECRET") && !stderr.contains("plugin=evil"),
        "{stderr}"
    );
    for m in r.sub.messages() {
        assert!(!m.payload.contains("SECRET"), "{}: {}", m.topic, m.payload);
    }
    // Every refusal has a result, like a refused push: the code and reason say what the file
    // was, never what it held.
    let all = results(&r.sub);
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(
        plugins.join("stuck.pgb").is_dir(),
        "a directory is left alone"
    );
    for (file, code, reason) in [
        (
            "file-shadow",
            "not_regular_file",
            "a symbolic link, not a regular file",
        ),
        (
            "file-zero",
            "not_regular_file",
            "a symbolic link, not a regular file",
        ),
        ("file-fifo", "not_regular_file", "not a regular file"),
        ("file-stuck", "not_regular_file", "not a regular file"),
        (
            "file-big",
            "oversize",
            "oversize: 4194305 bytes, the limit is 4194304",
        ),
        ("file-junk", "malformed", "malformed: not a bundle"),
    ] {
        let res = all
            .iter()
            .find(|res| res["push_id"] == file)
            .unwrap_or_else(|| panic!("{file}: {all:?}"));
        assert_eq!(res["outcome"], "rejected", "{res}");
        assert_eq!(res["code"], code, "{res}");
        let got = res["reason"].as_str().unwrap();
        assert!(got.starts_with(reason), "{file}: {got}");
        assert_eq!(res["name"], serde_json::Value::Null, "{res}");
    }
}
