//! Builders of envelopes and helpers over `MemoryState`, shared by the projection tests.
#![allow(dead_code)]

use media_ledger_events::{
    Actor, AsyncUploadCreated, BlobLocation, DatastoreId, Envelope, Event, MediaAccessed, MediaRef,
    MediaUploaded, RequestId, Seq, Sha256, UserId,
};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::ProjectionError;

pub const ORIGIN: &str = "example.org";

/// `mxc://example.org/<id>`.
pub fn media(id: &str) -> MediaRef {
    media_on(ORIGIN, id)
}

pub fn media_on(origin: &str, id: &str) -> MediaRef {
    MediaRef::new(origin.parse().unwrap(), id.parse().unwrap())
}

/// A digest made of one repeated byte.
pub fn sha(n: u8) -> Sha256 {
    Sha256([n; 32])
}

pub fn ds(id: &str) -> DatastoreId {
    id.parse().unwrap()
}

pub fn user(id: &str) -> UserId {
    id.parse().unwrap()
}

pub fn location(s: &str) -> BlobLocation {
    s.parse().unwrap()
}

/// The location the builders give a blob: `<datastore>/<hash hex>`.
pub fn default_location(sha_n: u8, ds_id: &str) -> BlobLocation {
    location(&format!("{ds_id}/{}", sha(sha_n).to_hex()))
}

pub fn envelope(seq: u64, time: u64, actor: Actor, event: Event) -> Envelope {
    Envelope {
        seq: Seq(seq),
        recorded_at_ms: time,
        actor,
        request_id: RequestId(format!("req-{seq}")),
        event,
    }
}

/// An upload of `media` with bytes `sha(sha_n)` of `size` into `ds_id`, at the default
/// location, by `@alice:example.org`.
pub fn upload(seq: u64, time: u64, media_id: &str, sha_n: u8, size: u64, ds_id: &str) -> Envelope {
    upload_at(
        seq,
        time,
        media_id,
        sha_n,
        size,
        ds_id,
        default_location(sha_n, ds_id),
    )
}

/// Like [`upload`], at an explicit location.
pub fn upload_at(
    seq: u64,
    time: u64,
    media_id: &str,
    sha_n: u8,
    size: u64,
    ds_id: &str,
    loc: BlobLocation,
) -> Envelope {
    let alice = Actor::User(user("@alice:example.org"));
    envelope(
        seq,
        time,
        alice.clone(),
        Event::MediaUploadedV1(MediaUploaded {
            media: media(media_id),
            sha256: sha(sha_n),
            size_bytes: size,
            content_type: Some("image/png".parse().unwrap()),
            upload_name: Some(format!("{media_id}.png")),
            uploader: alice,
            datastore: ds(ds_id),
            location: loc,
        }),
    )
}

/// A recorded download of `media` (whose bytes are `sha(sha_n)`), by the server.
pub fn access(seq: u64, time: u64, media_id: &str, sha_n: u8) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::MediaAccessedV1(MediaAccessed {
            media: media(media_id),
            sha256: sha(sha_n),
        }),
    )
}

/// A reservation of `media` for `owner` until `expires_at_ms`.
pub fn create_async(
    seq: u64,
    time: u64,
    media_id: &str,
    owner: &str,
    expires_at_ms: u64,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::User(user(owner)),
        Event::AsyncUploadCreatedV1(AsyncUploadCreated {
            media: media(media_id),
            owner: user(owner),
            expires_at_ms,
        }),
    )
}

/// Folds `events` into a fresh state, panicking on the first error.
pub fn state_of(events: &[Envelope]) -> MemoryState {
    let mut s = MemoryState::default();
    for e in events {
        s.apply(e)
            .unwrap_or_else(|err| panic!("seq {}: {err}", e.seq));
    }
    s
}

/// The key space of projection `name`.
pub fn space<'a>(state: &'a MemoryState, name: &str) -> &'a MemoryKv {
    state.space(name).unwrap()
}

/// Asserts an invariant error raised by projection `name`.
pub fn assert_invariant(r: Result<(), ProjectionError>, name: &str) {
    match r {
        Err(ProjectionError::Invariant { name: n, .. }) if n == name => {}
        other => panic!("expected an invariant error of {name}, got {other:?}"),
    }
}
