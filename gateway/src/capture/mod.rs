//! Frame sources: a monitor-mode interface, a pcap file, or a pcap stream on stdin.
//!
//! All three go through libpcap (the `pcap` crate), so a replayed capture exercises the same
//! code path as the router's radio.

use crate::dot11::LinkType;
use pcap::{Activated, Capture};
use std::path::Path;

/// Only probe requests matter; the kernel drops everything else before it is copied to us.
const PROBE_FILTER: &str = "type mgt subtype probe-req";
/// Enough for any probe request with its IEs; longer frames are cut, never misparsed.
const SNAPLEN: i32 = 2048;
/// How often a live capture wakes up with no frames, so ticks and shutdown stay timely.
const LIVE_TIMEOUT_MS: i32 = 250;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{source_name}: cannot open: {reason}")]
    Open { source_name: String, reason: String },
    #[error(
        "{source_name}: link type {dlt} ({name}) is not 802.11; probegate reads radiotap (127) or plain 802.11 (105) captures, from a Wi-Fi interface in monitor mode"
    )]
    UnsupportedLinkType {
        source_name: String,
        dlt: i32,
        name: String,
    },
    #[error("{source_name}: read failed after {frames} frames: {reason}")]
    Read {
        source_name: String,
        frames: u64,
        reason: String,
    },
}

/// One frame and its capture time.
pub struct Frame<'a> {
    pub time_ms: u64,
    pub data: &'a [u8],
}

/// What a source has next.
pub enum Next<'a> {
    Frame(Frame<'a>),
    /// A live source waited without a frame; the pipeline may use the pause.
    Idle,
    /// A recorded capture ended.
    End,
}

/// Loss the kernel reports for a live capture.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LossStats {
    pub received: u32,
    pub dropped_by_kernel: u32,
    pub dropped_by_interface: u32,
}

pub struct PcapSource {
    cap: Capture<dyn Activated>,
    link: LinkType,
    name: String,
    frames: u64,
    live: bool,
    /// A regular file, read as fast as the plugins take it; not a radio, stdin or a FIFO.
    recording: bool,
}

impl PcapSource {
    /// A pcap file, or a pcap stream on stdin when `path` is "-" (read as it arrives).
    pub fn open_file(path: &Path) -> Result<PcapSource, CaptureError> {
        let name = if path == Path::new("-") {
            "stdin".to_owned()
        } else {
            path.display().to_string()
        };
        let cap = Capture::from_file(path).map_err(|e| CaptureError::Open {
            source_name: name.clone(),
            reason: e.to_string(),
        })?;
        let mut source = PcapSource::new(cap.into(), name, false)?;
        source.recording =
            path != Path::new("-") && std::fs::metadata(path).is_ok_and(|m| m.is_file());
        Ok(source)
    }

    /// A monitor-mode interface. The interface must already be in monitor mode (`iw`), which
    /// keeps the router's own Wi-Fi configuration in the operator's hands.
    pub fn open_live(interface: &str, buffer_kib: u32) -> Result<PcapSource, CaptureError> {
        let open_err = |e: pcap::Error| CaptureError::Open {
            source_name: interface.to_owned(),
            reason: e.to_string(),
        };
        let mut cap = Capture::from_device(interface)
            .map_err(open_err)?
            .snaplen(SNAPLEN)
            .buffer_size((buffer_kib.saturating_mul(1024)).min(i32::MAX as u32) as i32)
            .timeout(LIVE_TIMEOUT_MS)
            .immediate_mode(true)
            .open()
            .map_err(open_err)?;
        // Prefer radiotap for the signal strength; drivers that only offer plain 802.11 still work.
        let _ = cap.set_datalink(pcap::Linktype(127));
        let mut source = PcapSource::new(cap.into(), interface.to_owned(), true)?;
        source.cap.filter(PROBE_FILTER, true).map_err(open_err)?;
        Ok(source)
    }

    fn new(
        cap: Capture<dyn Activated>,
        name: String,
        live: bool,
    ) -> Result<PcapSource, CaptureError> {
        let dlt = cap.get_datalink();
        let link = LinkType::from_dlt(dlt.0).ok_or_else(|| CaptureError::UnsupportedLinkType {
            source_name: name.clone(),
            dlt: dlt.0,
            name: dlt.get_name().unwrap_or_else(|_| "unknown".into()),
        })?;
        Ok(PcapSource {
            cap,
            link,
            name,
            frames: 0,
            live,
            recording: false,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Whether frames come from a regular file: nobody waits for their outputs.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn next_frame(&mut self) -> Result<Next<'_>, CaptureError> {
        match self.cap.next_packet() {
            Ok(packet) => {
                self.frames += 1;
                let time_ms = timeval_ms(packet.header.ts);
                Ok(Next::Frame(Frame {
                    time_ms,
                    data: packet.data,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(Next::Idle),
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(e) => Err(CaptureError::Read {
                source_name: self.name.clone(),
                frames: self.frames,
                reason: e.to_string(),
            }),
        }
    }

    /// Kernel and driver loss counters; only live captures have them.
    pub fn loss(&mut self) -> Option<LossStats> {
        if !self.live {
            return None;
        }
        self.cap.stats().ok().map(|s| LossStats {
            received: s.received,
            dropped_by_kernel: s.dropped,
            dropped_by_interface: s.if_dropped,
        })
    }
}

/// Capture time in ms. Times before 1970 (a router without a clock) clamp to zero.
#[allow(
    clippy::unnecessary_cast,
    reason = "timeval fields are 32-bit on some router targets and 64-bit on others"
)]
fn timeval_ms(ts: libc::timeval) -> u64 {
    let secs = (ts.tv_sec as i64).max(0) as u64;
    let micros = (ts.tv_usec as i64).max(0) as u64;
    secs * 1000 + micros / 1000
}
