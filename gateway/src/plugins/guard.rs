//! The aggregation guard: small cells in a plugin's aggregate streams never leave the router.
//!
//! A count of 1 in "visitors between 03:00 and 03:05" points at one person. On streams a
//! manifest declares `aggregate`, the host replaces every count above 0 and below the site's
//! minimum cell with `null` ("fewer than the minimum"), whatever the plugin meant to send.
//! Zero stays: that nobody came identifies no one.

use serde_json::Value;

/// Suppresses small counts in `doc`: in the top-level members named in `counts`, or in the
/// whole document when the manifest names none.
pub fn suppress_small_cells(doc: &mut Value, counts: Option<&[String]>, min_cell: u32) {
    match (counts, doc) {
        (Some(names), Value::Object(members)) => {
            for name in names {
                if let Some(v) = members.get_mut(name) {
                    suppress(v, min_cell);
                }
            }
        }
        (_, doc) => suppress(doc, min_cell),
    }
}

fn suppress(v: &mut Value, min_cell: u32) {
    match v {
        Value::Number(n) => {
            let small = n
                .as_f64()
                .is_some_and(|x| x > 0.0 && x < f64::from(min_cell));
            if small {
                *v = Value::Null;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| suppress(i, min_cell)),
        Value::Object(members) => members.values_mut().for_each(|m| suppress(m, min_cell)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_counts_in_named_members_become_null_and_others_stay() {
        let mut doc = json!({
            "interval_start_ms": 3,
            "visitors": 4,
            "passers_by": 5,
            "dwell": {"under_5_min": [0, 1, 7]},
            "estimate": 2.5,
        });
        let names = ["visitors", "passers_by", "dwell", "estimate"].map(String::from);
        suppress_small_cells(&mut doc, Some(&names), 5);
        assert_eq!(
            doc,
            json!({
                "interval_start_ms": 3,
                "visitors": null,
                "passers_by": 5,
                "dwell": {"under_5_min": [0, null, 7]},
                "estimate": null,
            })
        );
    }

    #[test]
    fn without_names_every_number_is_a_count() {
        let mut doc = json!({"a": 1, "b": [4, 9]});
        suppress_small_cells(&mut doc, None, 5);
        assert_eq!(doc, json!({"a": null, "b": [null, 9]}));
    }
}
