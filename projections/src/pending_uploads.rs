//! Pending asynchronous uploads: media ids handed out by `POST /v1/create` and not yet filled.
//!
//! Keys: media key → [`PendingUpload`]; `0x01 ‖ user id` → [`OwnerPending`], the owner's
//! reservations (a media key never starts with 0x01). Expiry is not folded as a deletion (a
//! projection has no clock): readers compare `expires_at_ms` with their own time. The owner
//! list drops entries that had expired by the envelope time of the event being folded, which
//! keeps it short and stays deterministic.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{Envelope, Event, MediaRef, UserId};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::PENDING_UPLOADS.as_str();

/// A reserved, still empty media id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The only user who may fill it.
    pub owner: UserId,
    /// When it was reserved (envelope time).
    pub created_at_ms: u64,
    /// When the reservation lapses.
    pub expires_at_ms: u64,
}

/// The reservations of one owner: `(media key, expires_at_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerPending {
    /// Reservations not yet filled (and not expired when last folded).
    pub entries: Vec<(Vec<u8>, u64)>,
}

impl OwnerPending {
    /// How many are unexpired at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> usize {
        self.entries.iter().filter(|(_, exp)| *exp > now_ms).count()
    }
}

fn owner_key(owner: &UserId) -> Vec<u8> {
    let mut k = vec![1u8];
    k.extend_from_slice(owner.as_str().as_bytes());
    k
}

fn update_owner(
    tx: &mut dyn KvTx,
    owner: &UserId,
    now_ms: u64,
    change: impl FnOnce(&mut Vec<(Vec<u8>, u64)>),
) -> Result<(), ProjectionError> {
    let key = owner_key(owner);
    let mut list: OwnerPending = get_value(NAME, tx, &key)?.unwrap_or_default();
    list.entries.retain(|(_, exp)| *exp > now_ms);
    change(&mut list.entries);
    if list.entries.is_empty() {
        tx.delete(&key);
        Ok(())
    } else {
        put_value(NAME, tx, &key, &list)
    }
}

/// The pending uploads projection.
pub struct PendingUploads;

impl Projection for PendingUploads {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 2: per-owner reservation lists.
        2
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::AsyncUploadCreatedV1(e) => {
                let key = media_key(&e.media);
                if tx.get(&key)?.is_some() {
                    return Err(invariant(NAME, format!("{} reserved twice", e.media)));
                }
                let p = PendingUpload {
                    owner: e.owner.clone(),
                    created_at_ms: env.recorded_at_ms,
                    expires_at_ms: e.expires_at_ms,
                };
                put_value(NAME, tx, &key, &p)?;
                update_owner(tx, &e.owner, env.recorded_at_ms, |l| {
                    l.push((key, e.expires_at_ms))
                })
            }
            Event::MediaUploadedV1(e) => {
                let key = media_key(&e.media);
                if let Some(p) = get_value::<PendingUpload>(NAME, tx, &key)? {
                    tx.delete(&key);
                    update_owner(tx, &p.owner, env.recorded_at_ms, |l| {
                        l.retain(|(k, _)| *k != key)
                    })?;
                }
                Ok(())
            }
            Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobMovedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::ThumbnailGeneratedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaImportedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_)
            | Event::MediaMigratedV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::MediaPurgedV1(_)
            | Event::BlobDeletedV1(_) => Ok(()),
        }
    }
}

/// The reservations of `owner`.
pub fn owner(kv: &(impl KvRead + ?Sized), owner: &UserId) -> Result<OwnerPending, ProjectionError> {
    Ok(get_value(NAME, kv, &owner_key(owner))?.unwrap_or_default())
}

/// The reservation of `media`, if it is pending (expired or not).
pub fn get(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<PendingUpload>, ProjectionError> {
    get_value(NAME, kv, &media_key(media))
}
