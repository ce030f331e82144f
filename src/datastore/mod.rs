//! Where blobs live. A [`Datastore`] stores content-addressed blobs durably and streams them
//! back; [`Datastores`] holds the configured ones and picks where new bytes go.
//!
//! Uploads are spooled to a temp file in the chosen datastore's spool directory while they are
//! hashed; [`Datastore::commit`] then makes the blob durable under its final location *before*
//! any event refers to it.

mod file;
mod s3;

pub use file::FileDatastore;
pub use s3::S3Datastore;

use crate::config::{Backend, DatastoreConfig, DatastoreKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a datastore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// The blob is not where the projections say it is.
    #[error("blob {0} missing")]
    Missing(BlobLocation),
    /// A remote backend (S3) failed or cannot be reached.
    #[error("{context}: {message}")]
    Backend {
        /// What was being done.
        context: String,
        /// What the backend said.
        message: String,
    },
    /// The backend failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
}

impl DatastoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| DatastoreError::Io { context, source }
    }
}

/// A byte stream of (part of) a blob.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A place that keeps blobs.
#[async_trait]
pub trait Datastore: Send + Sync {
    /// The stable id from config.
    fn id(&self) -> &DatastoreId;
    /// The backend type as the admin API shows it (`file`).
    fn type_name(&self) -> &'static str;
    /// Where it is, as the admin API shows it.
    fn uri(&self) -> String;
    /// Directory for the temp files of uploads headed here.
    fn spool_dir(&self) -> &Path;
    /// Whether a spool file must be fsynced before [`Datastore::commit`]: true when commit
    /// renames it into place (its bytes become the blob), false when commit copies it
    /// elsewhere and durability comes from that copy (S3 acknowledges a stored object).
    fn spool_needs_sync(&self) -> bool {
        true
    }
    /// Makes the spooled, already fsynced file `spooled` durable as the blob of `sha`;
    /// returns its location. After this returns, a crash cannot lose the bytes, and
    /// `spooled` is gone. `spooled` may live in another datastore's spool directory.
    async fn commit(&self, spooled: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError>;
    /// Stores the bytes of the local file `path` (left in place) as the blob of `sha`.
    /// The default copies it into this datastore's spool and commits the copy.
    async fn put_from(&self, path: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        let unique = crate::media::new_media_id().map_err(|e| DatastoreError::Backend {
            context: "naming a spool file".into(),
            message: e.to_string(),
        })?;
        let spool = self
            .spool_dir()
            .join(format!("copy-{}-{unique}.part", sha.to_hex()));
        let src = path.to_owned();
        let dst = spool.clone();
        let sync = self.spool_needs_sync();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::copy(&src, &dst)?;
            if sync {
                std::fs::File::open(&dst)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DatastoreError::Io {
            context: "copy task".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(DatastoreError::io("copying into the spool"))?;
        let result = self.commit(&spool, sha).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&spool).await;
        }
        result
    }
    /// The local file of a blob, when the datastore is a local directory.
    fn local_path(&self, _location: &BlobLocation) -> Option<PathBuf> {
        None
    }
    /// The blob's length, or `None` when it does not exist.
    async fn size_of(&self, location: &BlobLocation) -> Result<Option<u64>, DatastoreError>;
    /// Whether the store itself vouches that the blob at `location` is `size` bytes hashing to
    /// `sha` (S3: the SHA-256 checksum it checked when the object was written, read with one
    /// HEAD). `None` when it cannot say, and the caller reads the blob back instead.
    async fn vouches_for(
        &self,
        _location: &BlobLocation,
        _sha: &Sha256,
        _size: u64,
    ) -> Result<Option<bool>, DatastoreError> {
        Ok(None)
    }
    /// Whether the blob exists.
    async fn exists(&self, location: &BlobLocation) -> Result<bool, DatastoreError> {
        Ok(self.size_of(location).await?.is_some())
    }
    /// Streams `len` bytes of the blob from `offset`.
    async fn open(
        &self,
        location: &BlobLocation,
        offset: u64,
        len: u64,
    ) -> Result<BlobStream, DatastoreError>;
    /// Lists every blob and leftover temp file, for the start-up orphan sweep.
    async fn list(&self) -> Result<Listing, DatastoreError>;
    /// Deletes a blob (only ever called for blobs nothing refers to).
    async fn delete(&self, location: &BlobLocation) -> Result<(), DatastoreError>;
    /// The identity marker at the root ([`MARKER_NAME`]): the id of the datastore that first
    /// started on this storage, `None` when there is none yet.
    async fn read_marker(&self) -> Result<Option<String>, DatastoreError>;
    /// Writes (durably) the identity marker naming this datastore's id.
    async fn write_marker(&self) -> Result<(), DatastoreError>;
}

/// The identity marker: a file in a `file` datastore's root, an object under an `s3`
/// datastore's prefix, holding the id of the datastore that owns the storage. Outside the
/// blob layout, so listings and the sweep never see it.
pub const MARKER_NAME: &str = ".media-ledger-datastore";

/// What a datastore holds on disk.
#[derive(Debug, Default)]
pub struct Listing {
    /// Blobs in our layout, with the hash their name claims.
    pub blobs: Vec<(BlobLocation, Sha256)>,
    /// Spool files left by uploads that never finished.
    pub temp_files: Vec<PathBuf>,
}

/// Where the blob of `sha` lives in every datastore: `<hh>/<hh>/<sha256 hex>`.
pub fn content_location(sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
    let hex = sha.to_hex();
    let (a, rest) = hex.split_at(2);
    let b = rest.get(..2).unwrap_or_default();
    format!("{a}/{b}/{hex}")
        .parse()
        .map_err(|e| DatastoreError::Io {
            context: "building a location".into(),
            source: std::io::Error::other(e),
        })
}

/// The inverse of [`content_location`]: `None` for anything not in that layout.
pub fn parse_content_location(s: &str) -> Option<(BlobLocation, Sha256)> {
    let mut parts = s.split('/');
    let (a, b, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sha: Sha256 = name.parse().ok()?;
    let hex = sha.to_hex();
    if hex.get(0..2) != Some(a) || hex.get(2..4) != Some(b) {
        return None;
    }
    Some((s.parse().ok()?, sha))
}

/// A configured datastore and what it accepts.
pub struct Configured {
    /// The backend.
    pub store: Arc<dyn Datastore>,
    /// Its configuration.
    pub config: DatastoreConfig,
}

/// Every configured datastore.
pub struct Datastores {
    all: Vec<Configured>,
}

impl Datastores {
    /// Builds the backends from config, creating directories.
    pub fn from_config(configs: &[DatastoreConfig]) -> Result<Self, DatastoreError> {
        let mut all = Vec::new();
        for c in configs {
            let store: Arc<dyn Datastore> = match &c.backend {
                Some(Backend::File { path }) => Arc::new(FileDatastore::open(c.id.clone(), path)?),
                Some(Backend::S3(s3)) => {
                    Arc::new(S3Datastore::open(c.id.clone(), s3, &s3.spool_path)?)
                }
                None => {
                    return Err(DatastoreError::Backend {
                        context: format!("datastore {}", c.id),
                        message: "configuration was not validated".into(),
                    })
                }
            };
            all.push(Configured {
                store,
                config: c.clone(),
            });
        }
        Ok(Self { all })
    }

    /// Checks every datastore's identity marker, writing it on first start (not in read-only
    /// datastores): a marker naming another id means two config entries reach the same
    /// storage (or an id was changed), and start-up must stop before the sweep deletes the
    /// other's blobs. Returns the datastores whose marker could not be read (unreachable):
    /// they are not swept this start.
    pub async fn claim_all(&self) -> Result<Vec<DatastoreId>, DatastoreError> {
        let mut unchecked = Vec::new();
        for c in &self.all {
            let id = c.store.id();
            match c.store.read_marker().await {
                Ok(Some(m)) if m == id.as_str() => {}
                Ok(Some(other)) => {
                    return Err(DatastoreError::Backend {
                        context: format!("datastore {id} ({})", c.store.uri()),
                        message: format!(
                            "its storage is marked as datastore {other:?} ({MARKER_NAME}): two datastore entries reach the same storage, or this datastore's id was changed (ids must never change); give each datastore its own directory, bucket or prefix"
                        ),
                    })
                }
                Ok(None) if c.config.kinds.is_empty() => {}
                Ok(None) => {
                    c.store.write_marker().await?;
                    tracing::info!(datastore = %id, uri = %c.store.uri(), "identity marker written");
                }
                Err(e) => {
                    tracing::warn!(datastore = %id, error = %e, "cannot read the identity marker; this datastore is not swept at this start");
                    unchecked.push(id.clone());
                }
            }
        }
        Ok(unchecked)
    }

    /// Replaces every backend by `wrap(backend)` (fault injection in tests).
    pub fn wrapped(self, wrap: &dyn Fn(Arc<dyn Datastore>) -> Arc<dyn Datastore>) -> Self {
        Self {
            all: self
                .all
                .into_iter()
                .map(|c| Configured {
                    store: wrap(c.store),
                    config: c.config,
                })
                .collect(),
        }
    }

    /// All of them, in config order.
    pub fn all(&self) -> &[Configured] {
        &self.all
    }

    /// The datastore with this id.
    pub fn get(&self, id: &DatastoreId) -> Option<&Arc<dyn Datastore>> {
        self.all
            .iter()
            .find(|c| c.store.id() == id)
            .map(|c| &c.store)
    }

    /// Among the datastores accepting `kind`, the one holding the fewest bytes (ties: the
    /// first in config order). `bytes_of` reads the running figures.
    pub fn pick<E>(
        &self,
        kind: DatastoreKind,
        mut bytes_of: impl FnMut(&DatastoreId) -> Result<u64, E>,
    ) -> Result<Option<&Arc<dyn Datastore>>, E> {
        let mut best: Option<(u64, &Arc<dyn Datastore>)> = None;
        for c in self.all.iter().filter(|c| c.config.accepts(kind)) {
            let bytes = bytes_of(c.store.id())?;
            if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
                best = Some((bytes, &c.store));
            }
        }
        Ok(best.map(|(_, s)| s))
    }
}
