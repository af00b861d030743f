//! Emits a coupon event for a customer who opted in (the sighting carries a consent token)
//! when the visit has lasted `dwell_minutes` or the phone comes within the zone (signal at or
//! above `zone_dbm`), at most once per token per `period_minutes`. Stream `coupons`:
//!
//! ```json
//! {"token":"loyalty-4711","reason":"dwell","time_ms":1697804392417,
//!  "visit_start_ms":1697803192417,"dwell_secs":1200,"signal_dbm":-81}
//! ```
//!
//! Sightings without a token are ignored before anything is stored: the plugin keeps no state
//! about people who did not opt in. Messages `pause` and `resume` (topic
//! `probegate/v1/{site}/cmd/plugins/{plugin}/pause`) stop and restart issuing.

mod trigger;

use probegate_sdk::{LogLevel, Plugin, Sighting, export_plugin, log, parse_config, publish, state};
use serde::Deserialize;
use trigger::{Issued, Rules, Trigger};

/// The plugin's `config` table; the README explains each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Minutes of one visit that earn a coupon; 0 turns the dwell trigger off.
    #[serde(default = "default_dwell")]
    dwell_minutes: u64,
    /// Signal (dBm) at or above which the phone is in the zone; absent: no zone trigger.
    #[serde(default)]
    zone_dbm: Option<i32>,
    /// A silence longer than this (minutes) ends a visit.
    #[serde(default = "default_gap")]
    max_gap_minutes: u64,
    /// Minutes after a coupon during which the same token gets no other.
    #[serde(default = "default_period")]
    period_minutes: u64,
}

fn default_dwell() -> u64 {
    20
}
fn default_gap() -> u64 {
    10
}
fn default_period() -> u64 {
    1440
}

const MINUTE_MS: u64 = 60_000;

fn rules(config: &str) -> Result<Rules, String> {
    let c: Config = parse_config(config)?;
    if c.dwell_minutes > 1440 {
        return Err("dwell_minutes must be between 0 (off) and 1440".into());
    }
    if let Some(z) = c.zone_dbm
        && !(-120..=0).contains(&z)
    {
        return Err("zone_dbm must be between -120 and 0".into());
    }
    if c.dwell_minutes == 0 && c.zone_dbm.is_none() {
        return Err("no trigger: set dwell_minutes above 0, or zone_dbm".into());
    }
    if !(1..=1440).contains(&c.max_gap_minutes) {
        return Err("max_gap_minutes must be between 1 and 1440".into());
    }
    if !(1..=7 * 1440).contains(&c.period_minutes) {
        return Err("period_minutes must be between 1 and 10080 (a week)".into());
    }
    Ok(Rules {
        dwell_ms: (c.dwell_minutes > 0).then_some(c.dwell_minutes * MINUTE_MS),
        zone_dbm: c.zone_dbm,
        max_gap_ms: c.max_gap_minutes * MINUTE_MS,
        period_ms: c.period_minutes * MINUTE_MS,
    })
}

/// State keys: both survive a new version of the plugin or a restart after a trap, so an
/// upgrade neither re-issues this period's coupons nor resumes a paused campaign.
const ISSUED: &str = "issued";
const PAUSED: &str = "paused";

struct CouponTrigger {
    trigger: Trigger,
    last_expiry_ms: u64,
}

impl CouponTrigger {
    fn save_issued(&self) {
        if let Err(e) = state::set_json(ISSUED, self.trigger.issued()) {
            // Kept in memory all the same; only a reload would forget it.
            log(
                LogLevel::Warn,
                &format!("issued coupons not saved to state: {e:?}"),
            );
        }
    }
}

impl Plugin for CouponTrigger {
    fn init(config: &str) -> Result<Self, String> {
        let rules = rules(config)?;
        let issued: Issued = state::get_json(ISSUED).unwrap_or_default();
        let paused: bool = state::get_json(PAUSED).unwrap_or(false);
        Ok(CouponTrigger {
            trigger: Trigger::new(rules, issued, paused),
            last_expiry_ms: 0,
        })
    }

    fn on_sightings(&mut self, batch: &[Sighting]) {
        for s in batch {
            let signal = s.signal_dbm.map(i32::from);
            let Some(coupon) = self
                .trigger
                .observe(s.consent_token.as_deref(), s.time_ms, signal)
            else {
                continue;
            };
            // Only a coupon that went out counts against the period; a refused one (rate
            // limit) is offered again at the customer's next sighting.
            if publish("coupons", &coupon).is_ok() {
                self.trigger.confirm(&coupon);
                self.save_issued();
            }
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_expiry_ms) < MINUTE_MS {
            return;
        }
        self.last_expiry_ms = now_ms;
        if self.trigger.expire(now_ms) {
            self.save_issued();
        }
    }

    fn on_message(&mut self, topic: &str, _payload: &str) {
        let paused = match topic {
            "pause" => true,
            "resume" => false,
            other => {
                log(
                    LogLevel::Warn,
                    &format!("unknown message {other:?}: expected pause or resume"),
                );
                return;
            }
        };
        self.trigger.set_paused(paused);
        let _ = state::set_json(PAUSED, &paused);
        log(
            LogLevel::Info,
            if self.trigger.paused() {
                "coupons paused"
            } else {
                "coupons resumed"
            },
        );
    }
}

export_plugin!(CouponTrigger);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_twenty_minutes_a_ten_minute_gap_and_a_day() {
        let r = rules("{}").unwrap();
        assert_eq!(
            r,
            Rules {
                dwell_ms: Some(20 * MINUTE_MS),
                zone_dbm: None,
                max_gap_ms: 10 * MINUTE_MS,
                period_ms: 1440 * MINUTE_MS,
            }
        );
    }

    #[test]
    fn a_zone_alone_is_a_valid_trigger() {
        let r = rules(r#"{"dwell_minutes": 0, "zone_dbm": -55}"#).unwrap();
        assert_eq!((r.dwell_ms, r.zone_dbm), (None, Some(-55)));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (config, words) in [
            (r#"{"dwell_minutes": 0}"#, "no trigger"),
            (r#"{"zone_dbm": 5}"#, "zone_dbm"),
            (r#"{"max_gap_minutes": 0}"#, "max_gap_minutes"),
            (r#"{"period_minutes": 0}"#, "period_minutes"),
            (r#"{"dwell_minutes": 5000}"#, "dwell_minutes"),
            (r#"{"dwell": 5}"#, "unknown field"),
        ] {
            let err = rules(config).unwrap_err();
            assert!(err.contains(words), "{config}: {err}");
        }
    }
}
