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

use std::collections::VecDeque;

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

/// An entry with where it stands, and the spool segment holding a copy, if any.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    state: State,
    segment: Option<u64>,
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

pub struct Outbox {
    entries: VecDeque<Slot>,
    max_messages: usize,
    policy: DropPolicy,
    window: usize,
    connected: bool,
    gaps: Vec<Gap>,
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
            gaps: Vec::new(),
        }
    }

    fn slot(entry: Entry, segment: Option<u64>) -> Slot {
        Slot {
            entry,
            state: State::Waiting,
            segment,
        }
    }

    /// Queues a message. When full, a plugin message not yet handed over is dropped (from
    /// the lowest priority class present, by the policy within it) and counted in the gap
    /// report. With nothing droppable the bound gives: host messages are never lost.
    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() >= self.max_messages {
            match self.victim(&entry) {
                Some(Victim::Arriving) => {
                    self.record_drop(entry.seq.expect("only plugin messages are victims"));
                    return;
                }
                Some(Victim::Queued(i)) => {
                    let slot = self.entries.remove(i).expect("index found by victim");
                    self.record_drop(slot.entry.seq.expect("only plugin messages are victims"));
                }
                None => {}
            }
        }
        self.entries.push_back(Outbox::slot(entry, None));
    }

    /// Which message goes to make room for `arriving`.
    fn victim(&self, arriving: &Entry) -> Option<Victim> {
        // Messages with a spool copy are kept: dropping them here would not remove them from
        // flash, and a later run would send what a gap record had called lost.
        let droppable =
            |s: &&Slot| s.state == State::Waiting && s.entry.seq.is_some() && s.segment.is_none();
        let arriving_class = arriving.seq.map(|_| arriving.priority);
        let class = self
            .entries
            .iter()
            .filter(droppable)
            .map(|s| s.entry.priority)
            .chain(arriving_class)
            .min()?;
        let queued = |i: &usize| {
            let s = &self.entries[*i];
            droppable(&s) && s.entry.priority == class
        };
        let arriving_in_class = arriving_class == Some(class);
        match self.policy {
            DropPolicy::Oldest => (0..self.entries.len())
                .find(queued)
                .map(Victim::Queued)
                .or(arriving_in_class.then_some(Victim::Arriving)),
            DropPolicy::Newest if arriving_in_class => Some(Victim::Arriving),
            DropPolicy::Newest => (0..self.entries.len())
                .rev()
                .find(queued)
                .map(Victim::Queued),
        }
    }

    /// Queues a message a previous run left in the spool segment `segment`.
    pub fn push_spooled(&mut self, entry: Entry, segment: u64) {
        self.entries.push_back(Outbox::slot(entry, Some(segment)));
    }

    /// Queues a host message outside the bound: gap records and the like must never push
    /// out the very plugin messages whose loss they report.
    pub fn push_unbounded(&mut self, entry: Entry) {
        self.entries.push_back(Outbox::slot(entry, None));
    }

    /// Queues a message of which only the latest matters (metrics, a retained summary): it
    /// replaces a waiting one on the same topic, so an outage does not pile them up.
    pub fn push_latest(&mut self, entry: Entry) {
        let waiting = self.entries.iter_mut().find(|s| {
            s.state == State::Waiting && s.segment.is_none() && s.entry.topic == entry.topic
        });
        match waiting {
            Some(slot) => slot.entry = entry,
            None => self.entries.push_back(Outbox::slot(entry, None)),
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
    }

    /// Adds `seq` to the runs of dropped messages, which stay sorted and merge when they
    /// touch: with priorities, drops come out of seq order.
    fn record_drop(&mut self, seq: u64) {
        let at = self.gaps.partition_point(|g| g.last_seq < seq);
        let joins_before = at > 0 && self.gaps[at - 1].last_seq + 1 == seq;
        let joins_after = at < self.gaps.len() && self.gaps[at].first_seq == seq + 1;
        match (joins_before, joins_after) {
            (true, true) => {
                let after = self.gaps.remove(at);
                let before = &mut self.gaps[at - 1];
                before.last_seq = after.last_seq;
                before.count += after.count + 1;
            }
            (true, false) => {
                let before = &mut self.gaps[at - 1];
                before.last_seq = seq;
                before.count += 1;
            }
            (false, true) => {
                let after = &mut self.gaps[at];
                after.first_seq = seq;
                after.count += 1;
            }
            (false, false) => self.gaps.insert(
                at,
                Gap {
                    first_seq: seq,
                    last_seq: seq,
                    count: 1,
                },
            ),
        }
    }

    /// Runs of messages dropped since the last call, each contiguous in `seq`, in `seq`
    /// order. Taken only while connected, so one outage's drops merge into as few runs as
    /// the delivered messages between them allow.
    pub fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.gaps)
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
            self.entries[i].segment = Some(segment);
        }
        Ok(picked.len())
    }

    /// The next message to hand to the transport, if connected and the window allows; it
    /// counts as handed from now on.
    pub fn hand_next(&mut self) -> Option<&Entry> {
        if !self.connected {
            return None;
        }
        let handed = self
            .entries
            .iter()
            .filter(|s| s.state != State::Waiting)
            .count();
        if handed >= self.window {
            return None;
        }
        let slot = self
            .entries
            .iter_mut()
            .find(|s| s.state == State::Waiting)?;
        slot.state = State::Handed;
        Some(&slot.entry)
    }

    /// The transport refused the last `hand_next` (its queue was full): take it back.
    pub fn unhand_last(&mut self) {
        if let Some(slot) = self
            .entries
            .iter_mut()
            .rev()
            .find(|s| s.state == State::Handed)
        {
            slot.state = State::Waiting;
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
        let slot = self.entries.remove(i)?;
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
        for slot in &mut self.entries {
            slot.state = State::Waiting;
        }
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
        }
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
            o.take_gaps(),
            vec![Gap {
                first_seq: 2,
                last_seq: 4,
                count: 3
            }]
        );
        assert_eq!(o.take_gaps(), vec![]);
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
            o.take_gaps(),
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
        };
        o.push_latest(metrics(1));
        o.push_latest(metrics(2));
        o.push_unbounded(metrics(9));
        assert!(o.take_gaps().is_empty(), "no plugin message was dropped");
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
        assert_eq!(o.take_gaps().len(), 1);
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
            o.take_gaps(),
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
            o.take_gaps()
                .iter()
                .map(|g| g.first_seq)
                .collect::<Vec<_>>(),
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
        let dropped: Vec<u64> = o
            .take_gaps()
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
        let runs: Vec<(u64, u64, u64)> = o
            .take_gaps()
            .iter()
            .map(|g| (g.first_seq, g.last_seq, g.count))
            .collect();
        assert_eq!(runs, vec![(1, 3, 3), (6, 6, 1)]);
        assert_eq!(o.take_gaps(), vec![], "taken once");
        assert_eq!(seqs(&mut o), vec![4, 5, 7]);
    }

    #[test]
    fn runs_merge_when_a_later_drop_fills_the_hole_between_them() {
        let mut o = Outbox::new(10, 10);
        for seq in [5, 3, 4, 9, 1] {
            o.record_drop(seq);
        }
        let runs: Vec<(u64, u64, u64)> = o
            .take_gaps()
            .iter()
            .map(|g| (g.first_seq, g.last_seq, g.count))
            .collect();
        assert_eq!(runs, vec![(1, 1, 1), (3, 5, 3), (9, 9, 1)]);
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
        };
        o.push(status.clone());
        o.push(status); // full, and nothing droppable: the bound gives
        assert!(o.take_gaps().is_empty());
        assert_eq!(o.len(), 3);
    }
}
