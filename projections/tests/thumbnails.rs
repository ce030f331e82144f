#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Thumbnails: given events, then one record per (media, size, method, animated).

mod common;

use common::{
    access, assert_invariant, create_async, envelope, media, media_on, moved, sha, source_deleted,
    space, start_transfer, state_of, thumbnail, thumbnail_at, transfer_failed, transfer_finished,
    upload, ThumbSize, CROP_32, CROP_96, SCALE_320,
};
use media_ledger_events::{
    Actor, ContentType, Envelope, Event, RequestId, Seq, ThumbnailGenerated, ThumbnailMethod,
};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::thumbnails::{self, ThumbRecord, Thumbnails};
use media_ledger_projections::{media_key, KvTx, Projection, ProjectionError};
use std::collections::BTreeSet;

const NAME: &str = "thumbnails";

fn get(state: &MemoryState, media_id: &str, (w, h, m, a): ThumbSize) -> Option<ThumbRecord> {
    thumbnails::get(space(state, NAME), &media(media_id), w, h, m, a).unwrap()
}

fn key(media_id: &str, (w, h, m, a): ThumbSize) -> Vec<u8> {
    thumbnails::thumb_key(&media(media_id), w, h, m, a)
}

#[test]
fn the_record_takes_its_fields_from_the_event_and_the_envelope() {
    let e = Envelope {
        seq: Seq(7),
        recorded_at_ms: 1_234_567,
        actor: Actor::User("@alice:example.org".parse().unwrap()),
        request_id: RequestId("thumb-m1".into()),
        event: Event::ThumbnailGeneratedV1(ThumbnailGenerated {
            media: media("m1"),
            width: 96,
            height: 96,
            method: ThumbnailMethod::Crop,
            animated: false,
            sha256: sha(5),
            size_bytes: 4_321,
            content_type: "image/jpeg".parse().unwrap(),
            datastore: common::ds("A"),
            location: common::location("A/thumbs/05"),
        }),
    };
    let s = state_of(&[upload(1, 1_000, "m1", 1, 100, "A"), e]);
    assert_eq!(
        get(&s, "m1", CROP_96),
        Some(ThumbRecord {
            sha256: sha(5),
            size_bytes: 4_321,
            content_type: "image/jpeg".parse::<ContentType>().unwrap(),
            created_at_ms: 1_234_567,
        })
    );
    // Exactly one key, and none for another size or another media.
    assert_eq!(space(&s, NAME).0.len(), 1);
    assert_eq!(get(&s, "m1", CROP_32), None);
    assert_eq!(get(&s, "m2", CROP_96), None);
}

#[test]
fn the_key_follows_the_documented_layout() {
    // media key ‖ 0x00 ‖ width (4 BE) ‖ height (4 BE) ‖ method ‖ animated
    let m = media("m1");
    let mut want = media_key(&m);
    want.push(0);
    want.extend_from_slice(&[0, 0, 0x01, 0x40]); // 320
    want.extend_from_slice(&[0, 0, 0x00, 0xf0]); // 240
    want.push(1); // scale
    want.push(1); // animated
    assert_eq!(
        thumbnails::thumb_key(&m, 320, 240, ThumbnailMethod::Scale, true),
        want
    );
    let crop = thumbnails::thumb_key(&m, u32::MAX, 0, ThumbnailMethod::Crop, false);
    assert_eq!(
        &crop[crop.len() - 10..],
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]
    );
    let mut prefix = media_key(&m);
    prefix.push(0);
    assert_eq!(thumbnails::media_prefix(&m), prefix);
}

#[test]
fn a_second_record_of_the_same_thumbnail_is_an_invariant_error() {
    let mut kv = MemoryKv::default();
    Thumbnails
        .apply(&thumbnail(1, 1_000, "m1", CROP_32, 5, 10, "A"), &mut kv)
        .unwrap();
    let before = kv.clone();
    // The same bytes again, and other bytes for the same key: both refused, nothing changed.
    assert_invariant(
        Thumbnails.apply(&thumbnail(2, 2_000, "m1", CROP_32, 5, 10, "A"), &mut kv),
        NAME,
    );
    assert_invariant(
        Thumbnails.apply(&thumbnail(3, 3_000, "m1", CROP_32, 6, 11, "B"), &mut kv),
        NAME,
    );
    assert_eq!(kv, before);
    assert_eq!(
        thumbnails::get(&kv, &media("m1"), 32, 32, ThumbnailMethod::Crop, false)
            .unwrap()
            .unwrap()
            .created_at_ms,
        1_000,
        "the first record stays"
    );
}

/// Every variation of one field of a size is another thumbnail.
const VARIANTS: [ThumbSize; 8] = [
    (32, 32, ThumbnailMethod::Crop, false),
    (32, 32, ThumbnailMethod::Crop, true),
    (32, 32, ThumbnailMethod::Scale, false),
    (32, 32, ThumbnailMethod::Scale, true),
    (32, 64, ThumbnailMethod::Crop, false),
    (64, 32, ThumbnailMethod::Crop, false),
    (64, 64, ThumbnailMethod::Crop, false),
    (800, 600, ThumbnailMethod::Scale, true),
];

#[test]
fn different_sizes_methods_and_animation_are_different_thumbnails() {
    let keys: BTreeSet<Vec<u8>> = VARIANTS.iter().map(|&v| key("m1", v)).collect();
    assert_eq!(keys.len(), VARIANTS.len());

    let events: Vec<Envelope> = VARIANTS
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let seq = i as u64 + 1;
            thumbnail(seq, 1_000 + seq, "m1", v, 10 + i as u8, 100 + seq, "A")
        })
        .collect();
    let s = state_of(&events);
    assert_eq!(space(&s, NAME).0.len(), VARIANTS.len());
    for (i, &v) in VARIANTS.iter().enumerate() {
        let r = get(&s, "m1", v).unwrap();
        let seq = i as u64 + 1;
        assert_eq!(
            (r.sha256, r.size_bytes, r.created_at_ms),
            (sha(10 + i as u8), 100 + seq, 1_000 + seq),
            "{v:?}"
        );
    }
}

#[test]
fn thumbnails_of_one_media_share_its_prefix_and_no_other_media_does() {
    // Media ids that prefix each other, and the same id on another origin.
    let others = [
        media("m10"),
        media("m"),
        media_on("example.org.evil", "m1"),
        media_on("other.example", "m1"),
    ];
    let mut events = Vec::new();
    for (i, &v) in VARIANTS.iter().enumerate() {
        events.push(thumbnail(
            events.len() as u64 + 1,
            1,
            "m1",
            v,
            i as u8,
            10,
            "A",
        ));
    }
    for (i, m) in others.iter().enumerate() {
        for &v in &VARIANTS[..3] {
            let seq = events.len() as u64 + 1;
            let mut e = thumbnail(seq, 1, "x", v, 50 + i as u8, 10, "A");
            if let Event::ThumbnailGeneratedV1(t) = &mut e.event {
                t.media = m.clone();
            }
            events.push(e);
        }
    }
    let s = state_of(&events);
    let kv = space(&s, NAME);
    assert_eq!(kv.0.len(), VARIANTS.len() + 3 * others.len());

    let prefix = thumbnails::media_prefix(&media("m1"));
    let of_m1: BTreeSet<&Vec<u8>> = kv.0.keys().filter(|k| k.starts_with(&prefix)).collect();
    let want: BTreeSet<Vec<u8>> = VARIANTS.iter().map(|&v| key("m1", v)).collect();
    assert_eq!(of_m1, want.iter().collect());
    // The thumbnails of a media are one contiguous run of the key order.
    let positions: Vec<usize> =
        kv.0.keys()
            .enumerate()
            .filter(|(_, k)| k.starts_with(&prefix))
            .map(|(i, _)| i)
            .collect();
    assert_eq!(
        positions.last().unwrap() - positions.first().unwrap() + 1,
        VARIANTS.len()
    );
    for m in &others {
        let p = thumbnails::media_prefix(m);
        assert_eq!(kv.0.keys().filter(|k| k.starts_with(&p)).count(), 3, "{m}");
        assert!(!p.starts_with(&prefix) && !prefix.starts_with(&p), "{m}");
    }
}

#[test]
fn stored_values_decode_with_decode_record() {
    let s = state_of(&[
        thumbnail(1, 1_000, "m1", CROP_32, 5, 10, "A"),
        thumbnail(2, 2_000, "m1", SCALE_320, 6, 20, "A"),
        thumbnail(3, 3_000, "m2", CROP_32, 5, 10, "A"),
    ]);
    let decoded: Vec<(Vec<u8>, ThumbRecord)> = space(&s, NAME)
        .0
        .iter()
        .map(|(k, v)| (k.clone(), thumbnails::decode_record(v).unwrap()))
        .collect();
    assert_eq!(decoded.len(), 3);
    for (k, r) in &decoded {
        let (id, size) = [("m1", CROP_32), ("m1", SCALE_320), ("m2", CROP_32)]
            .into_iter()
            .find(|&(id, size)| key(id, size) == *k)
            .unwrap();
        assert_eq!(Some(r), get(&s, id, size).as_ref());
    }
    assert!(matches!(
        thumbnails::decode_record(&[0xff]),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    assert!(matches!(
        thumbnails::decode_record(&[]),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
}

#[test]
fn a_corrupt_value_is_a_corrupt_error_on_get_and_on_apply() {
    let mut kv = MemoryKv::default();
    kv.put(&key("m1", CROP_32), vec![0xff]);
    assert!(matches!(
        thumbnails::get(&kv, &media("m1"), 32, 32, ThumbnailMethod::Crop, false),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    // A key that exists (even undecodable) is still a second record.
    assert_invariant(
        Thumbnails.apply(&thumbnail(1, 1, "m1", CROP_32, 5, 10, "A"), &mut kv),
        NAME,
    );
}

#[test]
fn other_events_are_ignored() {
    let s = state_of(&[
        upload(1, 1_000, "m1", 1, 100, "A"),
        access(2, 2_000, "m1", 1),
        create_async(3, 3_000, "p1", "@bob:example.org", 9_000),
        start_transfer(4, 4_000, "A", "B", 1, 100),
        transfer_failed(5, 4_100, 4, 1, 1, false, "timeout"),
        moved(6, 4_200, 4, 1, 100, "A", "B"),
        source_deleted(7, 4_300, 4, 1, "A"),
        transfer_finished(8, 4_400, 4, None),
    ]);
    assert!(space(&s, NAME).0.is_empty());
}

#[test]
fn moving_a_thumbnail_blob_does_not_touch_the_thumbnails() {
    // Where the blob lives is hash_refs' business.
    let log = [
        upload(1, 1_000, "m1", 1, 100, "A"),
        thumbnail(2, 2_000, "m1", CROP_32, 2, 10, "A"),
        thumbnail(3, 3_000, "m1", CROP_96, 1, 100, "A"),
        start_transfer(4, 4_000, "A", "B", 2, 110),
        moved(5, 5_000, 4, 2, 10, "A", "B"),
        moved(6, 5_001, 4, 1, 100, "A", "B"),
    ];
    assert_eq!(
        space(&state_of(&log), NAME),
        space(&state_of(&log[..3]), NAME)
    );
}

#[test]
fn the_projection_takes_the_events_word_for_media_and_location() {
    // The writer refuses thumbnails of unknown media and rewrites the location; the fold
    // itself neither checks the media nor keeps the datastore.
    let s = state_of(&[thumbnail_at(
        1,
        1_000,
        "never-uploaded",
        CROP_32,
        5,
        10,
        "Z",
        common::location("anywhere/at/all"),
    )]);
    assert_eq!(get(&s, "never-uploaded", CROP_32).unwrap().sha256, sha(5));
    let other_place = state_of(&[thumbnail(1, 1_000, "never-uploaded", CROP_32, 5, 10, "A")]);
    assert_eq!(space(&s, NAME), space(&other_place, NAME));
}

#[test]
fn replays_are_deterministic() {
    let log: Vec<Envelope> = (0u8..20)
        .map(|i| {
            let seq = u64::from(i) + 1;
            let size = VARIANTS[usize::from(i) % VARIANTS.len()];
            thumbnail(seq, seq * 10, &format!("m{}", i / 8), size, i % 3, 10, "A")
        })
        .collect();
    let full = state_of(&log);
    for k in 0..=log.len() {
        let mut s = state_of(&log[..k]);
        for e in &log[k..] {
            s.apply(e).unwrap();
        }
        assert_eq!(s, full, "split at {k}");
    }
    // An envelope of another variant in between leaves the thumbnails as they were.
    let mut with_noise = log.clone();
    with_noise.push(envelope(
        21,
        1,
        Actor::System,
        Event::MediaAccessedV1(media_ledger_events::MediaAccessed {
            media: media("m0"),
            sha256: sha(0),
        }),
    ));
    let mut alone = MemoryState::default();
    for e in &with_noise {
        alone.apply_one(&Thumbnails, e).unwrap();
    }
    assert_eq!(space(&alone, NAME), space(&full, NAME));
}
