//! The occupancy plugin against the people counted by hand in the Fryza captures: every day is
//! replayed through the daemon and each window's estimate is compared with the ground truth.
//! Run with `-- --nocapture --include-ignored` to see the tables that
//! `plugins/examples/occupancy/README.md` quotes.
//!
//! Ground truth of a window: the mean `occupancy` of the dataset's CSV rows (one per frame
//! of the capture) whose time falls in it; windows without such rows are not scored.

use crate::consent::{consent_id, consent_site};
use crate::expect::{frame_times, mac};
use crate::harness::{Broker, PluginEntry, Site, Subscriber, capture, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The plugin as shipped: every parameter at its default.
const SHIPPED: PluginEntry<'static> = variant("occupancy", "{}");

/// The shipped plugin and, beside it in the same daemon (same sightings, own pseudonyms),
/// variants that each change one thing.
const VARIANTS: [PluginEntry<'static>; 6] = [
    SHIPPED,
    variant("room-65", "{ room_dbm = -65 }"),
    variant("room-85", "{ room_dbm = -85 }"),
    variant("no-room", "{ room_dbm = -95 }"),
    variant(
        "no-room-no-fixed",
        "{ room_dbm = -95, fixed_after_secs = 86400 }",
    ),
    variant("no-dwell", "{ min_dwell_secs = 0 }"),
];

const fn variant(name: &'static str, config: &'static str) -> PluginEntry<'static> {
    PluginEntry {
        name,
        file: "occupancy.wasm",
        config,
        allow: "",
    }
}

const WINDOW_MS: u64 = 300_000;

/// Every Fryza day, lectures first, then the small groups and the empty ones.
const DAYS: [&str; 7] = [
    "2022-10-19",
    "2023-02-16",
    "2023-03-08",
    "2024-03-22",
    "2023-10-20",
    "2023-04-15",
    "2023-04-17",
];
const LECTURES: [&str; 3] = ["2022-10-19", "2023-02-16", "2023-03-08"];
const EMPTY: [&str; 2] = ["2023-04-15", "2023-04-17"];

/// The lab's 14 fixed PCs, as the dataset lists them.
const PCS: [&str; 14] = [
    "dc:fb:48:68:be:e4",
    "dc:fb:48:8c:71:fc",
    "dc:fb:48:2a:52:e0",
    "dc:fb:48:f5:c6:c2",
    "dc:fb:48:e3:ab:78",
    "dc:fb:48:00:51:90",
    "dc:fb:48:75:d8:42",
    "dc:fb:48:de:86:8d",
    "dc:fb:48:dd:c6:0b",
    "dc:fb:48:55:d5:78",
    "dc:fb:48:c2:1d:64",
    "40:ec:99:f9:34:a6",
    "40:ec:99:8e:3f:63",
    "40:ec:99:1f:3e:75",
];

/// Bounds on the error per window, in people, with the PCs opted out. Measured (the README's
/// table): MAE 2.8–3.9 and |bias| at most 3.7 on the lecture days (14–17 present; counting
/// addresses is off by 91–98 there, and the estimator without its room filter by 12.6–16.1),
/// MAE 0.00 on the empty days (counting addresses: 1.3–1.4, the always-on devices heard from
/// outside the room). The replay is deterministic, so the margin is for deliberate changes of
/// parameters, not for noise; a method that counts addresses fails every bound.
const LECTURE_MAE_MAX: f64 = 6.0;
const LECTURE_BIAS_MAX: f64 = 5.0;
const EMPTY_MAE_MAX: f64 = 0.5;

fn pcap(day: &str) -> String {
    format!("fryza-sc6-61/sc6-61_{day}.pcap")
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from 1 March so the leap day ends the year.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2022-10-19 15:01:16.519776` (the lab's local time) as milliseconds, as if it were UTC.
fn local_ms(text: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let micros: i64 = text.get(20..26).map_or(0, |f| f.parse().unwrap());
    secs * 1000 + micros / 1000
}

/// Ground truth per window start (UTC ms): the mean occupancy of the CSV rows in the window.
/// The CSV's clock is local time; its first row is the capture's first frame, which gives
/// the offset (a whole number of hours: the days do not cross a DST change).
fn truth(day: &str) -> BTreeMap<u64, f64> {
    let csv = std::fs::read_to_string(capture(&format!("fryza-sc6-61/sc6-61_{day}.csv"))).unwrap();
    let rows: Vec<(i64, Option<f64>)> = csv
        .lines()
        .skip(1)
        .map(|line| {
            let occupancy = line.rsplit(';').next().unwrap().parse::<f64>().ok();
            (
                local_ms(line.split(';').next().unwrap()),
                occupancy.filter(|o| o.is_finite()),
            )
        })
        .collect();
    let frames = frame_times(&pcap(day));
    assert_eq!(rows.len(), frames.len(), "{day}: one CSV row per frame");
    let first_frame = frames[0] as i64;
    let offset = first_frame - rows[0].0;
    let hours = (offset as f64 / 3_600_000.0).round() as i64;
    assert!(
        (offset - hours * 3_600_000).abs() < 1000,
        "{day}: the CSV's first row is not the capture's first frame"
    );
    let mut sums: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    for (local, occupancy) in rows {
        let Some(o) = occupancy else { continue };
        let utc = (local + hours * 3_600_000) as u64;
        let slot = sums.entry(utc - utc % WINDOW_MS).or_default();
        slot.0 += o;
        slot.1 += 1;
    }
    sums.into_iter()
        .map(|(w, (sum, n))| (w, sum / f64::from(n)))
        .collect()
}

/// Replays `day` through the daemon with `plugins`; with `opt_out_pcs`, the lab's PCs are in
/// the site's consent registry, as a store lists its fixtures. Each plugin's messages' data.
fn replay(
    day: &str,
    opt_out_pcs: bool,
    plugins: &[PluginEntry<'static>],
) -> BTreeMap<&'static str, Vec<Value>> {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = if opt_out_pcs {
        let site = consent_site(&broker, plugins, "");
        let entries: Vec<String> = PCS
            .iter()
            .map(|pc| {
                let id = consent_id(&site, &mac(pc));
                format!(r#"{{"id":"{id}","status":"opt-out"}}"#)
            })
            .collect();
        std::fs::write(
            site.dir.path().join("consent.json"),
            format!(r#"{{"version":1,"entries":[{}]}}"#, entries.join(",")),
        )
        .unwrap();
        site
    } else {
        Site::new(&broker, plugins, "")
    };
    let out = site.replay(&capture(&pcap(day)), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{day}: replay failed: {stderr}");
    if opt_out_pcs && LECTURES.contains(&day) {
        assert!(!stderr.contains("dropped_opted_out=0 "), "{stderr}");
    }
    assert!(sub.wait_for(
        |m| m.payload.contains("\"offline\""),
        Duration::from_secs(10)
    ));
    plugins
        .iter()
        .map(|v| {
            let windows: Vec<Value> = sub
                .stream(v.name, "occupancy")
                .into_iter()
                .map(|m| m["data"].clone())
                .collect();
            assert!(!windows.is_empty(), "{day}: no estimates from {}", v.name);
            for w in &windows {
                assert_eq!(w["method"], "universal-dwell+randomized-rate", "{w}");
            }
            (v.name, windows)
        })
        .collect()
}

fn num(w: &Value, field: &str) -> f64 {
    w[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {w}"))
}

#[derive(Clone, Copy)]
struct Score {
    windows: usize,
    mean_truth: f64,
    mae: f64,
    bias: f64,
}

/// The error of `estimate` over the windows that have a ground truth.
fn score(windows: &[Value], truth: &BTreeMap<u64, f64>, estimate: impl Fn(&Value) -> f64) -> Score {
    let pairs: Vec<(f64, f64)> = windows
        .iter()
        .filter_map(|w| {
            let t = truth.get(&w["window_start_ms"].as_u64().unwrap())?;
            Some((estimate(w), *t))
        })
        .collect();
    let n = pairs.len() as f64;
    Score {
        windows: pairs.len(),
        mean_truth: pairs.iter().map(|p| p.1).sum::<f64>() / n,
        mae: pairs.iter().map(|p| (p.0 - p.1).abs()).sum::<f64>() / n,
        bias: pairs.iter().map(|p| p.0 - p.1).sum::<f64>() / n,
    }
}

/// The estimate recomputed from a window's inputs with another divisor for randomized addresses.
fn with_divisor(w: &Value, per_phone: f64) -> f64 {
    num(w, "universal_present") + num(w, "randomized_in_room") / per_phone
}

fn naive(w: &Value) -> f64 {
    num(w, "universal_seen") + num(w, "randomized_seen")
}

/// Replays every day with `plugins`, the days in parallel: per day, each plugin's windows.
fn replay_every_day(
    opt_out_pcs: bool,
    plugins: &[PluginEntry<'static>],
) -> Vec<BTreeMap<&'static str, Vec<Value>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = DAYS
            .iter()
            .map(|&day| s.spawn(move || replay(day, opt_out_pcs, plugins)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn estimate(w: &Value) -> f64 {
    num(w, "estimate")
}

#[test]
fn estimates_track_the_hand_counted_occupancy_on_every_fryza_day() {
    let truths: Vec<BTreeMap<u64, f64>> = DAYS.iter().map(|d| truth(d)).collect();
    let fixtures_out = replay_every_day(true, &[SHIPPED]);
    let everything = replay_every_day(false, &[SHIPPED]);

    println!(
        "| day | windows | mean present | MAE | bias | MAE, PCs not opted out | bias, PCs not opted out | naive MAE | naive bias |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut scores = BTreeMap::new();
    for (i, day) in DAYS.iter().enumerate() {
        let out = score(&fixtures_out[i]["occupancy"], &truths[i], estimate);
        let all = score(&everything[i]["occupancy"], &truths[i], estimate);
        let base = score(&everything[i]["occupancy"], &truths[i], naive);
        println!(
            "| {day} | {} | {:.1} | {:.2} | {:+.2} | {:.2} | {:+.2} | {:.1} | {:+.1} |",
            out.windows, out.mean_truth, out.mae, out.bias, all.mae, all.bias, base.mae, base.bias
        );
        assert_eq!(out.windows, base.windows, "{day}");
        assert!(out.windows > 10, "{day}: too few windows scored");
        assert!(out.mae < base.mae, "{day}: no better than naive");
        scores.insert(*day, (out, base));
    }

    // Leave one day out: the divisor for randomized addresses fitted on the other six days
    // (recomputed from the inputs each window carries), then scored on the day left out.
    println!("\n| held-out day | addresses per phone fitted on the others | MAE |");
    println!("|---|---:|---:|");
    let grid: Vec<f64> = (4..=40).map(|q| f64::from(q) / 4.0).collect();
    let day_mae = |i: usize, k: f64| {
        score(&fixtures_out[i]["occupancy"], &truths[i], |w| {
            with_divisor(w, k)
        })
        .mae
    };
    for (held, day) in DAYS.iter().enumerate() {
        let cost = |k: f64| -> f64 {
            (0..DAYS.len())
                .filter(|&i| i != held)
                .map(|i| day_mae(i, k))
                .sum()
        };
        let fitted = grid
            .iter()
            .copied()
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap();
        println!("| {day} | {fitted:.2} | {:.2} |", day_mae(held, fitted));
    }

    for day in LECTURES {
        let (s, naive) = scores[day];
        assert!(
            s.mae <= LECTURE_MAE_MAX && s.bias.abs() <= LECTURE_BIAS_MAX,
            "{day}: MAE {:.2}, bias {:+.2} (naive MAE {:.1})",
            s.mae,
            s.bias,
            naive.mae
        );
    }
    for day in EMPTY {
        let (s, naive) = scores[day];
        assert!(
            s.mae <= EMPTY_MAE_MAX,
            "{day}: MAE {:.2} (naive MAE {:.2})",
            s.mae,
            naive.mae
        );
    }
}

/// What each part of the method is worth: variants that change one parameter, side by side
/// in one daemon per day (PCs opted out). Each plugin instance adds about 0.3 s of component
/// compilation to a debug replay, so this table is not part of every test run.
#[test]
#[ignore = "about 2 s per replay: run with --include-ignored to print the variants table"]
fn each_part_of_the_method_on_every_fryza_day() {
    let truths: Vec<BTreeMap<u64, f64>> = DAYS.iter().map(|d| truth(d)).collect();
    let runs = replay_every_day(true, &VARIANTS);
    println!("\n| config | {} |", DAYS.join(" | "));
    println!("|---|{}", "---:|".repeat(DAYS.len()));
    for v in &VARIANTS {
        let maes: Vec<String> = (0..DAYS.len())
            .map(|i| format!("{:.2}", score(&runs[i][v.name], &truths[i], estimate).mae))
            .collect();
        println!("| `{}` | {} |", v.config, maes.join(" | "));
    }
    // The defaults were chosen on these days: over the lecture days (summed MAE) they must
    // still beat every variant, or the README's choice no longer holds.
    let lecture_mae = |name: &str| -> f64 {
        LECTURES
            .iter()
            .map(|day| {
                let i = DAYS.iter().position(|d| d == day).unwrap();
                score(&runs[i][name], &truths[i], estimate).mae
            })
            .sum::<f64>()
    };
    let shipped = lecture_mae(SHIPPED.name);
    for v in &VARIANTS[1..] {
        assert!(
            shipped <= lecture_mae(v.name),
            "{} beats the defaults",
            v.config
        );
    }
}
