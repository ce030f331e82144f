//! Federation: our server signing key and its publication, X-Matrix request signatures, and
//! fetching media from other servers.
//!
//! - [`keys`]: the ed25519 signing key (Synapse's key file format), canonical JSON, signing
//!   and verifying JSON objects, our `/_matrix/key/v2/server` answer.
//! - [`keyfile`]: the key file (Synapse's format), importing Synapse's key, one key per
//!   homeserver.
//! - [`diagnose`]: operator messages about our key (a remote's refusal, the start-up check
//!   that each homeserver publishes it).
//! - [`xmatrix`]: the `Authorization: X-Matrix …` header of server-to-server requests.

pub mod cache;
pub mod client;
pub mod diagnose;
pub mod discovery;
pub mod keyfile;
pub mod keys;
pub mod multipart;
pub mod srv;
pub mod xmatrix;

/// Why a federation operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The key file cannot be read, written or parsed.
    #[error("signing key: {0}")]
    Key(String),
    /// A signature is missing, malformed or wrong.
    #[error("signature: {0}")]
    Signature(String),
    /// JSON that cannot be made canonical or does not have the expected shape.
    #[error("json: {0}")]
    Json(String),
    /// An `X-Matrix` header that cannot be parsed.
    #[error("authorization header: {0}")]
    Header(String),
}
