//! Moderation state: which hashes are blocked in which scope, which media are quarantined,
//! which freed blobs still await deletion, and the indexes of the audit and history APIs.
//!
//! Keys:
//! - `b'q' ‖ sha256` → [`QuarantineBlocks`]: the scopes in which new copies of the bytes are
//!   refused (repository-wide, or per homeserver).
//! - `b'm' ‖ media key` → sequence of the act: live (not tombstoned) quarantined media.
//! - `b'p' ‖ purge seq (8 BE) ‖ sha256` → [`FreedBlob`]: deletions a purge decided and that
//!   have not been recorded yet (start-up resumes them).
//! - `b'a' ‖ seq (8 BE)` → [`AuditEntry`]: one per moderation act, newest last.
//! - `b'h' ‖ media key ‖ 0x00 ‖ seq (8 BE)` → empty: later events about one media
//!   (moderation acts, thumbnails, the link preview that stored it); its creation and access count are in `media_index`.
//! - `b's' ‖ sha256 ‖ seq (8 BE)` → empty: events about one blob (moves, failed moves,
//!   source and purge deletions).
//!
//! Invariant: the sets here are exactly what the listed events say; the full events are read
//! from the log by sequence, so this projection never copies what an act affected.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{
    Actor, Authority, Envelope, Event, FreedBlob, MediaRef, Seq, ServerName, Sha256,
};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::MODERATION.as_str();

/// The scopes in which a hash is blocked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineBlocks {
    /// The repository-wide act, if any: every origin refuses these bytes.
    pub repository: Option<Seq>,
    /// Homeserver-scoped acts: only that origin refuses them.
    pub homeservers: Vec<(ServerName, Seq)>,
}

impl QuarantineBlocks {
    /// Whether new media of `origin` with these bytes is refused.
    pub fn blocks(&self, origin: &ServerName) -> bool {
        self.repository.is_some() || self.homeservers.iter().any(|(s, _)| s == origin)
    }

    /// Whether no scope is left.
    pub fn is_empty(&self) -> bool {
        self.repository.is_none() && self.homeservers.is_empty()
    }
}

/// What the audit API filters on; the act itself is read from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `quarantine`, `unquarantine`, `attributes` or `purge`.
    pub kind: String,
    /// Who acted.
    pub actor: Actor,
    /// The origins the act touched (its authority's and those of the media it changed).
    pub origins: Vec<ServerName>,
    /// When (envelope time).
    pub recorded_at_ms: u64,
    /// How many media it changed.
    pub media_count: u64,
}

/// The moderation projection.
pub struct Moderation;

fn block_key(sha: &Sha256) -> Vec<u8> {
    let mut k = vec![b'q'];
    k.extend_from_slice(&sha.0);
    k
}

fn quarantined_key(media: &MediaRef) -> Vec<u8> {
    let mut k = vec![b'm'];
    k.extend(media_key(media));
    k
}

/// The key prefix of a purge's pending deletions.
pub fn pending_prefix(purge: Seq) -> Vec<u8> {
    let mut k = vec![b'p'];
    k.extend_from_slice(&purge.0.to_be_bytes());
    k
}

fn pending_key(purge: Seq, sha: &Sha256) -> Vec<u8> {
    let mut k = pending_prefix(purge);
    k.extend_from_slice(&sha.0);
    k
}

/// The key of an audit entry.
pub fn audit_key(seq: Seq) -> Vec<u8> {
    let mut k = vec![b'a'];
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

/// The prefix of one media's history keys.
pub fn history_prefix(media: &MediaRef) -> Vec<u8> {
    let mut k = vec![b'h'];
    k.extend(media_key(media));
    k.push(0);
    k
}

/// The prefix of one blob's history keys.
pub fn blob_history_prefix(sha: &Sha256) -> Vec<u8> {
    let mut k = vec![b's'];
    k.extend_from_slice(&sha.0);
    k
}

fn with_seq(mut prefix: Vec<u8>, seq: Seq) -> Vec<u8> {
    prefix.extend_from_slice(&seq.0.to_be_bytes());
    prefix
}

/// The sequence at the end of a history key.
pub fn seq_of_history_key(key: &[u8]) -> Option<Seq> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(Seq(u64::from_be_bytes(tail)))
}

fn origins(authority: &Authority, media: &[&MediaRef]) -> Vec<ServerName> {
    let mut out: Vec<ServerName> = authority.origin().cloned().into_iter().collect();
    for m in media {
        if !out.contains(&m.origin) {
            out.push(m.origin.clone());
        }
    }
    out
}

fn audit(tx: &mut dyn KvTx, env: &Envelope, authority: &Authority) -> Result<(), ProjectionError> {
    let kind = env
        .event
        .moderation_kind()
        .ok_or_else(|| invariant(NAME, "audit entry of a non-moderation event"))?;
    let media = env.event.affected_media();
    let entry = AuditEntry {
        kind: kind.to_owned(),
        actor: env.actor.clone(),
        origins: origins(authority, &media),
        recorded_at_ms: env.recorded_at_ms,
        media_count: media.len() as u64,
    };
    for m in &media {
        tx.put(&with_seq(history_prefix(m), env.seq), Vec::new());
    }
    put_value(NAME, tx, &audit_key(env.seq), &entry)
}

fn blob_history(tx: &mut dyn KvTx, env: &Envelope, sha: &Sha256) {
    tx.put(&with_seq(blob_history_prefix(sha), env.seq), Vec::new());
}

impl Projection for Moderation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaQuarantinedV1(e) => {
                for sha in &e.hashes {
                    let key = block_key(sha);
                    let mut b: QuarantineBlocks = get_value(NAME, tx, &key)?.unwrap_or_default();
                    match &e.authority {
                        Authority::HomeserverAdmin(s) => {
                            if !b.homeservers.iter().any(|(h, _)| h == s) {
                                b.homeservers.push((s.clone(), env.seq));
                            }
                        }
                        Authority::RepositoryAdmin | Authority::Uploader | Authority::Import => {
                            b.repository.get_or_insert(env.seq);
                        }
                    }
                    put_value(NAME, tx, &key, &b)?;
                }
                for m in &e.media {
                    put_value(NAME, tx, &quarantined_key(m), &env.seq)?;
                }
                audit(tx, env, &e.authority)
            }
            Event::MediaUnquarantinedV1(e) => {
                for sha in &e.hashes {
                    let key = block_key(sha);
                    let mut b: QuarantineBlocks = get_value(NAME, tx, &key)?.unwrap_or_default();
                    match &e.authority {
                        Authority::HomeserverAdmin(s) => b.homeservers.retain(|(h, _)| h != s),
                        Authority::RepositoryAdmin | Authority::Uploader | Authority::Import => {
                            b = QuarantineBlocks::default();
                        }
                    }
                    if b.is_empty() {
                        tx.delete(&key);
                    } else {
                        put_value(NAME, tx, &key, &b)?;
                    }
                }
                for m in &e.media {
                    tx.delete(&quarantined_key(m));
                }
                audit(tx, env, &e.authority)
            }
            Event::MediaAttributesSetV1(e) => audit(tx, env, &e.authority),
            Event::MediaPurgedV1(e) => {
                for m in &e.media {
                    tx.delete(&quarantined_key(&m.media));
                }
                for f in &e.freed {
                    put_value(NAME, tx, &pending_key(env.seq, &f.sha256), f)?;
                    blob_history(tx, env, &f.sha256);
                }
                audit(tx, env, &e.authority)
            }
            Event::BlobDeletedV1(e) => {
                tx.delete(&pending_key(e.purge, &e.sha256));
                blob_history(tx, env, &e.sha256);
                Ok(())
            }
            Event::BlobMovedV1(e) => {
                blob_history(tx, env, &e.sha256);
                Ok(())
            }
            Event::BlobSourceDeletedV1(e) => {
                blob_history(tx, env, &e.sha256);
                Ok(())
            }
            Event::BlobTransferFailedV1(e) => {
                blob_history(tx, env, &e.sha256);
                Ok(())
            }
            Event::ThumbnailGeneratedV1(e) => {
                tx.put(&with_seq(history_prefix(&e.media), env.seq), Vec::new());
                Ok(())
            }
            // The preview that produced an image is part of that media's history.
            Event::UrlPreviewedV1(e) => {
                if let Some(image) = &e.image {
                    tx.put(&with_seq(history_prefix(image), env.seq), Vec::new());
                }
                Ok(())
            }
            Event::MediaUploadedV1(_)
            | Event::AsyncUploadCreatedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaImportedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_)
            | Event::MediaMigratedV1(_) => Ok(()),
        }
    }
}

/// The scopes in which `sha` is blocked (empty when none).
pub fn blocks(
    kv: &(impl KvRead + ?Sized),
    sha: &Sha256,
) -> Result<QuarantineBlocks, ProjectionError> {
    Ok(get_value(NAME, kv, &block_key(sha))?.unwrap_or_default())
}

/// The pending deletion of `sha` decided by purge `purge`, if not recorded yet.
pub fn pending(
    kv: &(impl KvRead + ?Sized),
    purge: Seq,
    sha: &Sha256,
) -> Result<Option<FreedBlob>, ProjectionError> {
    get_value(NAME, kv, &pending_key(purge, sha))
}

/// The act (its sequence) that quarantined `media`, while it is quarantined.
pub fn quarantine_act(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<Seq>, ProjectionError> {
    get_value(NAME, kv, &quarantined_key(media))
}

/// The key prefix of live quarantined media, for scans.
pub const QUARANTINED_PREFIX: &[u8] = b"m";

/// The key prefix of pending deletions, for scans.
pub const PENDING_PREFIX: &[u8] = b"p";

/// The key prefix of audit entries, for scans.
pub const AUDIT_PREFIX: &[u8] = b"a";

/// The media of a `m` key.
pub fn quarantined_media_of_key(key: &[u8]) -> Option<MediaRef> {
    crate::parse_media_key(key.strip_prefix(QUARANTINED_PREFIX)?)
}

/// Decodes a pending deletion `(key, value)`.
pub fn decode_pending(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Seq, FreedBlob), ProjectionError>> {
    let seq: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|f| (Seq(u64::from_be_bytes(seq)), f))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}

/// Decodes an audit `(key, value)`.
pub fn decode_audit(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Seq, AuditEntry), ProjectionError>> {
    let seq: [u8; 8] = key.strip_prefix(AUDIT_PREFIX)?.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|a| (Seq(u64::from_be_bytes(seq)), a))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}
