#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Media index: given events, then the record of each media.

mod common;

use common::{
    access, assert_invariant, create_async, default_location, ds, imported, location, media,
    media_on, moved, moved_at, sha, source_deleted, space, start_transfer, state_of,
    transfer_failed, transfer_finished, upload, upload_at,
};
use media_ledger_events::{Actor, Event, MediaUploaded, Seq};
use media_ledger_projections::media_index::{self, MediaIndex, MediaKind, MediaRecord};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{media_key, parse_media_key, KvTx, Projection, ProjectionError};

const NAME: &str = "media_index";

fn get(state: &MemoryState, id: &str) -> Option<MediaRecord> {
    media_index::get(space(state, NAME), &media(id)).unwrap()
}

/// The keys of media records (not of the hash index).
fn record_keys(state: &MemoryState) -> Vec<Vec<u8>> {
    space(state, NAME)
        .0
        .keys()
        .filter(|k| media_index::is_record_key(k))
        .cloned()
        .collect()
}

/// The head keys of the hash → media index (`0x02 ‖ sha256`).
fn index_keys(state: &MemoryState) -> Vec<Vec<u8>> {
    space(state, NAME)
        .0
        .keys()
        .filter(|k| k.first() == Some(&media_index::SHA_INDEX_TAG))
        .cloned()
        .collect()
}

/// How many links the hash → media index holds (`0x03 ‖ sha256 ‖ media key`, one per media).
fn link_count(state: &MemoryState) -> usize {
    space(state, NAME)
        .0
        .keys()
        .filter(|k| k.first() == Some(&media_index::SHA_LINK_TAG))
        .count()
}

fn with_hash(state: &MemoryState, n: u8) -> Vec<media_ledger_events::MediaRef> {
    media_index::media_with_hash(space(state, NAME), &sha(n)).unwrap()
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
            quarantined: false,
            last_access_ms: 1_000,
            pinned: false,
            tombstone: false,
            created_seq: Seq(1),
            access_count: 0,
        })
    );
}

// Media the homeserver stored itself is local media of an unknown uploader, created when the
// homeserver says (else at the import), sharing the blob index with uploads of its bytes.
#[test]
fn imported_media_is_local_with_the_homeservers_time() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        imported(2, 2_000, "s1", 1, 100, "A", None),
        imported(3, 3_000, "s2", 2, 7, "B", Some(500)),
    ]);
    let s1 = get(&s, "s1").unwrap();
    assert_eq!(s1.kind, MediaKind::Local);
    assert_eq!(s1.uploader, Actor::System);
    assert_eq!((s1.created_at_ms, s1.last_access_ms), (2_000, 2_000));
    assert_eq!(s1.created_seq, Seq(2));
    assert_eq!(s1.upload_name, None);
    let s2 = get(&s, "s2").unwrap();
    assert_eq!((s2.created_at_ms, s2.last_access_ms), (500, 3_000));
    assert_eq!(s2.datastore, ds("B"));
    assert_eq!(with_hash(&s, 1), vec![media("m1"), media("s1")]);
    // Imported twice: as impossible as an upload twice.
    let mut twice = s.clone();
    assert_invariant(
        twice.apply(&imported(4, 4_000, "s1", 1, 100, "A", None)),
        "media_index",
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
            access_count: before.access_count,
            ..after.clone()
        },
        before,
        "an access changes nothing but last_access_ms and access_count"
    );
    assert_eq!(after.access_count, before.access_count + 1);

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
    assert_eq!(record_keys(&s).len(), 2);
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
    for (k, v) in kv.0.iter().filter(|(k, _)| media_index::is_record_key(k)) {
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

// ---- the hash → media index and blob moves ----

#[test]
fn the_hash_index_lists_the_media_of_each_hash_in_upload_order() {
    let mut other = upload(4, 4_000, "m1", 1, 10, "A");
    if let Event::MediaUploadedV1(e) = &mut other.event {
        e.media = media_on("other.example", "m1");
    }
    let s = state_of(&[
        upload(1, 1_000, "m2", 1, 10, "A"),
        upload(2, 2_000, "m3", 2, 20, "A"),
        upload(3, 3_000, "m1", 1, 10, "A"),
        other,
        access(5, 5_000, "m1", 1),
    ]);
    assert_eq!(
        with_hash(&s, 1),
        [media("m2"), media("m1"), media_on("other.example", "m1")]
    );
    assert_eq!(with_hash(&s, 2), [media("m3")]);
    assert!(with_hash(&s, 9).is_empty());
    // One index key per hash, `0x02 ‖ sha256`; media keys are never index keys.
    let mut want = Vec::new();
    for n in [1u8, 2] {
        let mut k = vec![media_index::SHA_INDEX_TAG];
        k.extend_from_slice(&sha(n).0);
        want.push(k);
    }
    assert_eq!(index_keys(&s), want);
    assert_eq!(record_keys(&s).len(), 4);
    assert_eq!(link_count(&s), 4);
    for k in record_keys(&s) {
        assert!(parse_media_key(&k).is_some());
    }
}

#[test]
fn is_record_key_tells_media_keys_from_index_keys() {
    for origin in ["example.org", "1.2.3.4", "[::1]:8448", "a"] {
        assert!(media_index::is_record_key(&media_key(&media_on(
            origin, "x"
        ))));
    }
    let mut k = vec![media_index::SHA_INDEX_TAG];
    k.extend_from_slice(&sha(1).0);
    assert!(!media_index::is_record_key(&k));
    k[0] = media_index::SHA_LINK_TAG;
    k.extend_from_slice(&media_key(&media("x")));
    assert!(!media_index::is_record_key(&k));
    assert!(!media_index::is_record_key(&[]));
}

/// A [`MemoryKv`] that counts the bytes and keys written.
#[derive(Default)]
struct Counting {
    kv: MemoryKv,
    keys: usize,
    bytes: usize,
}

impl media_ledger_projections::KvRead for Counting {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        self.kv.get(key)
    }
}

impl KvTx for Counting {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.keys += 1;
        self.bytes += key.len() + value.len();
        self.kv.put(key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.keys += 1;
        self.kv.delete(key);
    }
}

// Each upload of bytes already stored wrote the whole list of the hash's media again (1.4 →
// 3.2 ms per upload after 12k duplicates); it must write as much for the 2 000th duplicate
// as for the second.
#[test]
fn a_duplicate_upload_writes_a_constant_amount() {
    let mut kv = Counting::default();
    let mut written = Vec::new();
    for i in 1..=2_000u64 {
        let (keys, bytes) = (kv.keys, kv.bytes);
        MediaIndex
            .apply(&upload(i, i, &format!("m{i:05}"), 1, 10, "A"), &mut kv)
            .unwrap();
        written.push((kv.keys - keys, kv.bytes - bytes));
    }
    // The same keys; the bytes differ only by the varints of growing times and sequences.
    let (second, last) = (written[2], written[1_999]);
    assert_eq!(second.0, last.0, "{written:?}");
    assert!(last.1 <= second.1 + 16, "{second:?} then {last:?}");
    assert_eq!(
        media_index::media_with_hash(&kv.kv, &sha(1)).unwrap().len(),
        2_000
    );
    assert_eq!(
        media_index::media_with_hash(&kv.kv, &sha(1)).unwrap()[..2],
        [media("m00001"), media("m00002")]
    );
}

/// m1, m2 share h1 (in A), m3 has h2 (in A); task 4 moves h1 to B.
fn moved_log() -> Vec<media_ledger_events::Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 2_000, "m2", 1, 100, "A"),
        upload(3, 3_000, "m3", 2, 50, "A"),
        access(4, 3_500, "m1", 1),
        start_transfer(5, 4_000, "A", "B", 2, 150),
        moved_at(
            6,
            5_000,
            5,
            1,
            100,
            "A",
            default_location(1, "A"),
            "B",
            location("b/h1"),
        ),
    ]
}

#[test]
fn a_move_points_every_media_of_the_hash_at_the_copy() {
    let before = state_of(&moved_log()[..5]);
    let s = state_of(&moved_log());
    for id in ["m1", "m2"] {
        let was = get(&before, id).unwrap();
        let now = get(&s, id).unwrap();
        assert_eq!(&now.datastore, &ds("B"));
        assert_eq!(
            MediaRecord {
                datastore: was.datastore.clone(),
                ..now
            },
            was,
            "{id}: a move changes nothing but datastore and location"
        );
    }
    assert_eq!(get(&s, "m3"), get(&before, "m3"), "other hashes stay");
    // The index itself does not change with a move.
    assert_eq!(with_hash(&s, 1), [media("m1"), media("m2")]);
    assert_eq!(index_keys(&s), index_keys(&before));
}

#[test]
fn uploads_after_a_move_join_the_index_and_move_with_it_next_time() {
    let mut events = moved_log();
    events.extend([
        transfer_finished(7, 6_000, 5, None),
        upload_at(8, 7_000, "m4", 1, 100, "B", location("b/h1")),
        start_transfer(9, 8_000, "B", "A", 1, 100),
        moved_at(
            10,
            9_000,
            9,
            1,
            100,
            "B",
            location("b/h1"),
            "A",
            location("a/h1"),
        ),
    ]);
    let s = state_of(&events);
    assert_eq!(with_hash(&s, 1), [media("m1"), media("m2"), media("m4")]);
    for id in ["m1", "m2", "m4"] {
        let r = get(&s, id).unwrap();
        assert_eq!(r.datastore, ds("A"), "{id}");
    }
}

#[test]
fn other_transfer_events_change_nothing() {
    let mut events = moved_log();
    let base = state_of(&events);
    events.extend([
        source_deleted(7, 6_000, 5, 1, "A"),
        transfer_failed(8, 6_001, 5, 2, 1, true, "boom"),
        transfer_finished(9, 6_002, 5, Some("1 failed")),
    ]);
    assert_eq!(space(&state_of(&events), NAME), space(&base, NAME));
    // A start alone does not touch the index either.
    let s = state_of(&[
        upload(1, 1, "m1", 1, 1, "A"),
        start_transfer(2, 2, "A", "B", 1, 1),
    ]);
    assert_eq!(
        space(&s, NAME),
        space(&state_of(&[upload(1, 1, "m1", 1, 1, "A")]), NAME)
    );
}

#[test]
fn a_corrupt_hash_index_is_a_corrupt_error() {
    let mut kv = MemoryKv::default();
    MediaIndex
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    let mut k = vec![media_index::SHA_INDEX_TAG];
    k.extend_from_slice(&sha(1).0);
    kv.put(&k, vec![0xff, 0xff]);
    assert!(matches!(
        media_index::media_with_hash(&kv, &sha(1)),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    assert!(matches!(
        MediaIndex.apply(&moved(2, 2, 1, 1, 10, "A", "B"), &mut kv),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
}

#[test]
fn an_index_naming_a_missing_media_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    MediaIndex
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    kv.delete(&media_key(&media("m1")));
    assert_invariant(
        MediaIndex.apply(&moved(2, 2, 1, 1, 10, "A", "B"), &mut kv),
        NAME,
    );
}

// ---- remote media cached over federation ----

fn get_remote(state: &MemoryState, id: &str) -> Option<MediaRecord> {
    media_index::get(space(state, NAME), &media_on(common::REMOTE, id)).unwrap()
}

#[test]
fn a_remote_media_records_every_field() {
    let s = state_of(&[common::remote(1, 1_000, "r1", 1, 100, "A")]);
    assert_eq!(
        get_remote(&s, "r1"),
        Some(MediaRecord {
            sha256: sha(1),
            size_bytes: 100,
            content_type: Some("image/jpeg".parse().unwrap()),
            upload_name: Some("r1.jpg".into()),
            // Nobody here uploaded it: the envelope's actor (who asked) is not the uploader.
            uploader: Actor::System,
            created_at_ms: 1_000,
            kind: MediaKind::Remote,
            datastore: ds("A"),
            quarantined: false,
            last_access_ms: 1_000,
            pinned: false,
            tombstone: false,
            created_seq: Seq(1),
            access_count: 0,
        })
    );
    assert_eq!(get(&s, "r1"), None, "not a media of our origin");
}

#[test]
fn a_remote_media_without_content_type_or_name_keeps_none() {
    let mut e = common::remote(1, 5, "r1", 1, 1, "A");
    if let Event::RemoteMediaCachedV1(r) = &mut e.event {
        r.content_type = None;
        r.upload_name = None;
    }
    let r = get_remote(&state_of(&[e]), "r1").unwrap();
    assert_eq!((r.content_type, r.upload_name), (None, None));
}

#[test]
fn remote_times_come_from_the_envelope_and_accesses_move_them() {
    let mut s = state_of(&[common::remote(7, 123_456, "r1", 1, 1, "A")]);
    let r = get_remote(&s, "r1").unwrap();
    assert_eq!((r.created_at_ms, r.last_access_ms), (123_456, 123_456));
    let r1 = media_on(common::REMOTE, "r1");
    s.apply(&common::access_of(8, 200_000, r1.clone(), 1))
        .unwrap();
    s.apply(&common::access_of(9, 150_000, r1, 1)).unwrap();
    let after = get_remote(&s, "r1").unwrap();
    assert_eq!(
        (after.created_at_ms, after.last_access_ms),
        (123_456, 200_000)
    );
    assert_eq!(after.kind, MediaKind::Remote, "an access keeps the kind");
}

#[test]
fn a_remote_media_is_listed_under_its_hash_with_local_media() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 10, "A"),
        common::remote(2, 2_000, "r1", 1, 10, "A"),
        common::remote(3, 3_000, "r2", 2, 20, "B"),
        upload(4, 4_000, "m2", 1, 10, "A"),
    ]);
    let r = |id| media_on(common::REMOTE, id);
    assert_eq!(with_hash(&s, 1), [media("m1"), r("r1"), media("m2")]);
    assert_eq!(with_hash(&s, 2), [r("r2")]);
    let mut want = Vec::new();
    for n in [1u8, 2] {
        let mut k = vec![media_index::SHA_INDEX_TAG];
        k.extend_from_slice(&sha(n).0);
        want.push(k);
    }
    assert_eq!(index_keys(&s), want, "one 0x02 key per hash");
    assert_eq!(link_count(&s), 4, "one 0x03 link per media");
    assert_eq!(record_keys(&s).len(), 4);
    let kinds: Vec<MediaKind> = record_keys(&s)
        .iter()
        .map(|k| {
            media_index::decode_record(&space(&s, NAME).0[k])
                .unwrap()
                .kind
        })
        .collect();
    // Keys sort by origin: example.org (m1, m2) before remote.example (r1, r2).
    assert_eq!(
        kinds,
        [
            MediaKind::Local,
            MediaKind::Local,
            MediaKind::Remote,
            MediaKind::Remote
        ]
    );
}

#[test]
fn a_second_record_of_a_remote_media_is_an_invariant_error() {
    let mut s = state_of(&[common::remote(1, 1_000, "r1", 1, 100, "A")]);
    let before = s.clone();
    // Cached again (same or other bytes), or "uploaded" under the remote's id: all refused.
    assert_invariant(s.apply(&common::remote(2, 2_000, "r1", 1, 100, "A")), NAME);
    assert_invariant(s.apply(&common::remote(3, 3_000, "r1", 2, 50, "B")), NAME);
    let mut upload_over = upload(4, 4_000, "x", 1, 100, "A");
    if let Event::MediaUploadedV1(e) = &mut upload_over.event {
        e.media = media_on(common::REMOTE, "r1");
    }
    assert_invariant(s.apply(&upload_over), NAME);
    assert_eq!(s, before, "refused events change nothing");
    // And a remote record over a local media is refused the same way.
    let mut kv = MemoryKv::default();
    MediaIndex
        .apply(&upload(1, 1, "m1", 1, 10, "A"), &mut kv)
        .unwrap();
    let mut over_local = common::remote(2, 2, "m1", 1, 10, "A");
    if let Event::RemoteMediaCachedV1(e) = &mut over_local.event {
        e.media = media("m1");
    }
    assert_invariant(MediaIndex.apply(&over_local, &mut kv), NAME);
}

#[test]
fn a_move_takes_remote_media_of_the_hash_along() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        common::remote(2, 2_000, "r1", 1, 100, "A"),
        start_transfer(3, 3_000, "A", "B", 1, 100),
        moved(4, 4_000, 3, 1, 100, "A", "B"),
    ]);
    assert_eq!(get(&s, "m1").unwrap().datastore, ds("B"));
    let r = get_remote(&s, "r1").unwrap();
    assert_eq!((r.datastore, r.kind), (ds("B"), MediaKind::Remote));
}

/// Purges `ids` (all of `sha(1)`, size 10, in `A`) in one event at `seq`.
fn purge_of(seq: u64, ids: &[&str]) -> media_ledger_events::Envelope {
    use media_ledger_events::{Authority, MediaPurged, ModerationTarget, PurgedMedia};
    let media = ids
        .iter()
        .map(|id| PurgedMedia {
            media: media(id),
            sha256: sha(1),
            size_bytes: 10,
            uploader: Actor::SharedSecretAdmin,
            remote: false,
            datastore: ds("A"),
            created_seq: Seq(1),
            tombstone: false,
        })
        .collect();
    common::envelope(
        seq,
        seq,
        Actor::SharedSecretAdmin,
        Event::MediaPurgedV1(MediaPurged {
            authority: Authority::RepositoryAdmin,
            target: ModerationTarget::Quarantined,
            before_ts_ms: None,
            media,
            thumbnails: Vec::new(),
            freed: Vec::new(),
            reason: None,
        }),
    )
}

// Removing the first, a middle and the last media of a hash keeps the others in order; the
// last one removed takes the whole index of the hash with it.
#[test]
fn purges_unlink_from_any_place_of_the_hash_list() {
    let mut kv = MemoryKv::default();
    let mut apply = |e: media_ledger_events::Envelope| MediaIndex.apply(&e, &mut kv).unwrap();
    for i in 1..=5u64 {
        apply(upload(i, i, &format!("m{i}"), 1, 10, "A"));
    }
    apply(purge_of(6, &["m3"]));
    apply(purge_of(7, &["m1", "m5"]));
    apply(upload(8, 8, "m6", 1, 10, "A"));
    let listed = |kv: &MemoryKv| media_index::media_with_hash(kv, &sha(1)).unwrap();
    assert_eq!(listed(&kv), ["m2", "m4", "m6"].map(media));
    MediaIndex.apply(&purge_of(9, &["m4"]), &mut kv).unwrap();
    assert_eq!(listed(&kv), ["m2", "m6"].map(media));
    MediaIndex
        .apply(&purge_of(10, &["m6", "m2"]), &mut kv)
        .unwrap();
    assert!(listed(&kv).is_empty());
    assert!(
        kv.0.is_empty(),
        "nothing left of the hash index: {:?}",
        kv.0.keys()
    );
}
