//! Pseudonym keys: random, in RAM only, replaced on a local-time schedule and at every start.

use chrono::{Local, Offset, TimeZone as _};
use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use zeroize::Zeroizing;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// How local time is found: the system's zone (TZ, /etc/localtime) on a router, a fixed offset
/// in tests.
#[derive(Clone, Copy, Debug)]
pub enum TimeZone {
    Local,
    FixedOffsetSecs(i32),
}

impl TimeZone {
    fn offset_ms(self, utc_ms: i64) -> i64 {
        match self {
            TimeZone::FixedOffsetSecs(s) => i64::from(s) * 1000,
            TimeZone::Local => Local
                .timestamp_millis_opt(utc_ms)
                .single()
                .map_or(0, |t| i64::from(t.offset().fix().local_minus_utc()) * 1000),
        }
    }
}

/// Keys rotate at `at_minute` local time and every `every_hours` after it.
#[derive(Clone, Copy, Debug)]
pub struct RotationSchedule {
    pub at_minute: u32,
    pub every_hours: u32,
    pub zone: TimeZone,
}

impl RotationSchedule {
    /// The first rotation instant strictly after `now_ms` (UTC milliseconds).
    pub fn next_after(&self, now_ms: u64) -> u64 {
        let now = now_ms as i64;
        let period = i64::from(self.every_hours.clamp(1, 24)) * HOUR_MS;
        let anchor = i64::from(self.at_minute) * MINUTE_MS;
        let local = now + self.zone.offset_ms(now);
        let next_local = local + (period - (local - anchor).rem_euclid(period));
        // Around a DST change the offset at the boundary may differ from now's; using the
        // boundary's own offset keeps the rotation at the configured wall-clock time.
        let next = next_local - self.zone.offset_ms(next_local - self.zone.offset_ms(now));
        if next > now {
            next as u64
        } else {
            (now + period) as u64
        }
    }
}

/// The current epoch's secret key, and when it must go.
pub struct EpochKeys {
    key: Zeroizing<[u8; 16]>,
    epoch: u32,
    /// Set from the first capture time seen, not the wall clock: a replay of last year's
    /// capture rotates at last year's boundaries, and a router that boots in 1970 and then
    /// gets NTP time rotates at the jump.
    valid_until_ms: Option<u64>,
    schedule: RotationSchedule,
}

impl EpochKeys {
    /// Fresh keys for a new start: nothing from a previous run can be linked to this one.
    pub fn new(schedule: RotationSchedule) -> EpochKeys {
        EpochKeys {
            key: random_key(),
            epoch: 1,
            valid_until_ms: None,
            schedule,
        }
    }

    pub fn rotate_if_due(&mut self, now_ms: u64) -> bool {
        let Some(valid_until) = self.valid_until_ms else {
            self.valid_until_ms = Some(self.schedule.next_after(now_ms));
            return false;
        };
        if now_ms < valid_until {
            return false;
        }
        // Assigning drops the old Zeroizing key, which wipes it.
        self.key = random_key();
        self.epoch = self.epoch.wrapping_add(1);
        self.valid_until_ms = Some(self.schedule.next_after(now_ms));
        tracing::info!(epoch = self.epoch, "pseudonym keys rotated");
        true
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn valid_until_ms(&self) -> Option<u64> {
        self.valid_until_ms
    }

    pub fn pseudonym(&self, bytes: &[u8]) -> u64 {
        keyed_hash(&self.key, bytes)
    }

    /// A keyed hash of what `input` feeds, under this epoch's key but in its own domain, so
    /// it can never equal a device's pseudonym.
    pub fn signature(&self, input: impl FnOnce(&mut dyn FnMut(&[u8]))) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(b"probegate ie-signature\0");
        input(&mut |bytes| h.write(bytes));
        h.finish()
    }
}

/// SipHash-2-4: a PRF with a 128-bit key, made for short inputs like a 6-byte MAC. Without the
/// key, the 2^24 addresses of an OUI cannot be enumerated back from a pseudonym.
pub(crate) fn keyed_hash(key: &[u8; 16], bytes: &[u8]) -> u64 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(bytes);
    h.finish()
}

pub(crate) fn random_key() -> Zeroizing<[u8; 16]> {
    let mut key = Zeroizing::new([0u8; 16]);
    // Without an OS CSPRNG no key is safe: stopping is the only honest answer.
    getrandom::fill(key.as_mut()).expect("the OS random number generator failed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3_600_000;

    fn schedule(at: u32, every: u32, offset_secs: i32) -> RotationSchedule {
        RotationSchedule {
            at_minute: at,
            every_hours: every,
            zone: TimeZone::FixedOffsetSecs(offset_secs),
        }
    }

    /// The signature is SipHash of the domain and the pieces in a row, however they are cut.
    #[test]
    fn a_signature_hashes_its_pieces_as_one_input() {
        let keys = EpochKeys::new(schedule(240, 24, 0));
        let pieces: Vec<Vec<u8>> = [1usize, 2, 0, 200, 3, 60, 1, 300, 2, 255, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut whole = SipHasher24::new_with_key(&keys.key);
        whole.write(b"probegate ie-signature\0");
        whole.write(&pieces.concat());
        let got = keys.signature(|feed| pieces.iter().for_each(|p| feed(p)));
        assert_eq!(got, whole.finish());
    }

    #[test]
    fn daily_rotation_happens_at_the_configured_local_time() {
        // 2024-03-22 10:00 UTC; zone UTC+1; rotate at 04:00 local = 03:00 UTC next day.
        let now = 1_711_101_600_000;
        let next = schedule(240, 24, 3600).next_after(now);
        assert_eq!(next, 1_711_101_600_000 - 7 * 3_600_000 + DAY_MS);
    }

    #[test]
    fn rotation_exactly_at_the_boundary_moves_to_the_next_one() {
        let s = schedule(0, 6, 0);
        let b = s.next_after(1);
        assert_eq!(b, 6 * 3_600_000);
        assert_eq!(s.next_after(b), 12 * 3_600_000);
    }

    #[test]
    fn rotation_gives_a_new_epoch_and_new_pseudonyms() {
        let s = schedule(240, 24, 0);
        let mut keys = EpochKeys::new(s);
        let mac = [0x02, 1, 2, 3, 4, 5];
        let before = keys.pseudonym(&mac);
        assert!(
            !keys.rotate_if_due(0),
            "the first time seen only sets the schedule"
        );
        let due = keys.valid_until_ms().unwrap();
        assert_eq!(due, 4 * 3_600_000);
        assert!(!keys.rotate_if_due(due - 1));
        assert_eq!(keys.pseudonym(&mac), before);
        assert!(keys.rotate_if_due(due));
        assert_eq!(keys.epoch(), 2);
        assert_ne!(keys.pseudonym(&mac), before);
    }

    #[test]
    fn every_start_gets_fresh_keys() {
        let s = schedule(240, 24, 0);
        let mac = [0xdc, 0xfb, 0x48, 1, 2, 3];
        assert_ne!(
            EpochKeys::new(s).pseudonym(&mac),
            EpochKeys::new(s).pseudonym(&mac)
        );
    }
}
