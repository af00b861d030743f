//! A per-client-address limit on the public opt-out form: each submission publishes a command
//! to every gateway of a store and writes a row, and the page needs no sign-in, so one
//! address must not be able to flood the broker, the gateways' registries or the database.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    per_window: usize,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Addresses tracked at most; past it the oldest-looking entries are dropped wholesale
/// rather than letting a spray of source addresses grow the map without bound.
const MAX_ADDRESSES: usize = 100_000;

impl RateLimit {
    pub fn new(per_window: u32, window: Duration) -> RateLimit {
        RateLimit {
            per_window: per_window as usize,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a submission from `addr`; false when it is over the limit (not counted then).
    pub fn allow(&self, addr: IpAddr, now: Instant) -> bool {
        let mut seen = self.seen.lock().expect("no panics while locked");
        if seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            if seen.len() >= MAX_ADDRESSES {
                seen.clear();
            }
        }
        let times = seen.entry(key(addr)).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.per_window {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// IPv6 clients are counted per /64: one host usually holds a whole /64 and could otherwise
/// pick a fresh address per request.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_per_window_and_others_are_not_affected() {
        let limit = RateLimit::new(3, Duration::from_secs(3600));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.allow(a, t0));
        }
        assert!(!limit.allow(a, t0 + Duration::from_secs(10)));
        assert!(limit.allow(b, t0 + Duration::from_secs(10)));
        // An hour after the first three, the address may submit again.
        assert!(limit.allow(a, t0 + Duration::from_secs(3600)));
        // One /64 is one client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let limit = RateLimit::new(1, Duration::from_secs(3600));
        assert!(limit.allow(v6a, t0));
        assert!(!limit.allow(v6b, t0));
    }
}
