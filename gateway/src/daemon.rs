//! The daemon's main job, shared by `run` (live radio) and `replay` (recorded capture).

use crate::bundle::install::{self, Installer};
use crate::bundle::{self, chunks};
use crate::capture::{CaptureError, LossStats, PcapSource};
use crate::config::{Config, parse_hh_mm};
use crate::pipeline::{self, Control, PluginMessage, PluginStage};
use crate::plugins::manifest::Capability;
use crate::plugins::{LoadMode, PluginError, PluginSet};
use crate::privacy::consent::{CommandTrust, ConsentError, Report, handle_command};
use crate::privacy::{Consent, ConsentKey, Gate, Registry, RotationSchedule, TimeZone};
use crate::publish::{Identity, Session, SessionReport, TlsFiles, Topics};
use crate::telemetry::{Counters, Snapshot};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error("mqtt.tls: {0}")]
    Tls(std::io::Error),
}

/// What a run did; `capture` holds the error that ended it early, if one did.
#[derive(Debug)]
pub struct RunReport {
    pub counters: Snapshot,
    pub session: SessionReport,
    pub capture: Result<(), CaptureError>,
    pub boot_id: String,
}

/// The document on `.../metrics`.
#[derive(serde::Serialize)]
struct Metrics<'a> {
    v: u8,
    site: &'a str,
    gateway: &'a str,
    boot_id: &'a str,
    wall_ms: u64,
    #[serde(flatten)]
    counters: Snapshot,
    /// Kernel/driver capture loss, for a live capture.
    loss: Option<LossStats>,
}

/// The consent registry the config asks for, if it names a consent key.
pub fn consent(config: &Config) -> Result<Option<Consent>, ConsentError> {
    let Some(key_file) = &config.privacy.consent_key_file else {
        return Ok(None);
    };
    let key = ConsentKey::load(&config.resolve(key_file))?;
    let registry = Registry::open(config.resolve(&config.privacy.consent_registry))?;
    let summary = registry.summary();
    tracing::info!(
        version = summary.version,
        opt_out = summary.opt_out,
        opt_in = summary.opt_in,
        "consent registry loaded"
    );
    Ok(Some(Consent {
        key,
        registry: Arc::new(RwLock::new(registry)),
    }))
}

/// Builds the gate the config describes.
pub fn gate(config: &Config) -> Gate {
    let schedule = RotationSchedule {
        at_minute: parse_hh_mm(config.privacy.rotate_at.get_ref()).unwrap_or(240),
        every_hours: *config.privacy.rotate_every_hours.get_ref(),
        zone: TimeZone::Local,
    };
    let floor = (*config.privacy.signal_floor_dbm.get_ref()).clamp(-127, 0) as i8;
    let signatures = config
        .plugins
        .iter()
        .any(|p| p.granted().contains(&Capability::IeSignature));
    Gate::new(schedule, floor).with_signatures(signatures)
}

/// The bundle installer, when the site takes bundles (a plugin directory or trusted keys).
pub fn installer(config: &Config) -> Option<Installer> {
    let b = &config.bundles;
    if config.plugin_dir.is_none() && b.trusted_keys.is_empty() {
        return None;
    }
    let keys = |list: &[toml::Spanned<String>]| {
        list.iter()
            .filter_map(|k| bundle::signing::public_key(k.get_ref()).ok())
            .collect()
    };
    Some(Installer::start(install::Settings {
        trust: bundle::Trust {
            keys: keys(&b.trusted_keys),
            precompiled: keys(&b.trusted_precompiled_keys),
        },
        site: config.site().to_owned(),
        gateway: config.gateway_id().to_owned(),
        max_bytes: b.max_bytes,
        health: Duration::from_secs(b.health_secs),
        plugin_dir: config.plugin_dir(),
        state_dir: config.resolve(&b.state_dir),
    }))
}

/// Runs the whole pipeline over `source` until it ends or `stop` is set.
pub fn serve(
    config: &Config,
    source: PcapSource,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, DaemonError> {
    // Before the plugins load: an install a crash interrupted is undone first.
    let installer = installer(config);
    let plugins = PluginSet::load(config, LoadMode::Tolerant)?;
    tracing::info!(
        plugins = plugins.runners.len(),
        source = source.name(),
        site = config.site(),
        gateway = config.gateway_id(),
        "probegate starting"
    );
    let counters = Arc::new(Counters::default());
    let identity = Identity::new(config.site(), config.gateway_id());
    let boot_id = identity.boot_id.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;

    let tls = TlsFiles::load(config).map_err(DaemonError::Tls)?;
    let (event_tx, event_rx) =
        std::sync::mpsc::sync_channel(pipeline::channel_depth(source.is_recording()));
    let (output_tx, output_rx) = tokio::sync::mpsc::channel(256);
    // Control messages for plugins: few, small, and worth dropping rather than blocking MQTT.
    let (message_tx, message_rx) = std::sync::mpsc::sync_channel(64);
    let mut gate = gate(config);
    let registry = match consent(config)? {
        Some(consent) => {
            let registry = consent.registry.clone();
            gate = gate.with_consent(consent);
            Some(registry)
        }
        None => None,
    };

    let takes_bundles = installer.is_some();
    let recording = source.is_recording();
    let loss = Arc::new(Mutex::new(None));
    let capture = {
        let (counters, stop, loss) = (counters.clone(), stop.clone(), loss.clone());
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || pipeline::run_capture(source, gate, &counters, event_tx, &stop, &loss))
            .map_err(DaemonError::Runtime)?
    };
    let plugin_thread = {
        let mut stage = PluginStage::new(plugins, counters.clone());
        if !recording {
            stage = stage.with_latency_bound(pipeline::LATENCY_BOUND);
        }
        if let Some(registry) = &registry {
            stage = stage.with_consent(registry.clone());
        }
        if let Some(installer) = installer {
            stage = stage.with_installer(installer);
        }
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("plugins".into())
            .spawn(move || pipeline::run_plugins(stage, event_rx, message_rx, output_tx, &stop))
            .map_err(DaemonError::Runtime)?
    };

    let session = runtime.block_on(async {
        let topics = Topics::new(&identity);
        let mut subscribe = topics.plugin_commands(&identity);
        if registry.is_some() {
            subscribe.extend(topics.consent_commands(&identity));
        }
        let bundle_bases: Vec<String> = match takes_bundles {
            true => chunks::subscriptions(&identity.site, &identity.gateway),
            false => Vec::new(),
        };
        subscribe.extend(bundle_bases.iter().cloned());
        let bundle_bases: Vec<String> = bundle_bases
            .iter()
            .map(|b| b.trim_end_matches("/#").to_owned())
            .collect();
        let mut assembler = chunks::Assembler::new(config.bundles.max_bytes);
        let command_identity = identity.clone();
        let metrics_identity = identity.clone();
        let spool_dir = config.resolve(&config.mqtt.outbox_spool_dir);
        let mut session = Session::start(&config.mqtt, identity, subscribe, tls, Some(&spool_dir));
        let summary_topic = topics.consent_summary();
        let trust = CommandTrust {
            site: config.site().to_owned(),
            keys: config
                .privacy
                .consent_trusted_keys
                .iter()
                .filter_map(|k| bundle::signing::public_key(k.get_ref()).ok())
                .collect(),
        };
        let report = |registry: &RwLock<Registry>, payload: Option<&[u8]>| {
            let report = match payload {
                Some(payload) => handle_command(registry, payload, &trust),
                None => Report {
                    summary: registry.read().map(|r| r.summary()).unwrap_or_default(),
                    last_error: None,
                },
            };
            (
                summary_topic.clone(),
                serde_json::to_vec(&report).expect("report serialises"),
            )
        };
        if let Some(registry) = &registry {
            let (topic, body) = report(registry, None);
            session.publish_retained(topic, body).await;
        }
        let metrics = || {
            let doc = Metrics {
                v: 1,
                site: &metrics_identity.site,
                gateway: &metrics_identity.gateway,
                boot_id: &metrics_identity.boot_id,
                wall_ms: crate::pipeline::wall_ms(),
                counters: counters.snapshot(),
                loss: *loss.lock().unwrap_or_else(|e| e.into_inner()),
            };
            serde_json::to_vec(&doc).expect("metrics serialise")
        };
        session
            .run(
                output_rx,
                |topic, payload| {
                    if let Some((plugin, sub)) =
                        topics.parse_plugin_command(&command_identity, topic)
                    {
                        let message = Control::Message(PluginMessage {
                            plugin: plugin.to_owned(),
                            topic: sub.to_owned(),
                            payload: payload.to_vec(),
                        });
                        if message_tx.try_send(message).is_err() {
                            tracing::warn!(plugin = %crate::untrusted::Escaped::new(plugin), "plugin message dropped: too many queued");
                        }
                        return None;
                    }
                    if let Some((push_id, index, count)) = chunks::parse_topic(topic, &bundle_bases)
                    {
                        let push_id = push_id.to_owned();
                        let control = match assembler.add(&push_id, index, count, payload) {
                            chunks::Assembled::Incomplete => return None,
                            chunks::Assembled::Done(bytes) => Control::Bundle { push_id, bytes },
                            chunks::Assembled::Oversize => Control::Oversize { push_id },
                        };
                        if message_tx.send(control).is_err() {
                            tracing::warn!("bundle dropped: the plugin stage is gone");
                        }
                        return None;
                    }
                    registry.as_ref().map(|r| report(r, Some(payload)))
                },
                Duration::from_secs(config.mqtt.metrics_interval_secs.max(1)),
                metrics,
            )
            .await;
        session
            .close(Duration::from_secs(config.mqtt.close_grace_secs))
            .await
    });
    let _ = plugin_thread.join();
    // A stop signal can find the capture thread blocked reading a pipe; it holds nothing that
    // needs saving, so it is left to end with the process.
    let capture = if capture.is_finished() || !stop.load(Ordering::Relaxed) {
        capture.join().unwrap_or(Ok(()))
    } else {
        Ok(())
    };
    Ok(RunReport {
        counters: counters.snapshot(),
        session,
        capture,
        boot_id,
    })
}
