//! The store's policy as a state machine with no I/O, tested on the host.

use std::collections::{BTreeSet, HashMap};

/// What the policy decides for one sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Pass,
    /// Passed, and its owner opted in: later plugins get the `opted-in` tag.
    OptedIn,
    /// The consent token is on the exclusion list (staff).
    Excluded,
    /// Present so long today that it is equipment, not a visitor.
    Fixed,
}

/// The policy's fixed part, from the plugin's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub exclude_tokens: BTreeSet<String>,
    pub exclude_prefixes: Vec<String>,
    /// A device present longer than this in one key epoch is dropped from then on.
    pub fixed_after_ms: Option<u64>,
    /// Two sightings of one device at most this far apart count as continuous presence.
    pub presence_gap_ms: u64,
    pub tag_opted_in: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Presence {
    present_ms: u64,
    last_ms: u64,
    fixed: bool,
}

/// Idle devices with less presence than this are forgotten at [`Policy::expire`]: passers-by
/// and randomized addresses, which would otherwise fill memory over a day.
const KEEP_IF_PRESENT_MS: u64 = 10 * 60_000;
/// Beyond this many tracked devices, new ones are not tracked (and so never found fixed):
/// failing open here only lets some equipment through, while failing closed would drop
/// visitors.
pub const MAX_DEVICES: usize = 50_000;
/// The longest runtime exclusion list, and the longest token (the host's consent registry
/// allows no longer).
pub const MAX_RUNTIME_TOKENS: usize = 1_000;
pub const MAX_TOKEN_LEN: usize = 128;

pub struct Policy {
    settings: Settings,
    /// Tokens excluded by back-office messages; saved in the plugin's state by the caller.
    runtime: BTreeSet<String>,
    /// By (pseudonym, epoch): a new epoch is a new device, as the host says.
    devices: HashMap<(u64, u32), Presence>,
}

impl Policy {
    pub fn new(settings: Settings, runtime: BTreeSet<String>) -> Policy {
        Policy {
            settings,
            runtime,
            devices: HashMap::new(),
        }
    }

    pub fn judge(
        &mut self,
        device: u64,
        epoch: u32,
        time_ms: u64,
        token: Option<&str>,
    ) -> Judgement {
        if token.is_some_and(|t| self.is_excluded(t)) {
            return Judgement::Excluded;
        }
        if self.is_fixed(device, epoch, time_ms) {
            return Judgement::Fixed;
        }
        match token {
            Some(_) if self.settings.tag_opted_in => Judgement::OptedIn,
            _ => Judgement::Pass,
        }
    }

    fn is_excluded(&self, token: &str) -> bool {
        self.settings.exclude_tokens.contains(token)
            || self.runtime.contains(token)
            || self
                .settings
                .exclude_prefixes
                .iter()
                .any(|p| token.starts_with(p.as_str()))
    }

    fn is_fixed(&mut self, device: u64, epoch: u32, time_ms: u64) -> bool {
        let Some(limit) = self.settings.fixed_after_ms else {
            return false;
        };
        let full = self.devices.len() >= MAX_DEVICES;
        let p = match self.devices.get_mut(&(device, epoch)) {
            Some(p) => p,
            None if full => return false,
            None => self.devices.entry((device, epoch)).or_insert(Presence {
                last_ms: time_ms,
                ..Presence::default()
            }),
        };
        let since = time_ms.saturating_sub(p.last_ms);
        if since <= self.settings.presence_gap_ms {
            p.present_ms += since;
        }
        p.last_ms = p.last_ms.max(time_ms);
        if p.present_ms > limit {
            p.fixed = true;
        }
        p.fixed
    }

    /// Forgets devices idle longer than the presence gap that were around only briefly.
    pub fn expire(&mut self, now_ms: u64) {
        let gap = self.settings.presence_gap_ms;
        self.devices.retain(|_, p| {
            p.fixed || p.present_ms >= KEEP_IF_PRESENT_MS || now_ms.saturating_sub(p.last_ms) <= gap
        });
    }

    /// Adds tokens to the runtime list; the error names what was refused (nothing changes then).
    pub fn exclude(&mut self, tokens: &[String]) -> Result<(), String> {
        check_tokens(tokens)?;
        let mut next = self.runtime.clone();
        next.extend(tokens.iter().cloned());
        if next.len() > MAX_RUNTIME_TOKENS {
            return Err(format!(
                "the runtime exclusion list would hold {} tokens; at most {MAX_RUNTIME_TOKENS}",
                next.len()
            ));
        }
        self.runtime = next;
        Ok(())
    }

    /// Removes tokens from the runtime list. Tokens excluded by the config stay excluded: the
    /// config is the store's standing policy, a message only adds to it.
    pub fn include(&mut self, tokens: &[String]) -> Result<(), String> {
        check_tokens(tokens)?;
        for t in tokens {
            self.runtime.remove(t);
        }
        Ok(())
    }

    pub fn runtime(&self) -> &BTreeSet<String> {
        &self.runtime
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.devices.len()
    }
}

fn check_tokens(tokens: &[String]) -> Result<(), String> {
    match tokens
        .iter()
        .find(|t| !(1..=MAX_TOKEN_LEN).contains(&t.len()))
    {
        Some(t) => Err(format!(
            "a token is 1-{MAX_TOKEN_LEN} bytes; refused one of {} bytes",
            t.len()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn settings() -> Settings {
        Settings {
            exclude_tokens: ["staff-ann".to_owned()].into(),
            exclude_prefixes: vec!["emp-".into()],
            fixed_after_ms: Some(60 * MIN),
            presence_gap_ms: 10 * MIN,
            tag_opted_in: true,
        }
    }

    fn policy() -> Policy {
        Policy::new(settings(), BTreeSet::new())
    }

    #[test]
    fn tokens_on_the_list_or_with_a_listed_prefix_are_dropped() {
        let mut p = policy();
        assert_eq!(p.judge(1, 0, 0, Some("staff-ann")), Judgement::Excluded);
        assert_eq!(p.judge(2, 0, 0, Some("emp-0042")), Judgement::Excluded);
        assert_eq!(p.judge(3, 0, 0, Some("staff-bob")), Judgement::OptedIn);
        assert_eq!(p.judge(4, 0, 0, None), Judgement::Pass);
    }

    #[test]
    fn the_tag_can_be_turned_off() {
        let mut p = Policy::new(
            Settings {
                tag_opted_in: false,
                ..settings()
            },
            BTreeSet::new(),
        );
        assert_eq!(p.judge(3, 0, 0, Some("loyal-1")), Judgement::Pass);
    }

    #[test]
    fn runtime_exclusions_add_to_the_config_and_can_be_lifted() {
        let mut p = policy();
        p.exclude(&["loyal-1".into()]).unwrap();
        assert_eq!(p.judge(1, 0, 0, Some("loyal-1")), Judgement::Excluded);
        p.include(&["loyal-1".into(), "staff-ann".into()]).unwrap();
        assert_eq!(p.judge(1, 0, 1, Some("loyal-1")), Judgement::OptedIn);
        assert_eq!(
            p.judge(2, 0, 1, Some("staff-ann")),
            Judgement::Excluded,
            "the config list is not lifted by a message"
        );
    }

    #[test]
    fn bad_or_too_many_runtime_tokens_change_nothing() {
        let mut p = policy();
        assert!(p.exclude(&["".into()]).is_err());
        assert!(p.exclude(&["x".repeat(129)]).is_err());
        let many: Vec<String> = (0..=MAX_RUNTIME_TOKENS).map(|i| format!("t{i}")).collect();
        assert!(p.exclude(&many).unwrap_err().contains("at most"));
        assert!(p.runtime().is_empty());
    }

    #[test]
    fn a_device_present_longer_than_the_limit_is_dropped_from_then_on() {
        let mut p = policy();
        // A probe a minute: 60 minutes of presence at t = 60, beyond it at t = 61.
        for t in 0..=60 {
            assert_eq!(p.judge(9, 0, t * MIN, None), Judgement::Pass, "t={t}");
        }
        assert_eq!(p.judge(9, 0, 61 * MIN, None), Judgement::Fixed);
        // ...even after a long silence, within the epoch.
        assert_eq!(p.judge(9, 0, 300 * MIN, None), Judgement::Fixed);
        // The same pseudonym number in another epoch is another device.
        assert_eq!(p.judge(9, 1, 301 * MIN, None), Judgement::Pass);
    }

    #[test]
    fn silences_longer_than_the_gap_do_not_count_as_presence() {
        let mut p = policy();
        // Every 11 minutes for a whole day: never "present" between sightings.
        for t in 0..130 {
            assert_eq!(p.judge(9, 0, t * 11 * MIN, None), Judgement::Pass);
        }
        // Presence adds up over separate stretches of one day.
        let mut p = policy();
        for t in 0..=40 {
            p.judge(5, 0, t * MIN, None);
        }
        for t in 100..=120 {
            assert_eq!(p.judge(5, 0, t * MIN, None), Judgement::Pass, "t={t}");
        }
        assert_eq!(p.judge(5, 0, 121 * MIN, None), Judgement::Fixed);
    }

    #[test]
    fn fixed_detection_can_be_off() {
        let mut p = Policy::new(
            Settings {
                fixed_after_ms: None,
                ..settings()
            },
            BTreeSet::new(),
        );
        for t in 0..1000 {
            assert_eq!(p.judge(9, 0, t * MIN, None), Judgement::Pass);
        }
        assert_eq!(p.tracked(), 0);
    }

    #[test]
    fn brief_idle_devices_are_forgotten_and_long_present_ones_kept() {
        let mut p = policy();
        p.judge(1, 0, 0, None);
        for t in 0..=30 {
            p.judge(2, 0, t * MIN, None);
        }
        p.expire(45 * MIN);
        assert_eq!(p.tracked(), 1);
    }
}
