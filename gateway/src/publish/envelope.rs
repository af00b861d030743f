//! What goes on the wire: topics and JSON documents. Documented in `docs/mqtt.md`.

use serde::Serialize;
use serde_json::value::RawValue;

/// Who is publishing: fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Identity {
    pub site: String,
    pub gateway: String,
    /// Random per process start: with `seq` it makes every message unique, so the back
    /// office can drop duplicates of an at-least-once delivery.
    pub boot_id: String,
    pub version: &'static str,
}

impl Identity {
    pub fn new(site: &str, gateway: &str) -> Identity {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        Identity {
            site: site.to_owned(),
            gateway: gateway.to_owned(),
            boot_id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// `probegate/v1/{site}/{gateway}/...`: site and gateway names are validated topic levels.
#[derive(Clone, Debug)]
pub struct Topics {
    root: String,
}

impl Topics {
    pub fn new(id: &Identity) -> Topics {
        Topics {
            root: format!("probegate/v1/{}/{}", id.site, id.gateway),
        }
    }

    /// Retained; "online" while connected, "offline" after a clean stop or (last will) a loss.
    pub fn status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// Periodic gateway metrics: the pipeline's counters and the outbox.
    pub fn metrics(&self) -> String {
        format!("{}/metrics", self.root)
    }

    /// Gap records: runs of plugin messages the outbox had to drop, by sequence number.
    pub fn gaps(&self) -> String {
        format!("{}/gaps", self.root)
    }

    /// Where the back office sends consent commands: to the whole site, or to one gateway.
    pub fn consent_commands(&self, id: &Identity) -> Vec<String> {
        vec![
            format!("probegate/v1/{}/cmd/consent", id.site),
            format!("{}/cmd/consent", self.root),
        ]
    }

    /// Where the back office sends control messages to plugins: site-wide or this gateway.
    pub fn plugin_commands(&self, id: &Identity) -> Vec<String> {
        vec![
            format!("probegate/v1/{}/cmd/plugins/#", id.site),
            format!("{}/cmd/plugins/#", self.root),
        ]
    }

    /// The plugin and the plugin's own topic of a control message, if `topic` is one.
    pub fn parse_plugin_command<'t>(
        &self,
        id: &Identity,
        topic: &'t str,
    ) -> Option<(&'t str, &'t str)> {
        let site_wide = format!("probegate/v1/{}/cmd/plugins/", id.site);
        let gateway = format!("{}/cmd/plugins/", self.root);
        let rest = topic
            .strip_prefix(&site_wide)
            .or_else(|| topic.strip_prefix(&gateway))?;
        let (plugin, sub) = rest.split_once('/').unwrap_or((rest, ""));
        (!plugin.is_empty()).then_some((plugin, sub))
    }

    /// Retained: the consent registry's version and size after the last change.
    pub fn consent_summary(&self) -> String {
        format!("{}/consent", self.root)
    }

    /// The outcome of each bundle pushed to this gateway (installed, rejected, rolled back).
    pub fn bundle_result(&self) -> String {
        format!("{}/bundles/result", self.root)
    }

    /// Retained: the plugins installed from bundles, with versions and sequences.
    pub fn plugins_installed(&self) -> String {
        format!("{}/plugins-installed", self.root)
    }

    /// Retained: the host's report on one plugin's health. No plugin can publish here.
    pub fn plugin_status(&self, plugin: &str) -> String {
        format!("{}/plugin-status/{plugin}", self.root)
    }

    /// A plugin's stream. Plugin and stream names are validated as single topic levels, so
    /// a plugin cannot reach any topic outside its own subtree.
    pub fn plugin_output(&self, plugin: &str, stream: &str) -> String {
        format!("{}/plugins/{plugin}/{stream}", self.root)
    }

    /// Where a plugin-stage output goes, and whether the broker retains it: the one mapping
    /// the daemon's session and `plugin run`'s printer share.
    pub fn for_output(&self, output: &crate::plugins::Output) -> (String, bool) {
        use crate::plugins::OutputKind;
        match output.kind {
            OutputKind::Stream => (self.plugin_output(&output.plugin, &output.stream), false),
            OutputKind::PluginStatus => (self.plugin_status(&output.plugin), true),
            OutputKind::BundleResult => (self.bundle_result(), false),
            OutputKind::Installed => (self.plugins_installed(), true),
        }
    }
}

/// The wrapper around every plugin message.
#[derive(Serialize, Debug)]
pub struct Envelope<'a> {
    pub v: u8,
    pub site: &'a str,
    pub gateway: &'a str,
    pub boot_id: &'a str,
    /// Increases by one per plugin message within a boot.
    pub seq: u64,
    /// Pipeline (capture) time of the publish, ms since the Unix epoch.
    pub time_ms: u64,
    pub plugin: &'a str,
    pub stream: &'a str,
    pub data: &'a RawValue,
}

impl<'a> Envelope<'a> {
    /// `output` as message `seq` of this boot: the one way a plugin message is wrapped, for
    /// the broker and for `plugin run`'s printout alike.
    pub fn wrap(
        identity: &'a Identity,
        seq: u64,
        output: &'a crate::plugins::Output,
    ) -> Envelope<'a> {
        Envelope {
            v: 1,
            site: &identity.site,
            gateway: &identity.gateway,
            boot_id: &identity.boot_id,
            seq,
            time_ms: output.time_ms,
            plugin: &output.plugin,
            stream: &output.stream,
            data: &output.payload,
        }
    }
}

/// The retained status document.
#[derive(Serialize, Debug)]
pub struct Status<'a> {
    pub v: u8,
    pub state: &'a str,
    pub site: &'a str,
    pub gateway: &'a str,
    pub boot_id: &'a str,
    pub version: &'a str,
    /// false when the broker published it as the last will: the gateway vanished.
    pub clean: bool,
    /// The MQTT version of the connection it went out on ("5" or "3.1.1"); absent only when
    /// the run never connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_version: Option<&'static str>,
}

impl<'a> Status<'a> {
    pub fn new(
        id: &'a Identity,
        state: &'a str,
        clean: bool,
        version: Option<super::link::Version>,
    ) -> Status<'a> {
        Status {
            v: 1,
            state,
            site: &id.site,
            gateway: &id.gateway,
            boot_id: &id.boot_id,
            version: id.version,
            clean,
            mqtt_version: version.map(super::link::Version::as_str),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("status serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_stream_stays_under_the_gateway_root() {
        let id = Identity::new("store-1", "gw-1");
        let t = Topics::new(&id);
        assert_eq!(
            t.plugin_output("visitor-counter", "counts"),
            "probegate/v1/store-1/gw-1/plugins/visitor-counter/counts"
        );
        assert_eq!(t.status(), "probegate/v1/store-1/gw-1/status");
    }

    #[test]
    fn plugin_commands_name_their_plugin_and_topic() {
        let id = Identity::new("store-1", "gw-1");
        let t = Topics::new(&id);
        assert_eq!(
            t.parse_plugin_command(&id, "probegate/v1/store-1/cmd/plugins/coupons/list"),
            Some(("coupons", "list"))
        );
        assert_eq!(
            t.parse_plugin_command(&id, "probegate/v1/store-1/gw-1/cmd/plugins/c/a/b"),
            Some(("c", "a/b"))
        );
        assert_eq!(
            t.parse_plugin_command(&id, "probegate/v1/store-1/cmd/consent"),
            None
        );
        assert_eq!(
            t.parse_plugin_command(&id, "probegate/v1/store-2/cmd/plugins/c/x"),
            None
        );
    }

    #[test]
    fn boot_ids_differ_between_starts() {
        assert_ne!(
            Identity::new("s", "g").boot_id,
            Identity::new("s", "g").boot_id
        );
    }
}
