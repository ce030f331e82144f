#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Media index: given events, then the record of each media.

mod common;

use common::{
    access, assert_invariant, create_async, ds, media, media_on, sha, space, state_of, upload,
    upload_at,
};
use media_ledger_events::{Actor, Event, MediaUploaded};
use media_ledger_projections::media_index::{self, MediaIndex, MediaKind, MediaRecord};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{media_key, parse_media_key, KvTx, Projection, ProjectionError};

const NAME: &str = "media_index";

fn get(state: &MemoryState, id: &str) -> Option<MediaRecord> {
    media_index::get(space(state, NAME), &media(id)).unwrap()
}

#[test]
fn upload_records_every_field() {
    let s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    let alice = Actor::User(common::user("@alice:example.org"));
    assert_eq!(
        get(&s, "m1"),
        Some(MediaRecord {
            sha256: sha(1),
            size_bytes: 100,
            content_type: Some("image/png".parse().unwrap()),
            upload_name: Some("m1.png".into()),
            uploader: alice,
            created_at_ms: 1_000,
            kind: MediaKind::Local,
            datastore: ds("A"),
            location: common::default_location(1, "A"),
            quarantined: false,
            last_access_ms: 1_000,
        })
    );
}

#[test]
fn upload_without_content_type_or_name_keeps_none() {
    let mut e = upload(1, 5, "m1", 1, 1, "A");
    if let Event::MediaUploadedV1(MediaUploaded {
        content_type,
        upload_name,
        uploader,
        ..
    }) = &mut e.event
    {
        *content_type = None;
        *upload_name = None;
        *uploader = Actor::SharedSecretAdmin;
    }
    let r = get(&state_of(&[e]), "m1").unwrap();
    assert_eq!(r.content_type, None);
    assert_eq!(r.upload_name, None);
    assert_eq!(r.uploader, Actor::SharedSecretAdmin);
}

#[test]
fn times_come_from_the_envelope() {
    // The uploader's actor, the request and the upload event carry no time; only the
    // envelope does.
    let s = state_of(&[upload(7, 123_456, "m1", 1, 1, "A")]);
    let r = get(&s, "m1").unwrap();
    assert_eq!((r.created_at_ms, r.last_access_ms), (123_456, 123_456));
}

#[test]
fn access_moves_last_access_forward_only() {
    let mut s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    let before = get(&s, "m1").unwrap();

    s.apply(&access(2, 2_000, "m1", 1)).unwrap();
    let after = get(&s, "m1").unwrap();
    assert_eq!(after.last_access_ms, 2_000);
    assert_eq!(after.created_at_ms, 1_000);
    assert_eq!(
        MediaRecord {
            last_access_ms: before.last_access_ms,
            ..after.clone()
        },
        before,
        "an access changes nothing but last_access_ms"
    );

    // An older access (a late-queued event) never moves it back.
    s.apply(&access(3, 1_500, "m1", 1)).unwrap();
    assert_eq!(get(&s, "m1").unwrap().last_access_ms, 2_000);
    s.apply(&access(4, 2_000, "m1", 1)).unwrap();
    assert_eq!(get(&s, "m1").unwrap().last_access_ms, 2_000);
    s.apply(&access(5, 9_000, "m1", 1)).unwrap();
    assert_eq!(get(&s, "m1").unwrap().last_access_ms, 9_000);
}

#[test]
fn access_older_than_the_upload_keeps_the_upload_time() {
    let mut s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    s.apply(&access(2, 10, "m1", 1)).unwrap();
    assert_eq!(get(&s, "m1").unwrap().last_access_ms, 1_000);
}

#[test]
fn access_to_unknown_media_is_an_invariant_error() {
    let mut s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    let before = s.clone();
    assert_invariant(s.apply(&access(2, 2_000, "nope", 1)), NAME);
    assert_eq!(s, before, "a refused event changes nothing");

    let mut kv = MemoryKv::default();
    assert_invariant(MediaIndex.apply(&access(1, 1, "m1", 1), &mut kv), NAME);
    assert!(kv.0.is_empty());
}

#[test]
fn double_upload_of_the_same_media_is_an_invariant_error() {
    let mut s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A")]);
    let first = get(&s, "m1").unwrap();
    // Same bytes again, and other bytes elsewhere: both refused.
    assert_invariant(s.apply(&upload(2, 2_000, "m1", 1, 100, "A")), NAME);
    assert_invariant(s.apply(&upload(3, 3_000, "m1", 2, 50, "B")), NAME);
    assert_eq!(get(&s, "m1").unwrap(), first);
}

#[test]
fn async_reservation_is_not_a_media() {
    let s = state_of(&[create_async(1, 1_000, "m1", "@bob:example.org", 9_000)]);
    assert_eq!(get(&s, "m1"), None);
    assert!(space(&s, NAME).0.is_empty());
    // Filling it creates the record.
    let s = state_of(&[
        create_async(1, 1_000, "m1", "@bob:example.org", 9_000),
        upload(2, 2_000, "m1", 1, 10, "A"),
    ]);
    assert_eq!(get(&s, "m1").unwrap().created_at_ms, 2_000);
}

#[test]
fn same_media_id_on_two_origins_are_two_media() {
    let mut other = upload(2, 2_000, "m1", 2, 20, "A");
    if let Event::MediaUploadedV1(e) = &mut other.event {
        e.media = media_on("other.example:8448", "m1");
    }
    let s = state_of(&[upload(1, 1_000, "m1", 1, 10, "A"), other]);
    let kv = space(&s, NAME);
    assert_eq!(get(&s, "m1").unwrap().sha256, sha(1));
    let r = media_index::get(kv, &media_on("other.example:8448", "m1")).unwrap();
    assert_eq!(r.unwrap().sha256, sha(2));
    assert_eq!(kv.0.len(), 2);
}

#[test]
fn dedup_uploads_are_separate_records() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 10, "A"),
        upload_at(2, 2_000, "m2", 1, 10, "A", common::default_location(1, "A")),
    ]);
    assert_eq!(get(&s, "m1").unwrap().created_at_ms, 1_000);
    assert_eq!(get(&s, "m2").unwrap().created_at_ms, 2_000);
}

#[test]
fn unknown_media_reads_as_none() {
    let s = MemoryState::default();
    assert_eq!(get(&s, "m1"), None);
}

#[test]
fn stored_values_decode_and_scan() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 10, "A"),
        upload(2, 2_000, "m2", 2, 20, "A"),
    ]);
    let kv = space(&s, NAME);
    for (k, v) in &kv.0 {
        let m = parse_media_key(k).unwrap();
        assert_eq!(
            media_index::decode_record(v).unwrap(),
            media_index::get(kv, &m).unwrap().unwrap()
        );
    }
    assert!(matches!(
        media_index::decode_record(&[0xff]),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
}

#[test]
fn corrupt_value_is_a_corrupt_error() {
    let mut kv = MemoryKv::default();
    kv.put(&media_key(&media("m1")), vec![1, 2, 3]);
    assert!(matches!(
        media_index::get(&kv, &media("m1")),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    // And folding an access into it reports the corruption rather than guessing.
    assert!(matches!(
        MediaIndex.apply(&access(1, 1, "m1", 1), &mut kv),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
}

#[test]
fn media_keys_round_trip_and_sort_by_origin() {
    let a = media_on("a.example", "zzz");
    let b = media_on("b.example", "aaa");
    assert_eq!(parse_media_key(&media_key(&a)), Some(a.clone()));
    assert_eq!(parse_media_key(&media_key(&b)), Some(b.clone()));
    assert!(media_key(&a) < media_key(&b));
    // "a" + "b/…" vs "ab" + "…": the NUL separator keeps them apart.
    assert_ne!(
        media_key(&media_on("a", "bc")),
        media_key(&media_on("ab", "c"))
    );
    assert_eq!(parse_media_key(b"no-nul"), None);
    assert_eq!(parse_media_key(b"bad/origin\0id"), None);
    assert_eq!(parse_media_key(b"origin\0bad/id"), None);
}
