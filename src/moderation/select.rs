//! Which media a moderation request names, read from the projections. The writer re-checks
//! every candidate when it records the act, so a selection that races with other writes
//! never purges or quarantines something that no longer qualifies.

use crate::ledger::{Ledger, LedgerError};
use media_ledger_events::{Actor, MediaRef, ServerName, UserId};
use media_ledger_projections::media_index::{self, MediaKind, MediaRecord};
use media_ledger_projections::names;
use media_ledger_projections::{moderation, origin_prefix, parse_media_key, url_previews};

/// Visits every live (not tombstoned) media record whose key starts with `prefix`.
pub fn visit_records(
    ledger: &Ledger,
    prefix: &[u8],
    mut f: impl FnMut(MediaRef, MediaRecord),
) -> Result<(), LedgerError> {
    ledger.scan(names::MEDIA_INDEX, prefix, |k, v| {
        if !media_index::is_record_key(k) {
            return Ok(());
        }
        let r = media_index::decode_record(v)?;
        if let (Some(m), false) = (parse_media_key(k), r.tombstone) {
            f(m, r);
        }
        Ok(())
    })
}

/// Media uploaded by `user` (to their own server), created before `before_ms`.
pub fn by_user(
    ledger: &Ledger,
    user: &UserId,
    before_ms: u64,
) -> Result<Vec<MediaRef>, LedgerError> {
    let origin: Option<ServerName> = user.server_name().parse().ok();
    let Some(origin) = origin else {
        return Ok(Vec::new());
    };
    let who = Actor::User(user.clone());
    let mut out = Vec::new();
    visit_records(ledger, &origin_prefix(&origin), |m, r| {
        if r.uploader == who && r.created_at_ms < before_ms {
            out.push(m);
        }
    })?;
    Ok(out)
}

/// Media of `origin` created before `before_ms`.
pub fn by_server(
    ledger: &Ledger,
    origin: &ServerName,
    before_ms: u64,
) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out = Vec::new();
    visit_records(ledger, &origin_prefix(origin), |m, r| {
        if r.created_at_ms < before_ms {
            out.push(m);
        }
    })?;
    Ok(out)
}

/// Live quarantined media, of `origin` only when given.
pub fn quarantined(
    ledger: &Ledger,
    origin: Option<&ServerName>,
) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out = Vec::new();
    ledger.scan(names::MODERATION, moderation::QUARANTINED_PREFIX, |k, _| {
        if let Some(m) = moderation::quarantined_media_of_key(k) {
            if origin.is_none_or(|o| &m.origin == o) {
                out.push(m);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Remote media cached before `before_ms`, not quarantined (the writer applies the sharing
/// rule).
pub fn remote_before(ledger: &Ledger, before_ms: u64) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out = Vec::new();
    visit_records(ledger, b"", |m, r| {
        if r.kind == MediaKind::Remote && r.created_at_ms < before_ms && !r.quarantined {
            out.push(m);
        }
    })?;
    Ok(out)
}

/// Media last accessed before `before_ms` (remote only unless `include_local`).
pub fn old(
    ledger: &Ledger,
    before_ms: u64,
    include_local: bool,
) -> Result<Vec<MediaRef>, LedgerError> {
    let mut out = Vec::new();
    visit_records(ledger, b"", |m, r| {
        if r.last_access_ms < before_ms && (include_local || r.kind == MediaKind::Remote) {
            out.push(m);
        }
    })?;
    Ok(out)
}

/// Those of `media` whose live record is larger than `size_gt` bytes.
pub fn larger_than(
    ledger: &Ledger,
    media: Vec<MediaRef>,
    size_gt: u64,
) -> Result<Vec<MediaRef>, LedgerError> {
    let index = ledger.view(names::MEDIA_INDEX)?;
    let mut out = Vec::new();
    for m in media {
        if media_index::get(&index, &m)?.is_some_and(|r| r.size_bytes > size_gt) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The live (not tombstoned) record of `media`, if any.
pub fn live_record(ledger: &Ledger, media: &MediaRef) -> Result<Option<MediaRecord>, LedgerError> {
    Ok(media_index::get(&ledger.view(names::MEDIA_INDEX)?, media)?.filter(|r| !r.tombstone))
}

/// Those of `media` that have a record (live or a tombstone) created before `before_ms`.
pub fn created_before(
    ledger: &Ledger,
    media: Vec<MediaRef>,
    before_ms: u64,
) -> Result<Vec<MediaRef>, LedgerError> {
    let index = ledger.view(names::MEDIA_INDEX)?;
    let mut out = Vec::new();
    for m in media {
        if media_index::get(&index, &m)?.is_some_and(|r| r.created_at_ms < before_ms) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Parses the `mxc://server/id` URIs a homeserver listed; malformed ones are skipped.
pub fn parse_mxcs<'a>(uris: impl IntoIterator<Item = &'a String>) -> Vec<MediaRef> {
    uris.into_iter().filter_map(|u| u.parse().ok()).collect()
}

/// Link previews fetched before `before_ms`: `(homeserver, url)`.
pub fn previews_before(
    ledger: &Ledger,
    before_ms: u64,
) -> Result<Vec<(ServerName, String)>, LedgerError> {
    let mut out = Vec::new();
    ledger.scan(names::URL_PREVIEWS, url_previews::PREVIEW_PREFIX, |k, v| {
        let record = url_previews::decode_record(v)?;
        if let (Some(key), true) = (
            url_previews::parse_preview_key(k),
            record.fetched_at_ms < before_ms,
        ) {
            out.push(key);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Preview images no cached preview offers any more (expired, or fetched again since), last
/// accessed before `before_ms`: cache, purged by `purge/old` like remote media.
pub fn unused_preview_images(
    ledger: &Ledger,
    before_ms: u64,
) -> Result<Vec<MediaRef>, LedgerError> {
    let previews = ledger.view(names::URL_PREVIEWS)?;
    let index = ledger.view(names::MEDIA_INDEX)?;
    let mut images = Vec::new();
    ledger.scan(names::URL_PREVIEWS, url_previews::IMAGE_PREFIX, |k, _| {
        if let Some(m) = k
            .strip_prefix(url_previews::IMAGE_PREFIX)
            .and_then(parse_media_key)
        {
            images.push(m);
        }
        Ok(())
    })?;
    let mut out = Vec::new();
    for m in images {
        let Some(of) = url_previews::image_of(&previews, &m)? else {
            continue;
        };
        let offered = url_previews::get(&previews, &of.homeserver, &of.url)?
            .is_some_and(|p| p.image.as_ref() == Some(&m));
        let old = media_index::get(&index, &m)?
            .is_some_and(|r| !r.tombstone && r.last_access_ms < before_ms);
        if !offered && old {
            out.push(m);
        }
    }
    Ok(out)
}
