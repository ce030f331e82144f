#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Datastore sizes: given uploads, then hand-computed running figures per datastore.

mod common;

use common::{
    access, create_async, ds, moved, remote, sha, source_deleted, space, start_transfer, state_of,
    thumbnail, transfer_failed, transfer_finished, upload, upload_at, ThumbSize, CROP_32, CROP_96,
    SCALE_320,
};
use media_ledger_events::{Envelope, Event};
use media_ledger_projections::datastore_sizes::HashCount;
use media_ledger_projections::datastore_sizes::{self, DatastoreTotals};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::size_estimate::{SizeEstimate, SizeEstimator};
use media_ledger_projections::{hash_refs, media_index, thumbnails};
use proptest::prelude::*;

const NAME: &str = "datastore_sizes";

fn totals(state: &MemoryState, id: &str) -> DatastoreTotals {
    datastore_sizes::totals(space(state, NAME), &ds(id)).unwrap()
}

/// ds A: m1(h1,100), m2(h1,100), m3(h2,50); ds B: m4(h1,100).
fn scenario() -> Vec<Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 1, 100, "A"),
        upload(3, 1_002, "m3", 2, 50, "A"),
        upload(4, 1_003, "m4", 1, 100, "B"),
    ]
}

#[test]
fn shared_hashes_across_two_datastores() {
    let s = state_of(&scenario());
    assert_eq!(
        totals(&s, "A"),
        SizeEstimate {
            thumbnails_affected: 0,
            thumbnail_hashes_affected: 0,
            thumbnail_bytes: 0,
            media_affected: 3,
            media_hashes_affected: 2,
            media_bytes: 150,
            total_hashes_affected: 2,
            total_bytes: 150,
        }
    );
    assert_eq!(
        totals(&s, "B"),
        SizeEstimate {
            thumbnails_affected: 0,
            thumbnail_hashes_affected: 0,
            thumbnail_bytes: 0,
            media_affected: 1,
            media_hashes_affected: 1,
            media_bytes: 100,
            total_hashes_affected: 1,
            total_bytes: 100,
        }
    );
}

#[test]
fn unknown_datastore_is_all_zeros() {
    let s = state_of(&scenario());
    assert_eq!(totals(&s, "C"), SizeEstimate::default());
    assert_eq!(
        totals(&MemoryState::default(), "A"),
        SizeEstimate::default()
    );
}

#[test]
fn figures_grow_upload_by_upload() {
    let events = scenario();
    let mut s = MemoryState::default();
    let expected_a = [(1, 1, 100), (2, 1, 100), (3, 2, 150), (3, 2, 150)];
    for (e, (rows, hashes, bytes)) in events.iter().zip(expected_a) {
        s.apply(e).unwrap();
        let t = totals(&s, "A");
        assert_eq!(
            (t.media_affected, t.media_hashes_affected, t.media_bytes),
            (rows, hashes, bytes),
            "after seq {}",
            e.seq
        );
        assert_eq!(
            (t.total_hashes_affected, t.total_bytes),
            (hashes, bytes),
            "without thumbnails the union is the media figures"
        );
    }
}

#[test]
fn accesses_and_reservations_change_nothing() {
    let mut events = scenario();
    let base = state_of(&events);
    events.push(access(5, 2_000, "m1", 1));
    events.push(access(6, 2_001, "m4", 1));
    events.push(create_async(7, 2_002, "p1", "@bob:example.org", 9_999));
    let s = state_of(&events);
    assert_eq!(space(&s, NAME), space(&base, NAME));
}

#[test]
fn datastore_ids_that_prefix_each_other_are_separate() {
    let s = state_of(&[
        upload(1, 1, "m1", 1, 10, "a"),
        upload(2, 2, "m2", 1, 20, "ab"),
        upload(3, 3, "m3", 2, 30, "a.b"),
    ]);
    assert_eq!(totals(&s, "a").media_bytes, 10);
    assert_eq!(totals(&s, "ab").media_bytes, 20);
    assert_eq!(totals(&s, "a.b").media_bytes, 30);
}

/// The documented rule: per datastore, the totals are what `SizeEstimator` gives over that
/// datastore's media and thumbnail rows (valid for logs without moves).
fn estimate_by_hand(events: &[Envelope], id: &str) -> SizeEstimate {
    let mut est = SizeEstimator::default();
    for e in events {
        match &e.event {
            Event::MediaUploadedV1(u) if u.datastore == ds(id) => {
                est.add_media(u.sha256, u.size_bytes);
            }
            Event::ThumbnailGeneratedV1(t) if t.datastore == ds(id) => {
                est.add_thumbnail(t.sha256, t.size_bytes);
            }
            _ => {}
        }
    }
    est.finish()
}

#[test]
fn scenario_matches_the_size_estimator() {
    let events = scenario();
    let s = state_of(&events);
    for id in ["A", "B", "C"] {
        assert_eq!(totals(&s, id), estimate_by_hand(&events, id), "{id}");
    }
}

// ---- blob moves ----

/// The `HashCount` row of `sha(n)` in datastore `id` (`b'h' ‖ id ‖ 0x00 ‖ sha256`).
fn hash_count(state: &MemoryState, id: &str, n: u8) -> Option<HashCount> {
    let mut k = vec![b'h'];
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(&sha(n).0);
    space(state, NAME)
        .0
        .get(&k)
        .map(|v| media_ledger_events::codec::decode(v).unwrap())
}

fn media_figures(rows: u64, hashes: u64, bytes: u64) -> SizeEstimate {
    SizeEstimate {
        media_affected: rows,
        media_hashes_affected: hashes,
        media_bytes: bytes,
        total_hashes_affected: hashes,
        total_bytes: bytes,
        ..SizeEstimate::default()
    }
}

/// A: m1(h1,100), m2(h1,100), m3(h2,50); B: m5(h3,70); then a transfer A → B (task 5) moves
/// h1, the hash shared by two media.
fn move_scenario() -> Vec<Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 1, 100, "A"),
        upload(3, 1_002, "m3", 2, 50, "A"),
        upload(4, 1_003, "m5", 3, 70, "B"),
        start_transfer(5, 2_000, "A", "B", 2, 150),
        moved(6, 2_001, 5, 1, 100, "A", "B"),
    ]
}

#[test]
fn a_move_takes_the_rows_and_bytes_of_the_hash_along() {
    let events = move_scenario();
    let before = state_of(&events[..5]);
    // Hand-computed: A has 3 rows over 2 hashes (100 + 50 bytes), B 1 row of 70 bytes.
    assert_eq!(totals(&before, "A"), media_figures(3, 2, 150));
    assert_eq!(totals(&before, "B"), media_figures(1, 1, 70));

    let after = state_of(&events);
    // A loses both rows of h1, the hash and its 100 bytes; B gains them.
    assert_eq!(totals(&after, "A"), media_figures(1, 1, 50));
    assert_eq!(totals(&after, "B"), media_figures(3, 2, 170));
    assert_eq!(
        hash_count(&after, "A", 1),
        None,
        "the source's row of h1 is gone"
    );
    assert_eq!(
        hash_count(&after, "B", 1),
        Some(HashCount {
            media: 2,
            thumbnails: 0
        })
    );
    assert_eq!(hash_count(&after, "A", 2), hash_count(&before, "A", 2));
    assert_eq!(hash_count(&after, "B", 3), hash_count(&before, "B", 3));
    // Nothing is created or lost overall.
    let sum = |s: &MemoryState| {
        let (a, b) = (totals(s, "A"), totals(s, "B"));
        (
            a.media_affected + b.media_affected,
            a.media_bytes + b.media_bytes,
        )
    };
    assert_eq!(sum(&after), sum(&before));
}

#[test]
fn moving_the_last_hash_leaves_the_source_at_zero() {
    let mut events = move_scenario();
    events.push(moved(7, 2_002, 5, 2, 50, "A", "B"));
    let s = state_of(&events);
    assert_eq!(totals(&s, "A"), SizeEstimate::default());
    assert_eq!(totals(&s, "B"), media_figures(4, 3, 220));
}

#[test]
fn moving_back_restores_the_figures() {
    let mut events = move_scenario();
    events.extend([
        transfer_finished(7, 3_000, 5, None),
        start_transfer(8, 3_001, "B", "A", 1, 100),
        moved(9, 3_002, 8, 1, 100, "B", "A"),
    ]);
    let s = state_of(&events);
    let before = state_of(&move_scenario()[..5]);
    assert_eq!(totals(&s, "A"), totals(&before, "A"));
    assert_eq!(totals(&s, "B"), totals(&before, "B"));
}

#[test]
fn a_duplicate_upload_after_a_move_is_a_row_of_the_target() {
    let mut events = move_scenario();
    // The writer records a duplicate at the hash's current place.
    events.push(upload_at(
        7,
        2_500,
        "m6",
        1,
        100,
        "B",
        common::default_location(1, "B"),
    ));
    let s = state_of(&events);
    assert_eq!(totals(&s, "A"), media_figures(1, 1, 50));
    assert_eq!(totals(&s, "B"), media_figures(4, 2, 170), "a row, no bytes");
}

#[test]
fn the_other_transfer_events_change_nothing() {
    let mut events = move_scenario();
    let base = state_of(&events);
    events.extend([
        source_deleted(7, 2_002, 5, 1, "A"),
        transfer_failed(8, 2_003, 5, 2, 1, true, "nope"),
        transfer_finished(9, 2_004, 5, Some("1 blob failed")),
    ]);
    assert_eq!(space(&state_of(&events), NAME), space(&base, NAME));
    // Nor does starting one.
    assert_eq!(
        space(&state_of(&move_scenario()[..5]), NAME),
        space(&state_of(&move_scenario()[..4]), NAME)
    );
}

/// The counting rule after moves: per datastore, the totals are what `SizeEstimator` gives
/// over the media rows that the media index places there and the thumbnail rows whose blob
/// `hash_refs` places there (as the admin API's `before_ts` scan counts them).
fn estimate_from_index(state: &MemoryState, id: &str) -> SizeEstimate {
    let mut est = SizeEstimator::default();
    for (k, v) in &space(state, "media_index").0 {
        if media_index::is_record_key(k) {
            let r = media_index::decode_record(v).unwrap();
            if r.datastore == ds(id) {
                est.add_media(r.sha256, r.size_bytes);
            }
        }
    }
    for v in space(state, "thumbnails").0.values() {
        let t = thumbnails::decode_record(v).unwrap();
        let h = hash_refs::get(space(state, "hash_refs"), &t.sha256)
            .unwrap()
            .unwrap();
        if h.datastore == ds(id) {
            est.add_thumbnail(t.sha256, t.size_bytes);
        }
    }
    est.finish()
}

#[test]
fn move_scenario_matches_the_size_estimator_over_the_index() {
    let events = move_scenario();
    for k in 0..=events.len() {
        let s = state_of(&events[..k]);
        for id in ["A", "B"] {
            assert_eq!(
                totals(&s, id),
                estimate_from_index(&s, id),
                "{id} after {k}"
            );
        }
    }
}

// ---- thumbnails ----

/// ds A: media m1 (h1, 100 B); thumbnails t1 of m1 (h2, 10 B), t2 of m1 (h3, 20 B), and t3 of
/// m2 (a media of B, h9, 500 B) whose bytes equal m1's content (h1): the writer points t3 at
/// m1's blob in A.
fn thumbnail_scenario() -> Vec<Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 9, 500, "B"),
        thumbnail(3, 2_000, "m1", CROP_32, 2, 10, "A"),
        thumbnail(4, 2_001, "m1", CROP_96, 3, 20, "A"),
        thumbnail(5, 2_002, "m2", SCALE_320, 1, 100, "A"),
    ]
}

#[test]
fn thumbnail_figures_by_hand() {
    let s = state_of(&thumbnail_scenario());
    // Media: one row of h1. Thumbnails: three rows over three distinct hashes (h2, h3, h1),
    // 10 + 20 + 100 bytes. Total: the union {h1, h2, h3}, h1 counted once: 100 + 10 + 20.
    assert_eq!(
        totals(&s, "A"),
        SizeEstimate {
            media_affected: 1,
            media_hashes_affected: 1,
            media_bytes: 100,
            thumbnails_affected: 3,
            thumbnail_hashes_affected: 3,
            thumbnail_bytes: 130,
            total_hashes_affected: 3,
            total_bytes: 130,
        }
    );
    // B holds m2 only; the thumbnail of m2 is counted where its blob is.
    assert_eq!(totals(&s, "B"), media_figures(1, 1, 500));
    assert_eq!(
        hash_count(&s, "A", 1),
        Some(HashCount {
            media: 1,
            thumbnails: 1
        })
    );
    assert_eq!(hash_count(&s, "B", 1), None);
    for id in ["A", "B"] {
        assert_eq!(
            totals(&s, id),
            estimate_by_hand(&thumbnail_scenario(), id),
            "{id}"
        );
    }
}

#[test]
fn thumbnail_figures_grow_event_by_event() {
    let events = thumbnail_scenario();
    // (thumbnail rows, hashes, bytes, total hashes, total bytes) of A after each event.
    let expected = [
        (0, 0, 0, 1, 100),
        (0, 0, 0, 1, 100),
        (1, 1, 10, 2, 110),
        (2, 2, 30, 3, 130),
        // Bytes new to thumbnails but not to A: the thumbnail figures grow, the totals not.
        (3, 3, 130, 3, 130),
    ];
    let mut s = MemoryState::default();
    for (e, want) in events.iter().zip(expected) {
        s.apply(e).unwrap();
        let t = totals(&s, "A");
        assert_eq!(
            (
                t.thumbnails_affected,
                t.thumbnail_hashes_affected,
                t.thumbnail_bytes,
                t.total_hashes_affected,
                t.total_bytes
            ),
            want,
            "after seq {}",
            e.seq
        );
        assert_eq!(
            (t.media_affected, t.media_hashes_affected, t.media_bytes),
            (1, 1, 100),
            "thumbnails never change the media figures"
        );
    }
}

#[test]
fn thumbnails_sharing_bytes_count_rows_not_bytes() {
    let mut events = thumbnail_scenario();
    // Another thumbnail of h2, then a media upload of h3 (bytes only a thumbnail had).
    events.push(thumbnail(6, 3_000, "m2", CROP_32, 2, 10, "A"));
    events.push(upload(7, 3_001, "m3", 3, 20, "A"));
    let s = state_of(&events);
    assert_eq!(
        totals(&s, "A"),
        SizeEstimate {
            media_affected: 2,
            media_hashes_affected: 2,
            media_bytes: 120,
            thumbnails_affected: 4,
            thumbnail_hashes_affected: 3,
            thumbnail_bytes: 130,
            total_hashes_affected: 3,
            total_bytes: 130,
        }
    );
    assert_eq!(
        hash_count(&s, "A", 3),
        Some(HashCount {
            media: 1,
            thumbnails: 1
        })
    );
    assert_eq!(totals(&s, "A"), estimate_by_hand(&events, "A"));
}

#[test]
fn a_move_of_a_thumbnail_hash_moves_the_thumbnail_figures() {
    let mut events = thumbnail_scenario();
    events.push(start_transfer(6, 4_000, "A", "B", 3, 130));
    // h2: one thumbnail row, no media.
    events.push(moved(7, 4_001, 6, 2, 10, "A", "B"));
    let s = state_of(&events);
    assert_eq!(
        totals(&s, "A"),
        SizeEstimate {
            media_affected: 1,
            media_hashes_affected: 1,
            media_bytes: 100,
            thumbnails_affected: 2,
            thumbnail_hashes_affected: 2,
            thumbnail_bytes: 120,
            total_hashes_affected: 2,
            total_bytes: 120,
        }
    );
    assert_eq!(
        totals(&s, "B"),
        SizeEstimate {
            media_affected: 1,
            media_hashes_affected: 1,
            media_bytes: 500,
            thumbnails_affected: 1,
            thumbnail_hashes_affected: 1,
            thumbnail_bytes: 10,
            total_hashes_affected: 2,
            total_bytes: 510,
        }
    );
    assert_eq!(hash_count(&s, "A", 2), None);
    assert_eq!(
        hash_count(&s, "B", 2),
        Some(HashCount {
            media: 0,
            thumbnails: 1
        })
    );

    // h1: one media row and one thumbnail row go together; A keeps h3 only.
    events.push(moved(8, 4_002, 6, 1, 100, "A", "B"));
    let s = state_of(&events);
    assert_eq!(
        totals(&s, "A"),
        SizeEstimate {
            thumbnails_affected: 1,
            thumbnail_hashes_affected: 1,
            thumbnail_bytes: 20,
            total_hashes_affected: 1,
            total_bytes: 20,
            ..SizeEstimate::default()
        }
    );
    assert_eq!(
        totals(&s, "B"),
        SizeEstimate {
            media_affected: 2,
            media_hashes_affected: 2,
            media_bytes: 600,
            thumbnails_affected: 2,
            thumbnail_hashes_affected: 2,
            thumbnail_bytes: 110,
            total_hashes_affected: 3,
            total_bytes: 610,
        }
    );
    for id in ["A", "B"] {
        assert_eq!(totals(&s, id), estimate_from_index(&s, id), "{id}");
    }
}

#[test]
fn a_thumbnail_hash_moved_onto_a_media_of_the_same_bytes_counts_once_in_the_totals() {
    // h1 is a media of B and a thumbnail of A (the writer would have put the thumbnail in B,
    // and hash_refs refuses the move below; this projection takes the event's word and must
    // still add up): moving A's copy to B adds a thumbnail hash to B, not a total one.
    let mut s = MemoryState::default();
    for e in [
        upload(1, 1_000, "m1", 1, 100, "B"),
        thumbnail(2, 2_000, "m1", CROP_32, 1, 100, "A"),
        start_transfer(3, 3_000, "A", "B", 1, 100),
        moved(4, 4_000, 3, 1, 100, "A", "B"),
    ] {
        s.apply_one(&datastore_sizes::DatastoreSizes, &e).unwrap();
    }
    assert_eq!(totals(&s, "A"), SizeEstimate::default());
    assert_eq!(
        totals(&s, "B"),
        SizeEstimate {
            media_affected: 1,
            media_hashes_affected: 1,
            media_bytes: 100,
            thumbnails_affected: 1,
            thumbnail_hashes_affected: 1,
            thumbnail_bytes: 100,
            total_hashes_affected: 1,
            total_bytes: 100,
        }
    );
}

// ---- remote media cached over federation ----

/// ds A: m1 (h1, 100 B), then r1, a remote media of the same bytes (recorded at m1's blob),
/// and r2, a remote of new bytes (h2, 40 B); ds B: r3 (h3, 7 B), then m3, a local upload of
/// r3's bytes.
fn remote_scenario() -> Vec<Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        remote(2, 2_000, "r1", 1, 100, "A"),
        remote(3, 3_000, "r2", 2, 40, "A"),
        remote(4, 4_000, "r3", 3, 7, "B"),
        upload(5, 5_000, "m3", 3, 7, "B"),
    ]
}

#[test]
fn a_remote_of_bytes_held_by_a_local_media_adds_a_row_but_no_bytes() {
    let events = remote_scenario();
    let one = state_of(&events[..1]);
    let two = state_of(&events[..2]);
    assert_eq!(totals(&one, "A"), media_figures(1, 1, 100));
    // One more row; the hash and its 100 bytes were counted already.
    assert_eq!(totals(&two, "A"), media_figures(2, 1, 100));
    assert_eq!(
        hash_count(&two, "A", 1),
        Some(HashCount {
            media: 2,
            thumbnails: 0
        })
    );
}

#[test]
fn remote_figures_by_hand() {
    let s = state_of(&remote_scenario());
    // A: rows m1, r1, r2; hashes h1, h2; bytes 100 + 40.
    assert_eq!(totals(&s, "A"), media_figures(3, 2, 140));
    // B: rows r3, m3; one hash h3 of 7 bytes, whichever kind of media came first.
    assert_eq!(totals(&s, "B"), media_figures(2, 1, 7));
    assert_eq!(
        hash_count(&s, "B", 3),
        Some(HashCount {
            media: 2,
            thumbnails: 0
        })
    );
    for id in ["A", "B"] {
        assert_eq!(totals(&s, id), estimate_from_index(&s, id), "{id}");
    }
}

#[test]
fn remote_figures_grow_event_by_event() {
    let events = remote_scenario();
    let mut s = MemoryState::default();
    // (A rows, hashes, bytes), (B rows, hashes, bytes) after each event.
    let want = [
        ((1, 1, 100), (0, 0, 0)),
        ((2, 1, 100), (0, 0, 0)),
        ((3, 2, 140), (0, 0, 0)),
        ((3, 2, 140), (1, 1, 7)),
        ((3, 2, 140), (2, 1, 7)),
    ];
    for (e, (a, b)) in events.iter().zip(want) {
        s.apply(e).unwrap();
        for (id, (rows, hashes, bytes)) in [("A", a), ("B", b)] {
            assert_eq!(
                totals(&s, id),
                media_figures(rows, hashes, bytes),
                "{id} after seq {}",
                e.seq
            );
        }
    }
}

#[test]
fn a_move_takes_remote_rows_along() {
    let mut events = remote_scenario();
    events.extend([
        start_transfer(6, 6_000, "A", "B", 2, 140),
        moved(7, 7_000, 6, 1, 100, "A", "B"),
    ]);
    let s = state_of(&events);
    // h1 (m1 and r1, 100 B) leaves A for B; r2 stays.
    assert_eq!(totals(&s, "A"), media_figures(1, 1, 40));
    assert_eq!(totals(&s, "B"), media_figures(4, 2, 107));
    assert_eq!(hash_count(&s, "A", 1), None);
    assert_eq!(
        hash_count(&s, "B", 1),
        Some(HashCount {
            media: 2,
            thumbnails: 0
        })
    );
    for id in ["A", "B"] {
        assert_eq!(totals(&s, id), estimate_from_index(&s, id), "{id}");
    }
}

#[test]
fn a_thumbnail_of_remote_bytes_counts_as_for_a_local_media() {
    let s = state_of(&[
        remote(1, 1_000, "r1", 1, 100, "A"),
        // A thumbnail (of a local media m1 of other bytes) whose bytes equal r1's.
        upload(2, 2_000, "m1", 2, 30, "A"),
        thumbnail(3, 3_000, "m1", CROP_32, 1, 100, "A"),
    ]);
    let t = totals(&s, "A");
    assert_eq!(
        (
            t.media_affected,
            t.media_hashes_affected,
            t.media_bytes,
            t.thumbnails_affected,
            t.thumbnail_hashes_affected,
            t.thumbnail_bytes,
            t.total_hashes_affected,
            t.total_bytes
        ),
        (2, 2, 130, 1, 1, 100, 2, 130)
    );
}

proptest! {
    /// Random uploads, remote media, thumbnails and moves across three datastores, logged as the writer
    /// would (bytes already stored go to their hash's current place, a thumbnail is of an
    /// uploaded media and recorded once per size, a move starts where the hash is): the
    /// totals always equal the counting rule over where the index and `hash_refs` put rows.
    #[test]
    fn totals_follow_the_counting_rule_with_thumbnails(
        steps in proptest::collection::vec((0u8..4, 0u8..8, 0usize..3, 0usize..4), 0..60)
    ) {
        let dss = ["A", "B", "C"];
        let sizes: [ThumbSize; 4] = [
            CROP_32,
            CROP_96,
            SCALE_320,
            (320, 240, media_ledger_events::ThumbnailMethod::Scale, true),
        ];
        // hash → the datastore its blob is in, once stored.
        let mut place: std::collections::BTreeMap<u8, usize> = Default::default();
        let mut uploaded: Vec<String> = Vec::new();
        let mut thumbs: std::collections::BTreeSet<(usize, usize)> = Default::default();
        let mut events = vec![start_transfer(1, 1, "A", "B", 0, 0)];
        for (i, &(kind, h, d, pick)) in steps.iter().enumerate() {
            let seq = events.len() as u64 + 1;
            let size = 1_000 + u64::from(h) * 7;
            let at = place.get(&h).copied().unwrap_or(d);
            match kind {
                0 => {
                    let id = format!("m{i}");
                    events.push(upload(seq, seq * 10, &id, h, size, dss[at]));
                    uploaded.push(id);
                    place.insert(h, at);
                }
                1 => {
                    if uploaded.is_empty() {
                        continue;
                    }
                    let m = (i * 7 + pick) % uploaded.len();
                    if !thumbs.insert((m, pick)) {
                        continue;
                    }
                    events.push(thumbnail(
                        seq,
                        seq * 10,
                        &uploaded[m],
                        sizes[pick],
                        h,
                        size,
                        dss[at],
                    ));
                    place.insert(h, at);
                }
                2 => {
                    if !place.contains_key(&h) || at == d {
                        continue;
                    }
                    events.push(moved(seq, seq * 10, 1, h, size, dss[at], dss[d]));
                    place.insert(h, d);
                }
                // A remote media, recorded like an upload at its hash's current place.
                _ => {
                    events.push(remote(seq, seq * 10, &format!("r{i}"), h, size, dss[at]));
                    place.insert(h, at);
                }
            }
        }
        let s = state_of(&events);
        for id in dss {
            prop_assert_eq!(totals(&s, id), estimate_from_index(&s, id));
        }
    }

    /// Random uploads and moves across three datastores, logged as the writer would (a
    /// duplicate goes to its hash's current place, a move starts where the hash is): the
    /// totals always equal the counting rule over where the media index says each row is.
    #[test]
    fn totals_follow_the_counting_rule_through_moves(
        steps in proptest::collection::vec((any::<bool>(), 0u8..6, 0usize..3), 0..50)
    ) {
        let dss = ["A", "B", "C"];
        let mut place: std::collections::BTreeMap<u8, usize> = Default::default();
        let mut events = Vec::new();
        let task = 1;
        events.push(start_transfer(1, 1, "A", "B", 0, 0));
        for (i, &(is_move, h, d)) in steps.iter().enumerate() {
            let seq = events.len() as u64 + 1;
            let size = 1_000 + u64::from(h) * 7;
            match place.get(&h).copied() {
                Some(from) if is_move => {
                    if from == d {
                        continue;
                    }
                    events.push(moved(seq, seq * 10, task, h, size, dss[from], dss[d]));
                    place.insert(h, d);
                }
                Some(at) => {
                    events.push(upload(seq, seq * 10, &format!("m{i}"), h, size, dss[at]));
                }
                None => {
                    events.push(upload(seq, seq * 10, &format!("m{i}"), h, size, dss[d]));
                    place.insert(h, d);
                }
            }
        }
        let s = state_of(&events);
        for id in dss {
            prop_assert_eq!(totals(&s, id), estimate_from_index(&s, id));
        }
    }

    /// Random uploads (distinct media, a small pool of hashes whose size is fixed per hash,
    /// three datastores): the running totals always equal the counting rule.
    #[test]
    fn totals_follow_the_counting_rule(
        rows in proptest::collection::vec((0u8..6, 0usize..3), 0..40)
    ) {
        let dss = ["A", "B", "C"];
        let events: Vec<Envelope> = rows
            .iter()
            .enumerate()
            .map(|(i, &(h, d))| {
                let seq = i as u64 + 1;
                upload(seq, seq * 10, &format!("m{i}"), h, 1_000 + u64::from(h) * 7, dss[d])
            })
            .collect();
        let s = state_of(&events);
        for id in dss {
            prop_assert_eq!(totals(&s, id), estimate_by_hand(&events, id));
        }
    }
}
