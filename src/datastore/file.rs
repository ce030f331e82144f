//! The `file` datastore: a local directory, content-addressed.
//!
//! Layout: `<root>/<hh>/<hh>/<sha256 hex>` (two levels of two hex digits), temp files in
//! `<root>/.spool/`. Commit = rename the fsynced temp file into place, then fsync both
//! directories it touched, so the name is durable too.

use super::{BlobStream, Datastore, DatastoreError, Listing, MARKER_NAME};
use async_trait::async_trait;
use futures_util::StreamExt;
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

const SPOOL: &str = ".spool";

/// Ranges up to this long are read in one blocking call (open, seek, read): one hand-off to
/// the blocking pool instead of one per open and per read (the download profile: scheduler
/// switches and futex wake-ups, not the read itself).
const ONE_READ_BYTES: u64 = 256 * 1024;

/// `len` bytes of `path` from `offset` (fewer if the file is shorter), in one blocking call.
fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path)?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read_range`] without blocking, on the calling thread: the file is opened only if every
/// component of its path is in the kernel's lookup cache (`openat2` with `RESOLVE_CACHED`),
/// and read only from the page cache (`preadv2` with `RWF_NOWAIT`). `None` when either would
/// wait for the disk, or on any error (the caller then takes the blocking path, which
/// reports errors as usual). A hot small blob thus costs no hand-off to the blocking pool.
#[cfg(target_os = "linux")]
fn read_cached(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use rustix::io::{preadv2, ReadWriteFlags};
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .ok()?;
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    let mut got = 0usize;
    while got < buf.len() {
        let at = offset.checked_add(got as u64)?;
        let slice = buf.get_mut(got..)?;
        match preadv2(
            &fd,
            &mut [std::io::IoSliceMut::new(slice)],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some(buf)
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_path: &Path, _offset: u64, _len: u64) -> Option<Vec<u8>> {
    None
}

/// A datastore in a local directory.
pub struct FileDatastore {
    id: DatastoreId,
    root: PathBuf,
    spool: PathBuf,
}

impl FileDatastore {
    /// Opens (creating) the directory.
    pub fn open(id: DatastoreId, root: &Path) -> Result<Self, DatastoreError> {
        let spool = root.join(SPOOL);
        std::fs::create_dir_all(&spool)
            .map_err(DatastoreError::io(format!("creating {}", spool.display())))?;
        Ok(Self {
            id,
            root: root.to_owned(),
            spool,
        })
    }

    fn path_of(&self, location: &BlobLocation) -> PathBuf {
        // `BlobLocation` admits only relative `[A-Za-z0-9_.-]` segments, never `..`.
        self.root.join(location.as_str())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl Datastore for FileDatastore {
    fn id(&self) -> &DatastoreId {
        &self.id
    }

    fn type_name(&self) -> &'static str {
        "file"
    }

    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    fn local_path(&self, location: &BlobLocation) -> Option<PathBuf> {
        Some(self.path_of(location))
    }

    async fn commit(&self, spooled: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        let location = super::content_location(sha)?;
        let target = self.path_of(&location);
        let spooled = spooled.to_owned();
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = target
                .parent()
                .ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
            let created = !dir.exists();
            std::fs::create_dir_all(dir)?;
            if spooled.parent() == Some(spool.as_path()) {
                std::fs::rename(&spooled, &target)?;
            } else {
                // Spooled by another datastore (maybe another filesystem): copy into our own
                // spool first, so the final step is still an atomic rename of synced bytes.
                let name = spooled
                    .file_name()
                    .ok_or_else(|| std::io::Error::other("spool file has no name"))?;
                let local = spool.join(name).with_extension("copy");
                std::fs::copy(&spooled, &local)?;
                std::fs::File::open(&local)?.sync_all()?;
                std::fs::rename(&local, &target)?;
                std::fs::remove_file(&spooled)?;
            }
            sync_dir(dir)?;
            if created {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                    if let Some(grand) = parent.parent() {
                        sync_dir(grand)?;
                    }
                }
            }
            sync_dir(&spool)
        })
        .await
        .map_err(|e| DatastoreError::Io {
            context: "commit task".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(DatastoreError::io(format!("committing blob {sha}")))?;
        Ok(location)
    }

    async fn size_of(&self, location: &BlobLocation) -> Result<Option<u64>, DatastoreError> {
        match tokio::fs::metadata(self.path_of(location)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DatastoreError::io(format!("checking {location}"))(e)),
        }
    }

    async fn open(
        &self,
        location: &BlobLocation,
        offset: u64,
        len: u64,
    ) -> Result<BlobStream, DatastoreError> {
        let path = self.path_of(location);
        if len <= ONE_READ_BYTES {
            if let Some(bytes) = read_cached(&path, offset, len) {
                return Ok(futures_util::stream::once(
                    async move { Ok(bytes::Bytes::from(bytes)) },
                )
                .boxed());
            }
            let read = tokio::task::spawn_blocking(move || read_range(&path, offset, len))
                .await
                .map_err(|e| DatastoreError::Io {
                    context: "read task".into(),
                    source: std::io::Error::other(e),
                })?;
            return match read {
                Ok(bytes) => {
                    Ok(
                        futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) })
                            .boxed(),
                    )
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(DatastoreError::Missing(location.clone()))
                }
                Err(e) => Err(DatastoreError::io(format!("reading {location}"))(e)),
            };
        }
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DatastoreError::Missing(location.clone()))
            }
            Err(e) => return Err(DatastoreError::io(format!("opening {location}"))(e)),
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(DatastoreError::io(format!("seeking {location}")))?;
        }
        Ok(ReaderStream::with_capacity(file.take(len), 256 * 1024).boxed())
    }

    async fn list(&self) -> Result<Listing, DatastoreError> {
        let root = self.root.clone();
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || list_dir(&root, &spool))
            .await
            .map_err(|e| DatastoreError::Io {
                context: "list task".into(),
                source: std::io::Error::other(e),
            })?
            .map_err(DatastoreError::io("listing the datastore"))
    }

    async fn delete(&self, location: &BlobLocation) -> Result<(), DatastoreError> {
        match tokio::fs::remove_file(self.path_of(location)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DatastoreError::io(format!("deleting {location}"))(e)),
        }
    }

    async fn read_marker(&self) -> Result<Option<String>, DatastoreError> {
        match tokio::fs::read_to_string(self.root.join(MARKER_NAME)).await {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DatastoreError::io("reading the identity marker")(e)),
        }
    }

    async fn write_marker(&self) -> Result<(), DatastoreError> {
        let (root, spool) = (self.root.clone(), self.spool.clone());
        let text = format!("{}\n", self.id);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = spool.join(format!("{MARKER_NAME}.part"));
            std::fs::write(&tmp, text)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, root.join(MARKER_NAME))?;
            sync_dir(&root)
        })
        .await
        .map_err(|e| DatastoreError::Io {
            context: "marker task".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(DatastoreError::io("writing the identity marker"))
    }
}

fn is_hex2(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Lists blobs in our two-level layout (anything else in the directory is left alone).
fn list_dir(root: &Path, spool: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for e in std::fs::read_dir(spool)? {
        listing.temp_files.push(e?.path());
    }
    for l1 in std::fs::read_dir(root)? {
        let l1 = l1?;
        let n1 = l1.file_name().to_string_lossy().into_owned();
        if !is_hex2(&n1) || !l1.file_type()?.is_dir() {
            continue;
        }
        for l2 in std::fs::read_dir(l1.path())? {
            let l2 = l2?;
            let n2 = l2.file_name().to_string_lossy().into_owned();
            if !is_hex2(&n2) || !l2.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(l2.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Ok(sha) = name.parse::<Sha256>() else {
                    continue;
                };
                if !name.starts_with(&format!("{n1}{n2}")) {
                    continue;
                }
                if let Ok(loc) = format!("{n1}/{n2}/{name}").parse::<BlobLocation>() {
                    listing.blobs.push((loc, sha));
                }
            }
        }
    }
    Ok(listing)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A file just written is in the page cache and its path in the lookup cache: it is read
    /// without blocking, any range of it, and a range past its end is cut short like
    /// [`read_range`]'s. A path that does not exist is left to the blocking path.
    #[cfg(target_os = "linux")]
    #[test]
    fn cached_reads_match_blocking_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        for (offset, len) in [(0, 100_000), (10, 90), (99_990, 100), (100_000, 5), (0, 0)] {
            let want = read_range(&path, offset, len).unwrap();
            let got = read_cached(&path, offset, len).expect("a fresh file reads from the cache");
            assert_eq!(got, want, "offset {offset}, len {len}");
        }
        assert_eq!(read_cached(&dir.path().join("missing"), 0, 10), None);
    }
}
