//! Steps of local media: uploads of random media ids whose digests come from a small pool
//! (so deduplication happens) across two datastores, async reservations (some filled later
//! by their owner, some left to expire), downloads, and thumbnails at a few sizes whose bytes
//! come from the media pool or from a small pool of their own. Like an upload, a thumbnail of
//! bytes already stored is expected at that blob's place; a thumbnail already recorded is
//! never generated again, and no upload of bytes blocked in its origin is generated, nor a
//! download or thumbnail of a quarantined media.

use super::{At, Step};
use crate::model::{content_type, datastore, requester, user, Model};
use crate::{
    location_of, pool_sha, pool_size, BoxError, DATASTORES, FAR_FUTURE_MS, ORIGINS, SHA_POOL,
    THUMB_POOL, THUMB_SIZES, USERS,
};
use media_ledger::ledger::Command;
use media_ledger_events::{
    Actor, AsyncUploadCreated, ContentType, DatastoreId, Event, MediaAccessed, MediaRef,
    MediaUploaded, RequestId, Seq, ServerName, ThumbnailGenerated, ThumbnailMethod,
};

/// The upload of content `sha_index` as submitted, to datastore `datastore` (an index into
/// [`DATASTORES`]).
fn submitted_upload(
    media: MediaRef,
    sha_index: usize,
    datastore: usize,
    uploader: Actor,
    content_type: Option<ContentType>,
    upload_name: Option<String>,
) -> Result<MediaUploaded, BoxError> {
    let sha = pool_sha(sha_index);
    let datastore: DatastoreId = DATASTORES
        .get(datastore)
        .copied()
        .unwrap_or("ds-alpha")
        .parse()?;
    Ok(MediaUploaded {
        media,
        sha256: sha,
        size_bytes: pool_size(sha_index),
        content_type,
        upload_name,
        uploader,
        datastore,
        location: location_of(&sha)?,
    })
}

impl Model {
    /// An upload as the writer records it (at the stored blob's place when its bytes are
    /// stored already), applied to the model.
    fn uploaded(&mut self, seq: Seq, submitted: &MediaUploaded) -> MediaUploaded {
        let (ds, loc) =
            self.place_blob(submitted.sha256, &submitted.datastore, &submitted.location);
        let recorded = MediaUploaded {
            datastore: ds,
            location: loc,
            ..submitted.clone()
        };
        let uploader = submitted.uploader.clone();
        self.add_media(&submitted.media, submitted.sha256, uploader, false, seq);
        recorded
    }

    /// A plain upload of a new media id (skipped when its bytes are blocked in its origin).
    #[allow(clippy::too_many_arguments)] // the fields of `Op::Upload`
    pub(super) fn upload_op(
        &mut self,
        at: At,
        origin: usize,
        media_id: &str,
        sha: usize,
        datastore: usize,
        u: usize,
        ct: bool,
        upload_name: bool,
    ) -> Result<Option<Step>, BoxError> {
        let At { i, seq, request_id } = at;
        let on: ServerName = ORIGINS
            .get(origin)
            .copied()
            .unwrap_or("localhost")
            .parse()?;
        if self.blocked(&pool_sha(sha), &on) {
            return Ok(None);
        }
        let media = self.fresh(origin, media_id, i)?;
        let actor = Actor::User(user(u)?);
        let ct = if ct { Some(content_type(sha)?) } else { None };
        let name = upload_name.then(|| format!("file-{i}.bin"));
        let event = submitted_upload(media, sha, datastore, actor.clone(), ct, name)?;
        let recorded = self.uploaded(seq, &event);
        Ok(Some(Step {
            actor,
            request_id,
            command: Command::Upload {
                event,
                completes_async: None,
                quota: None,
            },
            expected: Event::MediaUploadedV1(recorded),
        }))
    }

    /// A reservation for an asynchronous upload; one that has not expired may be filled
    /// later.
    pub(super) fn create_async(
        &mut self,
        at: At,
        origin: usize,
        media_id: &str,
        owner: usize,
        expired: bool,
    ) -> Result<Option<Step>, BoxError> {
        let media = self.fresh(origin, media_id, at.i)?;
        let owner = user(owner)?;
        let expires_at_ms = if expired { 1 } else { FAR_FUTURE_MS };
        if !expired {
            self.open.push((media.clone(), owner.clone()));
        }
        let event = AsyncUploadCreated {
            media,
            owner: owner.clone(),
            expires_at_ms,
        };
        Ok(Some(Step {
            actor: Actor::User(owner),
            request_id: at.request_id,
            command: Command::CreateAsync(event.clone()),
            expected: Event::AsyncUploadCreatedV1(event),
        }))
    }

    /// The owner fills the `pick`-th open reservation (skipped when there is none, or when
    /// the bytes are blocked in its origin).
    pub(super) fn complete_async(
        &mut self,
        at: At,
        pick: usize,
        sha: usize,
        datastore: usize,
    ) -> Result<Option<Step>, BoxError> {
        if self.open.is_empty() {
            return Ok(None);
        }
        let index = pick % self.open.len();
        if self
            .open
            .get(index)
            .is_some_and(|(m, _)| self.blocked(&pool_sha(sha), &m.origin))
        {
            return Ok(None);
        }
        let (media, owner) = self.open.remove(index);
        let actor = Actor::User(owner.clone());
        let ct = Some(content_type(sha)?);
        let event = submitted_upload(media, sha, datastore, actor.clone(), ct, None)?;
        let recorded = self.uploaded(at.seq, &event);
        Ok(Some(Step {
            actor,
            request_id: at.request_id,
            command: Command::Upload {
                event,
                completes_async: Some(owner),
                quota: None,
            },
            expected: Event::MediaUploadedV1(recorded),
        }))
    }

    /// A download of the `pick`-th servable media by a user, the admin or the server.
    pub(super) fn access(
        &self,
        at: At,
        pick: usize,
        actor: usize,
    ) -> Result<Option<Step>, BoxError> {
        let servable = self.servable();
        let Some((media, sha)) = servable.get(pick % servable.len().max(1)).cloned() else {
            return Ok(None);
        };
        let actor = match actor.checked_sub(USERS.len()) {
            None => Actor::User(user(actor)?),
            Some(0) => Actor::SharedSecretAdmin,
            Some(_) => Actor::System,
        };
        let event = MediaAccessed { media, sha256: sha };
        Ok(Some(Step {
            actor,
            request_id: at.request_id,
            command: Command::Access(event.clone()),
            expected: Event::MediaAccessedV1(event),
        }))
    }

    /// A thumbnail of the `pick`-th servable media at [`THUMB_SIZES`]`[size]` (skipped when
    /// it is recorded already).
    pub(super) fn thumbnail(
        &mut self,
        pick: usize,
        size: usize,
        sha: usize,
        d: usize,
        actor: usize,
    ) -> Result<Option<Step>, BoxError> {
        let servable = self.servable();
        let Some((media, _)) = servable.get(pick % servable.len().max(1)).cloned() else {
            return Ok(None);
        };
        let size = size % THUMB_SIZES.len();
        let (width, height, method, animated) = THUMB_SIZES[size];
        let sha_index = sha % (SHA_POOL + THUMB_POOL);
        let sha = pool_sha(sha_index);
        if self.thumbnails.contains_key(&(media.clone(), size)) {
            return Ok(None);
        }
        self.thumbnails.insert((media.clone(), size), sha);
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
            datastore: datastore(d)?,
            location: location_of(&sha)?,
        };
        let (ds, loc) = self.place_blob(sha, &submitted.datastore, &submitted.location);
        let recorded = ThumbnailGenerated {
            datastore: ds,
            location: loc,
            ..submitted.clone()
        };
        Ok(Some(Step {
            actor: requester(actor)?,
            request_id: RequestId(format!("thumb-{}", media.media_id)),
            command: Command::RecordThumbnail(submitted),
            expected: Event::ThumbnailGeneratedV1(recorded),
        }))
    }
}
