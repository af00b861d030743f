//! The aggregation guard: small cells in a plugin's aggregate streams never leave the router.
//!
//! A count of 1 in "visitors between 03:00 and 03:05" points at one person. On streams a
//! manifest declares `aggregate`, everything a message holds is a count except the top-level
//! members the manifest names in `measures` (times, bin edges, ratios, flags, labels). The
//! host replaces every count above 0 and below the site's minimum cell with `null` ("fewer
//! than the minimum"), whatever the plugin meant to send, and refuses a message with a count
//! that is not one: negative, or not a number at all (a count in a string or a boolean would
//! pass any check on numbers). Zero stays: that nobody came identifies no one.

use crate::untrusted;
use serde_json::Value;

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

    #[test]
    fn a_member_name_in_a_refusal_is_escaped_and_bounded() {
        let name = format!("x\n{}", "y".repeat(500));
        let mut doc = json!({ name: "1" });
        let e = suppress_small_cells(&mut doc, &[], 5).unwrap_err();
        assert!(!e.contains('\n') && e.len() < 400, "{e}");
    }
}
