//! A plugin run without a broker: the daemon's own pipeline (capture → parser → privacy gate
//! → plugin stage, with the same sandbox and limits) whose outputs are printed as JSON lines
//! instead of being published. `probegate plugin run` runs one component on a capture or on
//! hand-written sightings; `probegate replay --print` runs a whole site config.

use crate::capture::PcapSource;
use crate::config::{Config, PluginConfig};
use crate::daemon;
use crate::pipeline::{self, Event, PluginStage};
use crate::plugins::manifest::Manifest;
use crate::plugins::{LoadMode, Output, OutputKind, PluginSet};
use crate::publish::{Envelope, Identity, Topics};
use crate::telemetry::{Counters, Snapshot};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use toml::Spanned;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The plugin component (.wasm), with its manifest `<stem>.toml` beside it.
    pub wasm: PathBuf,
    /// A capture (pcap with radiotap or 802.11 headers; `-` reads one from stdin), or
    /// sightings as JSON lines, one object a line: {"device": 1, "time_ms": 1697803200000,
    /// "signal_dbm": -60, ...} (see plugins/README.md).
    #[arg(long)]
    pub input: PathBuf,
    /// The plugin's config: a JSON object, or a file holding one (.json) or a TOML table
    /// (.toml). Default: {}.
    #[arg(long)]
    pub config: Option<String>,
    /// A site config whose gateway names, privacy settings (signal floor, min_cell, key
    /// rotation) and limits apply; its plugins are ignored. Default: the production defaults,
    /// as site "dev", gateway "local".
    #[arg(long)]
    pub site: Option<PathBuf>,
}

/// What a local run did.
#[derive(Debug)]
pub struct LocalReport {
    pub counters: Snapshot,
    /// Messages printed: plugin publishes and the host's status reports.
    pub printed: u64,
    /// Plugin status reports other than "running" (a failed start, a trap).
    pub failures: u64,
    /// The input's error, if one ended the run early.
    pub input: Result<(), String>,
}

impl LocalReport {
    /// A run is clean when the whole input was read and no plugin trapped, failed to start
    /// or had a publish refused: on a router, any of these rolls a new bundle back.
    pub fn clean(&self) -> bool {
        let c = &self.counters;
        self.input.is_ok()
            && self.failures == 0
            && c.plugin_traps == 0
            && c.outputs_refused == 0
            && c.plugin_start_failures == 0
    }

    pub fn summary(&self) -> String {
        let c = &self.counters;
        format!(
            "{} frames, {} sightings, {} plugin calls, {} traps, {} publishes refused, {} messages printed",
            c.frames, c.sightings, c.plugin_calls, c.plugin_traps, c.outputs_refused, self.printed
        )
    }
}

/// Where a run's sightings come from.
pub enum Input {
    /// Frames through the parser and the privacy gate, as on a router.
    Capture(PcapSource),
    /// Sightings as the gate would hand them on (JSON lines), named for messages.
    Sightings(String, Box<dyn BufRead + Send>),
}

impl Input {
    /// A pcap file (`-`: a pcap stream on stdin), or JSON lines, told apart by their first
    /// bytes.
    pub fn open(path: &Path) -> Result<Input, String> {
        if path == Path::new("-") {
            return PcapSource::open_file(path)
                .map(Input::Capture)
                .map_err(|e| e.to_string());
        }
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let head = reader
            .fill_buf()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if is_pcap(head) {
            return PcapSource::open_file(path)
                .map(Input::Capture)
                .map_err(|e| e.to_string());
        }
        Ok(Input::Sightings(
            path.display().to_string(),
            Box::new(reader),
        ))
    }
}

/// pcap (both byte orders, micro- and nanosecond) and pcapng magic numbers.
fn is_pcap(head: &[u8]) -> bool {
    const MAGICS: [[u8; 4]; 5] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
        [0x0a, 0x0d, 0x0d, 0x0a],
    ];
    head.len() >= 4 && MAGICS.iter().any(|m| head[..4] == *m)
}

/// The site `plugin run` uses without `--site`: production defaults. The broker is never
/// contacted.
const DEFAULT_SITE: &str =
    "[gateway]\nsite = \"dev\"\nid = \"local\"\n\n[mqtt]\nhost = \"localhost\"\n";

/// The config `plugin run` runs: the site's settings with this one plugin, granted what its
/// manifest asks for (a router's site config must grant the same: see `allow`).
pub fn plugin_config(args: &RunArgs) -> Result<Config, String> {
    let mut config = match &args.site {
        Some(site) => Config::load(site).map_err(|e| e.to_string())?,
        None => {
            Config::parse(Path::new("plugin-run.toml"), DEFAULT_SITE).map_err(|e| e.to_string())?
        }
    };
    let wasm =
        std::path::absolute(&args.wasm).map_err(|e| format!("{}: {e}", args.wasm.display()))?;
    if !wasm.exists() {
        return Err(format!("{}: no such file", wasm.display()));
    }
    let manifest = Manifest::load(&wasm).map_err(|e| e.to_string())?;
    let table = match &args.config {
        Some(text) => Some(plugin_table(text)?),
        None => None,
    };
    let granted = manifest
        .capabilities
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    config.plugins = vec![PluginConfig {
        name: Spanned::new(0..0, manifest.name.clone()),
        path: Some(wasm),
        config: table,
        limits: None,
        allow: Some(Spanned::new(0..0, granted)),
    }];
    // Only this plugin, and nothing that writes to the site's state: no bundles, no consent
    // registry (JSON sightings carry their own consent tokens).
    config.plugin_dir = None;
    config.bundles = Default::default();
    config.privacy.consent_key_file = None;
    Ok(config)
}

/// `--config`: inline JSON, or a .json or .toml file.
fn plugin_table(text: &str) -> Result<toml::Table, String> {
    let trimmed = text.trim_start();
    let json: serde_json::Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("--config: not a JSON object: {e}"))?
    } else {
        let path = Path::new(text);
        let body = std::fs::read_to_string(path).map_err(|e| format!("--config {text}: {e}"))?;
        if path.extension().is_some_and(|e| e == "toml") {
            let table: toml::Table =
                toml::from_str(&body).map_err(|e| format!("{text}: {}", e.message().trim()))?;
            return Ok(table);
        }
        serde_json::from_str(&body).map_err(|e| format!("{text}: not JSON: {e}"))?
    };
    if !json.is_object() {
        return Err("--config must be a JSON object, like the [[plugin]] config table".into());
    }
    // The same route a site config's table takes, in reverse: what TOML cannot hold (null)
    // could not be configured on a router either.
    serde_json::from_value(json).map_err(|e| {
        format!("--config: {e} (a site config is TOML: it has no null, so neither does this)")
    })
}

/// Prints outputs as the MQTT publisher would publish them: one JSON object a line with the
/// topic, the retain flag and the enveloped payload.
struct Printer<W: Write> {
    identity: Identity,
    topics: Topics,
    seq: u64,
    out: W,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    topic: &'a str,
    retain: bool,
    payload: &'a Envelope<'a>,
}

impl<W: Write> Printer<W> {
    fn print(&mut self, o: &Output) -> std::io::Result<()> {
        self.seq += 1;
        let (topic, retain) = self.topics.for_output(o);
        let envelope = Envelope::wrap(&self.identity, self.seq, o);
        let line = Line {
            topic: &topic,
            retain,
            payload: &envelope,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Runs `config`'s plugins over `input` with the daemon's pipeline and prints every output.
/// `mode`: [`LoadMode::Strict`] refuses to start when a plugin cannot load or initialise.
pub fn run_local(
    config: &Config,
    mode: LoadMode,
    input: Input,
    out: impl Write,
) -> Result<LocalReport, String> {
    let plugins = PluginSet::load(config, mode).map_err(|e| e.to_string())?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    // As the daemon sizes it: a file's events are chunks, and 4,096 of them (16 MB of
    // backlog while the plugins are the slower side) tripled `replay --print`'s peak RSS.
    let recording = matches!(&input, Input::Capture(source) if source.is_recording());
    let (event_tx, event_rx) =
        std::sync::mpsc::sync_channel::<Event>(pipeline::channel_depth(recording));
    let (output_tx, mut output_rx) = tokio::sync::mpsc::channel(256);
    let (_message_tx, message_rx) = std::sync::mpsc::sync_channel(1);
    let consent = daemon::consent(config).map_err(|e| e.to_string())?;
    let registry = consent.as_ref().map(|c| c.registry.clone());

    let feeder = {
        let (counters, stop) = (counters.clone(), stop.clone());
        let mut gate = daemon::gate(config);
        if let Some(consent) = consent {
            gate = gate.with_consent(consent);
        }
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || match input {
                Input::Capture(source) => {
                    let loss = Mutex::new(None);
                    pipeline::run_capture(source, gate, &counters, event_tx, &stop, &loss)
                        .map_err(|e| e.to_string())
                }
                Input::Sightings(name, reader) => super::sightings::feed(&name, reader, event_tx),
            })
            .map_err(|e| e.to_string())?
    };
    let stage_thread = {
        let mut stage = PluginStage::new(plugins, counters.clone());
        if let Some(registry) = registry {
            stage = stage.with_consent(registry);
        }
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("plugins".into())
            .spawn(move || pipeline::run_plugins(stage, event_rx, message_rx, output_tx, &stop))
            .map_err(|e| e.to_string())?
    };

    let identity = Identity::new(config.site(), config.gateway_id());
    let mut printer = Printer {
        topics: Topics::new(&identity),
        identity,
        seq: 0,
        out,
    };
    let mut failures = 0;
    let mut write_error = None;
    while let Some(output) = output_rx.blocking_recv() {
        if output.kind == OutputKind::PluginStatus && !output.payload.get().contains("\"running\"")
        {
            failures += 1;
        }
        if let Err(e) = printer.print(&output) {
            // A closed pipe (`| head`) ends the run; the stages see the channel close.
            write_error = Some(e);
            stop.store(true, Ordering::SeqCst);
            break;
        }
    }
    drop(output_rx);
    let _ = stage_thread.join();
    let input = feeder
        .join()
        .unwrap_or_else(|_| Err("the input thread panicked".into()));
    if let Some(e) = write_error.filter(|e| e.kind() != std::io::ErrorKind::BrokenPipe) {
        return Err(format!("cannot write the output: {e}"));
    }
    Ok(LocalReport {
        counters: counters.snapshot(),
        printed: printer.seq,
        failures,
        input,
    })
}

/// `probegate plugin run`.
pub fn plugin_run(args: &RunArgs) -> Result<LocalReport, String> {
    let config = plugin_config(args)?;
    let input = Input::open(&args.input)?;
    run_local(&config, LoadMode::Strict, input, std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_files_are_told_from_json_lines_by_their_magic() {
        assert!(is_pcap(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]));
        assert!(is_pcap(&[0x0a, 0x0d, 0x0d, 0x0a]));
        assert!(!is_pcap(b"{\"device\":1}"));
        assert!(!is_pcap(b"{"));
    }

    #[test]
    fn a_plugin_config_is_a_json_object_without_null() {
        let t = plugin_table(r#"{"interval_secs": 300, "visits": {"enter_dbm": -70}}"#).unwrap();
        assert_eq!(t["interval_secs"].as_integer(), Some(300));
        assert!(plugin_table("[1]").is_err());
        let e = plugin_table(r#"{"a": null}"#).unwrap_err();
        assert!(e.contains("null"), "{e}");
    }
}
