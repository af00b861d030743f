//! `--set key=value`: the few service settings a router keeps outside the site config (in
//! OpenWrt's UCI, /etc/config/probegate) laid over it. The init script passes them to `run`
//! and to `check-config` alike, so what was checked is what runs.
//!
//! Only keys that name the router and its place are accepted; privacy settings, plugins and
//! limits stay in the TOML, where the site's config puts them.

use crate::config::{Config, is_valid_name, log_filter};
use toml::Spanned;

/// The keys `--set` takes, for the error message.
pub const KEYS: &[&str] = &[
    "gateway.site",
    "gateway.id",
    "capture.interface",
    "mqtt.host",
    "mqtt.port",
    "log",
];

/// Applies each `key=value` in order (a later one wins). On an error the config may be half
/// changed: the caller stops.
pub fn apply(config: &mut Config, sets: &[String]) -> Result<(), String> {
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| format!("--set {set:?}: expected key=value"))?;
        let bad = |why: &str| format!("--set {key}={value:?}: {why}");
        let name = |value: &str| match is_valid_name(value) {
            true => Ok(Spanned::new(0..0, value.to_owned())),
            false => Err(bad("1-32 characters of a-z, 0-9, '-', '_'")),
        };
        match key {
            "gateway.site" => config.gateway.site = name(value)?,
            "gateway.id" if value == "cmd" => return Err(bad("\"cmd\" is reserved")),
            "gateway.id" => config.gateway.id = name(value)?,
            "capture.interface" if value.is_empty() || value.len() > 15 => {
                return Err(bad("an interface name has 1-15 characters"));
            }
            "capture.interface" => config.capture.interface = Some(value.to_owned()),
            "mqtt.host" if value.is_empty() => return Err(bad("empty host")),
            "mqtt.host" => config.mqtt.host = value.to_owned(),
            "mqtt.port" => {
                config.mqtt.port = value
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("a port is 1-65535"))?;
            }
            "log" => {
                log_filter(value).map_err(|e| bad(&e.to_string()))?;
                config.log = Spanned::new(0..0, value.to_owned());
            }
            _ => {
                return Err(format!(
                    "--set {key}: unknown key (known: {})",
                    KEYS.join(", ")
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/probegate.toml"),
        )
        .unwrap();
        Config::parse(Path::new("/etc/probegate/probegate.toml"), &text).unwrap()
    }

    fn sets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn uci_settings_win_over_the_toml() {
        let mut c = config();
        apply(
            &mut c,
            &sets(&[
                "gateway.site=store-0042",
                "gateway.id=gw-2",
                "capture.interface=phy1-mon0",
                "mqtt.host=broker.example",
                "mqtt.port=8883",
                "log=debug",
            ]),
        )
        .unwrap();
        assert_eq!((c.site(), c.gateway_id()), ("store-0042", "gw-2"));
        assert_eq!(c.capture.interface.as_deref(), Some("phy1-mon0"));
        assert_eq!(
            (c.mqtt.host.as_str(), c.mqtt.port),
            ("broker.example", 8883)
        );
        assert_eq!(c.log.get_ref(), "debug");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (set, want) in [
            ("gateway.site=Store 42", "gateway.site"),
            ("gateway.id=cmd", "reserved"),
            ("mqtt.port=0", "1-65535"),
            ("mqtt.port=70000", "1-65535"),
            ("log=loud", "log"),
            ("capture.interface=", "1-15"),
            ("privacy.signal_floor_dbm=-20", "unknown key"),
            ("gateway.site", "key=value"),
        ] {
            let e = apply(&mut config(), &sets(&[set])).unwrap_err();
            assert!(e.contains(want), "{set}: {e}");
        }
    }
}
