//! A spool file being filled: bytes streamed into it are hashed and counted against a limit,
//! and the file is flushed (and fsynced when the datastore will rename it into place) before
//! its blob is placed (ARCHITECTURE invariant 6). Uploads, remote fetches and read-throughs
//! fill their spool files through it.
//!
//! The first [`MEMORY_BYTES`] (512 KiB) are kept in memory: a body that ends within them is written,
//! and fsynced, by one blocking call when it is finished (the file is created only then), so a
//! small upload costs one hand-off to the blocking pool instead of one to create, one to write
//! and one to sync. A longer body goes to the file as it streams.

use crate::error::ApiError;
use media_ledger_events::Sha256;
use sha2::Digest;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Bytes held in memory before the file is created (also the file writer's buffer, so the
/// largest `write` the spool makes). Not more: on this project's machine (Linux 6.x, ext4) a
/// 1 MiB `write` into the page cache ran at 200–430 MB/s where 512 KiB ones ran at 2.1 GB/s
/// (`dd bs=1M` against `bs=512k`, 2026-12-06): the 256 MiB upload was bound by it.
const MEMORY_BYTES: usize = 512 << 10;

/// Bytes written so far, their hash and count.
pub struct Spool {
    path: PathBuf,
    /// Until the body outgrows [`MEMORY_BYTES`]: its bytes; then the file.
    out: Out,
    hasher: sha2::Sha256,
    size: u64,
    limit: u64,
}

enum Out {
    Memory(Vec<u8>),
    File(tokio::io::BufWriter<tokio::fs::File>),
}

impl Spool {
    /// A spool for `path` (created when the first [`MEMORY_BYTES`] are exceeded, or by
    /// [`Spool::finish`]); at most `limit` bytes may be pushed.
    pub async fn create(path: &Path, limit: u64) -> Result<Self, ApiError> {
        Ok(Self {
            path: path.to_owned(),
            out: Out::Memory(Vec::new()),
            hasher: sha2::Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Appends `chunk`; past the limit nothing more is written and the answer is
    /// [`ApiError::TooLarge`].
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.size = self.size.saturating_add(chunk.len() as u64);
        if self.size > self.limit {
            return Err(ApiError::TooLarge {
                limit_bytes: self.limit,
            });
        }
        self.hasher.update(chunk);
        match &mut self.out {
            Out::Memory(buf) if buf.len() + chunk.len() <= MEMORY_BYTES => {
                buf.extend_from_slice(chunk);
                Ok(())
            }
            Out::Memory(buf) => {
                let held = std::mem::take(buf);
                let file = tokio::fs::File::create(&self.path)
                    .await
                    .map_err(ApiError::internal)?;
                let mut w = tokio::io::BufWriter::with_capacity(MEMORY_BYTES, file);
                w.write_all(&held).await.map_err(ApiError::internal)?;
                w.write_all(chunk).await.map_err(ApiError::internal)?;
                self.out = Out::File(w);
                Ok(())
            }
            Out::File(w) => w.write_all(chunk).await.map_err(ApiError::internal),
        }
    }

    /// Writes out what is held, fsyncs the file when `sync`, and returns the digest and length
    /// of its bytes.
    pub async fn finish(self, sync: bool) -> Result<(Sha256, u64), ApiError> {
        match self.out {
            Out::Memory(buf) => {
                let path = self.path;
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write;
                    let mut file = std::fs::File::create(&path)?;
                    file.write_all(&buf)?;
                    if sync {
                        file.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            }
            Out::File(mut w) => {
                w.flush().await.map_err(ApiError::internal)?;
                if sync {
                    w.into_inner()
                        .sync_all()
                        .await
                        .map_err(ApiError::internal)?;
                }
            }
        }
        Ok((Sha256(self.hasher.finalize().into()), self.size))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn spool_of(dir: &Path, bytes: &[u8], sync: bool) -> (Sha256, u64) {
        let path = dir.join(format!("spool-{}-{sync}", bytes.len()));
        let mut spool = Spool::create(&path, 1 << 30).await.unwrap();
        for chunk in bytes.chunks(10_000) {
            spool.push(chunk).await.unwrap();
        }
        let got = spool.finish(sync).await.unwrap();
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "{} bytes, sync {sync}: the file differs",
            bytes.len()
        );
        got
    }

    /// Every length around a block and across the in-memory limit ends as a file of exactly
    /// its bytes, synced or not, with the right digest, on a disk and on tmpfs.
    #[tokio::test]
    async fn spooled_files_hold_exactly_their_bytes() {
        let disk = tempfile::tempdir().unwrap();
        let shm = Path::new("/dev/shm")
            .is_dir()
            .then(|| tempfile::tempdir_in("/dev/shm").unwrap());
        let mut dirs = vec![disk.path()];
        dirs.extend(shm.as_ref().map(|d| d.path()));
        for dir in dirs {
            for len in [
                0,
                1,
                4095,
                4096,
                4097,
                65_536,
                MEMORY_BYTES - 1,
                MEMORY_BYTES + 1,
            ] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
                let want = Sha256(sha2::Sha256::digest(&bytes).into());
                for sync in [true, false] {
                    assert_eq!(
                        spool_of(dir, &bytes, sync).await,
                        (want, len as u64),
                        "{}: {len} bytes",
                        dir.display()
                    );
                }
            }
        }
    }
}
