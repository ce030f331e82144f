#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `size_estimate` counting rule (matrix-media-repo's): rows with duplicates, bytes once
//! per distinct hash, thumbnails separately, and a union that counts a hash once.

use media_ledger_events::Sha256;
use media_ledger_projections::size_estimate::{SizeEstimate, SizeEstimator};
use proptest::prelude::*;

fn h(n: u8) -> Sha256 {
    Sha256([n; 32])
}

#[test]
fn nothing_counted_is_zero() {
    assert_eq!(SizeEstimator::default().finish(), SizeEstimate::default());
}

#[test]
fn media_rows_count_duplicates_bytes_count_hashes() {
    let mut e = SizeEstimator::default();
    e.add_media(h(1), 100);
    e.add_media(h(1), 100);
    e.add_media(h(2), 50);
    e.add_media(h(1), 100);
    assert_eq!(
        e.finish(),
        SizeEstimate {
            media_affected: 4,
            media_hashes_affected: 2,
            media_bytes: 150,
            total_hashes_affected: 2,
            total_bytes: 150,
            ..SizeEstimate::default()
        }
    );
}

#[test]
fn thumbnails_are_counted_separately() {
    let mut e = SizeEstimator::default();
    e.add_thumbnail(h(3), 10);
    e.add_thumbnail(h(3), 10);
    e.add_thumbnail(h(4), 5);
    assert_eq!(
        e.finish(),
        SizeEstimate {
            thumbnails_affected: 3,
            thumbnail_hashes_affected: 2,
            thumbnail_bytes: 15,
            total_hashes_affected: 2,
            total_bytes: 15,
            ..SizeEstimate::default()
        }
    );
}

#[test]
fn a_hash_in_media_and_thumbnails_counts_once_in_the_total() {
    let mut e = SizeEstimator::default();
    e.add_media(h(1), 100);
    e.add_media(h(2), 50);
    e.add_thumbnail(h(1), 100); // same bytes as a media
    e.add_thumbnail(h(3), 7);
    assert_eq!(
        e.finish(),
        SizeEstimate {
            thumbnails_affected: 2,
            thumbnail_hashes_affected: 2,
            thumbnail_bytes: 107,
            media_affected: 2,
            media_hashes_affected: 2,
            media_bytes: 150,
            total_hashes_affected: 3,
            total_bytes: 157,
        }
    );
}

#[test]
fn thumbnail_first_then_media_still_counts_media_bytes() {
    let mut e = SizeEstimator::default();
    e.add_thumbnail(h(1), 100);
    e.add_media(h(1), 100);
    let f = e.finish();
    assert_eq!((f.media_hashes_affected, f.media_bytes), (1, 100));
    assert_eq!((f.thumbnail_hashes_affected, f.thumbnail_bytes), (1, 100));
    assert_eq!((f.total_hashes_affected, f.total_bytes), (1, 100));
}

/// Rows: (is_thumbnail, hash). Sizes are a function of the hash, as they are for real.
fn figures(rows: &[(bool, u8)]) -> SizeEstimate {
    let mut e = SizeEstimator::default();
    for &(thumb, n) in rows {
        let size = 1 + u64::from(n) * 3;
        if thumb {
            e.add_thumbnail(h(n), size);
        } else {
            e.add_media(h(n), size);
        }
    }
    e.finish()
}

proptest! {
    #[test]
    fn order_does_not_matter(
        rows in proptest::collection::vec((any::<bool>(), 0u8..8), 0..30)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (rows, shuffled) = rows;
        prop_assert_eq!(figures(&rows), figures(&shuffled));
    }

    #[test]
    fn figures_match_a_naive_count(
        rows in proptest::collection::vec((any::<bool>(), 0u8..8), 0..30)
    ) {
        use std::collections::BTreeSet;
        let size = |n: u8| 1 + u64::from(n) * 3;
        let media: Vec<u8> = rows.iter().filter(|r| !r.0).map(|r| r.1).collect();
        let thumbs: Vec<u8> = rows.iter().filter(|r| r.0).map(|r| r.1).collect();
        let mh: BTreeSet<u8> = media.iter().copied().collect();
        let th: BTreeSet<u8> = thumbs.iter().copied().collect();
        let all: BTreeSet<u8> = mh.union(&th).copied().collect();
        let sum = |s: &BTreeSet<u8>| s.iter().map(|&n| size(n)).sum::<u64>();
        prop_assert_eq!(figures(&rows), SizeEstimate {
            thumbnails_affected: thumbs.len() as u64,
            thumbnail_hashes_affected: th.len() as u64,
            thumbnail_bytes: sum(&th),
            media_affected: media.len() as u64,
            media_hashes_affected: mh.len() as u64,
            media_bytes: sum(&mh),
            total_hashes_affected: all.len() as u64,
            total_bytes: sum(&all),
        });
    }
}
