//! A small model of the ledger: what the writer's validation reads (media records, the
//! hash → media index, blocked digests, where each blob is, thumbnails, open reservations and
//! transfers, blobs freed and not deleted yet), so that a plan ([`crate::Plan`]) only holds
//! commands the writer accepts and the events it records for them.
//!
//! Blob locations are only names (the ledger never touches a real datastore): a blob moves
//! from where the model has it, as the writer demands, and new bytes already stored are
//! expected at that blob's place ([`Model::place_blob`]). The moderation decisions
//! ([`moderation`], [`purge`]) mirror the writer's (`src/ledger/validate_moderation.rs`).

mod moderation;
mod purge;

use crate::{pool_sha, pool_size, BoxError, DATASTORES, ORIGINS, SHA_POOL, THUMB_POOL, USERS};
use media_ledger_events::{
    Actor, Authority, BlobLocation, ContentType, DatastoreId, FreedBlob, MediaId, MediaRef, Seq,
    ServerName, Sha256, UserId,
};
use std::collections::{BTreeMap, BTreeSet};

/// An unfinished transfer of the model.
pub(crate) struct OpenTask {
    pub(crate) source: DatastoreId,
    pub(crate) target: DatastoreId,
    /// Blobs moved whose old copy is not deleted yet: where that copy is.
    pub(crate) pending: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
    /// Failed attempts per blob.
    pub(crate) attempts: BTreeMap<Sha256, u32>,
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

/// The ledger's state as far as a plan needs it.
#[derive(Default)]
pub(crate) struct Model {
    taken: BTreeSet<MediaRef>,
    /// Media in creation order (accesses and thumbnails pick among the servable ones).
    uploaded: Vec<(MediaRef, Sha256)>,
    /// Open reservations (meant to be filled) and their owner.
    pub(crate) open: Vec<(MediaRef, UserId)>,
    /// Where each stored digest is now (moves included).
    pub(crate) blobs: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
    /// Unfinished transfers by task id.
    pub(crate) tasks: BTreeMap<Seq, OpenTask>,
    /// Recorded thumbnails (media and index into [`THUMB_SIZES`](crate::THUMB_SIZES)) and
    /// their digest.
    pub(crate) thumbnails: BTreeMap<(MediaRef, usize), Sha256>,
    /// Every media record, tombstones included.
    media: BTreeMap<MediaRef, Known>,
    /// The media of each digest in the index's order (creation; tombstones stay).
    by_hash: BTreeMap<Sha256, Vec<MediaRef>>,
    /// Blocked digests.
    blocks: BTreeMap<Sha256, Block>,
    /// Blobs freed by a purge (its sequence) whose deletion is not recorded yet.
    pending: Vec<(Seq, FreedBlob)>,
    /// Remote media purged (not tombstoned): they may be fetched again.
    pub(crate) purged_remote: Vec<(MediaRef, Sha256)>,
}

impl Model {
    /// The id of the `pick`-th unfinished transfer, if any.
    pub(crate) fn open_task(&self, pick: usize) -> Option<Seq> {
        self.tasks
            .keys()
            .nth(pick % self.tasks.len().max(1))
            .copied()
    }

    /// A new media record (upload or cache) at sequence `seq`.
    pub(crate) fn add_media(
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
    pub(crate) fn blocked(&self, sha: &Sha256, origin: &ServerName) -> bool {
        self.blocks.get(sha).is_some_and(|b| b.blocks(origin))
    }

    /// The media that can be downloaded and thumbnailed, in creation order.
    pub(crate) fn servable(&self) -> Vec<(MediaRef, Sha256)> {
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
    pub(crate) fn blobs_in(&self, ds: &DatastoreId) -> Vec<(Sha256, BlobLocation)> {
        self.blobs
            .iter()
            .filter(|(_, (d, _))| d == ds)
            .map(|(sha, (_, loc))| (*sha, loc.clone()))
            .collect()
    }

    /// A media id of origin `origin` (an index into [`ORIGINS`]) not taken yet: `wanted`, or
    /// `wanted` suffixed with `-<step>` until it is free.
    pub(crate) fn fresh(
        &mut self,
        origin: usize,
        wanted: &str,
        step: usize,
    ) -> Result<MediaRef, BoxError> {
        let origin = ORIGINS.get(origin).copied().unwrap_or("localhost");
        self.fresh_on(origin, wanted, step)
    }

    /// As [`Model::fresh`], on the origin named `origin`.
    pub(crate) fn fresh_on(
        &mut self,
        origin: &str,
        wanted: &str,
        step: usize,
    ) -> Result<MediaRef, BoxError> {
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

    /// Where the writer records new bytes `sha` submitted at `datastore`/`location`: at the
    /// stored blob's place when the digest is stored already, else where submitted (which the
    /// model then holds).
    pub(crate) fn place_blob(
        &mut self,
        sha: Sha256,
        datastore: &DatastoreId,
        location: &BlobLocation,
    ) -> (DatastoreId, BlobLocation) {
        self.blobs
            .entry(sha)
            .or_insert_with(|| (datastore.clone(), location.clone()))
            .clone()
    }
}

/// Datastore `i` of [`DATASTORES`] (modulo their number).
pub(crate) fn datastore(i: usize) -> Result<DatastoreId, BoxError> {
    Ok(DATASTORES
        .get(i % DATASTORES.len())
        .copied()
        .unwrap_or("ds-alpha")
        .parse()?)
}

/// The size of a digest of the pool (media and thumbnail contents alike).
pub(crate) fn size_of_sha(sha: &Sha256) -> u64 {
    (0..SHA_POOL + THUMB_POOL)
        .find(|&i| pool_sha(i) == *sha)
        .map_or(0, pool_size)
}

/// User `i` of [`USERS`] (modulo their number).
pub(crate) fn user(i: usize) -> Result<UserId, BoxError> {
    Ok(USERS
        .get(i % USERS.len())
        .copied()
        .unwrap_or("@alice:localhost")
        .parse()?)
}

/// The content type declared for content `i` of the pool.
pub(crate) fn content_type(i: usize) -> Result<ContentType, BoxError> {
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
        Authority::RepositoryAdmin | Authority::Uploader | Authority::Import => {
            Actor::SharedSecretAdmin
        }
    })
}

/// Whether `media` is within the capacity's reach (as the writer's `in_scope`).
fn in_scope(authority: &Authority, media: &MediaRef) -> bool {
    authority.origin().is_none_or(|o| &media.origin == o)
}

/// Who asks for a thumbnail or a remote fetch: user `i`, or the server (an anonymous
/// request) for any index past [`USERS`].
pub(crate) fn requester(i: usize) -> Result<Actor, BoxError> {
    Ok(match i.checked_sub(USERS.len()) {
        None => Actor::User(user(i)?),
        Some(_) => Actor::System,
    })
}
