//! The abstract steps of a plan ([`Op`]) and their proptest strategies ([`op`], [`ops`]).
//!
//! The steps are uploads of random media ids whose digests come from a small pool (so
//! deduplication happens) across two datastores, async reservations (some filled later by
//! their owner, some left to expire) and accesses of existing media; transfers between the two
//! datastores (an admin starts one, blobs that sit in its source move to its target, and the
//! task records source deletions, failed attempts and its end); thumbnails of uploaded media
//! at a few sizes, whose bytes come from the media pool (equal to some media's content) or
//! from a small pool of their own (shared between thumbnails); remote media of other servers
//! ([`REMOTE_ORIGINS`]) cached with bytes of the media pool, so they share blobs with local
//! media; and moderators (a repository admin, or a homeserver admin within its origin) who
//! quarantine media, lift quarantines, pin and unpin media, and purge (one media, a user's,
//! every quarantined one, remote media whose bytes no local media uses, or a random set; an
//! uploader purges its own), with the deleter recording each freed blob and purged remote
//! media fetched again. Picks are indices taken modulo what exists when the step is resolved
//! ([`Plan::new`](crate::Plan::new)).

use crate::{DATASTORES, ORIGINS, REMOTE_ORIGINS, SHA_POOL, THUMB_POOL, THUMB_SIZES, USERS};
use proptest::prelude::*;

/// One abstract step; [`Plan::new`](crate::Plan::new) turns it into a command that is valid where it stands.
#[derive(Debug, Clone)]
pub enum Op {
    /// A plain upload of a new media id.
    Upload {
        /// Index into [`ORIGINS`].
        origin: usize,
        /// The wanted media id (made unique if taken).
        media_id: String,
        /// Index into the digest pool.
        sha: usize,
        /// Index into [`DATASTORES`] (ignored when the digest is already stored).
        datastore: usize,
        /// Index into [`USERS`].
        user: usize,
        /// Whether a content type is declared.
        content_type: bool,
        /// Whether a file name is given.
        upload_name: bool,
    },
    /// A reservation for an asynchronous upload.
    CreateAsync {
        /// Index into [`ORIGINS`].
        origin: usize,
        /// The wanted media id (made unique if taken).
        media_id: String,
        /// Index into [`USERS`].
        owner: usize,
        /// Reserve with an expiry in the past (the reservation is never filled).
        expired: bool,
    },
    /// The owner fills one of the open reservations (skipped when there is none).
    CompleteAsync {
        /// Which open reservation (modulo their number).
        pick: usize,
        /// Index into the digest pool.
        sha: usize,
        /// Index into [`DATASTORES`].
        datastore: usize,
    },
    /// A download of an existing media (skipped when there is none).
    Access {
        /// Which uploaded media (modulo their number).
        pick: usize,
        /// Who downloads it: a user, the admin or the server.
        actor: usize,
    },
    /// The admin starts a transfer from one datastore to the other.
    StartTransfer {
        /// Index into [`DATASTORES`] of the source; the target is the other one.
        source: usize,
        /// Whether a `before_ts` is given.
        before_ts: bool,
    },
    /// An open transfer moves one of the blobs in its source (skipped when no transfer is
    /// open or its source holds nothing).
    MoveBlob {
        /// Which open transfer (modulo their number).
        task: usize,
        /// Which blob of the source (modulo their number).
        pick: usize,
    },
    /// An open transfer deletes the old copy of a blob it moved (skipped when none is
    /// pending).
    SourceDeleted {
        /// Which open transfer (modulo their number).
        task: usize,
        /// Which pending deletion (modulo their number).
        pick: usize,
    },
    /// An attempt of an open transfer to move a blob fails.
    TransferFailed {
        /// Which open transfer (modulo their number).
        task: usize,
        /// Index into the digest pool.
        sha: usize,
        /// Whether the transfer gives up on the blob.
        final_attempt: bool,
    },
    /// An open transfer ends.
    FinishTransfer {
        /// Which open transfer (modulo their number).
        task: usize,
        /// Whether it ends with an error message.
        error: bool,
    },
    /// A thumbnail of an uploaded media is recorded (skipped when there is no media, or
    /// when that thumbnail exists already).
    Thumbnail {
        /// Which uploaded media (modulo their number).
        pick: usize,
        /// Index into [`THUMB_SIZES`].
        size: usize,
        /// Index into the digest pool, `0..SHA_POOL + THUMB_POOL`: below `SHA_POOL` the bytes
        /// equal some media's content.
        sha: usize,
        /// Index into [`DATASTORES`] (ignored when the digest is already stored).
        datastore: usize,
        /// Who asked for it: a user, or the server for an anonymous request.
        actor: usize,
    },
    /// A remote media is fetched over federation and cached.
    CacheRemote {
        /// Index into [`REMOTE_ORIGINS`].
        origin: usize,
        /// The remote's media id (made unique if already cached).
        media_id: String,
        /// Index into the digest pool (of media contents, so that local media share them).
        sha: usize,
        /// Index into [`DATASTORES`] (ignored when the digest is already stored).
        datastore: usize,
        /// Who asked for it: a user, or the server for an anonymous request.
        actor: usize,
        /// Whether the remote declared a content type.
        content_type: bool,
        /// Whether the remote gave a file name.
        upload_name: bool,
    },
    /// A moderator quarantines the picked media and, as the writer decides, every media in
    /// its scope with the same bytes (skipped when there is no media or nothing would change).
    Quarantine {
        /// Which media (modulo their number, tombstones included): the request's seeds.
        picks: Vec<usize>,
        /// 0: a repository admin; `1..=ORIGINS.len()`: the admin of that homeserver.
        scope: usize,
    },
    /// A moderator lifts the quarantine of one media whose flag or bytes are quarantined
    /// (skipped when there is none, when a homeserver admin meets a repository-wide block,
    /// when the media is outside the admin's origin or when nothing would change).
    Unquarantine {
        /// Which of those media (modulo their number).
        pick: usize,
        /// As for [`Op::Quarantine`].
        scope: usize,
    },
    /// A moderator pins or unpins a media that is not a tombstone (a homeserver admin only
    /// its own origin's; a repository admin acts for another origin's).
    SetAttributes {
        /// Which media (modulo their number).
        pick: usize,
        /// Pinned, or back to no purpose.
        pinned: bool,
        /// As for [`Op::Quarantine`].
        scope: usize,
    },
    /// A purge; the media it removes (or tombstones), their thumbnails and the blobs it frees
    /// are what the writer decides (skipped when it would remove nothing).
    Purge {
        /// 0: one media; 1: a user's media; 2: every quarantined media; 3: remote media whose
        /// bytes no local media uses (repository admin only); 4: some media (`purge/old`).
        kind: usize,
        /// Which media or user (modulo their number).
        picks: Vec<usize>,
        /// As for [`Op::Quarantine`]; above `ORIGINS.len()`: the uploader of one local media
        /// (a repository admin for the other kinds).
        scope: usize,
    },
    /// The deleter deals with a blob a purge freed (skipped when none is pending): it keeps
    /// the bytes when a new upload of them refers to the same blob again.
    DeleteBlob {
        /// Which pending deletion (modulo their number).
        pick: usize,
    },
    /// A remote media purged (not a tombstone) is fetched again under its id (skipped when
    /// there is none, or when its bytes are blocked everywhere).
    Refetch {
        /// Which purged remote media (modulo their number).
        pick: usize,
        /// Index into [`DATASTORES`] (ignored when the digest is already stored).
        datastore: usize,
        /// Who asked for it: a user, or the server for an anonymous request.
        actor: usize,
    },
}

fn media_id_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,10}"
}

/// One abstract step.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0..ORIGINS.len(),
            media_id_strategy(),
            0..SHA_POOL,
            0..DATASTORES.len(),
            0..USERS.len(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(origin, media_id, sha, datastore, user, content_type, upload_name)| {
                Op::Upload { origin, media_id, sha, datastore, user, content_type, upload_name }
            }),
        2 => (0..ORIGINS.len(), media_id_strategy(), 0..USERS.len(), proptest::bool::weighted(0.2))
            .prop_map(|(origin, media_id, owner, expired)| Op::CreateAsync { origin, media_id, owner, expired }),
        2 => (any::<usize>(), 0..SHA_POOL, 0..DATASTORES.len())
            .prop_map(|(pick, sha, datastore)| Op::CompleteAsync { pick, sha, datastore }),
        3 => (any::<usize>(), 0..USERS.len() + 2).prop_map(|(pick, actor)| Op::Access { pick, actor }),
        1 => (0..DATASTORES.len(), any::<bool>())
            .prop_map(|(source, before_ts)| Op::StartTransfer { source, before_ts }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(task, pick)| Op::MoveBlob { task, pick }),
        2 => (any::<usize>(), any::<usize>())
            .prop_map(|(task, pick)| Op::SourceDeleted { task, pick }),
        1 => (any::<usize>(), 0..SHA_POOL, proptest::bool::weighted(0.3))
            .prop_map(|(task, sha, final_attempt)| Op::TransferFailed { task, sha, final_attempt }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(task, error)| Op::FinishTransfer { task, error }),
        2 => (
            any::<usize>(),
            0..THUMB_SIZES.len(),
            0..SHA_POOL + THUMB_POOL,
            0..DATASTORES.len(),
            0..=USERS.len(),
        )
            .prop_map(|(pick, size, sha, datastore, actor)| {
                Op::Thumbnail { pick, size, sha, datastore, actor }
            }),
        2 => (
            0..REMOTE_ORIGINS.len(),
            media_id_strategy(),
            0..SHA_POOL,
            0..DATASTORES.len(),
            0..=USERS.len(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(origin, media_id, sha, datastore, actor, content_type, upload_name)| {
                Op::CacheRemote { origin, media_id, sha, datastore, actor, content_type, upload_name }
            }),
        1 => (proptest::collection::vec(any::<usize>(), 1..=3), 0..=ORIGINS.len())
            .prop_map(|(picks, scope)| Op::Quarantine { picks, scope }),
        1 => (any::<usize>(), 0..=ORIGINS.len())
            .prop_map(|(pick, scope)| Op::Unquarantine { pick, scope }),
        1 => (any::<usize>(), any::<bool>(), 0..=ORIGINS.len())
            .prop_map(|(pick, pinned, scope)| Op::SetAttributes { pick, pinned, scope }),
        2 => (0..5usize, proptest::collection::vec(any::<usize>(), 1..=3), 0..=ORIGINS.len() + 1)
            .prop_map(|(kind, picks, scope)| Op::Purge { kind, picks, scope }),
        1 => any::<usize>().prop_map(|pick| Op::DeleteBlob { pick }),
        1 => (any::<usize>(), 0..DATASTORES.len(), 0..=USERS.len())
            .prop_map(|(pick, datastore, actor)| Op::Refetch { pick, datastore, actor }),
    ]
}

/// Between 1 and `max_len` abstract steps.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=max_len.max(1))
}
