//! Media index: `(origin, media_id)` → everything the HTTP layer needs to serve a media.
//!
//! Invariant: a key exists exactly for the media that were uploaded (or cached) and not
//! purged, plus the tombstones of quarantined media that were purged; its `last_access_ms` is
//! the time of the latest upload or recorded access. The hash index lists the same keys.
//!
//! The hash index is a doubly linked list per hash, in upload order: `0x02 ‖ sha256` →
//! [`HashList`] (first and last media key), `0x03 ‖ sha256 ‖ media key` → [`HashLink`]
//! (its neighbours). Adding or removing a media touches a constant number of keys however
//! many media share the bytes (a list in one value was rewritten whole on every duplicate
//! upload), and listing needs only point reads, which every state backend has.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{
    Actor, ContentType, DatastoreId, Envelope, Event, MediaPurpose, MediaRef, Seq, Sha256,
};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::MEDIA_INDEX.as_str();

/// Whether the media was uploaded here or cached from another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaKind {
    /// Uploaded to one of our homeservers.
    Local,
    /// Fetched from a remote server and cached.
    Remote,
}

/// One media as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Digest of the content.
    pub sha256: Sha256,
    /// Length of the content.
    pub size_bytes: u64,
    /// As declared at upload.
    pub content_type: Option<ContentType>,
    /// The upload's file name.
    pub upload_name: Option<String>,
    /// Who uploaded it.
    pub uploader: Actor,
    /// When it was uploaded (envelope time).
    pub created_at_ms: u64,
    /// Local or remote.
    pub kind: MediaKind,
    /// The datastore holding its blob.
    pub datastore: DatastoreId,
    /// Whether downloads are refused.
    pub quarantined: bool,
    /// Latest upload or recorded access (envelope time).
    pub last_access_ms: u64,
    /// Pinned media are never quarantined nor purged.
    pub pinned: bool,
    /// Purged while quarantined: the record stays (its id and hash stay blocked, audit can
    /// show it) but it has no bytes and is never served.
    pub tombstone: bool,
    /// The sequence of the event that created it.
    pub created_seq: Seq,
    /// Recorded accesses (each at most once per media per configured interval).
    pub access_count: u64,
}

impl MediaRecord {
    /// Whether it can be served (neither quarantined nor a tombstone).
    pub fn servable(&self) -> bool {
        !self.quarantined && !self.tombstone
    }
}

/// The media index projection.
pub struct MediaIndex;

impl Projection for MediaIndex {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 3: remote media. 4: moderation (pinned, tombstones, access counts). 5: the hash
        // index as a linked list (O(1) per upload).
        5
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => insert(
                tx,
                env,
                &e.media,
                MediaRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    upload_name: e.upload_name.clone(),
                    uploader: e.uploader.clone(),
                    created_at_ms: env.recorded_at_ms,
                    kind: MediaKind::Local,
                    datastore: e.datastore.clone(),
                    quarantined: false,
                    last_access_ms: env.recorded_at_ms,
                    pinned: false,
                    tombstone: false,
                    created_seq: env.seq,
                    access_count: 0,
                },
            ),
            Event::RemoteMediaCachedV1(e) => insert(
                tx,
                env,
                &e.media,
                MediaRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    upload_name: e.upload_name.clone(),
                    uploader: Actor::System,
                    created_at_ms: env.recorded_at_ms,
                    kind: MediaKind::Remote,
                    datastore: e.datastore.clone(),
                    quarantined: false,
                    last_access_ms: env.recorded_at_ms,
                    pinned: false,
                    tombstone: false,
                    created_seq: env.seq,
                    access_count: 0,
                },
            ),
            // Local media the homeserver stored itself: its creation time is the homeserver's
            // when known (the unauthenticated freeze judges by it), else the import's.
            Event::MediaImportedV1(e) => insert(
                tx,
                env,
                &e.media,
                MediaRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    upload_name: e.upload_name.clone(),
                    uploader: Actor::System,
                    created_at_ms: e.origin_created_at_ms.unwrap_or(env.recorded_at_ms),
                    kind: MediaKind::Local,
                    datastore: e.datastore.clone(),
                    quarantined: false,
                    last_access_ms: env.recorded_at_ms,
                    pinned: false,
                    tombstone: false,
                    created_seq: env.seq,
                    access_count: 0,
                },
            ),
            // Media of another store, as it was there: its uploader, kind and times.
            Event::MediaMigratedV1(e) => insert(
                tx,
                env,
                &e.media,
                MediaRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    upload_name: e.upload_name.clone(),
                    uploader: e.uploader.clone().map_or(Actor::System, Actor::User),
                    created_at_ms: e.created_at_ms,
                    kind: if e.remote {
                        MediaKind::Remote
                    } else {
                        MediaKind::Local
                    },
                    datastore: e.datastore.clone(),
                    quarantined: false,
                    last_access_ms: e.last_access_ms,
                    pinned: false,
                    tombstone: false,
                    created_seq: env.seq,
                    access_count: 0,
                },
            ),
            Event::MediaAccessedV1(e) => {
                let key = media_key(&e.media);
                let mut record: MediaRecord = get_value(NAME, tx, &key)?
                    .ok_or_else(|| invariant(NAME, format!("access to unknown {}", e.media)))?;
                record.last_access_ms = record.last_access_ms.max(env.recorded_at_ms);
                record.access_count += 1;
                put_value(NAME, tx, &key, &record)
            }
            Event::MediaQuarantinedV1(e) => {
                for m in &e.media {
                    update(tx, m, |r| r.quarantined = true)?;
                }
                Ok(())
            }
            Event::MediaUnquarantinedV1(e) => {
                for m in &e.media {
                    update(tx, m, |r| r.quarantined = false)?;
                }
                Ok(())
            }
            Event::MediaAttributesSetV1(e) => update(tx, &e.media, |r| {
                r.pinned = e.purpose == MediaPurpose::Pinned;
            }),
            Event::MediaPurgedV1(e) => {
                for m in &e.media {
                    if m.tombstone {
                        update(tx, &m.media, |r| r.tombstone = true)?;
                    } else {
                        remove(tx, &m.media, &m.sha256)?;
                    }
                }
                Ok(())
            }
            Event::BlobMovedV1(e) => {
                for key in keys_with_hash(tx, &e.sha256)? {
                    let mut record: MediaRecord = get_value(NAME, tx, &key)?
                        .ok_or_else(|| invariant(NAME, "hash index names a missing media"))?;
                    record.datastore = e.to_datastore.clone();
                    put_value(NAME, tx, &key, &record)?;
                }
                Ok(())
            }
            Event::AsyncUploadCreatedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            // Thumbnails are not media rows (matrix-media-repo's are, which hides their bytes
            // from purge); they live in the `thumbnails` projection.
            | Event::ThumbnailGeneratedV1(_)
            | Event::BlobDeletedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => Ok(()),
        }
    }
}

/// Changes an existing record.
fn update(
    tx: &mut dyn KvTx,
    media: &MediaRef,
    f: impl FnOnce(&mut MediaRecord),
) -> Result<(), ProjectionError> {
    let key = media_key(media);
    let mut record: MediaRecord = get_value(NAME, tx, &key)?
        .ok_or_else(|| invariant(NAME, format!("moderation of unknown {media}")))?;
    f(&mut record);
    put_value(NAME, tx, &key, &record)
}

/// Deletes a record and its hash index entry.
fn remove(tx: &mut dyn KvTx, media: &MediaRef, sha: &Sha256) -> Result<(), ProjectionError> {
    let key = media_key(media);
    match get_value::<MediaRecord>(NAME, tx, &key)? {
        Some(r) if r.sha256 == *sha => {}
        Some(_) => {
            return Err(invariant(
                NAME,
                format!("purge of {media} names another hash"),
            ))
        }
        None => return Err(invariant(NAME, format!("purge of unknown {media}"))),
    }
    tx.delete(&key);
    unlink(tx, sha, &key)
}

/// Adds a new media record and lists it under its hash.
fn insert(
    tx: &mut dyn KvTx,
    env: &Envelope,
    media: &MediaRef,
    record: MediaRecord,
) -> Result<(), ProjectionError> {
    let key = media_key(media);
    if tx.get(&key)?.is_some() {
        return Err(invariant(
            NAME,
            format!("{media} recorded twice (at {})", env.seq),
        ));
    }
    let sha = record.sha256;
    put_value(NAME, tx, &key, &record)?;
    append(tx, &sha, key)
}

/// First byte of the head of a hash's media list (`0x02 ‖ sha256` → [`HashList`]); a media
/// key never starts with it.
pub const SHA_INDEX_TAG: u8 = 2;
/// First byte of a link of a hash's media list (`0x03 ‖ sha256 ‖ media key` →
/// [`HashLink`]); a media key never starts with it.
pub const SHA_LINK_TAG: u8 = 3;

/// The ends of a hash's media list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashList {
    /// The media key uploaded first (of those still there).
    pub first: Vec<u8>,
    /// The media key uploaded last.
    pub last: Vec<u8>,
}

/// One media's place in its hash's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashLink {
    /// The media key before it.
    pub prev: Option<Vec<u8>>,
    /// The media key after it.
    pub next: Option<Vec<u8>>,
}

fn sha_key(sha: &Sha256) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(SHA_INDEX_TAG);
    k.extend_from_slice(&sha.0);
    k
}

fn link_key(sha: &Sha256, media_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33 + media_key.len());
    k.push(SHA_LINK_TAG);
    k.extend_from_slice(&sha.0);
    k.extend_from_slice(media_key);
    k
}

fn link(tx: &dyn KvTx, sha: &Sha256, key: &[u8]) -> Result<HashLink, ProjectionError> {
    get_value(NAME, tx, &link_key(sha, key))?
        .ok_or_else(|| invariant(NAME, format!("hash index of {sha} lost a link")))
}

/// Adds `key` at the end of `sha`'s list: three keys written whatever the list's length.
fn append(tx: &mut dyn KvTx, sha: &Sha256, key: Vec<u8>) -> Result<(), ProjectionError> {
    let sk = sha_key(sha);
    let head = match get_value::<HashList>(NAME, tx, &sk)? {
        None => {
            put_value(
                NAME,
                tx,
                &link_key(sha, &key),
                &HashLink {
                    prev: None,
                    next: None,
                },
            )?;
            HashList {
                first: key.clone(),
                last: key,
            }
        }
        Some(head) => {
            let mut last = link(tx, sha, &head.last)?;
            last.next = Some(key.clone());
            put_value(NAME, tx, &link_key(sha, &head.last), &last)?;
            let new = HashLink {
                prev: Some(head.last),
                next: None,
            };
            put_value(NAME, tx, &link_key(sha, &key), &new)?;
            HashList {
                first: head.first,
                last: key,
            }
        }
    };
    put_value(NAME, tx, &sk, &head)
}

/// Takes `key` out of `sha`'s list, joining its neighbours.
fn unlink(tx: &mut dyn KvTx, sha: &Sha256, key: &[u8]) -> Result<(), ProjectionError> {
    let sk = sha_key(sha);
    let mut head: HashList = get_value(NAME, tx, &sk)?
        .ok_or_else(|| invariant(NAME, format!("hash index of {sha} has no list")))?;
    let gone = link(tx, sha, key)?;
    tx.delete(&link_key(sha, key));
    match &gone.prev {
        Some(p) => {
            let mut prev = link(tx, sha, p)?;
            prev.next.clone_from(&gone.next);
            put_value(NAME, tx, &link_key(sha, p), &prev)?;
        }
        None => match &gone.next {
            Some(n) => head.first.clone_from(n),
            None => {
                tx.delete(&sk);
                return Ok(());
            }
        },
    }
    match &gone.next {
        Some(n) => {
            let mut next = link(tx, sha, n)?;
            next.prev.clone_from(&gone.prev);
            put_value(NAME, tx, &link_key(sha, n), &next)?;
        }
        None => {
            if let Some(p) = gone.prev {
                head.last = p;
            }
        }
    }
    put_value(NAME, tx, &sk, &head)
}

/// The media keys of `sha`'s list, in upload order.
fn keys_with_hash(
    kv: &(impl KvRead + ?Sized),
    sha: &Sha256,
) -> Result<Vec<Vec<u8>>, ProjectionError> {
    let mut out = Vec::new();
    let Some(head) = get_value::<HashList>(NAME, kv, &sha_key(sha))? else {
        return Ok(out);
    };
    let mut seen = std::collections::HashSet::new();
    let mut cur = Some(head.first);
    while let Some(key) = cur {
        if !seen.insert(key.clone()) {
            return Err(invariant(NAME, format!("hash index of {sha} loops")));
        }
        let l: HashLink = get_value(NAME, kv, &link_key(sha, &key))?
            .ok_or_else(|| invariant(NAME, format!("hash index of {sha} lost a link")))?;
        out.push(key);
        cur = l.next;
    }
    Ok(out)
}

/// The media whose content is `sha`, in upload order.
pub fn media_with_hash(
    kv: &(impl KvRead + ?Sized),
    sha: &Sha256,
) -> Result<Vec<MediaRef>, ProjectionError> {
    Ok(keys_with_hash(kv, sha)?
        .iter()
        .filter_map(|k| crate::parse_media_key(k))
        .collect())
}

/// Whether a key of this projection is a media record (not a hash index key).
pub fn is_record_key(key: &[u8]) -> bool {
    key.first()
        .is_some_and(|&b| b != SHA_INDEX_TAG && b != SHA_LINK_TAG)
}

/// The record of `media`, if it exists.
pub fn get(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<MediaRecord>, ProjectionError> {
    get_value(NAME, kv, &media_key(media))
}

/// Decodes a stored value of this projection (for scans done by the caller).
pub fn decode_record(bytes: &[u8]) -> Result<MediaRecord, ProjectionError> {
    media_ledger_events::codec::decode(bytes)
        .map_err(|source| ProjectionError::Corrupt { name: NAME, source })
}
