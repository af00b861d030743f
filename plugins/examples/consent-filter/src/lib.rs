//! The retailer's policy layer, run as a filter before every analytics plugin:
//!
//! - drops devices whose consent token is on the store's exclusion list (staff who opted in
//!   with a staff token): by config (`exclude_tokens`, `exclude_token_prefixes`) or at run time
//!   by back-office messages `exclude` / `include` with payload `{"tokens": ["staff-0042"]}`;
//! - drops devices present longer than `fixed_after_hours` in one key epoch (fixed equipment);
//! - tags every other opted-in device `opted-in`, so analytics plugins without the consent
//!   capability can count opted-in customers without ever seeing a token.
//!
//! After every `exclude`/`include` it publishes the list's size on stream `exclusions`:
//! `{"runtime_tokens":1,"config_tokens":2,"prefixes":1,"time_ms":1697803192000}`.
//! The README explains why the list is by token and not by device.

mod policy;

use policy::{Judgement, Policy, Settings};
use probegate_sdk::{
    Filter, LogLevel, Sighting, Verdict, export_filter, log, now_secs, parse_config, publish, state,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The plugin's `config` table; the README explains each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Consent tokens whose devices are dropped (e.g. staff loyalty ids).
    #[serde(default)]
    exclude_tokens: Vec<String>,
    /// Tokens starting with any of these are dropped (e.g. `staff-`, for staff registrations).
    #[serde(default)]
    exclude_token_prefixes: Vec<String>,
    /// Hours of presence in one key epoch after which a device is equipment; absent: off.
    #[serde(default)]
    fixed_after_hours: Option<f64>,
    /// Minutes between two sightings up to which the device counts as present in between.
    #[serde(default = "default_gap")]
    presence_gap_minutes: u64,
    /// Tag opted-in devices `opted-in` for later plugins.
    #[serde(default = "default_true")]
    tag_opted_in: bool,
}

fn default_gap() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

fn settings(config: &str) -> Result<Settings, String> {
    let c: Config = parse_config(config)?;
    if c.exclude_tokens
        .iter()
        .chain(&c.exclude_token_prefixes)
        .any(|t| !(1..=policy::MAX_TOKEN_LEN).contains(&t.len()))
    {
        return Err("exclude_tokens and exclude_token_prefixes hold strings of 1-128 bytes".into());
    }
    let fixed_after_ms = match c.fixed_after_hours {
        None => None,
        Some(h) if h.is_finite() && h > 0.0 && h <= 24.0 => Some((h * 3_600_000.0) as u64),
        Some(_) => return Err("fixed_after_hours must be above 0 and at most 24".into()),
    };
    if !(1..=120).contains(&c.presence_gap_minutes) {
        return Err("presence_gap_minutes must be between 1 and 120".into());
    }
    Ok(Settings {
        exclude_tokens: c.exclude_tokens.into_iter().collect(),
        exclude_prefixes: c.exclude_token_prefixes,
        fixed_after_ms,
        presence_gap_ms: c.presence_gap_minutes * 60_000,
        tag_opted_in: c.tag_opted_in,
    })
}

/// The runtime exclusion list's state key: it survives a new version of the filter and a
/// restart after a trap (not a key rotation or new opt-out: see the README).
const RUNTIME: &str = "exclude_tokens";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tokens {
    tokens: Vec<String>,
}

#[derive(Serialize)]
struct Exclusions {
    runtime_tokens: usize,
    config_tokens: usize,
    prefixes: usize,
    time_ms: u64,
}

struct ConsentFilter {
    policy: Policy,
    config_tokens: usize,
    prefixes: usize,
    last_expiry_ms: u64,
}

impl Filter for ConsentFilter {
    fn init(config: &str) -> Result<Self, String> {
        let settings = settings(config)?;
        let runtime: BTreeSet<String> = state::get_json(RUNTIME).unwrap_or_default();
        Ok(ConsentFilter {
            config_tokens: settings.exclude_tokens.len(),
            prefixes: settings.exclude_prefixes.len(),
            policy: Policy::new(settings, runtime),
            last_expiry_ms: 0,
        })
    }

    fn filter(&mut self, batch: &[Sighting]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| {
                match self
                    .policy
                    .judge(s.device, s.epoch, s.time_ms, s.consent_token.as_deref())
                {
                    Judgement::Pass => Verdict::Pass,
                    Judgement::OptedIn => Verdict::Tag(vec!["opted-in".into()]),
                    Judgement::Excluded | Judgement::Fixed => Verdict::Drop,
                }
            })
            .collect()
    }

    fn on_tick(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_expiry_ms) >= 60_000 {
            self.last_expiry_ms = now_ms;
            self.policy.expire(now_ms);
        }
    }

    fn on_message(&mut self, topic: &str, payload: &str) {
        let tokens = match serde_json::from_str::<Tokens>(payload) {
            Ok(t) => t.tokens,
            Err(e) => {
                log(
                    LogLevel::Warn,
                    &format!("message {topic:?} refused: expected {{\"tokens\": [...]}}: {e}"),
                );
                return;
            }
        };
        let applied = match topic {
            "exclude" => self.policy.exclude(&tokens),
            "include" => self.policy.include(&tokens),
            other => Err(format!(
                "unknown message {other:?}: expected exclude or include"
            )),
        };
        if let Err(e) = applied {
            log(LogLevel::Warn, &e);
            return;
        }
        if let Err(e) = state::set_json(RUNTIME, self.policy.runtime()) {
            // Still in force in this instance; only a reload would lose it.
            log(
                LogLevel::Warn,
                &format!("exclusion list not saved to state: {e:?}"),
            );
        }
        let _ = publish(
            "exclusions",
            &Exclusions {
                runtime_tokens: self.policy.runtime().len(),
                config_tokens: self.config_tokens,
                prefixes: self.prefixes,
                time_ms: now_secs() * 1000,
            },
        );
    }
}

export_filter!(ConsentFilter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_exclude_nothing_and_tag_opted_in_devices() {
        let s = settings("{}").unwrap();
        assert!(s.exclude_tokens.is_empty() && s.exclude_prefixes.is_empty());
        assert_eq!(s.fixed_after_ms, None);
        assert_eq!(s.presence_gap_ms, 600_000);
        assert!(s.tag_opted_in);
    }

    #[test]
    fn fractional_hours_are_accepted() {
        let s = settings(r#"{"fixed_after_hours": 1.5}"#).unwrap();
        assert_eq!(s.fixed_after_ms, Some(5_400_000));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (config, words) in [
            (r#"{"fixed_after_hours": 0}"#, "fixed_after_hours"),
            (r#"{"fixed_after_hours": 25}"#, "fixed_after_hours"),
            (r#"{"presence_gap_minutes": 0}"#, "presence_gap_minutes"),
            (r#"{"exclude_tokens": [""]}"#, "1-128 bytes"),
            (r#"{"exclude_token_prefixes": [""]}"#, "1-128 bytes"),
            (r#"{"exclude": ["x"]}"#, "unknown field"),
        ] {
            let err = settings(config).unwrap_err();
            assert!(err.contains(words), "{config}: {err}");
        }
    }
}
