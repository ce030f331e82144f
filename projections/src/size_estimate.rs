//! The seed's `size_estimate` figures and the counting rule that produces them.

use media_ledger_events::Sha256;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The eight fields of `GET .../datastores/{id}/size_estimate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeEstimate {
    /// Thumbnail rows.
    pub thumbnails_affected: u64,
    /// Distinct hashes among thumbnail rows.
    pub thumbnail_hashes_affected: u64,
    /// Bytes over distinct thumbnail hashes.
    pub thumbnail_bytes: u64,
    /// Media rows, duplicates included.
    pub media_affected: u64,
    /// Distinct hashes among media rows.
    pub media_hashes_affected: u64,
    /// Bytes over distinct media hashes.
    pub media_bytes: u64,
    /// Distinct hashes over media and thumbnails together.
    pub total_hashes_affected: u64,
    /// Bytes over that union, each hash once.
    pub total_bytes: u64,
}

/// Builds a [`SizeEstimate`] from rows, walked in any order (matrix-media-repo's rule:
/// one seen-set for media hashes, one for thumbnail hashes, one for all).
#[derive(Debug, Default)]
pub struct SizeEstimator {
    media: HashSet<Sha256>,
    thumbnails: HashSet<Sha256>,
    all: HashSet<Sha256>,
    figures: SizeEstimate,
}

impl SizeEstimator {
    /// Counts one media row.
    pub fn add_media(&mut self, sha: Sha256, size_bytes: u64) {
        self.figures.media_affected += 1;
        if self.media.insert(sha) {
            self.figures.media_hashes_affected += 1;
            self.figures.media_bytes += size_bytes;
        }
        self.add_total(sha, size_bytes);
    }

    /// Counts one thumbnail row.
    pub fn add_thumbnail(&mut self, sha: Sha256, size_bytes: u64) {
        self.figures.thumbnails_affected += 1;
        if self.thumbnails.insert(sha) {
            self.figures.thumbnail_hashes_affected += 1;
            self.figures.thumbnail_bytes += size_bytes;
        }
        self.add_total(sha, size_bytes);
    }

    fn add_total(&mut self, sha: Sha256, size_bytes: u64) {
        if self.all.insert(sha) {
            self.figures.total_hashes_affected += 1;
            self.figures.total_bytes += size_bytes;
        }
    }

    /// The figures of the rows seen so far.
    pub fn finish(self) -> SizeEstimate {
        self.figures
    }
}
