//! The server's wall clock, in ms since the epoch. Only `src/` reads it: projections take
//! time from envelopes.

/// Now, in ms since the epoch (0 before 1970, which no real clock reports).
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}
