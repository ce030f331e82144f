//! What a moderator may read of the moderation record: the audit log of acts and one media's
//! history, read from the `moderation` projection's indexes and the log, and cut to the
//! reader's scope (invariant 18). A homeserver admin reads only what concerns their server:
//! another tenant's act on shared bytes only as far as it changed their own media, and a blob
//! deletion only with the purge that freed it.

use super::policy::Capacity;
use crate::error::ApiError;
use crate::ledger::{Ledger, LedgerError};
use media_ledger_events::{Authority, Envelope, Event, MediaRef, Seq, ServerName, Sha256};
use media_ledger_projections::media_index::{self, MediaRecord};
use media_ledger_projections::moderation;
use media_ledger_projections::names;
use std::collections::{BTreeMap, HashSet};

/// How far a reader of the moderation record sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A repository admin: everything.
    Repository,
    /// An admin of this homeserver: what concerns its media.
    Homeserver(ServerName),
}

impl Scope {
    /// The reader's scope: repository admins and homeserver admins read; anyone else: 403.
    pub fn of(cap: &Capacity) -> Result<Self, ApiError> {
        match cap {
            Capacity::Repository => Ok(Scope::Repository),
            Capacity::Homeserver(s) => Ok(Scope::Homeserver(s.clone())),
            Capacity::User => Err(Self::refused()),
        }
    }

    /// The one origin the reader is limited to (`None`: every origin).
    pub fn origin(&self) -> Option<&ServerName> {
        match self {
            Scope::Repository => None,
            Scope::Homeserver(s) => Some(s),
        }
    }

    /// Whether the reader may read about `server` (its figures, its media's history): a
    /// homeserver admin only their own (compared without case).
    pub fn check_server(&self, server: &ServerName) -> Result<(), ApiError> {
        match self {
            Scope::Homeserver(s) if !s.as_str().eq_ignore_ascii_case(server.as_str()) => {
                Err(Self::refused())
            }
            _ => Ok(()),
        }
    }

    fn refused() -> ApiError {
        ApiError::Forbidden(
            "only repository admins and admins of that homeserver may read this".into(),
        )
    }

    /// `envs` (in sequence order) as this reader may see them (see [`in_scope`]).
    pub fn cut(&self, envs: impl Iterator<Item = Envelope>) -> Vec<Envelope> {
        match self {
            Scope::Repository => envs.collect(),
            Scope::Homeserver(ours) => in_scope(envs, ours),
        }
    }
}

/// A homeserver admin's view of moderation events (in sequence order): the same bytes may be
/// shared with other tenants' media, and a blob's events (or a repository-wide act on all
/// copies) would show their acts, actors, reasons and uploaders. A moderation act is kept only
/// if it was that homeserver's own or changed at least one of its media, and then lists only
/// its media; a blob deletion only if the purge that freed it is kept. Moves of the blob
/// between datastores carry nothing of a tenant and are kept.
pub fn in_scope(envs: impl Iterator<Item = Envelope>, ours: &ServerName) -> Vec<Envelope> {
    let mine = |m: &MediaRef| &m.origin == ours;
    let own_authority = |a: &Authority| a.origin() == Some(ours);
    let mut kept_purges = HashSet::new();
    let mut out = Vec::new();
    for mut env in envs {
        let keep = match &mut env.event {
            Event::MediaQuarantinedV1(e) => {
                e.media.retain(mine);
                own_authority(&e.authority) || !e.media.is_empty()
            }
            Event::MediaUnquarantinedV1(e) => {
                e.media.retain(mine);
                own_authority(&e.authority) || !e.media.is_empty()
            }
            Event::MediaPurgedV1(e) => {
                e.media.retain(|m| mine(&m.media));
                e.thumbnails.retain(|t| mine(&t.media));
                // Only the blobs of the media and thumbnails kept: another tenant's freed
                // bytes (their datastore and location) are theirs.
                let shas: HashSet<_> = e
                    .media
                    .iter()
                    .map(|m| m.sha256)
                    .chain(e.thumbnails.iter().map(|t| t.sha256))
                    .collect();
                e.freed.retain(|f| shas.contains(&f.sha256));
                let keep = own_authority(&e.authority) || !e.media.is_empty();
                if keep {
                    kept_purges.insert(env.seq);
                }
                keep
            }
            Event::BlobDeletedV1(e) => kept_purges.contains(&e.purge),
            Event::MediaAttributesSetV1(e) => mine(&e.media),
            _ => env.event.affected_media().iter().all(|m| mine(m)),
        };
        if keep {
            out.push(env);
        }
    }
    out
}

/// Which acts an audit page lists.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    /// The reader's scope: a homeserver admin sees the acts that touched their server.
    pub scope: Scope,
    /// Only this kind (one of `MODERATION_KINDS`).
    pub kind: Option<String>,
    /// Only this actor (as the audit shows it).
    pub actor: Option<String>,
    /// Only acts that touched this server.
    pub server: Option<ServerName>,
    /// Only acts recorded at or after this time (ms).
    pub since_ts: Option<u64>,
    /// Only acts recorded at or before this time (ms).
    pub until_ts: Option<u64>,
}

/// One page of the audit log: the acts (cut to the reader's scope), newest first, and whether
/// more acts match past the last one.
pub struct AuditPage {
    /// The acts, newest first.
    pub events: Vec<Envelope>,
    /// The sequence of the last act listed, when more follow.
    pub more_after: Option<Seq>,
}

/// Refuses an unknown audit `kind` (400).
pub fn check_kind(kind: Option<&str>) -> Result<(), ApiError> {
    match kind {
        Some(k) if !media_ledger_events::MODERATION_KINDS.contains(&k) => {
            Err(ApiError::InvalidParam(format!(
                "unknown kind {k:?} (quarantine, unquarantine, attributes, purge)"
            )))
        }
        _ => Ok(()),
    }
}

impl AuditFilter {
    fn keeps(&self, e: &moderation::AuditEntry) -> bool {
        self.kind.as_ref().is_none_or(|k| &e.kind == k)
            && self
                .actor
                .as_ref()
                .is_none_or(|x| &e.actor.to_string() == x)
            && self.server.as_ref().is_none_or(|s| e.origins.contains(s))
            && self.scope.origin().is_none_or(|s| e.origins.contains(s))
    }

    /// Up to `limit` acts recorded before sequence `from` (all when `None`), newest first.
    pub fn page(
        &self,
        ledger: &Ledger,
        from: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, LedgerError> {
        if from == Some(0) {
            return Ok(AuditPage {
                events: Vec::new(),
                more_after: None,
            });
        }
        let mut start = moderation::audit_key(Seq(from.map_or(u64::MAX, |f| f.saturating_sub(1))));
        start.push(0xff);
        let mut seqs: Vec<Seq> = Vec::new();
        let mut more = false;
        ledger.scan_rev(
            names::MODERATION,
            moderation::AUDIT_PREFIX,
            &start,
            |k, v| {
                let Some(entry) = moderation::decode_audit(k, v) else {
                    return Ok(true);
                };
                let (seq, e) = entry?;
                if self.until_ts.is_some_and(|u| e.recorded_at_ms > u) {
                    return Ok(true);
                }
                if self.since_ts.is_some_and(|s| e.recorded_at_ms < s) {
                    return Ok(false);
                }
                if self.keeps(&e) {
                    if seqs.len() == limit {
                        more = true;
                        return Ok(false);
                    }
                    seqs.push(seq);
                }
                Ok(true)
            },
        )?;
        let mut events = Vec::with_capacity(seqs.len());
        for seq in &seqs {
            if let Some(env) = ledger.event_at(*seq)? {
                // A homeserver admin sees an act on several tenants' media with only theirs.
                events.extend(self.scope.cut(std::iter::once(env)));
            }
        }
        let more_after = if more { seqs.last().copied() } else { None };
        Ok(AuditPage { events, more_after })
    }
}

/// One media's history as a reader may see it.
pub struct History {
    /// Its record (also a tombstone), if there is one.
    pub record: Option<MediaRecord>,
    /// Its events in sequence order (creation, thumbnails, moderation acts, moves and
    /// deletions of its blob), cut to the reader's scope.
    pub events: Vec<Envelope>,
}

/// Every event about `media` (`None` when there is none, even out of the reader's scope).
pub fn history(
    ledger: &Ledger,
    media: &MediaRef,
    scope: &Scope,
) -> Result<Option<History>, LedgerError> {
    let record = media_index::get(&ledger.view(names::MEDIA_INDEX)?, media)?;
    let mut seqs: Vec<Seq> = record.iter().map(|r| r.created_seq).collect();
    ledger.scan(
        names::MODERATION,
        &moderation::history_prefix(media),
        |k, _| {
            seqs.extend(moderation::seq_of_history_key(k));
            Ok(())
        },
    )?;
    let mut sha: Option<Sha256> = record.as_ref().map(|r| r.sha256);
    let mut envs: BTreeMap<u64, Envelope> = BTreeMap::new();
    for seq in &seqs {
        if let Some(env) = ledger.event_at(*seq)? {
            if let Event::MediaPurgedV1(p) = &env.event {
                if let Some(m) = p.media.iter().find(|m| &m.media == media) {
                    sha.get_or_insert(m.sha256);
                    // A purged media's record is gone: its creation is named by the purge.
                    if let Some(created) = ledger.event_at(m.created_seq)? {
                        envs.insert(created.seq.0, created);
                    }
                }
            }
            envs.insert(env.seq.0, env);
        }
    }
    if envs.is_empty() {
        return Ok(None);
    }
    if let Some(sha) = sha {
        let mut blob = Vec::new();
        ledger.scan(
            names::MODERATION,
            &moderation::blob_history_prefix(&sha),
            |k, _| {
                blob.extend(moderation::seq_of_history_key(k));
                Ok(())
            },
        )?;
        for seq in blob {
            if let Some(env) = ledger.event_at(seq)? {
                envs.insert(env.seq.0, env);
            }
        }
    }
    Ok(Some(History {
        record,
        events: scope.cut(envs.into_values()),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use media_ledger_events::{
        Actor, FreedBlob, MediaPurged, ModerationTarget, PurgedMedia, RequestId, Seq, Sha256,
    };

    fn purged(media: &str, sha: Sha256) -> PurgedMedia {
        PurgedMedia {
            media: media.parse().unwrap(),
            sha256: sha,
            size_bytes: 1,
            uploader: Actor::System,
            remote: false,
            datastore: "files".parse().unwrap(),
            created_seq: Seq(1),
            tombstone: false,
        }
    }

    fn freed(sha: Sha256) -> FreedBlob {
        FreedBlob {
            sha256: sha,
            size_bytes: 1,
            datastore: "files".parse().unwrap(),
            location: "secret/place".parse().unwrap(),
        }
    }

    #[test]
    fn a_repository_purge_shows_a_homeserver_admin_only_its_own_media_and_blobs() {
        let (a, b) = (
            Sha256::try_from("aa".repeat(32)).unwrap(),
            Sha256::try_from("bb".repeat(32)).unwrap(),
        );
        let env = Envelope {
            seq: Seq(7),
            recorded_at_ms: 1,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("r".into()),
            event: Event::MediaPurgedV1(MediaPurged {
                authority: Authority::RepositoryAdmin,
                target: ModerationTarget::Quarantined,
                before_ts_ms: None,
                media: vec![purged("mxc://a.test/x", a), purged("mxc://b.test/y", b)],
                thumbnails: Vec::new(),
                freed: vec![freed(a), freed(b)],
                reason: None,
            }),
        };
        let out = in_scope(std::iter::once(env), &"a.test".parse().unwrap());
        let [kept] = &out[..] else { panic!("{out:?}") };
        let Event::MediaPurgedV1(e) = &kept.event else {
            panic!("{kept:?}")
        };
        assert_eq!(e.media.len(), 1);
        assert_eq!(
            e.freed.iter().map(|f| f.sha256).collect::<Vec<_>>(),
            vec![a]
        );
    }
}
