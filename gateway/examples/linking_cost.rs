//! The occupancy plugin's linking and counting, natively, on a real capture: what a sighting
//! costs (no Wasm, no host) and a digest of every window, so a change to `plugins/linking` can
//! be shown to be faster *and* to count exactly the same.
//!
//! `cargo run --profile bench -p probegate --example linking_cost -- SITE.toml CAPTURE [REPS]`
//!
//! The site's `occupancy` table sets the parameters and grants, as `probegate calibrate` reads
//! them; the pseudonyms are this run's own (random keys), which the counts do not depend on.

use probegate::calibrate;
use probegate::config::Config;
use probegate_linking::Counter;
use std::time::Instant;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [site, capture, rest @ ..] = args.as_slice() else {
        return Err("usage: linking_cost SITE.toml CAPTURE [REPS]".into());
    };
    let reps: usize = rest
        .first()
        .map_or(Ok(5), |r| r.parse())
        .map_err(|e| format!("{e}"))?;
    let config = Config::load(std::path::Path::new(site)).map_err(|e| e.to_string())?;
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name.get_ref() == "occupancy")
        .ok_or("the site has no [[plugin]] named occupancy")?;
    let params = calibrate::count_params(plugin)?;
    let list = calibrate::observations(&config, plugin, std::path::Path::new(capture))?;
    // Past the linker's cap it forgets silent clusters: how much of the day comes after it.
    let mut first_seen = std::collections::HashMap::new();
    for (i, o) in list.iter().enumerate() {
        first_seen.entry((o.epoch, o.device)).or_insert(i);
    }
    let mut order: Vec<usize> = first_seen.values().copied().collect();
    order.sort_unstable();
    let past_cap = order
        .get(probegate_linking::link::MAX_TRACKED)
        .map_or(0, |&i| list.len() - i);
    println!(
        "{} addresses; sightings after the {}th new address: {past_cap}",
        order.len(),
        probegate_linking::link::MAX_TRACKED,
    );
    let mut times = Vec::new();
    let mut digest = String::new();
    for _ in 0..reps {
        let started = Instant::now();
        let mut windows = Vec::new();
        let mut counter = Counter::new(params.clone());
        for o in &list {
            windows.extend(counter.observe(o));
        }
        windows.extend(counter.finish());
        times.push(started.elapsed().as_secs_f64());
        digest = format!(
            "{:016x} ({} windows)",
            fnv(&format!("{windows:?}")),
            windows.len()
        );
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} sightings: median {:.1} ms ({:.0} ns/sighting), min {:.1} ms; windows digest {digest}",
        list.len(),
        times[times.len() / 2] * 1e3,
        times[times.len() / 2] * 1e9 / list.len().max(1) as f64,
        times[0] * 1e3,
    );
    Ok(())
}

/// The plugin's window, room threshold and dwell limits from its config table (defaults as the
/// plugin's).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
