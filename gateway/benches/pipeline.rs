//! Throughput, allocations and memory of the hot path, on every real capture in the repo.
//!
//! `cargo xtask build-plugins && cargo bench -p probegate --bench pipeline`
//!
//! Targets (a store router's CPU is 10-20x slower than a developer's x86 core, and a busy
//! store hears a few hundred probes a second):
//! - parsing and gating allocate nothing per frame;
//! - parse + gate stays under 1 µs per probe here;
//! - the plugin stage with the visitor counter stays under 2 µs per sighting here;
//! - peak RSS stays under 32 MiB with one plugin loaded.

use probegate::config::Config;
use probegate::dot11::{self, LinkType};
use probegate::pipeline::PluginStage;
use probegate::plugins::{LoadMode, PluginSet};
use probegate::privacy::{Gate, RotationSchedule, Sighting, TimeZone};
use probegate::telemetry::Counters;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const ROUNDS: u64 = 20;
const DAY_MS: u64 = 86_400_000;

struct Frame {
    link: LinkType,
    time_ms: u64,
    data: Vec<u8>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fryza-sc6-61")
}

fn load_frames() -> Vec<Frame> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    names.sort();
    let mut frames = Vec::new();
    for path in names {
        let mut cap = pcap::Capture::from_file(&path).unwrap();
        let link = LinkType::from_dlt(cap.get_datalink().0).unwrap();
        while let Ok(p) = cap.next_packet() {
            frames.push(Frame {
                link,
                time_ms: p.header.ts.tv_sec as u64 * 1000 + p.header.ts.tv_usec as u64 / 1000,
                data: p.data.to_vec(),
            });
        }
    }
    frames
}

/// Runs `f` ROUNDS times; returns (ns per item, allocations per item).
fn measure(items: u64, mut f: impl FnMut(u64)) -> (f64, f64) {
    f(0); // warm up: first-touch page faults and lazy init are not the steady state
    let allocs = ALLOCATIONS.load(Relaxed);
    let start = Instant::now();
    for round in 1..=ROUNDS {
        f(round);
    }
    let n = (items * ROUNDS) as f64;
    (
        start.elapsed().as_nanos() as f64 / n,
        (ALLOCATIONS.load(Relaxed) - allocs) as f64 / n,
    )
}

fn gate() -> Gate {
    let schedule = RotationSchedule {
        at_minute: 240,
        every_hours: 24,
        zone: TimeZone::FixedOffsetSecs(0),
    };
    Gate::new(schedule, -127)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The native path of `cargo xtask bench`'s table: `FILE` read with libpcap, parsed, gated,
/// and counted as the visitor counter counts (distinct devices per 5-minute window), with no
/// wasm and no MQTT. Prints `native <seconds> <probes> <windows> <visits>`.
fn native(path: &Path) {
    let started = Instant::now();
    let mut cap = pcap::Capture::from_file(path).unwrap();
    let link = LinkType::from_dlt(cap.get_datalink().0).unwrap();
    let mut g = gate();
    let (mut probes, mut windows, mut visits) = (0u64, 0u64, 0u64);
    let mut window_start = None;
    let mut seen = std::collections::HashSet::new();
    while let Ok(p) = cap.next_packet() {
        let time_ms = p.header.ts.tv_sec as u64 * 1000 + p.header.ts.tv_usec as u64 / 1000;
        let Ok(probe) = dot11::parse(link, p.data) else {
            continue;
        };
        probes += 1;
        let Ok(s) = g.admit(probe, time_ms) else {
            continue;
        };
        let start = s.time_ms - s.time_ms % 300_000;
        if window_start.is_some_and(|w| w < start) {
            windows += 1;
            visits += seen.len() as u64;
            seen.clear();
        }
        window_start = Some(start);
        seen.insert((s.device, s.epoch));
    }
    visits += seen.len() as u64;
    println!(
        "native {:.4} {probes} {} {visits}",
        started.elapsed().as_secs_f64(),
        windows + 1
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--native") {
        return native(Path::new(&args[at + 1]));
    }
    let frames = load_frames();
    let n = frames.len() as u64;
    println!("{n} frames from {}", data_dir().display());

    let (ns, allocs) = measure(n, |_| {
        for f in &frames {
            let _ = black_box(dot11::parse(f.link, black_box(&f.data)));
        }
    });
    println!("parse            {ns:8.1} ns/frame     {allocs:.3} allocations/frame");

    let mut g = gate();
    let (ns, allocs) = measure(n, |round| {
        for f in &frames {
            if let Ok(probe) = dot11::parse(f.link, &f.data) {
                let _ = black_box(g.admit(probe, f.time_ms + round * 1000 * DAY_MS));
            }
        }
    });
    println!("parse + gate     {ns:8.1} ns/frame     {allocs:.3} allocations/frame");

    // What a site pays when no plugin is granted `ie-signature`.
    let mut g = gate().with_signatures(false);
    let (ns, allocs) = measure(n, |round| {
        for f in &frames {
            if let Ok(probe) = dot11::parse(f.link, &f.data) {
                let _ = black_box(g.admit(probe, f.time_ms + round * 1000 * DAY_MS));
            }
        }
    });
    println!("  without IE sig {ns:8.1} ns/frame     {allocs:.3} allocations/frame");

    let mut g = gate();
    let sightings: Vec<Sighting> = frames
        .iter()
        .filter_map(|f| {
            let probe = dot11::parse(f.link, &f.data).ok()?;
            g.admit(probe, f.time_ms).ok()
        })
        .collect();
    // Another plugin (docs/languages.md compares languages this way): PROBEGATE_BENCH_PLUGIN
    // names its component, PROBEGATE_BENCH_CONFIG its config as an inline TOML table.
    let wasm = std::env::var_os("PROBEGATE_BENCH_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/visitor_counter.wasm")
        });
    let plugin_config = std::env::var("PROBEGATE_BENCH_CONFIG")
        .unwrap_or_else(|_| "{ interval_secs = 300 }".into());
    if !wasm.exists() {
        println!("plugin stage     skipped: run `cargo xtask build-plugins` first");
        return;
    }
    let label = wasm.file_name().unwrap_or_default().to_string_lossy();
    let text = format!(
        "[gateway]\nsite = \"bench\"\nid = \"gw\"\n[mqtt]\nhost = \"localhost\"\n[[plugin]]\nname = \"measured\"\npath = \"{}\"\nconfig = {plugin_config}\n",
        wasm.display()
    );
    let config = Config::parse(Path::new("bench.toml"), &text).unwrap();
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let set = PluginSet::load(&config, LoadMode::Strict).unwrap();
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut stage = PluginStage::new(set, Arc::new(Counters::default()));
    let s = sightings.len() as u64;
    let mut outputs = 0;
    let (ns, allocs) = measure(s, |round| {
        // Each round is a later stretch of time, so windows close and ticks fire as live.
        for sighting in &sightings {
            let mut moved = sighting.clone();
            moved.time_ms += round * 1000 * DAY_MS;
            stage.sighting(moved);
        }
        stage.flush();
        let published = stage.drain_outputs().count() as u64;
        if round > 0 {
            outputs += published;
        }
    });
    println!(
        "plugin stage     {ns:8.1} ns/sighting  {allocs:.3} allocations/sighting ({label}, batches of 256, ticks)"
    );
    // Half a round again at an earlier time of the same day: the counter takes these for
    // late sightings and publishes nothing, so what allocates is the host's per-sighting
    // path alone (batching, the per-plugin view, the call into the plugin).
    let day = (ROUNDS + 1) * 1000 * DAY_MS;
    for sighting in &sightings {
        let mut moved = sighting.clone();
        moved.time_ms += day;
        stage.sighting(moved);
    }
    stage.flush();
    stage.drain_outputs().for_each(drop);
    let before = ALLOCATIONS.load(Relaxed);
    for sighting in &sightings[..sightings.len() / 2] {
        let mut moved = sighting.clone();
        moved.time_ms += day;
        stage.sighting(moved);
    }
    stage.flush();
    let published = stage.drain_outputs().count();
    let quiet = ALLOCATIONS.load(Relaxed) - before;
    println!(
        "  of which per published message: {:.1} allocations ({outputs} messages in {} rounds); \
         {quiet} allocations for {} sightings that published {published}",
        (allocs * (s * ROUNDS) as f64) / outputs.max(1) as f64,
        ROUNDS,
        sightings.len() / 2
    );
    println!("plugin load      {load_ms:8.1} ms (compile + instantiate + init)");
    println!(
        "peak RSS         {:8} KiB (before plugin load: {rss_before} KiB)",
        peak_rss_kib()
    );
}
