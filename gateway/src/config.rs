//! The site config: one TOML file, checked completely before the daemon acts on it.
//!
//! Every error names the file, line and column, and the key when there is one, so store IT can
//! fix it from `logread` alone.

pub use crate::plugins::manifest::Capability;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A config problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this router is: part of every MQTT topic and message.
    pub gateway: GatewayConfig,
    /// Where probe requests come from (the `replay` command overrides it).
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Pseudonym keys and what is dropped before hashing.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// The back office's broker.
    pub mqtt: MqttConfig,
    /// Limits that apply to every plugin.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The plugins to run, in order.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// A directory of plugins (`<name>.wasm` with its manifest `<name>.toml`): every one in it
    /// runs, and adding, replacing or removing a file there (re)loads or stops that plugin.
    /// A [[plugin]] table without `path` configures the plugin `<name>.wasm` found here; one
    /// without a table runs under its file name with config `{}` and the default grant.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// Signed plugin bundles pushed by the retailer (see docs/bundles.md).
    #[serde(default)]
    pub bundles: BundlesConfig,
    /// Log verbosity, e.g. "info" or "info,probegate=debug" (overridden by RUST_LOG).
    #[serde(default = "default_log")]
    pub log: Spanned<String>,
    /// The directory of the config file: relative plugin paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The store, e.g. "store-0042": the second level of the topic tree.
    pub site: Spanned<String>,
    /// This router within the store, e.g. "gw-1".
    pub id: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlesConfig {
    /// minisign public keys (the base64 line of a `.pub` file) whose signed bundles this
    /// gateway installs. Empty: no bundle is ever installed.
    #[serde(default)]
    pub trusted_keys: Vec<Spanned<String>>,
    /// Keys also trusted to ship precompiled code (which skips wasm validation on load).
    #[serde(default)]
    pub trusted_precompiled_keys: Vec<Spanned<String>>,
    /// Largest bundle accepted, bytes.
    #[serde(default = "default_bundle_bytes")]
    pub max_bytes: usize,
    /// How long a new version must run without a trap or limit breach before it is kept.
    #[serde(default = "default_health_secs")]
    pub health_secs: u64,
    /// Where the installed set, the journal and the previous versions live (on flash).
    #[serde(default = "default_bundle_state")]
    pub state_dir: PathBuf,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            trusted_keys: Vec::new(),
            trusted_precompiled_keys: Vec::new(),
            max_bytes: default_bundle_bytes(),
            health_secs: default_health_secs(),
            state_dir: default_bundle_state(),
        }
    }
}

fn default_bundle_bytes() -> usize {
    4 << 20
}
fn default_health_secs() -> u64 {
    60
}
fn default_bundle_state() -> PathBuf {
    "bundles".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Monitor-mode interface to capture on, e.g. "phy0-mon0".
    pub interface: Option<String>,
    /// Kernel capture buffer in KiB: bursts larger than this are lost (and counted).
    #[serde(default = "default_buffer_kib")]
    pub buffer_kib: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Devices received weaker than this (dBm) are dropped before hashing: they are outside
    /// the store, and not counting them is both more accurate and more private.
    #[serde(default = "spanned_floor")]
    pub signal_floor_dbm: Spanned<i32>,
    /// Local time of day ("HH:MM") at which pseudonym keys rotate.
    #[serde(default = "spanned_rotate_at")]
    pub rotate_at: Spanned<String>,
    /// Rotate this often, in hours, counting from `rotate_at`: 1 to 24 (never longer).
    #[serde(default = "spanned_rotate_hours")]
    pub rotate_every_hours: Spanned<u32>,
    /// The site's consent key (64 hex digits), shared with the back office. Without it the
    /// gateway accepts no consent commands and applies no consent registry.
    #[serde(default)]
    pub consent_key_file: Option<PathBuf>,
    /// Where the consent registry (keyed ids only, never MACs) persists across restarts.
    #[serde(default = "default_consent_registry")]
    pub consent_registry: PathBuf,
    /// Minisign public keys (base64 lines) of the back office: with any, only consent
    /// commands signed by one of them, for this site, with a rising sequence, are applied.
    #[serde(default)]
    pub consent_trusted_keys: Vec<Spanned<String>>,
    /// Counts above 0 and below this in a plugin's aggregate streams are published as `null`,
    /// so no group this small can be singled out. 1 turns that off; the rest of the guard stays.
    #[serde(default = "spanned_min_cell")]
    pub min_cell: Spanned<u32>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            signal_floor_dbm: spanned_floor(),
            rotate_at: spanned_rotate_at(),
            rotate_every_hours: spanned_rotate_hours(),
            consent_key_file: None,
            consent_registry: default_consent_registry(),
            consent_trusted_keys: Vec::new(),
            min_cell: spanned_min_cell(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Defaults to "probegate-{site}-{id}"; must be unique per broker.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// MQTT version: "auto" (5 where the broker takes it, else 3.1.1), "5" or "3.1.1".
    #[serde(default)]
    pub protocol: crate::publish::MqttProtocol,
    /// How long the broker keeps this gateway's session (its subscriptions, and the commands
    /// and bundles sent to it meanwhile) while it is offline, seconds; 0 = a clean session
    /// at every connect. MQTT 3.1.1 has no expiry: any value above 0 asks for a persistent
    /// session, which the broker keeps as long as it is configured to.
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
    /// Messages kept in RAM until the broker acknowledges them. A longer outage drops the
    /// oldest plugin messages and publishes a gap record naming their sequence numbers.
    #[serde(default = "default_outbox_max_messages")]
    pub outbox_max_messages: usize,
    /// Which plugin message a full outbox drops: "oldest" (keep the latest data) or "newest"
    /// (keep the history up to the outage).
    #[serde(default)]
    pub outbox_drop: crate::publish::outbox::DropPolicy,
    /// Which plugin streams a full outbox gives up first: "plugin/stream" = "low", "normal"
    /// (the default) or "high". The lowest class present loses messages first.
    #[serde(default)]
    pub drop_priority:
        std::collections::BTreeMap<Spanned<String>, crate::publish::outbox::Priority>,
    /// Reconnect back-off: first wait and ceiling, in milliseconds; it doubles in between.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Where the outbox copies messages to flash during a long outage and at a stop with
    /// messages unacknowledged; a restart sends them. Relative to the config file.
    #[serde(default = "default_spool_dir")]
    pub outbox_spool_dir: PathBuf,
    /// Seconds of outage before the outbox starts copying to flash (flash wears out).
    #[serde(default = "default_spool_after")]
    pub outbox_spool_after_secs: u64,
    /// Messages per spool segment: each segment is one file written whole.
    #[serde(default = "default_segment_messages")]
    pub outbox_segment_messages: usize,
    /// Seconds between gateway metrics messages on `.../metrics`.
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval_secs: u64,
    /// How long a stopping daemon waits for the broker to acknowledge what it sent, seconds.
    #[serde(default = "default_close_grace")]
    pub close_grace_secs: u64,
    /// TLS to the broker; without this table the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl MqttConfig {
    /// `plugins`: the configured plugin names, so a misspelt one in `drop_priority` is an
    /// error, not a priority that silently never applies.
    fn validate(&self, plugins: &std::collections::HashSet<&str>) -> Result<(), Invalid> {
        for key in self.drop_priority.keys() {
            let valid = key
                .get_ref()
                .split_once('/')
                .filter(|(plugin, stream)| is_valid_name(plugin) && is_valid_name(stream));
            let Some((plugin, _)) = valid else {
                return Err(Invalid::at(
                    key,
                    "mqtt.drop_priority keys are \"plugin/stream\", each 1-32 characters of a-z, 0-9, '-' or '_'",
                ));
            };
            if !plugins.contains(plugin) {
                return Err(Invalid::at(
                    key,
                    format!("mqtt.drop_priority: no [[plugin]] is named \"{plugin}\""),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate gateways by certificate.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wasm fuel (roughly instructions) one plugin call may use before it is stopped.
    #[serde(default = "default_fuel")]
    pub fuel_per_call: u64,
    /// Linear memory one plugin may grow to, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Largest JSON payload one publish may carry, in bytes (at most 131072, so a message
    /// with its envelope always fits the MQTT packet limit).
    #[serde(default = "spanned_output_bytes")]
    pub max_output_bytes: Spanned<u32>,
    /// Most publishes one plugin call may make.
    #[serde(default = "default_outputs_per_call")]
    pub max_outputs_per_call: u32,
    /// Most publishes to one stream per minute of pipeline time (bursts up to this many).
    #[serde(default = "default_outputs_per_stream_per_minute")]
    pub max_outputs_per_stream_per_minute: u32,
    /// Most publishes one plugin may make per minute of pipeline time across all its
    /// streams (bursts up to this many), so many streams buy no more room than one.
    #[serde(default = "default_outputs_per_minute")]
    pub max_outputs_per_minute: u32,
    /// Most payload bytes one plugin may publish per minute of pipeline time, all streams
    /// together (at least `max_output_bytes`).
    #[serde(default = "spanned_output_bytes_per_minute")]
    pub max_output_bytes_per_minute: Spanned<u32>,
    /// Most log lines one plugin may write per minute (wall time, bursts up to this many);
    /// the next line after a pause says how many were suppressed.
    #[serde(default = "default_log_lines_per_minute")]
    pub log_lines_per_minute: u32,
    /// Bytes of key-value state (keys and values) one plugin may hold.
    #[serde(default = "default_state_bytes")]
    pub state_bytes: u32,
    /// Core wasm instances, tables and memories one plugin's component may create, unless
    /// its [[plugin]] table says otherwise. A Rust or C plugin needs a few instances, one
    /// memory; components with a language runtime (Python, JavaScript) need more.
    #[serde(default = "default_instances")]
    pub instances: Spanned<u32>,
    #[serde(default = "default_tables")]
    pub tables: Spanned<u32>,
    #[serde(default = "default_memories")]
    pub memories: Spanned<u32>,
    /// The most a [[plugin]] table may grant of each (`limits = { instances = 40 }`).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    #[serde(default = "default_max_tables")]
    pub max_tables: u32,
    #[serde(default = "default_max_memories")]
    pub max_memories: u32,
    /// Load plugin files precompiled off the router (`probegate plugin precompile`). Their
    /// code is not validated when loaded, so this trusts whoever can write any plugin path.
    #[serde(default)]
    pub trust_precompiled: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            fuel_per_call: default_fuel(),
            memory_mib: default_memory_mib(),
            max_output_bytes: spanned_output_bytes(),
            max_outputs_per_call: default_outputs_per_call(),
            max_outputs_per_stream_per_minute: default_outputs_per_stream_per_minute(),
            max_outputs_per_minute: default_outputs_per_minute(),
            max_output_bytes_per_minute: spanned_output_bytes_per_minute(),
            log_lines_per_minute: default_log_lines_per_minute(),
            state_bytes: default_state_bytes(),
            instances: default_instances(),
            tables: default_tables(),
            memories: default_memories(),
            max_instances: default_max_instances(),
            max_tables: default_max_tables(),
            max_memories: default_max_memories(),
            trust_precompiled: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name: its MQTT namespace and pseudonym space. `a-z0-9-_`, at most 32.
    pub name: Spanned<String>,
    /// The component file (.wasm), relative to the config file's directory; without it,
    /// `<plugin_dir>/<name>.wasm`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Handed to the plugin's `init` as a JSON object.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Capabilities this site grants the plugin; a plugin whose manifest asks for more is not
    /// loaded. Default: `["signal", "frequency"]`.
    #[serde(default)]
    pub allow: Option<Spanned<Vec<String>>>,
    /// This plugin's own instance, table and memory counts, up to `[limits]`'s `max_*`.
    #[serde(default)]
    pub limits: Option<PluginLimitsConfig>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PluginLimitsConfig {
    /// Core wasm instances the component may create (default `[limits] instances`).
    pub instances: Option<Spanned<u32>>,
    /// Tables (default `[limits] tables`).
    pub tables: Option<Spanned<u32>>,
    /// Linear memories (default `[limits] memories`).
    pub memories: Option<Spanned<u32>>,
}

fn default_session_expiry() -> u32 {
    // A week: a store's uplink down over a long weekend still gets its commands.
    7 * 24 * 3600
}
fn default_log() -> Spanned<String> {
    Spanned::new(0..0, "info".into())
}

/// Parses a log filter: comma-separated `level` or `target=level` directives, the part of
/// RUST_LOG's syntax that does not need regular expressions (which would be 0.15 MB on the
/// router).
pub fn log_filter(text: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    use tracing::level_filters::LevelFilter;
    let explain = |what: &str| {
        format!(
            "{what}: a log filter is comma-separated levels (off, error, warn, info, debug, \
             trace) or target=level, e.g. \"info,probegate=debug\""
        )
    };
    // A bare word that is no level would be taken as a target to log at trace level: a
    // misspelt "debug" must be an error instead.
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if level.parse::<LevelFilter>().is_err() {
            return Err(explain(&format!("{level:?} is not a level")));
        }
    }
    text.parse::<tracing_subscriber::filter::Targets>()
        .map_err(|e| explain(&e.to_string()))
}
fn default_buffer_kib() -> u32 {
    2048
}
// Defaults are valid by construction, so their (empty) span is never shown in an error.
fn spanned_floor() -> Spanned<i32> {
    Spanned::new(0..0, -90)
}
fn spanned_rotate_at() -> Spanned<String> {
    Spanned::new(0..0, "04:00".into())
}
fn spanned_rotate_hours() -> Spanned<u32> {
    Spanned::new(0..0, 24)
}
fn default_consent_registry() -> PathBuf {
    "consent.json".into()
}
fn default_port() -> u16 {
    1883
}
fn default_reconnect_min_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_spool_dir() -> PathBuf {
    "spool".into()
}
fn default_spool_after() -> u64 {
    300
}
fn default_segment_messages() -> usize {
    500
}
fn default_metrics_interval() -> u64 {
    60
}
fn default_close_grace() -> u64 {
    15
}
fn default_outbox_max_messages() -> usize {
    10_000
}
fn default_keep_alive() -> u64 {
    30
}
fn default_fuel() -> u64 {
    50_000_000
}
fn default_memory_mib() -> u32 {
    32
}
fn spanned_output_bytes() -> Spanned<u32> {
    Spanned::new(0..0, 16 * 1024)
}

/// The largest plugin payload allowed; the MQTT client's packet limit leaves room for the
/// envelope on top (see publish::session).
pub const MAX_OUTPUT_BYTES: u32 = 128 * 1024;
fn default_outputs_per_call() -> u32 {
    64
}
fn default_outputs_per_stream_per_minute() -> u32 {
    120
}
fn default_outputs_per_minute() -> u32 {
    240
}
fn spanned_output_bytes_per_minute() -> Spanned<u32> {
    Spanned::new(0..0, 1 << 20)
}
fn default_log_lines_per_minute() -> u32 {
    60
}
fn default_instances() -> Spanned<u32> {
    Spanned::new(0..0, 16)
}
fn default_tables() -> Spanned<u32> {
    Spanned::new(0..0, 16)
}
fn default_memories() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn default_max_instances() -> u32 {
    64
}
fn default_max_tables() -> u32 {
    64
}
fn default_max_memories() -> u32 {
    4
}
fn default_state_bytes() -> u32 {
    64 * 1024
}
fn spanned_min_cell() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

/// A name that is safe as one MQTT topic level and one log field.
pub fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`, read from `path` (used in messages and for relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let locate = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let mut config: Config =
            toml::from_str(text).map_err(|e| locate(e.span(), e.message().trim().to_owned()))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config
            .validate()
            .map_err(|Invalid { span, message }| locate(Some(span), message))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Invalid> {
        if let Err(e) = log_filter(self.log.get_ref()) {
            return Err(Invalid::at(&self.log, format!("log: {e}")));
        }
        check_name("gateway.site", &self.gateway.site)?;
        check_name("gateway.id", &self.gateway.id)?;
        if self.gateway.id.get_ref() == "cmd" {
            // `probegate/v1/{site}/cmd/...` is the site's command tree.
            return Err(Invalid::at(
                &self.gateway.id,
                "gateway.id \"cmd\" is reserved",
            ));
        }
        let p = &self.privacy;
        let floor = *p.signal_floor_dbm.get_ref();
        if !(-127..=0).contains(&floor) {
            return Err(Invalid::at(
                &p.signal_floor_dbm,
                "privacy.signal_floor_dbm must be between -127 and 0",
            ));
        }
        let hours = *p.rotate_every_hours.get_ref();
        if !(1..=24).contains(&hours) || 24 % hours != 0 {
            return Err(Invalid::at(
                &p.rotate_every_hours,
                "privacy.rotate_every_hours must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24): keys may never live longer than a day",
            ));
        }
        if parse_hh_mm(p.rotate_at.get_ref()).is_none() {
            return Err(Invalid::at(
                &p.rotate_at,
                "privacy.rotate_at must be a local time \"HH:MM\"",
            ));
        }
        let out = &self.limits.max_output_bytes;
        if !(1..=MAX_OUTPUT_BYTES).contains(out.get_ref()) {
            return Err(Invalid::at(
                out,
                format!("limits.max_output_bytes must be between 1 and {MAX_OUTPUT_BYTES}"),
            ));
        }
        let l = &self.limits;
        let per_minute = &l.max_output_bytes_per_minute;
        if per_minute.get_ref() < out.get_ref() {
            return Err(Invalid::at(
                per_minute,
                "limits.max_output_bytes_per_minute must be at least limits.max_output_bytes, or no message of the largest size could ever be published",
            ));
        }
        for (key, value, max) in [
            ("instances", &l.instances, l.max_instances),
            ("tables", &l.tables, l.max_tables),
            ("memories", &l.memories, l.max_memories),
        ] {
            check_count(&format!("limits.{key}"), value, max, &format!("max_{key}"))?;
        }
        for key in &self.privacy.consent_trusted_keys {
            if let Err(e) = crate::bundle::signing::public_key(key.get_ref()) {
                return Err(Invalid::at(
                    key,
                    format!("privacy.consent_trusted_keys: {e}"),
                ));
            }
        }
        let b = &self.bundles;
        for key in b.trusted_keys.iter().chain(&b.trusted_precompiled_keys) {
            if let Err(e) = crate::bundle::signing::public_key(key.get_ref()) {
                return Err(Invalid::at(key, format!("bundles: {e}")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for plugin in &self.plugins {
            check_name("plugin.name", &plugin.name)?;
            if plugin.path.is_none() && self.plugin_dir.is_none() {
                return Err(Invalid::at(
                    &plugin.name,
                    "this plugin has no `path`, and the config names no `plugin_dir` to find it in",
                ));
            }
            if let Some(allow) = &plugin.allow {
                for cap in allow.get_ref() {
                    if cap.parse::<Capability>().is_err() {
                        return Err(Invalid::at(
                            allow,
                            format!(
                                "plugin.allow: unknown capability {cap:?} (known: {})",
                                Capability::ALL.map(|c| c.as_str()).join(", ")
                            ),
                        ));
                    }
                }
            }
            if let Some(own) = &plugin.limits {
                for (key, value, max) in [
                    ("instances", &own.instances, l.max_instances),
                    ("tables", &own.tables, l.max_tables),
                    ("memories", &own.memories, l.max_memories),
                ] {
                    if let Some(value) = value {
                        check_count(
                            &format!("plugin.limits.{key}"),
                            value,
                            max,
                            &format!("[limits] max_{key}"),
                        )?;
                    }
                }
            }
            if !seen.insert(plugin.name.get_ref().as_str()) {
                return Err(Invalid::at(&plugin.name, "two plugins share this name"));
            }
        }
        self.mqtt.validate(&seen)
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// Where the plugin's component lives on disk.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        match (&plugin.path, &self.plugin_dir) {
            (Some(path), _) => self.base_dir.join(path),
            (None, Some(dir)) => self
                .base_dir
                .join(dir)
                .join(format!("{}.wasm", plugin.name())),
            // Refused by validation.
            (None, None) => PathBuf::new(),
        }
    }

    /// The plugin directory, resolved.
    pub fn plugin_dir(&self) -> Option<PathBuf> {
        self.plugin_dir.as_ref().map(|d| self.base_dir.join(d))
    }

    pub fn site(&self) -> &str {
        self.gateway.site.get_ref()
    }

    pub fn gateway_id(&self) -> &str {
        self.gateway.id.get_ref()
    }
}

impl PluginConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// What the site grants this plugin (validated at parse time).
    pub fn granted(&self) -> Vec<Capability> {
        match &self.allow {
            Some(allow) => allow
                .get_ref()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            None => Capability::DEFAULT_GRANT.to_vec(),
        }
    }

    /// This plugin's own instance, table and memory counts (validated at parse time).
    pub fn instance_limits(&self) -> crate::plugins::InstanceLimits {
        let own = |v: Option<&Spanned<u32>>| v.map(|v| *v.get_ref());
        match &self.limits {
            Some(l) => crate::plugins::InstanceLimits {
                instances: own(l.instances.as_ref()),
                tables: own(l.tables.as_ref()),
                memories: own(l.memories.as_ref()),
            },
            None => Default::default(),
        }
    }

    /// The plugin's config table as the JSON object `init` receives.
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(table) => serde_json::to_string(table).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        }
    }
}

/// "HH:MM" → minutes after midnight.
pub fn parse_hh_mm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

struct Invalid {
    span: std::ops::Range<usize>,
    message: String,
}

impl Invalid {
    fn at<T>(value: &Spanned<T>, message: impl fmt::Display) -> Invalid {
        Invalid {
            span: value.span(),
            message: message.to_string(),
        }
    }
}

/// A count of instances, tables or memories: at least 1 and at most the site's `max`.
fn check_count(key: &str, value: &Spanned<u32>, max: u32, max_key: &str) -> Result<(), Invalid> {
    let n = *value.get_ref();
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(Invalid::at(
            value,
            format!("{key} must be between 1 and {max} ({max_key})"),
        ))
    }
}

fn check_name(key: &str, value: &Spanned<String>) -> Result<(), Invalid> {
    if is_valid_name(value.get_ref()) {
        Ok(())
    } else {
        Err(Invalid::at(
            value,
            format!(
                "{key} must be 1-32 characters of a-z, 0-9, '-' or '_' (it is an MQTT topic level)"
            ),
        ))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
site = "store-1"
id = "gw-1"

[mqtt]
host = "localhost"

[[plugin]]
name = "visitor-counter"
path = "visitor_counter.wasm"
config = { interval_secs = 60 }
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("site.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_minimal_config_gets_safe_defaults() {
        let c = Config::parse(Path::new("/etc/probegate/site.toml"), GOOD).unwrap();
        assert_eq!(*c.privacy.rotate_every_hours.get_ref(), 24);
        assert_eq!(c.plugins[0].config_json(), r#"{"interval_secs":60}"#);
        assert_eq!(
            c.plugin_path(&c.plugins[0]),
            Path::new("/etc/probegate/visitor_counter.wasm")
        );
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let text = GOOD.replace("host = \"localhost\"", "host = \"localhost\"\nhots = 1");
        let e = err(&text);
        assert!(e.starts_with("site.toml:8:1:"), "{e}");
        assert!(e.contains("hots"), "{e}");
    }

    #[test]
    fn a_key_lifetime_over_a_day_is_refused_at_its_line() {
        let text = format!("{GOOD}\n[privacy]\nrotate_every_hours = 48\n");
        let e = err(&text);
        assert!(e.starts_with("site.toml:15:22:"), "{e}");
        assert!(e.contains("never live longer than a day"), "{e}");
    }

    #[test]
    fn a_name_that_would_escape_its_topic_level_is_refused() {
        let e = err(&GOOD.replace("gw-1", "gw/#"));
        assert!(e.starts_with("site.toml:4:"), "{e}");
    }

    #[test]
    fn a_gateway_named_like_the_command_tree_is_refused() {
        let e = err(&GOOD.replace("id = \"gw-1\"", "id = \"cmd\""));
        assert!(e.starts_with("site.toml:4:"), "{e}");
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn a_plugin_without_a_path_needs_a_plugin_dir() {
        let pathless = GOOD.replace("path = \"visitor_counter.wasm\"\n", "");
        let e = err(&pathless);
        assert!(e.starts_with("site.toml:10:8:"), "{e}");
        assert!(e.contains("plugin_dir"), "{e}");
        let with_dir = format!("plugin_dir = \"/usr/lib/probegate/plugins\"\n{pathless}");
        let c = Config::parse(Path::new("/etc/probegate/site.toml"), &with_dir).unwrap();
        assert_eq!(
            c.plugin_path(&c.plugins[0]),
            Path::new("/usr/lib/probegate/plugins/visitor-counter.wasm")
        );
    }

    #[test]
    fn an_unknown_capability_is_refused_at_its_line() {
        let text = GOOD.replace("config = {", "allow = [\"signal\", \"mac\"]\nconfig = {");
        let e = err(&text);
        assert!(e.starts_with("site.toml:12:9:"), "{e}");
        assert!(e.contains("unknown capability \"mac\""), "{e}");
    }

    #[test]
    fn a_misspelt_log_level_is_refused_at_its_line_not_silently_replaced() {
        let e = err(&format!("log = \"debgu\"\n{GOOD}"));
        assert!(e.starts_with("site.toml:1:7:"), "{e}");
        assert!(e.contains("log filter"), "{e}");
        let fine = format!("log = \"warn,probegate::publish=debug\"\n{GOOD}");
        assert!(Config::parse(Path::new("site.toml"), &fine).is_ok());
    }

    #[test]
    fn a_syntax_error_points_at_the_line() {
        let e = err(&GOOD.replace("[mqtt]", "[mqtt"));
        assert!(e.starts_with("site.toml:6:"), "{e}");
    }

    fn mqtt(lines: &str) -> String {
        GOOD.replace(
            "host = \"localhost\"\n",
            &format!("host = \"localhost\"\n{lines}\n"),
        )
    }

    #[test]
    fn the_mqtt_protocol_is_auto_unless_set_and_a_wrong_one_is_located() {
        use crate::publish::MqttProtocol;
        let parse = |text: &str| Config::parse(Path::new("site.toml"), text).unwrap();
        assert_eq!(parse(GOOD).mqtt.protocol, MqttProtocol::Auto);
        assert_eq!(
            parse(&mqtt("protocol = \"3.1.1\"")).mqtt.protocol,
            MqttProtocol::V311
        );
        assert_eq!(parse(&mqtt("protocol = 5")).mqtt.protocol, MqttProtocol::V5);
        let e = err(&mqtt("protocol = \"3\""));
        assert!(e.starts_with("site.toml:8:12:"), "{e}");
        assert!(e.contains("\"auto\", \"5\" or \"3.1.1\""), "{e}");
    }

    #[test]
    fn drop_priorities_name_configured_streams_and_errors_point_at_the_key() {
        use crate::publish::outbox::Priority;
        let text = mqtt(
            "drop_priority = { \"visitor-counter/counts\" = \"high\", \"visitor-counter/debug\" = \"low\" }",
        );
        let c = Config::parse(Path::new("site.toml"), &text).unwrap();
        let p: Vec<(&str, Priority)> = c
            .mqtt
            .drop_priority
            .iter()
            .map(|(k, v)| (k.get_ref().as_str(), *v))
            .collect();
        assert_eq!(
            p,
            vec![
                ("visitor-counter/counts", Priority::High),
                ("visitor-counter/debug", Priority::Low)
            ]
        );
        let e = err(&mqtt(
            "drop_priority = { \"visitor-counter/counts\" = \"urgent\" }",
        ));
        assert!(e.starts_with("site.toml:8:"), "{e}");
        assert!(e.contains("urgent"), "{e}");
        let e = err(&mqtt("drop_priority = { \"occupancy/debug\" = \"low\" }"));
        assert!(e.starts_with("site.toml:8:19:"), "{e}");
        assert!(e.contains("no [[plugin]] is named \"occupancy\""), "{e}");
        for key in [
            "visitor-counter",
            "visitor-counter/counts/x",
            "visitor-counter/#",
        ] {
            let e = err(&mqtt(&format!("drop_priority = {{ \"{key}\" = \"low\" }}")));
            assert!(e.starts_with("site.toml:8:19:"), "{key}: {e}");
            assert!(e.contains("\"plugin/stream\""), "{key}: {e}");
        }
    }

    #[test]
    fn a_plugin_may_raise_its_instance_limits_only_up_to_the_sites_maximum() {
        let own = GOOD.replace(
            "config = {",
            "limits = { instances = 40, memories = 3 }\nconfig = {",
        );
        let c = Config::parse(Path::new("site.toml"), &own).unwrap();
        let limits = crate::plugins::Limits::from_config(&c).with(c.plugins[0].instance_limits());
        assert_eq!(
            (limits.instances, limits.tables, limits.memories),
            (40, 16, 3)
        );
        let e = err(&own.replace("instances = 40", "instances = 65"));
        assert!(e.starts_with("site.toml:12:24:"), "{e}");
        assert!(
            e.contains("between 1 and 64 ([limits] max_instances)"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[limits]\nmemories = 5\n"));
        assert!(
            e.contains("limits.memories must be between 1 and 4 (max_memories)"),
            "{e}"
        );
        let e = err(&format!(
            "{GOOD}\n[limits]\nmax_output_bytes = 4096\nmax_output_bytes_per_minute = 1024\n"
        ));
        assert!(e.starts_with("site.toml:16:31:"), "{e}");
        assert!(e.contains("at least limits.max_output_bytes"), "{e}");
    }

    #[test]
    fn hh_mm_is_strict() {
        assert_eq!(parse_hh_mm("04:30"), Some(270));
        assert_eq!(parse_hh_mm("4:30"), None);
        assert_eq!(parse_hh_mm("24:00"), None);
    }
}
