//! The `probegate` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use probegate::capture::PcapSource;
use probegate::config::Config;
use probegate::daemon::{self, RunReport};
use probegate::plugins::{LoadMode, PluginSet};
use probegate::privacy::ConsentKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "probegate",
    version,
    about = "Privacy-respecting footfall sensor with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture live from the monitor-mode interface in the config (the daemon).
    Run {
        #[arg(long, short, default_value = "/etc/probegate/probegate.toml")]
        config: PathBuf,
        /// A service setting over the config's, e.g. `--set gateway.site=store-0042` (from
        /// OpenWrt's UCI): gateway.site, gateway.id, capture.interface, mqtt.host,
        /// mqtt.port, log.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Check a config file and its plugins (each is loaded and initialised, nothing is
    /// captured or published) and exit: 0 if all is well, 2 with the line or plugin at fault.
    CheckConfig {
        config: PathBuf,
        /// As for `run`: checked with these settings over the file's.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Consent ids for the back office: it publishes ids, never MACs.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Plugins: start a project, run one without a broker, and signed bundles (keygen,
    /// build, sign, verify, push, list, remove).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The back office's view: subscribe to the topic tree, validate every payload against
    /// its schema, drop at-least-once repeats, print. Exits non-zero if a payload was invalid.
    #[cfg(feature = "tail")]
    Tail(probegate::tail::TailOptions),
    /// Fit an occupancy plugin to this site (room threshold, people per device, interval)
    /// from captures and a few hand counts; prints its `[[plugin]]` table.
    Calibrate(probegate::calibrate::CalibrateArgs),
    /// Process a recorded capture (pcap file, or `-` for a pcap stream on stdin) as if it were
    /// live, publishing to the configured broker.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        capture: PathBuf,
        /// Print each message as a JSON line (topic, retain, payload) instead of publishing:
        /// no broker is contacted, nothing is written to the site's state.
        #[arg(long)]
        print: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin project (manifest, source, a unit test, README) that builds with
    /// one command outside this repository.
    #[cfg(feature = "authoring")]
    New(probegate::devkit::new::NewArgs),
    /// Run a plugin on a capture or on JSON-lines sightings with the daemon's pipeline,
    /// sandbox and limits, printing each message as a JSON line; no broker. Exits 1 if the
    /// plugin trapped, failed to start or had a publish refused.
    Run(probegate::devkit::run::RunArgs),
    #[command(flatten)]
    Bundle(probegate::bundle::cli::PluginCommand),
}

#[derive(Subcommand)]
enum ConsentCommand {
    /// Print a new site consent key (64 hex digits) for the back office and the gateways.
    Keygen,
    /// Print the consent id of each MAC (aa:bb:cc:dd:ee:ff), one per line, in order.
    Id {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(required = true)]
        macs: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, sets } => check_config(&config, &sets),
        Command::Consent(ConsentCommand::Keygen) => {
            println!("{}", ConsentKey::generate_hex().as_str());
            ExitCode::SUCCESS
        }
        Command::Consent(ConsentCommand::Id { key_file, macs }) => consent_ids(&key_file, &macs),
        Command::Run { config, sets } => serve(&config, &sets, None),
        #[cfg(feature = "authoring")]
        Command::Plugin(PluginCommand::New(args)) => match probegate::devkit::new::create(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Plugin(PluginCommand::Run(args)) => {
            init_logging("info");
            local_report(probegate::devkit::run::plugin_run(&args))
        }
        Command::Plugin(PluginCommand::Bundle(command)) => {
            match probegate::bundle::cli::run(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "tail")]
        Command::Tail(options) => tail(options),
        Command::Calibrate(args) => match probegate::calibrate::calibrate(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Replay {
            config,
            capture,
            print: true,
        } => replay_print(&config, &capture),
        Command::Replay {
            config, capture, ..
        } => serve(&config, &[], Some(&capture)),
    }
}

#[cfg(feature = "tail")]
fn tail(options: probegate::tail::TailOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(probegate::tail::tail(options, &mut stdout)) {
        Ok(report) => {
            eprintln!(
                "tail: {} messages, {} repeats dropped, {} invalid",
                report.printed, report.duplicates, report.invalid
            );
            if report.invalid == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn consent_ids(key_file: &Path, macs: &[String]) -> ExitCode {
    let key = match ConsentKey::load(key_file) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for (i, text) in macs.iter().enumerate() {
        let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        let octets: Option<Vec<u8>> = (hex.len() == 12)
            .then(|| {
                (0..6)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        match octets.and_then(|o| <[u8; 6]>::try_from(o).ok()) {
            Some(mac) => println!("{}", key.id(&mac).to_hex()),
            None => {
                // The argument is the caller's own input; name its position, not its text.
                eprintln!(
                    "error: argument {} is not a MAC address (aa:bb:cc:dd:ee:ff)",
                    i + 1
                );
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

/// The config at `path` with the `--set` settings over it.
fn load_config(path: &Path, sets: &[String]) -> Result<Config, String> {
    let mut config = Config::load(path).map_err(|e| e.to_string())?;
    probegate::overrides::apply(&mut config, sets)?;
    Ok(config)
}

fn check_config(path: &Path, sets: &[String]) -> ExitCode {
    let checked = load_config(path, sets).and_then(|c| {
        // Plugins may log from init; those lines help explain a refusal.
        init_logging(c.log.get_ref());
        daemon::consent(&c).map_err(|e| e.to_string())?;
        probegate::publish::TlsFiles::load(&c).map_err(|e| format!("mqtt.tls: {e}"))?;
        PluginSet::load(&c, LoadMode::Strict).map_err(|e| e.to_string())?;
        Ok(c)
    });
    match checked {
        Ok(c) => {
            let names: Vec<&str> = c.plugins.iter().map(|p| p.name()).collect();
            println!(
                "{}: ok (site {}, gateway {}, plugins: {})",
                path.display(),
                c.site(),
                c.gateway_id(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Exit 0 for a clean run, 1 when a plugin misbehaved, 2 when the run could not start or
/// its input was bad.
fn local_report(report: Result<probegate::devkit::run::LocalReport, String>) -> ExitCode {
    match report {
        Ok(report) => {
            eprintln!("{}", report.summary());
            match (&report.input, report.clean()) {
                (Err(e), _) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
                (Ok(()), true) => ExitCode::SUCCESS,
                (Ok(()), false) => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn replay_print(config_path: &Path, capture: &Path) -> ExitCode {
    use probegate::devkit::run::{Input, run_local};
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.get_ref());
    let stdout = std::io::stdout().lock();
    local_report(
        Input::open(capture)
            .and_then(|input| run_local(&config, LoadMode::Tolerant, input, stdout)),
    )
}

fn serve(config_path: &Path, sets: &[String], capture: Option<&Path>) -> ExitCode {
    let config = match load_config(config_path, sets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.get_ref());
    match serve_config(&config, capture) {
        Ok(report) => {
            // A run whose results did not all reach the broker has not done its job.
            let ok = report.capture.is_ok() && report.session.unacknowledged == 0;
            log_report(&report);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_config(config: &Config, capture: Option<&Path>) -> anyhow::Result<RunReport> {
    let source = match capture {
        Some(path) => PcapSource::open_file(path)?,
        None => {
            let interface = config
                .capture
                .interface
                .as_deref()
                .context("no [capture] interface in the config: name the monitor-mode interface, e.g. interface = \"phy0-mon0\"")?;
            PcapSource::open_live(interface, config.capture.buffer_kib)?
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    install_stop_handler(stop.clone())?;
    Ok(daemon::serve(config, source, stop)?)
}

fn log_report(report: &RunReport) {
    let c = &report.counters;
    tracing::info!(
        boot_id = %report.boot_id,
        frames = c.frames,
        sightings = c.sightings,
        dropped_signal_floor = c.dropped_signal_floor,
        dropped_opted_out = c.dropped_opted_out,
        dropped_malformed = c.dropped_malformed,
        dropped_bad_fcs = c.dropped_bad_fcs,
        dropped_multicast = c.dropped_multicast,
        dropped_backpressure = c.dropped_backpressure,
        dropped_by_filter = c.dropped_by_filter,
        dropped_filter_down = c.dropped_filter_down,
        plugin_calls = c.plugin_calls,
        plugin_traps = c.plugin_traps,
        plugin_start_failures = c.plugin_start_failures,
        plugin_calls_skipped = c.plugin_calls_skipped,
        not_probe_requests = c.not_probe_requests,
        outputs = c.outputs,
        outputs_refused = c.outputs_refused,
        published = report.session.published,
        mqtt_sent = report.session.sent,
        mqtt_acknowledged = report.session.acknowledged,
        mqtt_unacknowledged = report.session.unacknowledged,
        mqtt_dropped = report.session.dropped,
        "probegate stopped"
    );
    if let Err(e) = &report.capture {
        tracing::error!("capture failed: {e}");
    }
}

/// SIGINT/SIGTERM ask for a clean stop: plugins flush, the broker gets everything and a clean
/// "offline" status. A second signal stops at once.
fn install_stop_handler(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                for _ in 0..2 {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if stop.swap(true, Ordering::SeqCst) {
                        std::process::exit(130);
                    }
                    tracing::info!("stop requested; flushing plugins and the broker");
                }
            });
        })?;
    Ok(())
}

/// Logging to stderr, filtered by RUST_LOG if set, else by the config's `log` (checked when
/// the config was read).
fn init_logging(config_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            probegate::config::log_filter(&v).map_err(|e| {
                // Said once, on stderr like any other line: the daemon still starts.
                eprintln!("RUST_LOG ignored: {e}");
            })
        });
    let filter = match from_env {
        Some(Ok(filter)) => filter,
        _ => probegate::config::log_filter(config_level).unwrap_or_else(|_| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::INFO)
        }),
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}
