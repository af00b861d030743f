//! The occupancy plugin against the people counted by hand in the Fryza captures: every day is
//! replayed through the daemon and each window's estimate and interval are compared with the
//! ground truth. The defaults were fitted on these same days, so this is an in-sample check
//! that keeps the bounds of the honest, leave-one-day-out evaluation (`cargo xtask evaluate`,
//! quoted in `plugins/examples/occupancy/README.md`); run with `-- --nocapture` for the table.
//!
//! Ground truth of a window: the mean `occupancy` of the dataset's CSV rows (one per frame
//! of the capture) whose time falls in it; windows without such rows are not scored.

use crate::consent::{consent_id, consent_site};
use crate::expect::{self, frame_times, mac};
use crate::harness::{Broker, PluginEntry, Site, Subscriber, capture, text};
use serde_json::Value;
use std::collections::BTreeMap;

/// The plugin as shipped: every parameter at its default (fitted on the seven days by
/// `probegate calibrate`), granted what its manifest asks for.
pub const OCCUPANCY: PluginEntry<'static> = PluginEntry {
    name: "occupancy",
    file: "occupancy.wasm",
    config: "{}",
    allow: r#"["signal", "sequence", "ie-signature"]"#,
};

const WINDOW_MS: u64 = 900_000;

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

/// Bounds on the error per full window, in people, with the PCs opted out. Issue 13's targets
/// are MAE ≤ 2.0 on lecture days and ≤ 0.5 on empty ones, which the leave-one-day-out
/// evaluation meets (README: 1.12, 1.22, 1.41 and 0.00). The shipped defaults, fitted on these
/// same days, read 1.05, 1.16 and 1.41 (biases within ±1): the lecture bound sits a few tenths
/// above them so a regression of the method fails here before it reaches the targets.
/// Counting addresses is off by 200+ on lecture days, counting universal addresses by 1.6–16,
/// v1 by 1.6–3.9. Pseudonym keys are random per run, but the counts do not depend on them: the
/// replay is deterministic.
const LECTURE_MAE_MAX: f64 = 1.6;
const LECTURE_BIAS_MAX: f64 = 1.2;
const EMPTY_MAE_MAX: f64 = 0.5;
/// Linked visits per person on a lecture day (measured 3.4–3.9): linking splits a phone's
/// stay where it loses the phone; a regression towards counting addresses goes far beyond.
const VISITS_PER_PERSON_MAX: f64 = 4.5;
/// Share of full windows whose hand count lies within `low`–`high`, on every day.
const COVERAGE_MIN: f64 = 0.8;

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

/// A site running the plugin with the lab's PCs in its consent registry, as a store lists
/// its fixtures.
fn lab_site(broker: &Broker) -> Site {
    let site = consent_site(broker, &[OCCUPANCY], "");
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
}

/// Replays `day` through the daemon with the plugin on the lab's site: the plugin's messages'
/// data.
fn replay(day: &str) -> Vec<Value> {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = lab_site(&broker);
    let out = site.replay(&capture(&pcap(day)), "info");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{day}: replay failed: {stderr}");
    if LECTURES.contains(&day) {
        assert!(!stderr.contains("dropped_opted_out=0 "), "{stderr}");
    }
    assert!(sub.wait_offline());
    let windows: Vec<Value> = sub
        .stream(OCCUPANCY.name, "occupancy")
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert!(!windows.is_empty(), "{day}: no estimates");
    for w in &windows {
        assert_eq!(w["method"], "linked-devices/3", "{w}");
        let (low, e, high) = (num(w, "low"), num(w, "estimate"), num(w, "high"));
        assert!(0.0 <= low && low <= e && e <= high, "{day}: interval {w}");
        for kind in ["universal", "linked"] {
            let v = &w["visits"][kind];
            let binned: u64 = v["dwell"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .sum();
            assert_eq!(binned, v["visits"].as_u64().unwrap(), "{day}: {w}");
        }
    }
    windows
}

fn num(w: &Value, field: &str) -> f64 {
    w[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {w}"))
}

#[derive(Clone, Copy, Default)]
struct Score {
    windows: usize,
    mean_truth: f64,
    mae: f64,
    bias: f64,
    inside: usize,
}

/// The error of `estimate` over the full windows that have a ground truth (a window the
/// capture covers only in part is `partial`: a router that runs all day has none).
fn score(windows: &[Value], truth: &BTreeMap<u64, f64>, estimate: impl Fn(&Value) -> f64) -> Score {
    let scored: Vec<(&Value, f64)> = windows
        .iter()
        .filter(|w| w["partial"] == false)
        .filter_map(|w| Some((w, *truth.get(&w["window_start_ms"].as_u64().unwrap())?)))
        .collect();
    let n = scored.len() as f64;
    Score {
        windows: scored.len(),
        mean_truth: scored.iter().map(|p| p.1).sum::<f64>() / n,
        mae: scored
            .iter()
            .map(|(w, t)| (estimate(w) - t).abs())
            .sum::<f64>()
            / n,
        bias: scored.iter().map(|(w, t)| estimate(w) - t).sum::<f64>() / n,
        inside: scored
            .iter()
            .filter(|(w, t)| num(w, "low") <= *t && *t <= num(w, "high"))
            .count(),
    }
}

/// v1's formula, from the inputs every window carries: universal devices that dwelt, plus
/// in-room randomized addresses over 0.8 per phone per minute.
fn v1(w: &Value) -> f64 {
    num(w, "universal_present") + num(w, "randomized_in_room") / (0.8 * WINDOW_MS as f64 / 60_000.0)
}

fn universal_only(w: &Value) -> f64 {
    num(w, "universal_seen")
}

fn estimate(w: &Value) -> f64 {
    num(w, "estimate")
}

#[test]
fn estimates_and_intervals_track_the_hand_counted_occupancy_on_every_fryza_day() {
    let truths: Vec<BTreeMap<u64, f64>> = DAYS.iter().map(|d| truth(d)).collect();
    let runs: Vec<Vec<Value>> = std::thread::scope(|s| {
        let handles: Vec<_> = DAYS.iter().map(|&d| s.spawn(move || replay(d))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    println!(
        "| day | windows | mean present | MAE | bias | in low–high | v1 MAE | universal-only MAE |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let (mut inside, mut total) = (0, 0);
    for (i, day) in DAYS.iter().enumerate() {
        let s = score(&runs[i], &truths[i], estimate);
        let old = score(&runs[i], &truths[i], v1);
        let naive = score(&runs[i], &truths[i], universal_only);
        println!(
            "| {day} | {} | {:.1} | {:.2} | {:+.2} | {:.0} % | {:.2} | {:.2} |",
            s.windows,
            s.mean_truth,
            s.mae,
            s.bias,
            100.0 * s.inside as f64 / s.windows as f64,
            old.mae,
            naive.mae
        );
        assert!(s.windows >= 5, "{day}: too few windows scored");
        inside += s.inside;
        total += s.windows;
        let coverage = s.inside as f64 / s.windows as f64;
        assert!(coverage >= COVERAGE_MIN, "{day}: coverage {coverage:.2}");
        if LECTURES.contains(day) {
            // Randomizing phones make visits too, with a dwell: the lecture keeps them.
            let linked_visits: u64 = runs[i]
                .iter()
                .map(|w| w["visits"]["linked"]["visits"].as_u64().unwrap())
                .sum();
            assert!(linked_visits >= 10, "{day}: {linked_visits} linked visits");
            let tally = |kind: &str| -> (u64, [u64; 5], u64) {
                runs[i].iter().fold((0, [0; 5], 0), |(v, mut d, p), w| {
                    let t = &w["visits"][kind];
                    for (b, n) in d.iter_mut().zip(t["dwell"].as_array().unwrap()) {
                        *b += n.as_u64().unwrap();
                    }
                    (
                        v + t["visits"].as_u64().unwrap(),
                        d,
                        p + t["passers_by"].as_u64().unwrap(),
                    )
                })
            };
            let (visits, dwell, passers_by) = tally("linked");
            let peak = truths[i].values().copied().fold(0.0, f64::max);
            println!(
                "{day}: linked visits {visits} (dwell bins {dwell:?}, passers-by {passers_by}), \
                 universal {:?}, at most {peak:.0} people",
                tally("universal")
            );
            // No ground truth for visits: sanity bounds only. Linking splits a phone's stay
            // into a few (about 3.5 per attendee here, README), but counting addresses would
            // make one per address (hundreds); and most stays of people who sat through a
            // lecture must come out longer than a quarter of an hour.
            assert!(
                visits as f64 <= VISITS_PER_PERSON_MAX * peak,
                "{day}: {visits} linked visits for {peak} people"
            );
            assert!(
                2 * dwell[1..].iter().sum::<u64>() >= visits,
                "{day}: most linked visits shorter than 15 minutes: {dwell:?}"
            );
            assert!(
                s.mae <= LECTURE_MAE_MAX && s.bias.abs() <= LECTURE_BIAS_MAX,
                "{day}: MAE {:.2}, bias {:+.2}",
                s.mae,
                s.bias
            );
            assert!(s.mae < old.mae, "{day}: no better than v1 ({:.2})", old.mae);
        }
        if EMPTY.contains(day) {
            assert!(s.mae <= EMPTY_MAE_MAX, "{day}: MAE {:.2}", s.mae);
        }
        assert!(
            s.mae < naive.mae,
            "{day}: no better than counting universal addresses ({:.2})",
            naive.mae
        );
    }
    let coverage = inside as f64 / total as f64;
    println!(
        "\ninterval coverage: {:.0} % of {total} windows",
        100.0 * coverage
    );
    assert!(coverage >= COVERAGE_MIN, "coverage {coverage:.2}");
}

/// Without `sequence` and `ie-signature` granted, the plugin does not load: it never counts
/// on fields it cannot see.
#[test]
fn occupancy_needs_its_capabilities_granted() {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let plain = PluginEntry {
        allow: "",
        ..OCCUPANCY
    };
    let site = Site::new(&broker, &[plain], "");
    let out = site.replay(&capture(&pcap("2023-04-17")), "info");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("plugin occupancy: not loaded: asks for capability \"sequence\""),
        "{stderr}"
    );
    assert!(sub.wait_offline());
    assert!(sub.stream(OCCUPANCY.name, "occupancy").is_empty());
}

/// `probegate calibrate` as store IT runs it: captures of two days and hand counts in, the
/// plugin's table out, which the daemon then accepts.
#[test]
fn calibrate_fits_the_plugin_from_captures_and_hand_counts() {
    let broker = Broker::start();
    let site = lab_site(&broker);
    let days = ["2023-02-16", "2024-03-22"];
    let mut counts = String::from("time,people\n");
    for day in days {
        for (start, people) in truth(day) {
            counts += &format!("{},{people}\n", start / 1000 + 60);
        }
    }
    let counts_file = site.dir.path().join("counts.csv");
    std::fs::write(&counts_file, counts).unwrap();
    let out = site
        .command("warn")
        .args(["calibrate", "--config"])
        .arg(&site.config)
        .arg("--counts")
        .arg(&counts_file)
        .args(days.map(|d| capture(&pcap(d))))
        .output()
        .unwrap();
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let field = |key: &str| -> f64 {
        let at = printed
            .find(&format!("{key} = "))
            .unwrap_or_else(|| panic!("{printed}"));
        printed[at + key.len() + 3..]
            .split([',', ' '])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!((-90.0..=-55.0).contains(&field("room_dbm")), "{printed}");
    assert!(
        (0.3..=1.0).contains(&field("people_per_device")),
        "{printed}"
    );
    assert!(
        field("interval_low") <= 0.0 && field("interval_high") >= 0.0,
        "{printed}"
    );
    assert!(printed.contains("MAE"), "{printed}");

    // The printed table replaces the plugin's: the daemon loads and starts it.
    let config = std::fs::read_to_string(&site.config).unwrap();
    let at = config.find("[[plugin]]").unwrap();
    let end = config[at..].find("\n\n").map_or(config.len(), |e| at + e);
    let table = &printed[printed.find("[[plugin]]").unwrap()..];
    std::fs::write(
        &site.config,
        format!("{}{table}{}", &config[..at], &config[end..]),
    )
    .unwrap();
    let check = site
        .command("warn")
        .arg("check-config")
        .arg(&site.config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}",
        text(&check.stderr),
        std::fs::read_to_string(&site.config).unwrap()
    );

    // Bad input is refused with its place named.
    std::fs::write(&counts_file, "time,people\nnoon,4\n").unwrap();
    let out = site
        .command("warn")
        .args(["calibrate", "--config"])
        .arg(&site.config)
        .arg("--counts")
        .arg(&counts_file)
        .arg(capture(&pcap(days[0])))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("counts.csv:2"),
        "{}",
        text(&out.stderr)
    );
}

/// The walk: a device of one's own, opted in with a token, sets the room threshold from its
/// weakest sightings (10th percentile) instead of a search.
#[test]
fn a_walk_with_an_opted_in_device_sets_the_room_threshold() {
    let day = "2023-02-16";
    let broker = Broker::start();
    let site = lab_site(&broker);
    // The walker: the universal, non-PC address with the most sightings that day.
    let probes = expect::probes(&pcap(day));
    let mut by_mac: BTreeMap<[u8; 6], Vec<f64>> = BTreeMap::new();
    for p in &probes {
        if p.sa[0] & 3 == 0
            && !PCS.iter().any(|pc| mac(pc) == p.sa)
            && let Some(dbm) = p.dbm.filter(|&d| d >= crate::harness::FLOOR)
        {
            by_mac.entry(p.sa).or_default().push(f64::from(dbm));
        }
    }
    let (walker, mut signals) = by_mac.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
    assert!(signals.len() > 50, "a device heard often");
    signals.sort_by(f64::total_cmp);
    let expected = signals[signals.len() / 10];

    let consent = site.dir.path().join("consent.json");
    let registry = std::fs::read_to_string(&consent).unwrap();
    let id = consent_id(&site, &walker);
    std::fs::write(
        &consent,
        registry.replace(
            r#""entries":["#,
            &format!(r#""entries":[{{"id":"{id}","status":"opt-in","token":"calibration-walk"}},"#),
        ),
    )
    .unwrap();
    let counts = site.dir.path().join("counts.csv");
    let lines: String = truth(day)
        .into_iter()
        .map(|(start, people)| format!("{},{people}\n", start / 1000 + 60))
        .collect();
    std::fs::write(&counts, lines).unwrap();
    let out = site
        .command("warn")
        .args(["calibrate", "--config"])
        .arg(&site.config)
        .arg("--counts")
        .arg(&counts)
        .args(["--walk-token", "calibration-walk"])
        .arg(capture(&pcap(day)))
        .output()
        .unwrap();
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(printed.contains("room_dbm from the walk"), "{printed}");
    let at = printed.find("room_dbm = ").unwrap() + "room_dbm = ".len();
    let room: f64 = printed[at..]
        .split([',', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (room - expected).abs() <= 1.0,
        "{room} against {expected}: {printed}"
    );

    // A token no sighting carries is refused, not silently ignored.
    let out = site
        .command("warn")
        .args(["calibrate", "--config"])
        .arg(&site.config)
        .arg("--counts")
        .arg(&counts)
        .args(["--walk-token", "nobody"])
        .arg(capture(&pcap(day)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("walk's consent token"));
}
