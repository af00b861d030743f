//! The topic tree of docs/mqtt.md: what a topic is, and the topics a back office publishes to.

/// The prefix of every topic of this contract version.
pub const ROOT: &str = "probegate/v1";

/// What the gateway publishes, by topic. Site and gateway always travel together: gateway
/// ids repeat across sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    Status {
        site: &'a str,
        gateway: &'a str,
    },
    /// An enveloped plugin message.
    Plugin {
        site: &'a str,
        gateway: &'a str,
        plugin: &'a str,
        stream: &'a str,
    },
    PluginStatus {
        site: &'a str,
        gateway: &'a str,
        plugin: &'a str,
    },
    ConsentSummary {
        site: &'a str,
        gateway: &'a str,
    },
    Gaps {
        site: &'a str,
        gateway: &'a str,
    },
    Metrics {
        site: &'a str,
        gateway: &'a str,
    },
    BundleResult {
        site: &'a str,
        gateway: &'a str,
    },
    PluginsInstalled {
        site: &'a str,
        gateway: &'a str,
    },
    /// A command (`cmd/...`): published by a back office, not by a gateway.
    Command {
        site: &'a str,
    },
}

impl<'a> Topic<'a> {
    /// `None` for a topic outside the tree, or a level that is not a valid name.
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
        let levels: Vec<&str> = rest.split('/').collect();
        let site = *levels.first()?;
        if !is_name(site) {
            return None;
        }
        if levels.get(1) == Some(&"cmd") || levels.get(2) == Some(&"cmd") {
            return Some(Topic::Command { site });
        }
        let gateway = *levels.get(1)?;
        if !is_name(gateway) {
            return None;
        }
        Some(match levels[2..] {
            ["status"] => Topic::Status { site, gateway },
            ["consent"] => Topic::ConsentSummary { site, gateway },
            ["gaps"] => Topic::Gaps { site, gateway },
            ["metrics"] => Topic::Metrics { site, gateway },
            ["bundles", "result"] => Topic::BundleResult { site, gateway },
            ["plugins-installed"] => Topic::PluginsInstalled { site, gateway },
            ["plugin-status", plugin] if is_name(plugin) => Topic::PluginStatus {
                site,
                gateway,
                plugin,
            },
            ["plugins", plugin, stream] if is_name(plugin) && is_name(stream) => Topic::Plugin {
                site,
                gateway,
                plugin,
                stream,
            },
            _ => return None,
        })
    }

    pub fn site(&self) -> &'a str {
        match self {
            Topic::Status { site, .. }
            | Topic::Plugin { site, .. }
            | Topic::PluginStatus { site, .. }
            | Topic::ConsentSummary { site, .. }
            | Topic::Gaps { site, .. }
            | Topic::Metrics { site, .. }
            | Topic::BundleResult { site, .. }
            | Topic::PluginsInstalled { site, .. }
            | Topic::Command { site } => site,
        }
    }
}

/// Site, gateway, plugin and stream names: 1–32 of `a-z 0-9 - _`, so each is one topic level.
pub fn is_name(text: &str) -> bool {
    (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Consent commands for every gateway of a site.
pub fn site_consent_command(site: &str) -> String {
    format!("{ROOT}/{site}/cmd/consent")
}

/// Everything the gateways publish, for a subscription.
pub const ALL: &str = "probegate/v1/#";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gateway_topic_parses_to_what_it_carries() {
        let t = |s| Topic::parse(s);
        assert_eq!(
            t("probegate/v1/s-1/gw-1/status"),
            Some(Topic::Status {
                site: "s-1",
                gateway: "gw-1"
            })
        );
        assert_eq!(
            t("probegate/v1/s/g/plugins/visitor-counter/counts"),
            Some(Topic::Plugin {
                site: "s",
                gateway: "g",
                plugin: "visitor-counter",
                stream: "counts"
            })
        );
        assert_eq!(
            t("probegate/v1/s/g/plugin-status/p"),
            Some(Topic::PluginStatus {
                site: "s",
                gateway: "g",
                plugin: "p"
            })
        );
        assert!(matches!(
            t("probegate/v1/s/g/consent"),
            Some(Topic::ConsentSummary { .. })
        ));
        assert!(matches!(
            t("probegate/v1/s/g/gaps"),
            Some(Topic::Gaps { .. })
        ));
        assert!(matches!(
            t("probegate/v1/s/g/metrics"),
            Some(Topic::Metrics { .. })
        ));
        assert!(matches!(
            t("probegate/v1/s/g/bundles/result"),
            Some(Topic::BundleResult { .. })
        ));
        assert!(matches!(
            t("probegate/v1/s/g/plugins-installed"),
            Some(Topic::PluginsInstalled { .. })
        ));
        assert!(matches!(
            t("probegate/v1/s/cmd/consent"),
            Some(Topic::Command { site: "s" })
        ));
        assert!(matches!(
            t("probegate/v1/s/g/cmd/consent"),
            Some(Topic::Command { site: "s" })
        ));
    }

    #[test]
    fn topics_off_the_tree_are_none() {
        for bad in [
            "probegate/v2/s/g/status",
            "probegate/v1/S/g/status",
            "probegate/v1/s/g/status/x",
            "probegate/v1/s/g/plugins/p",
            "probegate/v1/s/g/plugins/p/x/y",
            "probegate/v1//g/status",
            "elsewhere",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }
}
