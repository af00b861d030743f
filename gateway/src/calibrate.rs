//! `probegate calibrate`: fits an occupancy plugin's room threshold, people per device and
//! interval to one site, from captures of it and a few windows whose people were counted by
//! hand, and prints the plugin's `[[plugin]]` table for the site config.
//!
//! It runs the daemon's own pipeline (pcap, 802.11 parsing, the privacy gate with the site's
//! opt-outs, the plugin's pseudonym space and capability grants) and the linking crate the
//! plugins are built from, natively: what it fits is what the plugin will compute. Nothing it
//! reads leaves the process but the fitted numbers.

use crate::capture::{Next, PcapSource};
use crate::config::{Config, PluginConfig};
use crate::daemon;
use crate::dot11;
use crate::plugins::manifest::Capability;
use crate::privacy::{PseudonymSpace, Sighting};
use probegate_linking::model::weighted_quantile;
use probegate_linking::{CountParams, Counter, LinkParams, Model, Observation, WindowCounts};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// The site config: signal floor, opt-outs, key rotation, and the plugin's table.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The `[[plugin]]` table to calibrate (an occupancy plugin).
    #[arg(long, default_value = "occupancy")]
    pub plugin: String,
    /// People counted by hand: CSV lines `time,people`, time in RFC 3339
    /// (`2026-12-05T14:07:00+01:00`) or Unix seconds; `#` starts a comment. Counts in one
    /// window are averaged.
    #[arg(long)]
    pub counts: PathBuf,
    /// Share of windows the interval should hold the hand count in.
    #[arg(long, default_value_t = 0.9)]
    pub coverage: f64,
    /// Fit the room threshold from a walk of the shop floor instead: the consent token of the
    /// phone (opted in) that walked along the floor's edges during a capture. Its weakest
    /// sightings (10th percentile) set `room_dbm`.
    #[arg(long)]
    pub walk_token: Option<String>,
    /// Use this room threshold (dBm) rather than fitting one.
    #[arg(long, allow_hyphen_values = true)]
    pub room_dbm: Option<i32>,
    /// Also write every hand-counted window (its counts, the estimate, the hand count) to this
    /// CSV file, to see where the fit is off.
    #[arg(long)]
    pub windows: Option<PathBuf>,
    /// Recorded captures of the site (pcap files).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
}

/// Room thresholds tried when no walk sets one, dBm.
const ROOM_CANDIDATES: std::ops::RangeInclusive<i32> = -90..=-55;

/// Minimum dwells tried (seconds) when the plugin's config does not set `min_dwell_secs`:
/// how long a cluster must last to be a person present rather than a fragment or a passer-by.
const DWELL_CANDIDATES_SECS: [u64; 3] = [60, 120, 300];

/// Half the stretch of room thresholds whose errors are averaged to choose one, dB.
const ROOM_SMOOTHING_DB: i32 = 2;

/// The plugin config keys calibration reads; the rest of the table is kept as it is.
#[derive(Debug, Clone)]
struct Settings {
    count: CountParams,
    /// Minimum dwells to try: the config's, or the candidates.
    dwells: Vec<u64>,
}

fn settings(plugin: &PluginConfig) -> Result<Settings, String> {
    let count = count_params(plugin)?;
    let dwells = if plugin
        .config
        .as_ref()
        .is_some_and(|t| t.contains_key("min_dwell_secs"))
    {
        vec![count.min_dwell_ms]
    } else {
        DWELL_CANDIDATES_SECS.iter().map(|s| s * 1000).collect()
    };
    Ok(Settings { count, dwells })
}

/// The counting parameters an occupancy plugin's config sets, the defaults for the rest, as
/// the plugin reads them (calibration then searches the room threshold itself).
pub fn count_params(plugin: &PluginConfig) -> Result<CountParams, String> {
    let mut count = CountParams::default();
    let table = plugin.config.clone().unwrap_or_default();
    let secs = |key: &str, default: u64| -> Result<u64, String> {
        match table.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .filter(|&i| i > 0)
                .ok_or_else(|| format!("plugin config: {key} must be a positive integer")),
        }
    };
    count.window_ms = secs("window_secs", count.window_ms / 1000)? * 1000;
    count.min_dwell_ms = secs("min_dwell_secs", count.min_dwell_ms / 1000)? * 1000;
    count.fixed_after_ms = secs("fixed_after_secs", count.fixed_after_ms / 1000)? * 1000;
    if let Some(v) = table.get("room_dbm") {
        count.link.room_dbm = v
            .as_integer()
            .and_then(|i| i32::try_from(i).ok())
            .filter(|i| (-120..=0).contains(i))
            .ok_or("plugin config: room_dbm must be an integer from -120 to 0")?;
    }
    Ok(count)
}

/// Hand counts per window start (ms): the mean of the counts in each window.
pub fn read_counts(path: &Path, window_ms: u64) -> Result<BTreeMap<u64, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sums: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() || (i == 0 && line.to_ascii_lowercase().starts_with("time")) {
            continue;
        }
        let at = |what: &str| format!("{}:{}: {what}", path.display(), i + 1);
        let (time, people) = line
            .split_once(',')
            .ok_or_else(|| at("expected `time,people`"))?;
        let time_ms = parse_time(time.trim()).ok_or_else(|| {
            at("time is neither RFC 3339 (2026-12-05T14:07:00+01:00) nor Unix seconds")
        })?;
        let people: f64 = people
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| at("people must be a number, 0 or more"))?;
        let slot = sums.entry(time_ms - time_ms % window_ms).or_default();
        slot.0 += people;
        slot.1 += 1;
    }
    if sums.is_empty() {
        return Err(format!("{}: no hand counts", path.display()));
    }
    Ok(sums
        .into_iter()
        .map(|(w, (sum, n))| (w, sum / f64::from(n)))
        .collect())
}

fn parse_time(s: &str) -> Option<u64> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

/// What the plugin would see of every capture: one list per capture, in capture order, and
/// the signals of the walking phone.
struct Observed {
    captures: Vec<Vec<Observation>>,
    walk: Vec<i8>,
}

/// What `plugin` of `config` would see of one capture, in capture order (for measuring the
/// linking natively: gateway/examples/linking_cost.rs).
pub fn observations(
    config: &Config,
    plugin: &PluginConfig,
    capture: &Path,
) -> Result<Vec<Observation>, String> {
    let mut observed = observe(config, plugin, &[capture.to_path_buf()], None)?;
    Ok(observed.captures.pop().unwrap_or_default())
}

fn observe(
    config: &Config,
    plugin: &PluginConfig,
    captures: &[PathBuf],
    walk_token: Option<&str>,
) -> Result<Observed, String> {
    let mut gate = daemon::gate(config);
    if let Some(consent) = daemon::consent(config).map_err(|e| e.to_string())? {
        gate = gate.with_consent(consent);
    }
    let granted = plugin.granted();
    let has = |c: Capability| granted.contains(&c);
    let mut space = PseudonymSpace::default();
    let mut observed = Observed {
        captures: Vec::new(),
        walk: Vec::new(),
    };
    for path in captures {
        let mut source = PcapSource::open_file(path).map_err(|e| e.to_string())?;
        let link = source.link_type();
        let mut list = Vec::new();
        loop {
            let frame = match source.next_frame().map_err(|e| e.to_string())? {
                Next::End => break,
                Next::Idle => continue,
                Next::Frame(f) => f,
            };
            let Ok(probe) = dot11::parse(link, frame.data) else {
                gate.rotate_if_due(frame.time_ms);
                continue;
            };
            let Ok(s) = gate.admit(probe, frame.time_ms) else {
                gate.rotate_if_due(frame.time_ms);
                continue;
            };
            if let (Some(token), Some(consent), Some(dbm)) =
                (walk_token, s.consent.as_deref(), s.signal_dbm)
                && token == consent
            {
                observed.walk.push(dbm);
            }
            list.push(observation(&mut space, &s, has));
        }
        observed.captures.push(list);
    }
    Ok(observed)
}

/// A sighting as the linking plugin sees it, with what its grants (`has`) let it see.
fn observation(
    space: &mut PseudonymSpace,
    s: &Sighting,
    has: impl Fn(Capability) -> bool,
) -> Observation {
    Observation {
        device: space.pseudonym(s),
        epoch: s.epoch,
        time_ms: s.time_ms,
        randomized: s.randomized,
        signal_dbm: s.signal_dbm.filter(|_| has(Capability::Signal)),
        seq: has(Capability::Sequence).then_some(s.seq),
        ie_signature: if has(Capability::IeSignature) {
            space.signature(s)
        } else {
            None
        },
    }
}

/// The windows the plugin publishes for one capture. The host restarts a plugin empty at
/// every key rotation, so a new epoch starts a new counter here too.
pub fn windows(observations: &[Observation], p: &CountParams) -> Vec<WindowCounts> {
    let mut out = Vec::new();
    let mut counter = Counter::new(p.clone());
    let mut epoch = None;
    for o in observations {
        if epoch.is_some_and(|e| e != o.epoch) {
            out.extend(counter.finish());
            counter = Counter::new(p.clone());
        }
        epoch = Some(o.epoch);
        out.extend(counter.observe(o));
    }
    out.extend(counter.finish());
    out
}

/// `(devices, hand count)` of the counted windows.
fn pairs(windows: &[WindowCounts], counts: &BTreeMap<u64, f64>) -> Vec<(u32, f64)> {
    // An incomplete window heard only part of the people the hand count saw.
    windows
        .iter()
        .filter(|w| !w.partial)
        .filter_map(|w| Some((w.devices(), *counts.get(&w.window_start_ms)?)))
        .collect()
}

/// A calibration and how well it did.
#[derive(Debug)]
pub struct Fit {
    pub room_dbm: i32,
    pub min_dwell_ms: u64,
    pub model: Model,
    pub windows: usize,
    /// Mean absolute error per capture, each model fitted without that capture, averaged over
    /// the captures (in-sample when there is only one).
    pub cv_mae: f64,
    /// Share of windows inside the interval of a model fitted without their capture.
    pub cv_coverage: f64,
}

/// Fits the rate and interval at one room threshold: leave one capture out for the error and
/// the residuals the interval is made from, so neither is flattered by the fit.
fn fit_at(per_capture: &[Vec<(u32, f64)>], coverage: f64) -> Option<(Model, f64, f64)> {
    let all: Vec<(u32, f64)> = per_capture.iter().flatten().copied().collect();
    let full = Model::fit(&all, coverage)?;
    let mut residuals = Vec::new();
    let (mut mae_sum, mut scored) = (0.0, 0usize);
    for (i, held) in per_capture.iter().enumerate() {
        if held.is_empty() {
            continue;
        }
        let rest: Vec<(u32, f64)> = per_capture
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let m = if per_capture.len() > 1 {
            Model::fit(&rest, coverage).unwrap_or(full)
        } else {
            full
        };
        let mut abs = 0.0;
        for &(d, truth) in held {
            let e = m.estimate(d).estimate;
            abs += (truth - e).abs();
            // Each capture weighs the same, however many windows it has: a long empty night
            // must not make the interval of a busy day.
            residuals.push(((truth - e) / (e + 1.0).sqrt(), 1.0 / held.len() as f64));
        }
        mae_sum += abs / held.len() as f64;
        scored += 1;
    }
    let tail = (1.0 - coverage.clamp(0.0, 1.0)) / 2.0;
    let model = Model {
        q_low: weighted_quantile(&residuals, tail)?,
        q_high: weighted_quantile(&residuals, 1.0 - tail)?,
        ..full
    };
    let inside = per_capture
        .iter()
        .flatten()
        .filter(|&&(d, t)| {
            let e = model.estimate(d);
            e.low <= t && t <= e.high
        })
        .count();
    Some((
        model,
        mae_sum / scored.max(1) as f64,
        inside as f64 / all.len() as f64,
    ))
}

/// Calibrates on already observed captures.
fn calibrate_observed(
    observed: &Observed,
    base: &CountParams,
    counts: &BTreeMap<u64, f64>,
    coverage: f64,
    fixed_room: Option<i32>,
    dwells: &[u64],
) -> Result<Fit, String> {
    let rooms: Vec<i32> = if let Some(room) = fixed_room {
        vec![room]
    } else if observed.walk.is_empty() {
        ROOM_CANDIDATES.collect()
    } else {
        let signals: Vec<f64> = observed.walk.iter().map(|&d| f64::from(d)).collect();
        let q = probegate_linking::model::quantile(&signals, 0.1).unwrap_or(-75.0);
        vec![q.floor() as i32]
    };
    let mut fits: Vec<Fit> = Vec::new();
    let grid = dwells
        .iter()
        .flat_map(|&d| rooms.iter().map(move |&r| (d, r)));
    for (min_dwell_ms, room_dbm) in grid {
        let p = CountParams {
            link: LinkParams {
                room_dbm,
                ..base.link.clone()
            },
            min_dwell_ms,
            ..base.clone()
        };
        let per_capture: Vec<Vec<(u32, f64)>> = observed
            .captures
            .iter()
            .map(|o| pairs(&windows(o, &p), counts))
            .collect();
        let n = per_capture.iter().map(Vec::len).sum();
        let Some((model, cv_mae, cv_coverage)) = fit_at(&per_capture, coverage) else {
            continue;
        };
        fits.push(Fit {
            room_dbm,
            min_dwell_ms,
            model,
            windows: n,
            cv_mae,
            cv_coverage,
        });
    }
    // The error jumps by a person from one dB to the next (a few devices cross the line, and
    // a lecture day has few windows): choose the middle of the best ±2 dB stretch, not a lucky
    // single value. Ties go to the stronger threshold (fewer devices from next door), then to
    // the shorter dwell.
    let smoothed = |i: usize| -> f64 {
        let near: Vec<f64> = fits
            .iter()
            .filter(|f| {
                f.min_dwell_ms == fits[i].min_dwell_ms
                    && (f.room_dbm - fits[i].room_dbm).abs() <= ROOM_SMOOTHING_DB
            })
            .map(|f| f.cv_mae)
            .collect();
        near.iter().sum::<f64>() / near.len() as f64
    };
    let best = (0..fits.len()).min_by(|&a, &b| {
        smoothed(a)
            .total_cmp(&smoothed(b))
            .then(fits[b].room_dbm.cmp(&fits[a].room_dbm))
            .then(fits[a].min_dwell_ms.cmp(&fits[b].min_dwell_ms))
    });
    best.map(|i| fits.swap_remove(i)).ok_or_else(|| {
        "no hand-counted window saw a device in the room: count while people are in, \
         at times the captures cover"
            .to_string()
    })
}

/// Runs `probegate calibrate` and returns the text to print.
pub fn calibrate(args: &CalibrateArgs) -> Result<String, String> {
    if !(0.0..1.0).contains(&args.coverage) {
        return Err("--coverage must be at least 0 and below 1".into());
    }
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name.get_ref() == &args.plugin)
        .ok_or_else(|| {
            format!(
                "{}: no [[plugin]] named {:?}",
                args.config.display(),
                args.plugin
            )
        })?;
    let s = settings(plugin)?;
    let counts = read_counts(&args.counts, s.count.window_ms)?;
    let observed = observe(&config, plugin, &args.captures, args.walk_token.as_deref())?;
    if args.walk_token.is_some() && observed.walk.is_empty() {
        return Err(
            "no sighting carries the walk's consent token: is the phone opted in \
                    with it, and did it probe during the captures?"
                .into(),
        );
    }
    let fit = calibrate_observed(
        &observed,
        &s.count,
        &counts,
        args.coverage,
        args.room_dbm,
        &s.dwells,
    )?;
    if let Some(path) = &args.windows {
        write_windows(path, &observed, &s.count, &fit, &counts)?;
    }
    let room_source = if args.room_dbm.is_some() {
        "as given"
    } else if observed.walk.is_empty() {
        "chosen by that error"
    } else {
        "from the walk"
    };
    Ok(render(
        plugin,
        &fit,
        &args.captures,
        args.coverage,
        room_source,
    ))
}

fn write_windows(
    path: &Path,
    observed: &Observed,
    base: &CountParams,
    fit: &Fit,
    counts: &BTreeMap<u64, f64>,
) -> Result<(), String> {
    let p = CountParams {
        link: LinkParams {
            room_dbm: fit.room_dbm,
            ..base.link.clone()
        },
        min_dwell_ms: fit.min_dwell_ms,
        ..base.clone()
    };
    let mut text = String::from(
        "capture,window_start_ms,hand_count,estimate,low,high,devices,universal_present,\
         linked_present,universal_brief,linked_brief,universal_fixed,randomized_in_room,links,\
         ambiguous_links,universal_seen,randomized_seen,sightings,partial\n",
    );
    for (i, o) in observed.captures.iter().enumerate() {
        for w in windows(o, &p) {
            let Some(truth) = counts.get(&w.window_start_ms) else {
                continue;
            };
            let e = fit.model.estimate(w.devices());
            text.push_str(&format!(
                "{},{},{truth:.2},{:.2},{:.2},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                i + 1,
                w.window_start_ms,
                e.estimate,
                e.low,
                e.high,
                w.devices(),
                w.universal_present,
                w.linked_present,
                w.universal_brief,
                w.linked_brief,
                w.universal_fixed,
                w.randomized_in_room,
                w.links,
                w.ambiguous_links,
                w.universal_seen,
                w.randomized_seen,
                w.sightings,
                w.partial
            ));
        }
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn render(
    plugin: &PluginConfig,
    fit: &Fit,
    captures: &[PathBuf],
    coverage: f64,
    room_source: &str,
) -> String {
    let mut table = plugin.config.clone().unwrap_or_default();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    table.insert("room_dbm".into(), i64::from(fit.room_dbm).into());
    table.insert(
        "min_dwell_secs".into(),
        i64::try_from(fit.min_dwell_ms / 1000)
            .unwrap_or(i64::MAX)
            .into(),
    );
    table.insert("people_per_device".into(), round(fit.model.rate).into());
    table.insert("interval_low".into(), round(fit.model.q_low).into());
    table.insert("interval_high".into(), round(fit.model.q_high).into());
    let inline: Vec<String> = table.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let mut out = String::new();
    out.push_str(&format!(
        "# probegate calibrate: {} capture(s), {} hand-counted windows; room_dbm {}\n\
         # error per window, each capture scored with a fit made without it: MAE {:.2} people,\n\
         # {:.0} % of windows inside low-high (asked for {:.0} %)\n",
        captures.len(),
        fit.windows,
        room_source,
        fit.cv_mae,
        100.0 * fit.cv_coverage,
        100.0 * coverage
    ));
    out.push_str("[[plugin]]\n");
    out.push_str(&format!("name = {:?}\n", plugin.name.get_ref()));
    if let Some(path) = &plugin.path {
        out.push_str(&format!(
            "path = {}\n",
            toml::Value::from(path.to_string_lossy().into_owned())
        ));
    }
    if let Some(allow) = &plugin.allow {
        let list: Vec<String> = allow.get_ref().iter().map(|c| format!("{c:?}")).collect();
        out.push_str(&format!("allow = [{}]\n", list.join(", ")));
    }
    out.push_str(&format!("config = {{ {} }}\n", inline.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(device: u64, time_ms: u64, dbm: i8) -> Observation {
        Observation {
            device,
            epoch: 1,
            time_ms,
            randomized: false,
            signal_dbm: Some(dbm),
            seq: None,
            ie_signature: None,
        }
    }

    #[test]
    fn hand_counts_are_averaged_per_window_and_bad_lines_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.csv");
        std::fs::write(
            &path,
            "time,people\n# morning\n2026-12-05T10:01:00Z,4\n2026-12-05T11:14:00+01:00,6\n1796465700,1\n",
        )
        .unwrap();
        let counts = read_counts(&path, 900_000).unwrap();
        assert_eq!(counts.get(&1_796_464_800_000), Some(&5.0));
        assert_eq!(counts.get(&1_796_465_700_000), Some(&1.0));
        std::fs::write(&path, "2026-12-05 10:01,4\n").unwrap();
        let err = read_counts(&path, 900_000).unwrap_err();
        assert!(err.contains("counts.csv:1: time"), "{err}");
        std::fs::write(&path, "1796465700,-2\n").unwrap();
        assert!(read_counts(&path, 900_000).unwrap_err().contains("people"));
    }

    #[test]
    fn the_room_threshold_that_separates_the_room_from_next_door_wins() {
        // Each window: `n` people in the room with a laptop each (-60 dBm), and five devices
        // next door (-80 dBm) that the hand count does not include.
        let mut captures = Vec::new();
        let mut counts = BTreeMap::new();
        for (c, n) in [3u64, 6, 9].into_iter().enumerate() {
            let base = c as u64 * 3_600_000;
            let mut list = Vec::new();
            for t in (0..3_600_000).step_by(30_000) {
                for d in 0..n {
                    list.push(observation(100 * c as u64 + d, base + t, -60));
                }
                for d in 0..5 {
                    list.push(observation(1000 + 100 * c as u64 + d, base + t, -80));
                }
            }
            for w in (0..4).map(|w| base + w * 900_000) {
                counts.insert(w, n as f64);
            }
            captures.push(list);
        }
        let observed = Observed {
            captures,
            walk: Vec::new(),
        };
        let fit = calibrate_observed(
            &observed,
            &CountParams::default(),
            &counts,
            0.9,
            None,
            &[60_000],
        )
        .unwrap();
        assert!((-79..=-60).contains(&fit.room_dbm), "{fit:?}");
        assert!((fit.model.rate - 1.0).abs() < 1e-9, "{fit:?}");
        assert!(fit.cv_mae < 1.0, "{fit:?}");
        let walked = Observed {
            walk: vec![-62, -70, -66, -64, -71, -63, -65, -68, -60, -61],
            ..observed
        };
        let fit = calibrate_observed(
            &walked,
            &CountParams::default(),
            &counts,
            0.9,
            None,
            &[60_000],
        )
        .unwrap();
        assert_eq!(fit.room_dbm, -71);
    }
}
