//! Pending asynchronous uploads: media ids handed out by `POST /v1/create` and not yet filled.
//!
//! Key: media key → [`PendingUpload`]. Expiry is not folded here (a projection has no clock):
//! readers compare `expires_at_ms` with their own time.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{Envelope, Event, MediaRef, UserId};
use serde::{Deserialize, Serialize};

const NAME: &str = "pending_uploads";

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

/// The pending uploads projection.
pub struct PendingUploads;

impl Projection for PendingUploads {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        1
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
                put_value(NAME, tx, &key, &p)
            }
            Event::MediaUploadedV1(e) => {
                tx.delete(&media_key(&e.media));
                Ok(())
            }
            Event::MediaAccessedV1(_) => Ok(()),
        }
    }
}

/// The reservation of `media`, if it is pending (expired or not).
pub fn get(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<PendingUpload>, ProjectionError> {
    get_value(NAME, kv, &media_key(media))
}
