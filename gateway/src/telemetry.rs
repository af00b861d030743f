//! Counters for everything the pipeline drops, passes or fails, kept in one place so the log
//! summary and (later) the MQTT metrics say the same thing.

use crate::atomic64::AtomicU64;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared between the pipeline's threads.
        #[derive(Default, Debug)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A consistent-enough copy of [`Counters`] for reports.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct Snapshot { $(pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Frames read from the capture source.
    frames,
    /// Frames that are not probe requests (a live capture's kernel filter makes this rare).
    not_probe_requests,
    /// Probe requests dropped as untrustworthy: bad FCS.
    dropped_bad_fcs,
    /// Probe requests dropped as untrustworthy: group-addressed transmitter.
    dropped_multicast,
    /// Frames too short or inconsistent to parse.
    dropped_malformed,
    /// Probes dropped by the privacy gate: below the signal floor.
    dropped_signal_floor,
    /// Probes dropped by the privacy gate: the device opted out.
    dropped_opted_out,
    /// Sightings lost because the plugin stage fell behind a live capture.
    dropped_backpressure,
    /// Sightings handed to the plugin stage.
    sightings,
    /// Sightings a filter plugin dropped (its verdict).
    dropped_by_filter,
    /// Sightings dropped because a filter could not judge them (trapped, backing off): a
    /// broken filter fails closed.
    dropped_filter_down,
    /// Back-office messages to plugins that could not be delivered (no such plugin, not
    /// UTF-8).
    plugin_messages_refused,
    /// Calls into plugins.
    plugin_calls,
    /// Plugin calls that trapped (panic, fuel, memory).
    plugin_traps,
    /// Attempts to restart a failed plugin whose init failed again.
    plugin_start_failures,
    /// Calls skipped because the plugin was backing off after a failure.
    plugin_calls_skipped,
    /// Messages plugins published that passed the host's checks.
    outputs,
    /// Publishes the host refused (bad stream name, not JSON, too large, too many).
    outputs_refused,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn reject(&self, reason: crate::dot11::Reject) {
        use crate::dot11::Reject;
        let counter = match reason {
            Reject::NotProbeRequest => &self.not_probe_requests,
            Reject::BadFcs => &self.dropped_bad_fcs,
            Reject::MulticastTransmitter => &self.dropped_multicast,
            Reject::Truncated | Reject::Malformed(_) => &self.dropped_malformed,
        };
        counter.fetch_add(1, Relaxed);
    }
}
