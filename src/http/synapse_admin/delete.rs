//! The deletions of the Synapse media admin API: one media, a page of a user's media, local
//! media by date and size (`keep_profiles` asks the homeserver for its users' avatars), and the
//! remote cache. Each is a purge through the moderation service (the writer decides what goes:
//! protected media stays; a quarantined one becomes a tombstone only where Synapse deletes it),
//! answered with Synapse's shapes.

use super::{act, home, is_mine, listing, local_user};
use crate::error::ApiError;
use crate::http::extract::{MPath, MQuery, MediaPath, UserPath};
use crate::http::moderation::{live_record, run_select};
use crate::http::moderator::{need, Moderator};
use crate::http::State;
use crate::moderation::{select, Act, PurgeSpec};
use axum::extract::State as S;
use axum::Json;
use listing::PageQuery;
use media_ledger_events::{MediaRef, ModerationTarget};
use media_ledger_projections::media_index::MediaKind;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;

/// A `before_ts` below this is in 1970 in milliseconds: Synapse refuses it as seconds.
const MIN_BEFORE_TS: i64 = 30_000_000_000;

/// A purge answered as Synapse answers deletions: `{"deleted_media": [ids], "total": n}`.
async fn delete(
    state: &State,
    act: &Act,
    spec: PurgeSpec,
    candidates: Vec<MediaRef>,
) -> Result<Json<Value>, ApiError> {
    let deleted = state.moderation.purge(act, spec, candidates).await?;
    let ids: Vec<&str> = deleted.iter().map(|d| d.media_id.as_str()).collect();
    Ok(Json(json!({ "deleted_media": ids, "total": ids.len() })))
}

fn purge_spec(target: ModerationTarget, before: Option<u64>, quarantined: bool) -> PurgeSpec {
    PurgeSpec {
        target,
        before_ts_ms: before,
        include_quarantined: quarantined,
        keep_shared: false,
        accessed_before_ms: None,
    }
}

/// `DELETE media/{server}/{media_id}`: local media only (400 "Can only delete local media"),
/// 404 for an unknown one; a quarantined media becomes a tombstone, a protected one stays.
pub(super) async fn delete_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    if !is_mine(&m, media.origin.as_str()) {
        return Err(ApiError::InvalidParam("Can only delete local media".into()));
    }
    live_record(&state, &media)?;
    let spec = purge_spec(ModerationTarget::Media(media.clone()), None, true);
    delete(&state, &act(&m), spec, vec![media]).await
}

/// `DELETE users/{user_id}/media?from&limit&order_by&dir`: deletes that page of the user's
/// media; `{"deleted_media": [ids], "total": n}`.
pub(super) async fn delete_user_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    UserPath(user): UserPath,
    MQuery(q): MQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    local_user(&m, &user)?;
    let page = q.page()?;
    let u = user.clone();
    let (listed, _) = run_select(&state, move |l| listing::user_media(l, &u, &page)).await?;
    let candidates = listed.into_iter().map(|l| l.media).collect();
    let spec = purge_spec(ModerationTarget::User(user), None, true);
    delete(&state, &act(&m), spec, candidates).await
}

/// The query of `media/delete`.
#[derive(Deserialize, Default)]
pub(super) struct DeleteQuery {
    before_ts: Option<i64>,
    size_gt: Option<i64>,
    keep_profiles: Option<String>,
}

/// Synapse's `parse_boolean`: `true` or `false`.
fn boolean(v: Option<&str>, default: bool, name: &str) -> Result<bool, ApiError> {
    match v {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::InvalidParam(format!(
            "Boolean query parameter {name:?} must be one of ['true', 'false']"
        ))),
    }
}

/// A required `before_ts` in milliseconds (Synapse's checks).
fn before_ts(v: Option<i64>) -> Result<u64, ApiError> {
    let t = v.ok_or_else(|| {
        ApiError::MissingParam("Missing integer query parameter 'before_ts'".into())
    })?;
    if t < 0 {
        return Err(ApiError::InvalidParam(
            "Query parameter before_ts must be a positive integer.".into(),
        ));
    }
    if t < MIN_BEFORE_TS {
        return Err(ApiError::InvalidParam(
            "Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.".into(),
        ));
    }
    Ok(t as u64)
}

/// `POST media/delete?before_ts&size_gt&keep_profiles`: the request's homeserver's local media
/// last accessed before `before_ts`, larger than `size_gt` bytes, neither quarantined nor
/// protected; with `keep_profiles` (the default) not a user's avatar as the homeserver lists
/// them. `{"deleted_media": [ids], "total": n}`.
pub(super) async fn delete_by_date(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MQuery(q): MQuery<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    delete_old_local(&state, &m, q).await
}

/// `POST media/{server}/delete?…`: Synapse's older path of [`delete_by_date`]; `server` must
/// be the request's homeserver (400 "Can only delete local media").
pub(super) async fn delete_by_date_legacy(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MPath(server): MPath<String>,
    MQuery(q): MQuery<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    if !is_mine(&m, &server) {
        return Err(ApiError::InvalidParam("Can only delete local media".into()));
    }
    delete_old_local(&state, &m, q).await
}

async fn delete_old_local(
    state: &State,
    m: &Moderator<need::Admin>,
    q: DeleteQuery,
) -> Result<Json<Value>, ApiError> {
    let before = before_ts(q.before_ts)?;
    let size_gt = u64::try_from(q.size_gt.unwrap_or(0)).map_err(|_| {
        ApiError::InvalidParam("Query parameter size_gt must be a positive integer.".into())
    })?;
    let keep_profiles = boolean(q.keep_profiles.as_deref(), true, "keep_profiles")?;
    let avatars: HashSet<MediaRef> = if keep_profiles {
        // Only a token the homeserver resolved goes to it: never the shared secret or a
        // static token.
        let token = m.caller.homeserver_token().ok_or_else(|| {
            ApiError::InvalidParam(
                "keep_profiles needs a homeserver admin's token; pass keep_profiles=false".into(),
            )
        })?;
        let listed = state
            .moderation
            .homeserver
            .profile_avatars(&m.caller.homeserver, token)
            .await?;
        select::parse_mxcs(&listed).into_iter().collect()
    } else {
        HashSet::new()
    };
    let origin = home(m).clone();
    let candidates = run_select(state, move |l| {
        let mut out = Vec::new();
        select::visit_records(
            l,
            &media_ledger_projections::origin_prefix(&origin),
            |md, r| {
                if r.kind == MediaKind::Local
                    && r.last_access_ms < before
                    && r.size_bytes > size_gt
                    && !r.quarantined
                    && !r.pinned
                    && !avatars.contains(&md)
                {
                    out.push(md);
                }
            },
        )?;
        Ok(out)
    })
    .await?;
    let spec = purge_spec(
        ModerationTarget::Old {
            include_local: true,
        },
        Some(before),
        false,
    );
    delete(state, &act(m), spec, candidates).await
}

/// The query of `purge_media_cache`.
#[derive(Deserialize, Default)]
pub(super) struct CacheQuery {
    before_ts: Option<i64>,
}

/// `POST purge_media_cache?before_ts`: cached remote media last accessed before `before_ts`,
/// not quarantined; `{"deleted": n}`. Repository admins only: the cache is every
/// homeserver's.
pub(super) async fn purge_media_cache(
    S(state): S<State>,
    m: Moderator<need::Repository>,
    MQuery(q): MQuery<CacheQuery>,
) -> Result<Json<Value>, ApiError> {
    let before = before_ts(q.before_ts)?;
    let candidates = run_select(&state, move |l| select::old(l, before, false)).await?;
    let spec = purge_spec(
        ModerationTarget::Old {
            include_local: false,
        },
        Some(before),
        false,
    );
    let removed = state
        .moderation
        .purge(&m.act(None), spec, candidates)
        .await?;
    Ok(Json(json!({ "deleted": removed.len() })))
}
