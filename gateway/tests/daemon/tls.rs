//! TLS to the broker: a test CA made here with openssl, mosquitto requiring client
//! certificates; the right CA delivers everything, a wrong one fails with a clear error.

use crate::harness::{Broker, COUNTER, Site, capture, text};
use std::path::Path;
use std::process::Command;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-04-17.pcap";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A CA, and a certificate it signed for `name` with the given subjectAltName.
fn ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=probegate test {ca}"),
        ],
    );
}

fn signed(dir: &Path, ca: &str, name: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn tls_broker() -> Broker {
    Broker::configured(|dir| {
        ca(dir, "ca");
        signed(dir, "ca", "server", "IP:127.0.0.1,DNS:localhost");
        signed(dir, "ca", "gateway", "DNS:gw-1.test-store");
        ca(dir, "other-ca");
        let d = dir.display();
        format!(
            "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             require_certificate true\npersistence false\n"
        )
    })
}

fn site_with_ca(broker: &Broker, ca_file: &str) -> Site {
    let site = Site::new(broker, &[COUNTER], "");
    site.mqtt_settings(&format!(
        "close_grace_secs = 3\n\n[mqtt.tls]\nca_file = \"{d}/{ca_file}\"\nclient_cert_file = \"{d}/gateway.crt\"\nclient_key_file = \"{d}/gateway.key\"",
        d = broker.dir().display()
    ));
    site
}

#[test]
fn with_the_right_ca_and_a_client_certificate_everything_is_delivered() {
    let broker = tls_broker();
    let site = site_with_ca(&broker, "ca.crt");
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("connected to broker"), "{stderr}");
    assert!(stderr.contains("mqtt=\"5\""), "MQTT 5 over TLS: {stderr}");
    assert!(stderr.contains(" mqtt_unacknowledged=0"), "{stderr}");
    let published = stderr.split(" published=").nth(1).unwrap();
    assert!(!published.starts_with('0'), "{stderr}");
}

#[test]
fn a_wrong_ca_fails_with_a_clear_error() {
    let broker = tls_broker();
    let site = site_with_ca(&broker, "other-ca.crt");
    let out = site.replay(&capture(CAPTURE), "info");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "nothing was delivered: that is a failure: {stderr}"
    );
    assert!(
        stderr.contains("invalid peer certificate") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(!stderr.contains("connected to broker"), "{stderr}");
}
