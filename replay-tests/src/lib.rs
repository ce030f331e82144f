//! Helpers of the replay and recovery tests.
//!
//! - `ops`: [`op`] and [`ops()`] generate abstract steps ([`Op`]).
//! - `plan`: [`Plan::new`] resolves them against a small model of the ledger (`model`) into
//!   commands that the writer accepts, each with the event the writer is expected to record
//!   ([`Step`]), so a plan can be submitted to a real [`Ledger`] or written as raw envelopes.
//!   The model decides each moderation act exactly as the writer does
//!   (`src/ledger/validate_moderation.rs`).
//! - [`submit_all`] submits steps to a ledger (in groups, so group commit and the writer's
//!   overlay are exercised) on a runtime of its own.
//! - [`state_of`] and [`replay`] read and recompute projection state; `render`: [`snapshot`]
//!   renders it.
//! - The pool of contents ([`pool_sha`], [`pool_size`], [`location_of`]) and the names plans
//!   use (the constants below) are shared by all of them and by the tests.

mod model;
mod ops;
mod plan;
mod render;

pub use ops::{op, ops, Op};
pub use plan::{Plan, Step};
pub use render::{hex, parse_thumb_key, snapshot, thumb_label};

use media_ledger::ledger::{Committed, Ledger, LedgerError};
use media_ledger_events::{BlobLocation, Envelope, Seq, Sha256, ThumbnailMethod};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{ProjectionError, ALL};
use std::path::{Path, PathBuf};

/// Any error of these helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Origins media are uploaded to.
pub const ORIGINS: [&str; 2] = ["localhost", "example.org:8448"];
/// Origins of other servers whose media are cached here.
pub const REMOTE_ORIGINS: [&str; 2] = ["remote.example", "matrix.remote.example:8448"];
/// Datastore ids uploads are written to.
pub const DATASTORES: [&str; 2] = ["ds-alpha", "ds-beta"];
/// Users who upload, reserve and download.
pub const USERS: [&str; 3] = ["@alice:localhost", "@bob:localhost", "@carol:example.org"];
/// How many distinct contents there are; small, so that digests repeat.
pub const SHA_POOL: usize = 5;
/// How many contents only thumbnails have: pool entries `SHA_POOL..SHA_POOL + THUMB_POOL`.
pub const THUMB_POOL: usize = 3;
/// The sizes thumbnails are generated at: width, height, method, animated.
pub const THUMB_SIZES: [(u32, u32, ThumbnailMethod, bool); 4] = [
    (32, 32, ThumbnailMethod::Crop, false),
    (96, 96, ThumbnailMethod::Crop, false),
    (320, 240, ThumbnailMethod::Scale, false),
    (320, 240, ThumbnailMethod::Scale, true),
];
/// Expiry of reservations that are meant to be filled (2100-01-01).
pub const FAR_FUTURE_MS: u64 = 4_102_444_800_000;
/// Time of the first envelope of [`Plan::envelopes`] (2023-11-14).
pub const PLAN_START_MS: u64 = 1_700_000_000_000;
/// Time between two envelopes of [`Plan::envelopes`].
pub const PLAN_STEP_MS: u64 = 1_000;

/// Digest number `i` of the pool.
pub fn pool_sha(i: usize) -> Sha256 {
    let seed = u8::try_from(i % 256).unwrap_or(0);
    Sha256(std::array::from_fn(|j| {
        seed.wrapping_mul(0x3b)
            .wrapping_add(0x11)
            .wrapping_add(u8::try_from(j).unwrap_or(0).wrapping_mul(7))
    }))
}

/// Length of content number `i` (distinct per digest, so double counting shows in totals).
pub fn pool_size(i: usize) -> u64 {
    let i = u64::try_from(i).unwrap_or(0);
    1_000 * (i + 1) + i
}

/// The blob location a datastore would give content `sha`: `ab/cd/<hex>`.
pub fn location_of(sha: &Sha256) -> Result<BlobLocation, BoxError> {
    let hex = sha.to_hex();
    let (a, rest) = hex.split_at(2);
    let b = rest.get(..2).unwrap_or_default();
    Ok(format!("{a}/{b}/{hex}").parse()?)
}

/// Submits `steps` in order, `group` at a time concurrently (1: one after the other), and
/// returns every outcome. Concurrent submissions of one group are queued in order, so the
/// writer sees the plan's order and may fold several into one commit.
pub fn submit_all(
    ledger: &Ledger,
    steps: &[Step],
    group: usize,
) -> Result<Vec<Result<Committed, LedgerError>>, BoxError> {
    // join_all polls its futures in order only while it has at most 30 of them.
    let group = group.clamp(1, 16);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let outcomes = rt.block_on(async {
        let mut outcomes = Vec::with_capacity(steps.len());
        for chunk in steps.chunks(group) {
            let futures = chunk
                .iter()
                .map(|s| ledger.submit(s.actor.clone(), s.request_id.clone(), s.command.clone()));
            outcomes.extend(futures_util::future::join_all(futures).await);
        }
        outcomes
    });
    Ok(outcomes)
}

/// The committed state of every projection of a running ledger.
pub fn state_of(ledger: &Ledger) -> Result<MemoryState, LedgerError> {
    let mut state = MemoryState::default();
    for p in ALL {
        let mut kv = MemoryKv::default();
        ledger.scan(p.projection_name(), b"", |k, v| {
            kv.0.insert(k.to_vec(), v.to_vec());
            Ok(())
        })?;
        state.spaces.insert(p.name(), kv);
    }
    Ok(state)
}

/// Every envelope of a running ledger's log, in order.
pub fn ledger_envelopes(ledger: &Ledger) -> Result<Vec<Envelope>, LedgerError> {
    let mut out = Vec::new();
    ledger.events(Seq(1), Seq(u64::MAX), |env| {
        out.push(env);
        true
    })?;
    Ok(out)
}

/// Folds envelopes into a fresh in-memory state.
pub fn replay(envelopes: &[Envelope]) -> Result<MemoryState, ProjectionError> {
    let mut state = MemoryState::default();
    for env in envelopes {
        state.apply(env)?;
    }
    Ok(state)
}

/// This crate's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads envelopes written one JSON object per line (blank lines ignored).
pub fn load_jsonl(path: &Path) -> Result<Vec<Envelope>, BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}
