//! Retention (`[retention]`): every `interval_ms` (and once soon after start, so a run a
//! restart cut short is finished), the system purges local and remote media nobody accessed
//! for `local_media_days` / `remote_media_days`, thumbnails generated `thumbnail_days` ago,
//! and the least recently accessed remote media past `remote_max_bytes`. Each rule's run is
//! one purge act of the system (actor `system`, reason `retention: …`), cut into parts like
//! any act (invariant 23); the writer keeps pinned and quarantined media and anything accessed
//! since the selection (`accessed_before_ms`). The next run and the last one are shown in the
//! tasks API ([`Status`]).

use crate::config::RetentionConfig;
use crate::ledger::{Ledger, LedgerError};
use crate::moderation::{select, Act, Moderation, PurgeSpec};
use media_ledger_events::{Actor, Authority, MediaRef, ModerationTarget, RequestId};
use media_ledger_projections::media_index::MediaKind;
use media_ledger_projections::{names, parse_media_key, thumbnails};
use serde::Serialize;
use std::sync::Arc;

const DAY_MS: u64 = 86_400_000;

/// The schedule's state, for the tasks API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// When the next run starts (ms since the epoch); 0 before the loop started.
    pub next_run_ts: u64,
    /// When the last run started and ended.
    pub last_run_start_ts: u64,
    /// When the last run ended (0: running or never ran).
    pub last_run_end_ts: u64,
    /// Media purged by the last run.
    pub last_media_removed: u64,
    /// Thumbnails purged by the last run.
    pub last_thumbnails_removed: u64,
    /// The last run's failure, if any.
    pub last_error: Option<String>,
}

/// Shared between the loop and the tasks API.
pub type SharedStatus = Arc<parking_lot::Mutex<Status>>;

/// The time a run judges ages by (ms since the epoch): the wall clock, or a test's
/// (`server::StartOptions::retention_clock`: tests cannot wait 30 days).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Media of `kind`, live, not pinned nor quarantined, last accessed before `before_ms`.
fn idle(ledger: &Ledger, kind: MediaKind, before_ms: u64) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out = Vec::new();
    select::visit_records(ledger, b"", |m, r| {
        if r.kind == kind
            && r.last_access_ms < before_ms
            && !r.quarantined
            && !r.pinned
            && !r.tombstone
        {
            out.push(m);
        }
    })?;
    Ok(out)
}

/// The least recently accessed remote media to purge for the cache to hold at most `cap`
/// bytes (pinned and quarantined ones count, and stay), with the access time the last one
/// chosen had. Bytes are counted per media, as the size estimates count rows: remote media
/// sharing one blob count it each.
fn over_cap(ledger: &Ledger, cap: u64) -> Result<(Vec<MediaRef>, u64), LedgerError> {
    let mut total = 0u64;
    let mut removable = Vec::new();
    select::visit_records(ledger, b"", |m, r| {
        if r.kind == MediaKind::Remote && !r.tombstone {
            total = total.saturating_add(r.size_bytes);
            if !r.quarantined && !r.pinned {
                removable.push((r.last_access_ms, r.size_bytes, m));
            }
        }
    })?;
    removable.sort_by_key(|(at, _, _)| *at);
    let mut out = Vec::new();
    let mut last = 0;
    for (at, size, m) in removable {
        if total <= cap {
            break;
        }
        total = total.saturating_sub(size);
        last = at;
        out.push(m);
    }
    Ok((out, last))
}

/// Media with a thumbnail generated before `before_ms`.
fn with_old_thumbnails(ledger: &Ledger, before_ms: u64) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out: Vec<MediaRef> = Vec::new();
    ledger.scan(names::THUMBNAILS, b"", |k, v| {
        let t = thumbnails::decode_record(v)?;
        if t.created_at_ms < before_ms {
            let media = k
                .len()
                .checked_sub(11)
                .and_then(|end| parse_media_key(&k[..end]));
            if let Some(m) = media {
                if out.last() != Some(&m) {
                    out.push(m);
                }
            }
        }
        Ok::<(), LedgerError>(())
    })?;
    Ok(out)
}

/// One run: every rule once. Returns (media, thumbnails) purged.
pub async fn run_once(
    service: &Moderation,
    cfg: &RetentionConfig,
    now_ms: u64,
) -> Result<(u64, u64), String> {
    let ledger = service.ledger().clone();
    let mut media_removed = 0u64;
    let mut thumbs_removed = 0u64;
    let act = |reason: String| Act {
        actor: Actor::System,
        request_id: RequestId(format!("retention-{now_ms}")),
        authority: Authority::RepositoryAdmin,
        reason: Some(reason),
    };
    let spec = |target: ModerationTarget, before: u64| PurgeSpec {
        target,
        before_ts_ms: Some(before),
        include_quarantined: false,
        keep_shared: false,
        accessed_before_ms: Some(before),
    };
    let rules = [
        (cfg.local_media_days, MediaKind::Local, true, "local"),
        (cfg.remote_media_days, MediaKind::Remote, false, "remote"),
    ];
    for (days, kind, include_local, what) in rules {
        if days == 0 {
            continue;
        }
        let before = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
        let l = ledger.clone();
        let candidates = tokio::task::spawn_blocking(move || idle(&l, kind, before))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if candidates.is_empty() {
            continue;
        }
        let removed = service
            .purge(
                &act(format!(
                    "retention: {what} media not accessed for {days} days"
                )),
                spec(ModerationTarget::Old { include_local }, before),
                candidates,
            )
            .await
            .map_err(|e| e.to_string())?;
        media_removed += removed.len() as u64;
    }
    if cfg.remote_max_bytes > 0 {
        let l = ledger.clone();
        let cap = cfg.remote_max_bytes;
        let (candidates, last_access) = tokio::task::spawn_blocking(move || over_cap(&l, cap))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !candidates.is_empty() {
            let before = last_access.saturating_add(1);
            let removed = service
                .purge(
                    &act(format!("retention: remote media above {cap} bytes")),
                    spec(
                        ModerationTarget::Old {
                            include_local: false,
                        },
                        before,
                    ),
                    candidates,
                )
                .await
                .map_err(|e| e.to_string())?;
            media_removed += removed.len() as u64;
        }
    }
    if cfg.thumbnail_days > 0 {
        let days = cfg.thumbnail_days;
        let before = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
        let l = ledger.clone();
        let candidates = tokio::task::spawn_blocking(move || with_old_thumbnails(&l, before))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !candidates.is_empty() {
            let mut s = spec(ModerationTarget::Thumbnails, before);
            s.accessed_before_ms = None;
            thumbs_removed += service
                .purge_thumbnails(
                    &act(format!("retention: thumbnails generated {days} days ago")),
                    s,
                    candidates,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok((media_removed, thumbs_removed))
}

/// The schedule: a first run `first_delay` after start, then one every `interval_ms`.
pub async fn retention_loop(
    service: Arc<Moderation>,
    cfg: RetentionConfig,
    status: SharedStatus,
    first_delay: std::time::Duration,
    clock: Option<Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = first_delay;
    loop {
        status.lock().next_run_ts = crate::clock::now_ms().saturating_add(wait.as_millis() as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = clock.as_ref().map_or_else(crate::clock::now_ms, |c| c());
        {
            let mut s = status.lock();
            s.last_run_start_ts = crate::clock::now_ms();
            s.last_run_end_ts = 0;
        }
        let result = run_once(&service, &cfg, now).await;
        let mut s = status.lock();
        s.last_run_end_ts = crate::clock::now_ms();
        match result {
            Ok((media, thumbs)) => {
                tracing::info!(media, thumbnails = thumbs, "retention run done");
                s.last_media_removed = media;
                s.last_thumbnails_removed = thumbs;
                s.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention run failed");
                s.last_error = Some(e);
            }
        }
        wait = std::time::Duration::from_millis(cfg.interval_ms);
    }
}
