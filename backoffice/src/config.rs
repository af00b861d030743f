//! The service's config file (TOML): staff accounts, sites and their consent keys, groups of
//! stores, retention. See docs/backoffice.md.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Staff who may sign in: name and Argon2 PHC hash (`probegate-backoffice hash-password`).
    #[serde(default)]
    pub users: Vec<User>,
    /// Per site: the consent key file the site's gateways use.
    #[serde(default)]
    pub sites: BTreeMap<String, Site>,
    /// Named groups of sites, shown rolled up.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub retention: Retention,
    /// A minisign secret key (unencrypted, `probegate plugin keygen`): consent commands are
    /// then signed, for gateways whose `privacy.consent_trusted_keys` holds its public key.
    pub consent_signing_key_file: Option<PathBuf>,
    /// The public opt-out page's limits.
    #[serde(default)]
    pub optout: OptOut,
    /// Home Assistant MQTT discovery for the stores' occupancy sensors (off by default).
    #[serde(default)]
    pub home_assistant: HomeAssistant,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OptOut {
    /// Submissions of the public opt-out form one client address may make per hour; more are
    /// answered 429. Each accepted one publishes a command to every gateway of a store.
    #[serde(default = "default_optout_per_hour")]
    pub per_address_per_hour: u32,
    /// Reverse proxies in front of the service: from these peers the client is the last
    /// address of `X-Forwarded-For`, as the proxy appended it; from any other peer the header
    /// is ignored (a client could write anything there).
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

fn default_optout_per_hour() -> u32 {
    10
}

impl Default for OptOut {
    fn default() -> Self {
        OptOut {
            per_address_per_hour: default_optout_per_hour(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistant {
    #[serde(default)]
    pub discovery: bool,
    /// Home Assistant's discovery prefix (its MQTT integration's setting).
    #[serde(default = "default_ha_prefix")]
    pub prefix: String,
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}

impl Default for HomeAssistant {
    fn default() -> Self {
        HomeAssistant {
            discovery: false,
            prefix: default_ha_prefix(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// 64 hex digits, as `probegate consent keygen` writes; relative to the config file.
    pub consent_key_file: Option<PathBuf>,
    /// The store's time zone (tz database name, `Europe/Prague`): its days and hours on the
    /// dashboard. UTC when absent.
    pub tz: Option<String>,
    #[serde(skip)]
    pub zone: Option<jiff::tz::TimeZone>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Raw per-interval rows and messages are kept this long (by their own time).
    #[serde(default = "default_raw_days")]
    pub raw_days: u32,
    /// Hourly rollups this long; daily rollups are kept.
    #[serde(default = "default_hour_days")]
    pub hourly_days: u32,
}

fn default_raw_days() -> u32 {
    35
}
fn default_hour_days() -> u32 {
    400
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_days: default_raw_days(),
            hourly_days: default_hour_days(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(f) = &mut config.consent_signing_key_file {
            *f = dir.join(&*f);
            config.signing_key()?;
        }
        for (name, site) in config.sites.iter_mut() {
            if let Some(f) = &mut site.consent_key_file {
                *f = dir.join(&*f);
            }
            if let Some(tz) = &site.tz {
                site.zone = Some(
                    crate::localtime::zone(tz)
                        .with_context(|| format!("{}: site {name}", path.display()))?,
                );
            }
        }
        if config.users.is_empty() {
            bail!("{}: no [[users]]: nobody could sign in", path.display());
        }
        for u in &config.users {
            argon2::PasswordHash::new(&u.password_hash).map_err(|e| {
                anyhow::anyhow!(
                    "{}: user {}: password_hash is not a PHC string ({e}); make one with `probegate-backoffice hash-password`",
                    path.display(),
                    u.name
                )
            })?;
        }
        crate::homeassistant::check_prefix(&config.home_assistant.prefix)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (group, sites) in &config.groups {
            if sites.is_empty() {
                bail!("{}: group {group} has no sites", path.display());
            }
        }
        Ok(config)
    }

    /// The time zone for a page of these stores: theirs when they share one (a store that
    /// is not configured counts as UTC), else UTC, in which no store's day is privileged.
    pub fn zone_of(&self, sites: &[String]) -> jiff::tz::TimeZone {
        let zone = |s: &String| self.sites.get(s).and_then(|s| s.tz.clone());
        let first = sites.first().and_then(zone);
        match (&first, sites.iter().all(|s| zone(s) == first)) {
            (Some(_), true) => sites
                .first()
                .and_then(|s| self.sites.get(s)?.zone.clone())
                .unwrap_or(jiff::tz::TimeZone::UTC),
            _ => jiff::tz::TimeZone::UTC,
        }
    }

    /// The consent signing key, if the config names one; an unusable file is an error.
    pub fn signing_key(&self) -> Result<Option<minisign::SecretKey>> {
        let Some(file) = &self.consent_signing_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let key = minisign::SecretKeyBox::from_string(&text)
            .and_then(|b| b.into_unencrypted_secret_key())
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: not an unencrypted minisign secret key: {e}",
                    file.display()
                )
            })?;
        Ok(Some(key))
    }

    /// The site's consent key (32 bytes), read at use so a rotated file is picked up.
    pub fn consent_key(&self, site: &str) -> Result<Vec<u8>> {
        let file = self
            .sites
            .get(site)
            .and_then(|s| s.consent_key_file.as_ref())
            .with_context(|| format!("site {site} has no consent_key_file in the config"))?;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let key: [u8; 32] = probegate_contract::consent::from_hex(text.trim())
            .with_context(|| format!("{}: expected 64 hex digits", file.display()))?;
        Ok(key.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "[[users]]\nname = \"a\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$GrMHhnhda8NG+itXI7pNig$9TS+RJaxv8/Su071DjTKyIXG5g4cVcM5GwjezqmM/Oc\"\n";

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backoffice.toml");
        std::fs::write(&path, format!("{USER}{text}")).unwrap();
        Config::load(&path)
    }

    #[test]
    fn stores_get_their_zone_and_a_mixed_group_gets_utc() {
        let c = load(
            "[sites.prague]\ntz = \"Europe/Prague\"\n[sites.brno]\ntz = \"Europe/Prague\"\n\
             [sites.lisbon]\ntz = \"Europe/Lisbon\"\n[sites.plain]\n",
        )
        .unwrap();
        let name = |sites: &[&str]| {
            let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
            c.zone_of(&sites).iana_name().unwrap_or("UTC").to_owned()
        };
        assert_eq!(name(&["prague"]), "Europe/Prague");
        assert_eq!(name(&["prague", "brno"]), "Europe/Prague");
        assert_eq!(name(&["prague", "lisbon"]), "UTC");
        assert_eq!(name(&["prague", "plain"]), "UTC");
        assert_eq!(name(&["plain"]), "UTC");
        assert!(
            !c.home_assistant.discovery,
            "discovery is off unless switched on"
        );
        assert_eq!(c.optout.per_address_per_hour, 10);
        let err = load("[sites.x]\ntz = \"Europe/Atlantis\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("Europe/Atlantis"), "{err:#}");
        let err = load("[home_assistant]\ndiscovery = true\nprefix = \"ha/#\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("prefix"), "{err:#}");
    }
}
