//! Who may moderate what: the caller's capacity (repository admin, admin of the request's
//! homeserver, anyone else), the authority each route needs, who may purge one media (admins,
//! or its uploader unless it is quarantined), and which of a room's media a moderator reaches.
//!
//! These are the decisions the HTTP layer applies before it submits an act; the writer still
//! decides each act's exact effect (invariant 16). What a scoped reader sees of the audit log
//! and of a media's history is in [`super::scope`].

use super::homeserver::{HomeserverAdmin, RoomMedia};
use super::select;
use crate::auth::{Auth, Principal};
use crate::config::HomeserverConfig;
use crate::error::ApiError;
use media_ledger_events::{Actor, Authority, MediaRef, ServerName, UserId};
use media_ledger_projections::media_index::MediaRecord;

/// The caller's capacity on the request's homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// Repository admin.
    Repository,
    /// Admin of this homeserver.
    Homeserver(ServerName),
    /// Anyone else.
    User,
}

/// Works out the caller's capacity: repository admins by config (or the shared secret); with
/// `allow_local_admins`, a user of the request's homeserver whom its admin API calls an admin
/// (asked with the caller's own token); anyone else is a plain user.
pub async fn capacity(
    auth: &Auth,
    allow_local_admins: bool,
    homeserver: &HomeserverAdmin,
    principal: &Principal,
    hs: &HomeserverConfig,
    token: &str,
) -> Result<Capacity, ApiError> {
    if auth.is_admin(principal) {
        return Ok(Capacity::Repository);
    }
    if allow_local_admins {
        if let Some(user) = principal.user() {
            if user.server_name().eq_ignore_ascii_case(hs.name.as_str())
                && homeserver.is_admin(hs, token, user).await?
            {
                return Ok(Capacity::Homeserver(hs.name.clone()));
            }
        }
    }
    Ok(Capacity::User)
}

/// The authority of an admin act: repository admins and admins of this homeserver.
pub fn admin_authority(cap: &Capacity) -> Result<Authority, ApiError> {
    match cap {
        Capacity::Repository => Ok(Authority::RepositoryAdmin),
        Capacity::Homeserver(s) => Ok(Authority::HomeserverAdmin(s.clone())),
        Capacity::User => Err(ApiError::Forbidden(
            "only repository admins and admins of this homeserver may do this".into(),
        )),
    }
}

/// The authority of an act only repository admins may do (acts across every origin).
pub fn repository_authority(cap: &Capacity) -> Result<Authority, ApiError> {
    match cap {
        Capacity::Repository => Ok(Authority::RepositoryAdmin),
        _ => Err(ApiError::Forbidden(
            "only repository admins may do this".into(),
        )),
    }
}

/// A homeserver admin may only name their own server (`server` compared without case).
pub fn own_server(authority: &Authority, server: &str) -> Result<(), ApiError> {
    match authority.origin() {
        Some(o) if !o.as_str().eq_ignore_ascii_case(server) => Err(ApiError::Forbidden(
            "homeserver admins may only moderate their own server's media".into(),
        )),
        _ => Ok(()),
    }
}

/// Who may purge `media` (whose live record is `record`), and in which authority: a
/// repository admin; an admin of the media's own homeserver; its uploader, except while it is
/// quarantined (quarantined bytes are evidence: only an admin's purge removes them, and the
/// writer never lets an uploader's purge include them either). Anyone else: 403.
pub fn purge_authority(
    cap: &Capacity,
    caller: Option<&UserId>,
    media: &MediaRef,
    record: &MediaRecord,
) -> Result<Authority, ApiError> {
    let authority = match cap {
        Capacity::Repository => Authority::RepositoryAdmin,
        Capacity::Homeserver(s) if *s == media.origin => Authority::HomeserverAdmin(s.clone()),
        // The uploader, as a user of the media's own server (a record an older build made
        // across homeservers does not make another server's user its uploader here).
        _ if caller.is_some_and(|u| {
            record.uploader == Actor::User(u.clone())
                && u.server_name().eq_ignore_ascii_case(media.origin.as_str())
        }) =>
        {
            Authority::Uploader
        }
        _ => {
            return Err(ApiError::Forbidden(
                "only admins and the uploader may purge this media".into(),
            ))
        }
    };
    if authority == Authority::Uploader && record.quarantined {
        return Err(ApiError::Forbidden(
            "this media is quarantined; only an admin can purge it".into(),
        ));
    }
    Ok(authority)
}

/// The media of a room a moderator reaches, from the homeserver's listing: its local media,
/// and the remote ones only for a repository-wide authority (a homeserver admin's acts stay
/// on their own server's media). Malformed `mxc://` URIs are skipped.
pub fn room_media(listed: &RoomMedia, authority: &Authority) -> Vec<MediaRef> {
    let mut media = select::parse_mxcs(&listed.local);
    if authority.origin().is_none() {
        media.extend(select::parse_mxcs(&listed.remote));
    }
    media
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_ledger_events::{DatastoreId, Seq, Sha256};
    use media_ledger_projections::media_index::MediaKind;

    fn server(s: &str) -> ServerName {
        ServerName::parse_strict(s).unwrap()
    }

    fn record(uploader: &UserId, quarantined: bool) -> MediaRecord {
        MediaRecord {
            sha256: Sha256([0; 32]),
            size_bytes: 1,
            content_type: None,
            upload_name: None,
            uploader: Actor::User(uploader.clone()),
            created_at_ms: 0,
            kind: MediaKind::Local,
            datastore: "files".parse::<DatastoreId>().unwrap(),
            quarantined,
            last_access_ms: 0,
            pinned: false,
            tombstone: false,
            created_seq: Seq(1),
            access_count: 0,
        }
    }

    #[test]
    fn who_may_purge_one_media() {
        let alice: UserId = "@alice:a.test".parse().unwrap();
        let bob: UserId = "@bob:a.test".parse().unwrap();
        let media: MediaRef = "mxc://a.test/abc".parse().unwrap();
        let r = record(&alice, false);
        let hs_a = Capacity::Homeserver(server("a.test"));
        let hs_b = Capacity::Homeserver(server("b.test"));
        assert_eq!(
            purge_authority(&Capacity::Repository, None, &media, &r).unwrap(),
            Authority::RepositoryAdmin
        );
        assert_eq!(
            purge_authority(&hs_a, None, &media, &r).unwrap(),
            Authority::HomeserverAdmin(server("a.test"))
        );
        assert_eq!(
            purge_authority(&Capacity::User, Some(&alice), &media, &r).unwrap(),
            Authority::Uploader
        );
        // Another server's admin who uploaded it acts as its uploader.
        assert_eq!(
            purge_authority(&hs_b, Some(&alice), &media, &r).unwrap(),
            Authority::Uploader
        );
        assert!(purge_authority(&Capacity::User, Some(&bob), &media, &r).is_err());
        assert!(purge_authority(&hs_b, Some(&bob), &media, &r).is_err());
        // A record naming hs-b's media as uploaded by hs-a's alice (an older build let static
        // tokens cross homeservers): she is not its uploader here.
        let crossed: MediaRef = "mxc://b.test/abc".parse().unwrap();
        assert!(purge_authority(&Capacity::User, Some(&alice), &crossed, &r).is_err());
        // Quarantined: the uploader is refused, admins are not.
        let q = record(&alice, true);
        assert!(purge_authority(&Capacity::User, Some(&alice), &media, &q).is_err());
        assert!(purge_authority(&hs_a, None, &media, &q).is_ok());
    }

    #[test]
    fn room_media_of_a_homeserver_admin_is_local_only() {
        let listed = RoomMedia {
            local: vec!["mxc://a.test/one".into(), "not an mxc".into()],
            remote: vec!["mxc://b.test/two".into()],
        };
        let hs = room_media(&listed, &Authority::HomeserverAdmin(server("a.test")));
        assert_eq!(hs, vec!["mxc://a.test/one".parse::<MediaRef>().unwrap()]);
        let all = room_media(&listed, &Authority::RepositoryAdmin);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn admins_name_only_their_own_server() {
        let a = Authority::HomeserverAdmin(server("a.test"));
        assert!(own_server(&a, "A.test").is_ok());
        assert!(own_server(&a, "b.test").is_err());
        assert!(own_server(&Authority::RepositoryAdmin, "b.test").is_ok());
        assert!(admin_authority(&Capacity::User).is_err());
        assert!(repository_authority(&Capacity::Homeserver(server("a.test"))).is_err());
    }
}
