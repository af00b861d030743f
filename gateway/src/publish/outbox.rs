//! The outbox: every QoS 1 message the gateway sends, kept until the broker acknowledges it.
//!
//! rumqttc is only the transport. With a clean session it forgets everything unacknowledged
//! when the connection drops (both what was in flight and what still sat in its queue), so
//! the outbox takes all of it back and sends it again, in order, after the reconnect. This
//! module is the state machine alone; `session.rs` drives it from rumqttc's events.
//!
//! Messages are handed to rumqttc in order and rumqttc numbers them (packet ids) in the
//! order it sends them, so the n-th `Outgoing::Publish` event belongs to the n-th message
//! handed over: that is how an acknowledgement finds its message.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// One message on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The envelope sequence number, for plugin messages (dropped ones are reported by it).
    pub seq: Option<u64>,
    pub topic: String,
    pub body: Vec<u8>,
    pub retain: bool,
    /// Which plugin messages a full outbox gives up first; host messages are never dropped.
    pub priority: Priority,
    /// The plugin whose stream this message is on. Only such messages are ever dropped for
    /// room, and each plugin's share of the outbox is counted by it. `None`: the host's own
    /// (statuses, reports, gap records) or an earlier run's from the spool.
    pub owner: Option<Arc<str>>,
}

impl Entry {
    /// A message of the host's own (status, summary, metrics, gap record): no `seq`, never
    /// dropped for room.
    pub fn host(topic: String, body: Vec<u8>, retain: bool) -> Entry {
        Entry {
            seq: None,
            topic,
            body,
            retain,
            priority: Priority::Normal,
            owner: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    /// Given to rumqttc, no packet id seen yet.
    Handed,
    /// Sent with this packet id, not yet acknowledged.
    InFlight(u16),
}

/// Plugin messages the outbox had to drop, as one contiguous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
}

/// One plugin's dropped messages since the last report: runs contiguous in `seq`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub plugin: Arc<str>,
    pub runs: Vec<Gap>,
}

/// An entry with where it stands, and the spool segment holding a copy, if any.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    state: State,
    segment: Option<u64>,
}

impl Slot {
    /// Whether a full outbox may give this message up: a plugin's, not handed over yet, and
    /// without a spool copy (dropping that would not remove it from flash, and a later run
    /// would send what a gap record had called lost).
    fn droppable(&self) -> bool {
        self.state == State::Waiting && self.entry.owner.is_some() && self.segment.is_none()
    }
}

enum Victim {
    Arriving,
    Queued(usize),
}

/// A delivered message's spool segment, if it had a copy there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub segment: Option<u64>,
}

/// Which plugin message goes when the outbox is full. Host messages (statuses, reports, gap
/// records) and messages already on flash are never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropPolicy {
    /// Keep the newest data (a back office usually wants "now" most).
    #[default]
    Oldest,
    /// Keep the oldest data (a complete history up to the outage).
    Newest,
}

/// A plugin stream's claim on room in a full outbox (`[mqtt] drop_priority`): the lowest
/// class present loses messages first, by the drop policy within the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    fn index(self) -> usize {
        self as usize
    }
}

/// What one plugin holds in the outbox: every message, and those a full outbox may drop, by
/// class.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    held: usize,
    droppable: [usize; 3],
}

pub struct Outbox {
    entries: VecDeque<Slot>,
    max_messages: usize,
    policy: DropPolicy,
    window: usize,
    connected: bool,
    /// Dropped runs by plugin, not yet reported.
    gaps: BTreeMap<Arc<str>, Vec<Gap>>,
    /// Each plugin's share, kept up to date so a full outbox finds its victim without
    /// counting (a flood pushes hundreds of thousands of messages through it).
    shares: BTreeMap<Arc<str>, Share>,
    /// Messages handed to the transport and not yet acknowledged.
    handed: usize,
}

impl Outbox {
    /// At most `max_messages` kept; at most `window` handed to the transport at a time.
    pub fn new(max_messages: usize, window: usize) -> Outbox {
        Outbox::with_policy(max_messages, window, DropPolicy::Oldest)
    }

    pub fn with_policy(max_messages: usize, window: usize, policy: DropPolicy) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            max_messages: max_messages.max(2),
            policy,
            window: window.max(1),
            connected: false,
            gaps: BTreeMap::new(),
            shares: BTreeMap::new(),
            handed: 0,
        }
    }

    fn slot(entry: Entry, segment: Option<u64>) -> Slot {
        Slot {
            entry,
            state: State::Waiting,
            segment,
        }
    }

    /// Counts `slot` in (`sign` 1) or out (`sign` -1) of its plugin's share; `droppable`
    /// only, or held too.
    fn tally(shares: &mut BTreeMap<Arc<str>, Share>, slot: &Slot, held: bool, add: bool) {
        let Some(owner) = &slot.entry.owner else {
            return;
        };
        let share = shares.entry(owner.clone()).or_default();
        let class = slot.entry.priority.index();
        let step = |n: &mut usize| {
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        };
        if held {
            step(&mut share.held);
        }
        if slot.droppable() {
            step(&mut share.droppable[class]);
        }
        if share.held == 0 {
            shares.remove(owner);
        }
    }

    fn append(&mut self, slot: Slot) {
        Outbox::tally(&mut self.shares, &slot, true, true);
        self.entries.push_back(slot);
    }

    fn take(&mut self, i: usize) -> Option<Slot> {
        let slot = self.entries.remove(i)?;
        Outbox::tally(&mut self.shares, &slot, true, false);
        Some(slot)
    }

    /// Changes slot `i` by `f`, keeping its plugin's droppable count right.
    fn update(&mut self, i: usize, f: impl FnOnce(&mut Slot)) {
        let slot = &mut self.entries[i];
        Outbox::tally(&mut self.shares, slot, false, false);
        f(slot);
        Outbox::tally(&mut self.shares, slot, false, true);
    }

    /// Queues a message. When full, a plugin message not yet handed over is dropped (from
    /// the lowest priority class present, from the plugin holding the most messages in it,
    /// by the policy within that) and counted in the gap report. With nothing droppable the
    /// bound gives: host messages are never lost.
    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() >= self.max_messages {
            match self.victim(&entry) {
                Some(Victim::Arriving) => {
                    self.record_drop(&entry);
                    return;
                }
                Some(Victim::Queued(i)) => {
                    let slot = self.take(i).expect("index found by victim");
                    self.record_drop(&slot.entry);
                }
                None => {}
            }
        }
        self.append(Outbox::slot(entry, None));
    }

    /// Which message goes to make room for `arriving`.
    ///
    /// Fairness first among plugins of the class that loses: the plugin holding the most
    /// messages gives one up, so one plugin's flood costs that plugin. A plugin holding less
    /// than its fair share (the bound over the plugins present) loses nothing, even when its
    /// messages are all that could go (the flooder's being on flash or in flight): then the
    /// bound gives, up to twice itself.
    fn victim(&self, arriving: &Entry) -> Option<Victim> {
        let arriving_owner = arriving.owner.as_ref();
        let class = Priority::ALL.into_iter().find(|c| {
            self.shares.values().any(|s| s.droppable[c.index()] > 0)
                || (arriving_owner.is_some() && arriving.priority == *c)
        })?;
        let held = |o: &Arc<str>| self.shares.get(o).map_or(0, |s| s.held);
        let arriving_in_class = arriving_owner.filter(|_| arriving.priority == class);
        // On a tie the arriving message's plugin gives way: it is the one adding.
        let owner = self
            .shares
            .iter()
            .filter(|(_, s)| s.droppable[class.index()] > 0)
            .map(|(o, _)| o)
            .chain(arriving_in_class)
            .max_by_key(|o| held(o))?
            .clone();
        let plugins = self.shares.len()
            + usize::from(arriving_owner.is_some_and(|o| !self.shares.contains_key(o)));
        let fair = self.max_messages / plugins.max(1);
        if held(&owner) < fair && self.entries.len() < 2 * self.max_messages {
            return None;
        }
        let queued = |i: &usize| {
            let s = &self.entries[*i];
            s.droppable() && s.entry.priority == class && s.entry.owner.as_ref() == Some(&owner)
        };
        let arriving_goes = arriving_in_class == Some(&owner);
        match self.policy {
            DropPolicy::Oldest => (0..self.entries.len())
                .find(queued)
                .map(Victim::Queued)
                .or(arriving_goes.then_some(Victim::Arriving)),
            DropPolicy::Newest if arriving_goes => Some(Victim::Arriving),
            DropPolicy::Newest => (0..self.entries.len())
                .rev()
                .find(queued)
                .map(Victim::Queued),
        }
    }

    /// Queues a message a previous run left in the spool segment `segment`.
    pub fn push_spooled(&mut self, entry: Entry, segment: u64) {
        self.append(Outbox::slot(entry, Some(segment)));
    }

    /// Queues a host message outside the bound: gap records and the like must never push
    /// out the very plugin messages whose loss they report.
    pub fn push_unbounded(&mut self, entry: Entry) {
        self.append(Outbox::slot(entry, None));
    }

    /// Queues a message of which only the latest matters (metrics, a retained summary): it
    /// replaces a waiting one on the same topic, so an outage does not pile them up.
    pub fn push_latest(&mut self, entry: Entry) {
        let waiting = self.entries.iter().position(|s| {
            s.state == State::Waiting && s.segment.is_none() && s.entry.topic == entry.topic
        });
        match waiting {
            Some(i) => {
                self.take(i);
                self.entries.insert(i, Outbox::slot(entry, None));
                Outbox::tally(&mut self.shares, &self.entries[i], true, true);
            }
            None => self.append(Outbox::slot(entry, None)),
        }
    }

    /// Queues a message ahead of everything not yet handed over (the "online" status after
    /// a reconnect must not wait behind an outage's backlog).
    pub fn push_first(&mut self, entry: Entry) {
        let at = self
            .entries
            .iter()
            .position(|s| s.state == State::Waiting)
            .unwrap_or(self.entries.len());
        self.entries.insert(at, Outbox::slot(entry, None));
        Outbox::tally(&mut self.shares, &self.entries[at], true, true);
    }

    /// Adds the dropped `entry` to its plugin's runs, which stay sorted and merge when they
    /// touch: with priorities, drops come out of seq order.
    fn record_drop(&mut self, entry: &Entry) {
        let (Some(seq), Some(owner)) = (entry.seq, &entry.owner) else {
            return;
        };
        let gaps = self.gaps.entry(owner.clone()).or_default();
        let at = gaps.partition_point(|g| g.last_seq < seq);
        let joins_before = at > 0 && gaps[at - 1].last_seq + 1 == seq;
        let joins_after = at < gaps.len() && gaps[at].first_seq == seq + 1;
        match (joins_before, joins_after) {
            (true, true) => {
                let after = gaps.remove(at);
                let before = &mut gaps[at - 1];
                before.last_seq = after.last_seq;
                before.count += after.count + 1;
            }
            (true, false) => {
                let before = &mut gaps[at - 1];
                before.last_seq = seq;
                before.count += 1;
            }
            (false, true) => {
                let after = &mut gaps[at];
                after.first_seq = seq;
                after.count += 1;
            }
            (false, false) => gaps.insert(
                at,
                Gap {
                    first_seq: seq,
                    last_seq: seq,
                    count: 1,
                },
            ),
        }
    }

    /// Whether dropped messages wait to be reported.
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Each plugin's messages dropped since the last call, as runs contiguous in `seq`, in
    /// `seq` order. Taken only while connected and at most about once a second, so one
    /// outage's (or one flood's) drops merge into as few runs as the delivered messages
    /// between them allow.
    pub fn take_gaps(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.gaps)
            .into_iter()
            .map(|(plugin, runs)| Dropped { plugin, runs })
            .collect()
    }

    /// Messages without a copy in the spool.
    pub fn unspooled(&self) -> usize {
        self.entries.iter().filter(|s| s.segment.is_none()).count()
    }

    /// Writes up to `max` messages that have no spool copy yet with `write` (one segment),
    /// oldest first, and records which segment holds them. Returns how many were written.
    pub fn spool(
        &mut self,
        max: usize,
        write: impl FnOnce(&[&Entry]) -> std::io::Result<u64>,
    ) -> std::io::Result<usize> {
        let picked: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].segment.is_none())
            .take(max)
            .collect();
        if picked.is_empty() {
            return Ok(0);
        }
        let refs: Vec<&Entry> = picked.iter().map(|&i| &self.entries[i].entry).collect();
        let segment = write(&refs)?;
        for &i in &picked {
            self.update(i, |s| s.segment = Some(segment));
        }
        Ok(picked.len())
    }

    /// The next message to hand to the transport, if connected and the window allows; it
    /// counts as handed from now on.
    pub fn hand_next(&mut self) -> Option<&Entry> {
        if !self.connected || self.handed >= self.window {
            return None;
        }
        let i = self
            .entries
            .iter()
            .position(|s| s.state == State::Waiting)?;
        self.update(i, |s| s.state = State::Handed);
        self.handed += 1;
        Some(&self.entries[i].entry)
    }

    /// The transport refused the last `hand_next` (its queue was full): take it back.
    pub fn unhand_last(&mut self) {
        if let Some(i) = self.entries.iter().rposition(|s| s.state == State::Handed) {
            self.update(i, |s| s.state = State::Waiting);
            self.handed -= 1;
        }
    }

    /// The transport sent a publish with `pkid`: the oldest handed message.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(slot) = self.entries.iter_mut().find(|s| s.state == State::Handed) {
            slot.state = State::InFlight(pkid);
        }
    }

    /// The broker acknowledged `pkid`: that message is delivered. `None` for an ack of
    /// nothing we have in flight.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<Delivered> {
        let i = self
            .entries
            .iter()
            .position(|s| s.state == State::InFlight(pkid))?;
        let slot = self.take(i)?;
        self.handed -= 1;
        Some(Delivered {
            segment: slot.segment,
        })
    }

    pub fn connected(&mut self) {
        self.connected = true;
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The connection dropped: everything handed over is lost with the session and will be
    /// sent again, in the same order.
    pub fn disconnected(&mut self) {
        self.connected = false;
        for i in 0..self.entries.len() {
            if self.entries[i].state != State::Waiting {
                self.update(i, |s| s.state = State::Waiting);
            }
        }
        self.handed = 0;
    }

    /// Messages not yet acknowledged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Entry {
        Entry {
            seq: Some(seq),
            topic: "t".into(),
            body: seq.to_string().into_bytes(),
            retain: false,
            priority: Priority::Normal,
            owner: Some("p".into()),
        }
    }

    /// The single test plugin's dropped runs.
    fn runs(o: &mut Outbox) -> Vec<Gap> {
        o.take_gaps().into_iter().flat_map(|d| d.runs).collect()
    }

    fn hand_all(o: &mut Outbox) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(e) = o.hand_next() {
            out.push(e.seq.unwrap());
        }
        out
    }

    #[test]
    fn nothing_is_handed_over_while_disconnected() {
        let mut o = Outbox::new(10, 4);
        o.push(msg(1));
        assert!(o.hand_next().is_none());
        o.connected();
        assert_eq!(hand_all(&mut o), vec![1]);
    }

    #[test]
    fn an_acknowledged_message_leaves_and_the_window_moves_on() {
        let mut o = Outbox::new(10, 2);
        o.connected();
        for s in 1..=3 {
            o.push(msg(s));
        }
        assert_eq!(hand_all(&mut o), vec![1, 2]);
        o.sent(7);
        o.sent(8);
        assert!(o.acknowledged(7).is_some());
        assert!(o.acknowledged(7).is_none(), "an ack counts once");
        assert_eq!(hand_all(&mut o), vec![3]);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn a_dropped_connection_sends_everything_unacknowledged_again_in_order() {
        let mut o = Outbox::new(10, 10);
        o.connected();
        for s in 1..=4 {
            o.push(msg(s));
        }
        assert_eq!(hand_all(&mut o), vec![1, 2, 3, 4]);
        o.sent(1);
        o.sent(2);
        o.acknowledged(1);
        o.disconnected();
        o.push(msg(5));
        assert!(o.hand_next().is_none());
        o.connected();
        assert_eq!(hand_all(&mut o), vec![2, 3, 4, 5]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_waiting_message_and_reports_the_gap() {
        let mut o = Outbox::new(3, 1);
        o.connected();
        o.push(msg(1));
        assert_eq!(hand_all(&mut o), vec![1]);
        for s in 2..=6 {
            o.push(msg(s));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(
            runs(&mut o),
            vec![Gap {
                first_seq: 2,
                last_seq: 4,
                count: 3
            }]
        );
        assert_eq!(runs(&mut o), vec![]);
        o.sent(1);
        o.acknowledged(1);
        assert_eq!(hand_all(&mut o), vec![5]);
    }

    #[test]
    fn the_newest_policy_keeps_the_history_up_to_the_outage() {
        let mut o = Outbox::with_policy(3, 1, DropPolicy::Newest);
        for s in 1..=5 {
            o.push(msg(s));
        }
        assert_eq!(
            runs(&mut o),
            vec![Gap {
                first_seq: 4,
                last_seq: 5,
                count: 2
            }]
        );
        o.connected();
        assert_eq!(hand_all(&mut o), vec![1]);
    }

    #[test]
    fn only_the_latest_of_a_topic_waits_and_host_messages_push_nothing_out() {
        let mut o = Outbox::new(2, 1);
        o.push(msg(1));
        o.push(msg(2));
        let metrics = |n: u8| Entry {
            seq: None,
            topic: "metrics".into(),
            body: vec![n],
            retain: false,
            priority: Priority::Normal,
            owner: None,
        };
        o.push_latest(metrics(1));
        o.push_latest(metrics(2));
        o.push_unbounded(metrics(9));
        assert!(runs(&mut o).is_empty(), "no plugin message was dropped");
        assert_eq!(o.len(), 4);
        o.connected();
        let mut bodies = Vec::new();
        while let Some(e) = o.hand_next() {
            bodies.push(e.body.clone());
            o.sent(1);
            o.acknowledged(1);
        }
        assert_eq!(bodies, vec![b"1".to_vec(), b"2".to_vec(), vec![2], vec![9]]);
    }

    #[test]
    fn a_status_goes_ahead_of_the_backlog_but_behind_what_is_in_flight() {
        let mut o = Outbox::new(10, 10);
        o.connected();
        o.push(msg(1));
        hand_all(&mut o);
        o.push(msg(2));
        o.push_first(Entry {
            seq: None,
            topic: "status".into(),
            body: vec![],
            retain: true,
            priority: Priority::Normal,
            owner: None,
        });
        let next = o.hand_next().unwrap();
        assert_eq!(next.topic, "status");
    }

    #[test]
    fn spooled_messages_are_written_once_kept_and_released_on_delivery() {
        let mut o = Outbox::new(3, 10);
        o.push(msg(1));
        o.push(msg(2));
        let mut written = Vec::new();
        let n = o
            .spool(10, |es| {
                written.extend(es.iter().map(|e| e.seq.unwrap()));
                Ok(42)
            })
            .unwrap();
        assert_eq!((n, written), (2, vec![1, 2]));
        assert_eq!(o.unspooled(), 0);
        assert_eq!(o.spool(10, |_| unreachable!()).unwrap(), 0);
        // Spooled messages are never dropped for room: the unspooled newcomer goes instead.
        o.push(msg(3));
        o.push(msg(4));
        assert_eq!(runs(&mut o).len(), 1);
        o.connected();
        assert_eq!(hand_all(&mut o), vec![1, 2, 4]);
        o.sent(5);
        assert_eq!(o.acknowledged(5), Some(Delivered { segment: Some(42) }));
    }

    #[test]
    fn a_refused_hand_over_is_taken_back() {
        let mut o = Outbox::new(10, 10);
        o.connected();
        o.push(msg(1));
        o.push(msg(2));
        assert_eq!(o.hand_next().unwrap().seq, Some(1));
        o.unhand_last();
        assert_eq!(hand_all(&mut o), vec![1, 2]);
    }

    fn class(seq: u64, priority: Priority) -> Entry {
        Entry {
            priority,
            ..msg(seq)
        }
    }

    fn seqs(o: &mut Outbox) -> Vec<u64> {
        o.connected();
        hand_all(o)
    }

    #[test]
    fn a_full_outbox_drops_the_lowest_class_first_even_when_it_is_newer() {
        use Priority::{High, Low, Normal};
        let mut o = Outbox::new(4, 10);
        o.push(class(1, High));
        o.push(class(2, Normal));
        o.push(class(3, Low));
        o.push(class(4, High));
        o.push(class(5, Low)); // full: the oldest low one (3) goes
        o.push(class(6, High)); // the only low one left (5) goes
        o.push(class(7, Normal)); // no low one left: the oldest normal one (2) goes
        assert_eq!(
            runs(&mut o),
            vec![
                Gap {
                    first_seq: 2,
                    last_seq: 3,
                    count: 2
                },
                Gap {
                    first_seq: 5,
                    last_seq: 5,
                    count: 1
                }
            ]
        );
        assert_eq!(seqs(&mut o), vec![1, 4, 6, 7]);
    }

    #[test]
    fn an_arriving_message_of_the_lowest_class_is_dropped_when_it_is_the_only_one() {
        use Priority::{High, Low};
        let mut o = Outbox::new(2, 10);
        o.push(class(1, High));
        o.push(class(2, High));
        o.push(class(3, Low));
        assert_eq!(
            runs(&mut o).iter().map(|g| g.first_seq).collect::<Vec<_>>(),
            vec![3]
        );
        // Within the class, oldest first.
        o.push(class(4, High));
        assert_eq!(seqs(&mut o), vec![2, 4]);
    }

    #[test]
    fn the_newest_policy_applies_within_the_lowest_class() {
        use Priority::{High, Low};
        let mut o = Outbox::with_policy(3, 10, DropPolicy::Newest);
        o.push(class(1, Low));
        o.push(class(2, Low));
        o.push(class(3, High));
        o.push(class(4, High)); // a high one arrives: the newest low one (2) goes
        o.push(class(5, Low)); // a low one arrives: it is the newest of its class
        let dropped: Vec<u64> = runs(&mut o)
            .iter()
            .flat_map(|g| g.first_seq..=g.last_seq)
            .collect();
        assert_eq!(dropped, vec![2, 5]);
        assert_eq!(seqs(&mut o), vec![1, 3, 4]);
    }

    #[test]
    fn drops_out_of_seq_order_merge_into_exact_runs() {
        use Priority::{Low, Normal};
        let mut o = Outbox::new(3, 10);
        for (seq, p) in [(1, Normal), (2, Low), (3, Normal), (4, Normal)] {
            o.push(class(seq, p)); // 4 pushes out 2, the low one
        }
        o.push(class(5, Normal)); // no low one left: 1 goes, after 2
        o.push(class(6, Low)); // the only low one: it goes itself
        o.push(class(7, Normal)); // 3 goes, joining 1-2
        let found: Vec<(u64, u64, u64)> = runs(&mut o)
            .iter()
            .map(|g| (g.first_seq, g.last_seq, g.count))
            .collect();
        assert_eq!(found, vec![(1, 3, 3), (6, 6, 1)]);
        assert_eq!(runs(&mut o), vec![], "taken once");
        assert_eq!(seqs(&mut o), vec![4, 5, 7]);
    }

    #[test]
    fn runs_merge_when_a_later_drop_fills_the_hole_between_them() {
        let mut o = Outbox::new(10, 10);
        for seq in [5, 3, 4, 9, 1] {
            o.record_drop(&msg(seq));
        }
        let found: Vec<(u64, u64, u64)> = runs(&mut o)
            .iter()
            .map(|g| (g.first_seq, g.last_seq, g.count))
            .collect();
        assert_eq!(found, vec![(1, 1, 1), (3, 5, 3), (9, 9, 1)]);
    }

    #[test]
    fn host_messages_and_spooled_ones_are_never_dropped_whatever_the_priorities() {
        let mut o = Outbox::new(2, 10);
        o.push(class(1, Priority::Low));
        o.spool(1, |_| Ok(7)).unwrap();
        let status = Entry {
            seq: None,
            topic: "status".into(),
            body: vec![],
            retain: true,
            priority: Priority::Low,
            owner: None,
        };
        o.push(status.clone());
        o.push(status); // full, and nothing droppable: the bound gives
        assert!(runs(&mut o).is_empty());
        assert_eq!(o.len(), 3);
    }

    fn of(plugin: &str, seq: u64) -> Entry {
        Entry {
            owner: Some(plugin.into()),
            ..msg(seq)
        }
    }

    fn kept_of(o: &Outbox, plugin: &str) -> Vec<u64> {
        o.entries
            .iter()
            .filter(|s| s.entry.owner.as_deref() == Some(plugin))
            .filter_map(|s| s.entry.seq)
            .collect()
    }

    #[test]
    fn one_plugins_flood_costs_that_plugin_only_and_its_drops_are_reported_as_its_own() {
        let mut o = Outbox::new(100, 10);
        let mut seq = 0;
        let mut counter = Vec::new();
        for round in 0..50 {
            for _ in 0..1000 {
                seq += 1;
                o.push(of("flooder", seq));
            }
            if round % 5 == 0 {
                seq += 1;
                counter.push(seq);
                o.push(of("counter", seq));
            }
        }
        assert_eq!(kept_of(&o, "counter"), counter);
        assert_eq!(o.len(), 100);
        let dropped = o.take_gaps();
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert_eq!(&*dropped[0].plugin, "flooder");
        let count: u64 = dropped[0].runs.iter().map(|g| g.count).sum();
        assert_eq!(count, 50_000 - 90);
        // Oldest first: one run before, between and after the counter's messages.
        assert_eq!(dropped[0].runs.len(), counter.len() + 1);
    }

    #[test]
    fn a_plugin_under_its_fair_share_keeps_its_messages_when_the_flooders_are_on_flash() {
        let mut o = Outbox::new(10, 10);
        for seq in 1..=10 {
            o.push(of("flooder", seq));
        }
        o.spool(100, |_| Ok(1)).unwrap();
        // Nothing of the flooder's can go: the counter's messages stay, past the bound...
        for seq in 11..=14 {
            o.push(of("counter", seq));
        }
        assert_eq!(kept_of(&o, "counter"), vec![11, 12, 13, 14]);
        // ...while the flooder's new ones are dropped as they come.
        o.push(of("flooder", 15));
        assert_eq!(kept_of(&o, "flooder").len(), 10);
        // Up to its fair share (half of ten), after which it loses its own oldest.
        for seq in 16..=18 {
            o.push(of("counter", seq));
        }
        assert_eq!(kept_of(&o, "counter"), vec![13, 14, 16, 17, 18]);
        let dropped: Vec<(String, u64)> = o
            .take_gaps()
            .iter()
            .map(|d| (d.plugin.to_string(), d.runs.iter().map(|g| g.count).sum()))
            .collect();
        assert_eq!(
            dropped,
            vec![("counter".to_owned(), 2), ("flooder".to_owned(), 1)]
        );
    }

    #[test]
    fn host_reports_are_never_dropped_for_a_flood() {
        let mut o = Outbox::new(10, 10);
        for seq in 1..=10 {
            o.push(of("flooder", seq));
        }
        o.push(Entry::host("plugin-status/flooder".into(), vec![1], true));
        o.push(Entry::host("bundles/result".into(), vec![2], false));
        for seq in 11..=100 {
            o.push(of("flooder", seq));
        }
        let hosts = o.entries.iter().filter(|s| s.entry.owner.is_none()).count();
        assert_eq!(hosts, 2);
        assert_eq!(o.len(), 12, "the flooder got no more room than the bound");
    }
}
