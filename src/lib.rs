//! media-ledger: an event-sourced Matrix media repository.
//!
//! Crate map (the data path, top to bottom):
//! - [`http`]: axum routes, extractors and response headers; the only code that speaks HTTP.
//! - [`auth`]: access token → user, admin checks.
//! - [`media`]: the command side (stream an upload into a datastore, then record it) and the
//!   read side (records, waits on pending uploads, locating and opening blobs).
//! - [`datastore`]: where blobs live (`file`, `s3`), behind the [`datastore::Datastore`] trait.
//! - [`transfer`]: resumable moves of blobs between datastores, as task events.
//! - [`ledger`]: the RocksDB event log, its single writer and the projection state.
//! - [`config`], [`error`], [`server`]: configuration, the Matrix error mapping, start/stop.
//!
//! The pure halves live in the `events` and `projections` crates.

pub mod abuse;
pub mod auth;
pub mod blob_check;
pub mod blob_lock;
pub mod blob_place;
pub mod clock;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod datastore;
pub mod error;
pub mod export;
pub mod federation;
pub mod homeserver_check;
pub mod http;
pub mod import;
pub mod ledger;
pub mod media;
pub mod metrics;
pub mod moderation;
pub mod preview;
pub mod read_through;
pub mod remote;
pub mod server;
pub mod sweep;
pub mod thumbnail;
pub mod transfer;
pub mod upload_waiters;
