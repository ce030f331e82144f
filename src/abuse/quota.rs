//! Upload quotas and time-window limits: which limits an uploader has (the first
//! `[[uploads.quotas]]` rule matching them, every `[[uploads.window_limits]]`), how much of
//! them is left (read from the `usage` projection: one key per user, no scan), and the
//! MSC4034 figures. The upload path streams at most what is left; the writer checks the same
//! limits again at commit (`ledger::validate::quota_allows`).

use crate::config::{Config, QuotaRule};
use crate::error::ApiError;
use crate::ledger::{Ledger, UploadQuota};
use media_ledger_events::UserId;
use media_ledger_projections::{names, usage};

/// The rule of `user` (`admin`: a repository admin, exempt unless a rule names them exactly).
pub fn rule<'c>(config: &'c Config, user: &UserId, admin: bool) -> Option<&'c QuotaRule> {
    config
        .uploads
        .quotas
        .iter()
        .find(|r| r.applies_to(user, admin))
}

/// The limits of an upload by `user`; `None` when nothing limits them.
pub fn for_uploader(config: &Config, user: &UserId, admin: bool) -> Option<UploadQuota> {
    let rule = rule(config, user, admin);
    let windows: Vec<(u64, u64)> = if admin {
        Vec::new()
    } else {
        config
            .uploads
            .window_limits
            .iter()
            .map(|w| (w.time_period.0, w.max_bytes))
            .collect()
    };
    let (max_bytes, max_files) = rule.map_or((0, 0), |r| (r.max_bytes, r.max_files));
    if max_bytes == 0 && max_files == 0 && windows.is_empty() {
        return None;
    }
    Some(UploadQuota {
        user: user.clone(),
        max_bytes,
        max_files,
        windows,
    })
}

/// The answer to a crossed limit.
pub fn exceeded(config: &Config, message: impl Into<String>) -> ApiError {
    ApiError::UserLimitExceeded {
        message: message.into(),
        info_uri: config.uploads.limit_info_uri.clone(),
    }
}

/// How many bytes the next upload under `q` may have at `now_ms`, or the refusal when none
/// (the file count is full, or a byte limit is reached).
pub fn room(
    config: &Config,
    ledger: &Ledger,
    q: &UploadQuota,
    now_ms: u64,
) -> Result<u64, ApiError> {
    // A halted projection cannot vouch for the figures: 503 before a byte is stored.
    let used = usage::get(&ledger.view_current(names::USAGE)?, &q.user)?;
    if q.max_files > 0 && used.files >= q.max_files {
        return Err(exceeded(
            config,
            format!("you have stored {} files, your quota", used.files),
        ));
    }
    let mut room = u64::MAX;
    if q.max_bytes > 0 {
        room = room.min(q.max_bytes.saturating_sub(used.bytes));
        if room == 0 {
            return Err(exceeded(
                config,
                format!("you have stored {} bytes, your quota", used.bytes),
            ));
        }
    }
    for &(window, max) in &q.windows {
        let left = max.saturating_sub(used.window.within(now_ms, window));
        if left == 0 {
            return Err(exceeded(
                config,
                format!(
                    "you have uploaded {max} bytes in the last {} seconds, the limit",
                    window / 1000
                ),
            ));
        }
        room = room.min(left);
    }
    Ok(room)
}

/// The MSC4034 figures of `user`: used bytes and files, and their quota's limits.
pub fn usage_of(ledger: &Ledger, user: &UserId) -> Result<usage::UserUsage, ApiError> {
    Ok(usage::get(&ledger.view_current(names::USAGE)?, user)?)
}
