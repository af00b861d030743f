//! The aggregation guard: small cells in a plugin's aggregate streams never leave the router.
//!
//! A count of 1 in "visitors between 03:00 and 03:05" points at one person. On streams a
//! manifest declares `aggregate`, everything a message holds is a count except the top-level
//! members the manifest names in `measures` (times, bin edges, ratios, flags, labels). The
//! host replaces every count above 0 and below the site's minimum cell with `null` ("fewer
//! than the minimum"), whatever the plugin meant to send, and refuses a message with a count
//! that is not one: negative, or not a number at all (a count in a string or a boolean would
//! pass any check on numbers). Zero stays: that nobody came identifies no one.
//!
//! And on every stream that is not per-device, values that name one device or one sighting
//! (the plugin's pseudonyms, a sighting's capture time to the millisecond) are refused, so two
//! plugins' outputs cannot be joined on what they were handed ([`refuse_per_device_values`]).

use super::latest::{self, Latest};
use crate::privacy::memo::Memo;
use crate::untrusted;
use serde_json::Value;
use std::collections::VecDeque;

/// Why a message is not an aggregate: the text of the `not-json` refusal (the interface has
/// no variant of its own for it), which starts with [`NOT_A_COUNT`].
pub type NotCounts = String;

pub const NOT_A_COUNT: &str = "not a count at ";

/// Checks `doc` as an aggregate message and suppresses its small counts: every value outside
/// the top-level members named in `measures` must be a count (a number at least 0, `null`,
/// or an array or object of counts).
pub fn suppress_small_cells(
    doc: &mut Value,
    measures: &[String],
    min_cell: u32,
) -> Result<(), NotCounts> {
    match doc {
        Value::Object(members) => {
            for (name, v) in members.iter_mut() {
                if !measures.contains(name) {
                    counts(v, &mut format!("/{name}"), min_cell)?;
                }
            }
            Ok(())
        }
        doc => counts(doc, &mut String::new(), min_cell),
    }
}

fn counts(v: &mut Value, at: &mut String, min_cell: u32) -> Result<(), NotCounts> {
    let not_a_count = |what: &str, at: &str| {
        Err(format!(
            "{NOT_A_COUNT}\"{}\": {what} (an aggregate stream carries counts; name the member in the manifest's `measures` if it is not one)",
            untrusted::escape(if at.is_empty() { "/" } else { at }, 64)
        ))
    };
    match v {
        Value::Null => Ok(()),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x < 0.0 {
                return not_a_count("a negative number", at);
            }
            // A minimum of 1 turns suppression off: an estimate of 0.5 stays.
            if min_cell > 1 && x > 0.0 && x < f64::from(min_cell) {
                *v = Value::Null;
            }
            Ok(())
        }
        Value::String(_) => not_a_count("a string", at),
        Value::Bool(_) => not_a_count("a boolean", at),
        Value::Array(items) => {
            let len = at.len();
            for (i, item) in items.iter_mut().enumerate() {
                at.push_str(&format!("/{i}"));
                counts(item, at, min_cell)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Object(members) => {
            let len = at.len();
            for (name, m) in members.iter_mut() {
                at.push('/');
                at.push_str(name);
                counts(m, at, min_cell)?;
                at.truncate(len);
            }
            Ok(())
        }
    }
}

/// How many of a plugin's latest distinct pseudonyms (device and IE signature), and of its
/// latest sighting times, the host remembers to refuse them on streams that are not
/// per-device: many minutes of sightings in a busy store, for about 170 KiB per plugin.
const REMEMBER: usize = latest::CAPACITY;

/// What a plugin was lately handed that names one device or one sighting: its pseudonyms and
/// the capture times of its sightings. Published verbatim on a stream that is not per-device,
/// such a value would let the back office join two plugins' outputs device by device.
#[derive(Default)]
pub struct Recent {
    /// The latest `REMEMBER` distinct pseudonyms, with their serial numbers of insertion.
    pseudonyms: Latest,
    /// The latest pseudonyms' serial numbers: a burst's repeats of one device need no look
    /// into the larger table (see `privacy::memo`).
    memo: Memo,
    /// Sighting times, ascending (sightings come in capture order): searched by bisection,
    /// the oldest forgotten first.
    times: VecDeque<u64>,
}

impl Recent {
    /// Remembers one sighting as the plugin sees it.
    pub fn saw(&mut self, device: u64, signature: Option<u64>, time_ms: u64) {
        for p in std::iter::once(device).chain(signature) {
            if self.memo.get(p).is_some_and(|n| self.pseudonyms.holds(n)) {
                continue;
            }
            let n = match self.pseudonyms.serial(p) {
                Some(n) => n,
                None => self.pseudonyms.insert(p),
            };
            self.memo.put(p, n);
        }
        // A time on a whole second is what window boundaries are made of: not remembered,
        // so a boundary that happens to equal a sighting's time is never refused.
        if time_ms.is_multiple_of(1000) {
            return;
        }
        // Capture order makes the newest time the usual case: no bisection for it.
        if self.times.back().is_none_or(|&last| last < time_ms) {
            if self.times.len() == REMEMBER {
                self.times.pop_front();
            }
            self.times.push_back(time_ms);
        } else if self.times.binary_search(&time_ms).is_err() {
            if self.times.len() == REMEMBER {
                self.times.pop_front();
            }
            // At the back, but for a sighting out of capture order.
            let at = self.times.partition_point(|&t| t < time_ms);
            self.times.insert(at, time_ms);
        }
    }

    fn names(&self, x: u64) -> Option<&'static str> {
        if self.pseudonyms.serial(x).is_some() {
            Some("one of the plugin's pseudonyms")
        } else if self.times.binary_search(&x).is_ok() {
            Some("the capture time of a sighting, to the millisecond")
        } else {
            None
        }
    }
}

/// The start of the refusal text for a per-device value (see [`refuse_per_device_values`]).
pub const PER_DEVICE_VALUE: &str = "a per-device value at ";

/// Refuses a message for a stream that is not per-device if any number in it, or any string
/// that is one number in decimal or 16 hex digits, equals a pseudonym or a sighting time the
/// plugin was lately handed (see [`Recent`]).
pub fn refuse_per_device_values(doc: &Value, recent: &Recent) -> Result<(), String> {
    fn walk(v: &Value, at: &mut String, recent: &Recent) -> Result<(), String> {
        let found = match v {
            Value::Number(n) => n.as_u64().and_then(|x| recent.names(x)),
            Value::String(s) => {
                let decimal = (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
                let hex = s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
                let parsed = match (decimal, hex) {
                    (true, _) => s.parse().ok(),
                    (false, true) => u64::from_str_radix(s, 16).ok(),
                    _ => None,
                };
                parsed.and_then(|x| recent.names(x))
            }
            Value::Array(items) => {
                let len = at.len();
                for (i, item) in items.iter().enumerate() {
                    at.push_str(&format!("/{i}"));
                    walk(item, at, recent)?;
                    at.truncate(len);
                }
                None
            }
            Value::Object(members) => {
                let len = at.len();
                for (name, m) in members {
                    at.push('/');
                    at.push_str(name);
                    walk(m, at, recent)?;
                    at.truncate(len);
                }
                None
            }
            Value::Null | Value::Bool(_) => None,
        };
        match found {
            None => Ok(()),
            Some(what) => Err(format!(
                "{PER_DEVICE_VALUE}\"{}\": {what}; only a stream the manifest declares per-device (granted per-device-output) may carry it",
                untrusted::escape(if at.is_empty() { "/" } else { at }, 64)
            )),
        }
    }
    walk(doc, &mut String::new(), recent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_count_outside_the_measures_is_guarded_and_measures_are_left_alone() {
        let mut doc = json!({
            "interval_start_ms": 3,
            "visitors": 4,
            "passers_by": 5,
            "dwell": {"under_5_min": [0, 1, 7]},
            "estimate": 2.5,
            "hidden": {"deep": [3]},
            "bins": [0, 1, 2],
            "partial": true,
        });
        let measures = ["interval_start_ms", "bins", "partial"].map(String::from);
        suppress_small_cells(&mut doc, &measures, 5).unwrap();
        assert_eq!(
            doc,
            json!({
                "interval_start_ms": 3,
                "visitors": null,
                "passers_by": 5,
                "dwell": {"under_5_min": [0, null, 7]},
                "estimate": null,
                "hidden": {"deep": [null]},
                "bins": [0, 1, 2],
                "partial": true,
            })
        );
    }

    #[test]
    fn without_measures_every_number_is_a_count() {
        let mut doc = json!({"a": 1, "b": [4, 9]});
        suppress_small_cells(&mut doc, &[], 5).unwrap();
        assert_eq!(doc, json!({"a": null, "b": [null, 9]}));
        let mut bare = json!(3);
        suppress_small_cells(&mut bare, &[], 5).unwrap();
        assert_eq!(bare, Value::Null);
    }

    #[test]
    fn negative_counts_and_counts_in_strings_or_booleans_are_refused_by_place() {
        for (doc, at, what) in [
            (json!({"visitors": -3}), "/visitors", "negative"),
            (json!({"visitors": "3"}), "/visitors", "a string"),
            (json!({"v": {"x": [0, true]}}), "/v/x/1", "a boolean"),
            (json!("1"), "/", "a string"),
        ] {
            let mut d = doc.clone();
            let e = suppress_small_cells(&mut d, &["t".into()], 5).unwrap_err();
            assert!(
                e.contains(&format!("{at:?}")) && e.contains(what),
                "{doc}: {e}"
            );
        }
        // With min_cell 1 nothing is suppressed, fractions included, but a negative count is
        // still refused.
        let mut doc = json!({"a": 0.5});
        suppress_small_cells(&mut doc, &[], 1).unwrap();
        assert_eq!(doc, json!({"a": 0.5}));
        let mut doc = json!({"a": 1, "b": -1});
        assert!(suppress_small_cells(&mut doc, &[], 1).is_err());
    }

    /// Holds exactly what a plain first-in-first-out set of the latest `REMEMBER` distinct
    /// pseudonyms would, memo or not: checked against one, on a stream where bursts repeat
    /// devices and old devices come back after being forgotten.
    #[test]
    fn recent_holds_the_latest_distinct_pseudonyms_exactly() {
        let mut recent = Recent::default();
        let (mut model, mut order) = (std::collections::HashSet::new(), VecDeque::new());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let spread = |d: u64| d.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut device = 0;
        for step in 0..(REMEMBER as u64 * 6) {
            // Mostly a burst's repeat, else a device from a pool twice the memory's size.
            if next() % 3 == 0 {
                device = spread(next() % (REMEMBER as u64 * 2));
            }
            recent.saw(device, None, 1_000 * step);
            if model.insert(device) {
                order.push_back(device);
                if order.len() > REMEMBER {
                    model.remove(&order.pop_front().unwrap());
                }
            }
            if step % 97 == 0 {
                for d in 0..REMEMBER as u64 * 2 {
                    let p = spread(d);
                    assert_eq!(recent.names(p).is_some(), model.contains(&p), "step {step}");
                }
            }
        }
        assert_eq!(recent.pseudonyms.len(), REMEMBER);
    }

    /// The memo's answer is only trusted while the set still holds the pseudonym: with no
    /// other key taking its memo slot, the pseudonym must be held for exactly `REMEMBER`
    /// insertions and then, seen again, be inserted anew.
    #[test]
    fn a_remembered_pseudonym_is_forgotten_when_the_set_forgets_it() {
        let mut recent = Recent::default();
        let p = 0x5a5a_5a5a_5a5a_5a00; // memo slot 0
        // Other pseudonyms, none in memo slot 0.
        let other = |i: u64| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & !0xff) | 1;
        recent.saw(p, None, 0);
        for i in 0..REMEMBER as u64 - 1 {
            recent.saw(other(i), None, 0);
        }
        recent.saw(p, None, 0);
        assert!(recent.names(p).is_some(), "held for REMEMBER insertions");
        recent.saw(other(u64::MAX), None, 0);
        assert!(recent.names(p).is_none(), "forgotten at the next");
        recent.saw(p, None, 0);
        assert!(recent.names(p).is_some(), "seen again, held again");
    }

    #[test]
    fn pseudonyms_and_millisecond_sighting_times_are_refused_whole_seconds_are_not() {
        let mut recent = Recent::default();
        recent.saw(0xdead_beef_0bad_f00d, Some(77), 1_697_803_200_123);
        recent.saw(5, None, 1_697_803_201_000);
        for doc in [
            json!({"d": 0xdead_beef_0bad_f00d_u64}),
            json!({"x": [{"t": 1_697_803_200_123_u64}]}),
            json!({"sig": 77}),
            json!({"d": "deadbeef0badf00d"}),
            json!({"t": "1697803200123"}),
        ] {
            let e = refuse_per_device_values(&doc, &recent).unwrap_err();
            assert!(e.starts_with(PER_DEVICE_VALUE), "{doc}: {e}");
        }
        for doc in [
            json!({"t": 1_697_803_201_000_u64, "n": 4}),
            json!({"t": 1_697_803_200_124_u64}),
            json!({"s": "hello"}),
        ] {
            refuse_per_device_values(&doc, &recent).unwrap();
        }
        // Out of order still lands in order.
        recent.saw(6, None, 1_697_803_200_100);
        assert!(recent.times.iter().is_sorted());
        refuse_per_device_values(&json!(1_697_803_200_100_u64), &recent).unwrap_err();
        // Memory is bounded: the oldest go first.
        for i in 0..REMEMBER as u64 {
            recent.saw(1_000_000 + i, None, 1_000_000_001 + i);
        }
        refuse_per_device_values(&json!(0xdead_beef_0bad_f00d_u64), &recent).unwrap();
        assert!(recent.pseudonyms.len() <= REMEMBER && recent.times.len() <= REMEMBER);
        assert!(recent.times.iter().is_sorted());
    }

    #[test]
    fn a_member_name_in_a_refusal_is_escaped_and_bounded() {
        let name = format!("x\n{}", "y".repeat(500));
        let mut doc = json!({ name: "1" });
        let e = suppress_small_cells(&mut doc, &[], 5).unwrap_err();
        assert!(!e.contains('\n') && e.len() < 400, "{e}");
    }
}
