//! The wall clock, as the pipeline stamps events and the consent registry expires entries.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch; 0 if the clock is set before it.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
