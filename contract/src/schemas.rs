//! The JSON Schemas of everything on the topic tree (`docs/schemas/`), and which applies to
//! which topic: what the back office validates against, and what the tests check every
//! message with.

/// (name, schema text). `envelope.json` is referenced by the plugin schemas.
pub const SCHEMAS: &[(&str, &str)] = &[
    (
        "status.json",
        include_str!("../../docs/schemas/status.json"),
    ),
    (
        "envelope.json",
        include_str!("../../docs/schemas/envelope.json"),
    ),
    (
        "plugin-status.json",
        include_str!("../../docs/schemas/plugin-status.json"),
    ),
    (
        "visitor-counter-counts.json",
        include_str!("../../docs/schemas/visitor-counter-counts.json"),
    ),
    (
        "visitor-counter-visits.json",
        include_str!("../../docs/schemas/visitor-counter-visits.json"),
    ),
    (
        "coupon-trigger-coupons.json",
        include_str!("../../docs/schemas/coupon-trigger-coupons.json"),
    ),
    (
        "consent-filter-command.json",
        include_str!("../../docs/schemas/consent-filter-command.json"),
    ),
    (
        "consent-summary.json",
        include_str!("../../docs/schemas/consent-summary.json"),
    ),
    (
        "consent-command.json",
        include_str!("../../docs/schemas/consent-command.json"),
    ),
    ("gap.json", include_str!("../../docs/schemas/gap.json")),
    (
        "bundle-result.json",
        include_str!("../../docs/schemas/bundle-result.json"),
    ),
    (
        "plugins-installed.json",
        include_str!("../../docs/schemas/plugins-installed.json"),
    ),
    (
        "metrics.json",
        include_str!("../../docs/schemas/metrics.json"),
    ),
];

/// The schema a message on `topic` must satisfy, by name; `None` for topics outside the tree.
pub fn schema_for(topic: &str) -> Option<&'static str> {
    let rest = topic.strip_prefix("probegate/v1/")?;
    let levels: Vec<&str> = rest.split('/').collect();
    Some(match levels.as_slice() {
        [_site, "cmd", "consent"] | [_site, _, "cmd", "consent"] => "consent-command.json",
        [
            _site,
            "cmd",
            "plugins",
            "consent-filter",
            "exclude" | "include",
        ]
        | [
            _site,
            _,
            "cmd",
            "plugins",
            "consent-filter",
            "exclude" | "include",
        ] => "consent-filter-command.json",
        // Other commands: a plugin's messages are its own (free text), bundle chunks binary.
        [_site, "cmd", ..] | [_site, _, "cmd", ..] => return None,
        [_site, _gw, "status"] => "status.json",
        [_site, _gw, "consent"] => "consent-summary.json",
        [_site, _gw, "gaps"] => "gap.json",
        [_site, _gw, "metrics"] => "metrics.json",
        [_site, _gw, "plugin-status", _plugin] => "plugin-status.json",
        [_site, _gw, "bundles", "result"] => "bundle-result.json",
        [_site, _gw, "plugins-installed"] => "plugins-installed.json",
        [_site, _gw, "plugins", "visitor-counter", "counts"] => "visitor-counter-counts.json",
        [_site, _gw, "plugins", "visitor-counter", "visits"] => "visitor-counter-visits.json",
        [_site, _gw, "plugins", "coupon-trigger", "coupons"] => "coupon-trigger-coupons.json",
        [_site, _gw, "plugins", _plugin, _stream] => "envelope.json",
        _ => return None,
    })
}

pub fn schema_text(name: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Where the schemas say they live; never fetched: every `$ref` resolves to [`SCHEMAS`].
pub const BASE_URI: &str = "https://schemas.probegate.invalid/v1/";

/// Compiled validators for every schema.
#[cfg(feature = "validate")]
pub struct Validators {
    by_name: Vec<(&'static str, jsonschema::Validator)>,
}

#[cfg(feature = "validate")]
struct Embedded;

#[cfg(feature = "validate")]
impl jsonschema::Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .as_str()
            .strip_prefix(BASE_URI)
            .ok_or_else(|| format!("{uri}: not a probegate schema"))?;
        let text = schema_text(name).ok_or_else(|| format!("{uri}: no such schema"))?;
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(feature = "validate")]
impl Validators {
    pub fn new() -> Validators {
        let by_name = SCHEMAS
            .iter()
            .map(|(name, text)| {
                let schema: serde_json::Value =
                    serde_json::from_str(text).expect("embedded schemas are JSON");
                let validator = jsonschema::options()
                    .with_retriever(Embedded)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (*name, validator)
            })
            .collect();
        Validators { by_name }
    }

    /// Checks a message on `topic`; the errors name the schema and where the payload is wrong.
    pub fn check(&self, topic: &str, payload: &[u8]) -> Result<&'static str, String> {
        let name = schema_for(topic).ok_or_else(|| format!("{topic}: not on the topic tree"))?;
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("{topic}: not JSON: {e}"))?;
        let (_, validator) = self
            .by_name
            .iter()
            .find(|(n, _)| *n == name)
            .expect("every name from schema_for is in SCHEMAS");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(name)
        } else {
            Err(format!("{topic} ({name}): {}", errors.join("; ")))
        }
    }
}

#[cfg(feature = "validate")]
impl Default for Validators {
    fn default() -> Self {
        Validators::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_of_the_tree_has_a_schema_and_each_schema_is_json() {
        for topic in [
            "probegate/v1/s/g/status",
            "probegate/v1/s/g/consent",
            "probegate/v1/s/g/gaps",
            "probegate/v1/s/g/metrics",
            "probegate/v1/s/g/plugin-status/p",
            "probegate/v1/s/g/plugins/visitor-counter/counts",
            "probegate/v1/s/g/plugins/p/x",
            "probegate/v1/s/cmd/consent",
            "probegate/v1/s/g/cmd/consent",
            "probegate/v1/s/g/bundles/result",
            "probegate/v1/s/g/plugins-installed",
            "probegate/v1/s/g/plugins/coupon-trigger/coupons",
            "probegate/v1/s/cmd/plugins/consent-filter/exclude",
        ] {
            let name = schema_for(topic).unwrap_or_else(|| panic!("{topic}"));
            let text = schema_text(name).unwrap();
            serde_json::from_str::<serde_json::Value>(text).unwrap();
        }
        assert_eq!(schema_for("elsewhere/x"), None);
        // Free text and binary: a plugin's own commands, bundle chunks.
        assert_eq!(schema_for("probegate/v1/s/cmd/plugins/p/pause"), None);
        assert_eq!(schema_for("probegate/v1/s/g/cmd/plugins/p/x/y"), None);
        assert_eq!(schema_for("probegate/v1/s/cmd/bundles/id/0/1"), None);
    }

    #[cfg(feature = "validate")]
    #[test]
    fn a_wrong_payload_is_refused_with_the_place_it_went_wrong() {
        let v = Validators::new();
        let good = br#"{"v":1,"site":"s","gateway":"g","boot_id":"0123456789abcdef","seq":3,"time_ms":5,"plugin":"visitor-counter","stream":"counts","data":{"interval_start_ms":0,"interval_end_ms":300000,"universal":1,"randomized":2,"sightings":9,"partial":false}}"#;
        let topic = "probegate/v1/s/g/plugins/visitor-counter/counts";
        assert_eq!(v.check(topic, good), Ok("visitor-counter-counts.json"));
        let bad = String::from_utf8_lossy(good).replace("\"universal\":1", "\"universal\":-1");
        let err = v.check(topic, bad.as_bytes()).unwrap_err();
        assert!(err.contains("/data/universal"), "{err}");
        let no_seq = String::from_utf8_lossy(good).replace("\"seq\":3,", "");
        assert!(
            v.check(topic, no_seq.as_bytes())
                .unwrap_err()
                .contains("seq")
        );
    }
}
