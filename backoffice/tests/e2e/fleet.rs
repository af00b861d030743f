//! The scale benchmark (not a timed test, `#[ignore]`d): a generator simulating a fleet of
//! gateways (status, plugin statuses, three plugin streams, metrics; time compressed: one
//! 5-minute interval per round) publishes through mosquitto into two service instances on one
//! PostgreSQL. It checks nothing is lost or stored twice, and reports the ingest rate and how
//! long the dashboard of a 500-store group over 30 days takes. Run:
//!
//! ```sh
//! cargo test --release -p probegate-backoffice --test e2e fleet -- --ignored --nocapture
//! ```
//!
//! `FLEET_GATEWAYS` (default 5000) and `FLEET_ROUNDS` (default 3) size it.

use crate::harness::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 8;
const BASE_MS: u64 = 1_711_065_600_000; // 2024-03-22 00:00 UTC

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn site(i: usize) -> String {
    format!("s-{i:04}")
}

/// Every message one gateway sends in `round`: (topic, payload, retained).
fn messages(i: usize, round: usize) -> Vec<(String, Vec<u8>, bool)> {
    let (site, boot) = (site(i), format!("{i:016x}"));
    let base = format!("probegate/v1/{site}/gw-1");
    let t = BASE_MS + round as u64 * 300_000;
    let seq = round as u64 * 3 + 3;
    let mut out = Vec::new();
    let mut envelope = |plugin: &str,
                        stream: &str,
                        topic: String,
                        data: serde_json::Value,
                        retain: bool,
                        seq: u64| {
        let doc = json!({"v":1,"site":site,"gateway":"gw-1","boot_id":boot,"seq":seq,"time_ms":t,
                         "plugin":plugin,"stream":stream,"data":data});
        out.push((topic, serde_json::to_vec(&doc).unwrap(), retain));
    };
    if round == 0 {
        for (k, plugin) in ["visitor-counter", "occupancy"].iter().enumerate() {
            envelope(
                plugin,
                "status",
                format!("{base}/plugin-status/{plugin}"),
                json!({"state":"running","failures":0,"traps":0,"reason":null,"retry_at_ms":null,"failed_call_us":null}),
                true,
                k as u64 + 1,
            );
        }
    }
    let tally = json!({"visitors":2,"passers_by":7,"new":2,"repeat":0,"dwell":[1,1,0,0,0]});
    envelope(
        "visitor-counter",
        "counts",
        format!("{base}/plugins/visitor-counter/counts"),
        json!({"interval_start_ms":t,"interval_end_ms":t+300_000,"universal":3,"randomized":9,"sightings":40,"partial":false}),
        false,
        seq,
    );
    envelope(
        "visitor-counter",
        "visits",
        format!("{base}/plugins/visitor-counter/visits"),
        json!({"interval_start_ms":t,"interval_end_ms":t+300_000,"universal":tally,"randomized":tally,"dwell_bins_min":[15,30,60,120],"partial":false}),
        false,
        seq + 1,
    );
    envelope(
        "occupancy",
        "occupancy",
        format!("{base}/plugins/occupancy/occupancy"),
        json!({"window_start_ms":t,"window_end_ms":t+300_000,"estimate":4.5,"method":"m","universal_present":3,"universal_brief":0,
               "universal_fixed":0,"randomized_in_room":6,"addresses_per_phone":4.0,"universal_seen":3,"randomized_seen":9,"sightings":40,"partial":false}),
        false,
        seq + 2,
    );
    // Metrics carry the router's wall clock (retention counts it back from now).
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 600_000
        + round as u64;
    let metrics = json!({"v":1,"site":site,"gateway":"gw-1","boot_id":boot,"wall_ms":wall,"frames":100,"not_probe_requests":0,
        "dropped_bad_fcs":0,"dropped_multicast":0,"dropped_malformed":0,"dropped_signal_floor":0,"dropped_opted_out":0,
        "dropped_backpressure":0,"sightings":90,"dropped_by_filter":0,"dropped_filter_down":0,"plugin_messages_refused":0,"plugin_calls":90,"plugin_traps":0,"plugin_start_failures":0,
        "plugin_calls_skipped":0,"outputs":3,"outputs_refused":0,"loss":null});
    out.push((
        format!("{base}/metrics"),
        serde_json::to_vec(&metrics).unwrap(),
        false,
    ));
    if round == 0 {
        let status = json!({"v":1,"state":"online","site":site,"gateway":"gw-1","boot_id":boot,"version":"0.1.0","clean":true,"mqtt_version":"5"});
        out.insert(
            0,
            (
                format!("{base}/status"),
                serde_json::to_vec(&status).unwrap(),
                true,
            ),
        );
    }
    out
}

/// Publishes the fleet's messages over `CONNECTIONS` connections; returns once all were
/// acknowledged by the broker.
async fn generate(port: u16, gateways: usize, rounds: usize) -> usize {
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut options = MqttOptions::new(format!("fleet-{c}"), "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(30));
            let (client, mut eventloop) = AsyncClient::new(options, 10_000);
            let _publisher = tokio::spawn(async move {
                let mut n = 0;
                for round in 0..rounds {
                    for i in (c..gateways).step_by(CONNECTIONS) {
                        for (topic, payload, retain) in messages(i, round) {
                            client
                                .publish(topic, QoS::AtLeastOnce, retain, payload)
                                .await
                                .unwrap();
                            n += 1;
                        }
                    }
                }
                n
            });
            let total = messages_per_connection(c, gateways, rounds);
            let mut acked = 0usize;
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(
                        rumqttc::v5::mqttbytes::v5::Packet::PubAck(_),
                    )) => {
                        acked += 1;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("generator connection: {e}"),
                }
                if acked >= total {
                    return total;
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

fn messages_per_connection(c: usize, gateways: usize, rounds: usize) -> usize {
    (0..rounds)
        .map(|r| {
            (c..gateways)
                .step_by(CONNECTIONS)
                .map(|i| messages(i, r).len())
                .sum::<usize>()
        })
        .sum()
}

async fn scalar(pg: &Postgres, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// One HTTP/1.0 request; the response's head and body.
fn http(url: &str, method: &str, cookie: &str, body: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release -p probegate-backoffice --test e2e fleet -- --ignored --nocapture"]
async fn fleet_into_two_instances_on_postgres_loses_and_repeats_nothing() {
    let gateways = env("FLEET_GATEWAYS", 5000);
    let rounds = env("FLEET_ROUNDS", 3);
    // Unbounded queues: a slow subscriber must not make the broker drop QoS 1 messages.
    let broker = Broker::with("max_queued_messages 0\nmax_inflight_messages 0\n");
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let config = service_config(dir.path(), KEY);
    let group: Vec<String> = (0..500.min(gateways))
        .map(|i| format!("\"{}\"", site(i)))
        .collect();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}g500 = [{}]\n", group.join(", "))).unwrap();
    let services = [
        Service::start(&broker, &pg.url(), &config),
        Service::start(&broker, &pg.url(), &config),
    ];

    let started = Instant::now();
    let published = generate(broker.port, gateways, rounds).await;
    let published_in = started.elapsed();
    eprintln!("fleet: {published} messages published in {published_in:.1?}");
    let envelopes = (gateways * (2 + 3 * rounds)) as i64;
    let wait = env("FLEET_WAIT_SECS", 900) as u64;
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let stored = scalar(&pg, "SELECT COUNT(*) FROM messages").await;
        let metrics = scalar(&pg, "SELECT COUNT(*) FROM metrics").await;
        if stored == envelopes && metrics == (gateways * rounds) as i64 {
            break;
        }
        assert!(
            stored <= envelopes,
            "more rows than messages: {stored} > {envelopes}"
        );
        assert!(
            Instant::now() < deadline,
            "after {wait} s: {stored} of {envelopes} envelopes, {metrics} metrics"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingested_in = started.elapsed();
    for s in &services {
        s.settle();
    }
    assert_eq!(
        scalar(&pg, "SELECT COUNT(*) FROM messages").await,
        envelopes,
        "nothing stored twice"
    );
    assert_eq!(
        scalar(&pg, "SELECT COUNT(*) FROM counts").await,
        (gateways * rounds) as i64
    );
    assert_eq!(
        scalar(&pg, "SELECT COUNT(*) FROM gateways").await,
        gateways as i64
    );
    let shares: Vec<u64> = services
        .iter()
        .map(|s| s.health()["stored"].as_u64().unwrap_or(0))
        .collect();

    // 30 days of hourly rollups for every store, as a year of rollups would hold them.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "INSERT INTO rollup_hour SELECT 's-' || lpad(s::text, 4, '0'), {BASE_MS} - h::bigint * 3600000, 3, 9, 2, 7, 4.5 \
             FROM generate_series(0, {}) s, generate_series(1, 720) h ON CONFLICT DO NOTHING",
            gateways - 1
        ))
        .await
        .unwrap();
    let (head, _) = http(
        &format!("{}/login", services[0].url),
        "POST",
        "",
        "user=demo&password=probegate-demo",
    );
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {head}"))
        .to_owned();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (head, body) = http(
            &format!("{}/group/g500", services[0].url),
            "GET",
            &cookie,
            "",
        );
        times.push(t.elapsed());
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(body.contains("kpi-universal"), "the group page has data");
    }
    let total = published as f64;
    eprintln!(
        "fleet: {gateways} gateways x {rounds} rounds = {published} messages ({envelopes} envelopes); \
         published in {published_in:.1?}; all stored in {ingested_in:.1?} = {:.0} messages/s; \
         instance shares {shares:?}; group of 500 stores page: {times:.2?}",
        total / ingested_in.as_secs_f64()
    );
}
