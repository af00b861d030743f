//! A plugin's manifest: what it is and what it asks for, read before any of its code runs.
//!
//! The manifest is a TOML file beside the component (`counter.wasm` → `counter.toml`), so a
//! plugin in any language can ship one and store IT can read it. The host compares it with what
//! the site config grants and refuses a plugin that asks for more.

use crate::config::is_valid_name;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The interface version this host implements (`plugins/wit/plugin.wit`).
pub const INTERFACE: &str = "0.2";

/// What a plugin may be given beyond pseudonym, epoch, time and the randomized flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Received signal strength.
    Signal,
    /// Channel frequency.
    Frequency,
    /// 802.11 sequence numbers.
    Sequence,
    /// A keyed hash of the probe's information elements.
    IeSignature,
    /// Opt-in consent tokens.
    Consent,
    /// Streams that carry per-device records (pseudonyms, consent tokens).
    PerDeviceOutput,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Signal,
        Capability::Frequency,
        Capability::Sequence,
        Capability::IeSignature,
        Capability::Consent,
        Capability::PerDeviceOutput,
    ];

    /// What a site grants when its config says nothing: radio facts that identify no one.
    pub const DEFAULT_GRANT: [Capability; 2] = [Capability::Signal, Capability::Frequency];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Signal => "signal",
            Capability::Frequency => "frequency",
            Capability::Sequence => "sequence",
            Capability::IeSignature => "ie-signature",
            Capability::Consent => "consent",
            Capability::PerDeviceOutput => "per-device-output",
        }
    }
}

impl FromStr for Capability {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|()| {
            serde::de::Error::custom(format!(
                "unknown capability {s:?} (known: {})",
                Capability::ALL.map(|c| c.as_str()).join(", ")
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Judges sightings before analytics plugins see them.
    Filter,
    /// Consumes sightings and publishes results.
    Analytics,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Analytics => "analytics",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Counts over groups of devices; the host suppresses small cells.
    Aggregate,
    /// Records about one device each (pseudonyms, consent tokens): needs `per-device-output`.
    PerDevice,
    /// Anything else about the store as a whole (estimates, alerts); no device identifiers.
    Event,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub kind: StreamKind,
    /// For aggregate streams: the top-level members that hold counts. Documentation only:
    /// every member not named in `measures` is a count anyway (see `plugins::guard`).
    #[serde(default)]
    pub counts: Option<Vec<String>>,
    /// For aggregate streams: the top-level members that are not counts (times, bin edges,
    /// ratios, flags, labels). The host leaves them as they are; everything else must be a
    /// count.
    #[serde(default)]
    pub measures: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    /// The WIT interface version the plugin was built against, "major.minor".
    pub interface: String,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Capabilities the plugin uses when the site grants them and does without otherwise: it
    /// loads either way, and sees their fields only when granted (an absent field is how it
    /// tells).
    #[serde(default, rename = "optional-capabilities")]
    pub optional_capabilities: Vec<Capability>,
    /// Every stream the plugin publishes to.
    #[serde(default)]
    pub streams: BTreeMap<String, Stream>,
    #[serde(default)]
    pub description: Option<String>,
    /// Seconds of pipeline time between this plugin's ticks, on multiples of it since the
    /// Unix epoch (default 1). A plugin whose windows are whole minutes needs no tick in
    /// between, and each tick it skips is a call saved and a longer batch (docs/performance.md).
    #[serde(default)]
    pub tick_secs: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no manifest: expected {0} beside the component (see plugins/README.md)")]
    Missing(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "asks for capability \"{asked}\", which the site config does not grant (granted: {granted}; add it to `allow` in this plugin's [[plugin]] table if the store agrees)"
    )]
    NotGranted { asked: Capability, granted: String },
}

/// The longest tick cadence a manifest may ask for: a plugin still hears of time hourly.
pub const MAX_TICK_SECS: u32 = 3600;

/// Where the manifest of the component at `wasm` lives.
pub fn path_for(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

impl Manifest {
    /// Reads and checks the manifest beside `wasm`.
    pub fn load(wasm: &Path) -> Result<Manifest, ManifestError> {
        Manifest::load_from(&path_for(wasm))
    }

    /// Reads and checks the manifest at `path`.
    pub fn load_from(path: &Path) -> Result<Manifest, ManifestError> {
        let path = path.to_owned();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing(path));
            }
            Err(e) => {
                return Err(ManifestError::Invalid {
                    path,
                    message: e.to_string(),
                });
            }
        };
        Manifest::parse(&text).map_err(|message| ManifestError::Invalid { path, message })
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let line = text[..at.min(text.len())].lines().count().max(1);
            format!("line {line}: {}", e.message().trim())
        })?;
        if manifest.interface != INTERFACE {
            return Err(format!(
                "built for plugin interface {:?}; this probegate implements {INTERFACE:?}",
                manifest.interface
            ));
        }
        for cap in &manifest.optional_capabilities {
            if manifest.capabilities.contains(cap) {
                return Err(format!(
                    "capability \"{cap}\" is in both `capabilities` and `optional-capabilities`"
                ));
            }
            // Streams are declared up front: whether one may carry per-device records cannot
            // depend on the site.
            if *cap == Capability::PerDeviceOutput {
                return Err(
                    "\"per-device-output\" cannot be optional: a per-device stream needs it in `capabilities`"
                        .into(),
                );
            }
        }
        if let Some(secs) = manifest.tick_secs
            && !(1..=MAX_TICK_SECS).contains(&secs)
        {
            return Err(format!(
                "tick_secs = {secs}: must be between 1 and {MAX_TICK_SECS} (one hour)"
            ));
        }
        for (name, stream) in &manifest.streams {
            if !is_valid_name(name) || name == "status" {
                return Err(format!(
                    "stream name {name:?} must be 1-32 characters of a-z, 0-9, '-', '_' (and not \"status\")"
                ));
            }
            if stream.kind == StreamKind::PerDevice
                && !manifest.capabilities.contains(&Capability::PerDeviceOutput)
            {
                return Err(format!(
                    "stream {name:?} is per-device, which needs the capability \"per-device-output\""
                ));
            }
            let lists = stream.counts.is_some() || !stream.measures.is_empty();
            if lists && stream.kind != StreamKind::Aggregate {
                return Err(format!(
                    "stream {name:?}: `counts` and `measures` only apply to aggregate streams"
                ));
            }
            if let Some(both) = stream
                .counts
                .iter()
                .flatten()
                .find(|c| stream.measures.contains(c))
            {
                return Err(format!(
                    "stream {name:?}: {both:?} is in both `counts` and `measures`"
                ));
            }
        }
        Ok(manifest)
    }

    /// The first capability the manifest asks for that `granted` lacks, as an error.
    pub fn check_grants(&self, granted: &[Capability]) -> Result<(), ManifestError> {
        match self.capabilities.iter().find(|c| !granted.contains(c)) {
            None => Ok(()),
            Some(&asked) => Err(ManifestError::NotGranted {
                asked,
                granted: if granted.is_empty() {
                    "nothing".into()
                } else {
                    granted
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }

    pub fn has(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }

    /// What the plugin is given on a site that grants `granted` (after [`Self::check_grants`]):
    /// every required capability, and the optional ones the site grants.
    pub fn sees(&self, granted: &[Capability]) -> Vec<Capability> {
        let optional = self
            .optional_capabilities
            .iter()
            .filter(|c| granted.contains(c));
        self.capabilities.iter().chain(optional).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTER: &str = r#"
name = "visitor-counter"
version = "0.2.0"
kind = "analytics"
interface = "0.2"
capabilities = ["signal"]

[streams.counts]
kind = "aggregate"
counts = ["visitors"]
"#;

    #[test]
    fn a_valid_manifest_reads() {
        let m = Manifest::parse(COUNTER).unwrap();
        assert_eq!(m.kind, Kind::Analytics);
        assert!(m.has(Capability::Signal));
        assert_eq!(m.streams["counts"].kind, StreamKind::Aggregate);
    }

    #[test]
    fn tick_secs_is_optional_and_bounded() {
        assert_eq!(Manifest::parse(COUNTER).unwrap().tick_secs, None);
        let with = |line: &str| COUNTER.replace("capabilities", &format!("{line}\ncapabilities"));
        let m = Manifest::parse(&with("tick_secs = 60")).unwrap();
        assert_eq!(m.tick_secs, Some(60));
        for bad in ["tick_secs = 0", "tick_secs = 3601"] {
            let e = Manifest::parse(&with(bad)).unwrap_err();
            assert!(e.contains("tick_secs"), "{e}");
        }
    }

    #[test]
    fn another_interface_version_is_refused() {
        let e = Manifest::parse(&COUNTER.replace("\"0.2\"", "\"0.1\"")).unwrap_err();
        assert!(e.contains("interface \"0.1\""), "{e}");
    }

    #[test]
    fn an_unknown_capability_names_its_line() {
        let e = Manifest::parse(&COUNTER.replace("\"signal\"", "\"mac-address\"")).unwrap_err();
        assert!(e.starts_with("line 6:"), "{e}");
        assert!(e.contains("mac-address"), "{e}");
    }

    #[test]
    fn a_per_device_stream_needs_the_capability() {
        let text = COUNTER.replace(
            "kind = \"aggregate\"\ncounts = [\"visitors\"]",
            "kind = \"per-device\"",
        );
        let e = Manifest::parse(&text).unwrap_err();
        assert!(e.contains("per-device-output"), "{e}");
    }

    #[test]
    fn a_member_cannot_be_both_a_count_and_a_measure() {
        let m = Manifest::parse(&COUNTER.replace(
            "counts = [\"visitors\"]",
            "counts = [\"visitors\"]\nmeasures = [\"start_ms\"]",
        ))
        .unwrap();
        assert_eq!(m.streams["counts"].measures, ["start_ms"]);
        let e = Manifest::parse(&COUNTER.replace(
            "counts = [\"visitors\"]",
            "counts = [\"visitors\"]\nmeasures = [\"visitors\"]",
        ))
        .unwrap_err();
        assert!(e.contains("both"), "{e}");
    }

    #[test]
    fn asking_for_more_than_granted_is_refused_by_name() {
        let m =
            Manifest::parse(&COUNTER.replace("[\"signal\"]", "[\"signal\", \"consent\"]")).unwrap();
        assert!(m.check_grants(&Capability::DEFAULT_GRANT).is_err());
        let e = m
            .check_grants(&[Capability::Signal])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"consent\""), "{e}");
        m.check_grants(&[Capability::Signal, Capability::Consent])
            .unwrap();
    }

    #[test]
    fn optional_capabilities_load_without_the_grant_and_are_seen_only_with_it() {
        let m = Manifest::parse(&COUNTER.replace(
            "capabilities = [\"signal\"]",
            "capabilities = [\"signal\"]\noptional-capabilities = [\"sequence\", \"ie-signature\"]",
        ))
        .unwrap();
        m.check_grants(&Capability::DEFAULT_GRANT).unwrap();
        assert_eq!(m.sees(&Capability::DEFAULT_GRANT), [Capability::Signal]);
        let all = [
            Capability::Signal,
            Capability::Sequence,
            Capability::IeSignature,
        ];
        assert_eq!(m.sees(&all), all);
        assert_eq!(
            m.sees(&[Capability::Signal, Capability::IeSignature]),
            [Capability::Signal, Capability::IeSignature]
        );
    }

    #[test]
    fn an_optional_capability_cannot_also_be_required_or_be_per_device_output() {
        let both = COUNTER.replace(
            "capabilities = [\"signal\"]",
            "capabilities = [\"signal\"]\noptional-capabilities = [\"signal\"]",
        );
        let e = Manifest::parse(&both).unwrap_err();
        assert!(e.contains("both"), "{e}");
        let per_device = COUNTER.replace(
            "capabilities = [\"signal\"]",
            "capabilities = [\"signal\"]\noptional-capabilities = [\"per-device-output\"]",
        );
        let e = Manifest::parse(&per_device).unwrap_err();
        assert!(e.contains("cannot be optional"), "{e}");
    }
}
