//! Home Assistant MQTT discovery (optional, off by default): for each gateway that publishes
//! occupancy, a retained sensor config under the discovery prefix that points Home Assistant
//! at the gateway's own topics. Nothing new is sent about a store: the config only says which
//! existing topic carries the number, where in the JSON it is, and which topic says whether
//! the gateway is up. See docs/backoffice.md, "Home Assistant".

use probegate_contract::topic::ROOT;
use serde_json::{Value, json};
use std::collections::HashSet;

/// The plugin and stream whose windows become a sensor.
pub const PLUGIN: &str = "occupancy";
pub const STREAM: &str = "occupancy";

/// Gateways remembered as announced. A fleet has thousands; anyone allowed to publish under
/// `probegate/v1/` could name millions, so past this the memory starts again: announcing a
/// gateway twice only republishes the same retained config.
const MAX_ANNOUNCED: usize = 100_000;

/// Announces each (site, gateway) once per broker connection.
pub struct Discovery {
    prefix: String,
    announced: HashSet<(String, String)>,
}

impl Discovery {
    pub fn new(prefix: &str) -> Discovery {
        Discovery {
            prefix: prefix.to_owned(),
            announced: HashSet::new(),
        }
    }

    /// After a reconnect everything is announced again: the broker may have lost its
    /// retained messages (a restart without persistence).
    pub fn forget(&mut self) {
        self.announced.clear();
    }

    /// The config to publish for a gateway's stored occupancy message, unless already done.
    pub fn needs(&self, site: &str, gateway: &str) -> bool {
        !self
            .announced
            .contains(&(site.to_owned(), gateway.to_owned()))
    }

    pub fn done(&mut self, site: &str, gateway: &str) {
        if self.announced.len() >= MAX_ANNOUNCED {
            self.announced.clear();
        }
        self.announced.insert((site.to_owned(), gateway.to_owned()));
    }

    /// (discovery topic, config) for one gateway's occupancy sensor.
    pub fn sensor(&self, site: &str, gateway: &str) -> (String, Value) {
        // Site and gateway names are `a-z 0-9 - _` (topic::is_name), which Home Assistant
        // takes in a node id and an object id; the node id keeps one store's sensors apart
        // from another's even where joined names would collide (`a_b`+`c`, `a`+`b_c`).
        let topic = format!(
            "{}/sensor/probegate-{site}/{gateway}-{PLUGIN}/config",
            self.prefix
        );
        let gateway_topic = format!("{ROOT}/{site}/{gateway}");
        let config = json!({
            "name": format!("Occupancy {gateway}"),
            "unique_id": format!("probegate:{site}:{gateway}:{PLUGIN}"),
            "state_topic": format!("{gateway_topic}/plugins/{PLUGIN}/{STREAM}"),
            // The envelope's `data` is the plugin's window (docs/mqtt.md); a null estimate
            // renders as None, which Home Assistant shows as unknown.
            "value_template": "{{ value_json.data.estimate }}",
            "unit_of_measurement": "people",
            "state_class": "measurement",
            "json_attributes_topic": format!("{gateway_topic}/plugins/{PLUGIN}/{STREAM}"),
            // The whole window: low, high, method, the window's times and its inputs.
            "json_attributes_template": "{{ value_json.data | tojson }}",
            // The gateway's retained status is JSON: `state` is "online" or "offline",
            // and the broker's last will says "offline" for a gateway that vanished.
            "availability_topic": format!("{gateway_topic}/status"),
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "device": {
                "identifiers": [format!("probegate-{site}")],
                "name": format!("Store {site}"),
                "manufacturer": "probegate",
                "model": "Wi-Fi footfall sensor",
            },
            "origin": {
                "name": "probegate-backoffice",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        });
        (topic, config)
    }
}

/// A discovery prefix must be a plain topic (no wildcards, no empty level).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty()
        || prefix.contains(['+', '#', '\0'])
        || prefix.split('/').any(str::is_empty)
    {
        return Err(format!(
            "home_assistant.prefix {prefix:?} is not a topic without wildcards or empty levels"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sensor_per_gateway_on_the_gateways_own_topics() {
        let d = Discovery::new("homeassistant");
        let (topic, c) = d.sensor("store-1", "gw-2");
        assert_eq!(
            topic,
            "homeassistant/sensor/probegate-store-1/gw-2-occupancy/config"
        );
        assert_eq!(
            c["state_topic"],
            "probegate/v1/store-1/gw-2/plugins/occupancy/occupancy"
        );
        assert_eq!(c["availability_topic"], "probegate/v1/store-1/gw-2/status");
        assert!(c.get("device_class").is_none());
        // Names that would collide if joined stay apart.
        assert_ne!(d.sensor("a_b", "c").0, d.sensor("a", "b_c").0);
        assert_ne!(
            d.sensor("a_b", "c").1["unique_id"],
            d.sensor("a", "b_c").1["unique_id"]
        );
    }

    #[test]
    fn the_memory_of_announced_gateways_is_bounded() {
        let mut d = Discovery::new("homeassistant");
        d.done("s", "gw-0");
        assert!(!d.needs("s", "gw-0"));
        for i in 1..MAX_ANNOUNCED + 10 {
            d.done("s", &format!("gw-{i}"));
            assert!(d.announced.len() <= MAX_ANNOUNCED);
        }
        // Forgotten, so announced again: harmless, the same retained config.
        assert!(d.needs("s", "gw-0"));
        assert!(!d.needs("s", &format!("gw-{}", MAX_ANNOUNCED + 9)));
    }

    #[test]
    fn a_prefix_with_wildcards_or_empty_levels_is_refused() {
        assert!(check_prefix("homeassistant").is_ok());
        assert!(check_prefix("ha/discovery").is_ok());
        for bad in ["", "ha/#", "+", "ha//x", "/ha", "ha/"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
