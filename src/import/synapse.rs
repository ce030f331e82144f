//! Synapse's media store as rows to import: `local_media_repository`,
//! `remote_media_cache` and their thumbnail tables (columns as in Synapse's schema, the
//! optional ones — `sha256`, `url_cache`, `safe_from_quarantine` — read when present), and the
//! file of each row in the media store's layout (`synapse/media/filepath.py`):
//! `local_content/aa/bb/rest`, `url_cache/…` for preview images,
//! `remote_content/<origin>/aa/bb/rest` by `filesystem_id`, and the thumbnails under
//! `local_thumbnails/…` and `remote_thumbnail/…` named `W-H-type-subtype-method`.

use super::db::{col, method_of, millis, Db, SqlValue};
use super::{Row, Source, ThumbRow};
use media_ledger_events::{MediaId, MediaRef, ServerName, UserId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const LOCAL: &[&str] = &[
    "media_id",
    "media_type",
    "media_length",
    "created_ts",
    "upload_name",
    "user_id",
    "quarantined_by",
    "url_cache",
    "last_access_ts",
    "safe_from_quarantine",
    "sha256",
];
const REMOTE: &[&str] = &[
    "media_origin",
    "media_id",
    "media_type",
    "created_ts",
    "upload_name",
    "media_length",
    "filesystem_id",
    "last_access_ts",
    "quarantined_by",
    "sha256",
];
const LOCAL_THUMBS: &[&str] = &[
    "media_id",
    "thumbnail_width",
    "thumbnail_height",
    "thumbnail_type",
    "thumbnail_method",
    "thumbnail_length",
];
const REMOTE_THUMBS: &[&str] = &[
    "media_origin",
    "media_id",
    "thumbnail_width",
    "thumbnail_height",
    "thumbnail_method",
    "thumbnail_type",
    "thumbnail_length",
    "filesystem_id",
];

/// A path component Synapse would accept (`_validate_path_component`): no separator, not
/// `.` or `..`.
fn component(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')).then_some(s)
}

/// `a/bb/cc/rest` of an id, as Synapse splits it.
fn split_id(base: &Path, dir: &str, origin: Option<&str>, id: &str) -> Option<PathBuf> {
    let (a, b, c) = (id.get(0..2)?, id.get(2..4)?, id.get(4..)?);
    let mut p = base.join(dir);
    if let Some(o) = origin {
        p.push(component(o)?);
    }
    p.push(component(a)?);
    p.push(component(b)?);
    p.push(component(c)?);
    Some(p)
}

/// The file of a preview image Synapse stored under `url_cache/`.
fn url_cache_path(base: &Path, id: &str) -> Option<PathBuf> {
    // New ids are `<YYYY-MM-DD>_<random>`.
    let dated = id.len() > 11
        && id.as_bytes().get(10) == Some(&b'_')
        && id.get(..10).is_some_and(|d| {
            d.bytes().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            })
        });
    if dated {
        Some(
            base.join("url_cache")
                .join(component(id.get(..10)?)?)
                .join(component(id.get(11..)?)?),
        )
    } else {
        split_id(base, "url_cache", None, id)
    }
}

fn thumb_name(w: i64, h: i64, content_type: &str, method: &str) -> Option<String> {
    let (top, sub) = content_type.split_once('/')?;
    let name = format!("{w}-{h}-{top}-{sub}-{method}");
    component(&name).map(str::to_owned)
}

/// A thumbnail row of either table (`row`, selected with `names`), its file in `dir` (the media's
/// thumbnail folder) named `W-H-type-subtype-method`; `None` when the row names no size,
/// type or method.
fn thumb_row(row: &[SqlValue], names: &[&str], dir: Option<PathBuf>) -> Option<ThumbRow> {
    let c = |n| col(row, names, n);
    let (ct, m) = (c("thumbnail_type").text()?, c("thumbnail_method").text()?);
    let (w, h) = (c("thumbnail_width").int()?, c("thumbnail_height").int()?);
    let method = method_of(m)?;
    Some(ThumbRow {
        width: u32::try_from(w).unwrap_or(0),
        height: u32::try_from(h).unwrap_or(0),
        method,
        content_type: ct.to_owned(),
        length: c("thumbnail_length").int(),
        path: dir.zip(thumb_name(w, h, ct, m)).map(|(d, n)| d.join(n)),
        object: None,
    })
}

/// Reads every row of Synapse's media tables; `server_name` is Synapse's own (the origin of
/// its local media). A row that cannot name a media (an id or origin outside the grammar) is
/// returned as `Err((what, why))` to be reported.
pub fn read(db: &mut Db, media_store: &Path, server_name: &ServerName) -> anyhow::Result<Source> {
    if db.columns("local_media_repository")?.is_empty() {
        anyhow::bail!("not a Synapse database: it has no local_media_repository table");
    }
    let mut thumbs: HashMap<(String, String), Vec<ThumbRow>> = HashMap::new();
    let local_origin = server_name.as_str().to_owned();
    for r in db.select("local_media_repository_thumbnails", LOCAL_THUMBS)? {
        let c = |n| col(&r, LOCAL_THUMBS, n);
        let Some(id) = c("media_id").text() else {
            continue;
        };
        let dir = split_id(media_store, "local_thumbnails", None, id);
        if let Some(t) = thumb_row(&r, LOCAL_THUMBS, dir) {
            thumbs
                .entry((local_origin.clone(), id.to_owned()))
                .or_default()
                .push(t);
        }
    }
    for r in db.select("remote_media_cache_thumbnails", REMOTE_THUMBS)? {
        let c = |n| col(&r, REMOTE_THUMBS, n);
        let (Some(origin), Some(id), Some(fid)) = (
            c("media_origin").text(),
            c("media_id").text(),
            c("filesystem_id").text(),
        ) else {
            continue;
        };
        let dir = split_id(media_store, "remote_thumbnail", Some(origin), fid);
        if let Some(t) = thumb_row(&r, REMOTE_THUMBS, dir) {
            thumbs
                .entry((origin.to_owned(), id.to_owned()))
                .or_default()
                .push(t);
        }
    }

    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for r in db.select("local_media_repository", LOCAL)? {
        let c = |n| col(&r, LOCAL, n);
        let raw_id = c("media_id").text().unwrap_or_default().to_owned();
        let Ok(id) = raw_id.parse::<MediaId>() else {
            bad.push((
                format!("local_media_repository media_id {raw_id:?}"),
                "not a valid media id".to_owned(),
            ));
            continue;
        };
        let path = if c("url_cache").text().is_some_and(|u| !u.is_empty()) {
            url_cache_path(media_store, &raw_id)
        } else {
            split_id(media_store, "local_content", None, &raw_id)
        };
        let created = millis(c("created_ts"));
        rows.push(Row {
            media: MediaRef::new(server_name.clone(), id),
            path,
            object: None,
            length: c("media_length").int(),
            sha256_hex: c("sha256").text().map(str::to_owned),
            content_type: c("media_type").text().map(str::to_owned),
            upload_name: c("upload_name").text().map(str::to_owned),
            uploader: c("user_id").text().and_then(|u| u.parse::<UserId>().ok()),
            remote: false,
            created_at_ms: created,
            last_access_ms: c("last_access_ts")
                .int()
                .map_or(created, |_| millis(c("last_access_ts"))),
            quarantined_by: c("quarantined_by").text().map(str::to_owned),
            pinned: c("safe_from_quarantine").truthy(),
            source: format!("synapse {server_name} local_media_repository"),
            thumbnails: thumbs
                .remove(&(local_origin.clone(), raw_id.clone()))
                .unwrap_or_default(),
        });
    }
    for r in db.select("remote_media_cache", REMOTE)? {
        let c = |n| col(&r, REMOTE, n);
        let raw_origin = c("media_origin").text().unwrap_or_default().to_owned();
        let raw_id = c("media_id").text().unwrap_or_default().to_owned();
        let (Ok(origin), Ok(id)) = (
            ServerName::parse_strict(&raw_origin),
            raw_id.parse::<MediaId>(),
        ) else {
            bad.push((
                format!("remote_media_cache {raw_origin:?} {raw_id:?}"),
                "not a valid server name and media id".to_owned(),
            ));
            continue;
        };
        let path = c("filesystem_id")
            .text()
            .and_then(|fid| split_id(media_store, "remote_content", Some(&raw_origin), fid));
        let created = millis(c("created_ts"));
        rows.push(Row {
            media: MediaRef::new(origin, id),
            path,
            object: None,
            length: c("media_length").int(),
            sha256_hex: c("sha256").text().map(str::to_owned),
            content_type: c("media_type").text().map(str::to_owned),
            upload_name: c("upload_name").text().map(str::to_owned),
            uploader: None,
            remote: true,
            created_at_ms: created,
            last_access_ms: c("last_access_ts")
                .int()
                .map_or(created, |_| millis(c("last_access_ts"))),
            quarantined_by: c("quarantined_by").text().map(str::to_owned),
            pinned: false,
            source: format!("synapse {server_name} remote_media_cache"),
            thumbnails: thumbs.remove(&(raw_origin, raw_id)).unwrap_or_default(),
        });
    }
    Ok(Source { rows, bad })
}
