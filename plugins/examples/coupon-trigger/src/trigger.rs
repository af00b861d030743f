//! When an opted-in customer earns a coupon: a state machine with no I/O, tested on the host.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The rules, from the plugin's config (times in milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// A visit this long earns a coupon; `None`: the dwell trigger is off.
    pub dwell_ms: Option<u64>,
    /// A sighting at or above this signal earns a coupon; `None`: the zone trigger is off.
    pub zone_dbm: Option<i32>,
    /// A silence longer than this ends a visit: the next sighting starts a new one.
    pub max_gap_ms: u64,
    /// After a coupon, the same token gets none for this long.
    pub period_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Dwell,
    Zone,
}

/// One message of the `coupons` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coupon {
    /// The consent token the back office gave at opt-in: the only way it can tell whom the
    /// coupon is for, and deliberately not the pseudonym, which only this plugin understands.
    pub token: String,
    pub reason: Reason,
    /// Capture time of the sighting that earned it.
    pub time_ms: u64,
    /// When the current visit began.
    pub visit_start_ms: u64,
    /// How long the visit had lasted, in whole seconds.
    pub dwell_secs: u64,
    /// The signal of that sighting, if the radio reported one.
    pub signal_dbm: Option<i32>,
}

#[derive(Debug, Clone, Copy)]
struct Visit {
    start_ms: u64,
    last_ms: u64,
}

/// A store sees few opted-in customers at once; the bound only keeps a flood of opt-ins from
/// growing memory without limit.
pub const MAX_TRACKED: usize = 10_000;

/// Visits and issued coupons, by consent token.
#[derive(Debug)]
pub struct Trigger {
    rules: Rules,
    visits: HashMap<String, Visit>,
    issued: Issued,
    paused: bool,
}

/// When each token last got a coupon: the part worth keeping across a plugin reload.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued(pub BTreeMap<String, u64>);

impl Trigger {
    pub fn new(rules: Rules, issued: Issued, paused: bool) -> Trigger {
        Trigger {
            rules,
            visits: HashMap::new(),
            issued,
            paused,
        }
    }

    /// Takes one sighting. Without a token nothing happens at all: not even a visit is kept.
    /// Returns the coupon it earns, which counts as issued only once [`Trigger::confirm`]
    /// says it went out (a refused publish is retried at the next sighting).
    pub fn observe(
        &mut self,
        token: Option<&str>,
        time_ms: u64,
        signal_dbm: Option<i32>,
    ) -> Option<Coupon> {
        let token = token?;
        let full = self.visits.len() >= MAX_TRACKED;
        let visit = match self.visits.get_mut(token) {
            Some(v) => v,
            None if full => return None,
            None => self.visits.entry(token.to_owned()).or_insert(Visit {
                start_ms: time_ms,
                last_ms: time_ms,
            }),
        };
        if time_ms.saturating_sub(visit.last_ms) > self.rules.max_gap_ms {
            visit.start_ms = time_ms;
        }
        visit.last_ms = visit.last_ms.max(time_ms);
        let visit = *visit;
        if self.paused || self.in_period(token, time_ms) {
            return None;
        }
        let dwell_ms = time_ms.saturating_sub(visit.start_ms);
        let zone = self
            .rules
            .zone_dbm
            .zip(signal_dbm)
            .is_some_and(|(zone, dbm)| dbm >= zone);
        let dwelt = self.rules.dwell_ms.is_some_and(|d| dwell_ms >= d);
        let reason = match (zone, dwelt) {
            (true, _) => Reason::Zone,
            (false, true) => Reason::Dwell,
            (false, false) => return None,
        };
        Some(Coupon {
            token: token.to_owned(),
            reason,
            time_ms,
            visit_start_ms: visit.start_ms,
            dwell_secs: dwell_ms / 1000,
            signal_dbm,
        })
    }

    fn in_period(&self, token: &str, time_ms: u64) -> bool {
        self.issued
            .0
            .get(token)
            .is_some_and(|&at| time_ms.saturating_sub(at) < self.rules.period_ms)
    }

    /// The coupon went out: its token gets no other this period.
    pub fn confirm(&mut self, coupon: &Coupon) {
        self.issued.0.insert(coupon.token.clone(), coupon.time_ms);
    }

    /// Forgets visits that ended and coupons whose period is over; true if the issued list
    /// changed (then it is worth saving again).
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let gap = self.rules.max_gap_ms;
        self.visits
            .retain(|_, v| now_ms.saturating_sub(v.last_ms) <= gap);
        let before = self.issued.0.len();
        let period = self.rules.period_ms;
        self.issued
            .0
            .retain(|_, &mut at| now_ms.saturating_sub(at) < period);
        before != self.issued.0.len()
    }

    pub fn issued(&self) -> &Issued {
        &self.issued
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.visits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn rules() -> Rules {
        Rules {
            dwell_ms: Some(20 * MIN),
            zone_dbm: Some(-50),
            max_gap_ms: 10 * MIN,
            period_ms: 60 * MIN,
        }
    }

    fn trigger() -> Trigger {
        Trigger::new(rules(), Issued::default(), false)
    }

    /// Feeds sightings every `step` minutes from `from` to `to` (inclusive) and returns the
    /// coupons, confirming each as the plugin does after a successful publish.
    fn walk(t: &mut Trigger, token: &str, from: u64, to: u64, step: u64) -> Vec<Coupon> {
        let mut out = Vec::new();
        let mut at = from;
        while at <= to {
            if let Some(c) = t.observe(Some(token), at * MIN, Some(-80)) {
                t.confirm(&c);
                out.push(c);
            }
            at += step;
        }
        out
    }

    #[test]
    fn devices_without_a_token_leave_no_trace() {
        let mut t = trigger();
        for i in 0..100 {
            assert_eq!(t.observe(None, i * MIN, Some(-20)), None);
        }
        assert_eq!(t.tracked(), 0);
        assert!(t.issued().0.is_empty());
    }

    #[test]
    fn a_dwell_earns_one_coupon_when_it_reaches_the_threshold() {
        let mut t = trigger();
        let coupons = walk(&mut t, "loyal-1", 0, 45, 1);
        assert_eq!(coupons.len(), 1);
        let c = &coupons[0];
        assert_eq!(
            (c.reason, c.time_ms, c.dwell_secs),
            (Reason::Dwell, 20 * MIN, 1200)
        );
        assert_eq!(c.token, "loyal-1");
        assert_eq!(c.visit_start_ms, 0);
    }

    #[test]
    fn a_gap_longer_than_the_maximum_starts_a_new_visit() {
        let mut t = trigger();
        // 15 minutes, an 11-minute silence, 15 more: never 20 minutes in one visit.
        let mut coupons = walk(&mut t, "a", 0, 15, 1);
        coupons.extend(walk(&mut t, "a", 26, 41, 1));
        assert!(coupons.is_empty(), "{coupons:?}");
        // A silence of exactly the maximum does not break the visit.
        let mut t = trigger();
        let mut coupons = walk(&mut t, "b", 0, 10, 10);
        coupons.extend(walk(&mut t, "b", 20, 20, 1));
        assert_eq!(coupons.len(), 1);
    }

    #[test]
    fn at_most_one_coupon_per_period_however_long_the_stay() {
        let mut t = trigger();
        let coupons = walk(&mut t, "a", 0, 200, 1);
        let times: Vec<u64> = coupons.iter().map(|c| c.time_ms / MIN).collect();
        // At 20, then as soon as each 60-minute period is over: still dwelling.
        assert_eq!(times, [20, 80, 140, 200]);
    }

    #[test]
    fn a_strong_signal_earns_a_zone_coupon_at_once() {
        let mut t = trigger();
        let c = t.observe(Some("a"), 5 * MIN, Some(-50)).unwrap();
        assert_eq!(
            (c.reason, c.dwell_secs, c.signal_dbm),
            (Reason::Zone, 0, Some(-50))
        );
        t.confirm(&c);
        assert_eq!(
            t.observe(Some("a"), 6 * MIN, Some(-30)),
            None,
            "same period"
        );
        assert_eq!(
            t.observe(Some("b"), 6 * MIN, Some(-51)),
            None,
            "below the zone"
        );
        assert_eq!(
            t.observe(Some("b"), 6 * MIN, None),
            None,
            "no signal, no zone"
        );
    }

    #[test]
    fn tokens_are_limited_separately() {
        let mut t = trigger();
        let a = t.observe(Some("a"), 0, Some(-10)).unwrap();
        t.confirm(&a);
        assert!(t.observe(Some("b"), 0, Some(-10)).is_some());
    }

    #[test]
    fn an_unconfirmed_coupon_is_offered_again() {
        let mut t = trigger();
        assert!(t.observe(Some("a"), 0, Some(-10)).is_some());
        assert!(t.observe(Some("a"), 1000, Some(-10)).is_some());
    }

    #[test]
    fn paused_issues_nothing_but_keeps_measuring_the_visit() {
        let mut t = trigger();
        t.set_paused(true);
        assert!(walk(&mut t, "a", 0, 30, 1).is_empty());
        t.set_paused(false);
        let c = walk(&mut t, "a", 31, 31, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].dwell_secs, 31 * 60);
    }

    #[test]
    fn the_issued_list_survives_through_its_serialised_form() {
        let mut t = trigger();
        let c = t.observe(Some("a"), 0, Some(-10)).unwrap();
        t.confirm(&c);
        let saved = serde_json::to_vec(t.issued()).unwrap();
        let restored: Issued = serde_json::from_slice(&saved).unwrap();
        let mut t = Trigger::new(rules(), restored, false);
        assert_eq!(t.observe(Some("a"), 30 * MIN, Some(-10)), None);
    }

    #[test]
    fn ended_visits_and_periods_are_forgotten() {
        let mut t = trigger();
        let c = t.observe(Some("a"), 0, Some(-10)).unwrap();
        t.confirm(&c);
        assert!(!t.expire(5 * MIN));
        assert_eq!(t.tracked(), 1);
        assert!(t.expire(61 * MIN));
        assert_eq!(t.tracked(), 0);
        assert!(t.issued().0.is_empty());
    }

    #[test]
    fn the_dwell_trigger_can_be_off() {
        let mut t = Trigger::new(
            Rules {
                dwell_ms: None,
                ..rules()
            },
            Issued::default(),
            false,
        );
        assert!(walk(&mut t, "a", 0, 120, 1).is_empty());
    }
}
