//! matrix-media-repo (MMR) as rows to import: its `media`, `thumbnails`, `media_attributes`,
//! `last_access` and `datastores` tables (PostgreSQL; columns as MMR's `migrations/*_up.sql`
//! create them, the later ones read when present), and the file of each row in its datastore.
//!
//! MMR records every media and thumbnail by `datastore_id` and `location`. A `file` datastore
//! keeps the file at `<opts.path>/<location>`, `location` being `aa/bb/rest` of a random id
//! (`datastores/upload.go`; `storage/datastore/ds_file` before 1.3). An `s3` datastore keeps it
//! as the object `location` of its bucket: not read here — its rows are reported, unless its
//! bucket was copied to a directory given as its path. The directory of each datastore is
//! given by its id (`--datastore-path ID=DIR`, MMR's config `datastores: [{id, opts.path}]`);
//! without one, the `uri` of a `file` row of MMR's `datastores` table (where MMR before 1.3
//! kept each datastore's path) is used.
//!
//! MMR's `quarantined` flag becomes a quarantine act by the system (MMR does not record who
//! quarantined), `media_attributes.purpose = 'pinned'` a pin, `last_access` (per SHA-256) the
//! last-access time. Media of an origin that is none of `homeservers` are cached remote media.

use super::db::{col, method_of, millis, Db, SqlValue};
use super::{Object, Row, Source, ThumbRow};
use media_ledger_events::{BlobLocation, DatastoreId, MediaId, MediaRef, ServerName, UserId};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// Who quarantined a media in MMR, as the import says it (not a user id: the act's actor is
/// the system).
pub const QUARANTINED_BY: &str = "matrix-media-repo";

const MEDIA: &[&str] = &[
    "origin",
    "media_id",
    "upload_name",
    "content_type",
    "user_id",
    "sha256_hash",
    "size_bytes",
    "creation_ts",
    "quarantined",
    "datastore_id",
    "location",
];
const THUMBS: &[&str] = &[
    "origin",
    "media_id",
    "width",
    "height",
    "method",
    "animated",
    "content_type",
    "size_bytes",
    "datastore_id",
    "location",
];
const ATTRIBUTES: &[&str] = &["origin", "media_id", "purpose"];
const LAST_ACCESS: &[&str] = &["sha256_hash", "last_access_ts"];
const DATASTORES: &[&str] = &["datastore_id", "ds_type", "uri"];

/// A datastore as MMR's `datastores` table describes it.
struct Known {
    kind: String,
    uri: String,
}

/// Where the files of MMR's datastores are.
struct Datastores<'a> {
    given: &'a HashMap<String, PathBuf>,
    /// MMR's S3 datastores reached through a datastore of ours (`--datastore-s3`).
    objects: &'a HashMap<String, DatastoreId>,
    known: HashMap<String, Known>,
}

impl Datastores<'_> {
    /// Where `location` of datastore `id` is read: a file, or an object through a datastore
    /// of ours (`--datastore-s3`); else why there is none to read.
    fn locate(
        &self,
        id: &str,
        location: &str,
    ) -> Result<(Option<PathBuf>, Option<Object>), String> {
        if let Some(ours) = self.objects.get(id) {
            let location = location.parse::<BlobLocation>().map_err(|_| {
                format!("MMR location {location:?} is not an object name of datastore {id}")
            })?;
            let object = Object {
                datastore: ours.clone(),
                location,
            };
            return Ok((None, Some(object)));
        }
        self.file(id, location).map(|p| (Some(p), None))
    }

    /// The file of `location` in datastore `id`, or why there is none to read.
    fn file(&self, id: &str, location: &str) -> Result<PathBuf, String> {
        let dir = match (self.given.get(id), self.known.get(id)) {
            (Some(dir), _) => dir.clone(),
            (None, Some(k)) if k.kind == "s3" => {
                return Err(format!(
                    "MMR datastore {id} is S3: configure its bucket as a datastore here and \
                     pass --datastore-s3 {id}=THAT_ID"
                ))
            }
            (None, Some(k)) if k.kind == "file" && Path::new(&k.uri).is_dir() => {
                PathBuf::from(&k.uri)
            }
            (None, Some(k)) if k.kind != "file" => {
                return Err(format!(
                    "MMR datastore {id} is {:?}: not supported by the importer",
                    k.kind
                ))
            }
            (None, _) if id.is_empty() => {
                return Err("the row names no MMR datastore (datastore_id is empty)".into())
            }
            (None, _) => {
                return Err(format!(
                    "MMR datastore {id}: no directory for it (--datastore-path {id}=DIR)"
                ))
            }
        };
        // `aa/bb/rest` (or an S3 object name): relative, never leaving the directory.
        let rel = Path::new(location);
        let plain =
            !location.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(format!(
                "MMR location {location:?} is not a path inside datastore {id}"
            ));
        }
        Ok(dir.join(rel))
    }
}

fn text(v: &SqlValue) -> &str {
    v.text().unwrap_or_default()
}

/// Reads every row of MMR's media tables. `datastore_paths`: the directory of each datastore
/// by MMR's id; `homeservers`: the origins of local media (every other origin is remote).
/// A row that cannot be imported as read (an invalid id or origin, a datastore without a
/// directory, an S3 datastore, an animated thumbnail) is returned in `bad` with why.
pub fn read(
    db: &mut Db,
    datastore_paths: &HashMap<String, PathBuf>,
    datastore_objects: &HashMap<String, DatastoreId>,
    homeservers: &[ServerName],
) -> anyhow::Result<Source> {
    let have = db.columns("media")?;
    if !["sha256_hash", "location", "creation_ts"]
        .iter()
        .all(|c| have.iter().any(|h| h == c))
    {
        anyhow::bail!(
            "not a matrix-media-repo database: no `media` table with MMR's columns \
             (sha256_hash, location, creation_ts)"
        );
    }
    let mut known = HashMap::new();
    for r in db.select("datastores", DATASTORES)? {
        let c = |n| col(&r, DATASTORES, n);
        known.insert(
            text(c("datastore_id")).to_owned(),
            Known {
                kind: text(c("ds_type")).to_owned(),
                uri: text(c("uri")).to_owned(),
            },
        );
    }
    let stores = Datastores {
        given: datastore_paths,
        objects: datastore_objects,
        known,
    };
    let mut bad = Vec::new();

    let mut pinned = HashSet::new();
    for r in db.select("media_attributes", ATTRIBUTES)? {
        let c = |n| col(&r, ATTRIBUTES, n);
        if text(c("purpose")) == "pinned" {
            pinned.insert((text(c("origin")).to_owned(), text(c("media_id")).to_owned()));
        }
    }
    let mut last_access: HashMap<String, u64> = HashMap::new();
    for r in db.select("last_access", LAST_ACCESS)? {
        let c = |n| col(&r, LAST_ACCESS, n);
        last_access.insert(
            text(c("sha256_hash")).to_owned(),
            millis(c("last_access_ts")),
        );
    }

    let mut thumbs: HashMap<(String, String), Vec<ThumbRow>> = HashMap::new();
    for r in db.select("thumbnails", THUMBS)? {
        let c = |n| col(&r, THUMBS, n);
        let (origin, id) = (text(c("origin")), text(c("media_id")));
        let (w, h, m) = (c("width").int(), c("height").int(), text(c("method")));
        let what = format!(
            "mxc://{origin}/{id} thumbnail {}x{} {m}",
            w.unwrap_or(0),
            h.unwrap_or(0)
        );
        let (Some(w), Some(h), Some(method)) = (
            w.and_then(|w| u32::try_from(w).ok()),
            h.and_then(|h| u32::try_from(h).ok()),
            method_of(m),
        ) else {
            bad.push((what, "not a width, height and method (crop, scale)".into()));
            continue;
        };
        if c("animated").truthy() {
            bad.push((
                what,
                "an animated thumbnail: not imported (animated requests get a still rendered here)"
                    .into(),
            ));
            continue;
        }
        let ds = text(c("datastore_id"));
        let (path, object) = match stores.locate(ds, text(c("location"))) {
            Ok(found) => found,
            Err(reason) => {
                bad.push((what, reason));
                continue;
            }
        };
        thumbs
            .entry((origin.to_owned(), id.to_owned()))
            .or_default()
            .push(ThumbRow {
                width: w,
                height: h,
                method,
                content_type: text(c("content_type")).to_owned(),
                length: c("size_bytes").int(),
                path,
                object,
            });
    }

    let mut rows = Vec::new();
    for r in db.select("media", MEDIA)? {
        let c = |n| col(&r, MEDIA, n);
        let (raw_origin, raw_id) = (text(c("origin")), text(c("media_id")));
        let (Ok(origin), Ok(id)) = (
            ServerName::parse_strict(raw_origin),
            raw_id.parse::<MediaId>(),
        ) else {
            bad.push((
                format!("MMR media {raw_origin:?} {raw_id:?}"),
                "not a valid server name and media id".to_owned(),
            ));
            continue;
        };
        let media = MediaRef::new(origin, id);
        let ds = text(c("datastore_id"));
        let (path, object) = match stores.locate(ds, text(c("location"))) {
            Ok(found) => found,
            Err(reason) => {
                bad.push((media.to_string(), reason));
                continue;
            }
        };
        let remote = !homeservers.contains(&media.origin);
        let sha = text(c("sha256_hash"));
        let created = millis(c("creation_ts"));
        let key = (raw_origin.to_owned(), raw_id.to_owned());
        rows.push(Row {
            path,
            object,
            length: c("size_bytes").int(),
            sha256_hex: (!sha.is_empty()).then(|| sha.to_owned()),
            content_type: c("content_type").text().map(str::to_owned),
            upload_name: c("upload_name").text().map(str::to_owned),
            uploader: if remote {
                None
            } else {
                c("user_id").text().and_then(|u| u.parse::<UserId>().ok())
            },
            remote,
            created_at_ms: created,
            last_access_ms: last_access.get(sha).copied().unwrap_or(created),
            quarantined_by: c("quarantined").truthy().then(|| QUARANTINED_BY.to_owned()),
            pinned: pinned.contains(&key),
            source: format!("mmr {ds} media"),
            thumbnails: thumbs.remove(&key).unwrap_or_default(),
            media,
        });
    }
    Ok(Source { rows, bad })
}
