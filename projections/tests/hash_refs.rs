#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hash references: given events, then the record of each distinct content.

mod common;

use common::{
    access, assert_invariant, create_async, default_location, ds, location, moved, moved_at, sha,
    source_deleted, space, start_transfer, state_of, thumbnail, thumbnail_at, transfer_failed,
    transfer_finished, upload, upload_at, ThumbSize, CROP_32, CROP_96, SCALE_320,
};
use media_ledger_events::{Seq, Sha256};
use media_ledger_projections::hash_refs::{self, HashRecord, HashRefs};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{thumbnails, KvTx, Projection, ProjectionError};

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

/// The thumbnail referrer keys of `sha` (`b't' ‖ sha256 ‖ thumbnail key`).
fn thumb_referrers(state: &MemoryState, sha: &Sha256) -> usize {
    let mut prefix = vec![b't'];
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
            created_seq: Seq(1),
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

// ---- blob moves ----

/// h1 (100 bytes) shared by m1 and m2 in A, h2 (50 bytes) in A, a transfer A → B as task 4.
fn before_move() -> Vec<media_ledger_events::Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 2_000, "m2", 1, 100, "A"),
        upload(3, 3_000, "m3", 2, 50, "A"),
        start_transfer(4, 4_000, "A", "B", 2, 150),
    ]
}

#[test]
fn blob_moved_switches_datastore_and_location_only() {
    let mut s = state_of(&before_move());
    let before = get(&s, 1).unwrap();
    let refs_before = referrers(&s, &sha(1));
    s.apply(&moved_at(
        5,
        5_000,
        4,
        1,
        100,
        "A",
        default_location(1, "A"),
        "B",
        location("moved/h1"),
    ))
    .unwrap();
    assert_eq!(
        get(&s, 1).unwrap(),
        HashRecord {
            datastore: ds("B"),
            location: location("moved/h1"),
            ..before
        },
        "ref_count, size, last access and created_seq are kept"
    );
    assert_eq!(referrers(&s, &sha(1)), refs_before);
    assert_eq!(get(&s, 1).unwrap().created_seq, Seq(1));
    // The other hash of the source stays where it is.
    assert_eq!(get(&s, 2).unwrap().datastore, ds("A"));
    // A move is not an access: it leaves last_access_ms at the latest upload.
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 2_000);
}

#[test]
fn a_moved_blob_can_move_back_and_gains_new_referrers_at_its_new_place() {
    let mut events = before_move();
    events.extend([
        moved(5, 5_000, 4, 1, 100, "A", "B"),
        transfer_finished(6, 6_000, 4, None),
        // The writer records a duplicate upload at the hash's current place.
        upload(7, 7_000, "m4", 1, 100, "B"),
        start_transfer(8, 8_000, "B", "A", 1, 100),
        moved(9, 9_000, 8, 1, 100, "B", "A"),
    ]);
    let s = state_of(&events);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.datastore, r.location, r.ref_count, r.created_seq),
        (ds("A"), default_location(1, "A"), 3, Seq(1))
    );
    assert_eq!(referrers(&s, &sha(1)), 3);
}

#[test]
fn a_move_from_the_wrong_datastore_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    for e in before_move() {
        HashRefs.apply(&e, &mut kv).unwrap();
    }
    let before = kv.clone();
    // The blob is in A, not in B.
    assert_invariant(
        HashRefs.apply(&moved(5, 5_000, 4, 1, 100, "B", "C"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before, "a refused move changes nothing");
}

#[test]
fn a_move_from_the_wrong_location_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    for e in before_move() {
        HashRefs.apply(&e, &mut kv).unwrap();
    }
    let before = kv.clone();
    // Right datastore, other location.
    let e = moved_at(
        5,
        5_000,
        4,
        1,
        100,
        "A",
        location("A/somewhere/else"),
        "B",
        default_location(1, "B"),
    );
    assert_invariant(HashRefs.apply(&e, &mut kv), NAME);
    assert_eq!(kv, before);
}

#[test]
fn moving_twice_from_the_old_place_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    for e in before_move() {
        HashRefs.apply(&e, &mut kv).unwrap();
    }
    HashRefs
        .apply(&moved(5, 5_000, 4, 1, 100, "A", "B"), &mut kv)
        .unwrap();
    let before = kv.clone();
    assert_invariant(
        HashRefs.apply(&moved(6, 6_000, 4, 1, 100, "A", "B"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before);
}

#[test]
fn a_move_of_an_unknown_hash_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    for e in before_move() {
        HashRefs.apply(&e, &mut kv).unwrap();
    }
    let before = kv.clone();
    assert_invariant(
        HashRefs.apply(&moved(5, 5_000, 4, 9, 100, "A", "B"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before);
}

#[test]
fn other_transfer_events_are_ignored() {
    let mut events = before_move();
    let base = state_of(&events);
    events.extend([
        transfer_failed(5, 5_000, 4, 1, 1, false, "timeout"),
        transfer_failed(6, 5_001, 4, 2, 1, true, "gone"),
        source_deleted(7, 5_002, 4, 1, "A"),
        transfer_finished(8, 6_000, 4, Some("1 blob failed")),
    ]);
    let s = state_of(&events);
    assert_eq!(space(&s, NAME), space(&base, NAME));
}

#[test]
fn hash_entries_decode_from_a_scan() {
    let s = state_of(&before_move());
    let kv = space(&s, NAME);
    let mut found = Vec::new();
    for (k, v) in &kv.0 {
        match hash_refs::decode_hash_entry(k, v) {
            Some(entry) => {
                assert!(k.starts_with(hash_refs::HASH_PREFIX));
                found.push(entry.unwrap());
            }
            None => assert_eq!(k.first(), Some(&b'r'), "only referrer keys are skipped"),
        }
    }
    assert_eq!(
        found,
        vec![(sha(1), get(&s, 1).unwrap()), (sha(2), get(&s, 2).unwrap())]
    );
    let mut key = hash_refs::HASH_PREFIX.to_vec();
    key.extend_from_slice(&sha(1).0);
    assert!(matches!(
        hash_refs::decode_hash_entry(&key, &[0xff]),
        Some(Err(ProjectionError::Corrupt { name: NAME, .. }))
    ));
}

// ---- thumbnails ----

#[test]
fn a_thumbnail_of_new_bytes_creates_the_hash_record() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        thumbnail_at(2, 2_000, "m1", CROP_32, 2, 10, "B", location("B/thumbs/h2")),
    ]);
    assert_eq!(
        get(&s, 2),
        Some(HashRecord {
            datastore: ds("B"),
            location: location("B/thumbs/h2"),
            size_bytes: 10,
            ref_count: 1,
            last_access_ms: 2_000,
            created_seq: Seq(2),
        })
    );
    // The media's hash is untouched.
    assert_eq!(get(&s, 1).unwrap().ref_count, 1);
    // One thumbnail referrer key, exactly the documented one.
    assert_eq!(
        (referrers(&s, &sha(2)), thumb_referrers(&s, &sha(2))),
        (0, 1)
    );
    let mut want = vec![b't'];
    want.extend_from_slice(&sha(2).0);
    want.extend(thumbnails::thumb_key(
        &common::media("m1"),
        32,
        32,
        media_ledger_events::ThumbnailMethod::Crop,
        false,
    ));
    assert_eq!(space(&s, NAME).0.get(&want), Some(&Vec::new()));
}

#[test]
fn a_thumbnail_of_bytes_equal_to_a_media_adds_a_reference() {
    let base = [
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 3_000, "m2", 2, 50, "A"),
    ];
    let mut events = base.to_vec();
    // Bytes equal to m1's content, of a thumbnail of m2 (the writer points it at m1's blob).
    events.push(thumbnail(3, 2_000, "m2", CROP_96, 1, 100, "A"));
    let before = get(&state_of(&base), 1).unwrap();
    let s = state_of(&events);
    assert_eq!(
        get(&s, 1).unwrap(),
        HashRecord {
            ref_count: 2,
            ..before
        },
        "one more reference; place, size, last access and created_seq kept"
    );
    assert_eq!(
        (referrers(&s, &sha(1)), thumb_referrers(&s, &sha(1))),
        (1, 1)
    );
    assert_eq!(get(&s, 2).unwrap().ref_count, 1);
}

#[test]
fn the_first_place_wins_for_a_thumbnail_as_for_a_media() {
    // Logged elsewhere (which the writer would not do), the record keeps the first place.
    let s = state_of(&[
        upload_at(1, 1_000, "m1", 1, 100, "A", location("first/blob")),
        thumbnail_at(
            2,
            2_000,
            "m1",
            CROP_32,
            1,
            100,
            "B",
            location("second/blob"),
        ),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.datastore, r.location, r.ref_count),
        (ds("A"), location("first/blob"), 2)
    );
}

#[test]
fn a_thumbnail_is_not_an_access() {
    // last_access_ms is the latest upload or recorded access of a *media* with the hash; a
    // thumbnail sharing the bytes later does not move it, one of new bytes starts it.
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        thumbnail(2, 5_000, "m1", CROP_32, 1, 100, "A"),
        thumbnail(3, 6_000, "m1", CROP_96, 2, 10, "A"),
        thumbnail(4, 7_000, "m1", SCALE_320, 2, 10, "A"),
    ]);
    assert_eq!(get(&s, 1).unwrap().last_access_ms, 1_000);
    let h2 = get(&s, 2).unwrap();
    assert_eq!(
        (h2.last_access_ms, h2.created_seq, h2.ref_count),
        (6_000, Seq(3), 2)
    );
}

#[test]
fn ref_count_counts_media_and_thumbnails() {
    let sizes: [ThumbSize; 3] = [CROP_32, CROP_96, SCALE_320];
    let mut events = vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 1, 100, "A"),
        upload(3, 1_002, "m3", 2, 50, "A"),
    ];
    // m1 and m3: thumbnails of h3 at every size; m2: one of h1 (its own content), one of h2.
    for m in ["m1", "m3"] {
        for &size in &sizes {
            let seq = events.len() as u64 + 1;
            events.push(thumbnail(seq, 2_000 + seq, m, size, 3, 7, "A"));
        }
    }
    events.push(thumbnail(10, 3_000, "m2", CROP_32, 1, 100, "A"));
    events.push(thumbnail(11, 3_001, "m2", CROP_96, 2, 50, "A"));
    // A media uploaded later with bytes only thumbnails had so far.
    events.push(upload(12, 4_000, "m4", 3, 7, "A"));
    let s = state_of(&events);
    for (n, media_refs, thumb_refs) in [(1u8, 2usize, 1usize), (2, 1, 1), (3, 1, 6)] {
        let r = get(&s, n).unwrap();
        assert_eq!(
            (referrers(&s, &sha(n)), thumb_referrers(&s, &sha(n))),
            (media_refs, thumb_refs),
            "h{n}"
        );
        assert_eq!(r.ref_count, (media_refs + thumb_refs) as u64, "h{n}");
    }
    let h3 = get(&s, 3).unwrap();
    assert_eq!(h3.created_seq, Seq(4), "first stored by a thumbnail");
    assert_eq!(h3.last_access_ms, 4_000, "the media upload is an access");
}

#[test]
fn recording_a_thumbnail_twice_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    HashRefs
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    HashRefs
        .apply(&thumbnail(2, 2, "m1", CROP_32, 2, 5, "A"), &mut kv)
        .unwrap();
    let before = kv.clone();
    assert_invariant(
        HashRefs.apply(&thumbnail(3, 3, "m1", CROP_32, 2, 5, "A"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before, "ref_count not incremented by the refused event");
    // Bytes equal to the media's: the thumbnail key differs from the media key, so a
    // thumbnail of m1 with m1's own bytes is a second reference, not a duplicate.
    HashRefs
        .apply(&thumbnail(4, 4, "m1", CROP_96, 1, 10, "A"), &mut kv)
        .unwrap();
    let before = kv.clone();
    assert_invariant(
        HashRefs.apply(&thumbnail(5, 5, "m1", CROP_96, 1, 10, "A"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before);
    assert_eq!(hash_refs::get(&kv, &sha(1)).unwrap().unwrap().ref_count, 2);
}

#[test]
fn a_moved_thumbnail_blob_keeps_its_references() {
    let mut s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        thumbnail(2, 2_000, "m1", CROP_32, 2, 10, "A"),
        thumbnail(3, 2_001, "m1", CROP_96, 2, 10, "A"),
        start_transfer(4, 3_000, "A", "B", 2, 110),
    ]);
    let before = get(&s, 2).unwrap();
    s.apply(&moved(5, 4_000, 4, 2, 10, "A", "B")).unwrap();
    assert_eq!(
        get(&s, 2).unwrap(),
        HashRecord {
            datastore: ds("B"),
            location: default_location(2, "B"),
            ..before
        }
    );
    assert_eq!(thumb_referrers(&s, &sha(2)), 2);
    assert_eq!(get(&s, 1).unwrap().datastore, ds("A"));
}

#[test]
fn thumbnail_referrer_keys_are_skipped_by_hash_scans() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        thumbnail(2, 2_000, "m1", CROP_32, 2, 10, "A"),
        thumbnail(3, 2_001, "m1", CROP_96, 1, 100, "A"),
    ]);
    let kv = space(&s, NAME);
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for (k, v) in &kv.0 {
        match hash_refs::decode_hash_entry(k, v) {
            Some(entry) => found.push(entry.unwrap()),
            None => skipped.push(k[0]),
        }
    }
    assert_eq!(
        found,
        vec![(sha(1), get(&s, 1).unwrap()), (sha(2), get(&s, 2).unwrap())]
    );
    skipped.sort_unstable();
    assert_eq!(skipped, vec![b'r', b't', b't']);
}

// ---- remote media cached over federation ----

#[test]
fn a_remote_media_of_new_bytes_creates_the_record() {
    let s = state_of(&[common::remote(1, 1_000, "r1", 1, 100, "A")]);
    assert_eq!(
        get(&s, 1),
        Some(HashRecord {
            datastore: ds("A"),
            location: default_location(1, "A"),
            size_bytes: 100,
            ref_count: 1,
            last_access_ms: 1_000,
            created_seq: Seq(1),
        })
    );
    assert_eq!(
        referrers(&s, &sha(1)),
        1,
        "a media referrer key, as an upload"
    );
    assert_eq!(thumb_referrers(&s, &sha(1)), 0);
}

#[test]
fn remote_and_local_media_of_the_same_bytes_share_one_count() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        // The writer records a remote of stored bytes at that blob, whatever it fetched to.
        common::remote_at(2, 2_000, "r1", 1, 100, "A", default_location(1, "A")),
        upload(3, 3_000, "m2", 1, 100, "A"),
        common::remote(4, 4_000, "r2", 2, 50, "B"),
        thumbnail(5, 5_000, "m1", CROP_32, 1, 100, "A"),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.ref_count, r.created_seq, r.last_access_ms),
        (4, Seq(1), 3_000),
        "m1, r1, m2 and a thumbnail; last access: m2's upload (a thumbnail is not one)"
    );
    assert_eq!(referrers(&s, &sha(1)), 3);
    assert_eq!(thumb_referrers(&s, &sha(1)), 1);
    let r2 = get(&s, 2).unwrap();
    assert_eq!(
        (r2.ref_count, r2.datastore, r2.created_seq),
        (1, ds("B"), Seq(4))
    );
}

#[test]
fn a_remote_media_keeps_the_first_place_and_counts_as_an_access() {
    let s = state_of(&[
        upload_at(1, 1_000, "m1", 1, 100, "A", location("first/blob")),
        common::remote_at(2, 9_000, "r1", 1, 100, "B", location("second/blob")),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (&r.datastore, &r.location),
        (&ds("A"), &location("first/blob"))
    );
    assert_eq!(r.last_access_ms, 9_000, "caching it is a use of the bytes");
    // The other way round: a local upload of bytes first cached from a remote.
    let s = state_of(&[
        common::remote_at(1, 1_000, "r1", 1, 100, "B", location("cache/r1")),
        upload_at(2, 2_000, "m1", 1, 100, "A", location("a/m1")),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.datastore, r.location, r.ref_count, r.created_seq),
        (ds("B"), location("cache/r1"), 2, Seq(1))
    );
}

#[test]
fn the_same_remote_media_referencing_a_hash_twice_is_an_invariant_error() {
    let mut s = state_of(&[common::remote(1, 1_000, "r1", 1, 100, "A")]);
    let before = s.clone();
    let mut kv = space(&s, NAME).clone();
    assert_invariant(
        HashRefs.apply(&common::remote(2, 2_000, "r1", 1, 100, "A"), &mut kv),
        NAME,
    );
    // Through the whole state, the media index refuses it first; nothing changes.
    assert!(s
        .apply(&common::remote(2, 2_000, "r1", 1, 100, "A"))
        .is_err());
    assert_eq!(s, before);
}

#[test]
fn a_moved_blob_takes_its_remote_references_along() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        common::remote(2, 2_000, "r1", 1, 100, "A"),
        start_transfer(3, 3_000, "A", "B", 1, 100),
        moved(4, 4_000, 3, 1, 100, "A", "B"),
        // After the move, the writer records a remote of these bytes at the copy.
        common::remote(5, 5_000, "r2", 1, 100, "B"),
    ]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.datastore, r.location, r.ref_count, r.last_access_ms),
        (ds("B"), default_location(1, "B"), 3, 5_000)
    );
    assert_eq!(referrers(&s, &sha(1)), 3);
}
