#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP-level suites, linked into one test binary: every suite drives real servers over
//! loopback (real RocksDB, real files, s3s-fs for S3), one module per capability. One binary
//! instead of one per file keeps CI's link time and disk use small (each binary links the whole
//! server). Run one suite with `cargo test --test server moderation_purge::`.
//!
//! Every server holds its own metrics registry and hooks (`server::StartOptions`), so suites
//! that count or inject share the binary too. One suite stays in a binary of its own:
//! `advisories` (its memory bounds read the whole process's resident size).

mod common;

mod abuse_check;
mod abuse_quota;
mod abuse_rate;
mod abuse_retention;
mod act_size;
mod admin;
mod appservice;
mod archive;
mod async_upload;
mod auth;
mod auth_homeserver;
mod auth_scope;
mod bad_input;
mod blob_integrity;
mod caddy;
mod cluster;
mod cluster_kill;
mod edge;
mod errors;
mod fault_injection;
mod federation;
mod freeze;
mod metrics;
mod mmr_compat;
mod model;
mod moderation_purge;
mod moderation_quarantine;
mod nginx;
mod operator_messages;
mod pg_smoke;
mod proxy;
mod purge_resume;
mod read_through;
mod recovery;
mod restart;
mod s3;
mod signing_keys;
mod synapse_admin;
mod thumbnail_bounds;
mod thumbnail_output;
mod thumbnails;
mod transfer;
mod upload_download;
mod url_preview;
