//! `probegate tail`, the back office's one command: validates, drops repeats, prints.

use crate::expect;
use crate::harness::{Broker, COUNTER, FLOOR, Site, capture, text};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

fn publish(broker: &Broker, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    assert!(cmd.status().unwrap().success());
}

/// Starts `probegate tail --json` and waits until it is subscribed (it has printed the
/// retained status of another gateway published for that purpose).
fn start_tail(broker: &Broker) -> (std::process::Child, mpsc::Receiver<String>) {
    publish(
        broker,
        "probegate/v1/test-store/gw-0/status",
        r#"{"v":1,"state":"offline","site":"test-store","gateway":"gw-0","boot_id":"0000000000000000","version":"0","clean":true}"#,
        true,
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_probegate"))
        .args([
            "tail",
            "--host",
            "127.0.0.1",
            "--port",
            &broker.port.to_string(),
        ])
        .args(["--json", "--idle-timeout", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tail subscribed");
    assert!(first.contains("gw-0"), "{first}");
    (child, rx)
}

#[test]
fn tail_shows_each_message_once_and_all_of_them_valid() {
    let broker = Broker::start();
    let (child, lines) = start_tail(&broker);
    let site = Site::new(&broker, &[COUNTER], "");
    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // At-least-once delivery means repeats: send one counts message a second time.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|l| l["topic"].as_str().unwrap().ends_with("/counts"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no counts through tail"
        );
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        seen.push(serde_json::from_str(&line).unwrap());
    }
    let repeat = seen
        .iter()
        .find(|l| l["topic"].as_str().unwrap().ends_with("/counts"))
        .unwrap();
    publish(
        &broker,
        repeat["topic"].as_str().unwrap(),
        &repeat["payload"].to_string(),
        false,
    );

    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 repeats dropped, 0 invalid"), "{stderr}");
    seen.extend(lines.try_iter().map(|l| serde_json::from_str(&l).unwrap()));
    assert!(seen.iter().all(|l| l["valid"] == true));
    let counts: Vec<serde_json::Value> = seen
        .iter()
        .filter(|l| l["topic"].as_str().unwrap().ends_with("/counts"))
        .map(|l| l["payload"].clone())
        .collect();
    assert_eq!(
        expect::rows_of(&counts),
        expect::counts(CAPTURE, 300_000, FLOOR)
    );
}

#[test]
fn tail_flags_a_payload_off_its_schema_and_fails() {
    let broker = Broker::start();
    let (child, _lines) = start_tail(&broker);
    publish(
        &broker,
        "probegate/v1/test-store/gw-9/status",
        r#"{"v":2,"state":"maybe"}"#,
        false,
    );
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("invalid: probegate/v1/test-store/gw-9/status (status.json)"),
        "{stderr}"
    );
}
