//! Pure folds of media-ledger events into state.
//!
//! A [`Projection`] turns one [`Envelope`] into puts and deletes on its own key space through a
//! [`KvTx`]. It reads no clock (time is `Envelope::recorded_at_ms`), draws no random numbers and
//! does no I/O, so replaying the same log always gives the same state. Where the state lives is
//! the caller's business: RocksDB column families in the server (`src/projector.rs`), a
//! `BTreeMap` ([`memory::MemoryState`]) in tests and in `verify`.
//!
//! Every projection also exposes typed read helpers over a [`KvRead`], so the HTTP layer never
//! decodes a key or a value itself.
#![warn(missing_docs)]

pub mod datastore_sizes;
pub mod hash_refs;
pub mod import_tasks;
pub mod media_index;
pub mod memory;
pub mod moderation;
pub mod pending_uploads;
pub mod size_estimate;
pub mod tasks;
pub mod thumbnails;
pub mod url_previews;
pub mod usage;

use media_ledger_events::{codec, Envelope, MediaRef, ServerName};
use serde::{de::DeserializeOwned, Serialize};

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event contradicts the state (e.g. a second upload to the same media id). The
    /// projection halts rather than guessing.
    #[error("invariant violated at {name}: {detail}")]
    Invariant {
        /// The projection.
        name: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Stored state could not be decoded.
    #[error("corrupt state in {name}: {source}")]
    Corrupt {
        /// The projection.
        name: &'static str,
        /// The decoding failure.
        source: codec::CodecError,
    },
    /// The backing store failed to read.
    #[error("store: {0}")]
    Store(String),
}

/// Read access to one projection's key space.
pub trait KvRead {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;
}

/// Read and write access to one projection's key space, within one batch: a read sees the
/// batch's own earlier writes.
pub trait KvTx: KvRead {
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]);
}

/// A projection's name: its column family and its checkpoint key. Callers name projections by
/// the constants of [`names`], never by string literals, so a misspelt name does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectionName(&'static str);

impl ProjectionName {
    const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The name as text (the column family).
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The name's bytes (the checkpoint key).
    pub const fn as_bytes(self) -> &'static [u8] {
        self.0.as_bytes()
    }
}

impl PartialEq<str> for ProjectionName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl std::fmt::Display for ProjectionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The name of every projection.
pub mod names {
    use super::ProjectionName;

    /// [`crate::media_index`].
    pub const MEDIA_INDEX: ProjectionName = ProjectionName::new("media_index");
    /// [`crate::hash_refs`].
    pub const HASH_REFS: ProjectionName = ProjectionName::new("hash_refs");
    /// [`crate::datastore_sizes`].
    pub const DATASTORE_SIZES: ProjectionName = ProjectionName::new("datastore_sizes");
    /// [`crate::pending_uploads`].
    pub const PENDING_UPLOADS: ProjectionName = ProjectionName::new("pending_uploads");
    /// [`crate::tasks`].
    pub const TASKS: ProjectionName = ProjectionName::new("tasks");
    /// [`crate::thumbnails`].
    pub const THUMBNAILS: ProjectionName = ProjectionName::new("thumbnails");
    /// [`crate::moderation`].
    pub const MODERATION: ProjectionName = ProjectionName::new("moderation");
    /// [`crate::url_previews`].
    pub const URL_PREVIEWS: ProjectionName = ProjectionName::new("url_previews");
    /// [`crate::usage`].
    pub const USAGE: ProjectionName = ProjectionName::new("usage");
}

/// A pure fold of events into a key space.
pub trait Projection: Send + Sync {
    /// Stable name: the column family and the checkpoint key (one of [`names`]).
    fn name(&self) -> &'static str;
    /// [`Projection::name`], typed.
    fn projection_name(&self) -> ProjectionName {
        ProjectionName::new(self.name())
    }
    /// Bumped whenever the state layout or the fold changes; a stored state of another
    /// version is rebuilt from sequence 0.
    fn version(&self) -> u32;
    /// Folds one event into the state.
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError>;
}

/// Every projection the server maintains, in a fixed order.
pub static ALL: &[&dyn Projection] = &[
    &media_index::MediaIndex,
    &hash_refs::HashRefs,
    &datastore_sizes::DatastoreSizes,
    &pending_uploads::PendingUploads,
    &tasks::Tasks,
    &thumbnails::Thumbnails,
    &moderation::Moderation,
    &url_previews::UrlPreviews,
    &usage::Usage,
];

/// The key of a media in every projection keyed by media: `origin 0x00 media_id`
/// (neither part may contain a NUL byte, so the key is unambiguous and sorts by origin).
pub fn media_key(media: &MediaRef) -> Vec<u8> {
    let mut k = Vec::with_capacity(media.origin.as_str().len() + 1 + media.media_id.as_str().len());
    k.extend_from_slice(media.origin.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(media.media_id.as_str().as_bytes());
    k
}

/// The prefix of the [`media_key`] of every media of `origin`.
pub fn origin_prefix(origin: &ServerName) -> Vec<u8> {
    let mut p = origin.as_str().as_bytes().to_vec();
    p.push(0);
    p
}

/// Parses a key made by [`media_key`].
pub fn parse_media_key(key: &[u8]) -> Option<MediaRef> {
    let nul = key.iter().position(|&b| b == 0)?;
    let origin = std::str::from_utf8(key.get(..nul)?).ok()?.parse().ok()?;
    let id = std::str::from_utf8(key.get(nul + 1..)?)
        .ok()?
        .parse()
        .ok()?;
    Some(MediaRef::new(origin, id))
}

pub(crate) fn get_value<T: DeserializeOwned>(
    name: &'static str,
    kv: &(impl KvRead + ?Sized),
    key: &[u8],
) -> Result<Option<T>, ProjectionError> {
    match kv.get(key)? {
        Some(bytes) => codec::decode(&bytes)
            .map(Some)
            .map_err(|source| ProjectionError::Corrupt { name, source }),
        None => Ok(None),
    }
}

pub(crate) fn put_value<T: Serialize>(
    name: &'static str,
    tx: &mut (impl KvTx + ?Sized),
    key: &[u8],
    value: &T,
) -> Result<(), ProjectionError> {
    let bytes = codec::encode(value).map_err(|source| ProjectionError::Corrupt { name, source })?;
    tx.put(key, bytes);
    Ok(())
}

pub(crate) fn invariant(name: &'static str, detail: impl Into<String>) -> ProjectionError {
    ProjectionError::Invariant {
        name,
        detail: detail.into(),
    }
}
