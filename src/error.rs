//! The one mapping from failures to Matrix errors.
//!
//! Every handler returns `Result<_, ApiError>`; this file alone knows errcodes and statuses.
//! Internal causes are logged here, once, and never put in a response body.

use crate::ledger::{Conflict, LedgerError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail with, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The media (or route target) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than the configured limit.
    #[error("upload exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// What a remote site answered is larger than our limit (a link preview's page): 502
    /// `M_TOO_LARGE`, as Synapse answers.
    #[error("the remote content exceeds the limit of {limit_bytes} bytes")]
    UpstreamTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// An async upload was not filled in time.
    #[error("media has not been uploaded yet")]
    NotYetUploaded,
    /// The async media id was already filled.
    #[error("media already uploaded")]
    CannotOverwrite,
    /// No access token.
    #[error("missing access token")]
    MissingToken,
    /// The token is not known.
    #[error("unknown access token")]
    UnknownToken,
    /// The homeserver refused the token (whoami answered 401 or 403): its status, errcode and
    /// message are passed on, with its `soft_logout` when it gave one (an expired refreshable
    /// token: the client refreshes instead of treating the session as destroyed).
    #[error("{message}")]
    TokenRefused {
        /// The homeserver's status (401 or 403).
        status: StatusCode,
        /// The homeserver's errcode.
        errcode: String,
        /// The homeserver's message.
        message: String,
        /// The homeserver's `soft_logout`, if it said.
        soft_logout: Option<bool>,
    },
    /// A guest account on an endpoint guests may not use (uploads, reservations, config,
    /// moderation): 403 `M_GUEST_ACCESS_FORBIDDEN`, as Synapse answers.
    #[error("Guest access not allowed")]
    GuestAccessForbidden,
    /// A server-to-server request whose signature does not check out.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A parameter is malformed.
    #[error("{0}")]
    InvalidParam(String),
    /// The body is not the JSON the endpoint takes.
    #[error("{0}")]
    NotJson(String),
    /// A required parameter is absent.
    #[error("{0}")]
    MissingParam(String),
    /// Too many requests or reservations.
    #[error("{0}")]
    LimitExceeded(String),
    /// A bounded queue is full (thumbnail generation): 429 `M_LIMIT_EXCEEDED` with
    /// `retry_after_ms` in the body and `Retry-After` (seconds, rounded up).
    #[error("{what}")]
    Busy {
        /// What the client is told.
        what: &'static str,
        /// When to try again.
        retry_after_ms: u64,
    },
    /// A per-user limit (quota, upload window) would be crossed: 403 `M_USER_LIMIT_EXCEEDED`
    /// (spec v1.18, MSC4335) with `info_uri` where configured and `can_upgrade: false`; a
    /// client that does not know the code sees an ordinary 403.
    #[error("{message}")]
    UserLimitExceeded {
        /// What was crossed.
        message: String,
        /// `uploads.limit_info_uri`.
        info_uri: Option<String>,
    },
    /// No such endpoint.
    #[error("unrecognized request")]
    Unrecognized,
    /// A host that names no homeserver, with `server.refuse_unknown_hosts`: 400
    /// `M_UNRECOGNIZED`.
    #[error("this server serves no homeserver for host {0:?}")]
    UnknownHost(String),
    /// The request body stopped arriving (no bytes for `server.body_idle_timeout_ms`).
    #[error("the request body stalled: no bytes within the idle timeout")]
    BodyStalled,
    /// The endpoint exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A `Range` that lies outside the content.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The content length, for `Content-Range: bytes */len`.
        size_bytes: u64,
    },
    /// The media cannot be thumbnailed (not an image, too large, undecodable).
    #[error("{0}")]
    CannotThumbnail(String),
    /// A backend answered badly or not at all (S3, a remote server, a homeserver): the client
    /// sees `message` (fixed per kind), the cause is logged.
    #[error("{message}: {cause}")]
    BadGateway {
        /// The fixed text of the answer.
        message: &'static str,
        /// What went wrong (logged, never answered).
        cause: String,
    },
    /// A dependency (homeserver, datastore, a halted projection) cannot serve right now: the
    /// client sees `message` (fixed per kind), the cause is logged.
    #[error("{message}: {cause}")]
    Unavailable {
        /// The fixed text of the answer.
        message: &'static str,
        /// What went wrong (logged, never answered).
        cause: String,
    },
    /// A bug or an I/O failure; the cause is logged, the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Builds an internal error from any cause, logging it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// 503 answering `message`; `cause` is logged.
    pub fn unavailable(message: &'static str, cause: impl std::fmt::Display) -> Self {
        ApiError::Unavailable {
            message,
            cause: cause.to_string(),
        }
    }

    /// 502 answering `message`; `cause` is logged.
    pub fn bad_gateway(message: &'static str, cause: impl std::fmt::Display) -> Self {
        ApiError::BadGateway {
            message,
            cause: cause.to_string(),
        }
    }

    /// A failure reading the request body: a stall past the idle timeout is 408, anything
    /// else (a cut connection, bad chunked framing) 400 `M_INVALID_PARAM`.
    pub fn body(e: axum::Error) -> Self {
        let stalled = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<tower_http::timeout::TimeoutError>());
        if stalled {
            ApiError::BodyStalled
        } else {
            ApiError::InvalidParam(format!("reading the request body: {e}"))
        }
    }

    /// The Matrix errcode.
    pub fn errcode(&self) -> &str {
        match self {
            ApiError::TokenRefused { errcode, .. } => errcode,
            ApiError::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            ApiError::NotFound(_) => "M_NOT_FOUND",
            ApiError::TooLarge { .. } | ApiError::UpstreamTooLarge { .. } => "M_TOO_LARGE",
            ApiError::NotYetUploaded => "M_NOT_YET_UPLOADED",
            ApiError::CannotOverwrite => "M_CANNOT_OVERWRITE_MEDIA",
            ApiError::MissingToken => "M_MISSING_TOKEN",
            ApiError::UnknownToken => "M_UNKNOWN_TOKEN",
            ApiError::Forbidden(_) => "M_FORBIDDEN",
            ApiError::UserLimitExceeded { .. } => "M_USER_LIMIT_EXCEEDED",
            ApiError::Unauthorized(_) => "M_UNAUTHORIZED",
            ApiError::InvalidParam(_) => "M_INVALID_PARAM",
            ApiError::MissingParam(_) => "M_MISSING_PARAM",
            ApiError::NotJson(_) => "M_NOT_JSON",
            ApiError::LimitExceeded(_) | ApiError::Busy { .. } => "M_LIMIT_EXCEEDED",
            ApiError::Unrecognized | ApiError::MethodNotAllowed | ApiError::UnknownHost(_) => {
                "M_UNRECOGNIZED"
            }
            ApiError::RangeNotSatisfiable { .. } => "M_INVALID_PARAM",
            ApiError::Unavailable { .. }
            | ApiError::BadGateway { .. }
            | ApiError::Internal(_)
            | ApiError::BodyStalled
            | ApiError::CannotThumbnail(_) => "M_UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::Unrecognized => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::CannotOverwrite => StatusCode::CONFLICT,
            ApiError::MissingToken | ApiError::UnknownToken | ApiError::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::TokenRefused { status, .. } => *status,
            ApiError::Forbidden(_)
            | ApiError::GuestAccessForbidden
            | ApiError::UserLimitExceeded { .. } => StatusCode::FORBIDDEN,
            ApiError::InvalidParam(_)
            | ApiError::NotJson(_)
            | ApiError::MissingParam(_)
            | ApiError::UnknownHost(_)
            | ApiError::CannotThumbnail(_) => StatusCode::BAD_REQUEST,
            ApiError::LimitExceeded(_) | ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway { .. } | ApiError::UpstreamTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error".to_owned()
            }
            ApiError::Unavailable { message, cause } | ApiError::BadGateway { message, cause } => {
                tracing::warn!(%cause, status = status.as_u16(), "{message}");
                (*message).to_owned()
            }
            other => {
                tracing::debug!(error = %other, status = status.as_u16(), "request refused");
                other.to_string()
            }
        };
        let mut body = json!({ "errcode": self.errcode(), "error": message });
        match &self {
            ApiError::Busy { retry_after_ms, .. } => body["retry_after_ms"] = json!(retry_after_ms),
            ApiError::UserLimitExceeded { info_uri, .. } => {
                if let Some(uri) = info_uri {
                    body["info_uri"] = json!(uri);
                }
                body["can_upgrade"] = json!(false);
            }
            ApiError::TokenRefused {
                soft_logout: Some(soft),
                ..
            } => body["soft_logout"] = json!(soft),
            _ => {}
        }
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            ApiError::RangeNotSatisfiable { size_bytes } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size_bytes}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::Busy { retry_after_ms, .. } => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_ms.div_ceil(1000).max(1)),
                );
            }
            _ => {}
        }
        resp
    }
}

/// The one mapping of ledger failures to client answers. A conflict a caller expects as an
/// outcome (a concurrent generation won, the act changed nothing) is matched by that caller
/// before converting; what reaches here is an answer.
impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Conflict(c) => c.into(),
            LedgerError::Halted(name) => ApiError::Unavailable {
                message: "writes of this kind are suspended: see the server log",
                cause: format!("projection {name} has halted"),
            },
            LedgerError::Closed => ApiError::Unavailable {
                message: "the server is shutting down",
                cause: "ledger closed".into(),
            },
            LedgerError::SharedLogUnavailable(cause) => ApiError::Unavailable {
                message: "the cluster's database is unavailable; nothing was recorded, try again",
                cause,
            },
            e @ (LedgerError::Storage(_)
            | LedgerError::Codec(_)
            | LedgerError::Corrupt { .. }
            | LedgerError::Projection(_)) => ApiError::internal(e),
        }
    }
}

impl From<Conflict> for ApiError {
    fn from(c: Conflict) -> Self {
        match c {
            Conflict::Quarantined => crate::media::quarantined_error(),
            Conflict::AlreadyUploaded => ApiError::CannotOverwrite,
            Conflict::NotPending => {
                ApiError::NotFound("no pending upload for this media id".into())
            }
            Conflict::NotOwner => ApiError::Forbidden("media id reserved by another user".into()),
            Conflict::UnknownMedia => ApiError::NotFound("media not found".into()),
            Conflict::NotUploader => {
                ApiError::Forbidden("only the uploader or an admin may purge this media".into())
            }
            Conflict::RepositoryQuarantine | Conflict::OutOfScope => {
                ApiError::Forbidden(c.to_string())
            }
            Conflict::QuotaExceeded => ApiError::UserLimitExceeded {
                message: "this upload would exceed your storage quota".into(),
                info_uri: None,
            },
            Conflict::PendingQuota => ApiError::UserLimitExceeded {
                message: "you hold as many unfilled reservations as your quota allows".into(),
                info_uri: None,
            },
            Conflict::TooManyPending => ApiError::LimitExceeded(
                "too many pending uploads; fill or let some expire first".into(),
            ),
            Conflict::TransferRunning => ApiError::InvalidParam(format!(
                "cannot start this transfer: {c}; wait for it to finish"
            )),
            Conflict::MediaExists
            | Conflict::BlobElsewhere
            | Conflict::NoSuchTask
            | Conflict::WrongEvent
            | Conflict::ThumbnailExists
            | Conflict::NothingToDo
            | Conflict::RecordTooLarge => ApiError::Internal(format!("unexpected conflict: {c}")),
        }
    }
}

impl From<media_ledger_projections::ProjectionError> for ApiError {
    fn from(e: media_ledger_projections::ProjectionError) -> Self {
        ApiError::internal(e)
    }
}

impl From<crate::datastore::DatastoreError> for ApiError {
    fn from(e: crate::datastore::DatastoreError) -> Self {
        match e {
            crate::datastore::DatastoreError::Missing(loc) => {
                ApiError::Internal(format!("blob missing from its datastore: {loc}"))
            }
            crate::datastore::DatastoreError::Backend { context, message } => {
                ApiError::BadGateway {
                    message: "the storage backend failed",
                    cause: format!("while {context}: {message}"),
                }
            }
            other => ApiError::internal(other),
        }
    }
}
