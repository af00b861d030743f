//! Sightings written by hand, one JSON object a line: a plugin's input without a capture.
//!
//! Each line is a sighting as the privacy gate hands it on. `device` is any number standing
//! for one device (never a MAC address: the gate is the only code that may read one); the
//! host still gives the plugin its own keyed pseudonym of it, as on a router.

use crate::pipeline::Event;
use crate::privacy::{DeviceId, Sighting};
use serde::Deserialize;
use std::io::BufRead;
use std::sync::mpsc::SyncSender;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    device: u64,
    time_ms: u64,
    #[serde(default = "first_epoch")]
    epoch: u32,
    #[serde(default)]
    randomized: bool,
    #[serde(default)]
    signal_dbm: Option<i8>,
    #[serde(default)]
    freq_mhz: Option<u16>,
    #[serde(default)]
    seq: u16,
    #[serde(default)]
    ie_signature: Option<u64>,
    #[serde(default)]
    consent_token: Option<String>,
}

fn first_epoch() -> u32 {
    1
}

/// Parses one line; `None` for blank lines and `#` comments.
fn parse(text: &str) -> Result<Option<Sighting>, String> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let l: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if l.epoch == 0 {
        return Err("epoch starts at 1".into());
    }
    Ok(Some(Sighting {
        device: DeviceId(l.device),
        epoch: l.epoch,
        time_ms: l.time_ms,
        signal_dbm: l.signal_dbm,
        freq_mhz: l.freq_mhz,
        randomized: l.randomized,
        seq: l.seq & 0x0fff,
        ie_signature: l.ie_signature,
        consent: l.consent_token.map(Into::into),
    }))
}

/// Sends every sighting of `input` to the plugin stage, in order, then the time of the last
/// one (as the end of a capture does). Time and epoch may not go back.
pub fn feed(name: &str, input: impl BufRead, tx: SyncSender<Event>) -> Result<(), String> {
    let (mut last_ms, mut last_epoch) = (0, 1);
    for (i, line) in input.lines().enumerate() {
        let at = |e: String| format!("{name}:{}: {e}", i + 1);
        let line = line.map_err(|e| at(e.to_string()))?;
        let Some(s) = parse(&line).map_err(at)? else {
            continue;
        };
        if s.time_ms < last_ms || s.epoch < last_epoch {
            return Err(at(
                "time_ms and epoch must not go back: sightings are in capture order".into(),
            ));
        }
        (last_ms, last_epoch) = (s.time_ms, s.epoch);
        if tx.send(Event::Sighting(s)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Event::Clock(last_ms));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fills_what_it_names_and_defaults_the_rest() {
        let s = parse(r#"{"device": 7, "time_ms": 1000, "signal_dbm": -60}"#)
            .unwrap()
            .unwrap();
        assert_eq!((s.device, s.epoch, s.time_ms), (DeviceId(7), 1, 1000));
        assert_eq!(
            (s.signal_dbm, s.freq_mhz, s.randomized),
            (Some(-60), None, false)
        );
        assert_eq!(parse("  # a comment").unwrap(), None);
    }

    #[test]
    fn a_misspelt_field_or_a_mac_is_an_error() {
        assert!(parse(r#"{"device": 7, "time": 1000}"#).is_err());
        assert!(parse(r#"{"device": "aa:bb:cc:dd:ee:ff", "time_ms": 1}"#).is_err());
    }

    #[test]
    fn time_going_back_is_refused_with_its_line() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(8);
        let text = "{\"device\":1,\"time_ms\":5000}\n{\"device\":1,\"time_ms\":4000}\n";
        let e = feed("in.jsonl", text.as_bytes(), tx).unwrap_err();
        assert!(e.starts_with("in.jsonl:2:"), "{e}");
    }
}
