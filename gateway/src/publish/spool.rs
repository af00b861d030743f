//! The spool: outbox messages written to flash during a long outage and at shutdown, so a
//! power cut or a killed daemon does not lose what the broker has not acknowledged.
//!
//! A router's flash wears out: the spool writes only whole segment files (write aside,
//! fsync, rename), never appends per message, and only when the link has been down for a
//! while or the daemon stops. A segment is deleted once every message in it is acknowledged.

use super::outbox::Entry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct Line {
    topic: String,
    retain: bool,
    /// Every message the gateway sends is JSON text.
    body: String,
}

pub struct Spool {
    dir: PathBuf,
    next: u64,
    /// Messages of each segment not yet acknowledged.
    live: HashMap<u64, usize>,
}

impl Spool {
    /// Opens the spool in `dir` and returns the messages a previous run left there, oldest
    /// segment first, each with its segment id.
    pub fn open(dir: &Path) -> std::io::Result<(Spool, Vec<(u64, Entry)>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.starts_with(".seg-") {
                    // Half-written when the power went or the flash filled: never renamed into
                    // place, so none of it counts; its room is needed.
                    let _ = std::fs::remove_file(e.path());
                    return None;
                }
                let id = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()?;
                Some((id, e.path()))
            })
            .collect();
        segments.sort();
        let mut spool = Spool {
            dir: dir.to_owned(),
            next: segments.last().map_or(0, |(id, _)| id + 1),
            live: HashMap::new(),
        };
        let mut entries = Vec::new();
        for (id, path) in segments {
            let text = std::fs::read_to_string(&path)?;
            let mut count = 0;
            for line in text.lines() {
                // A segment is renamed into place only when complete, so a bad line is
                // damage (flash, hand edits): skip it, keep the rest.
                let Ok(line) = serde_json::from_str::<Line>(line) else {
                    tracing::warn!(segment = %path.display(), "unreadable line in the spool skipped");
                    continue;
                };
                count += 1;
                entries.push((
                    id,
                    Entry {
                        // Their sequence numbers belong to an earlier boot: they are sent as
                        // they are, never dropped for room, never reported in a gap.
                        seq: None,
                        topic: line.topic,
                        body: line.body.into_bytes(),
                        retain: line.retain,
                        priority: Default::default(),
                        owner: None,
                    },
                ));
            }
            if count == 0 {
                let _ = std::fs::remove_file(&path);
            } else {
                spool.live.insert(id, count);
            }
        }
        Ok((spool, entries))
    }

    /// Writes `entries` as one new segment; returns its id.
    pub fn write(&mut self, entries: &[&Entry]) -> std::io::Result<u64> {
        let id = self.next;
        self.next += 1;
        let path = self.dir.join(format!("seg-{id:012}.jsonl"));
        // The messages stay in the outbox, in RAM, if this fails (a full flash).
        crate::flash::replace(&path, &segment(entries)?)?;
        self.live.insert(id, entries.len());
        Ok(id)
    }

    /// One message of `segment` was acknowledged; the file goes with its last one.
    pub fn release(&mut self, segment: u64) {
        let Some(left) = self.live.get_mut(&segment) else {
            return;
        };
        *left -= 1;
        if *left == 0 {
            self.live.remove(&segment);
            let path = self.dir.join(format!("seg-{segment:012}.jsonl"));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete a delivered spool segment");
            }
        }
    }

    pub fn segments(&self) -> usize {
        self.live.len()
    }
}

fn segment(entries: &[&Entry]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    for e in entries {
        let line = Line {
            topic: e.topic.clone(),
            retain: e.retain,
            body: String::from_utf8_lossy(&e.body).into_owned(),
        };
        serde_json::to_writer(&mut text, &line)?;
        text.push(b'\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            seq: Some(u64::from(n)),
            topic: format!("t/{n}"),
            body: format!("{{\"n\":{n}}}").into_bytes(),
            retain: n.is_multiple_of(2),
            priority: Default::default(),
            owner: None,
        }
    }

    #[test]
    fn spooled_messages_come_back_after_a_restart_and_leave_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, old) = Spool::open(dir.path()).unwrap();
        assert!(old.is_empty());
        let (a, b, c) = (entry(1), entry(2), entry(3));
        let s1 = spool.write(&[&a, &b]).unwrap();
        let s2 = spool.write(&[&c]).unwrap();

        let (mut again, back) = Spool::open(dir.path()).unwrap();
        let topics: Vec<(u64, &str)> = back.iter().map(|(s, e)| (*s, e.topic.as_str())).collect();
        assert_eq!(topics, vec![(s1, "t/1"), (s1, "t/2"), (s2, "t/3")]);
        assert_eq!(back[1].1.body, b"{\"n\":2}");
        assert!(back[1].1.retain);
        assert!(back.iter().all(|(_, e)| e.seq.is_none()));

        again.release(s1);
        assert_eq!(again.segments(), 2);
        again.release(s1);
        again.release(s2);
        assert_eq!(again.segments(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(
            again.write(&[&a]).unwrap(),
            s2 + 1,
            "ids keep increasing across runs"
        );
    }

    #[test]
    fn a_full_flash_fails_the_write_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        // The next segment's file is the kernel's always-full device: every write to it
        // fails with ENOSPC, as on a flash with no room left.
        let next = dir.path().join(format!("seg-{:012}.jsonl", spool.next));
        let doomed = crate::flash::temporary(&next);
        std::os::unix::fs::symlink("/dev/full", &doomed).unwrap();
        let (a, b) = (entry(1), entry(2));
        let e = spool.write(&[&a, &b]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, got {e}");
        assert_eq!(spool.segments(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Room again: the next write succeeds and is all a restart finds.
        let id = spool.write(&[&b]).unwrap();
        let (_, back) = Spool::open(dir.path()).unwrap();
        let found: Vec<(u64, &str)> = back.iter().map(|(s, e)| (*s, e.topic.as_str())).collect();
        assert_eq!(found, vec![(id, "t/2")]);
    }

    #[test]
    fn a_half_written_segment_is_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = crate::flash::temporary(&dir.path().join("seg-000000000007.jsonl"));
        std::fs::write(&tmp, "{\"topic\":\"t/1\",\"retain\":false,\"bo").unwrap();
        let (_, back) = Spool::open(dir.path()).unwrap();
        assert!(back.is_empty());
        assert!(!tmp.exists());
    }

    #[test]
    fn a_damaged_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        let (a, b) = (entry(1), entry(2));
        let id = spool.write(&[&a, &b]).unwrap();
        let path = dir.path().join(format!("seg-{id:012}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{{broken\n{}", text.lines().nth(1).unwrap())).unwrap();
        let (_, back) = Spool::open(dir.path()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].1.topic, "t/2");
    }
}
