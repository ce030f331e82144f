//! Helpers of the replay and recovery tests.
//!
//! - [`ops`] generates abstract steps and [`Plan::new`] resolves them against a small model of
//!   the ledger into commands that the writer accepts: uploads of random media ids whose
//!   digests come from a small pool (so deduplication happens) across two datastores, async
//!   reservations (some filled later by their owner, some left to expire) and accesses of
//!   existing media. Each step also carries the event the writer is expected to record (with
//!   the blob location of the first upload of a digest), so a plan can be submitted to a real
//!   [`Ledger`] or written as raw envelopes. Transfers between the two datastores run through
//!   the same plans: an admin starts one (its task id is the sequence the step gets), blobs
//!   that sit in its source move to its target (from where the model has them, as the writer
//!   demands; the ledger never touches a real datastore, so locations are only names), and
//!   the task records source deletions, failed attempts and its end. Thumbnails of uploaded
//!   media are recorded at a few sizes; their bytes come from the media pool (equal to some
//!   media's content) or from a small pool of their own (shared between thumbnails), and, like
//!   an upload, a thumbnail of bytes already stored is expected at that blob's place. A
//!   thumbnail already recorded is never generated again (the writer would refuse it).
//!   Remote media of other servers ([`REMOTE_ORIGINS`]) are cached with bytes of the media
//!   pool, so they share blobs with local media; like an upload, a remote of bytes already
//!   stored is expected at that blob's place. Once cached they are accessed and thumbnailed
//!   like local media.
//!   Moderators (a repository admin, or a homeserver admin within its origin) quarantine
//!   media, lift quarantines, pin and unpin media, and purge (one media, a user's, every
//!   quarantined one, remote media whose bytes no local media uses, or a random set; an
//!   uploader purges its own). The model decides each act exactly as the writer does
//!   (`src/ledger/validate_moderation.rs`): the same-hash media in scope a quarantine flags,
//!   pinned media spared, quarantined media purged into tombstones, the thumbnails removed
//!   with their media and the blobs freed when their last media or thumbnail reference goes;
//!   an act that would change nothing is skipped (the writer would refuse it). The deleter
//!   then records each freed blob (kept when a new upload refers to the same blob again),
//!   purged remote media are fetched again under their id, and no upload or fetch of bytes
//!   blocked in its origin is generated, nor an access or thumbnail of a quarantined media.
//! - [`submit_all`] submits steps to a ledger (in groups, so group commit and the writer's
//!   overlay are exercised) on a runtime of its own.
//! - [`state_of`], [`replay`] and [`snapshot`] read, recompute and render projection state.

use media_ledger::ledger::{Command, Committed, Ledger, LedgerError, PurgeRequest};
use media_ledger_events::{
    codec, Actor, AsyncUploadCreated, Authority, BlobDeleted, BlobLocation, BlobMoved,
    BlobSourceDeleted, BlobTransferFailed, ContentType, DatastoreId, Envelope, Event, FreedBlob,
    MediaAccessed, MediaAttributesSet, MediaId, MediaPurged, MediaPurpose, MediaQuarantined,
    MediaRef, MediaUnquarantined, MediaUploaded, ModerationTarget, PurgedMedia, PurgedThumbnail,
    RemoteMediaCached, RequestId, Seq, ServerName, Sha256, ThumbnailGenerated, ThumbnailMethod,
    TransferFinished, TransferStarted, UserId,
};
use media_ledger_projections::datastore_sizes::{self, HashCount};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{
    hash_refs, media_index, moderation, parse_media_key, pending_uploads, tasks, thumbnails,
    ProjectionError, ALL,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Any error of these helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Origins media are uploaded to.
pub const ORIGINS: [&str; 2] = ["localhost", "example.org:8448"];
/// Origins of other servers whose media are cached here.
pub const REMOTE_ORIGINS: [&str; 2] = ["remote.example", "matrix.remote.example:8448"];
/// Datastore ids uploads are written to.
pub const DATASTORES: [&str; 2] = ["ds-alpha", "ds-beta"];
/// Users who upload, reserve and download.
pub const USERS: [&str; 3] = ["@alice:localhost", "@bob:localhost", "@carol:example.org"];
/// How many distinct contents there are; small, so that digests repeat.
pub const SHA_POOL: usize = 5;
/// How many contents only thumbnails have: pool entries `SHA_POOL..SHA_POOL + THUMB_POOL`.
pub const THUMB_POOL: usize = 3;
/// The sizes thumbnails are generated at: width, height, method, animated.
pub const THUMB_SIZES: [(u32, u32, ThumbnailMethod, bool); 4] = [
    (32, 32, ThumbnailMethod::Crop, false),
    (96, 96, ThumbnailMethod::Crop, false),
    (320, 240, ThumbnailMethod::Scale, false),
    (320, 240, ThumbnailMethod::Scale, true),
];
/// Expiry of reservations that are meant to be filled (2100-01-01).
pub const FAR_FUTURE_MS: u64 = 4_102_444_800_000;
/// Time of the first envelope of [`Plan::envelopes`] (2023-11-14).
pub const PLAN_START_MS: u64 = 1_700_000_000_000;
/// Time between two envelopes of [`Plan::envelopes`].
pub const PLAN_STEP_MS: u64 = 1_000;

/// One abstract step; [`Plan::new`] turns it into a command that is valid where it stands.
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

/// Digest number `i` of the pool.
pub fn pool_sha(i: usize) -> Sha256 {
    let seed = u8::try_from(i % 256).unwrap_or(0);
    Sha256(std::array::from_fn(|j| {
        seed.wrapping_mul(0x3b)
            .wrapping_add(0x11)
            .wrapping_add(u8::try_from(j).unwrap_or(0).wrapping_mul(7))
    }))
}

/// Length of content number `i` (distinct per digest, so double counting shows in totals).
pub fn pool_size(i: usize) -> u64 {
    let i = u64::try_from(i).unwrap_or(0);
    1_000 * (i + 1) + i
}

/// The blob location a datastore would give content `sha`: `ab/cd/<hex>`.
pub fn location_of(sha: &Sha256) -> Result<BlobLocation, BoxError> {
    let hex = sha.to_hex();
    let (a, rest) = hex.split_at(2);
    let b = rest.get(..2).unwrap_or_default();
    Ok(format!("{a}/{b}/{hex}").parse()?)
}

/// A command with its author and the event the writer should turn it into.
#[derive(Debug, Clone)]
pub struct Step {
    /// Who submits it.
    pub actor: Actor,
    /// Its request id.
    pub request_id: RequestId,
    /// The command.
    pub command: Command,
    /// The event the writer records for it.
    pub expected: Event,
}

impl Step {
    /// The command's event as the writer should record it at `seq` and `time`.
    pub fn envelope(&self, seq: Seq, recorded_at_ms: u64) -> Envelope {
        Envelope {
            seq,
            recorded_at_ms,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            event: self.expected.clone(),
        }
    }
}

/// A sequence of commands that is valid when submitted in order to an empty ledger.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The commands, in order.
    pub steps: Vec<Step>,
}

/// An unfinished transfer of the model.
struct OpenTask {
    source: DatastoreId,
    target: DatastoreId,
    /// Blobs moved whose old copy is not deleted yet: where that copy is.
    pending: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
    /// Failed attempts per blob.
    attempts: BTreeMap<Sha256, u32>,
}

/// A media as the index holds it: what the writer's moderation decisions read.
#[derive(Debug, Clone)]
struct Known {
    sha: Sha256,
    uploader: Actor,
    remote: bool,
    created_seq: Seq,
    quarantined: bool,
    pinned: bool,
    tombstone: bool,
}

/// The scopes in which a digest is blocked (never empty in [`Model::blocks`]).
#[derive(Debug, Clone, Default)]
struct Block {
    repository: bool,
    homeservers: Vec<ServerName>,
}

impl Block {
    fn blocks(&self, origin: &ServerName) -> bool {
        self.repository || self.homeservers.contains(origin)
    }
    fn is_empty(&self) -> bool {
        !self.repository && self.homeservers.is_empty()
    }
}

#[derive(Default)]
struct Model {
    taken: BTreeSet<MediaRef>,
    /// Media in creation order (accesses and thumbnails pick among the servable ones).
    uploaded: Vec<(MediaRef, Sha256)>,
    open: Vec<(MediaRef, UserId)>,
    /// Where each stored digest is now (moves included).
    blobs: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
    /// Unfinished transfers by task id.
    tasks: BTreeMap<Seq, OpenTask>,
    /// Recorded thumbnails (media and index into [`THUMB_SIZES`]) and their digest.
    thumbnails: BTreeMap<(MediaRef, usize), Sha256>,
    /// Every media record, tombstones included.
    media: BTreeMap<MediaRef, Known>,
    /// The media of each digest in the index's order (creation; tombstones stay).
    by_hash: BTreeMap<Sha256, Vec<MediaRef>>,
    /// Blocked digests.
    blocks: BTreeMap<Sha256, Block>,
    /// Blobs freed by a purge (its sequence) whose deletion is not recorded yet.
    pending: Vec<(Seq, FreedBlob)>,
    /// Remote media purged (not tombstoned): they may be fetched again.
    purged_remote: Vec<(MediaRef, Sha256)>,
}

impl Model {
    /// The id of the `pick`-th unfinished transfer, if any.
    fn open_task(&self, pick: usize) -> Option<Seq> {
        self.tasks
            .keys()
            .nth(pick % self.tasks.len().max(1))
            .copied()
    }

    /// A new media record (upload or cache) at sequence `seq`.
    fn add_media(
        &mut self,
        media: &MediaRef,
        sha: Sha256,
        uploader: Actor,
        remote: bool,
        seq: Seq,
    ) {
        self.media.insert(
            media.clone(),
            Known {
                sha,
                uploader,
                remote,
                created_seq: seq,
                quarantined: false,
                pinned: false,
                tombstone: false,
            },
        );
        self.by_hash.entry(sha).or_default().push(media.clone());
        self.uploaded.push((media.clone(), sha));
    }

    /// Whether new media of `origin` with bytes `sha` is refused.
    fn blocked(&self, sha: &Sha256, origin: &ServerName) -> bool {
        self.blocks.get(sha).is_some_and(|b| b.blocks(origin))
    }

    /// The media that can be downloaded and thumbnailed, in creation order.
    fn servable(&self) -> Vec<(MediaRef, Sha256)> {
        self.uploaded
            .iter()
            .filter(|(m, _)| {
                self.media
                    .get(m)
                    .is_some_and(|k| !k.quarantined && !k.tombstone)
            })
            .cloned()
            .collect()
    }

    /// `ref_count` of the digest's hash record: live media and thumbnails with these bytes.
    fn ref_count(&self, sha: &Sha256) -> u64 {
        let media = self
            .media
            .values()
            .filter(|k| k.sha == *sha && !k.tombstone)
            .count();
        let thumbs = self.thumbnails.values().filter(|t| *t == sha).count();
        u64::try_from(media + thumbs).unwrap_or(u64::MAX)
    }

    /// The `pick`-th media record (tombstones included), if any.
    fn pick_media(&self, pick: usize, keep: impl Fn(&Known) -> bool) -> Option<MediaRef> {
        let list: Vec<&MediaRef> = self
            .media
            .iter()
            .filter(|(_, k)| keep(k))
            .map(|(m, _)| m)
            .collect();
        list.get(pick % list.len().max(1)).map(|m| (*m).clone())
    }

    /// The digests stored in `ds`, in order, with their location.
    fn blobs_in(&self, ds: &DatastoreId) -> Vec<(Sha256, BlobLocation)> {
        self.blobs
            .iter()
            .filter(|(_, (d, _))| d == ds)
            .map(|(sha, (_, loc))| (*sha, loc.clone()))
            .collect()
    }

    fn fresh(&mut self, origin: usize, wanted: &str, step: usize) -> Result<MediaRef, BoxError> {
        let origin = ORIGINS.get(origin).copied().unwrap_or("localhost");
        self.fresh_on(origin, wanted, step)
    }

    fn fresh_on(&mut self, origin: &str, wanted: &str, step: usize) -> Result<MediaRef, BoxError> {
        let origin: ServerName = origin.parse()?;
        let mut id = wanted.to_owned();
        loop {
            let media = MediaRef::new(origin.clone(), id.parse::<MediaId>()?);
            if self.taken.insert(media.clone()) {
                return Ok(media);
            }
            id = format!("{id}-{step}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn upload(
        &mut self,
        seq: Seq,
        media: MediaRef,
        sha_index: usize,
        datastore: usize,
        uploader: Actor,
        content_type: Option<ContentType>,
        upload_name: Option<String>,
    ) -> Result<(MediaUploaded, MediaUploaded), BoxError> {
        let sha = pool_sha(sha_index);
        let datastore: DatastoreId = DATASTORES
            .get(datastore)
            .copied()
            .unwrap_or("ds-alpha")
            .parse()?;
        let submitted = MediaUploaded {
            media: media.clone(),
            sha256: sha,
            size_bytes: pool_size(sha_index),
            content_type,
            upload_name,
            uploader,
            datastore: datastore.clone(),
            location: location_of(&sha)?,
        };
        let (ds, loc) = self
            .blobs
            .entry(sha)
            .or_insert_with(|| (datastore, submitted.location.clone()))
            .clone();
        let recorded = MediaUploaded {
            datastore: ds,
            location: loc,
            ..submitted.clone()
        };
        self.add_media(&media, sha, submitted.uploader.clone(), false, seq);
        Ok((submitted, recorded))
    }
}

fn datastore(i: usize) -> Result<DatastoreId, BoxError> {
    Ok(DATASTORES
        .get(i % DATASTORES.len())
        .copied()
        .unwrap_or("ds-alpha")
        .parse()?)
}

/// The size of a digest of the pool (media and thumbnail contents alike).
fn size_of_sha(sha: &Sha256) -> u64 {
    (0..SHA_POOL + THUMB_POOL)
        .find(|&i| pool_sha(i) == *sha)
        .map_or(0, pool_size)
}

fn user(i: usize) -> Result<UserId, BoxError> {
    Ok(USERS
        .get(i % USERS.len())
        .copied()
        .unwrap_or("@alice:localhost")
        .parse()?)
}

fn content_type(i: usize) -> Result<ContentType, BoxError> {
    const TYPES: [&str; 3] = ["image/png", "video/mp4", "text/plain; charset=utf-8"];
    Ok(TYPES
        .get(i % TYPES.len())
        .copied()
        .unwrap_or("image/png")
        .parse()?)
}

/// The capacity of scope `scope`: 0 a repository admin, `1..=ORIGINS.len()` the admin of
/// that homeserver, `None` above (an uploader).
fn authority(scope: usize) -> Result<Option<Authority>, BoxError> {
    Ok(match scope.checked_sub(1) {
        None => Some(Authority::RepositoryAdmin),
        Some(i) => match ORIGINS.get(i) {
            Some(o) => Some(Authority::HomeserverAdmin(o.parse()?)),
            None => None,
        },
    })
}

/// Who acts in a moderator's capacity: the shared secret, or `@admin:<homeserver>`.
fn moderator(authority: &Authority) -> Result<Actor, BoxError> {
    Ok(match authority {
        Authority::HomeserverAdmin(s) => Actor::User(format!("@admin:{s}").parse()?),
        Authority::RepositoryAdmin | Authority::Uploader => Actor::SharedSecretAdmin,
    })
}

/// Whether `media` is within the capacity's reach (as the writer's `in_scope`).
fn in_scope(authority: &Authority, media: &MediaRef) -> bool {
    authority.origin().is_none_or(|o| &media.origin == o)
}

impl Model {
    /// A quarantine as `validate_quarantine` decides it, applied to the model.
    fn quarantine(
        &mut self,
        i: usize,
        picks: &[usize],
        scope: usize,
        request_id: RequestId,
    ) -> Result<Option<Step>, BoxError> {
        let Some(authority) = authority(scope)? else {
            return Ok(None);
        };
        let seeds: Vec<MediaRef> = picks
            .iter()
            .filter_map(|p| self.pick_media(*p, |_| true))
            .collect();
        if seeds.is_empty() {
            return Ok(None);
        }
        let mut hashes: Vec<Sha256> = Vec::new();
        let mut changed: Vec<MediaRef> = Vec::new();
        for seed in &seeds {
            if !in_scope(&authority, seed) {
                continue;
            }
            let Some(k) = self.media.get(seed) else {
                continue;
            };
            if hashes.contains(&k.sha) {
                continue;
            }
            hashes.push(k.sha);
            for m in self.by_hash.get(&k.sha).into_iter().flatten() {
                if !in_scope(&authority, m) || changed.contains(m) {
                    continue;
                }
                if self
                    .media
                    .get(m)
                    .is_some_and(|r| !r.pinned && !r.quarantined)
                {
                    changed.push(m.clone());
                }
            }
        }
        let new_block = hashes.iter().any(|sha| {
            let b = self.blocks.get(sha);
            match &authority {
                Authority::HomeserverAdmin(s) => !b.is_some_and(|b| b.homeservers.contains(s)),
                _ => !b.is_some_and(|b| b.repository),
            }
        });
        if changed.is_empty() && !new_block {
            return Ok(None);
        }
        for m in &changed {
            if let Some(k) = self.media.get_mut(m) {
                k.quarantined = true;
            }
        }
        for sha in &hashes {
            let b = self.blocks.entry(*sha).or_default();
            match &authority {
                Authority::HomeserverAdmin(s) => {
                    if !b.homeservers.contains(s) {
                        b.homeservers.push(s.clone());
                    }
                }
                _ => b.repository = true,
            }
        }
        let target = match seeds.as_slice() {
            [one] => ModerationTarget::Media(one.clone()),
            _ => ModerationTarget::Room(format!("!room-{i}:localhost")),
        };
        let reason = Some(format!("quarantine at step {i}"));
        Ok(Some(Step {
            actor: moderator(&authority)?,
            request_id,
            command: Command::Quarantine {
                authority: authority.clone(),
                target: target.clone(),
                seeds,
                reason: reason.clone(),
            },
            expected: Event::MediaQuarantinedV1(MediaQuarantined {
                authority,
                target,
                media: changed,
                hashes,
                reason,
            }),
        }))
    }

    /// An unquarantine as `validate_unquarantine` decides it, applied to the model.
    fn unquarantine(
        &mut self,
        i: usize,
        pick: usize,
        scope: usize,
        request_id: RequestId,
    ) -> Result<Option<Step>, BoxError> {
        let Some(authority) = authority(scope)? else {
            return Ok(None);
        };
        let blocks = &self.blocks;
        let Some(media) = self.pick_media(pick, |k| k.quarantined || blocks.contains_key(&k.sha))
        else {
            return Ok(None);
        };
        let Some(sha) = self.media.get(&media).map(|k| k.sha) else {
            return Ok(None);
        };
        if !in_scope(&authority, &media) {
            return Ok(None);
        }
        let block = self.blocks.get(&sha).cloned().unwrap_or_default();
        let lifts = match &authority {
            Authority::HomeserverAdmin(s) => {
                if block.repository {
                    return Ok(None);
                }
                block.homeservers.contains(s)
            }
            _ => !block.is_empty(),
        };
        let changed: Vec<MediaRef> = self
            .by_hash
            .get(&sha)
            .into_iter()
            .flatten()
            .filter(|m| {
                in_scope(&authority, m)
                    && self
                        .media
                        .get(*m)
                        .is_some_and(|k| k.quarantined && !k.tombstone)
            })
            .cloned()
            .collect();
        if changed.is_empty() && !lifts {
            return Ok(None);
        }
        for m in &changed {
            if let Some(k) = self.media.get_mut(m) {
                k.quarantined = false;
            }
        }
        if lifts {
            let mut b = block;
            match &authority {
                Authority::HomeserverAdmin(s) => b.homeservers.retain(|h| h != s),
                _ => b = Block::default(),
            }
            if b.is_empty() {
                self.blocks.remove(&sha);
            } else {
                self.blocks.insert(sha, b);
            }
        }
        let reason = i
            .is_multiple_of(2)
            .then(|| format!("appeal granted at step {i}"));
        Ok(Some(Step {
            actor: moderator(&authority)?,
            request_id,
            command: Command::Unquarantine {
                authority: authority.clone(),
                media: media.clone(),
                reason: reason.clone(),
            },
            expected: Event::MediaUnquarantinedV1(MediaUnquarantined {
                authority,
                target: ModerationTarget::Media(media),
                media: changed,
                hashes: if lifts { vec![sha] } else { Vec::new() },
                reason,
            }),
        }))
    }

    /// A purge as `validate_purge` decides it (the writer's candidates, filters, thumbnails
    /// and freed blobs), applied to the model.
    fn purge(
        &mut self,
        i: usize,
        seq: Seq,
        kind: usize,
        picks: &[usize],
        scope: usize,
        request_id: RequestId,
    ) -> Result<Option<Step>, BoxError> {
        let first = picks.first().copied().unwrap_or(0);
        let Some(one) = self.pick_media(first, |_| true) else {
            return Ok(None);
        };
        let mut authority = authority(scope)?.unwrap_or(Authority::Uploader);
        let kind = kind % 5;
        let (target, before_ts_ms, candidates, include_quarantined, keep_shared) = match kind {
            0 => (
                ModerationTarget::Media(one.clone()),
                None,
                vec![one.clone()],
                true,
                false,
            ),
            1 => {
                let u = user(first)?;
                let who = Actor::User(u.clone());
                let mine = self
                    .media
                    .iter()
                    .filter(|(_, k)| k.uploader == who)
                    .map(|(m, _)| m.clone())
                    .collect();
                (
                    ModerationTarget::User(u),
                    Some(FAR_FUTURE_MS),
                    mine,
                    true,
                    false,
                )
            }
            2 => {
                let quarantined = self
                    .media
                    .iter()
                    .filter(|(_, k)| k.quarantined && !k.tombstone)
                    .map(|(m, _)| m.clone())
                    .collect();
                (
                    ModerationTarget::Quarantined,
                    None,
                    quarantined,
                    true,
                    false,
                )
            }
            3 => {
                authority = Authority::RepositoryAdmin;
                let remote = self
                    .media
                    .iter()
                    .filter(|(_, k)| k.remote && !k.tombstone)
                    .map(|(m, _)| m.clone())
                    .collect();
                // `before_ts` far ahead: every cached media qualifies by time, on the
                // ledger's clock as in the plan's envelopes.
                (
                    ModerationTarget::Remote,
                    Some(FAR_FUTURE_MS),
                    remote,
                    false,
                    true,
                )
            }
            _ => {
                let some = picks
                    .iter()
                    .filter_map(|p| self.pick_media(*p, |_| true))
                    .collect();
                (
                    ModerationTarget::Old {
                        include_local: first.is_multiple_of(2),
                    },
                    Some(FAR_FUTURE_MS),
                    some,
                    true,
                    false,
                )
            }
        };
        // Only one's own local media, one at a time, for an uploader.
        let uploader = match (&authority, kind, self.media.get(&one)) {
            (Authority::Uploader, 0, Some(k)) if matches!(k.uploader, Actor::User(_)) => {
                Some(k.uploader.clone())
            }
            (Authority::Uploader, _, _) => {
                authority = Authority::RepositoryAdmin;
                None
            }
            _ => None,
        };

        let mut media = Vec::new();
        let mut thumbs = Vec::new();
        let mut drops: BTreeMap<Sha256, u64> = BTreeMap::new();
        let mut seen: BTreeSet<&MediaRef> = BTreeSet::new();
        for c in &candidates {
            if !seen.insert(c) || !in_scope(&authority, c) {
                continue;
            }
            let Some(k) = self.media.get(c) else {
                continue;
            };
            // An uploader never purges quarantined bytes (evidence): only an admin does.
            let admin = authority != Authority::Uploader;
            if k.tombstone || k.pinned || (k.quarantined && !(admin && include_quarantined)) {
                continue;
            }
            if keep_shared {
                if !k.remote {
                    continue;
                }
                let shared = self.by_hash.get(&k.sha).into_iter().flatten().any(|sib| {
                    sib != c
                        && self
                            .media
                            .get(sib)
                            .is_some_and(|s| !s.tombstone && !s.remote)
                });
                if shared {
                    continue;
                }
            }
            let (ds, _) = self
                .blobs
                .get(&k.sha)
                .cloned()
                .ok_or_else(|| format!("{c} has no blob in the model"))?;
            *drops.entry(k.sha).or_default() += 1;
            media.push(PurgedMedia {
                media: c.clone(),
                sha256: k.sha,
                size_bytes: size_of_sha(&k.sha),
                uploader: k.uploader.clone(),
                remote: k.remote,
                datastore: ds,
                created_seq: k.created_seq,
                tombstone: k.quarantined,
            });
            // Their thumbnails in key order (that of THUMB_SIZES).
            for (size, &(width, height, method, animated)) in THUMB_SIZES.iter().enumerate() {
                let Some(tsha) = self.thumbnails.get(&(c.clone(), size)).copied() else {
                    continue;
                };
                let (tds, _) = self
                    .blobs
                    .get(&tsha)
                    .cloned()
                    .ok_or_else(|| format!("a thumbnail of {c} has no blob in the model"))?;
                *drops.entry(tsha).or_default() += 1;
                thumbs.push(PurgedThumbnail {
                    media: c.clone(),
                    width,
                    height,
                    method,
                    animated,
                    sha256: tsha,
                    size_bytes: size_of_sha(&tsha),
                    datastore: tds,
                });
            }
        }
        if media.is_empty() {
            return Ok(None);
        }
        let mut freed = Vec::new();
        for (sha, n) in &drops {
            if self.ref_count(sha) == *n {
                let (datastore, location) = self
                    .blobs
                    .get(sha)
                    .cloned()
                    .ok_or("a freed digest has no blob in the model")?;
                freed.push(FreedBlob {
                    sha256: *sha,
                    size_bytes: size_of_sha(sha),
                    datastore,
                    location,
                });
            }
        }

        for p in &media {
            if p.tombstone {
                if let Some(k) = self.media.get_mut(&p.media) {
                    k.tombstone = true;
                }
            } else {
                self.media.remove(&p.media);
                if let Some(list) = self.by_hash.get_mut(&p.sha256) {
                    list.retain(|m| m != &p.media);
                    if list.is_empty() {
                        self.by_hash.remove(&p.sha256);
                    }
                }
                if p.remote {
                    self.purged_remote.push((p.media.clone(), p.sha256));
                }
            }
            self.uploaded.retain(|(m, _)| m != &p.media);
            for size in 0..THUMB_SIZES.len() {
                self.thumbnails.remove(&(p.media.clone(), size));
            }
        }
        for f in &freed {
            self.blobs.remove(&f.sha256);
            self.pending.push((seq, f.clone()));
        }

        let actor = match &uploader {
            Some(u) => u.clone(),
            None => moderator(&authority)?,
        };
        let reason = (!i.is_multiple_of(3)).then(|| format!("purge at step {i}"));
        Ok(Some(Step {
            actor,
            request_id,
            command: Command::Purge(PurgeRequest {
                authority: authority.clone(),
                uploader,
                target: target.clone(),
                before_ts_ms,
                candidates,
                include_quarantined,
                keep_shared,
                reason: reason.clone(),
            }),
            expected: Event::MediaPurgedV1(MediaPurged {
                authority,
                target,
                before_ts_ms,
                media,
                thumbnails: thumbs,
                freed,
                reason,
            }),
        }))
    }
}

impl Plan {
    /// Resolves abstract steps in order, skipping those that have no valid form (an access
    /// or a thumbnail before any upload, a thumbnail already recorded, a completion without
    /// an open reservation, transfer progress without an open transfer, an upload or fetch
    /// of blocked bytes, a moderation act that would change nothing, a deletion with none
    /// pending). A transfer's task id, and the purge a deletion names, are the sequence the
    /// start (the purge) gets when the plan is submitted to an empty ledger.
    pub fn new(ops: &[Op]) -> Result<Self, BoxError> {
        let mut model = Model::default();
        let mut steps = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let request_id = RequestId(format!("req-{i:03}"));
            let seq = Seq(u64::try_from(steps.len())? + 1);
            let step = match op {
                Op::Upload {
                    origin,
                    media_id,
                    sha,
                    datastore,
                    user: u,
                    content_type: ct,
                    upload_name,
                } => {
                    let on: ServerName = ORIGINS
                        .get(*origin)
                        .copied()
                        .unwrap_or("localhost")
                        .parse()?;
                    if model.blocked(&pool_sha(*sha), &on) {
                        continue;
                    }
                    let media = model.fresh(*origin, media_id, i)?;
                    let actor = Actor::User(user(*u)?);
                    let ct = if *ct { Some(content_type(*sha)?) } else { None };
                    let name = upload_name.then(|| format!("file-{i}.bin"));
                    let (event, recorded) =
                        model.upload(seq, media, *sha, *datastore, actor.clone(), ct, name)?;
                    Step {
                        actor,
                        request_id,
                        command: Command::Upload {
                            event,
                            completes_async: None,
                        },
                        expected: Event::MediaUploadedV1(recorded),
                    }
                }
                Op::CreateAsync {
                    origin,
                    media_id,
                    owner,
                    expired,
                } => {
                    let media = model.fresh(*origin, media_id, i)?;
                    let owner = user(*owner)?;
                    let expires_at_ms = if *expired { 1 } else { FAR_FUTURE_MS };
                    if !*expired {
                        model.open.push((media.clone(), owner.clone()));
                    }
                    let event = AsyncUploadCreated {
                        media,
                        owner: owner.clone(),
                        expires_at_ms,
                    };
                    Step {
                        actor: Actor::User(owner),
                        request_id,
                        command: Command::CreateAsync(event.clone()),
                        expected: Event::AsyncUploadCreatedV1(event),
                    }
                }
                Op::CompleteAsync {
                    pick,
                    sha,
                    datastore,
                } => {
                    if model.open.is_empty() {
                        continue;
                    }
                    let at = pick % model.open.len();
                    if model
                        .open
                        .get(at)
                        .is_some_and(|(m, _)| model.blocked(&pool_sha(*sha), &m.origin))
                    {
                        continue;
                    }
                    let (media, owner) = model.open.remove(at);
                    let actor = Actor::User(owner.clone());
                    let (event, recorded) = model.upload(
                        seq,
                        media,
                        *sha,
                        *datastore,
                        actor.clone(),
                        Some(content_type(*sha)?),
                        None,
                    )?;
                    Step {
                        actor,
                        request_id,
                        command: Command::Upload {
                            event,
                            completes_async: Some(owner),
                        },
                        expected: Event::MediaUploadedV1(recorded),
                    }
                }
                Op::Access { pick, actor } => {
                    let servable = model.servable();
                    let Some((media, sha)) = servable.get(pick % servable.len().max(1)).cloned()
                    else {
                        continue;
                    };
                    let actor = match actor.checked_sub(USERS.len()) {
                        None => Actor::User(user(*actor)?),
                        Some(0) => Actor::SharedSecretAdmin,
                        Some(_) => Actor::System,
                    };
                    let event = MediaAccessed { media, sha256: sha };
                    Step {
                        actor,
                        request_id,
                        command: Command::Access(event.clone()),
                        expected: Event::MediaAccessedV1(event),
                    }
                }
                Op::StartTransfer { source, before_ts } => {
                    // The writer runs one transfer at a time between two datastores (blob
                    // locations are content-addressed); with two datastores, any open task
                    // overlaps a new one.
                    if !model.tasks.is_empty() {
                        continue;
                    }
                    let source_ds = datastore(*source)?;
                    let target = datastore(*source + 1)?;
                    let selected = model.blobs_in(&source_ds);
                    let event = TransferStarted {
                        source: source_ds.clone(),
                        target: target.clone(),
                        before_ts_ms: before_ts.then_some(FAR_FUTURE_MS),
                        blobs_total: u64::try_from(selected.len())?,
                        bytes_total: selected.iter().map(|(sha, _)| size_of_sha(sha)).sum(),
                    };
                    model.tasks.insert(
                        seq,
                        OpenTask {
                            source: source_ds,
                            target,
                            pending: BTreeMap::new(),
                            attempts: BTreeMap::new(),
                        },
                    );
                    Step {
                        actor: Actor::SharedSecretAdmin,
                        request_id,
                        command: Command::StartTransfer(event.clone()),
                        expected: Event::TransferStartedV1(event),
                    }
                }
                Op::MoveBlob { task, pick } => {
                    let Some(task) = model.open_task(*task) else {
                        continue;
                    };
                    let Some(t) = model.tasks.get(&task) else {
                        continue;
                    };
                    let in_source = model.blobs_in(&t.source);
                    let Some((sha, from_location)) =
                        in_source.get(pick % in_source.len().max(1)).cloned()
                    else {
                        continue;
                    };
                    let event = BlobMoved {
                        task,
                        sha256: sha,
                        size_bytes: size_of_sha(&sha),
                        from_datastore: t.source.clone(),
                        from_location: from_location.clone(),
                        to_datastore: t.target.clone(),
                        to_location: location_of(&sha)?,
                    };
                    model
                        .blobs
                        .insert(sha, (event.to_datastore.clone(), event.to_location.clone()));
                    if let Some(t) = model.tasks.get_mut(&task) {
                        t.pending
                            .insert(sha, (event.from_datastore.clone(), from_location));
                    }
                    Step {
                        actor: Actor::System,
                        request_id,
                        command: Command::MoveBlob(event.clone()),
                        expected: Event::BlobMovedV1(event),
                    }
                }
                Op::SourceDeleted { task, pick } => {
                    let Some(task) = model.open_task(*task) else {
                        continue;
                    };
                    let Some(t) = model.tasks.get_mut(&task) else {
                        continue;
                    };
                    let Some(sha) = t.pending.keys().nth(pick % t.pending.len().max(1)).copied()
                    else {
                        continue;
                    };
                    let Some((datastore, location)) = t.pending.remove(&sha) else {
                        continue;
                    };
                    let event = Event::BlobSourceDeletedV1(BlobSourceDeleted {
                        task,
                        sha256: sha,
                        datastore,
                        location,
                    });
                    Step {
                        actor: Actor::System,
                        request_id,
                        command: Command::TaskProgress(event.clone()),
                        expected: event,
                    }
                }
                Op::TransferFailed {
                    task,
                    sha,
                    final_attempt,
                } => {
                    let Some(task) = model.open_task(*task) else {
                        continue;
                    };
                    let Some(t) = model.tasks.get_mut(&task) else {
                        continue;
                    };
                    let sha = pool_sha(*sha);
                    let attempt = t.attempts.entry(sha).or_insert(0);
                    *attempt += 1;
                    let event = Event::BlobTransferFailedV1(BlobTransferFailed {
                        task,
                        sha256: sha,
                        attempt: *attempt,
                        final_attempt: *final_attempt,
                        error: format!("attempt {attempt} at step {i} failed"),
                    });
                    Step {
                        actor: Actor::System,
                        request_id,
                        command: Command::TaskProgress(event.clone()),
                        expected: event,
                    }
                }
                Op::Thumbnail {
                    pick,
                    size,
                    sha,
                    datastore: d,
                    actor,
                } => {
                    let servable = model.servable();
                    let Some((media, _)) = servable.get(pick % servable.len().max(1)).cloned()
                    else {
                        continue;
                    };
                    let size = size % THUMB_SIZES.len();
                    let (width, height, method, animated) = THUMB_SIZES[size];
                    let sha_index = sha % (SHA_POOL + THUMB_POOL);
                    let sha = pool_sha(sha_index);
                    if model.thumbnails.contains_key(&(media.clone(), size)) {
                        continue;
                    }
                    model.thumbnails.insert((media.clone(), size), sha);
                    let submitted = ThumbnailGenerated {
                        media: media.clone(),
                        width,
                        height,
                        method,
                        animated,
                        sha256: sha,
                        size_bytes: pool_size(sha_index),
                        content_type: if method == ThumbnailMethod::Crop {
                            "image/png".parse()?
                        } else {
                            "image/jpeg".parse()?
                        },
                        datastore: datastore(*d)?,
                        location: location_of(&sha)?,
                    };
                    let (ds, loc) = model
                        .blobs
                        .entry(sha)
                        .or_insert_with(|| {
                            (submitted.datastore.clone(), submitted.location.clone())
                        })
                        .clone();
                    let recorded = ThumbnailGenerated {
                        datastore: ds,
                        location: loc,
                        ..submitted.clone()
                    };
                    let actor = match actor.checked_sub(USERS.len()) {
                        None => Actor::User(user(*actor)?),
                        Some(_) => Actor::System,
                    };
                    Step {
                        actor,
                        request_id: RequestId(format!("thumb-{}", media.media_id)),
                        command: Command::RecordThumbnail(submitted),
                        expected: Event::ThumbnailGeneratedV1(recorded),
                    }
                }
                Op::CacheRemote {
                    origin,
                    media_id,
                    sha,
                    datastore: d,
                    actor,
                    content_type: ct,
                    upload_name,
                } => {
                    let origin = REMOTE_ORIGINS
                        .get(origin % REMOTE_ORIGINS.len())
                        .copied()
                        .unwrap_or("remote.example");
                    let sha_index = sha % SHA_POOL;
                    let sha = pool_sha(sha_index);
                    if model.blocked(&sha, &origin.parse()?) {
                        continue;
                    }
                    let media = model.fresh_on(origin, media_id, i)?;
                    let submitted = RemoteMediaCached {
                        media: media.clone(),
                        sha256: sha,
                        size_bytes: pool_size(sha_index),
                        content_type: if *ct {
                            Some(content_type(sha_index)?)
                        } else {
                            None
                        },
                        upload_name: upload_name.then(|| format!("remote-{i}.bin")),
                        fetched_from: format!("https://{}", media.origin),
                        datastore: datastore(*d)?,
                        location: location_of(&sha)?,
                    };
                    let (ds, loc) = model
                        .blobs
                        .entry(sha)
                        .or_insert_with(|| {
                            (submitted.datastore.clone(), submitted.location.clone())
                        })
                        .clone();
                    let recorded = RemoteMediaCached {
                        datastore: ds,
                        location: loc,
                        ..submitted.clone()
                    };
                    model.add_media(&media, sha, Actor::System, true, seq);
                    let actor = match actor.checked_sub(USERS.len()) {
                        None => Actor::User(user(*actor)?),
                        Some(_) => Actor::System,
                    };
                    Step {
                        actor,
                        request_id: RequestId(format!("remote-{i:03}")),
                        command: Command::CacheRemote(submitted),
                        expected: Event::RemoteMediaCachedV1(recorded),
                    }
                }
                Op::Quarantine { picks, scope } => {
                    let Some(step) = model.quarantine(i, picks, *scope, request_id)? else {
                        continue;
                    };
                    step
                }
                Op::Unquarantine { pick, scope } => {
                    let Some(step) = model.unquarantine(i, *pick, *scope, request_id)? else {
                        continue;
                    };
                    step
                }
                Op::SetAttributes {
                    pick,
                    pinned,
                    scope,
                } => {
                    let Some(media) = model.pick_media(*pick, |k| !k.tombstone) else {
                        continue;
                    };
                    let authority = match authority(*scope)? {
                        Some(a) if in_scope(&a, &media) => a,
                        _ => Authority::RepositoryAdmin,
                    };
                    let purpose = if *pinned {
                        MediaPurpose::Pinned
                    } else {
                        MediaPurpose::None
                    };
                    if let Some(k) = model.media.get_mut(&media) {
                        k.pinned = *pinned;
                    }
                    let event = MediaAttributesSet {
                        media,
                        purpose,
                        authority: authority.clone(),
                        reason: pinned.then(|| format!("keep (step {i})")),
                    };
                    Step {
                        actor: moderator(&authority)?,
                        request_id,
                        command: Command::SetAttributes(event.clone()),
                        expected: Event::MediaAttributesSetV1(event),
                    }
                }
                Op::Purge { kind, picks, scope } => {
                    let Some(step) = model.purge(i, seq, *kind, picks, *scope, request_id)? else {
                        continue;
                    };
                    step
                }
                Op::DeleteBlob { pick } => {
                    if model.pending.is_empty() {
                        continue;
                    }
                    let (purge, blob) = model.pending.remove(pick % model.pending.len());
                    // The deleter keeps the bytes when the hash record points at them again.
                    let kept = model
                        .blobs
                        .get(&blob.sha256)
                        .is_some_and(|(d, l)| *d == blob.datastore && *l == blob.location);
                    let event = BlobDeleted {
                        purge,
                        sha256: blob.sha256,
                        datastore: blob.datastore,
                        location: blob.location,
                        kept,
                    };
                    Step {
                        actor: Actor::System,
                        request_id: RequestId(format!("purge-{}", purge.0)),
                        command: Command::RecordBlobDeleted(event.clone()),
                        expected: Event::BlobDeletedV1(event),
                    }
                }
                Op::Refetch {
                    pick,
                    datastore: d,
                    actor,
                } => {
                    if model.purged_remote.is_empty() {
                        continue;
                    }
                    let at = pick % model.purged_remote.len();
                    let Some((media, sha)) = model.purged_remote.get(at).cloned() else {
                        continue;
                    };
                    if model.blocked(&sha, &media.origin) {
                        continue;
                    }
                    model.purged_remote.remove(at);
                    let submitted = RemoteMediaCached {
                        media: media.clone(),
                        sha256: sha,
                        size_bytes: size_of_sha(&sha),
                        content_type: None,
                        upload_name: None,
                        fetched_from: format!("https://{}", media.origin),
                        datastore: datastore(*d)?,
                        location: location_of(&sha)?,
                    };
                    let (ds, loc) = model
                        .blobs
                        .entry(sha)
                        .or_insert_with(|| {
                            (submitted.datastore.clone(), submitted.location.clone())
                        })
                        .clone();
                    let recorded = RemoteMediaCached {
                        datastore: ds,
                        location: loc,
                        ..submitted.clone()
                    };
                    model.add_media(&media, sha, Actor::System, true, seq);
                    let actor = match actor.checked_sub(USERS.len()) {
                        None => Actor::User(user(*actor)?),
                        Some(_) => Actor::System,
                    };
                    Step {
                        actor,
                        request_id: RequestId(format!("refetch-{i:03}")),
                        command: Command::CacheRemote(submitted),
                        expected: Event::RemoteMediaCachedV1(recorded),
                    }
                }
                Op::FinishTransfer { task, error } => {
                    let Some(task) = model.open_task(*task) else {
                        continue;
                    };
                    model.tasks.remove(&task);
                    let event = Event::TransferFinishedV1(TransferFinished {
                        task,
                        error_message: error.then(|| format!("gave up at step {i}")),
                    });
                    Step {
                        actor: Actor::System,
                        request_id,
                        command: Command::TaskProgress(event.clone()),
                        expected: event,
                    }
                }
            };
            steps.push(step);
        }
        Ok(Self { steps })
    }

    /// The expected events as a log from sequence 1, at [`PLAN_START_MS`] plus
    /// [`PLAN_STEP_MS`] per step.
    pub fn envelopes(&self) -> Vec<Envelope> {
        (1u64..)
            .zip(&self.steps)
            .map(|(seq, s)| s.envelope(Seq(seq), PLAN_START_MS + PLAN_STEP_MS * (seq - 1)))
            .collect()
    }
}

/// Submits `steps` in order, `group` at a time concurrently (1: one after the other), and
/// returns every outcome. Concurrent submissions of one group are queued in order, so the
/// writer sees the plan's order and may fold several into one commit.
pub fn submit_all(
    ledger: &Ledger,
    steps: &[Step],
    group: usize,
) -> Result<Vec<Result<Committed, LedgerError>>, BoxError> {
    // join_all polls its futures in order only while it has at most 30 of them.
    let group = group.clamp(1, 16);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let outcomes = rt.block_on(async {
        let mut outcomes = Vec::with_capacity(steps.len());
        for chunk in steps.chunks(group) {
            let futures = chunk
                .iter()
                .map(|s| ledger.submit(s.actor.clone(), s.request_id.clone(), s.command.clone()));
            outcomes.extend(futures_util::future::join_all(futures).await);
        }
        outcomes
    });
    Ok(outcomes)
}

/// The committed state of every projection of a running ledger.
pub fn state_of(ledger: &Ledger) -> Result<MemoryState, LedgerError> {
    let mut state = MemoryState::default();
    for p in ALL {
        let mut kv = MemoryKv::default();
        ledger.scan(p.name(), b"", |k, v| {
            kv.0.insert(k.to_vec(), v.to_vec());
            Ok(())
        })?;
        state.spaces.insert(p.name(), kv);
    }
    Ok(state)
}

/// Every envelope of a running ledger's log, in order.
pub fn ledger_envelopes(ledger: &Ledger) -> Result<Vec<Envelope>, LedgerError> {
    let mut out = Vec::new();
    ledger.events(Seq(1), Seq(u64::MAX), |env| {
        out.push(env);
        true
    })?;
    Ok(out)
}

/// Folds envelopes into a fresh in-memory state.
pub fn replay(envelopes: &[Envelope]) -> Result<MemoryState, ProjectionError> {
    let mut state = MemoryState::default();
    for env in envelopes {
        state.apply(env)?;
    }
    Ok(state)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha_at(bytes: &[u8]) -> Option<Sha256> {
    bytes.try_into().ok().map(Sha256)
}

fn json_of<T: serde::Serialize>(value: Result<Option<T>, ProjectionError>, raw: &[u8]) -> Value {
    match value {
        Ok(Some(v)) => serde_json::to_value(v).unwrap_or_else(|_| Value::String(hex(raw))),
        _ => json!({ "undecoded": hex(raw) }),
    }
}

/// Adds a key no decoder understood to the `unparsed` map of a projection's rendering.
fn unparsed(out: &mut Map<String, Value>, k: &[u8], v: &[u8]) {
    if let Value::Object(m) = out
        .entry("unparsed")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        m.insert(hex(k), Value::String(hex(v)));
    }
}

fn render_media_index(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    let mut by_hash = Map::new();
    for (k, v) in &kv.0 {
        if k.first() == Some(&media_index::SHA_LINK_TAG) {
            // A link of a hash's list: shown through the list under `by_hash`.
            continue;
        }
        if !media_index::is_record_key(k) {
            // `0x02 ‖ sha256` → the media with that content, in upload order.
            match k.split_first().and_then(|(_, rest)| sha_at(rest)) {
                Some(sha) => {
                    let list = media_index::media_with_hash(kv, &sha)
                        .map(|ms| Some(ms.iter().map(ToString::to_string).collect::<Vec<_>>()));
                    by_hash.insert(sha.to_hex(), json_of(list, v));
                }
                None => unparsed(&mut out, k, v),
            }
            continue;
        }
        match parse_media_key(k) {
            Some(media) => {
                let record = media_index::decode_record(v).map(Some);
                out.insert(media.to_string(), json_of(record, v));
            }
            None => unparsed(&mut out, k, v),
        }
    }
    if !by_hash.is_empty() {
        out.insert("by_hash".into(), Value::Object(by_hash));
    }
    Value::Object(out)
}

fn render_tasks(kv: &MemoryKv) -> Value {
    let mut found: BTreeMap<u64, (Value, Map<String, Value>)> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        if let Some(entry) = tasks::decode_task_entry(k, v) {
            let seq = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let record = json_of(entry.map(|(_, t)| Some(t)), v);
            found.entry(seq).or_insert((Value::Null, Map::new())).0 = record;
            continue;
        }
        let task = k
            .strip_prefix(b"d")
            .and_then(|rest| rest.get(..8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        match (task, tasks::decode_deletion_entry(k, v)) {
            (Some(seq), Some(entry)) => {
                let (sha, value) = match entry {
                    Ok((sha, d)) => (sha.to_hex(), json_of(Ok(Some(d)), v)),
                    Err(_) => (hex(k), json!({ "undecoded": hex(v) })),
                };
                found
                    .entry(seq)
                    .or_insert((Value::Null, Map::new()))
                    .1
                    .insert(sha, value);
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    for (seq, (record, deletions)) in found {
        out.insert(
            format!("task-{seq}"),
            json!({ "record": record, "pending_deletions": deletions }),
        );
    }
    Value::Object(out)
}

/// The parts of a key made by [`thumbnails::thumb_key`] (`None` for any other bytes).
pub fn parse_thumb_key(key: &[u8]) -> Option<(MediaRef, u32, u32, ThumbnailMethod, bool)> {
    let (media, size) = key.split_at(key.len().checked_sub(10)?);
    let media = parse_media_key(media.strip_suffix(&[0])?)?;
    let width = u32::from_be_bytes(size.get(..4)?.try_into().ok()?);
    let height = u32::from_be_bytes(size.get(4..8)?.try_into().ok()?);
    let method = match size.get(8)? {
        0 => ThumbnailMethod::Crop,
        1 => ThumbnailMethod::Scale,
        _ => return None,
    };
    let animated = match size.get(9)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    // Only a key the projection itself would write (one encoding per thumbnail).
    (thumbnails::thumb_key(&media, width, height, method, animated) == key)
        .then_some((media, width, height, method, animated))
}

/// A thumbnail size as the snapshot names it: `320x240-scale`, `320x240-scale-animated`.
pub fn thumb_label(width: u32, height: u32, method: ThumbnailMethod, animated: bool) -> String {
    let animated = if animated { "-animated" } else { "" };
    format!("{width}x{height}-{}{animated}", method.as_str())
}

fn render_hash_refs(kv: &MemoryKv) -> Value {
    #[derive(Default)]
    struct Hash {
        record: Value,
        refs: Vec<Value>,
        thumbnail_refs: Vec<Value>,
    }
    let mut hashes: BTreeMap<String, Hash> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match k.split_first() {
            Some((b'h', rest)) => match sha_at(rest) {
                Some(sha) => {
                    hashes.entry(sha.to_hex()).or_default().record =
                        json_of(hash_refs::get(kv, &sha), v);
                }
                None => unparsed(&mut out, k, v),
            },
            Some((b'r', rest)) if rest.len() > 32 => {
                let (sha, media) = rest.split_at(32);
                match parse_media_key(media) {
                    Some(media) => {
                        let entry = hashes.entry(hex(sha)).or_default();
                        entry.refs.push(Value::String(media.to_string()));
                    }
                    None => unparsed(&mut out, k, v),
                }
            }
            Some((b't', rest)) if rest.len() > 32 => {
                let (sha, thumb) = rest.split_at(32);
                match parse_thumb_key(thumb) {
                    Some((media, w, h, m, a)) => {
                        let entry = hashes.entry(hex(sha)).or_default();
                        let name = format!("{media} {}", thumb_label(w, h, m, a));
                        entry.thumbnail_refs.push(Value::String(name));
                    }
                    None => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    for (sha, h) in hashes {
        let mut entry = json!({ "record": h.record, "refs": h.refs });
        if !h.thumbnail_refs.is_empty() {
            entry["thumbnail_refs"] = Value::Array(h.thumbnail_refs);
        }
        out.insert(sha, entry);
    }
    Value::Object(out)
}

fn render_thumbnails(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match parse_thumb_key(k) {
            Some((media, w, h, m, a)) => {
                let record = thumbnails::decode_record(v).map(Some);
                let sizes = out
                    .entry(media.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(sizes) = sizes {
                    sizes.insert(thumb_label(w, h, m, a), json_of(record, v));
                }
            }
            None => unparsed(&mut out, k, v),
        }
    }
    Value::Object(out)
}

fn render_datastore_sizes(kv: &MemoryKv) -> Value {
    let mut stores: BTreeMap<String, (Value, Map<String, Value>)> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match k.split_first() {
            Some((b't', rest)) => match std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<DatastoreId>().ok())
            {
                Some(ds) => {
                    let entry = stores
                        .entry(ds.to_string())
                        .or_insert((Value::Null, Map::new()));
                    entry.0 = json_of(datastore_sizes::totals(kv, &ds).map(Some), v);
                }
                None => unparsed(&mut out, k, v),
            },
            Some((b'h', rest)) if rest.len() > 33 => {
                let (ds, sha) = rest.split_at(rest.len() - 32);
                match (ds.split_last(), sha_at(sha)) {
                    (Some((0, ds)), Some(sha)) => {
                        let ds = String::from_utf8_lossy(ds).into_owned();
                        let count = codec::decode::<HashCount>(v).map(Some).map_err(|source| {
                            ProjectionError::Corrupt {
                                name: "datastore_sizes",
                                source,
                            }
                        });
                        let entry = stores.entry(ds).or_insert((Value::Null, Map::new()));
                        entry.1.insert(sha.to_hex(), json_of(count, v));
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    for (ds, (totals, hashes)) in stores {
        out.insert(ds, json!({ "totals": totals, "hashes": hashes }));
    }
    Value::Object(out)
}

fn render_pending_uploads(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    let mut owners = Map::new();
    for (k, v) in &kv.0 {
        let owner = k
            .strip_prefix(&[1u8])
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| u.parse::<media_ledger_events::UserId>().ok());
        if let Some(user) = owner {
            let list = pending_uploads::owner(kv, &user).map(|o| {
                o.entries
                    .iter()
                    .map(|(mk, exp)| {
                        let m = parse_media_key(mk).map_or_else(|| hex(mk), |m| m.to_string());
                        json!({ "media": m, "expires_at_ms": exp })
                    })
                    .collect::<Vec<_>>()
            });
            owners.insert(user.to_string(), json_of(list.map(Some), v));
            continue;
        }
        match parse_media_key(k) {
            Some(media) => {
                let pending = pending_uploads::get(kv, &media);
                out.insert(media.to_string(), json_of(pending, v));
            }
            None => unparsed(&mut out, k, v),
        }
    }
    if !owners.is_empty() {
        out.insert("by_owner".into(), Value::Object(owners));
    }
    Value::Object(out)
}

fn seq_at(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// Adds `value` under `outer` → `inner` of `out`.
fn insert_in(out: &mut Map<String, Value>, outer: &str, inner: String, value: Value) {
    if let Value::Object(m) = out
        .entry(outer)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        m.insert(inner, value);
    }
}

/// Appends `seq` to the list under `outer` → `inner` of `out`.
fn push_in(out: &mut Map<String, Value>, outer: &str, inner: String, seq: u64) {
    if let Value::Object(m) = out
        .entry(outer)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        if let Value::Array(list) = m.entry(inner).or_insert_with(|| Value::Array(Vec::new())) {
            list.push(json!(seq));
        }
    }
}

fn render_moderation(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        let Some((tag, rest)) = k.split_first() else {
            unparsed(&mut out, k, v);
            continue;
        };
        match tag {
            b'q' => match sha_at(rest) {
                Some(sha) => {
                    let b = moderation::blocks(kv, &sha).map(Some);
                    insert_in(&mut out, "blocks", sha.to_hex(), json_of(b, v));
                }
                None => unparsed(&mut out, k, v),
            },
            b'm' => match moderation::quarantined_media_of_key(k) {
                Some(media) => {
                    let seq = codec::decode::<Seq>(v).map(Some).map_err(|source| {
                        ProjectionError::Corrupt {
                            name: "moderation",
                            source,
                        }
                    });
                    insert_in(&mut out, "quarantined", media.to_string(), json_of(seq, v));
                }
                None => unparsed(&mut out, k, v),
            },
            b'p' => match moderation::decode_pending(k, v) {
                Some(Ok((seq, freed))) if rest.len() == 40 => insert_in(
                    &mut out,
                    "pending_deletions",
                    format!("purge-{} {}", seq.0, freed.sha256.to_hex()),
                    json_of(Ok(Some(freed)), v),
                ),
                _ => unparsed(&mut out, k, v),
            },
            b'a' => match moderation::decode_audit(k, v) {
                Some(Ok((seq, entry))) => {
                    insert_in(
                        &mut out,
                        "audit",
                        seq.0.to_string(),
                        json_of(Ok(Some(entry)), v),
                    );
                }
                _ => unparsed(&mut out, k, v),
            },
            b'h' if rest.len() > 9 && v.is_empty() => {
                let (media, seq) = rest.split_at(rest.len() - 8);
                match (
                    media.strip_suffix(&[0]).and_then(parse_media_key),
                    seq_at(seq),
                ) {
                    (Some(media), Some(seq)) => {
                        push_in(&mut out, "history", media.to_string(), seq);
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            b's' if rest.len() == 40 && v.is_empty() => {
                let (sha, seq) = rest.split_at(32);
                match (sha_at(sha), seq_at(seq)) {
                    (Some(sha), Some(seq)) => {
                        push_in(&mut out, "blob_history", sha.to_hex(), seq);
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    Value::Object(out)
}

fn render_hex(kv: &MemoryKv) -> Value {
    Value::Object(
        kv.0.iter()
            .map(|(k, v)| (hex(k), Value::String(hex(v))))
            .collect(),
    )
}

/// Renders every projection's state readably: media by MXC URI (and the hash → media index
/// under `media_index.by_hash`), hashes and datastores by name (a hash lists the media and,
/// under `thumbnail_refs` when there are any, the thumbnails referring to it), transfers as
/// `task-<seq>` with their pending source deletions by hash, thumbnails by MXC URI and then
/// by [`thumb_label`], moderation as `blocks` and `blob_history` by hash, `quarantined` and
/// `history` (sequences) by MXC URI, `pending_deletions` as `purge-<seq> <hash>` and `audit`
/// by sequence, values decoded with the projections' own helpers. A key no decoder
/// understands (or a projection this function does not know) appears as hex, so nothing is
/// hidden.
pub fn snapshot(state: &MemoryState) -> Value {
    let mut out = Map::new();
    for (name, kv) in &state.spaces {
        let rendered = match *name {
            "media_index" => render_media_index(kv),
            "hash_refs" => render_hash_refs(kv),
            "datastore_sizes" => render_datastore_sizes(kv),
            "pending_uploads" => render_pending_uploads(kv),
            "tasks" => render_tasks(kv),
            "thumbnails" => render_thumbnails(kv),
            "moderation" => render_moderation(kv),
            _ => render_hex(kv),
        };
        out.insert((*name).to_owned(), rendered);
    }
    Value::Object(out)
}

/// This crate's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads envelopes written one JSON object per line (blank lines ignored).
pub fn load_jsonl(path: &Path) -> Result<Vec<Envelope>, BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}
