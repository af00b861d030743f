//! Consent reaching plugins through the daemon: the coupon plugin issues coupons to the one
//! device that opted in, by its token, and to no one else; the consent filter drops staff by
//! their consent token, by config and by a back-office message published mid-run.

use crate::consent::{consent_id, consent_site};
use crate::expect::{self, Probe};
use crate::harness::{Broker, COUNTER, FLOOR, PluginEntry, Site, Subscriber, capture, text};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-10-20.pcap";
const INTERVAL_MS: u64 = 300_000;
const MIN: u64 = 60_000;
const SUMMARY: &str = "probegate/v1/test-store/gw-1/consent";

/// The coupon rules of the test site; [`expected_coupons`] applies the same ones.
const DWELL_MIN: u64 = 20;
const ZONE_DBM: i32 = -60;
const GAP_MIN: u64 = 10;
const PERIOD_MIN: u64 = 30;

const COUPONS: PluginEntry<'static> = PluginEntry {
    name: "coupon-trigger",
    file: "coupon_trigger.wasm",
    config: "{ dwell_minutes = 20, zone_dbm = -60, max_gap_minutes = 10, period_minutes = 30 }",
    allow: "[\"signal\", \"consent\", \"per-device-output\"]",
};

/// Counts what analytics plugins are handed: sightings, tokens, tags.
const ECHO: PluginEntry<'static> = PluginEntry {
    name: "echo",
    file: "echo.wasm",
    config: "{}",
    allow: "[\"per-device-output\"]",
};

const FILTER: PluginEntry<'static> = PluginEntry {
    name: "consent-filter",
    file: "consent_filter.wasm",
    config: "{ exclude_token_prefixes = [\"staff-\"] }",
    allow: "[\"consent\"]",
};

/// What the plugin gets: probes the privacy gate admits (unicast, above the floor).
fn admitted(p: &Probe) -> bool {
    p.sa[0] & 1 == 0 && p.dbm.is_none_or(|d| d >= FLOOR)
}

/// Admitted probes by MAC, in capture order.
fn by_mac(probes: &[Probe]) -> BTreeMap<[u8; 6], Vec<&Probe>> {
    let mut out: BTreeMap<[u8; 6], Vec<&Probe>> = BTreeMap::new();
    for p in probes.iter().filter(|p| admitted(p)) {
        out.entry(p.sa).or_default().push(p);
    }
    out
}

/// The coupons (time, reason) one device would earn if it had opted in, by the rules the
/// plugin's README states, computed from the capture alone.
fn expected_coupons(probes: &[&Probe], period_ms: u64) -> Vec<(u64, &'static str)> {
    let mut out = Vec::new();
    let mut visit: Option<(u64, u64)> = None; // (start, last)
    let mut issued: Option<u64> = None;
    for p in probes {
        let t = p.time_ms;
        let (start, last) = match visit {
            Some((start, last)) if t.saturating_sub(last) <= GAP_MIN * MIN => (start, last.max(t)),
            _ => (t, t),
        };
        visit = Some((start, last));
        if issued.is_some_and(|at| t.saturating_sub(at) < period_ms) {
            continue;
        }
        let reason = if p.dbm.is_some_and(|d| d >= ZONE_DBM) {
            "zone"
        } else if t - start >= DWELL_MIN * MIN {
            "dwell"
        } else {
            continue;
        };
        issued = Some(t);
        out.push((t, reason));
    }
    out
}

fn mosquitto_pub(broker: &Broker, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Publishes a consent command until the gateway's summary shows `opt_in` and `opt_out`
/// entries (a command sent before the gateway subscribed is lost, as on a real broker).
fn publish_consent(broker: &Broker, sub: &Subscriber, command: &str, opt_in: u64, opt_out: u64) {
    let applied = (0..5).any(|_| {
        mosquitto_pub(broker, "probegate/v1/test-store/cmd/consent", command);
        sub.wait_for(
            |m| {
                m.topic == SUMMARY && m.json()["opt_in"] == opt_in && m.json()["opt_out"] == opt_out
            },
            Duration::from_secs(3),
        )
    });
    assert!(
        applied,
        "the gateway never applied {command}: {:?}",
        sub.messages()
    );
}

#[test]
fn opted_in_devices_get_their_coupons_by_token_and_no_one_else_gets_any() {
    let probes = expect::probes(CAPTURE);
    let devices = by_mac(&probes);
    let period_ms = PERIOD_MIN * MIN;
    // What every device would get if consent were ignored: the plugin must not do that.
    let qualifying: BTreeMap<[u8; 6], Vec<(u64, &str)>> = devices
        .iter()
        .map(|(mac, ps)| (*mac, expected_coupons(ps, period_ms)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let best_universal = |skip: &[[u8; 6]], needs_zone: bool| {
        let zone = |c: &[(u64, &str)]| c.iter().any(|(_, r)| *r == "zone");
        qualifying
            .iter()
            .filter(|(mac, c)| mac[0] & 2 == 0 && !skip.contains(mac) && (!needs_zone || zone(c)))
            .max_by_key(|(_, c)| c.len())
            .map(|(mac, _)| *mac)
            .expect("a universal device that would earn such coupons")
    };
    // One customer who stays long (dwell coupons, limited by the period), one who comes
    // close (a zone coupon), and one who opted out though they would qualify.
    let stayer = best_universal(&[], false);
    let near = best_universal(&[stayer], true);
    let opted_out = best_universal(&[stayer, near], false);
    let customers = [(stayer, "loyalty-4711"), (near, "loyalty-0815")];
    let expected = &qualifying[&stayer];
    assert!(
        expected.len() >= 2,
        "the device must outstay a period for the limit to be tested: {expected:?}"
    );
    let unlimited = expected_coupons(&devices[&stayer], 1);
    assert!(
        unlimited.len() > expected.len(),
        "without the period the device would get more coupons"
    );
    assert!(
        qualifying.len() > 3,
        "devices that neither opted in nor out would qualify too: {}",
        qualifying.len()
    );

    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = consent_site(&broker, &[COUPONS], "");
    let mut entries: Vec<String> = customers
        .iter()
        .map(|(mac, token)| {
            format!(
                r#"{{"id":"{}","status":"opt-in","token":"{token}"}}"#,
                consent_id(&site, mac)
            )
        })
        .collect();
    entries.push(format!(
        r#"{{"id":"{}","status":"opt-out"}}"#,
        consent_id(&site, &opted_out)
    ));
    let command = format!(r#"{{"op":"add","entries":[{}]}}"#, entries.join(","));
    // The daemon runs on the capture's header only until the back office's command is in.
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(0, 1);
    publish_consent(&broker, &sub, &command, 2, 1);
    // The new opt-out restarts the plugins (checked every 2 s): let that happen before any
    // sighting, so the plugin's visits are whole.
    std::thread::sleep(Duration::from_secs(3));
    let out = stream.finish();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(sub.wait_offline());

    let mut got: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for m in sub.stream("coupon-trigger", "coupons") {
        let d = &m["data"];
        got.entry(d["token"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                d["time_ms"].as_u64().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
            ));
    }
    // Nobody but the two customers, and each exactly as the rules say, by token.
    let want: BTreeMap<String, Vec<(u64, String)>> = customers
        .iter()
        .map(|(mac, token)| {
            let coupons = qualifying[mac]
                .iter()
                .map(|(t, r)| (*t, r.to_string()))
                .collect();
            (token.to_string(), coupons)
        })
        .collect();
    assert_eq!(got, want);
    for coupons in got.values() {
        for pair in coupons.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= period_ms, "two in one period");
        }
    }
    let dropped = devices[&opted_out].len();
    assert!(
        stderr.contains(&format!("dropped_opted_out={dropped} ")),
        "{stderr}"
    );
}

/// Writes the registry file as if the back office had opted these devices in before start.
fn opt_in_at_start(site: &Site, entries: &[(&str, &str)]) {
    let entries: Vec<String> = entries
        .iter()
        .map(|(id, token)| format!(r#"{{"id":"{id}","status":"opt-in","token":"{token}"}}"#))
        .collect();
    std::fs::write(
        site.dir.path().join("consent.json"),
        format!(r#"{{"version":1,"entries":[{}]}}"#, entries.join(",")),
    )
    .unwrap();
}

fn replay_counts(plugins: &[PluginEntry], staff: &[u8; 6]) -> Vec<expect::Row> {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = consent_site(&broker, plugins, "");
    opt_in_at_start(&site, &[(&consent_id(&site, staff), "staff-0042")]);
    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sub.wait_offline());
    expect::rows_of(&sub.stream("visitor-counter", "counts"))
}

/// The universal device with the most admitted probes for which `weight` is highest.
fn pick(probes: &[Probe], weight: impl Fn(&[&Probe]) -> usize) -> [u8; 6] {
    by_mac(probes)
        .into_iter()
        .filter(|(mac, _)| mac[0] & 2 == 0)
        .max_by_key(|(_, ps)| weight(ps))
        .map(|(mac, _)| mac)
        .unwrap()
}

#[test]
fn the_consent_filter_drops_a_staff_token_before_the_counter_sees_it() {
    let probes = expect::probes(CAPTURE);
    let staff = pick(&probes, |ps| ps.len());
    let all = expect::counts(CAPTURE, INTERVAL_MS, FLOOR);
    let without_staff = expect::counts_where(CAPTURE, INTERVAL_MS, FLOOR, |p| p.sa != staff);
    assert_ne!(
        all, without_staff,
        "the staff device must change the counts"
    );

    // The same site and registry without the filter: the opt-in alone hides no one.
    assert_eq!(replay_counts(&[COUNTER], &staff), all);
    assert_eq!(replay_counts(&[FILTER, COUNTER], &staff), without_staff);
}

#[test]
fn an_exclude_message_over_mqtt_takes_effect_mid_run() {
    let probes = expect::probes(CAPTURE);
    let frames = expect::frame_times(CAPTURE).len();
    let split_frame = frames / 2; // frames numbered from 1: the second half starts here + 1
    let late = |p: &Probe| p.frame > split_frame;
    let staff = pick(&probes, |ps| ps.len());
    let customer = pick(&probes, |ps| {
        if ps[0].sa == staff {
            return 0;
        }
        let n = ps.iter().filter(|p| late(p)).count();
        n.min(ps.len() - n)
    });
    let expected = expect::counts_where(CAPTURE, INTERVAL_MS, FLOOR, |p| {
        p.sa != staff && (p.sa != customer || !late(p))
    });
    let staff_only = expect::counts_where(CAPTURE, INTERVAL_MS, FLOOR, |p| p.sa != staff);
    assert_ne!(
        expected, staff_only,
        "the customer must matter after the split"
    );

    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = consent_site(&broker, &[FILTER, COUNTER, ECHO], "");
    opt_in_at_start(
        &site,
        &[
            (&consent_id(&site, &staff), "staff-0042"),
            (&consent_id(&site, &customer), "loyal-7"),
        ],
    );
    let mut stream = site.replay_stream(CAPTURE);
    stream.feed_to(1, 2);
    // The last interval the first half closes: its counts mean the pipeline has (nearly) all
    // of the first half, so the message lands at the split and not inside the first half.
    let times = expect::frame_times(CAPTURE);
    let last_closed = times[split_frame - 1] - times[split_frame - 1] % INTERVAL_MS - INTERVAL_MS;
    assert!(sub.wait_until(
        |s| {
            s.stream("visitor-counter", "counts")
                .iter()
                .any(|m| m["data"]["interval_start_ms"] == last_closed)
        },
        Duration::from_secs(20)
    ));

    // The store's back office excludes the customer's token for the whole site.
    let applied = (0..5).any(|_| {
        mosquitto_pub(
            &broker,
            "probegate/v1/test-store/cmd/plugins/consent-filter/exclude",
            r#"{"tokens":["loyal-7"]}"#,
        );
        sub.wait_until(
            |s| {
                s.stream("consent-filter", "exclusions")
                    .iter()
                    .any(|m| m["data"]["runtime_tokens"] == 1)
            },
            Duration::from_secs(3),
        )
    });
    assert!(applied, "the filter never confirmed: {:?}", sub.messages());
    let out = stream.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sub.wait_offline());
    assert_eq!(
        expect::rows_of(&sub.stream("visitor-counter", "counts")),
        expected
    );
    // The counter's neighbour saw the customer tagged until the exclusion, and no token.
    let (mut sightings, mut tagged, mut tokens) = (0, 0, 0);
    for m in sub.stream("echo", "fields") {
        sightings += m["data"]["sightings"].as_u64().unwrap();
        tagged += m["data"]["tagged"].as_u64().unwrap();
        tokens += m["data"]["consent_token"].as_u64().unwrap();
    }
    let passed = |p: &&Probe| admitted(p) && p.sa != staff && (p.sa != customer || !late(p));
    assert_eq!(sightings, probes.iter().filter(passed).count() as u64);
    let early_customer = probes
        .iter()
        .filter(|p| admitted(p) && p.sa == customer && !late(p))
        .count() as u64;
    assert!(early_customer > 0);
    assert_eq!(tagged, early_customer);
    assert_eq!(tokens, 0, "echo has no consent capability");
    let ack = &sub.stream("consent-filter", "exclusions")[0]["data"];
    assert_eq!(
        (ack["config_tokens"].as_u64(), ack["prefixes"].as_u64()),
        (Some(0), Some(1))
    );
}
