//! The visitor counter's `visits` stream against a replayed lecture day, recomputed here from
//! the tshark oracle (address and signal per probe) and the pcap's frame times, with none of
//! the plugin's code: each device's sightings are cut into presences and stays after the fact,
//! instead of the plugin's step-by-step state machine.

use crate::expect::{self, Probe, frame_times};
use crate::harness::{Broker, FLOOR, PluginEntry, Site, Subscriber, capture, text};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A lecture day: up to 17 people in the lab, 12 000 probes in an hour and a half.
const CAPTURE: &str = "fryza-sc6-61/sc6-61_2023-03-08.pcap";
const INTERVAL_MS: u64 = 300_000;

/// What makes a visit, as the plugin's `visits` config says it.
#[derive(Clone, Copy)]
struct Rules {
    enter_dbm: i32,
    stay_dbm: i32,
    max_gap_ms: u64,
    min_visit_ms: u64,
    bins_min: &'static [u64],
}

/// Every key set away from its default, so the test shows the config is read.
const TUNED: Rules = Rules {
    enter_dbm: -65,
    stay_dbm: -82,
    max_gap_ms: 180_000,
    min_visit_ms: 240_000,
    bins_min: &[5, 15, 30, 60],
};
const TUNED_PLUGIN: PluginEntry<'static> = PluginEntry {
    name: "visitor-counter",
    file: "visitor_counter.wasm",
    config: "{ interval_secs = 300, visits = { enter_dbm = -65, stay_dbm = -82, max_gap_secs = 180, min_visit_secs = 240, dwell_bins_min = [5, 15, 30, 60] } }",
    allow: "",
};

/// The defaults the plugin's README documents.
const DEFAULTS: Rules = Rules {
    enter_dbm: -70,
    stay_dbm: -80,
    max_gap_ms: 300_000,
    min_visit_ms: 300_000,
    bins_min: &[15, 30, 60, 120],
};
const DEFAULT_PLUGIN: PluginEntry<'static> = PluginEntry {
    name: "visits-defaults",
    file: "visitor_counter.wasm",
    config: "{ visits = {} }",
    allow: "",
};

/// visitors, passers-by, new, repeat, dwell histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tally(u64, u64, u64, u64, Vec<u64>);

/// interval start, partial, universal, randomized.
type Row = (u64, bool, Tally, Tally);

fn tally_of(v: &Value) -> Tally {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    Tally(
        n("visitors"),
        n("passers_by"),
        n("new"),
        n("repeat"),
        v["dwell"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect(),
    )
}

fn rows_of(messages: &[Value]) -> Vec<Row> {
    messages
        .iter()
        .map(|m| {
            let d = &m["data"];
            (
                d["interval_start_ms"].as_u64().unwrap(),
                d["partial"].as_bool().unwrap(),
                tally_of(&d["universal"]),
                tally_of(&d["randomized"]),
            )
        })
        .collect()
}

/// One ended stay or presence, placed at its last sighting.
enum Ending {
    Visit { dwell_ms: u64, repeat: bool },
    PasserBy,
}

/// What the plugin must publish for `probes` (admitted ones, in frame order) when the capture
/// ends at `end_ms`.
fn expected(probes: &[&Probe], end_ms: u64, rules: Rules) -> Vec<Row> {
    let mut by_device: BTreeMap<[u8; 6], Vec<(u64, Option<i32>)>> = BTreeMap::new();
    for p in probes {
        by_device.entry(p.sa).or_default().push((p.time_ms, p.dbm));
    }
    let mut endings: Vec<(u64, bool, Ending)> = Vec::new();
    for (sa, seen) in &by_device {
        let randomized = sa[0] & 2 != 0;
        // Stays: only sightings at stay level matter, and one at enter level opens a stay.
        let mut stays: Vec<(u64, u64)> = Vec::new();
        let mut open: Option<(u64, u64)> = None;
        for &(t, dbm) in seen {
            let Some(dbm) = dbm else { continue };
            if dbm < rules.stay_dbm {
                continue;
            }
            if let Some((first, last)) = open {
                if t - last <= rules.max_gap_ms {
                    open = Some((first, t));
                    continue;
                }
                stays.push((first, last));
                open = None;
            }
            if dbm >= rules.enter_dbm {
                open = Some((t, t));
            }
        }
        stays.extend(open);
        let visits: Vec<(u64, u64)> = stays
            .into_iter()
            .filter(|(first, last)| last - first >= rules.min_visit_ms)
            .collect();
        for (i, &(first, last)) in visits.iter().enumerate() {
            let ending = Ending::Visit {
                dwell_ms: last - first,
                repeat: i > 0,
            };
            endings.push((last, randomized, ending));
        }
        // Presences: runs of sightings at any signal; one without a visit is a passer-by.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &(t, _) in seen {
            match runs.last_mut() {
                Some((_, last)) if t - *last <= rules.max_gap_ms => *last = t,
                _ => runs.push((t, t)),
            }
        }
        for (first, last) in runs {
            if !visits.iter().any(|&(_, end)| (first..=last).contains(&end)) {
                endings.push((last, randomized, Ending::PasserBy));
            }
        }
    }

    let bins = rules.bins_min.len() + 1;
    let zero = || Tally(0, 0, 0, 0, vec![0; bins]);
    let mut cells: BTreeMap<u64, [Tally; 2]> = BTreeMap::new();
    for (at, randomized, ending) in endings {
        let cell = cells
            .entry(at - at % INTERVAL_MS)
            .or_insert_with(|| [zero(), zero()]);
        let t = &mut cell[randomized as usize];
        match ending {
            Ending::PasserBy => t.1 += 1,
            Ending::Visit { dwell_ms, repeat } => {
                t.0 += 1;
                if repeat {
                    t.3 += 1;
                } else {
                    t.2 += 1;
                }
                let minutes = dwell_ms / 60_000;
                t.4[rules.bins_min.iter().filter(|&&e| minutes >= e).count()] += 1;
            }
        }
    }

    // Final intervals (the end passed theirs by max_gap) all go out, empty ones too; of the
    // others, only those that hold something, marked partial.
    let first = probes[0].time_ms - probes[0].time_ms % INTERVAL_MS;
    let mut rows = Vec::new();
    let mut start = first;
    while start + INTERVAL_MS + rules.max_gap_ms <= end_ms {
        let [u, r] = cells.remove(&start).unwrap_or_else(|| [zero(), zero()]);
        rows.push((start, false, u, r));
        start += INTERVAL_MS;
    }
    rows.extend(cells.into_iter().map(|(s, [u, r])| (s, true, u, r)));
    rows
}

#[test]
fn visits_match_the_capture_recomputed_from_the_oracle() {
    let times = frame_times(CAPTURE);
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the expectation assumes frames in time order"
    );
    let end_ms = *times.last().unwrap();
    let all = expect::probes(CAPTURE);
    let admitted: Vec<&Probe> = all
        .iter()
        .filter(|p| p.sa[0] & 1 == 0 && p.dbm.is_none_or(|d| d >= FLOOR))
        .collect();

    let broker = Broker::start();
    let sub = Subscriber::start(&broker);
    let site = Site::new(&broker, &[TUNED_PLUGIN, DEFAULT_PLUGIN], "");
    let out = site.replay(&capture(CAPTURE), "info");
    assert!(out.status.success(), "replay failed: {}", text(&out.stderr));
    assert!(sub.wait_offline());

    for (plugin, rules) in [("visitor-counter", TUNED), ("visits-defaults", DEFAULTS)] {
        let messages = sub.stream(plugin, "visits");
        let got = rows_of(&messages);
        let want = expected(&admitted, end_ms, rules);
        assert!(want.len() > 10, "the capture spans many intervals");
        assert_eq!(got, want, "{plugin}");
        let edges: Vec<u64> = messages[0]["data"]["dwell_bins_min"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_u64().unwrap())
            .collect();
        assert_eq!(edges, rules.bins_min, "{plugin}");

        // Checks that need no recomputation: each visit is new or repeat and lands in one
        // bin, and a device is new at most once, so never more new visitors than devices
        // that ever reached the enter signal.
        let mut new = 0;
        for (start, _, u, r) in &got {
            for t in [u, r] {
                assert_eq!(t.0, t.2 + t.3, "{plugin} at {start}");
                assert_eq!(t.0, t.4.iter().sum::<u64>(), "{plugin} at {start}");
                new += t.2;
            }
        }
        let entered: BTreeSet<[u8; 6]> = admitted
            .iter()
            .filter(|p| p.dbm.is_some_and(|d| d >= rules.enter_dbm))
            .map(|p| p.sa)
            .collect();
        assert!(
            new <= entered.len() as u64,
            "{plugin}: {new} new visitors, {} devices at enter signal",
            entered.len()
        );
        let visitors: u64 = got.iter().map(|(_, _, u, r)| u.0 + r.0).sum();
        let passers_by: u64 = got.iter().map(|(_, _, u, r)| u.1 + r.1).sum();
        assert!(
            visitors > 0 && passers_by > visitors,
            "{plugin}: a lecture day has both, and far more passers-by ({visitors} visitors, {passers_by} passers-by)"
        );
        eprintln!("{plugin}: {visitors} visitors, {passers_by} passers-by, {new} new");
    }

    // Turning visits on leaves the counts as they were.
    assert_eq!(
        expect::rows_of(&sub.stream("visitor-counter", "counts")),
        expect::counts(CAPTURE, INTERVAL_MS, FLOOR)
    );
}
