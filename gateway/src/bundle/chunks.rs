//! Bundles over MQTT: split into numbered chunks when larger than a broker takes in one
//! message, and put back together on the router.
//!
//! A chunk goes to `{base}/{push_id}/{index}/{count}`, where `base` names the target (one
//! gateway, a site, or the fleet) and `push_id` ties the chunks of one push together and to
//! the results the gateways report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A push whose chunks stop coming is forgotten after this long.
const STALE_AFTER: Duration = Duration::from_secs(600);
/// Pushes assembled at once, at most; a new one beyond this evicts the oldest.
const MAX_PARTIAL: usize = 4;

/// Where pushes to every gateway of every site go.
pub const FLEET_BASE: &str = "probegate/fleet/v1/cmd/bundles";

pub fn gateway_base(site: &str, gateway: &str) -> String {
    format!("probegate/v1/{site}/{gateway}/cmd/bundles")
}

pub fn site_base(site: &str) -> String {
    format!("probegate/v1/{site}/cmd/bundles")
}

/// The topics a gateway listens on for bundles.
pub fn subscriptions(site: &str, gateway: &str) -> Vec<String> {
    [
        gateway_base(site, gateway),
        site_base(site),
        FLEET_BASE.to_owned(),
    ]
    .into_iter()
    .map(|b| format!("{b}/#"))
    .collect()
}

/// The chunks of `bundle`, as (topic, payload).
pub fn split<'a>(
    base: &str,
    push_id: &str,
    bundle: &'a [u8],
    chunk_bytes: usize,
) -> Vec<(String, &'a [u8])> {
    let chunks: Vec<&[u8]> = bundle.chunks(chunk_bytes.max(1)).collect();
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("{base}/{push_id}/{i}/{count}"), c))
        .collect()
}

/// (push id, index, count) of a chunk topic under one of `bases`.
pub fn parse_topic<'t>(topic: &'t str, bases: &[String]) -> Option<(&'t str, usize, usize)> {
    let rest = bases
        .iter()
        .find_map(|b| topic.strip_prefix(b.as_str())?.strip_prefix('/'))?;
    let mut parts = rest.split('/');
    let (id, index, count) = (parts.next()?, parts.next()?, parts.next()?);
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let (index, count): (usize, usize) = (index.parse().ok()?, count.parse().ok()?);
    (parts.next().is_none() && valid_id && index < count).then_some((id, index, count))
}

struct Partial {
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started: Instant,
}

/// Collects chunks until a push is whole. Bounded: a push larger than `max_bytes` is dropped
/// as soon as that is clear, and at most a few pushes are in progress at once.
pub struct Assembler {
    max_bytes: usize,
    partial: HashMap<String, Partial>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    Incomplete,
    Done(Vec<u8>),
    /// Larger than the router accepts: the push is abandoned.
    Oversize,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Assembler {
        Assembler {
            max_bytes,
            partial: HashMap::new(),
        }
    }

    pub fn add(&mut self, push_id: &str, index: usize, count: usize, data: &[u8]) -> Assembled {
        self.partial
            .retain(|_, p| p.started.elapsed() < STALE_AFTER);
        if !self.partial.contains_key(push_id) && self.partial.len() >= MAX_PARTIAL {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.partial.remove(&oldest);
            }
        }
        let max_bytes = self.max_bytes;
        let p = self
            .partial
            .entry(push_id.to_owned())
            .or_insert_with(|| Partial {
                chunks: vec![None; count.min(max_bytes)],
                bytes: 0,
                started: Instant::now(),
            });
        if p.chunks.len() != count || p.bytes + data.len() > max_bytes {
            self.partial.remove(push_id);
            return Assembled::Oversize;
        }
        if p.chunks[index].is_none() {
            p.bytes += data.len();
            p.chunks[index] = Some(data.to_vec());
        }
        if p.chunks.iter().any(Option::is_none) {
            return Assembled::Incomplete;
        }
        let p = self.partial.remove(push_id).expect("present");
        Assembled::Done(p.chunks.into_iter().flatten().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_together_in_any_order_and_repeats_do_no_harm() {
        let bundle: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let base = site_base("s1");
        let mut chunks = split(&base, "p1", &bundle, 300);
        assert_eq!(chunks.len(), 4);
        chunks.reverse();
        let mut a = Assembler::new(10_000);
        let bases = subscriptions("s1", "g1")
            .into_iter()
            .map(|s| s.trim_end_matches("/#").to_owned())
            .collect::<Vec<_>>();
        let mut done = None;
        for (topic, data) in chunks.iter().chain(chunks.iter().take(1)) {
            let (id, i, n) = parse_topic(topic, &bases).unwrap();
            if let Assembled::Done(b) = a.add(id, i, n, data) {
                done = Some(b);
            }
        }
        assert_eq!(done.as_deref(), Some(&bundle[..]));
    }

    #[test]
    fn a_push_over_the_limit_is_dropped() {
        let mut a = Assembler::new(500);
        assert_eq!(a.add("p", 0, 3, &[0; 300]), Assembled::Incomplete);
        assert_eq!(a.add("p", 1, 3, &[0; 300]), Assembled::Oversize);
    }

    #[test]
    fn only_well_formed_chunk_topics_parse() {
        let bases = vec![site_base("s1")];
        assert_eq!(
            parse_topic("probegate/v1/s1/cmd/bundles/ab-1/0/2", &bases),
            Some(("ab-1", 0, 2))
        );
        assert_eq!(
            parse_topic("probegate/v1/s1/cmd/bundles/ab/2/2", &bases),
            None
        );
        assert_eq!(
            parse_topic("probegate/v1/s1/cmd/bundles/a+b/0/1", &bases),
            None
        );
        assert_eq!(
            parse_topic("probegate/v1/s2/cmd/bundles/ab/0/1", &bases),
            None
        );
    }
}
