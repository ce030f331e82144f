//! Steps of remote media: media of other servers ([`REMOTE_ORIGINS`]) fetched over
//! federation and cached with bytes of the media pool, so they share blobs with local media
//! (like an upload, a remote of bytes already stored is expected at that blob's place), and
//! remote media a purge removed fetched again under their id. No fetch of bytes blocked in
//! the remote's origin is generated. Once cached they are accessed and thumbnailed like local
//! media.

use super::{At, Step};
use crate::model::{content_type, datastore, requester, size_of_sha, Model};
use crate::{location_of, pool_sha, pool_size, BoxError, REMOTE_ORIGINS, SHA_POOL};
use media_ledger::ledger::Command;
use media_ledger_events::{Actor, Event, RemoteMediaCached, RequestId, Seq};

impl Model {
    /// A remote media cached as the writer records it (at the stored blob's place when its
    /// bytes are stored already), asked for by requester `actor`, applied to the model.
    fn cached(
        &mut self,
        seq: Seq,
        submitted: RemoteMediaCached,
        actor: usize,
        request_id: RequestId,
    ) -> Result<Step, BoxError> {
        let sha = submitted.sha256;
        let (ds, loc) = self.place_blob(sha, &submitted.datastore, &submitted.location);
        let recorded = RemoteMediaCached {
            datastore: ds,
            location: loc,
            ..submitted.clone()
        };
        self.add_media(&submitted.media, sha, Actor::System, true, seq);
        Ok(Step {
            actor: requester(actor)?,
            request_id,
            command: Command::CacheRemote(submitted),
            expected: Event::RemoteMediaCachedV1(recorded),
        })
    }

    /// A remote media fetched and cached under a new id (skipped when its bytes are blocked
    /// in its origin).
    #[allow(clippy::too_many_arguments)] // the fields of `Op::CacheRemote`
    pub(super) fn cache_remote(
        &mut self,
        at: At,
        origin: usize,
        media_id: &str,
        sha: usize,
        d: usize,
        actor: usize,
        ct: bool,
        upload_name: bool,
    ) -> Result<Option<Step>, BoxError> {
        let i = at.i;
        let origin = REMOTE_ORIGINS
            .get(origin % REMOTE_ORIGINS.len())
            .copied()
            .unwrap_or("remote.example");
        let sha_index = sha % SHA_POOL;
        let sha = pool_sha(sha_index);
        if self.blocked(&sha, &origin.parse()?) {
            return Ok(None);
        }
        let media = self.fresh_on(origin, media_id, i)?;
        let submitted = RemoteMediaCached {
            media: media.clone(),
            sha256: sha,
            size_bytes: pool_size(sha_index),
            content_type: if ct {
                Some(content_type(sha_index)?)
            } else {
                None
            },
            upload_name: upload_name.then(|| format!("remote-{i}.bin")),
            fetched_from: format!("https://{}", media.origin),
            datastore: datastore(d)?,
            location: location_of(&sha)?,
        };
        let request_id = RequestId(format!("remote-{i:03}"));
        self.cached(at.seq, submitted, actor, request_id).map(Some)
    }

    /// The `pick`-th remote media a purge removed (not a tombstone) is fetched again under its
    /// id (skipped when there is none, or when its bytes are blocked in its origin).
    pub(super) fn refetch(
        &mut self,
        at: At,
        pick: usize,
        d: usize,
        actor: usize,
    ) -> Result<Option<Step>, BoxError> {
        if self.purged_remote.is_empty() {
            return Ok(None);
        }
        let index = pick % self.purged_remote.len();
        let Some((media, sha)) = self.purged_remote.get(index).cloned() else {
            return Ok(None);
        };
        if self.blocked(&sha, &media.origin) {
            return Ok(None);
        }
        self.purged_remote.remove(index);
        let submitted = RemoteMediaCached {
            media: media.clone(),
            sha256: sha,
            size_bytes: size_of_sha(&sha),
            content_type: None,
            upload_name: None,
            fetched_from: format!("https://{}", media.origin),
            datastore: datastore(d)?,
            location: location_of(&sha)?,
        };
        let request_id = RequestId(format!("refetch-{:03}", at.i));
        self.cached(at.seq, submitted, actor, request_id).map(Some)
    }
}
