#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Pending uploads: given reservations and uploads, then what is still pending.

mod common;

use common::{
    access, assert_invariant, create_async, media, moved, source_deleted, space, start_transfer,
    state_of, transfer_failed, transfer_finished, upload, user,
};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::pending_uploads::{self, PendingUpload, PendingUploads};
use media_ledger_projections::Projection;

const NAME: &str = "pending_uploads";

fn get(state: &MemoryState, id: &str) -> Option<PendingUpload> {
    pending_uploads::get(space(state, NAME), &media(id)).unwrap()
}

#[test]
fn create_reserves_for_the_owner() {
    let s = state_of(&[create_async(1, 1_000, "p1", "@bob:example.org", 61_000)]);
    assert_eq!(
        get(&s, "p1"),
        Some(PendingUpload {
            owner: user("@bob:example.org"),
            created_at_ms: 1_000,
            expires_at_ms: 61_000,
        })
    );
    assert_eq!(get(&s, "p2"), None);
}

#[test]
fn upload_fills_the_reservation() {
    let s = state_of(&[
        create_async(1, 1_000, "p1", "@bob:example.org", 61_000),
        create_async(2, 1_001, "p2", "@bob:example.org", 61_001),
        upload(3, 2_000, "p1", 1, 10, "A"),
    ]);
    assert_eq!(get(&s, "p1"), None);
    assert!(get(&s, "p2").is_some(), "other reservations stay");
    // p2's reservation and bob's owner list.
    assert_eq!(space(&s, NAME).0.len(), 2);
    let bob = media_ledger_projections::pending_uploads::owner(
        space(&s, NAME),
        &user("@bob:example.org"),
    )
    .unwrap();
    assert_eq!(bob.entries.len(), 1);
    assert_eq!(bob.live_at(2_000), 1);
    assert_eq!(bob.live_at(61_001), 0);
}

#[test]
fn owner_list_drops_expired_entries_by_envelope_time() {
    let s = state_of(&[
        create_async(1, 1_000, "p1", "@bob:example.org", 5_000),
        create_async(2, 10_000, "p2", "@bob:example.org", 70_000),
    ]);
    let bob = media_ledger_projections::pending_uploads::owner(
        space(&s, NAME),
        &user("@bob:example.org"),
    )
    .unwrap();
    assert_eq!(bob.entries.len(), 1, "p1 had expired when p2 was folded");
}

#[test]
fn double_create_is_an_invariant_error() {
    let mut s = state_of(&[create_async(1, 1_000, "p1", "@bob:example.org", 61_000)]);
    let before = s.clone();
    assert_invariant(
        s.apply(&create_async(2, 2_000, "p1", "@carol:example.org", 99_000)),
        NAME,
    );
    assert_eq!(s, before);
    assert_eq!(get(&s, "p1").unwrap().owner, user("@bob:example.org"));
}

#[test]
fn plain_upload_without_reservation_is_fine() {
    let s = state_of(&[upload(1, 1_000, "m1", 1, 10, "A")]);
    assert!(space(&s, NAME).0.is_empty());
}

#[test]
fn expiry_is_not_folded() {
    // A projection has no clock: a lapsed reservation is still returned; readers compare.
    let s = state_of(&[
        create_async(1, 1_000, "p1", "@bob:example.org", 1_500),
        upload(2, 5_000, "m1", 1, 10, "A"),
        access(3, 9_000, "m1", 1),
    ]);
    assert_eq!(get(&s, "p1").unwrap().expires_at_ms, 1_500);
}

#[test]
fn accesses_are_ignored() {
    let mut kv = MemoryKv::default();
    PendingUploads
        .apply(&create_async(1, 1, "p1", "@bob:example.org", 10), &mut kv)
        .unwrap();
    let before = kv.clone();
    PendingUploads
        .apply(&access(2, 2, "p1", 1), &mut kv)
        .unwrap();
    assert_eq!(kv, before);
}

#[test]
fn transfer_events_are_ignored() {
    let mut events = vec![
        create_async(1, 1_000, "p1", "@bob:example.org", 61_000),
        upload(2, 1_500, "m1", 1, 10, "A"),
    ];
    let base = state_of(&events);
    events.extend([
        start_transfer(3, 2_000, "A", "B", 1, 10),
        moved(4, 2_001, 3, 1, 10, "A", "B"),
        source_deleted(5, 2_002, 3, 1, "A"),
        transfer_failed(6, 2_003, 3, 2, 1, true, "x"),
        transfer_finished(7, 2_004, 3, None),
    ]);
    let s = state_of(&events);
    assert_eq!(space(&s, NAME), space(&base, NAME));
    assert!(get(&s, "p1").is_some());
}
