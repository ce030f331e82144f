#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP-level suites, linked into one test binary: every suite drives real servers over
//! loopback (real RocksDB, real files, s3s-fs for S3), one module per capability. One binary
//! instead of one per file keeps CI's link time and disk use small (each binary links the whole
//! server). Run one suite with `cargo test --test server moderation_purge::`.
//!
//! Three suites stay in binaries of their own because they touch process-wide state:
//! `metrics` (the registry is global), `purge_resume` (the global deletion-skip hook) and
//! `advisories` (its memory bounds read the whole process's resident size).

mod common;

mod act_size;
mod admin;
mod async_upload;
mod auth;
mod auth_scope;
mod bad_input;
mod blob_integrity;
mod edge;
mod errors;
mod fault_injection;
mod federation;
mod model;
mod moderation_purge;
mod moderation_quarantine;
mod recovery;
mod restart;
mod s3;
mod thumbnail_bounds;
mod thumbnails;
mod transfer;
mod upload_download;
