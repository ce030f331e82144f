#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hash references: given events, then the record of each distinct content.

mod common;

use common::{
    access, assert_invariant, create_async, ds, location, sha, space, state_of, upload, upload_at,
};
use media_ledger_events::Sha256;
use media_ledger_projections::hash_refs::{self, HashRecord, HashRefs};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{KvTx, Projection, ProjectionError};

const NAME: &str = "hash_refs";

fn get(state: &MemoryState, n: u8) -> Option<HashRecord> {
    hash_refs::get(space(state, NAME), &sha(n)).unwrap()
}

/// The referrer keys of `sha` (`b'r' ‖ sha256 ‖ media key`), as the module documents.
fn referrers(state: &MemoryState, sha: &Sha256) -> usize {
    let mut prefix = vec![b'r'];
    prefix.extend_from_slice(&sha.0);
    space(state, NAME)
        .0
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .count()
}

#[test]
fn first_upload_creates_the_record() {
    let s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    assert_eq!(
        get(&s, 1),
        Some(HashRecord {
            datastore: ds("A"),
            location: common::default_location(1, "A"),
            size_bytes: 100,
            ref_count: 1,
            last_access_ms: 1_000,
        })
    );
    assert_eq!(get(&s, 2), None);
}

#[test]
fn ref_count_counts_dedup_uploads() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 1, 100, "A"),
        upload(3, 1_002, "m3", 2, 50, "A"),
        upload(4, 1_003, "m4", 1, 100, "A"),
    ]);
    assert_eq!(get(&s, 1).unwrap().ref_count, 3);
    assert_eq!(get(&s, 2).unwrap().ref_count, 1);
    // Invariant of the module: ref_count equals the number of referrer keys.
    assert_eq!(referrers(&s, &sha(1)), 3);
    assert_eq!(referrers(&s, &sha(2)), 1);
}

#[test]
fn first_datastore_and_location_win() {
    let s = state_of(&[
        upload_at(1, 1_000, "m1", 1, 100, "A", location("first/blob")),
        upload_at(2, 2_000, "m2", 1, 100, "B", location("second/blob")),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(r.datastore, ds("A"));
    assert_eq!(r.location, location("first/blob"));
    assert_eq!(r.size_bytes, 100);
    assert_eq!(r.ref_count, 2);
}

#[test]
fn last_access_is_the_max_over_every_media_of_the_hash() {
    let mut s = state_of(&[
        upload(1, 100, "m1", 1, 10, "A"),
        upload(2, 200, "m2", 1, 10, "A"),
    ]);
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 200);
    s.apply(&access(3, 150, "m1", 1)).unwrap();
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 200, "never backwards");
    s.apply(&access(4, 300, "m1", 1)).unwrap();
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 300);
    s.apply(&access(5, 250, "m2", 1)).unwrap();
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 300);
    s.apply(&access(6, 400, "m2", 1)).unwrap();
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 400);
    // An upload older than the latest access does not move it back either.
    s.apply(&upload(7, 350, "m3", 1, 10, "A")).unwrap();
    let r = get(&s, 1).unwrap();
    assert_eq!((r.last_access_ms, r.ref_count), (400, 3));
}

#[test]
fn accesses_do_not_change_ref_count() {
    let s = state_of(&[
        upload(1, 100, "m1", 1, 10, "A"),
        access(2, 200, "m1", 1),
        access(3, 300, "m1", 1),
    ]);
    assert_eq!(get(&s, 1).unwrap().ref_count, 1);
    assert_eq!(referrers(&s, &sha(1)), 1);
}

#[test]
fn access_to_unknown_hash_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    assert_invariant(HashRefs.apply(&access(1, 1, "m1", 9), &mut kv), NAME);
    assert!(kv.0.is_empty());

    let mut kv = MemoryKv::default();
    HashRefs
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    let before = kv.clone();
    assert_invariant(HashRefs.apply(&access(2, 2, "m1", 2), &mut kv), NAME);
    assert_eq!(kv, before);
}

#[test]
fn the_same_media_referencing_a_hash_twice_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    HashRefs
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    let before = kv.clone();
    assert_invariant(
        HashRefs.apply(&upload(2, 2, "m1", 1, 10, "A"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before, "ref_count not incremented by the refused event");
}

#[test]
fn async_reservations_are_ignored() {
    let s = state_of(&[create_async(1, 1, "m1", "@bob:example.org", 10)]);
    assert!(space(&s, NAME).0.is_empty());
}

#[test]
fn corrupt_record_is_a_corrupt_error() {
    let mut kv = MemoryKv::default();
    let mut key = vec![b'h'];
    key.extend_from_slice(&sha(1).0);
    kv.put(&key, vec![0xff]);
    assert!(matches!(
        hash_refs::get(&kv, &sha(1)),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
}
