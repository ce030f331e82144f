//! Builders of envelopes and helpers over `MemoryState`, shared by the projection tests.
#![allow(dead_code)]

use media_ledger_events::{
    Actor, AsyncUploadCreated, BlobLocation, BlobMoved, BlobSourceDeleted, BlobTransferFailed,
    DatastoreId, Envelope, Event, MediaAccessed, MediaImported, MediaRef, MediaUploaded,
    RemoteMediaCached, RequestId, Seq, Sha256, ThumbnailGenerated, ThumbnailMethod,
    TransferFinished, TransferStarted, UserId,
};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::ProjectionError;

pub const ORIGIN: &str = "example.org";
/// The origin of the remote media of the builders.
pub const REMOTE: &str = "remote.example";

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

/// `media_id` of [`REMOTE`], fetched over federation with bytes `sha(sha_n)` of `size` and
/// cached in `ds_id` at `loc`, on behalf of `@bob:example.org`.
pub fn remote_at(
    seq: u64,
    time: u64,
    media_id: &str,
    sha_n: u8,
    size: u64,
    ds_id: &str,
    loc: BlobLocation,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::User(user("@bob:example.org")),
        Event::RemoteMediaCachedV1(RemoteMediaCached {
            media: media_on(REMOTE, media_id),
            sha256: sha(sha_n),
            size_bytes: size,
            content_type: Some("image/jpeg".parse().unwrap()),
            upload_name: Some(format!("{media_id}.jpg")),
            fetched_from: format!("https://{REMOTE}"),
            datastore: ds(ds_id),
            location: loc,
        }),
    )
}

/// `media_id` of [`ORIGIN`] read through from the homeserver with bytes `sha(sha_n)` of
/// `size` and stored in `ds_id` at the default location, on behalf of `@bob:example.org`;
/// `origin_created` is the homeserver's creation time, if known.
pub fn imported(
    seq: u64,
    time: u64,
    media_id: &str,
    sha_n: u8,
    size: u64,
    ds_id: &str,
    origin_created: Option<u64>,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::User(user("@bob:example.org")),
        Event::MediaImportedV1(MediaImported {
            media: media(media_id),
            sha256: sha(sha_n),
            size_bytes: size,
            content_type: Some("image/png".parse().unwrap()),
            upload_name: None,
            origin_homeserver: "http://127.0.0.1:8008".into(),
            origin_created_at_ms: origin_created,
            datastore: ds(ds_id),
            location: default_location(sha_n, ds_id),
        }),
    )
}

/// Like [`remote_at`], at the default location.
pub fn remote(seq: u64, time: u64, media_id: &str, sha_n: u8, size: u64, ds_id: &str) -> Envelope {
    remote_at(
        seq,
        time,
        media_id,
        sha_n,
        size,
        ds_id,
        default_location(sha_n, ds_id),
    )
}

/// A recorded download of `media` (whose bytes are `sha(sha_n)`), by the server.
pub fn access(seq: u64, time: u64, media_id: &str, sha_n: u8) -> Envelope {
    access_of(seq, time, media(media_id), sha_n)
}

/// A recorded download of any media (local or remote), by the server.
pub fn access_of(seq: u64, time: u64, media: MediaRef, sha_n: u8) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::MediaAccessedV1(MediaAccessed {
            media,
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

/// An admin starts a transfer from `source` to `target`; its task id is `seq`.
pub fn start_transfer(
    seq: u64,
    time: u64,
    source: &str,
    target: &str,
    blobs_total: u64,
    bytes_total: u64,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::SharedSecretAdmin,
        Event::TransferStartedV1(TransferStarted {
            source: ds(source),
            target: ds(target),
            before_ts_ms: None,
            blobs_total,
            bytes_total,
        }),
    )
}

/// Task `task` moved `sha(sha_n)` (of `size` bytes) from `from` at `from_loc` to `to` at
/// `to_loc`.
#[allow(clippy::too_many_arguments)]
pub fn moved_at(
    seq: u64,
    time: u64,
    task: u64,
    sha_n: u8,
    size: u64,
    from: &str,
    from_loc: BlobLocation,
    to: &str,
    to_loc: BlobLocation,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::BlobMovedV1(BlobMoved {
            task: Seq(task),
            sha256: sha(sha_n),
            size_bytes: size,
            from_datastore: ds(from),
            from_location: from_loc,
            to_datastore: ds(to),
            to_location: to_loc,
        }),
    )
}

/// Like [`moved_at`], between the default locations of both datastores.
pub fn moved(
    seq: u64,
    time: u64,
    task: u64,
    sha_n: u8,
    size: u64,
    from: &str,
    to: &str,
) -> Envelope {
    moved_at(
        seq,
        time,
        task,
        sha_n,
        size,
        from,
        default_location(sha_n, from),
        to,
        default_location(sha_n, to),
    )
}

/// Task `task` deleted the old copy of `sha(sha_n)` at the default location in `from`.
pub fn source_deleted(seq: u64, time: u64, task: u64, sha_n: u8, from: &str) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::BlobSourceDeletedV1(BlobSourceDeleted {
            task: Seq(task),
            sha256: sha(sha_n),
            datastore: ds(from),
            location: default_location(sha_n, from),
        }),
    )
}

/// Attempt `attempt` of task `task` to move `sha(sha_n)` failed with `error`.
pub fn transfer_failed(
    seq: u64,
    time: u64,
    task: u64,
    sha_n: u8,
    attempt: u32,
    final_attempt: bool,
    error: &str,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::BlobTransferFailedV1(BlobTransferFailed {
            task: Seq(task),
            sha256: sha(sha_n),
            attempt,
            final_attempt,
            error: error.into(),
        }),
    )
}

/// Task `task` ended, with `error_message` if some blobs could not be moved.
pub fn transfer_finished(seq: u64, time: u64, task: u64, error_message: Option<&str>) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::TransferFinishedV1(TransferFinished {
            task: Seq(task),
            error_message: error_message.map(str::to_owned),
        }),
    )
}

/// A thumbnail size as the events carry it: width, height, method, animated.
pub type ThumbSize = (u32, u32, ThumbnailMethod, bool);

/// 32×32 crop, not animated.
pub const CROP_32: ThumbSize = (32, 32, ThumbnailMethod::Crop, false);
/// 96×96 crop, not animated.
pub const CROP_96: ThumbSize = (96, 96, ThumbnailMethod::Crop, false);
/// 320×240 scale, not animated.
pub const SCALE_320: ThumbSize = (320, 240, ThumbnailMethod::Scale, false);

/// A thumbnail of `media_id` at `size` with bytes `sha(sha_n)` of `bytes` length, stored in
/// `ds_id` at the default location, by the server.
pub fn thumbnail(
    seq: u64,
    time: u64,
    media_id: &str,
    size: ThumbSize,
    sha_n: u8,
    bytes: u64,
    ds_id: &str,
) -> Envelope {
    thumbnail_at(
        seq,
        time,
        media_id,
        size,
        sha_n,
        bytes,
        ds_id,
        default_location(sha_n, ds_id),
    )
}

/// Like [`thumbnail`], at an explicit location.
#[allow(clippy::too_many_arguments)]
pub fn thumbnail_at(
    seq: u64,
    time: u64,
    media_id: &str,
    (width, height, method, animated): ThumbSize,
    sha_n: u8,
    bytes: u64,
    ds_id: &str,
    loc: BlobLocation,
) -> Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::ThumbnailGeneratedV1(ThumbnailGenerated {
            media: media(media_id),
            width,
            height,
            method,
            animated,
            sha256: sha(sha_n),
            size_bytes: bytes,
            content_type: "image/png".parse().unwrap(),
            datastore: ds(ds_id),
            location: loc,
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
