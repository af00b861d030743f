//! End to end, with every part real: mosquitto, the probegate daemon replaying a real
//! capture through the real plugins, the back office on SQLite or PostgreSQL, and a headless
//! chromium that signs in and reads the dashboard.

mod ecosystem;
mod fleet;
mod harness;
mod optout;

use fantoccini::Locator;
use harness::*;
use std::process::Command;

/// What the broker carried, summed as the dashboard should show it.
struct Expected {
    universal: u64,
    randomized: u64,
    visitors: u64,
    passers_by: u64,
    /// (interval start HH:MM, universal, randomized, probe requests) per `counts` message.
    intervals: Vec<(String, u64, u64, u64)>,
    /// (window start HH:MM, estimate, low, high) per `occupancy` message, as the table
    /// prints them.
    occupancy: Vec<Vec<String>>,
    /// The last window with an estimate: (estimate, low, high).
    occupancy_now: (f64, f64, f64),
    /// Per UTC hour (HH:00): the mean estimate, low and high of its windows.
    occupancy_hours: Vec<(String, [f64; 3])>,
}

fn hhmm(ms: u64) -> String {
    let m = (ms % 86_400_000) / 60_000;
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A number as the dashboard's tables print it (integers without decimals, else two).
fn shown(v: &serde_json::Value) -> String {
    match v.as_f64() {
        None => String::new(),
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.2}"),
    }
}

type Hourly = Vec<(String, [f64; 3])>;

fn occupancy_expected(sub: &Subscriber) -> (Vec<Vec<String>>, (f64, f64, f64), Hourly) {
    let mut windows = sub.stream("occupancy", "occupancy");
    assert!(
        windows.len() > 5,
        "the replay published occupancy: {}",
        windows.len()
    );
    windows.sort_by_key(|w| w["window_start_ms"].as_u64().unwrap());
    let mut with_interval = 0;
    for w in &windows {
        // The plugin's method tag moves with its method (linked-devices/2, /3, ...): the back
        // office stores whichever it is.
        assert!(
            w["method"]
                .as_str()
                .is_some_and(|m| m.starts_with("linked-devices/")),
            "{w}"
        );
        if let (Some(l), Some(e), Some(h)) = (
            w["low"].as_f64(),
            w["estimate"].as_f64(),
            w["high"].as_f64(),
        ) {
            assert!(l <= e && e <= h, "{w}");
            with_interval += usize::from(h > l);
        }
    }
    assert!(with_interval > 3, "intervals with a width: {with_interval}");
    let rows = windows
        .iter()
        .map(|w| {
            vec![
                hhmm(w["window_start_ms"].as_u64().unwrap()),
                shown(&w["estimate"]),
                shown(&w["low"]),
                shown(&w["high"]),
            ]
        })
        .collect();
    let last = windows
        .iter()
        .rev()
        .find(|w| w["estimate"].is_number())
        .unwrap();
    let f = |k: &str| last[k].as_f64().unwrap();
    let mut hours: std::collections::BTreeMap<u64, ([f64; 3], f64)> = Default::default();
    for w in &windows {
        let hour = w["window_start_ms"].as_u64().unwrap() / 3_600_000 * 3_600_000;
        let slot = hours.entry(hour).or_default();
        for (i, k) in ["estimate", "low", "high"].iter().enumerate() {
            slot.0[i] += w[k].as_f64().unwrap();
        }
        slot.1 += 1.0;
    }
    let hourly = hours
        .into_iter()
        .map(|(h, (sums, n))| (hhmm(h), sums.map(|s| s / n)))
        .collect();
    (rows, (f("estimate"), f("low"), f("high")), hourly)
}

/// The text of every cell of a chart's data table, row by row (without the header).
async fn table(c: &fantoccini::Client, chart: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for tr in c
        .find_all(Locator::Css(&format!("#chart-{chart} table tr")))
        .await
        .unwrap()
        .iter()
        .skip(1)
    {
        let mut v = Vec::new();
        for td in tr.find_all(Locator::Css("td")).await.unwrap() {
            v.push(td.text().await.unwrap());
        }
        rows.push(v);
    }
    rows
}

/// A CSV download, fetched from the signed-in page with its cookie.
async fn fetch_text(c: &fantoccini::Client, path: &str) -> String {
    let text = c
        .execute_async(
            "fetch(arguments[0]).then(r => r.text()).then(arguments[1])",
            vec![serde_json::json!(path)],
        )
        .await
        .unwrap();
    text.as_str().unwrap_or_default().to_owned()
}

fn expected(sub: &Subscriber) -> Expected {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let counts = sub.stream("visitor-counter", "counts");
    let visits = sub.stream("visitor-counter", "visits");
    assert!(
        counts.len() > 20,
        "the replay published counts: {}",
        counts.len()
    );
    assert!(!visits.is_empty(), "the replay published visits");
    let mut intervals: Vec<(u64, u64, u64, u64)> = counts
        .iter()
        .map(|c| {
            (
                n(&c["interval_start_ms"]),
                n(&c["universal"]),
                n(&c["randomized"]),
                n(&c["sightings"]),
            )
        })
        .collect();
    intervals.sort();
    let (occupancy, occupancy_now, occupancy_hours) = occupancy_expected(sub);
    Expected {
        occupancy_hours,
        occupancy,
        occupancy_now,
        universal: counts.iter().map(|c| n(&c["universal"])).sum(),
        randomized: counts.iter().map(|c| n(&c["randomized"])).sum(),
        visitors: visits.iter().map(|v| n(&v["universal"]["visitors"])).sum(),
        passers_by: visits
            .iter()
            .map(|v| n(&v["universal"]["passers_by"]))
            .sum(),
        intervals: intervals
            .into_iter()
            .map(|(t, u, r, s)| (hhmm(t), u, r, s))
            .collect(),
    }
}

async fn text(client: &fantoccini::Client, css: &str) -> String {
    // Waits: a click that submits a form returns before the next page is there.
    client
        .wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Rows of `table` in the service's database.
async fn rows(db_url: &str, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match db_url.strip_prefix("sqlite:") {
        Some(path) => rusqlite::Connection::open(path)
            .unwrap()
            .query_row(&sql, [], |r| r.get(0))
            .unwrap(),
        None => {
            let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.query_one(&sql, &[]).await.unwrap().get(0)
        }
    }
}

/// The whole path for one database: replay → broker → `instances` services in one
/// shared-subscription group → browser.
async fn dashboard_shows_what_the_broker_carried(db_url: &str, name: &str, instances: usize) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_binary();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let config = service_config(dir.path(), KEY);
    let services: Vec<Service> = (0..instances)
        .map(|_| Service::start(&broker, db_url, &config))
        .collect();
    let service = &services[0];
    let site = site_config(dir.path(), &broker, KEY);
    let out = Command::new(&daemon)
        .args(["replay", "--config"])
        .arg(&site)
        .arg(repo().join(CAPTURE))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in &services {
        s.settle();
        let health = s.health();
        assert_eq!(health["invalid"], 0, "{health}");
        if instances > 1 {
            assert!(
                health["stored"].as_u64() > Some(10),
                "the instances share the load: {health}"
            );
        }
    }
    let want = expected(&sub);
    // Home Assistant discovery is off unless the config switches it on.
    assert_eq!(retained(&broker, "homeassistant/#"), vec![]);
    // Exactly once: one row per enveloped message on the broker, however many instances
    // and deliveries (retained plugin statuses arrive on two subscriptions).
    let envelopes = sub.distinct_envelopes();
    assert!(envelopes > 100, "{envelopes}");
    assert_eq!(rows(db_url, "messages").await, envelopes as i64);
    assert_eq!(
        rows(db_url, "counts").await,
        sub.stream("visitor-counter", "counts").len() as i64
    );

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{}/site/test-store", service.url))
        .await
        .unwrap();
    // Not signed in: the dashboard sends the browser to the sign-in page.
    assert!(c.current_url().await.unwrap().as_str().ends_with("/login"));
    type_into(c, "user", "demo").await;
    type_into(c, "password", "wrong").await;
    click(c, "sign-in").await;
    assert!(text(c, "#login-error").await.contains("Wrong"));
    type_into(c, "user", "demo").await;
    type_into(c, "password", "probegate-demo").await;
    click(c, "sign-in").await;
    c.wait().for_element(Locator::Id("sites")).await.unwrap();
    c.goto(&format!("{}/site/test-store", service.url))
        .await
        .unwrap();
    assert_eq!(text(c, "#title").await, "Store test-store");
    assert!(
        text(c, "#day").await.contains("2024-03-22"),
        "{}",
        text(c, "#day").await
    );
    assert_eq!(text(c, "#kpi-universal").await, want.universal.to_string());
    assert_eq!(
        text(c, "#kpi-randomized").await,
        want.randomized.to_string()
    );
    assert_eq!(text(c, "#kpi-visitors").await, want.visitors.to_string());
    assert_eq!(
        text(c, "#kpi-passers-by").await,
        want.passers_by.to_string()
    );

    // Every chart is drawn, and the devices chart's table is the counts stream, row by row.
    for chart in [
        "occupancy",
        "occupancy-windows",
        "visitors",
        "dwell",
        "devices",
    ] {
        let svg = c
            .find_all(Locator::Css(&format!("#chart-{chart} svg")))
            .await
            .unwrap();
        assert_eq!(svg.len(), 1, "chart {chart} is drawn");
        let marks = c
            .find_all(Locator::Css(&format!(
                "#chart-{chart} svg polyline, #chart-{chart} svg rect"
            )))
            .await
            .unwrap();
        assert!(
            marks.len() > 2,
            "chart {chart} has data marks: {}",
            marks.len()
        );
    }
    let rows = table(c, "devices").await;
    let want_rows: Vec<Vec<String>> = want
        .intervals
        .iter()
        .map(|(t, u, r, s)| vec![t.clone(), u.to_string(), r.to_string(), s.to_string()])
        .collect();
    assert_eq!(rows, want_rows, "the devices table is the counts stream");

    // Occupancy with its uncertainty: the window table is the occupancy stream (estimate,
    // low, high), the interval is drawn as a band, and "now" is the last window's.
    assert_eq!(
        table(c, "occupancy-windows").await,
        want.occupancy,
        "the occupancy table is the occupancy stream"
    );
    for chart in ["occupancy-windows", "occupancy"] {
        let bands = c
            .find_all(Locator::Css(&format!("#chart-{chart} svg polygon")))
            .await
            .unwrap();
        assert!(
            !bands.is_empty(),
            "{chart}: the interval is drawn as a band"
        );
    }
    // The hourly chart (from the rollups): the day's mean estimate, low and high per hour
    // are the means of the hour's windows (the table rounds to two decimals).
    let hourly = table(c, "occupancy").await;
    assert_eq!(hourly.len(), want.occupancy_hours.len(), "{hourly:?}");
    for (row, (hour, means)) in hourly.iter().zip(&want.occupancy_hours) {
        assert_eq!(&row[0], hour);
        for (cell, mean) in [&row[1], &row[3], &row[4]].into_iter().zip(means) {
            let shown: f64 = cell.parse().unwrap_or(f64::NAN);
            assert!((shown - mean).abs() < 0.006, "{hour}: {row:?} vs {means:?}");
        }
    }
    let (e, l, h) = want.occupancy_now;
    assert_eq!(text(c, "#kpi-occupancy").await, format!("{e:.1}"));
    assert_eq!(
        text(c, "#kpi-occupancy-interval").await,
        format!("{l:.1}–{h:.1}")
    );
    let occupancy_csv = fetch_text(c, "/csv/site/test-store/occupancy-windows").await;
    let mut want_csv = String::from("window start (UTC),estimate,low,high\n");
    for r in &want.occupancy {
        want_csv += &r.join(",");
        want_csv += "\n";
    }
    assert_eq!(occupancy_csv, want_csv);

    // Gateway health: online state went offline at the end of the replay, plugins running.
    let health_row = text(c, "#health tr.gateway").await;
    assert!(
        health_row.contains("gw-1") && health_row.contains("offline"),
        "{health_row}"
    );
    assert!(
        health_row.contains("visitor-counter") && health_row.contains("running"),
        "{health_row}"
    );
    assert!(
        health_row.contains("version 0"),
        "consent registry version shown: {health_row}"
    );

    let png = c.screenshot().await.unwrap();
    let shot = artifact_dir().join(format!("dashboard-{name}.png"));
    std::fs::write(&shot, &png).unwrap();
    assert!(png.len() > 20_000, "a real screenshot: {} bytes", png.len());

    // The CSV export of a chart is its table.
    let csv_text = fetch_text(c, "/csv/site/test-store/devices").await;
    assert!(
        csv_text.starts_with("interval start (UTC),universal,randomized,probe requests\n"),
        "{csv_text}"
    );
    let first = &want_rows[0];
    assert!(csv_text.contains(&first.join(",")), "{csv_text}");
    c.goto(&format!("{}/group/test-group", service.url))
        .await
        .unwrap();
    assert_eq!(text(c, "#kpi-universal").await, want.universal.to_string());
    browser.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dashboard_shows_what_the_broker_carried() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("bo.db").display());
    dashboard_shows_what_the_broker_carried(&db, "sqlite", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dashboard_with_two_instances_shows_what_the_broker_carried_once() {
    let pg = Postgres::start();
    dashboard_shows_what_the_broker_carried(&pg.url(), "postgres", 2).await;
}
