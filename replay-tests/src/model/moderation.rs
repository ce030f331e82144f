//! Quarantines, lifts and pins as the writer decides them (`validate_quarantine`,
//! `validate_unquarantine`, `validate_set_attributes`): the same-hash media in scope a
//! quarantine flags (pinned ones spared) and the digests it blocks in the moderator's scope,
//! what a lift clears, and an act that would change nothing skipped (the writer would refuse
//! it).

use super::{authority, in_scope, moderator, Block, Model};
use crate::plan::{At, Step};
use crate::BoxError;
use media_ledger::ledger::Command;
use media_ledger_events::{
    Authority, Event, MediaAttributesSet, MediaPurpose, MediaQuarantined, MediaRef,
    MediaUnquarantined, ModerationTarget, Sha256,
};

impl Model {
    /// A quarantine as `validate_quarantine` decides it, applied to the model.
    pub(crate) fn quarantine(
        &mut self,
        at: At,
        picks: &[usize],
        scope: usize,
    ) -> Result<Option<Step>, BoxError> {
        let At { i, request_id, .. } = at;
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
    pub(crate) fn unquarantine(
        &mut self,
        at: At,
        pick: usize,
        scope: usize,
    ) -> Result<Option<Step>, BoxError> {
        let At { i, request_id, .. } = at;
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

    /// A pin or unpin of a media that is not a tombstone; a homeserver admin acts on its own
    /// origin's media, a repository admin on any other.
    pub(crate) fn set_attributes(
        &mut self,
        at: At,
        pick: usize,
        pinned: bool,
        scope: usize,
    ) -> Result<Option<Step>, BoxError> {
        let At { i, request_id, .. } = at;
        let Some(media) = self.pick_media(pick, |k| !k.tombstone) else {
            return Ok(None);
        };
        let authority = match authority(scope)? {
            Some(a) if in_scope(&a, &media) => a,
            _ => Authority::RepositoryAdmin,
        };
        let purpose = if pinned {
            MediaPurpose::Pinned
        } else {
            MediaPurpose::None
        };
        if let Some(k) = self.media.get_mut(&media) {
            k.pinned = pinned;
        }
        let event = MediaAttributesSet {
            media,
            purpose,
            authority: authority.clone(),
            reason: pinned.then(|| format!("keep (step {i})")),
        };
        Ok(Some(Step {
            actor: moderator(&authority)?,
            request_id,
            command: Command::SetAttributes(event.clone()),
            expected: Event::MediaAttributesSetV1(event),
        }))
    }
}
