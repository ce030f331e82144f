#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The usage projection: a user's live bytes and files (uploads count, a purge takes back
//! exactly what was counted, once; the shared secret counts for no one) and their upload
//! window.

mod common;

use common::{ds, envelope, media, sha, space, upload, user};
use media_ledger_events::{
    Actor, Authority, Envelope, Event, MediaPurged, ModerationTarget, PurgedMedia, Seq,
};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::usage::{self, UserUsage};

/// The usage projection alone folded over `events` (the others would want a consistent log:
/// freed blobs, hash records).
fn state_of(events: &[Envelope]) -> MemoryState {
    let mut s = MemoryState::default();
    for e in events {
        s.apply_one(&usage::Usage, e).unwrap();
    }
    s
}

fn alice_usage(state: &MemoryState) -> UserUsage {
    usage::get(space(state, "usage"), &user("@alice:example.org")).unwrap()
}

fn purged(seq: u64, time: u64, ids: &[(&str, u8, u64)]) -> Envelope {
    envelope(
        seq,
        time,
        Actor::SharedSecretAdmin,
        Event::MediaPurgedV1(MediaPurged {
            authority: Authority::RepositoryAdmin,
            target: ModerationTarget::Quarantined,
            before_ts_ms: None,
            media: ids
                .iter()
                .map(|(id, n, size)| PurgedMedia {
                    media: media(id),
                    sha256: sha(*n),
                    size_bytes: *size,
                    uploader: Actor::User(user("@alice:example.org")),
                    remote: false,
                    datastore: ds("d"),
                    created_seq: Seq(1),
                    tombstone: false,
                })
                .collect(),
            thumbnails: vec![],
            freed: vec![],
            reason: None,
        }),
    )
}

#[test]
fn uploads_count_and_a_purge_takes_back_what_was_counted_once() {
    let s = state_of(&[
        upload(1, 1_000_000, "a", 1, 100, "d"),
        upload(2, 1_000_500, "b", 2, 50, "d"),
    ]);
    let u = alice_usage(&s);
    assert_eq!((u.bytes, u.files), (150, 2));
    assert_eq!(u.window.within(1_000_600, 10_000), 150);

    let s = state_of(&[
        upload(1, 1_000_000, "a", 1, 100, "d"),
        upload(2, 1_000_500, "b", 2, 50, "d"),
        purged(3, 1_001_000, &[("a", 1, 100)]),
        // A second purge naming it again (it cannot happen; the projection must not count it
        // twice if it did) and one naming media never counted.
        purged(4, 1_002_000, &[("a", 1, 100), ("zzz", 9, 7)]),
    ]);
    let u = alice_usage(&s);
    assert_eq!((u.bytes, u.files), (50, 1));
    // The window keeps what was uploaded.
    assert_eq!(u.window.within(1_002_000, 10_000), 150);
}

#[test]
fn the_shared_secret_counts_for_no_one() {
    let mut e = upload(1, 1_000, "a", 1, 100, "d");
    if let Event::MediaUploadedV1(u) = &mut e.event {
        u.uploader = Actor::SharedSecretAdmin;
    }
    let s = state_of(&[e]);
    assert_eq!(alice_usage(&s), UserUsage::default());
}
