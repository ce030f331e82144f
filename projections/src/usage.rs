//! Storage used per user, for quotas and the usage endpoint: the bytes and files of the live
//! local media each user uploaded (or was migrated with), and what they uploaded recently, in
//! time buckets, for the time-window upload limits.
//!
//! Keys:
//! - `b'u' ‖ user id` → [`UserUsage`]: live bytes and files, and the [`UploadWindow`].
//! - `b'm' ‖ media key` → [`Counted`]: a media counted in its uploader's usage, until purged (so
//!   a purge takes back exactly what was counted, once).
//!
//! A media counts from its `media.uploaded.v1` (uploader a user) or `media.migrated.v1` (a
//! local media with an uploader) until a purge lists it or a `url.previewed.v1` names it as
//! its image (the server's storage, not the user's) (a tombstone holds no bytes, so a
//! quarantined media purged into one stops counting too). Uploads of the shared secret and of
//! the system count for no one. The window records bytes uploaded, whatever became of them
//! later: deleting a media does not give back upload allowance. Migrated media count in
//! storage, not in the window (they were not uploaded here).

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{Actor, Envelope, Event, UserId};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::USAGE.as_str();

/// The longest time window a limit may use (31 days): older buckets are dropped.
pub const MAX_WINDOW_MS: u64 = 31 * 86_400_000;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;

/// One user's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    /// Bytes of their live media.
    pub bytes: u64,
    /// Their live media.
    pub files: u64,
    /// What they uploaded lately.
    pub window: UploadWindow,
}

/// Bytes uploaded per time bucket: one-second buckets for the last two minutes, one-minute
/// buckets for the last two hours, one-hour buckets up to [`MAX_WINDOW_MS`] (coarsened as the
/// buckets age, when the user's next upload is folded). A bucket reaching into a window counts
/// whole, so a limit errs on the strict side by at most one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadWindow {
    /// `(start_ms, length_ms, bytes)`, oldest first.
    pub buckets: Vec<(u64, u64, u64)>,
}

fn granule(age_ms: u64) -> u64 {
    if age_ms < 2 * MINUTE {
        SECOND
    } else if age_ms < 2 * HOUR {
        MINUTE
    } else {
        HOUR
    }
}

impl UploadWindow {
    /// Records `bytes` uploaded at `now_ms`, coarsening older buckets and dropping those past
    /// [`MAX_WINDOW_MS`].
    pub fn record(&mut self, now_ms: u64, bytes: u64) {
        let mut merged: Vec<(u64, u64, u64)> = Vec::with_capacity(self.buckets.len() + 1);
        let all = self
            .buckets
            .iter()
            .copied()
            .chain(std::iter::once((now_ms, 0, bytes)));
        for (start, len, b) in all {
            if start.saturating_add(len) + MAX_WINDOW_MS <= now_ms {
                continue;
            }
            let g = granule(now_ms.saturating_sub(start)).max(len);
            let aligned = start - start % g;
            match merged.last_mut() {
                Some(last) if last.0 == aligned && last.1 == g => last.2 = last.2.saturating_add(b),
                _ => merged.push((aligned, g, b)),
            }
        }
        self.buckets = merged;
    }

    /// Bytes uploaded in the `window_ms` up to `now_ms` (buckets reaching into it count whole).
    pub fn within(&self, now_ms: u64, window_ms: u64) -> u64 {
        let since = now_ms.saturating_sub(window_ms);
        self.buckets
            .iter()
            .filter(|(start, len, _)| start.saturating_add(*len) > since)
            .fold(0u64, |acc, (_, _, b)| acc.saturating_add(*b))
    }

    /// Takes `bytes` back from the newest buckets (a media counted that turned out not to be
    /// the user's upload: a link preview's image).
    pub fn take_back(&mut self, mut bytes: u64) {
        for (_, _, b) in self.buckets.iter_mut().rev() {
            let taken = bytes.min(*b);
            *b -= taken;
            bytes -= taken;
            if bytes == 0 {
                break;
            }
        }
        self.buckets.retain(|(_, _, b)| *b > 0);
    }

    /// When the oldest bytes counted in `window_ms` at `now_ms` leave that window (ms since
    /// the epoch), if any are counted.
    pub fn frees_at(&self, now_ms: u64, window_ms: u64) -> Option<u64> {
        let since = now_ms.saturating_sub(window_ms);
        self.buckets
            .iter()
            .find(|(start, len, _)| start.saturating_add(*len) > since)
            .map(|(start, len, _)| start.saturating_add(*len).saturating_add(window_ms))
    }
}

/// A media counted in its uploader's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Whose usage.
    pub user: UserId,
    /// How many bytes.
    pub size_bytes: u64,
}

fn user_key(user: &UserId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + user.as_str().len());
    k.push(b'u');
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

fn counted_key(media: &media_ledger_events::MediaRef) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend_from_slice(&media_key(media));
    k
}

fn add(
    tx: &mut dyn KvTx,
    env: &Envelope,
    media: &media_ledger_events::MediaRef,
    user: &UserId,
    size_bytes: u64,
    uploaded: bool,
) -> Result<(), ProjectionError> {
    let ck = counted_key(media);
    if tx.get(&ck)?.is_some() {
        return Err(invariant(NAME, format!("{media} counted twice")));
    }
    put_value(
        NAME,
        tx,
        &ck,
        &Counted {
            user: user.clone(),
            size_bytes,
        },
    )?;
    let uk = user_key(user);
    let mut u: UserUsage = get_value(NAME, tx, &uk)?.unwrap_or_default();
    u.bytes = u.bytes.saturating_add(size_bytes);
    u.files += 1;
    if uploaded {
        u.window.record(env.recorded_at_ms, size_bytes);
    }
    put_value(NAME, tx, &uk, &u)
}

/// Stops counting `media` (if it was counted): its bytes and file, and with `window` its
/// bytes in the upload window too.
fn take_back(
    tx: &mut dyn KvTx,
    media: &media_ledger_events::MediaRef,
    window: bool,
) -> Result<(), ProjectionError> {
    let ck = counted_key(media);
    let Some(c) = get_value::<Counted>(NAME, tx, &ck)? else {
        return Ok(());
    };
    tx.delete(&ck);
    let uk = user_key(&c.user);
    let mut u: UserUsage = get_value(NAME, tx, &uk)?
        .ok_or_else(|| invariant(NAME, format!("{media} counted for no one")))?;
    u.bytes = u
        .bytes
        .checked_sub(c.size_bytes)
        .ok_or_else(|| invariant(NAME, format!("{media}: usage of {} below zero", c.user)))?;
    u.files = u.files.saturating_sub(1);
    if window {
        u.window.take_back(c.size_bytes);
    }
    put_value(NAME, tx, &uk, &u)
}

/// The usage projection.
pub struct Usage;

impl Projection for Usage {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 2: link-preview images are taken back.
        2
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => match &e.uploader {
                Actor::User(u) => add(tx, env, &e.media, u, e.size_bytes, true),
                Actor::SharedSecretAdmin | Actor::System => Ok(()),
            },
            Event::MediaMigratedV1(e) => match (&e.uploader, e.remote) {
                (Some(u), false) => add(tx, env, &e.media, u, e.size_bytes, false),
                _ => Ok(()),
            },
            Event::MediaPurgedV1(e) => {
                for m in &e.media {
                    take_back(tx, &m.media, false)?;
                }
                Ok(())
            }
            // A preview's image is stored as an upload of the user who asked; it is the
            // server's, not their storage: taken back, window included.
            Event::UrlPreviewedV1(e) => match &e.image {
                Some(image) => take_back(tx, image, true),
                None => Ok(()),
            },
            Event::AsyncUploadCreatedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobMovedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::ThumbnailGeneratedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaImportedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::BlobDeletedV1(_) => Ok(()),
        }
    }
}

/// The figures of `user` (zero when they have none).
pub fn get(kv: &(impl KvRead + ?Sized), user: &UserId) -> Result<UserUsage, ProjectionError> {
    Ok(get_value(NAME, kv, &user_key(user))?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_recent_uploads_and_forgets_old_ones() {
        let mut w = UploadWindow::default();
        let t0 = 1_000_000_000;
        w.record(t0, 10);
        w.record(t0 + 500, 5);
        assert_eq!(w.within(t0 + 900, 10_000), 15);
        // Ten seconds later the first second's bucket has left a 5 s window.
        assert_eq!(w.within(t0 + 10_000, 5_000), 0);
        assert_eq!(w.frees_at(t0 + 900, 10_000), Some(t0 + 1_000 + 10_000));
        // An hour on, the buckets are coarser and still counted in a day.
        w.record(t0 + HOUR, 1);
        assert_eq!(w.within(t0 + HOUR, 86_400_000), 16);
        assert!(w.buckets.len() <= 2, "{:?}", w.buckets);
        // Past the longest window, gone.
        w.record(t0 + MAX_WINDOW_MS + 2 * HOUR, 7);
        assert_eq!(w.buckets.len(), 1);
        assert_eq!(w.within(t0 + MAX_WINDOW_MS + 2 * HOUR, MAX_WINDOW_MS), 7);
    }

    #[test]
    fn a_busy_user_keeps_a_bounded_window() {
        let mut w = UploadWindow::default();
        let t0 = 5_000_000_000;
        let mut total = 0;
        for i in 0..100_000u64 {
            w.record(t0 + i * 30_000, 1);
            total += 1;
        }
        assert!(
            w.buckets.len() < 120 + 120 + 31 * 24 + 3,
            "{}",
            w.buckets.len()
        );
        let now = t0 + 99_999 * 30_000;
        assert!(w.within(now, MAX_WINDOW_MS) <= total);
        assert_eq!(w.within(now, 60_000), 3);
    }
}
