//! What the log wraps around every event: its position, time, author and request.

use crate::event::Event;
use crate::ids::{Seq, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A Matrix user, resolved from an access token.
    User(UserId),
    /// The holder of the shared-secret admin token.
    SharedSecretAdmin,
    /// The server itself (start-up work, background tasks).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(u) => f.write_str(u.as_str()),
            Actor::SharedSecretAdmin => f.write_str("shared-secret-admin"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// The id of the HTTP request (or task) that produced an event, for tracing an audit entry
/// back to a request log line. At most 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event as stored: assigned its sequence and time by the log's single writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Position in the log, gap-free from 1.
    pub seq: Seq,
    /// When the writer committed it, ms since the epoch. The only clock projections see.
    pub recorded_at_ms: u64,
    /// Who caused it.
    pub actor: Actor,
    /// Which request produced it.
    pub request_id: RequestId,
    /// The fact itself.
    pub event: Event,
}
