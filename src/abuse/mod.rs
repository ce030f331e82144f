//! Abuse controls: per-user quotas and upload windows (`quota.rs`, counted by the `usage`
//! projection and checked again by the writer), rate limits (`rate.rs`, in memory), retention
//! (`retention.rs`, scheduled purges by the system) and the external content check
//! (`check.rs`).

pub mod check;
pub mod quota;
pub mod rate;
pub mod retention;
