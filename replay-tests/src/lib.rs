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
//! - [`submit_all`] submits steps to a ledger (in groups, so group commit and the writer's
//!   overlay are exercised) on a runtime of its own.
//! - [`state_of`], [`replay`] and [`snapshot`] read, recompute and render projection state.

use media_ledger::ledger::{Command, Committed, Ledger, LedgerError};
use media_ledger_events::{
    codec, Actor, AsyncUploadCreated, BlobLocation, BlobMoved, BlobSourceDeleted,
    BlobTransferFailed, ContentType, DatastoreId, Envelope, Event, MediaAccessed, MediaId,
    MediaRef, MediaUploaded, RemoteMediaCached, RequestId, Seq, ServerName, Sha256,
    ThumbnailGenerated, ThumbnailMethod, TransferFinished, TransferStarted, UserId,
};
use media_ledger_projections::datastore_sizes::{self, HashCount};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{
    hash_refs, media_index, parse_media_key, pending_uploads, tasks, thumbnails, ProjectionError,
    ALL,
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

#[derive(Default)]
struct Model {
    taken: BTreeSet<MediaRef>,
    uploaded: Vec<(MediaRef, Sha256)>,
    open: Vec<(MediaRef, UserId)>,
    /// Where each stored digest is now (moves included).
    blobs: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
    /// Unfinished transfers by task id.
    tasks: BTreeMap<Seq, OpenTask>,
    /// Recorded thumbnails: media and index into [`THUMB_SIZES`].
    thumbnails: BTreeSet<(MediaRef, usize)>,
}

impl Model {
    /// The id of the `pick`-th unfinished transfer, if any.
    fn open_task(&self, pick: usize) -> Option<Seq> {
        self.tasks
            .keys()
            .nth(pick % self.tasks.len().max(1))
            .copied()
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

    fn upload(
        &mut self,
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
        self.uploaded.push((media, sha));
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

impl Plan {
    /// Resolves abstract steps in order, skipping those that have no valid form (an access
    /// or a thumbnail before any upload, a thumbnail already recorded, a completion without
    /// an open reservation, transfer progress without an open transfer). A transfer's task id
    /// is the sequence its start gets when the plan is submitted to an empty ledger.
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
                    let media = model.fresh(*origin, media_id, i)?;
                    let actor = Actor::User(user(*u)?);
                    let ct = if *ct { Some(content_type(*sha)?) } else { None };
                    let name = upload_name.then(|| format!("file-{i}.bin"));
                    let (event, recorded) =
                        model.upload(media, *sha, *datastore, actor.clone(), ct, name)?;
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
                    let (media, owner) = model.open.remove(pick % model.open.len());
                    let actor = Actor::User(owner.clone());
                    let (event, recorded) = model.upload(
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
                    let Some((media, sha)) = model
                        .uploaded
                        .get(pick % model.uploaded.len().max(1))
                        .cloned()
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
                    let Some((media, _)) = model
                        .uploaded
                        .get(pick % model.uploaded.len().max(1))
                        .cloned()
                    else {
                        continue;
                    };
                    let size = size % THUMB_SIZES.len();
                    if !model.thumbnails.insert((media.clone(), size)) {
                        continue;
                    }
                    let (width, height, method, animated) = THUMB_SIZES[size];
                    let sha_index = sha % (SHA_POOL + THUMB_POOL);
                    let sha = pool_sha(sha_index);
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
                    let media = model.fresh_on(origin, media_id, i)?;
                    let sha_index = sha % SHA_POOL;
                    let sha = pool_sha(sha_index);
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
                    model.uploaded.push((media.clone(), sha));
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
/// by [`thumb_label`], values decoded with the projections' own helpers. A key no decoder
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
