//! The read side of the Synapse media admin API: one media's `media_info`, a user's media
//! (paged and sorted as Synapse pages and sorts them) and the per-user statistics, shaped as
//! Synapse shapes them from the media index (and, for `quarantined_by`, the act that
//! quarantined a media, read from the log).

use crate::config::Config;
use crate::error::ApiError;
use crate::ledger::{Ledger, LedgerError};
use crate::moderation::select;
use media_ledger_events::{Actor, MediaRef, ServerName, UserId};
use media_ledger_projections::media_index::{MediaKind, MediaRecord};
use media_ledger_projections::{moderation, names, origin_prefix};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One media with what Synapse shows of it.
pub struct Listed {
    /// The media.
    pub media: MediaRef,
    /// Its record.
    pub record: MediaRecord,
    /// Who quarantined it (the actor of the act), while it is quarantined.
    pub quarantined_by: Option<String>,
}

/// Who quarantined `media` (the actor of the act that did), if it is quarantined.
pub fn quarantined_by(
    ledger: &Ledger,
    media: &MediaRef,
    record: &MediaRecord,
) -> Result<Option<String>, LedgerError> {
    if !record.quarantined {
        return Ok(None);
    }
    let seq = moderation::quarantine_act(&ledger.view(names::MODERATION)?, media)?;
    let actor = match seq {
        Some(seq) => ledger.event_at(seq)?.map(|e| e.actor.to_string()),
        None => None,
    };
    // Quarantined by a same-hash act without a recorded seq: still say it is quarantined.
    Ok(Some(actor.unwrap_or_else(|| Actor::System.to_string())))
}

/// Whether `record` was created under the unauthenticated-media freeze (Synapse's
/// `authenticated`: served only on the authenticated endpoints).
fn authenticated(config: &Config, record: &MediaRecord) -> bool {
    let d = &config.downloads;
    d.freeze_unauthenticated && record.created_at_ms >= d.freeze_unauthenticated_after_ms
}

fn nonzero(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        json!(ms)
    }
}

/// `media_info` of `GET /_synapse/admin/v1/media/{server}/{id}`; `local`: the media is the
/// request's homeserver's (Synapse's two shapes differ in `media_origin`, `user_id`,
/// `filesystem_id` and `safe_from_quarantine`).
pub fn media_info(config: &Config, l: &Listed, local: bool) -> Value {
    let r = &l.record;
    let user = match (&r.uploader, local) {
        (Actor::User(u), true) => json!(u.as_str()),
        _ => Value::Null,
    };
    json!({
        "media_origin": if local { Value::Null } else { json!(l.media.origin.as_str()) },
        "user_id": user,
        "media_id": l.media.media_id.as_str(),
        "media_type": r.content_type.as_ref().map(|c| c.as_str()),
        "media_length": r.size_bytes,
        "upload_name": r.upload_name,
        "created_ts": r.created_at_ms,
        "filesystem_id": if local { Value::Null } else { json!(l.media.media_id.as_str()) },
        "url_cache": Value::Null,
        "last_access_ts": nonzero(r.last_access_ms),
        "quarantined_by": l.quarantined_by,
        "authenticated": authenticated(config, r),
        "safe_from_quarantine": if local { json!(r.pinned) } else { Value::Null },
        "sha256": r.sha256.to_hex(),
    })
}

/// One entry of `GET /_synapse/admin/v1/users/{userId}/media` (Synapse's `LocalMedia`).
pub fn user_media_entry(config: &Config, l: &Listed) -> Value {
    let r = &l.record;
    let user = match &r.uploader {
        Actor::User(u) => json!(u.as_str()),
        _ => Value::Null,
    };
    json!({
        "media_id": l.media.media_id.as_str(),
        "media_type": r.content_type.as_ref().map(|c| c.as_str()),
        "media_length": r.size_bytes,
        "upload_name": r.upload_name,
        "created_ts": r.created_at_ms,
        "url_cache": Value::Null,
        "last_access_ts": nonzero(r.last_access_ms),
        "quarantined_by": l.quarantined_by,
        "safe_from_quarantine": r.pinned,
        "user_id": user,
        "authenticated": authenticated(config, r),
        "sha256": r.sha256.to_hex(),
    })
}

/// The sort orders of a user's media (Synapse's `MediaSortOrder`).
const MEDIA_ORDERS: [&str; 8] = [
    "media_id",
    "upload_name",
    "created_ts",
    "last_access_ts",
    "media_length",
    "media_type",
    "quarantined_by",
    "safe_from_quarantine",
];

/// The paging query of a user's media: `from`, `limit` (default 100), `order_by`, `dir`.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    from: Option<i64>,
    limit: Option<i64>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// A checked page request.
pub struct Page {
    /// The first row (0-based).
    pub from: usize,
    /// At most this many rows.
    pub limit: usize,
    order_by: &'static str,
    backwards: bool,
}

fn non_negative(v: Option<i64>, default: usize, name: &str) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(n) => usize::try_from(n).map_err(|_| {
            ApiError::InvalidParam(format!(
                "Query parameter {name} must be a string representing a positive integer."
            ))
        }),
    }
}

/// `dir`: `f` (the default) or `b`.
fn backwards(dir: Option<&str>) -> Result<bool, ApiError> {
    match dir {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(d) => Err(ApiError::InvalidParam(format!(
            "Query parameter \"dir\" must be one of [\"b\", \"f\"], not {d:?}"
        ))),
    }
}

/// One of `allowed`, else `M_INVALID_PARAM`.
fn one_of(value: &str, allowed: &[&'static str]) -> Result<&'static str, ApiError> {
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .ok_or_else(|| {
            ApiError::InvalidParam(format!(
                "Query parameter \"order_by\" must be one of {allowed:?}"
            ))
        })
}

impl PageQuery {
    /// Checks the query as Synapse does: with neither `order_by` nor `dir`, newest first.
    pub fn page(&self) -> Result<Page, ApiError> {
        let from = non_negative(self.from, 0, "from")?;
        let limit = non_negative(self.limit, 100, "limit")?;
        let (order_by, backwards) = if self.order_by.is_none() && self.dir.is_none() {
            ("created_ts", true)
        } else {
            let order = self.order_by.as_deref().unwrap_or("created_ts");
            (
                one_of(order, &MEDIA_ORDERS)?,
                backwards(self.dir.as_deref())?,
            )
        };
        Ok(Page {
            from,
            limit,
            order_by,
            backwards,
        })
    }
}

/// Compares two media by the column `order_by`.
fn by_column(order_by: &str, a: &Listed, b: &Listed) -> Ordering {
    let (x, y) = (&a.record, &b.record);
    match order_by {
        "media_id" => Ordering::Equal,
        "upload_name" => x.upload_name.cmp(&y.upload_name),
        "last_access_ts" => x.last_access_ms.cmp(&y.last_access_ms),
        "media_length" => x.size_bytes.cmp(&y.size_bytes),
        "media_type" => x
            .content_type
            .as_ref()
            .map(|c| c.as_str())
            .cmp(&y.content_type.as_ref().map(|c| c.as_str())),
        "quarantined_by" => a.quarantined_by.cmp(&b.quarantined_by),
        "safe_from_quarantine" => x.pinned.cmp(&y.pinned),
        _ => x.created_at_ms.cmp(&y.created_at_ms),
    }
}

/// The live media `user` uploaded to their server (with who quarantined each), sorted by
/// `page` (ties by media id ascending, as Synapse's `ORDER BY …, media_id ASC`): the page and
/// the total.
pub fn user_media(
    ledger: &Ledger,
    user: &UserId,
    page: &Page,
) -> Result<(Vec<Listed>, usize), LedgerError> {
    let Ok(origin) = user.server_name().parse::<ServerName>() else {
        return Ok((Vec::new(), 0));
    };
    let mut all = Vec::new();
    let who = Actor::User(user.clone());
    select::visit_records(ledger, &origin_prefix(&origin), |m, r| {
        if r.uploader == who && r.kind == MediaKind::Local {
            all.push((m, r));
        }
    })?;
    let mut listed = Vec::with_capacity(all.len());
    for (media, record) in all {
        let quarantined_by = quarantined_by(ledger, &media, &record)?;
        listed.push(Listed {
            media,
            record,
            quarantined_by,
        });
    }
    listed.sort_by(|a, b| {
        let o = by_column(page.order_by, a, b);
        let o = if page.backwards { o.reverse() } else { o };
        o.then_with(|| a.media.media_id.as_str().cmp(b.media.media_id.as_str()))
    });
    if page.order_by == "media_id" && page.backwards {
        listed.reverse();
    }
    let total = listed.len();
    let page_of: Vec<Listed> = listed
        .into_iter()
        .skip(page.from)
        .take(page.limit)
        .collect();
    Ok((page_of, total))
}

/// `next_token` as Synapse adds it: when `from + limit < total`.
pub fn next_token(from: usize, limit: usize, shown: usize, total: usize) -> Option<usize> {
    (from.saturating_add(limit) < total).then_some(from + shown)
}

/// The query of `GET /_synapse/admin/v1/statistics/users/media`.
#[derive(Deserialize, Default)]
pub struct StatsQuery {
    order_by: Option<String>,
    from: Option<i64>,
    limit: Option<i64>,
    from_ts: Option<i64>,
    until_ts: Option<i64>,
    search_term: Option<String>,
    dir: Option<String>,
}

/// The sort orders of the statistics (Synapse's `UserSortOrder` values it allows there).
const STATS_ORDERS: [&str; 4] = ["media_length", "media_count", "user_id", "displayname"];

/// The statistics' answer for the local users of `origin` (Synapse's checks and shape; no
/// displayname is known here: `null`, sorted as the user id).
pub fn user_statistics(
    ledger: &Ledger,
    origin: &ServerName,
    q: StatsQuery,
) -> Result<Value, ApiError> {
    let order_by = one_of(q.order_by.as_deref().unwrap_or("user_id"), &STATS_ORDERS)?;
    let from = non_negative(q.from, 0, "from")?;
    let limit = non_negative(q.limit, 100, "limit")?;
    let from_ts = non_negative(q.from_ts, 0, "from_ts")? as u64;
    let until_ts = match q.until_ts {
        None => None,
        Some(t) => {
            let t = non_negative(Some(t), 0, "until_ts")? as u64;
            if t <= from_ts {
                return Err(ApiError::InvalidParam(
                    "Query parameter until_ts must be greater than from_ts.".into(),
                ));
            }
            Some(t)
        }
    };
    if q.search_term.as_deref() == Some("") {
        return Err(ApiError::InvalidParam(
            "Query parameter search_term cannot be an empty string.".into(),
        ));
    }
    let backwards = backwards(q.dir.as_deref())?;
    let search = q.search_term.map(|s| s.to_lowercase());
    let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    select::visit_records(ledger, &origin_prefix(origin), |_, r| {
        let Actor::User(u) = &r.uploader else { return };
        let in_time = r.created_at_ms >= from_ts && until_ts.is_none_or(|t| r.created_at_ms <= t);
        let found = search
            .as_ref()
            .is_none_or(|s| u.as_str().to_lowercase().contains(s.as_str()));
        if r.kind == MediaKind::Local && in_time && found {
            let e = per.entry(u.to_string()).or_default();
            e.0 += 1;
            e.1 += r.size_bytes;
        }
    })?;
    let mut rows: Vec<(String, u64, u64)> = per.into_iter().map(|(u, (c, l))| (u, c, l)).collect();
    rows.sort_by(|a, b| {
        let o = match order_by {
            "media_length" => a.2.cmp(&b.2),
            "media_count" => a.1.cmp(&b.1),
            _ => a.0.cmp(&b.0),
        };
        let o = if backwards { o.reverse() } else { o };
        o.then_with(|| a.0.cmp(&b.0))
    });
    let total = rows.len();
    let users: Vec<Value> = rows
        .into_iter()
        .skip(from)
        .take(limit)
        .map(|(user_id, count, length)| {
            json!({ "user_id": user_id, "displayname": Value::Null, "media_count": count, "media_length": length })
        })
        .collect();
    let mut out = json!({ "users": users, "total": total });
    if let Some(n) = next_token(from, limit, users_len(&out), total) {
        out["next_token"] = json!(n);
    }
    Ok(out)
}

fn users_len(v: &Value) -> usize {
    v["users"].as_array().map_or(0, Vec::len)
}
