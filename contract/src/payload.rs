//! The payloads a back office reads, as docs/mqtt.md and docs/schemas define them. Parsing is
//! lenient where the schemas allow growth (unknown fields are ignored here; the schemas decide
//! what is valid).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every plugin message and plugin status: the gateway's wrapping around the plugin's `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub site: String,
    pub gateway: String,
    pub boot_id: String,
    pub seq: u64,
    pub time_ms: u64,
    pub plugin: String,
    pub stream: String,
    pub data: Value,
}

/// `probegate/v1/{site}/{gateway}/status` (retained; not enveloped).
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub state: String,
    pub boot_id: String,
    pub version: String,
    pub clean: bool,
    #[serde(default)]
    pub mqtt_version: Option<String>,
}

/// The host's report on one plugin: the `data` of a plugin-status envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginStatus {
    pub state: String,
    pub failures: u64,
    pub traps: u64,
    pub reason: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// `probegate/v1/{site}/{gateway}/consent` (retained; not enveloped).
#[derive(Debug, Clone, Deserialize)]
pub struct ConsentSummary {
    pub version: u64,
    pub opt_out: u64,
    pub opt_in: u64,
    pub last_error: Option<String>,
}

/// `probegate/v1/{site}/{gateway}/gaps`: messages the outbox dropped.
#[derive(Debug, Clone, Deserialize)]
pub struct Gap {
    pub boot_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    #[serde(default)]
    pub plugin: Option<String>,
}

/// `probegate/v1/{site}/{gateway}/metrics`: the gateway's counters since it started.
#[derive(Debug, Clone, Deserialize)]
pub struct Metrics {
    pub boot_id: String,
    pub wall_ms: u64,
    pub frames: u64,
    pub sightings: u64,
    pub dropped_opted_out: u64,
    pub outputs: u64,
}

/// visitor-counter's `counts` stream.
#[derive(Debug, Clone, Deserialize)]
pub struct Counts {
    pub interval_start_ms: u64,
    pub interval_end_ms: u64,
    /// `null` when the host suppressed a count under the site's minimum cell.
    pub universal: Option<u64>,
    pub randomized: Option<u64>,
    pub sightings: Option<u64>,
    pub partial: bool,
}

/// visitor-counter's `visits` stream.
#[derive(Debug, Clone, Deserialize)]
pub struct Visits {
    pub interval_start_ms: u64,
    pub interval_end_ms: u64,
    pub universal: Tally,
    pub randomized: Tally,
    pub dwell_bins_min: Vec<u32>,
    pub partial: bool,
}

/// One address kind's visits in an interval; `None` where the host suppressed a small count.
#[derive(Debug, Clone, Deserialize)]
pub struct Tally {
    pub visitors: Option<u64>,
    pub passers_by: Option<u64>,
    pub new: Option<u64>,
    pub repeat: Option<u64>,
    pub dwell: Vec<Option<u64>>,
}

/// The occupancy plugin's `occupancy` stream.
#[derive(Debug, Clone, Deserialize)]
pub struct Occupancy {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// `null` when there was nothing to estimate from.
    pub estimate: Option<f64>,
    /// The interval around the estimate (`linked-devices/2` and later); absent from older
    /// plugin versions, `null` where the host suppressed it.
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    /// How the estimate was made (`linked-devices/2`); absent from older plugin versions.
    #[serde(default)]
    pub method: Option<String>,
    pub partial: bool,
}

/// The `data` of `plugins-installed`: plugin name to what is installed.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginsInstalled {
    pub plugins: std::collections::BTreeMap<String, InstalledPlugin>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstalledPlugin {
    pub version: String,
    pub sequence: u64,
    pub removed: bool,
}

/// A consent command (docs/schemas/consent-command.json), as a back office publishes it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ConsentCommand {
    Add { entries: Vec<ConsentEntry> },
    Remove { ids: Vec<String> },
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentEntry {
    pub id: String,
    pub status: ConsentStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    OptOut,
}

/// A consent command signed by the back office (docs/mqtt.md, "Signed commands"): `command`
/// is the command's JSON text, `signature` a minisign signature over
/// [`crate::consent::signed_bytes`]`(site, sequence, command)`. A gateway that trusts keys
/// applies it only if the signature holds, `site` is its own and `sequence` is above the last
/// one it applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedConsentCommand {
    pub command: String,
    pub site: String,
    pub sequence: u64,
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_reads_the_interval_and_still_reads_versions_without_it() {
        // From plugins/examples/occupancy/README.md (linked-devices/2).
        let v2: Occupancy = serde_json::from_str(
            r#"{"window_start_ms":1676544300000,"window_end_ms":1676545200000,"estimate":15.8,"low":13.5,
             "high":19.9,"method":"linked-devices/2","devices":26,"partial":false}"#,
        )
        .unwrap();
        assert_eq!(
            (v2.estimate, v2.low, v2.high),
            (Some(15.8), Some(13.5), Some(19.9))
        );
        assert_eq!(v2.method.as_deref(), Some("linked-devices/2"));
        let v1: Occupancy = serde_json::from_str(
            r#"{"window_start_ms":0,"window_end_ms":900000,"estimate":3.0,"partial":true}"#,
        )
        .unwrap();
        assert_eq!(
            (v1.estimate, v1.low, v1.high, v1.method),
            (Some(3.0), None, None, None)
        );
        let suppressed: Occupancy = serde_json::from_str(
            r#"{"window_start_ms":0,"window_end_ms":900000,"estimate":null,"low":null,"high":null,"partial":false}"#,
        )
        .unwrap();
        assert_eq!((suppressed.low, suppressed.high), (None, None));
    }
}
