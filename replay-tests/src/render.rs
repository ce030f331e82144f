//! Rendering of projection state as JSON ([`snapshot`]): every projection's keys decoded with
//! the projections' own helpers, named readably (media by MXC URI, hashes and datastores by
//! name), and anything no decoder understands kept as hex so nothing is hidden.

mod moderation;

use media_ledger_events::{codec, DatastoreId, MediaRef, Sha256, ThumbnailMethod};
use media_ledger_projections::datastore_sizes::{self, HashCount};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::names;
use media_ledger_projections::{
    hash_refs, media_index, parse_media_key, pending_uploads, tasks, thumbnails, ProjectionError,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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
        if k.first() == Some(&media_index::SHA_LINK_TAG) {
            // A link of a hash's list: shown through the list under `by_hash`.
            continue;
        }
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
                                name: names::DATASTORE_SIZES.as_str(),
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

/// Link previews as `previews` by `"<homeserver> <url>"` and `images` by MXC URI.
fn render_usage(kv: &MemoryKv) -> Value {
    use media_ledger_projections::usage::{Counted, UserUsage};
    let mut users = Map::new();
    let mut counted = Map::new();
    for (k, v) in &kv.0 {
        match k.split_first() {
            Some((b'u', user)) => {
                let u = codec::decode::<UserUsage>(v).map(
                    |u| json!({"bytes": u.bytes, "files": u.files, "window": u.window.buckets}),
                );
                users.insert(
                    String::from_utf8_lossy(user).into_owned(),
                    u.unwrap_or_else(|e| json!(format!("undecodable: {e}"))),
                );
            }
            Some((b'm', media)) => {
                let name =
                    parse_media_key(media).map_or_else(|| format!("{media:?}"), |m| m.to_string());
                let c = codec::decode::<Counted>(v)
                    .map(|c| json!({"user": c.user.to_string(), "size_bytes": c.size_bytes}));
                counted.insert(
                    name,
                    c.unwrap_or_else(|e| json!(format!("undecodable: {e}"))),
                );
            }
            _ => {
                counted.insert(format!("unknown key {k:?}"), json!(hex(v)));
            }
        }
    }
    json!({"users": users, "counted": counted})
}

fn render_url_previews(kv: &MemoryKv) -> Value {
    use media_ledger_projections::url_previews;
    let (mut previews, mut images, mut out) = (Map::new(), Map::new(), Map::new());
    for (k, v) in &kv.0 {
        if let Some((hs, url)) = url_previews::parse_preview_key(k) {
            let record = url_previews::get(kv, &hs, &url);
            previews.insert(format!("{hs} {url}"), json_of(record, v));
        } else if let Some(m) = k
            .strip_prefix(url_previews::IMAGE_PREFIX)
            .and_then(parse_media_key)
        {
            images.insert(m.to_string(), json_of(url_previews::image_of(kv, &m), v));
        } else {
            unparsed(&mut out, k, v);
        }
    }
    for (name, map) in [("previews", previews), ("images", images)] {
        if !map.is_empty() {
            out.insert(name.into(), Value::Object(map));
        }
    }
    Value::Object(out)
}

/// Renders every projection's state readably: media by MXC URI (and the hash → media index
/// under `media_index.by_hash`), hashes and datastores by name (a hash lists the media and,
/// under `thumbnail_refs` when there are any, the thumbnails referring to it), transfers as
/// `task-<seq>` with their pending source deletions by hash, thumbnails by MXC URI and then
/// by [`thumb_label`], moderation as `blocks` and `blob_history` by hash, `quarantined` and
/// `history` (sequences) by MXC URI, `pending_deletions` as `purge-<seq> <hash>` and `audit`
/// by sequence, values decoded with the projections' own helpers. A key no decoder
/// understands (or a projection this function does not know) appears as hex, so nothing is
/// hidden.
pub fn snapshot(state: &MemoryState) -> Value {
    let mut out = Map::new();
    for (name, kv) in &state.spaces {
        let rendered = match *name {
            n if n == names::MEDIA_INDEX.as_str() => render_media_index(kv),
            n if n == names::HASH_REFS.as_str() => render_hash_refs(kv),
            n if n == names::DATASTORE_SIZES.as_str() => render_datastore_sizes(kv),
            n if n == names::PENDING_UPLOADS.as_str() => render_pending_uploads(kv),
            n if n == names::TASKS.as_str() => render_tasks(kv),
            n if n == names::THUMBNAILS.as_str() => render_thumbnails(kv),
            n if n == names::MODERATION.as_str() => moderation::render(kv),
            n if n == names::URL_PREVIEWS.as_str() => render_url_previews(kv),
            n if n == names::USAGE.as_str() => render_usage(kv),
            _ => render_hex(kv),
        };
        out.insert((*name).to_owned(), rendered);
    }
    Value::Object(out)
}
