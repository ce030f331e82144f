#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Datastore sizes: given uploads, then hand-computed running figures per datastore.

mod common;

use common::{access, create_async, ds, space, state_of, upload};
use media_ledger_events::{Envelope, Event};
use media_ledger_projections::datastore_sizes::{self, DatastoreTotals};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::size_estimate::{SizeEstimate, SizeEstimator};
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
/// datastore's media rows.
fn estimate_by_hand(events: &[Envelope], id: &str) -> SizeEstimate {
    let mut est = SizeEstimator::default();
    for e in events {
        if let Event::MediaUploadedV1(u) = &e.event {
            if u.datastore == ds(id) {
                est.add_media(u.sha256, u.size_bytes);
            }
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

proptest! {
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
