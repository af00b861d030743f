//! Groups the addresses of one device within one key epoch into a *cluster*.
//!
//! A universal (factory) address is a cluster of its own for the whole epoch. A randomized
//! address lasts one burst or a few minutes; a new one heard in the room is linked to a
//! cluster that went quiet shortly before, carries the same keyed IE signature (the same model
//! and software) and was heard at a similar signal: the phone that stopped probing under its
//! old address is, most likely, the one that starts under a new one. When several clusters
//! qualify, a continuing sequence number decides, then the closest signal, then the most
//! recent. Nothing here outlives the epoch.

use crate::Observation;
use crate::hash::FastMap;

/// How addresses are linked and what counts as in the room.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// A sighting at least this strong (dBm) was made in the room; one without a signal too.
    pub room_dbm: i32,
    /// A cluster heard less than this long ago is still busy with its own address: a phone
    /// does not probe under two addresses at once.
    pub min_gap_ms: u64,
    /// ...and one silent for longer than this is not linked any more.
    pub max_gap_ms: u64,
    /// The new address's signal is at most this far (dB) from the cluster's last one.
    pub max_dbm_diff: i32,
    /// A sequence number 1..=this after the cluster's last one continues it (tie-breaker).
    pub max_seq_gap: u16,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            // Calibrated on the Fryza lab (README.md); a site calibrates its own.
            room_dbm: -72,
            min_gap_ms: 2_000,
            max_gap_ms: 600_000,
            max_dbm_diff: 10,
            max_seq_gap: 64,
        }
    }
}

/// Devices (addresses) followed per key epoch. Past it, new addresses are not placed in any
/// cluster and never count: a flood of made-up addresses cannot exhaust the plugin's memory.
pub const MAX_TRACKED: usize = 20_000;

/// What the linker knows of one cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub first_ms: u64,
    pub last_ms: u64,
    pub universal: bool,
    /// Addresses placed in it.
    pub addresses: u32,
    /// Heard in the room at least once.
    pub in_room: bool,
    /// Its visit (or passing-by) has been counted: it ended.
    pub ended: bool,
    /// When its current visit began: its first sighting, or the first after a visit ended.
    pub visit_start_ms: u64,
    signature: Option<u64>,
    last_dbm: Option<i8>,
    last_seq: Option<u16>,
    /// Listed in [`Linker::open`].
    open: bool,
    /// Listed in [`Linker::room`], heard in the room last at `room_last_ms`.
    room_marked: bool,
    room_last_ms: u64,
}

impl Cluster {
    /// How long the device has been around: its first to latest sighting this epoch.
    pub fn dwell_ms(&self) -> u64 {
        self.last_ms - self.first_ms
    }
}

/// How a sighting was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Its address already belongs to a cluster.
    Known,
    /// A new address that starts a cluster of its own.
    New,
    /// A new randomized address linked to an earlier cluster; `ambiguous` when more than one
    /// cluster qualified and no sequence number told them apart.
    Linked { ambiguous: bool },
    /// Past [`MAX_TRACKED`]: not followed.
    Untracked,
}

/// Where a sighting went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The cluster's id: unique across epochs, so a window that spans a rotation cannot mix
    /// two epochs' clusters up.
    pub cluster: Option<u64>,
    pub in_room: bool,
    pub placement: Placement,
}

pub struct Linker {
    p: LinkParams,
    epoch: Option<u32>,
    next_id: u64,
    /// The id of this epoch's first cluster: a cluster's id is `base` + its index in
    /// `clusters`, so ids stay unique across epochs while a lookup is an index.
    base: u64,
    clusters: Vec<Cluster>,
    /// Addresses to cluster indices.
    by_device: FastMap<u64, u32>,
    /// Randomized clusters by IE signature, oldest first; pruned as they age out.
    by_signature: FastMap<Option<u64>, Vec<u32>>,
    /// The clusters whose visit is open (heard in the room, not ended): what
    /// [`Linker::take_ended`] looks at, rather than every cluster of the epoch.
    open: Vec<u32>,
    /// The clusters the counter marked heard in the room ([`Linker::mark_in_room`]), for the
    /// stays it counts: kept beside the clusters so a sighting needs no lookup of its own.
    room: Vec<u32>,
}

impl Linker {
    pub fn new(p: LinkParams) -> Self {
        Linker {
            p,
            epoch: None,
            next_id: 0,
            base: 0,
            clusters: Vec::new(),
            by_device: FastMap::default(),
            by_signature: FastMap::default(),
            open: Vec::new(),
            room: Vec::new(),
        }
    }

    pub fn params(&self) -> &LinkParams {
        &self.p
    }

    /// The epoch the clusters belong to.
    pub fn epoch(&self) -> Option<u32> {
        self.epoch
    }

    pub fn cluster(&self, id: u64) -> Option<&Cluster> {
        self.clusters.get(self.index(id)?)
    }

    /// Marks every cluster heard in the room and silent since `silent_since_ms` (or every one,
    /// with `None`) as ended, and returns their dwell times; each cluster ends once.
    pub fn take_ended(&mut self, silent_since_ms: Option<u64>) -> Vec<(bool, u64)> {
        let mut out = Vec::new();
        let clusters = &mut self.clusters;
        self.open.retain(|&i| {
            let c = &mut clusters[i as usize];
            debug_assert!(c.in_room && !c.ended && c.open);
            if silent_since_ms.is_none_or(|t| c.last_ms <= t) {
                c.ended = true;
                c.open = false;
                out.push((c.universal, c.last_ms.saturating_sub(c.visit_start_ms)));
                false
            } else {
                true
            }
        });
        out
    }

    /// Notes that cluster `id` was heard in the room at `time_ms`; the latest such time since
    /// it was marked is kept.
    pub(crate) fn mark_in_room(&mut self, id: u64, time_ms: u64) {
        let Some(index) = self.index(id) else {
            return;
        };
        let c = &mut self.clusters[index];
        if c.room_marked {
            c.room_last_ms = c.room_last_ms.max(time_ms);
        } else {
            c.room_marked = true;
            c.room_last_ms = time_ms;
            self.room.push(index as u32);
        }
    }

    /// The marked clusters, each with when it was last heard in the room.
    pub(crate) fn room_marks(&self) -> impl Iterator<Item = (&Cluster, u64)> {
        self.room.iter().map(|&i| {
            let c = &self.clusters[i as usize];
            (c, c.room_last_ms)
        })
    }

    /// Unmarks the clusters whose last time in the room fails `keep`.
    pub(crate) fn retain_room_marks(&mut self, keep: impl Fn(u64) -> bool) {
        let clusters = &mut self.clusters;
        self.room.retain(|&i| {
            let c = &mut clusters[i as usize];
            c.room_marked = keep(c.room_last_ms);
            c.room_marked
        });
    }

    pub(crate) fn clear_room_marks(&mut self) {
        self.retain_room_marks(|_| false);
    }

    fn index(&self, id: u64) -> Option<usize> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        (index < self.clusters.len()).then_some(index)
    }

    pub fn in_room(&self, signal_dbm: Option<i8>) -> bool {
        signal_dbm.is_none_or(|dbm| i32::from(dbm) >= self.p.room_dbm)
    }

    /// Forgets every cluster and link: new keys, new pseudonyms, nothing to link them to.
    pub fn reset(&mut self, epoch: Option<u32>) {
        self.epoch = epoch;
        self.base = self.next_id;
        self.clusters.clear();
        self.by_device.clear();
        self.by_signature.clear();
        self.open.clear();
        self.room.clear();
    }

    pub fn observe(&mut self, o: &Observation) -> Placed {
        if self.epoch != Some(o.epoch) {
            self.reset(Some(o.epoch));
        }
        let in_room = self.in_room(o.signal_dbm);
        if let Some(&index) = self.by_device.get(&o.device) {
            let c = &mut self.clusters[index as usize];
            if c.ended {
                // Back after its visit was counted: a new visit.
                c.ended = false;
                c.in_room = false;
                c.visit_start_ms = o.time_ms;
            }
            c.first_ms = c.first_ms.min(o.time_ms);
            c.last_ms = c.last_ms.max(o.time_ms);
            c.last_dbm = o.signal_dbm.or(c.last_dbm);
            c.last_seq = o.seq.or(c.last_seq);
            c.in_room |= in_room;
            track_open(&mut self.open, c, index);
            return Placed {
                cluster: Some(self.base + u64::from(index)),
                in_room,
                placement: Placement::Known,
            };
        }
        if self.by_device.len() >= MAX_TRACKED {
            return Placed {
                cluster: None,
                in_room,
                placement: Placement::Untracked,
            };
        }
        let linked = if o.randomized && in_room {
            self.link(o)
        } else {
            None
        };
        let (index, placement) = match linked {
            Some((index, ambiguous)) => {
                let c = &mut self.clusters[index as usize];
                c.last_ms = c.last_ms.max(o.time_ms);
                c.last_dbm = o.signal_dbm.or(c.last_dbm);
                c.last_seq = o.seq.or(c.last_seq);
                c.addresses += 1;
                c.in_room |= in_room;
                track_open(&mut self.open, c, index);
                (index, Placement::Linked { ambiguous })
            }
            None => {
                // At most MAX_TRACKED clusters an epoch: an index fits.
                let index = self.clusters.len() as u32;
                self.next_id += 1;
                self.clusters.push(Cluster {
                    first_ms: o.time_ms,
                    last_ms: o.time_ms,
                    universal: !o.randomized,
                    addresses: 1,
                    in_room,
                    ended: false,
                    visit_start_ms: o.time_ms,
                    signature: o.ie_signature,
                    last_dbm: o.signal_dbm,
                    last_seq: o.seq,
                    open: false,
                    room_marked: false,
                    room_last_ms: 0,
                });
                track_open(&mut self.open, &mut self.clusters[index as usize], index);
                if o.randomized {
                    self.by_signature
                        .entry(o.ie_signature)
                        .or_default()
                        .push(index);
                }
                (index, Placement::New)
            }
        };
        self.by_device.insert(o.device, index);
        Placed {
            cluster: Some(self.base + u64::from(index)),
            in_room,
            placement,
        }
    }

    /// The cluster (index) a new in-room randomized address continues, if any, and whether the
    /// choice was ambiguous.
    fn link(&mut self, o: &Observation) -> Option<(u32, bool)> {
        let p = &self.p;
        let clusters = &self.clusters;
        let ids = self.by_signature.get_mut(&o.ie_signature)?;
        let mut best: Option<(u32, (bool, i32, u64))> = None;
        let mut qualified = 0u32;
        let mut by_seq = 0u32;
        // One pass: clusters silent past the linking horizon never qualify again and are
        // dropped, so the scan stays short however long the epoch; the rest are ranked in
        // order, the earliest winning a tie.
        ids.retain(|&index| {
            let c = &clusters[index as usize];
            if c.last_ms + p.max_gap_ms < o.time_ms {
                return false;
            }
            debug_assert_eq!(c.signature, o.ie_signature);
            let gap = o.time_ms.saturating_sub(c.last_ms);
            if gap < p.min_gap_ms || gap > p.max_gap_ms {
                return true;
            }
            let diff = match (o.signal_dbm, c.last_dbm) {
                (Some(a), Some(b)) => (i32::from(a) - i32::from(b)).abs(),
                _ => 0,
            };
            if diff > p.max_dbm_diff {
                return true;
            }
            let seq_continues = match (o.seq, c.last_seq) {
                (Some(new), Some(old)) => {
                    let step = new.wrapping_sub(old) & 0x0fff;
                    (1..=p.max_seq_gap).contains(&step)
                }
                _ => false,
            };
            qualified += 1;
            by_seq += u32::from(seq_continues);
            // Best: sequence continues, then closest signal, then most recent.
            let rank = (seq_continues, -diff, c.last_ms);
            if best.is_none_or(|(_, r)| rank > r) {
                best = Some((index, rank));
            }
            true
        });
        let (index, (seq_continues, _, _)) = best?;
        let ambiguous = if seq_continues {
            by_seq > 1
        } else {
            qualified > 1
        };
        Some((index, ambiguous))
    }
}

/// Lists a cluster whose visit just opened (heard in the room, not ended) for
/// [`Linker::take_ended`].
fn track_open(open: &mut Vec<u32>, c: &mut Cluster, index: u32) {
    if c.in_room && !c.ended && !c.open {
        c.open = true;
        open.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(device: u64, time_ms: u64, dbm: i8, seq: u16, sig: u64) -> Observation {
        Observation {
            device,
            epoch: 1,
            time_ms,
            randomized: true,
            signal_dbm: Some(dbm),
            seq: Some(seq),
            ie_signature: Some(sig),
        }
    }

    #[test]
    fn a_new_address_continues_the_phone_that_went_quiet() {
        let mut l = Linker::new(LinkParams::default());
        let a = l.observe(&phone(1, 0, -60, 100, 7));
        let b = l.observe(&phone(2, 30_000, -62, 110, 7));
        assert_eq!(a.cluster, b.cluster);
        assert_eq!(b.placement, Placement::Linked { ambiguous: false });
        let c = l.cluster(b.cluster.unwrap()).unwrap();
        assert_eq!((c.addresses, c.dwell_ms()), (2, 30_000));
    }

    #[test]
    fn another_model_a_far_signal_or_a_long_silence_starts_a_new_cluster() {
        for (label, second) in [
            ("signature", phone(2, 30_000, -60, 101, 8)),
            ("signal", phone(2, 30_000, -45, 101, 7)),
            ("too soon", phone(2, 1_000, -60, 101, 7)),
            ("too late", phone(2, 700_000, -60, 101, 7)),
        ] {
            let mut l = Linker::new(LinkParams::default());
            let a = l.observe(&phone(1, 0, -60, 100, 7));
            let b = l.observe(&second);
            assert_ne!(a.cluster, b.cluster, "{label}");
            assert_eq!(b.placement, Placement::New, "{label}");
        }
    }

    #[test]
    fn a_weak_new_address_is_not_linked() {
        let mut l = Linker::new(LinkParams::default());
        l.observe(&phone(1, 0, -74, 100, 7));
        let b = l.observe(&phone(2, 30_000, -80, 101, 7));
        assert_eq!((b.placement, b.in_room), (Placement::New, false));
    }

    #[test]
    fn a_continuing_sequence_number_decides_between_candidates() {
        let mut l = Linker::new(LinkParams::default());
        let near = l.observe(&phone(1, 0, -60, 4000, 7)).cluster;
        let seq = l.observe(&phone(2, 1_000, -66, 500, 7)).cluster;
        // Closer in signal to the first, but its sequence number continues the second.
        let b = l.observe(&phone(3, 20_000, -61, 520, 7));
        assert_eq!(b.cluster, seq);
        assert_ne!(b.cluster, near);
        assert_eq!(b.placement, Placement::Linked { ambiguous: false });
        // Without a sequence match the closest signal wins, and the link is ambiguous.
        let c = l.observe(&phone(4, 40_000, -63, 3000, 7));
        assert_eq!(c.placement, Placement::Linked { ambiguous: true });
    }

    #[test]
    fn universal_addresses_are_never_linked() {
        let mut l = Linker::new(LinkParams::default());
        let a = l.observe(&phone(1, 0, -60, 100, 7));
        let b = l.observe(&Observation {
            randomized: false,
            ..phone(2, 30_000, -60, 101, 7)
        });
        assert_ne!(a.cluster, b.cluster);
        let later = l.observe(&phone(3, 60_000, -60, 102, 7));
        assert_eq!(later.cluster, a.cluster);
    }

    #[test]
    fn a_new_epoch_forgets_every_link() {
        let mut l = Linker::new(LinkParams::default());
        let a = l.observe(&phone(1, 0, -60, 100, 7));
        let b = l.observe(&Observation {
            epoch: 2,
            ..phone(1, 30_000, -60, 101, 7)
        });
        assert_ne!(a.cluster, b.cluster);
        assert_eq!(b.placement, Placement::New);
        assert!(l.cluster(a.cluster.unwrap()).is_none());
    }

    #[test]
    fn past_the_cap_new_addresses_are_not_followed() {
        let mut l = Linker::new(LinkParams::default());
        for d in 0..MAX_TRACKED as u64 {
            l.observe(&Observation {
                randomized: false,
                ..phone(d, 0, -60, 0, 7)
            });
        }
        let extra = l.observe(&phone(u64::MAX, 10_000, -60, 1, 7));
        assert_eq!(extra.placement, Placement::Untracked);
        assert_eq!(
            l.observe(&phone(0, 10_000, -60, 1, 7)).placement,
            Placement::Known
        );
    }
}
