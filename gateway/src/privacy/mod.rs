//! The privacy gate: the only code that ever holds a raw MAC address.
//!
//! A probe goes in; a [`Sighting`] with a keyed pseudonym comes out, or nothing does. The raw
//! MAC is read here once, hashed, and dropped with the probe: it is never stored, logged,
//! returned in an error, or handed on. What leaves is the pseudonym, the key epoch and the
//! few radio facts plugins may use.

pub mod consent;
mod keys;
pub(crate) mod memo;
mod space;

pub use consent::{ConsentKey, Registry};

pub use keys::{EpochKeys, RotationSchedule, TimeZone};
pub use space::PseudonymSpace;

use crate::dot11::ProbeRequest;
use std::sync::{Arc, RwLock};

/// A device's pseudonym in the gateway's own space for one key epoch. It never reaches a
/// plugin as is: each plugin gets a further keyed hash of it ([`PseudonymSpace`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceId(pub u64);

/// One probe request after the gate: safe to hand to the plugin host, which passes each field
/// on only to plugins granted the matching capability.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    pub device: DeviceId,
    pub epoch: u32,
    pub time_ms: u64,
    pub signal_dbm: Option<i8>,
    pub freq_mhz: Option<u16>,
    pub randomized: bool,
    pub seq: u16,
    /// A keyed hash (this epoch's key) of the model-identifying information elements; `None`
    /// where no plugin can be granted `ie-signature` (see [`Gate::with_signatures`]).
    pub ie_signature: Option<u64>,
    /// The opt-in token, when the device's owner opted in.
    pub consent: Option<Arc<str>>,
}

/// Why the gate let a probe go no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Weaker than the site's signal floor: probably outside the store.
    BelowSignalFloor,
    /// The device's owner opted out.
    OptedOut,
}

/// The consent key and the registry the MQTT side keeps up to date.
pub struct Consent {
    pub key: ConsentKey,
    pub registry: Arc<RwLock<Registry>>,
}

pub struct Gate {
    keys: EpochKeys,
    signal_floor_dbm: i8,
    consent: Option<Consent>,
    signatures: bool,
}

impl Gate {
    pub fn new(schedule: RotationSchedule, signal_floor_dbm: i8) -> Gate {
        Gate {
            keys: EpochKeys::new(schedule),
            signal_floor_dbm,
            consent: None,
            signatures: true,
        }
    }

    /// Whether to compute IE signatures: walking a probe's elements is most of the gate's
    /// cost, wasted where the site config grants no plugin `ie-signature` (grants are read
    /// only at start, and a bundle cannot grant itself one).
    pub fn with_signatures(mut self, signatures: bool) -> Gate {
        self.signatures = signatures;
        self
    }

    /// Enforces `consent` from now on: opted-out devices go no further than this gate.
    pub fn with_consent(mut self, consent: Consent) -> Gate {
        self.consent = Some(consent);
        self
    }

    /// Pseudonymizes `probe` captured at `time_ms`, or refuses it. Keys rotate here when
    /// capture time crosses the schedule, so replayed and live captures rotate alike.
    pub fn admit(&mut self, probe: ProbeRequest<'_>, time_ms: u64) -> Result<Sighting, Refusal> {
        // A probe without a signal reading (plain 802.11 captures) cannot be placed inside or
        // outside the store; it is admitted, since dropping it would silently undercount.
        if probe
            .signal_dbm
            .is_some_and(|dbm| dbm < self.signal_floor_dbm)
        {
            return Err(Refusal::BelowSignalFloor);
        }
        let mac = probe.transmitter.octets();
        let consent = self.consent_of(&mac, time_ms)?;
        self.keys.rotate_if_due(time_ms);
        Ok(Sighting {
            device: DeviceId(self.keys.pseudonym(&mac)),
            epoch: self.keys.epoch(),
            time_ms,
            signal_dbm: probe.signal_dbm,
            freq_mhz: probe.freq_mhz,
            randomized: probe.randomized(),
            seq: probe.seq,
            ie_signature: self
                .signatures
                .then(|| self.keys.signature(|feed| signature_input(probe.ies, feed))),
            consent,
        })
    }

    /// The device's opt-in token, or the refusal of an opted-out device.
    fn consent_of(&self, mac: &[u8; 6], now_ms: u64) -> Result<Option<Arc<str>>, Refusal> {
        let Some(consent) = &self.consent else {
            return Ok(None);
        };
        // A poisoned lock means the MQTT side panicked mid-update: refusing every device is
        // the only answer that cannot break an opt-out.
        let Ok(registry) = consent.registry.read() else {
            return Err(Refusal::OptedOut);
        };
        if registry.is_empty() {
            return Ok(None);
        }
        let id = consent.key.id(mac);
        match registry.choice(&id, now_ms) {
            Some(consent::Choice::OptOut) => Err(Refusal::OptedOut),
            Some(consent::Choice::OptIn { token }) => Ok(Some(token.as_str().into())),
            None => Ok(None),
        }
    }

    /// Rotates the keys if `now_ms` is past the schedule, so an old key does not outlive its
    /// epoch just because no device came by.
    pub fn rotate_if_due(&mut self, now_ms: u64) {
        self.keys.rotate_if_due(now_ms);
    }
}

/// Feeds the parts of a probe's information elements that describe the phone's model and
/// software (which elements, in which order, and the capability bodies) to `feed`. SSIDs and
/// the channel are left out: they describe the network looked for, not the phone, and an SSID
/// can name its owner.
fn signature_input(ies: &[u8], mut feed: impl FnMut(&[u8])) {
    use crate::dot11::ie::Elements;
    // Rates, HT/VHT/HE capabilities, extended capabilities, interworking: fixed per model.
    const BODY_KEPT: [u8; 6] = [1, 45, 50, 107, 127, 191];
    const VENDOR: u8 = 221;
    const EXTENSION: u8 = 255;
    for e in Elements::new(ies) {
        if BODY_KEPT.contains(&e.tag) {
            feed(&[e.tag, e.body.len() as u8]);
            feed(e.body);
            continue;
        }
        feed(&[e.tag]);
        if e.tag == VENDOR {
            // The vendor's OUI and type say who made the stack; the rest may carry state.
            feed(&e.body[..e.body.len().min(4)]);
        } else if e.tag == EXTENSION {
            feed(&e.body[..e.body.len().min(1)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot11::MacAddr;

    fn probe(mac: [u8; 6], signal_dbm: Option<i8>) -> ProbeRequest<'static> {
        ProbeRequest {
            transmitter: MacAddr::new(mac),
            seq: 1,
            signal_dbm,
            freq_mhz: Some(2412),
            ssid_len: Some(0),
            ies: &[],
        }
    }

    fn gate() -> Gate {
        let schedule = RotationSchedule {
            at_minute: 240,
            every_hours: 24,
            zone: TimeZone::FixedOffsetSecs(0),
        };
        Gate::new(schedule, -80)
    }

    const PHONE: [u8; 6] = [0x3e, 0x38, 0x6f, 0xac, 0xd4, 0x7d];

    #[test]
    fn a_device_below_the_signal_floor_is_refused_before_hashing() {
        let mut g = gate();
        assert_eq!(
            g.admit(probe(PHONE, Some(-81)), 0),
            Err(Refusal::BelowSignalFloor)
        );
        assert!(g.admit(probe(PHONE, Some(-80)), 0).is_ok());
    }

    #[test]
    fn a_probe_without_a_signal_reading_is_admitted() {
        assert!(gate().admit(probe(PHONE, None), 0).is_ok());
    }

    #[test]
    fn one_device_keeps_its_pseudonym_within_an_epoch_and_loses_it_at_rotation() {
        let mut g = gate();
        let a = g.admit(probe(PHONE, None), 1_000).unwrap();
        let b = g.admit(probe(PHONE, None), 2_000).unwrap();
        assert_eq!(a.device, b.device);
        assert!(a.randomized, "0x3e has the locally administered bit");
        let after = g.admit(probe(PHONE, None), 4 * 3_600_000).unwrap();
        assert_eq!(after.epoch, a.epoch + 1);
        assert_ne!(after.device, a.device);
    }

    #[test]
    fn a_sighting_carries_no_trace_of_the_address() {
        let s = gate().admit(probe(PHONE, Some(-50)), 0).unwrap();
        let shown = format!("{s:?}").to_lowercase();
        for form in ["3e:38:6f", "3e386f", "ac:d4:7d", "acd47d"] {
            assert!(!shown.contains(form), "{shown}");
        }
    }
}
