//! Hash references: SHA-256 → where the blob is and which media point at it.
//!
//! Keys: `b'h' ‖ sha256` → [`HashRecord`]; `b'r' ‖ sha256 ‖ media key` → empty, one per
//! referring media; `b't' ‖ sha256 ‖ thumbnail key` → empty, one per referring thumbnail.
//! Invariant: `ref_count` equals the number of `r` and `t` keys of that hash, and a blob may
//! be deleted only once it reaches zero.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{BlobLocation, DatastoreId, Envelope, Event, FreedBlob, Seq, Sha256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const NAME: &str = crate::names::HASH_REFS.as_str();

/// One distinct content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashRecord {
    /// The datastore holding the bytes.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// How many media point at these bytes.
    pub ref_count: u64,
    /// Latest upload or recorded access of any media with this hash (envelope time); the
    /// `before_ts` filter of `size_estimate` reads it, as matrix-media-repo does.
    pub last_access_ms: u64,
    /// The sequence of the event that first stored these bytes: a transfer moves only blobs
    /// that existed when it started.
    pub created_seq: Seq,
}

/// The hash references projection.
pub struct HashRefs;

fn hash_key(sha: &Sha256) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'h');
    k.extend_from_slice(&sha.0);
    k
}

/// A media (uploaded or cached) now refers to `sha`.
fn add_media_ref(
    tx: &mut dyn KvTx,
    env: &Envelope,
    media: &media_ledger_events::MediaRef,
    sha: &Sha256,
    datastore: &DatastoreId,
    location: &BlobLocation,
    size_bytes: u64,
) -> Result<(), ProjectionError> {
    let rk = ref_key(sha, media);
    if tx.get(&rk)?.is_some() {
        return Err(invariant(NAME, format!("{media} referenced twice")));
    }
    tx.put(&rk, Vec::new());
    let hk = hash_key(sha);
    let record = match get_value::<HashRecord>(NAME, tx, &hk)? {
        Some(mut r) => {
            r.ref_count += 1;
            r.last_access_ms = r.last_access_ms.max(env.recorded_at_ms);
            r
        }
        None => HashRecord {
            datastore: datastore.clone(),
            location: location.clone(),
            size_bytes,
            ref_count: 1,
            last_access_ms: env.recorded_at_ms,
            created_seq: env.seq,
        },
    };
    put_value(NAME, tx, &hk, &record)
}

/// `b't' ‖ sha256 ‖ thumbnail key`: one per thumbnail referring to the blob.
fn thumb_ref_key(sha: &Sha256, thumb: &[u8]) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(&sha.0);
    k.extend_from_slice(thumb);
    k
}

fn ref_key(sha: &Sha256, media: &media_ledger_events::MediaRef) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&sha.0);
    k.extend(media_key(media));
    k
}

impl Projection for HashRefs {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 4: thumbnails and remote media refer to blobs too. 5: purges drop references.
        5
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => add_media_ref(
                tx,
                env,
                &e.media,
                &e.sha256,
                &e.datastore,
                &e.location,
                e.size_bytes,
            ),
            Event::RemoteMediaCachedV1(e) => add_media_ref(
                tx,
                env,
                &e.media,
                &e.sha256,
                &e.datastore,
                &e.location,
                e.size_bytes,
            ),
            Event::MediaImportedV1(e) => add_media_ref(
                tx,
                env,
                &e.media,
                &e.sha256,
                &e.datastore,
                &e.location,
                e.size_bytes,
            ),
            Event::MediaMigratedV1(e) => add_media_ref(
                tx,
                env,
                &e.media,
                &e.sha256,
                &e.datastore,
                &e.location,
                e.size_bytes,
            ),
            Event::ThumbnailGeneratedV1(e) => {
                let rk = thumb_ref_key(
                    &e.sha256,
                    &crate::thumbnails::thumb_key(
                        &e.media, e.width, e.height, e.method, e.animated,
                    ),
                );
                if tx.get(&rk)?.is_some() {
                    return Err(invariant(
                        NAME,
                        format!("thumbnail of {} recorded twice", e.media),
                    ));
                }
                tx.put(&rk, Vec::new());
                let hk = hash_key(&e.sha256);
                let record = match get_value::<HashRecord>(NAME, tx, &hk)? {
                    Some(mut r) => {
                        r.ref_count += 1;
                        r
                    }
                    None => HashRecord {
                        datastore: e.datastore.clone(),
                        location: e.location.clone(),
                        size_bytes: e.size_bytes,
                        ref_count: 1,
                        last_access_ms: env.recorded_at_ms,
                        created_seq: env.seq,
                    },
                };
                put_value(NAME, tx, &hk, &record)
            }
            Event::MediaAccessedV1(e) => {
                let hk = hash_key(&e.sha256);
                let mut r: HashRecord = get_value(NAME, tx, &hk)?.ok_or_else(|| {
                    invariant(NAME, format!("access to unknown hash {}", e.sha256))
                })?;
                r.last_access_ms = r.last_access_ms.max(env.recorded_at_ms);
                put_value(NAME, tx, &hk, &r)
            }
            Event::BlobMovedV1(e) => {
                let hk = hash_key(&e.sha256);
                let mut r: HashRecord = get_value(NAME, tx, &hk)?
                    .ok_or_else(|| invariant(NAME, format!("move of unknown hash {}", e.sha256)))?;
                if r.datastore != e.from_datastore || r.location != e.from_location {
                    return Err(invariant(
                        NAME,
                        format!(
                            "move of {} from {}, but it is in {}",
                            e.sha256, e.from_datastore, r.datastore
                        ),
                    ));
                }
                r.datastore = e.to_datastore.clone();
                r.location = e.to_location.clone();
                put_value(NAME, tx, &hk, &r)
            }
            Event::MediaPurgedV1(e) => {
                // References dropped per hash, and the event's freed entries per hash: map
                // look-ups, as a purge may name thousands of media.
                let mut dropped: BTreeMap<Sha256, u64> = BTreeMap::new();
                for m in &e.media {
                    let rk = ref_key(&m.sha256, &m.media);
                    if tx.get(&rk)?.is_none() {
                        return Err(invariant(
                            NAME,
                            format!("purge of unreferenced {}", m.media),
                        ));
                    }
                    tx.delete(&rk);
                    *dropped.entry(m.sha256).or_default() += 1;
                }
                for t in &e.thumbnails {
                    let key = crate::thumbnails::thumb_key(
                        &t.media, t.width, t.height, t.method, t.animated,
                    );
                    let rk = thumb_ref_key(&t.sha256, &key);
                    if tx.get(&rk)?.is_none() {
                        return Err(invariant(
                            NAME,
                            format!("purge of an unreferenced thumbnail of {}", t.media),
                        ));
                    }
                    tx.delete(&rk);
                    *dropped.entry(t.sha256).or_default() += 1;
                }
                let mut freed_of: BTreeMap<Sha256, Vec<&FreedBlob>> = BTreeMap::new();
                for f in &e.freed {
                    freed_of.entry(f.sha256).or_default().push(f);
                }
                if let Some(f) = e.freed.iter().find(|f| !dropped.contains_key(&f.sha256)) {
                    return Err(invariant(
                        NAME,
                        format!("purge frees {}, which it does not release", f.sha256),
                    ));
                }
                for (sha, n) in dropped {
                    let hk = hash_key(&sha);
                    let mut r: HashRecord = get_value(NAME, tx, &hk)?
                        .ok_or_else(|| invariant(NAME, format!("purge of unknown hash {sha}")))?;
                    r.ref_count = r
                        .ref_count
                        .checked_sub(n)
                        .ok_or_else(|| invariant(NAME, format!("ref count of {sha} underflows")))?;
                    let entries = freed_of.get(&sha).map_or(&[][..], Vec::as_slice);
                    let freed = !entries.is_empty();
                    if (r.ref_count == 0) != freed {
                        return Err(invariant(
                            NAME,
                            format!(
                                "purge frees {sha} = {freed}, but {} references remain",
                                r.ref_count
                            ),
                        ));
                    }
                    if r.ref_count == 0 {
                        let wrong_place = entries.iter().any(|f| {
                            f.datastore != r.datastore
                                || f.location != r.location
                                || f.size_bytes != r.size_bytes
                        });
                        if wrong_place {
                            return Err(invariant(
                                NAME,
                                format!("purge frees {sha} somewhere else than its record says"),
                            ));
                        }
                        tx.delete(&hk);
                    } else {
                        put_value(NAME, tx, &hk, &r)?;
                    }
                }
                Ok(())
            }
            Event::AsyncUploadCreatedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::BlobDeletedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => Ok(()),
        }
    }
}

/// Visits every hash record (`h` keys) of a scan done by the caller: decodes one value.
pub fn decode_hash_entry(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Sha256, HashRecord), ProjectionError>> {
    let rest = key.strip_prefix(b"h")?;
    let sha: [u8; 32] = rest.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|r| (Sha256(sha), r))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}

/// The key prefix of hash records, for scans.
pub const HASH_PREFIX: &[u8] = b"h";

/// The record of a hash, if any media points at it.
pub fn get(
    kv: &(impl KvRead + ?Sized),
    sha: &Sha256,
) -> Result<Option<HashRecord>, ProjectionError> {
    get_value(NAME, kv, &hash_key(sha))
}
