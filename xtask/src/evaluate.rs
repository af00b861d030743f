//! `cargo xtask evaluate [--data DIR] [--window-secs N] [--out FILE]`: the occupancy plugin
//! against people counted by hand, leave one day out.
//!
//! For every day of the data set (a `.pcap` with the Fryza `.csv` of the same name beside it:
//! one row per frame, the hand count in the last column), the plugin is calibrated by
//! `probegate calibrate` on the *other* days' captures and hand counts, then the day is
//! replayed through the real daemon (`probegate replay --print`: pcap, parser, privacy gate
//! with the lab's PCs opted out, the plugin built to wasm) and every window is scored. Beside
//! it, from the same messages: the naive anchors (all addresses; universal addresses only),
//! the v1 formula, and the plugin with its shipped defaults (fitted on all the shared days, so
//! in-sample there). Nothing is tuned here: the command only runs what a site would run.

use crate::{Result, build_plugins, cargo_target_dir, root, run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lab's 14 fixed PCs (the data set's own list), opted out as a store lists its fixtures.
const LAB_PCS: [&str; 14] = [
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

/// v1's shipped rate: distinct in-room randomized addresses per phone per minute.
const V1_ADDRESSES_PER_MIN: f64 = 0.8;

struct Options {
    data: PathBuf,
    window_secs: u64,
    out: Option<PathBuf>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        data: root().join("gateway/tests/data/fryza-sc6-61"),
        window_secs: 900,
        out: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--data" => o.data = PathBuf::from(value()?),
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--window-secs" => {
                o.window_secs = value()?
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or("--window-secs must be a positive integer")?
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?} (usage: cargo xtask evaluate [--data DIR] \
                     [--window-secs N] [--out FILE])"
                ));
            }
        }
    }
    Ok(o)
}

/// One day: its capture and the hand count per window start (UTC ms).
struct Day {
    name: String,
    pcap: PathBuf,
    truth: BTreeMap<u64, f64>,
}

fn days(data: &Path, window_ms: u64) -> Result<Vec<Day>> {
    let entries = std::fs::read_dir(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let mut pcaps: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap") && p.with_extension("csv").exists())
        .collect();
    pcaps.sort();
    if pcaps.len() < 2 {
        return Err(format!(
            "{}: leave-one-day-out needs at least two days (a .pcap with its .csv)",
            data.display()
        ));
    }
    pcaps
        .into_iter()
        .map(|pcap| {
            let stem = pcap.file_stem().unwrap_or_default().to_string_lossy();
            let name = stem.rsplit('_').next().unwrap_or(&stem).to_owned();
            let truth = truth(&pcap, window_ms)?;
            Ok(Day { name, pcap, truth })
        })
        .collect()
}

/// The first frame's time (ms) of a classic pcap file.
fn first_frame_ms(pcap: &Path) -> Result<u64> {
    let bytes = std::fs::read(pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let word = |at: usize, little: bool| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let bad = || format!("{}: not a pcap file with a frame", pcap.display());
    let (little, nanos) = match word(0, true).ok_or_else(bad)? {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => return Err(bad()),
    };
    let secs = u64::from(word(24, little).ok_or_else(bad)?);
    let frac = u64::from(word(28, little).ok_or_else(bad)?);
    Ok(secs * 1000 + if nanos { frac / 1_000_000 } else { frac / 1000 })
}

/// `2022-10-19 15:01:16.519776` as milliseconds, as if it were UTC.
fn local_ms(text: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    // Days since 1970-01-01, counting from 1 March so the leap day ends the year.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let micros = num(20..26).unwrap_or(0);
    Some(secs * 1000 + micros / 1000)
}

/// Hand count per window: the mean `occupancy` of the CSV rows in it (rows are frames, so a
/// busy moment weighs more). The CSV's clock is the lab's; its first row is the capture's
/// first frame, which gives the offset to UTC in whole hours.
fn truth(pcap: &Path, window_ms: u64) -> Result<BTreeMap<u64, f64>> {
    let csv_path = pcap.with_extension("csv");
    let csv =
        std::fs::read_to_string(&csv_path).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        let time = local_ms(line.split(';').next().unwrap_or(""))
            .ok_or_else(|| format!("{}:{}: no time", csv_path.display(), i + 1))?;
        let occupancy = line
            .rsplit(';')
            .next()
            .and_then(|o| o.parse::<f64>().ok())
            .filter(|o| o.is_finite());
        rows.push((time, occupancy));
    }
    let first = rows
        .first()
        .ok_or_else(|| format!("{}: no rows", csv_path.display()))?
        .0;
    let offset = first_frame_ms(pcap)? as i64 - first;
    let hours = (offset as f64 / 3_600_000.0).round() as i64;
    if (offset - hours * 3_600_000).abs() > 1000 {
        return Err(format!(
            "{}: its first row is not the capture's first frame",
            csv_path.display()
        ));
    }
    let mut sums: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    for (local, occupancy) in rows {
        let Some(o) = occupancy else { continue };
        let utc = (local + hours * 3_600_000) as u64;
        let slot = sums.entry(utc - utc % window_ms).or_default();
        slot.0 += o;
        slot.1 += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(w, (s, n))| (w, s / f64::from(n)))
        .collect())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{cmd:?}: {e}"))
}

/// A site directory: consent key, the PCs opted out, and the config without plugins.
fn site(probegate: &Path, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = output(Command::new(probegate).args(["consent", "keygen"]))?;
    let key_file = dir.join("consent.key");
    std::fs::write(&key_file, key).map_err(|e| e.to_string())?;
    let ids = output(
        Command::new(probegate)
            .args(["consent", "id", "--key-file"])
            .arg(&key_file)
            .args(LAB_PCS),
    )?;
    let entries: Vec<String> = ids
        .lines()
        .map(|id| format!(r#"{{"id":"{id}","status":"opt-out"}}"#))
        .collect();
    std::fs::write(
        dir.join("consent.json"),
        format!(r#"{{"version":1,"entries":[{}]}}"#, entries.join(",")),
    )
    .map_err(|e| e.to_string())?;
    // The test sites' floor; min_cell 1 shows every value (the daemon nulls small counts).
    Ok(
        "log = \"warn\"\n\n[gateway]\nsite = \"evaluate\"\nid = \"gw-1\"\n\n\
        [privacy]\nsignal_floor_dbm = -95\nrotate_at = \"04:00\"\nrotate_every_hours = 24\n\
        consent_key_file = \"consent.key\"\nconsent_registry = \"consent.json\"\nmin_cell = 1\n\n\
        [mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n\n"
            .to_owned(),
    )
}

fn plugin_table(name: &str, wasm: &Path, config: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = {:?}\n\
         allow = [\"signal\", \"sequence\", \"ie-signature\"]\nconfig = {{ {config} }}\n\n",
        wasm.to_string_lossy()
    )
}

#[derive(Default, Clone, Copy)]
struct Score {
    n: usize,
    abs: f64,
    err: f64,
    inside: usize,
}

impl Score {
    fn add(&mut self, estimate: f64, truth: f64) {
        self.n += 1;
        self.abs += (estimate - truth).abs();
        self.err += estimate - truth;
    }
    fn mae(&self) -> f64 {
        self.abs / self.n.max(1) as f64
    }
    fn bias(&self) -> f64 {
        self.err / self.n.max(1) as f64
    }
    fn coverage(&self) -> f64 {
        self.inside as f64 / self.n.max(1) as f64
    }
}

struct DayResult {
    name: String,
    windows: usize,
    /// Hand-counted windows the capture covers only in part: not scored.
    partial: usize,
    mean_truth: f64,
    max_truth: f64,
    fitted: String,
    /// The plugin calibrated on the other days, and its `method` tag.
    plugin: Score,
    method: String,
    shipped: Score,
    v1: Score,
    all: Score,
    universal: Score,
}

fn num(w: &Value, field: &str) -> Result<f64> {
    w[field]
        .as_f64()
        .ok_or_else(|| format!("no number {field} in {w}"))
}

/// Each plugin's `occupancy` windows from `probegate replay --print`'s lines.
fn windows(printed: &str) -> Result<BTreeMap<String, Vec<Value>>> {
    let mut by_plugin: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in printed.lines() {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let payload = &v["payload"];
        if payload["stream"] == "occupancy" {
            let plugin = payload["plugin"].as_str().unwrap_or_default().to_owned();
            by_plugin
                .entry(plugin)
                .or_default()
                .push(payload["data"].clone());
        }
    }
    Ok(by_plugin)
}

pub fn evaluate(args: &[String]) -> Result {
    let o = options(args)?;
    let window_ms = o.window_secs * 1000;
    build_plugins()?;
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--locked", "-p", "probegate"]))?;
    let probegate = cargo_target_dir().join("debug/probegate");
    let wasm = root().join("target/wasm/occupancy.wasm");
    let work = cargo_target_dir().join("evaluate");
    let base = site(&probegate, &work)?;
    let days = days(&o.data, window_ms)?;
    let window = format!("window_secs = {}", o.window_secs);

    let mut counts_files = Vec::new();
    for d in &days {
        let path = work.join(format!("counts-{}.csv", d.name));
        let mut text = String::from("time,people\n");
        for (start, people) in &d.truth {
            let _ = writeln!(text, "{},{people}", start / 1000);
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        counts_files.push(path);
    }

    let mut results = Vec::new();
    for (held, day) in days.iter().enumerate() {
        eprintln!("evaluate: {} held out", day.name);
        // Calibrate on the other days: one counts file for all of them.
        let counts = work.join(format!("counts-without-{}.csv", day.name));
        let mut joined = String::from("time,people\n");
        for (i, path) in counts_files.iter().enumerate() {
            if i != held {
                let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
                joined.extend(text.lines().skip(1).map(|l| format!("{l}\n")));
            }
        }
        std::fs::write(&counts, joined).map_err(|e| e.to_string())?;
        let calibration_site = work.join(format!("calibrate-{}.toml", day.name));
        std::fs::write(
            &calibration_site,
            format!("{base}{}", plugin_table("occupancy", &wasm, &window)),
        )
        .map_err(|e| e.to_string())?;
        let mut calibrate = Command::new(&probegate);
        calibrate
            .arg("calibrate")
            .arg("--config")
            .arg(&calibration_site)
            .arg("--counts")
            .arg(&counts);
        for (i, d) in days.iter().enumerate() {
            if i != held {
                calibrate.arg(&d.pcap);
            }
        }
        let fitted = output(&mut calibrate)?;
        let fitted_config = fitted
            .lines()
            .find_map(|l| l.strip_prefix("config = "))
            .unwrap_or_default()
            .to_owned();

        let replay_site = work.join(format!("replay-{}.toml", day.name));
        std::fs::write(
            &replay_site,
            format!(
                "{base}{fitted}\n{}",
                plugin_table("shipped", &wasm, &window)
            ),
        )
        .map_err(|e| e.to_string())?;
        let printed = output(
            Command::new(&probegate)
                .args(["replay", "--print", "--config"])
                .arg(&replay_site)
                .arg(&day.pcap),
        )?;
        let by_plugin = windows(&printed)?;
        let v1_divisor = V1_ADDRESSES_PER_MIN * o.window_secs as f64 / 60.0;
        let mut r = DayResult {
            name: day.name.clone(),
            windows: 0,
            partial: 0,
            mean_truth: 0.0,
            max_truth: 0.0,
            fitted: fitted_config,
            plugin: Score::default(),
            method: String::new(),
            shipped: Score::default(),
            v1: Score::default(),
            all: Score::default(),
            universal: Score::default(),
        };
        let shipped: BTreeMap<u64, f64> = by_plugin
            .get("shipped")
            .into_iter()
            .flatten()
            .filter_map(|w| Some((w["window_start_ms"].as_u64()?, w["estimate"].as_f64()?)))
            .collect();
        for w in by_plugin.get("occupancy").into_iter().flatten() {
            let start = w["window_start_ms"].as_u64().ok_or("no window_start_ms")?;
            let Some(&truth) = day.truth.get(&start) else {
                continue;
            };
            // The capture began or ended inside it: a router that runs all day has none.
            if w["partial"] == true {
                r.partial += 1;
                continue;
            }
            r.windows += 1;
            if let Some(m) = w["method"].as_str() {
                r.method = m.to_owned();
            }
            r.mean_truth += truth;
            r.max_truth = r.max_truth.max(truth);
            let (estimate, low, high) = (num(w, "estimate")?, num(w, "low")?, num(w, "high")?);
            r.plugin.add(estimate, truth);
            r.plugin.inside += usize::from(low <= truth && truth <= high);
            if let Some(&s) = shipped.get(&start) {
                r.shipped.add(s, truth);
            }
            r.v1.add(
                num(w, "universal_present")? + num(w, "randomized_in_room")? / v1_divisor,
                truth,
            );
            r.all.add(
                num(w, "universal_seen")? + num(w, "randomized_seen")?,
                truth,
            );
            r.universal.add(num(w, "universal_seen")?, truth);
        }
        if r.windows == 0 {
            // A day without a full hand-counted window scores nothing; the others still do.
            eprintln!(
                "evaluate: {}: no full window with a hand count, not scored",
                day.name
            );
            continue;
        }
        r.mean_truth /= r.windows as f64;
        results.push(r);
    }

    let report = report(&results, &o, &days);
    print!("{report}");
    if let Some(out) = &o.out {
        std::fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

fn kind(r: &DayResult) -> &'static str {
    if r.max_truth == 0.0 {
        "empty"
    } else if r.mean_truth >= 5.0 {
        "busy"
    } else {
        "small"
    }
}

fn report(results: &[DayResult], o: &Options, days: &[Day]) -> String {
    let mut s = String::new();
    let methods: std::collections::BTreeSet<&str> =
        results.iter().map(|r| r.method.as_str()).collect();
    let methods: Vec<&str> = methods.into_iter().collect();
    let _ = writeln!(
        s,
        "Leave one day out, {}-minute windows, {} days from {} (the lab's PCs opted out); \
         method `{}`.\n",
        o.window_secs / 60,
        days.len(),
        o.data.display(),
        methods.join("`, `")
    );
    let _ = writeln!(
        s,
        "| day | kind | windows | mean present | MAE | bias | in low–high | shipped-defaults MAE | v1 formula MAE | universal-only MAE | all-addresses MAE |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut total = Score::default();
    let partial: usize = results.iter().map(|r| r.partial).sum();
    for r in results {
        total.n += r.plugin.n;
        total.inside += r.plugin.inside;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.2} | {:+.2} | {:.0} % | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.name,
            kind(r),
            r.windows,
            r.mean_truth,
            r.plugin.mae(),
            r.plugin.bias(),
            100.0 * r.plugin.coverage(),
            r.shipped.mae(),
            r.v1.mae(),
            r.universal.mae(),
            r.all.mae(),
        );
    }
    let _ = writeln!(
        s,
        "\nInterval coverage over all scored windows: {:.0} % ({} of {}). Not scored: {partial} \
         hand-counted windows the capture covers only in part (its first and last).\n",
        100.0 * total.coverage(),
        total.inside,
        total.n
    );
    let _ = writeln!(s, "Calibrated on the other days (`probegate calibrate`):\n");
    for r in results {
        let _ = writeln!(s, "- without {}: `{}`", r.name, r.fitted);
    }
    let _ = writeln!(s, "\nTargets (issue 13):");
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    for r in results {
        match kind(r) {
            "busy" => {
                let _ = writeln!(
                    s,
                    "- {} (busy): MAE {:.2} ≤ 2.0 {}; beats universal-only ({:.2}) {}",
                    r.name,
                    r.plugin.mae(),
                    check(r.plugin.mae() <= 2.0),
                    r.universal.mae(),
                    check(r.plugin.mae() < r.universal.mae())
                );
            }
            "empty" => {
                let _ = writeln!(
                    s,
                    "- {} (empty): MAE {:.2} ≤ 0.5 {}",
                    r.name,
                    r.plugin.mae(),
                    check(r.plugin.mae() <= 0.5)
                );
            }
            _ => {}
        }
    }
    for r in results {
        let _ = writeln!(
            s,
            "- {}: low–high holds the hand count in {:.0} % of windows, ≥ 80 % {}",
            r.name,
            100.0 * r.plugin.coverage(),
            check(r.plugin.coverage() >= 0.8)
        );
    }
    let _ = writeln!(
        s,
        "- interval coverage over all windows {:.0} % ≥ 80 % {}",
        100.0 * total.coverage(),
        check(total.coverage() >= 0.8)
    );
    s
}
