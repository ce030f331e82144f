//! A spool file being filled: bytes streamed into it are hashed and counted against a limit,
//! and the file is flushed (and fsynced when the datastore will rename it into place) before
//! its blob is placed (ARCHITECTURE invariant 6). Uploads, remote fetches and read-throughs
//! fill their spool files through it.

use crate::error::ApiError;
use media_ledger_events::Sha256;
use sha2::Digest;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Bytes written so far, their hash and count.
pub struct Spool {
    out: tokio::io::BufWriter<tokio::fs::File>,
    hasher: sha2::Sha256,
    size: u64,
    limit: u64,
}

impl Spool {
    /// Creates the spool file at `path`; at most `limit` bytes may be pushed.
    pub async fn create(path: &Path, limit: u64) -> Result<Self, ApiError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(ApiError::internal)?;
        Ok(Self {
            out: tokio::io::BufWriter::with_capacity(1 << 20, file),
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
        self.out.write_all(chunk).await.map_err(ApiError::internal)
    }

    /// Flushes the file, fsyncs it when `sync`, and returns the digest and length of its bytes.
    pub async fn finish(mut self, sync: bool) -> Result<(Sha256, u64), ApiError> {
        self.out.flush().await.map_err(ApiError::internal)?;
        if sync {
            self.out
                .into_inner()
                .sync_all()
                .await
                .map_err(ApiError::internal)?;
        }
        Ok((Sha256(self.hasher.finalize().into()), self.size))
    }
}
