//! The wall clock and the monotonic clock, read in one place.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ganglion_types::UnixMs;

/// Monotonic now, for deadlines and latencies.
pub fn now() -> Instant {
    Instant::now()
}

/// Milliseconds since the Unix epoch, for envelope expiry.
pub fn unix_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
