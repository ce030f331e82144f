//! The content-check hook (`[content_check]`): before a new local upload or a fetched remote
//! media is recorded, its spooled bytes (up to `max_body_bytes`, else none) are `POST`ed to the
//! operator's checker with what we know of them in headers; the checker answers
//! `{"allow": true}` or `{"allow": false, "reason": "…"}`. A deny refuses the media (nothing is
//! recorded, the spool file goes) and, with `quarantine_on_deny`, quarantines its bytes
//! repository-wide as the system with the checker's reason. A checker that fails, answers
//! badly or not within `timeout_ms` is treated as `failure_policy` says.
//!
//! Headers sent: `X-Media-Ledger-Sha256` (hex), `X-Media-Ledger-Size`, `X-Media-Ledger-Kind`
//! (`upload` or `remote`), `X-Media-Ledger-Media` (the `mxc://` URI), `X-Media-Ledger-Origin`,
//! `X-Media-Ledger-Uploader` (an upload's user, when it has one), `X-Media-Ledger-Body`
//! (`full` or `none`), `Content-Type` (the media's declared type), and `Authorization: Bearer`
//! with `secret` when set.

use crate::config::{ContentCheckConfig, FailurePolicy};
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use media_ledger_events::{
    Actor, Authority, ContentType, MediaRef, ModerationTarget, RequestId, Sha256,
};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Largest checker answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where the media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A local upload.
    Upload,
    /// A remote media fetched over federation.
    Remote,
}

/// What is checked.
pub struct Subject<'a> {
    /// The media id it would get.
    pub media: &'a MediaRef,
    /// Its digest.
    pub sha256: &'a Sha256,
    /// Its length.
    pub size_bytes: u64,
    /// Its declared type.
    pub content_type: Option<&'a ContentType>,
    /// The uploading user, for an upload.
    pub uploader: Option<&'a Actor>,
    /// Upload or remote.
    pub kind: Kind,
    /// The spool file holding the bytes.
    pub path: &'a Path,
    /// The request, for the quarantine's record.
    pub request_id: &'a RequestId,
}

#[derive(Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// The checker client.
pub struct ContentChecker {
    cfg: ContentCheckConfig,
    client: reqwest::Client,
    ledger: Arc<Ledger>,
}

/// The answer to denied content.
pub fn denied() -> ApiError {
    ApiError::Forbidden("this content was refused by the server's content policy".into())
}

impl ContentChecker {
    /// The checker of `cfg`, or none when no `url` is set; an HTTP client that cannot be
    /// built stops start-up (a check silently off would let everything through).
    pub fn new(
        cfg: &ContentCheckConfig,
        ledger: Arc<Ledger>,
    ) -> Result<Option<Arc<Self>>, reqwest::Error> {
        if cfg.url.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Arc::new(Self {
            cfg: cfg.clone(),
            client,
            ledger,
        })))
    }

    /// Whether remote media are checked.
    pub fn checks_remote(&self) -> bool {
        self.cfg.check_remote
    }

    /// Asks the checker about `s`: `Ok` to go on, [`denied`] (after the quarantine, when
    /// configured) or 503 under `failure_policy = "closed"` when it cannot answer.
    pub async fn check(&self, s: Subject<'_>) -> Result<(), ApiError> {
        match self.ask(&s).await {
            Ok(Answer { allow: true, .. }) => Ok(()),
            Ok(Answer {
                allow: false,
                reason,
            }) => {
                let reason = reason
                    .map(|r| r.chars().take(500).collect::<String>())
                    .unwrap_or_else(|| "refused by the content check".into());
                tracing::info!(media = %s.media, sha256 = %s.sha256, %reason, "content check denied the media");
                if self.cfg.quarantine_on_deny {
                    self.quarantine(&s, reason).await;
                }
                Err(denied())
            }
            Err(cause) => match self.cfg.failure_policy {
                FailurePolicy::Open => {
                    tracing::warn!(media = %s.media, %cause, "content check failed; allowed (failure_policy = open)");
                    Ok(())
                }
                FailurePolicy::Closed => Err(ApiError::unavailable(
                    "the content check is unavailable; try again later",
                    cause,
                )),
            },
        }
    }

    async fn ask(&self, s: &Subject<'_>) -> Result<Answer, String> {
        let full = s.size_bytes <= self.cfg.max_body_bytes;
        let body = if full {
            let file = tokio::fs::File::open(s.path)
                .await
                .map_err(|e| format!("reading the spool file: {e}"))?;
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
        } else {
            reqwest::Body::from(Vec::new())
        };
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header("X-Media-Ledger-Sha256", s.sha256.to_string())
            .header("X-Media-Ledger-Size", s.size_bytes.to_string())
            .header(
                "X-Media-Ledger-Kind",
                match s.kind {
                    Kind::Upload => "upload",
                    Kind::Remote => "remote",
                },
            )
            .header("X-Media-Ledger-Media", s.media.to_string())
            .header("X-Media-Ledger-Origin", s.media.origin.as_str())
            .header("X-Media-Ledger-Body", if full { "full" } else { "none" })
            .header(
                reqwest::header::CONTENT_TYPE,
                s.content_type
                    .map_or_else(|| "application/octet-stream".to_owned(), |c| c.served()),
            );
        if full {
            req = req.header(reqwest::header::CONTENT_LENGTH, s.size_bytes);
        }
        if let Some(Actor::User(u)) = s.uploader {
            req = req.header("X-Media-Ledger-Uploader", u.as_str());
        }
        if !self.cfg.secret.is_empty() {
            req = req.bearer_auth(&self.cfg.secret);
        }
        let resp = req.body(body).send().await.map_err(|e| {
            // Without the URL: it may carry a key the operator put in it.
            let e = e.without_url();
            let e: &dyn std::error::Error = &e;
            crate::homeserver_check::error_chain(e)
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the checker answered {status}"));
        }
        let mut resp = resp;
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            buf.extend_from_slice(&chunk);
            if buf.len() > MAX_ANSWER_BYTES {
                return Err("the checker's answer is too large".into());
            }
        }
        serde_json::from_slice(&buf).map_err(|e| format!("the checker's answer: {e}"))
    }

    /// Quarantines the bytes of `s` repository-wide as the system (every part of the act).
    async fn quarantine(&self, s: &Subject<'_>, reason: String) {
        loop {
            let cmd = Command::Quarantine {
                authority: Authority::RepositoryAdmin,
                target: ModerationTarget::Hash(*s.sha256),
                seeds: Vec::new(),
                reason: Some(format!("content check: {reason}")),
            };
            match self
                .ledger
                .submit(Actor::System, s.request_id.clone(), cmd)
                .await
            {
                Ok(c) => {
                    tracing::info!(sha256 = %s.sha256, seq = c.seq.0, "content check: bytes quarantined")
                }
                Err(LedgerError::Conflict(Conflict::NothingToDo)) => return,
                Err(e) => {
                    tracing::warn!(sha256 = %s.sha256, error = %e, "content check: cannot quarantine the bytes");
                    return;
                }
            }
        }
    }
}
