//! Groups the addresses of one device within one key epoch into a *cluster*.
//!
//! A universal (factory) address is a cluster of its own for the whole epoch (unless a full
//! linker has to forget it, see [`MAX_TRACKED`]). A randomized
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

/// Addresses followed at once. When it is reached, the clusters silent past the linking
/// horizon, whose visits are counted, are forgotten (randomized ones first: a fixed device's
/// universal address keeps its long dwell unless nothing else frees room). A busy store's day
/// has far more addresses than this (Android phones take a new one every burst), and without
/// forgetting, every phone after the cap's worth went uncounted. Only a flood of made-up
/// addresses within one horizon leaves new addresses unfollowed: the plugin's memory stays
/// bounded.
pub const MAX_TRACKED: usize = 20_000;
/// A cluster's id is a serial number above its slot's bits, so a slot used again gets an id
/// never seen before (window sets hold ids) while a lookup stays an index.
const SLOT_BITS: u32 = 15;
const _: () = assert!(MAX_TRACKED < 1 << SLOT_BITS);
/// A full linker looks for clusters to forget at most this often (pipeline time): under a flood
/// of addresses it would find none at every sighting.
const SWEEP_EVERY_MS: u64 = 10_000;

/// What the linker knows of one cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// [`Placed::cluster`]; `u64::MAX` while the slot is free.
    id: u64,
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
    /// Its place in [`Linker::lists`]: list and position.
    list: u32,
    pos: u32,
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

/// A randomized cluster as linking compares it, in its signature's list: a new address is
/// compared with every recent cluster of its signature, and a scan over these small records in
/// a row is a fraction of one that looks each cluster up (on the generated store day, with
/// every address followed, that scan was most of the linking's time).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    last_ms: u64,
    index: u32,
    /// The latest signal and sequence number heard, if [`Candidate::has`] says so: options
    /// made the record half as large again (24 bytes against 16) and its tests branchier.
    dbm: i8,
    seq: u16,
    has: u8,
}

const HAS_DBM: u8 = 1;
const HAS_SEQ: u8 = 2;

impl Candidate {
    fn new(index: u32, o: &Observation) -> Self {
        let mut c = Candidate {
            last_ms: o.time_ms,
            index,
            dbm: 0,
            seq: 0,
            has: 0,
        };
        c.update(o);
        c
    }

    fn update(&mut self, o: &Observation) {
        self.last_ms = self.last_ms.max(o.time_ms);
        if let Some(dbm) = o.signal_dbm {
            self.dbm = dbm;
            self.has |= HAS_DBM;
        }
        if let Some(seq) = o.seq {
            self.seq = seq;
            self.has |= HAS_SEQ;
        }
    }
}

/// [`Cluster::list`] of a cluster in no list: universal, or past the linking horizon.
const NO_LIST: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<Candidate>() == 16);

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
    /// Past [`MAX_TRACKED`] with nothing silent enough to forget: not followed.
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
    /// Serial numbers of clusters, across epochs (see [`SLOT_BITS`]).
    next_serial: u64,
    clusters: Vec<Cluster>,
    /// Slots of forgotten clusters, to be used again.
    free: Vec<u32>,
    /// No look for clusters to forget before this (pipeline time).
    next_sweep_ms: u64,
    /// Addresses to cluster indices.
    by_device: FastMap<u64, u32>,
    /// Each IE signature's list in `lists`.
    by_signature: FastMap<Option<u64>, u32>,
    /// The randomized clusters a new address of one signature may continue, in no order; a
    /// cluster leaves its list once silent past the linking horizon.
    lists: Vec<Vec<Candidate>>,
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
            next_serial: 0,
            clusters: Vec::new(),
            free: Vec::new(),
            next_sweep_ms: 0,
            by_device: FastMap::default(),
            by_signature: FastMap::default(),
            lists: Vec::new(),
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
        let index = (id & ((1 << SLOT_BITS) - 1)) as usize;
        (self.clusters.get(index)?.id == id).then_some(index)
    }

    pub fn in_room(&self, signal_dbm: Option<i8>) -> bool {
        signal_dbm.is_none_or(|dbm| i32::from(dbm) >= self.p.room_dbm)
    }

    /// Forgets every cluster and link: new keys, new pseudonyms, nothing to link them to.
    pub fn reset(&mut self, epoch: Option<u32>) {
        self.epoch = epoch;
        self.clusters.clear();
        self.free.clear();
        self.next_sweep_ms = 0;
        self.by_device.clear();
        self.by_signature.clear();
        self.lists.clear();
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
            if c.list != NO_LIST {
                self.lists[c.list as usize][c.pos as usize].update(o);
            }
            c.in_room |= in_room;
            track_open(&mut self.open, c, index);
            return Placed {
                cluster: Some(c.id),
                in_room,
                placement: Placement::Known,
            };
        }
        if self.by_device.len() >= MAX_TRACKED && o.time_ms >= self.next_sweep_ms {
            self.forget_silent(o.time_ms);
            self.next_sweep_ms = o.time_ms.saturating_add(SWEEP_EVERY_MS);
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
                self.lists[c.list as usize][c.pos as usize].update(o);
                c.addresses += 1;
                c.in_room |= in_room;
                track_open(&mut self.open, c, index);
                (index, Placement::Linked { ambiguous })
            }
            None => {
                // Every live cluster has an address followed: at most MAX_TRACKED slots.
                let index = self.free.pop().unwrap_or(self.clusters.len() as u32);
                let id = (self.next_serial << SLOT_BITS) | u64::from(index);
                self.next_serial += 1;
                let cluster = Cluster {
                    id,
                    first_ms: o.time_ms,
                    last_ms: o.time_ms,
                    universal: !o.randomized,
                    addresses: 1,
                    in_room,
                    ended: false,
                    visit_start_ms: o.time_ms,
                    list: NO_LIST,
                    pos: 0,
                    open: false,
                    room_marked: false,
                    room_last_ms: 0,
                };
                match self.clusters.get_mut(index as usize) {
                    Some(slot) => *slot = cluster,
                    None => self.clusters.push(cluster),
                }
                let c = &mut self.clusters[index as usize];
                track_open(&mut self.open, c, index);
                if o.randomized {
                    let lists = &mut self.lists;
                    let list = *self.by_signature.entry(o.ie_signature).or_insert_with(|| {
                        lists.push(Vec::new());
                        (lists.len() - 1) as u32
                    });
                    let candidates = &mut lists[list as usize];
                    (c.list, c.pos) = (list, candidates.len() as u32);
                    candidates.push(Candidate::new(index, o));
                }
                (index, Placement::New)
            }
        };
        self.by_device.insert(o.device, index);
        Placed {
            cluster: Some(self.clusters[index as usize].id),
            in_room,
            placement,
        }
    }

    /// Forgets the clusters (and their addresses) that are silent past the linking horizon and
    /// hold nothing the counter still needs (an open visit, a stay in the room): randomized
    /// ones, and universal ones too if that freed less than a tenth of the room.
    fn forget_silent(&mut self, now_ms: u64) {
        let horizon = self.p.max_gap_ms;
        let forgettable = |c: &Cluster, universal: bool| {
            c.id != u64::MAX
                && c.universal == universal
                && !c.open
                && !c.room_marked
                && c.last_ms.saturating_add(horizon) < now_ms
        };
        let mut dead = vec![false; self.clusters.len()];
        for universal in [false, true] {
            if universal && self.by_device.len() < MAX_TRACKED - MAX_TRACKED / 10 {
                break;
            }
            for (i, c) in self.clusters.iter_mut().enumerate() {
                if forgettable(c, universal) {
                    dead[i] = true;
                    c.id = u64::MAX;
                    self.free.push(i as u32);
                }
            }
            self.by_device.retain(|_, &mut i| !dead[i as usize]);
        }
        // Rare (a full linker, at most every SWEEP_EVERY_MS): the lists are rebuilt whole,
        // the empty ones dropped, and every cluster told its new place.
        let mut lists = std::mem::take(&mut self.lists);
        for list in &mut lists {
            list.retain(|c| !dead[c.index as usize]);
        }
        self.by_signature
            .retain(|_, list| !lists[*list as usize].is_empty());
        for list in self.by_signature.values_mut() {
            let candidates = std::mem::take(&mut lists[*list as usize]);
            *list = self.lists.len() as u32;
            for (pos, c) in candidates.iter().enumerate() {
                let cluster = &mut self.clusters[c.index as usize];
                (cluster.list, cluster.pos) = (*list, pos as u32);
            }
            self.lists.push(candidates);
        }
    }

    /// The cluster (index) a new in-room randomized address continues, if any, and whether the
    /// choice was ambiguous.
    fn link(&mut self, o: &Observation) -> Option<(u32, bool)> {
        let p = &self.p;
        let list = *self.by_signature.get(&o.ie_signature)?;
        let candidates = &mut self.lists[list as usize];
        let clusters = &mut self.clusters;
        let mut best: Option<(u32, (bool, i32, u64))> = None;
        let mut qualified = 0u32;
        let mut by_seq = 0u32;
        // One pass: clusters silent past the linking horizon never qualify again and leave the
        // list, so the scan stays short however long the epoch; the rest are ranked, the
        // earliest made winning a tie (the list has no order: swap_remove).
        let mut i = 0;
        while i < candidates.len() {
            let c = candidates[i];
            if c.last_ms + p.max_gap_ms < o.time_ms {
                candidates.swap_remove(i);
                clusters[c.index as usize].list = NO_LIST;
                if let Some(moved) = candidates.get(i) {
                    clusters[moved.index as usize].pos = i as u32;
                }
                continue;
            }
            i += 1;
            // The signal first: it turns away most candidates (57 % on the store day).
            let diff = match o.signal_dbm {
                Some(a) if c.has & HAS_DBM != 0 => (i32::from(a) - i32::from(c.dbm)).abs(),
                _ => 0,
            };
            if diff > p.max_dbm_diff {
                continue;
            }
            // Past the horizon it left the list above; heard after `o` (out of order), the gap
            // is 0.
            if o.time_ms.saturating_sub(c.last_ms) < p.min_gap_ms {
                continue;
            }
            let seq_continues = match o.seq {
                Some(new) if c.has & HAS_SEQ != 0 => {
                    let step = new.wrapping_sub(c.seq) & 0x0fff;
                    (1..=p.max_seq_gap).contains(&step)
                }
                _ => false,
            };
            qualified += 1;
            by_seq += u32::from(seq_continues);
            // Best: sequence continues, then closest signal, then most recent, then the
            // earliest made (ids grow with every cluster made).
            let rank = (seq_continues, -diff, c.last_ms);
            let better = best.is_none_or(|(b, r)| {
                rank > r || (rank == r && clusters[c.index as usize].id < clusters[b as usize].id)
            });
            if better {
                best = Some((c.index, rank));
            }
        }
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

    #[test]
    fn a_full_linker_forgets_the_long_silent_randomized_clusters_and_keeps_counting() {
        let mut l = Linker::new(LinkParams::default());
        let fixed = l.observe(&Observation {
            randomized: false,
            ..phone(u64::MAX - 1, 0, -60, 0, 9)
        });
        // A day's worth of one-burst Android addresses, out of the room (never open, never
        // marked), each with its own signature so none links to another.
        for d in 1..MAX_TRACKED as u64 {
            l.observe(&phone(d, d, -90, 0, 100 + d));
        }
        let gone = l.observe(&phone(1, 1, -90, 0, 101)).cluster;
        let horizon = LinkParams::default().max_gap_ms;
        let later = MAX_TRACKED as u64 + horizon + 1;
        let new = l.observe(&phone(u64::MAX, later, -60, 1, 7));
        assert_eq!(new.placement, Placement::New);
        // Its slot may be used again, but never its id: window sets hold ids.
        assert!(l.cluster(gone.unwrap()).is_none());
        assert_ne!(new.cluster, gone);
        let back = l.observe(&phone(1, later, -90, 0, 101));
        assert_eq!(back.placement, Placement::New);
        assert_ne!(back.cluster, gone);
        // The universal address silent as long was not needed to make room: it keeps its
        // cluster (and the dwell that marks it as a fixed device).
        let again = l.observe(&Observation {
            randomized: false,
            ..phone(u64::MAX - 1, later, -60, 0, 9)
        });
        assert_eq!(
            (again.placement, again.cluster),
            (Placement::Known, fixed.cluster)
        );
        assert_eq!(l.cluster(fixed.cluster.unwrap()).unwrap().dwell_ms(), later);
    }
}
