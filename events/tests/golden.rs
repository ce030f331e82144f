#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden fixtures: the frozen bytes of one record of every event variant.
//!
//! Each file `tests/fixtures/v1/<type_name>.hex` holds the hex of the full record
//! (`[format version][bincode][chain]`) that `codec::encode_record` writes for the fixed
//! envelope below. Encoding must reproduce the bytes exactly and decoding them must give the
//! envelope back, so a change of bincode, of serde attributes or of a released event's fields
//! fails here instead of silently forking the log format.
//!
//! To generate the file of a newly *added* variant: `UPDATE_GOLDEN=1 cargo test -p
//! media-ledger-events --test golden`. That only writes missing files; the file of a released
//! variant is never regenerated.

mod common;

use common::{from_hex, id, mxc, to_hex};
use media_ledger_events::codec::{self, Chain, CHAIN_LEN, GENESIS_CHAIN, RECORD_FORMAT_V1};
use media_ledger_events::{
    Actor, AsyncUploadCreated, Authority, BlobDeleted, BlobMoved, BlobSourceDeleted,
    BlobTransferFailed, Envelope, Event, FreedBlob, ImportProgress, ImportStarted, MediaAccessed,
    MediaAttributesSet, MediaExported, MediaImported, MediaMigrated, MediaPurged, MediaPurpose,
    MediaQuarantined, MediaUnquarantined, MediaUploaded, ModerationTarget, PurgedMedia,
    PurgedThumbnail, RemoteMediaCached, RequestId, Seq, Sha256, ThumbnailGenerated,
    ThumbnailMethod, TransferFinished, TransferStarted, UrlPreviewed, UrlPreviewsExpired,
};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One frozen record: the chain it follows and the envelope it holds.
struct Golden {
    prev: Chain,
    env: Envelope,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn fixture_path(env: &Envelope) -> PathBuf {
    fixture_dir().join(format!("{}.hex", env.event.type_name()))
}

/// The fixture of the variant of `event`. The match has no wildcard arm: a new variant does
/// not compile until it is given a fixture here.
fn golden_for(event: &Event) -> Golden {
    match event {
        Event::MediaUploadedV1(_) => golden_media_uploaded(),
        Event::AsyncUploadCreatedV1(_) => golden_async_created(),
        Event::MediaAccessedV1(_) => golden_media_accessed(),
        Event::TransferStartedV1(_) => golden_transfer_started(),
        Event::BlobMovedV1(_) => golden_blob_moved(),
        Event::BlobSourceDeletedV1(_) => golden_blob_source_deleted(),
        Event::BlobTransferFailedV1(_) => golden_blob_transfer_failed(),
        Event::TransferFinishedV1(_) => golden_transfer_finished(),
        Event::ThumbnailGeneratedV1(_) => golden_thumbnail_generated(),
        Event::RemoteMediaCachedV1(_) => golden_remote_media_cached(),
        Event::MediaQuarantinedV1(_) => golden_media_quarantined(),
        Event::MediaUnquarantinedV1(_) => golden_media_unquarantined(),
        Event::MediaAttributesSetV1(_) => golden_media_attributes_set(),
        Event::MediaPurgedV1(_) => golden_media_purged(),
        Event::BlobDeletedV1(_) => golden_blob_deleted(),
        Event::MediaImportedV1(_) => golden_media_imported(),
        Event::UrlPreviewedV1(_) => golden_url_previewed(),
        Event::UrlPreviewsExpiredV1(_) => golden_url_previews_expired(),
        Event::MediaMigratedV1(_) => golden_media_migrated(),
        Event::MediaExportedV1(_) => golden_media_exported(),
        Event::ImportStartedV1(_) => golden_import_started(),
        Event::ImportProgressV1(_) => golden_import_progress(),
    }
}

/// The serde name of the variant of `event` (exhaustive, like [`golden_for`]).
fn variant_name(event: &Event) -> &'static str {
    match event {
        Event::MediaUploadedV1(_) => "MediaUploadedV1",
        Event::AsyncUploadCreatedV1(_) => "AsyncUploadCreatedV1",
        Event::MediaAccessedV1(_) => "MediaAccessedV1",
        Event::TransferStartedV1(_) => "TransferStartedV1",
        Event::BlobMovedV1(_) => "BlobMovedV1",
        Event::BlobSourceDeletedV1(_) => "BlobSourceDeletedV1",
        Event::BlobTransferFailedV1(_) => "BlobTransferFailedV1",
        Event::TransferFinishedV1(_) => "TransferFinishedV1",
        Event::ThumbnailGeneratedV1(_) => "ThumbnailGeneratedV1",
        Event::RemoteMediaCachedV1(_) => "RemoteMediaCachedV1",
        Event::MediaQuarantinedV1(_) => "MediaQuarantinedV1",
        Event::MediaUnquarantinedV1(_) => "MediaUnquarantinedV1",
        Event::MediaAttributesSetV1(_) => "MediaAttributesSetV1",
        Event::MediaPurgedV1(_) => "MediaPurgedV1",
        Event::BlobDeletedV1(_) => "BlobDeletedV1",
        Event::MediaImportedV1(_) => "MediaImportedV1",
        Event::UrlPreviewedV1(_) => "UrlPreviewedV1",
        Event::UrlPreviewsExpiredV1(_) => "UrlPreviewsExpiredV1",
        Event::MediaMigratedV1(_) => "MediaMigratedV1",
        Event::MediaExportedV1(_) => "MediaExportedV1",
        Event::ImportStartedV1(_) => "ImportStartedV1",
        Event::ImportProgressV1(_) => "ImportProgressV1",
    }
}

/// Every fixture; one per variant of `Event`.
fn all_golden() -> Vec<Golden> {
    vec![
        golden_media_uploaded(),
        golden_async_created(),
        golden_media_accessed(),
        golden_transfer_started(),
        golden_blob_moved(),
        golden_blob_source_deleted(),
        golden_blob_transfer_failed(),
        golden_transfer_finished(),
        golden_thumbnail_generated(),
        golden_remote_media_cached(),
        golden_media_quarantined(),
        golden_media_unquarantined(),
        golden_media_attributes_set(),
        golden_media_purged(),
        golden_blob_deleted(),
        golden_media_imported(),
        golden_url_previewed(),
        golden_url_previews_expired(),
        golden_media_migrated(),
        golden_media_exported(),
        golden_import_started(),
        golden_import_progress(),
    ]
}

/// The first record of a log: genesis chain, a Matrix user as actor, one option set and one
/// unset.
fn golden_media_uploaded() -> Golden {
    let alice = id("@alice:example.org");
    Golden {
        prev: GENESIS_CHAIN,
        env: Envelope {
            seq: Seq(1),
            recorded_at_ms: 1_700_000_000_123,
            actor: Actor::User(alice),
            request_id: RequestId("req-0001".into()),
            event: Event::MediaUploadedV1(MediaUploaded {
                media: mxc("mxc://example.org/AbCdEf123_-"),
                sha256: Sha256(std::array::from_fn(|i| i as u8)),
                size_bytes: 1_048_576,
                content_type: Some(id("image/png")),
                upload_name: None,
                uploader: Actor::User(id("@bob:other.example:8448")),
                datastore: id("ds-main"),
                location: id("00/01/000102030405"),
            }),
        },
    }
}

/// A record in the middle of a log (fixed previous chain), by the shared-secret admin, with
/// an empty request id and a port in the server name.
fn golden_async_created() -> Golden {
    Golden {
        prev: [0x5a; CHAIN_LEN],
        env: Envelope {
            seq: Seq(42),
            recorded_at_ms: 1_700_000_000_456,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId(String::new()),
            event: Event::AsyncUploadCreatedV1(AsyncUploadCreated {
                media: mxc("mxc://matrix.example.com:8448/async-0001"),
                owner: id("@bob:matrix.example.com"),
                expires_at_ms: 1_700_000_060_456,
            }),
        },
    }
}

/// A record by the server itself, with a sequence past the one-byte varint range and an
/// IPv6 origin.
fn golden_media_accessed() -> Golden {
    Golden {
        prev: std::array::from_fn(|i| 0xff - i as u8),
        env: Envelope {
            seq: Seq(70_000),
            recorded_at_ms: 1_700_000_999_999,
            actor: Actor::System,
            request_id: RequestId("task-access-flush".into()),
            event: Event::MediaAccessedV1(MediaAccessed {
                media: mxc("mxc://[::1]:8448/xyz"),
                sha256: Sha256([0xab; 32]),
            }),
        },
    }
}

/// The sequence of the transfer the task fixtures below belong to (past the two-byte varint
/// range, so a task id's encoding is pinned for more than small numbers).
const GOLDEN_TASK: Seq = Seq(100_000);

/// An admin starting a transfer with a `before_ts`, as the task's first record.
fn golden_transfer_started() -> Golden {
    Golden {
        prev: [0x11; CHAIN_LEN],
        env: Envelope {
            seq: GOLDEN_TASK,
            recorded_at_ms: 1_700_001_000_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-transfer".into()),
            event: Event::TransferStartedV1(TransferStarted {
                source: id("ds-main"),
                target: id("s3.eu_1"),
                before_ts_ms: Some(1_690_000_000_000),
                blobs_total: 3,
                bytes_total: 5_242_880,
            }),
        },
    }
}

/// A blob switched to its copy by the server's transfer task.
fn golden_blob_moved() -> Golden {
    Golden {
        prev: [0x22; CHAIN_LEN],
        env: Envelope {
            seq: Seq(100_001),
            recorded_at_ms: 1_700_001_000_500,
            actor: Actor::System,
            request_id: RequestId("task-100000".into()),
            event: Event::BlobMovedV1(BlobMoved {
                task: GOLDEN_TASK,
                sha256: Sha256(std::array::from_fn(|i| 0x80 | i as u8)),
                size_bytes: 4_194_304,
                from_datastore: id("ds-main"),
                from_location: id("80/81/808182838485"),
                to_datastore: id("s3.eu_1"),
                to_location: id("media/80/81/808182838485"),
            }),
        },
    }
}

/// The source copy of that blob deleted afterwards.
fn golden_blob_source_deleted() -> Golden {
    Golden {
        prev: [0x33; CHAIN_LEN],
        env: Envelope {
            seq: Seq(100_002),
            recorded_at_ms: 1_700_001_000_600,
            actor: Actor::System,
            request_id: RequestId("task-100000".into()),
            event: Event::BlobSourceDeletedV1(BlobSourceDeleted {
                task: GOLDEN_TASK,
                sha256: Sha256(std::array::from_fn(|i| 0x80 | i as u8)),
                datastore: id("ds-main"),
                location: id("80/81/808182838485"),
            }),
        },
    }
}

/// A final failed attempt, with a non-ASCII error text.
fn golden_blob_transfer_failed() -> Golden {
    Golden {
        prev: [0x44; CHAIN_LEN],
        env: Envelope {
            seq: Seq(100_003),
            recorded_at_ms: 1_700_001_001_000,
            actor: Actor::System,
            request_id: RequestId("task-100000".into()),
            event: Event::BlobTransferFailedV1(BlobTransferFailed {
                task: GOLDEN_TASK,
                sha256: Sha256([0xcd; 32]),
                attempt: 3,
                final_attempt: true,
                error: "read-back digest mismatch — copy discarded".into(),
            }),
        },
    }
}

/// The end of the transfer, with an error message (one blob could not be moved).
fn golden_transfer_finished() -> Golden {
    Golden {
        prev: [0x55; CHAIN_LEN],
        env: Envelope {
            seq: Seq(100_004),
            recorded_at_ms: 1_700_001_002_000,
            actor: Actor::System,
            request_id: RequestId("task-100000".into()),
            event: Event::TransferFinishedV1(TransferFinished {
                task: GOLDEN_TASK,
                error_message: Some("1 of 3 blobs could not be moved".into()),
            }),
        },
    }
}

/// A thumbnail generated for a user's request: sizes past the one-byte varint range, the
/// second `ThumbnailMethod` variant with `animated` set, and a blob in another datastore than
/// the media's (the writer points it at an existing blob of the same bytes).
fn golden_thumbnail_generated() -> Golden {
    Golden {
        prev: [0x66; CHAIN_LEN],
        env: Envelope {
            seq: Seq(200_000),
            recorded_at_ms: 1_700_002_000_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-thumb".into()),
            event: Event::ThumbnailGeneratedV1(ThumbnailGenerated {
                media: mxc("mxc://example.org/AbCdEf123_-"),
                width: 800,
                height: 600,
                method: ThumbnailMethod::Scale,
                animated: true,
                sha256: Sha256(std::array::from_fn(|i| 0x40 + i as u8)),
                size_bytes: 65_536,
                content_type: id("image/jpeg"),
                datastore: id("s3.eu_1"),
                location: id("media/40/41/404142434445"),
            }),
        },
    }
}

/// A remote media cached for a user's download: both options set, a port in the origin and
/// in the base URL it came from.
fn golden_remote_media_cached() -> Golden {
    Golden {
        prev: [0x77; CHAIN_LEN],
        env: Envelope {
            seq: Seq(200_001),
            recorded_at_ms: 1_700_002_000_500,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-remote".into()),
            event: Event::RemoteMediaCachedV1(RemoteMediaCached {
                media: mxc("mxc://remote.example:8448/RemoteId_01"),
                sha256: Sha256(std::array::from_fn(|i| 0xc0 | i as u8)),
                size_bytes: 300_000,
                content_type: Some(id("image/webp")),
                upload_name: Some("holiday.webp".into()),
                fetched_from: "https://matrix.remote.example:8448".into(),
                datastore: id("ds-main"),
                location: id("c0/c1/c0c1c2c3c4c5"),
            }),
        },
    }
}

/// A media Synapse stored itself, read through for a user's download: one option of each
/// kind set, one unset, the homeserver's creation time known.
fn golden_media_imported() -> Golden {
    Golden {
        prev: [0x16; CHAIN_LEN],
        env: Envelope {
            seq: Seq(600_001),
            recorded_at_ms: 1_700_006_000_250,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-import".into()),
            event: Event::MediaImportedV1(MediaImported {
                media: mxc("mxc://example.org/SynapseStored_1"),
                sha256: Sha256(std::array::from_fn(|i| 0x60 | i as u8)),
                size_bytes: 65_536,
                content_type: Some(id("image/gif")),
                upload_name: None,
                origin_homeserver: "http://synapse.internal:8008".into(),
                origin_created_at_ms: Some(1_600_000_000_000),
                datastore: id("ds-main"),
                location: id("60/61/606162636465"),
            }),
        },
    }
}

/// A preview with its image, a non-ASCII title.
fn golden_url_previewed() -> Golden {
    Golden {
        prev: [0x17; CHAIN_LEN],
        env: Envelope {
            seq: Seq(700_001),
            recorded_at_ms: 1_700_007_000_250,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-preview".into()),
            event: Event::UrlPreviewedV1(UrlPreviewed {
                homeserver: id("example.org"),
                url: "https://example.com/article?id=7".into(),
                og: r#"{"og:title":"Ünïcode","og:image":"mxc://example.org/PreviewImage_1","matrix:image:size":4096}"#.into(),
                image: Some(mxc("mxc://example.org/PreviewImage_1")),
            }),
        },
    }
}

/// Two previews expired by an admin's `purge/old`.
fn golden_url_previews_expired() -> Golden {
    Golden {
        prev: [0x18; CHAIN_LEN],
        env: Envelope {
            seq: Seq(800_001),
            recorded_at_ms: 1_700_008_000_250,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-expire".into()),
            event: Event::UrlPreviewsExpiredV1(UrlPreviewsExpired {
                previews: vec![
                    (id("example.org"), "https://example.com/a".into()),
                    (id("other.example"), "http://example.net/b".into()),
                ],
                before_ms: 1_700_008_000_000,
            }),
        },
    }
}

/// A remote media cached by Synapse, migrated with its times; no uploader.
fn golden_media_migrated() -> Golden {
    Golden {
        prev: [0x19; CHAIN_LEN],
        env: Envelope {
            seq: Seq(900_001),
            recorded_at_ms: 1_700_009_000_250,
            actor: Actor::System,
            request_id: RequestId("import-synapse".into()),
            event: Event::MediaMigratedV1(MediaMigrated {
                media: mxc("mxc://remote.example/CachedBySynapse"),
                sha256: Sha256(std::array::from_fn(|i| 0x90 | (i as u8 & 0x0f))),
                size_bytes: 77_777,
                content_type: Some(id("video/mp4")),
                upload_name: Some("clip.mp4".into()),
                uploader: None,
                remote: true,
                created_at_ms: 1_600_000_000_000,
                last_access_ms: 1_690_000_000_000,
                source: "synapse example.org remote_media_cache".into(),
                datastore: id("ds-main"),
                location: id("90/91/909192939495"),
            }),
        },
    }
}

/// A server's export by the shared secret, one quarantined media left out.
fn golden_media_exported() -> Golden {
    Golden {
        prev: [0x20; CHAIN_LEN],
        env: Envelope {
            seq: Seq(1_000_001),
            recorded_at_ms: 1_700_010_000_250,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("export-server".into()),
            event: Event::MediaExportedV1(MediaExported {
                entity: "example.org".into(),
                media_count: 1_234,
                bytes: 987_654_321,
                quarantined_left_out: 3,
                parts: 5,
            }),
        },
    }
}

/// An import task of a PostgreSQL database.
fn golden_import_started() -> Golden {
    Golden {
        prev: [0x21; CHAIN_LEN],
        env: Envelope {
            seq: Seq(1_100_001),
            recorded_at_ms: 1_700_011_000_250,
            actor: Actor::System,
            request_id: RequestId("import-mmr".into()),
            event: Event::ImportStartedV1(ImportStarted {
                kind: "mmr".into(),
                source: "matrix-media-repo database postgres://mmr:***@db/mediarepo".into(),
                rows_total: 1_000_000,
            }),
        },
    }
}

/// The end of an import task that stopped on an error.
fn golden_import_progress() -> Golden {
    Golden {
        prev: [0x22; CHAIN_LEN],
        env: Envelope {
            seq: Seq(1_100_002),
            recorded_at_ms: 1_700_011_000_500,
            actor: Actor::System,
            request_id: RequestId("import-task-1100001".into()),
            event: Event::ImportProgressV1(ImportProgress {
                task: Seq(1_100_001),
                rows_done: 5_000,
                imported: 4_990,
                already_imported: 3,
                skipped: 7,
                bytes: 123_456_789,
                finished: true,
                error: Some("storage: disk full".into()),
            }),
        },
    }
}

/// A homeserver admin quarantining every media of a user: two media (the uploaded one of
/// `golden_media_uploaded` and another), both their hashes blocked, a non-ASCII reason.
fn golden_media_quarantined() -> Golden {
    Golden {
        prev: [0x88; CHAIN_LEN],
        env: Envelope {
            seq: Seq(300_000),
            recorded_at_ms: 1_700_003_000_000,
            actor: Actor::User(id("@admin:example.org")),
            request_id: RequestId("req-quarantine".into()),
            event: Event::MediaQuarantinedV1(MediaQuarantined {
                authority: Authority::HomeserverAdmin(id("example.org")),
                target: ModerationTarget::User(id("@bob:other.example:8448")),
                media: vec![
                    mxc("mxc://example.org/AbCdEf123_-"),
                    mxc("mxc://example.org/Bob_second"),
                ],
                hashes: vec![Sha256(std::array::from_fn(|i| i as u8)), Sha256([0x99; 32])],
                reason: Some("reported — spam".into()),
            }),
        },
    }
}

/// The repository admin lifting the quarantine of one media (a `Media` target, as the writer
/// records every unquarantine), without a reason, its hash unblocked.
fn golden_media_unquarantined() -> Golden {
    Golden {
        prev: [0x99; CHAIN_LEN],
        env: Envelope {
            seq: Seq(300_001),
            recorded_at_ms: 1_700_003_000_500,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-unquarantine".into()),
            event: Event::MediaUnquarantinedV1(MediaUnquarantined {
                authority: Authority::RepositoryAdmin,
                target: ModerationTarget::Media(mxc("mxc://example.org/Bob_second")),
                media: vec![mxc("mxc://example.org/Bob_second")],
                hashes: vec![Sha256([0x99; 32])],
                reason: None,
            }),
        },
    }
}

/// A media pinned by the repository admin, with a reason (the second `MediaPurpose` variant).
fn golden_media_attributes_set() -> Golden {
    Golden {
        prev: [0xaa; CHAIN_LEN],
        env: Envelope {
            seq: Seq(300_002),
            recorded_at_ms: 1_700_003_001_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-attributes".into()),
            event: Event::MediaAttributesSetV1(MediaAttributesSet {
                media: mxc("mxc://remote.example:8448/RemoteId_01"),
                purpose: MediaPurpose::Pinned,
                authority: Authority::RepositoryAdmin,
                reason: Some("legal hold".into()),
            }),
        },
    }
}

/// The sequence of the purge the blob deletion below belongs to.
const GOLDEN_PURGE: Seq = Seq(300_003);

/// A purge of old media (local included) with a `before_ts`: a local media with its thumbnail
/// and a quarantined remote one kept as a tombstone, both blobs of the local one freed (the
/// remote one's is shared with a media still live).
fn golden_media_purged() -> Golden {
    Golden {
        prev: [0xbb; CHAIN_LEN],
        env: Envelope {
            seq: GOLDEN_PURGE,
            recorded_at_ms: 1_700_003_002_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-purge".into()),
            event: Event::MediaPurgedV1(MediaPurged {
                authority: Authority::RepositoryAdmin,
                target: ModerationTarget::Old {
                    include_local: true,
                },
                before_ts_ms: Some(1_690_000_000_000),
                media: vec![
                    PurgedMedia {
                        media: mxc("mxc://example.org/AbCdEf123_-"),
                        sha256: Sha256(std::array::from_fn(|i| i as u8)),
                        size_bytes: 1_048_576,
                        uploader: Actor::User(id("@bob:other.example:8448")),
                        remote: false,
                        datastore: id("ds-main"),
                        created_seq: Seq(1),
                        tombstone: false,
                    },
                    PurgedMedia {
                        media: mxc("mxc://remote.example:8448/Old_remote"),
                        sha256: Sha256([0xee; 32]),
                        size_bytes: 300_000,
                        uploader: Actor::System,
                        remote: true,
                        datastore: id("s3.eu_1"),
                        created_seq: Seq(150_000),
                        tombstone: true,
                    },
                ],
                thumbnails: vec![PurgedThumbnail {
                    media: mxc("mxc://example.org/AbCdEf123_-"),
                    width: 800,
                    height: 600,
                    method: ThumbnailMethod::Crop,
                    animated: true,
                    sha256: Sha256(std::array::from_fn(|i| 0x40 + i as u8)),
                    size_bytes: 65_536,
                    datastore: id("s3.eu_1"),
                }],
                freed: vec![
                    FreedBlob {
                        sha256: Sha256(std::array::from_fn(|i| i as u8)),
                        size_bytes: 1_048_576,
                        datastore: id("ds-main"),
                        location: id("00/01/000102030405"),
                    },
                    FreedBlob {
                        sha256: Sha256(std::array::from_fn(|i| 0x40 + i as u8)),
                        size_bytes: 65_536,
                        datastore: id("s3.eu_1"),
                        location: id("media/40/41/404142434445"),
                    },
                ],
                reason: Some("retention".into()),
            }),
        },
    }
}

/// A freed blob kept by the server's deletion task (an upload re-referred to it meanwhile).
fn golden_blob_deleted() -> Golden {
    Golden {
        prev: [0xcc; CHAIN_LEN],
        env: Envelope {
            seq: Seq(300_004),
            recorded_at_ms: 1_700_003_002_100,
            actor: Actor::System,
            request_id: RequestId("purge-300003".into()),
            event: Event::BlobDeletedV1(BlobDeleted {
                purge: GOLDEN_PURGE,
                sha256: Sha256(std::array::from_fn(|i| i as u8)),
                datastore: id("ds-main"),
                location: id("00/01/000102030405"),
                kept: true,
            }),
        },
    }
}

fn update_requested() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// With `UPDATE_GOLDEN=1`, writes the fixture of `g` if (and only if) it is missing. The file
/// appears atomically and is never replaced (a hard link fails on an existing name), so tests
/// running in parallel neither read a half-written file nor overwrite a frozen one.
fn create_if_missing(g: &Golden) {
    let path = fixture_path(&g.env);
    if !update_requested() || path.exists() {
        return;
    }
    let (bytes, _) = codec::encode_record(&g.prev, &g.env).unwrap();
    std::fs::create_dir_all(fixture_dir()).unwrap();
    let tmp = fixture_dir().join(format!(
        ".{}.{:?}.tmp",
        g.env.event.type_name(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, format!("{}\n", to_hex(&bytes))).unwrap();
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
    std::fs::remove_file(&tmp).unwrap();
}

fn read_fixture(g: &Golden) -> Vec<u8> {
    create_if_missing(g);
    let path = fixture_path(&g.env);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing fixture {} ({e}); generate it once with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    from_hex(&text)
}

#[test]
fn encoding_gives_exactly_the_fixture_bytes() {
    for g in all_golden() {
        let (bytes, chain) = codec::encode_record(&g.prev, &g.env).unwrap();
        // UPDATE_GOLDEN only creates missing fixtures (in `read_fixture`): a frozen one is
        // never rewritten (delete it by hand while a new variant is still unreleased).
        let fixture = read_fixture(&g);
        assert_eq!(
            to_hex(&bytes),
            to_hex(&fixture),
            "encoding of {} changed: released events are frozen, add a new variant instead",
            g.env.event.type_name()
        );
        assert_eq!(fixture.first(), Some(&RECORD_FORMAT_V1));
        assert_eq!(chain.as_slice(), &fixture[fixture.len() - CHAIN_LEN..]);
    }
}

#[test]
fn fixture_bytes_decode_to_the_value() {
    for g in all_golden() {
        let fixture = read_fixture(&g);
        let (env, chain) = codec::decode_record(&g.prev, g.env.seq, &fixture).unwrap();
        assert_eq!(env, g.env);
        assert_eq!(chain.as_slice(), &fixture[fixture.len() - CHAIN_LEN..]);
        assert_eq!(codec::decode_record_unchecked(&fixture).unwrap(), g.env);
    }
}

#[test]
fn fixture_chain_follows_the_documented_formula() {
    for g in all_golden() {
        let fixture = read_fixture(&g);
        let body = common::body_of(&fixture);
        assert_eq!(
            common::expected_chain(&g.prev, g.env.seq.0, body).as_slice(),
            &fixture[body.len()..]
        );
    }
}

#[test]
fn fixtures_are_not_accepted_at_another_position() {
    for g in all_golden() {
        let fixture = read_fixture(&g);
        let next = Seq(g.env.seq.0 + 1);
        assert!(matches!(
            codec::decode_record(&g.prev, next, &fixture),
            Err(codec::CodecError::ChainMismatch)
        ));
        let mut other_prev = g.prev;
        other_prev[0] ^= 1;
        assert!(matches!(
            codec::decode_record(&other_prev, g.env.seq, &fixture),
            Err(codec::CodecError::ChainMismatch)
        ));
    }
}

/// A minimal serde `Deserializer` that only records the variant names an enum asks for, so
/// the test knows every variant of `Event` without an instance of each.
mod introspect {
    use serde::de::{self, Visitor};
    use std::fmt;

    #[derive(Debug)]
    pub struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("introspection stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = Some(variants);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            identifier ignored_any
        }
    }

    /// The variant names of enum `T`, in declaration order.
    pub fn variants<T: de::DeserializeOwned>() -> &'static [&'static str] {
        let mut out = None;
        let _ = T::deserialize(Probe(&mut out));
        out.expect("not an enum")
    }
}

#[test]
fn every_event_variant_has_a_fixture() {
    let declared: Vec<&str> = introspect::variants::<Event>().to_vec();
    let goldens = all_golden();
    let covered: Vec<&str> = goldens.iter().map(|g| variant_name(&g.env.event)).collect();
    assert_eq!(
        covered, declared,
        "all_golden() must hold exactly one fixture per Event variant, in declaration order"
    );
    for g in &goldens {
        // golden_for is the exhaustive match: it must hand out this very fixture.
        let again = golden_for(&g.env.event);
        assert_eq!(again.env, g.env);
        assert_eq!(again.prev, g.prev);
        assert!(
            fixture_path(&g.env).is_file() || update_requested(),
            "missing fixture {}",
            fixture_path(&g.env).display()
        );
    }
    // The variant's position is its encoding: the fixture's byte after the format version and
    // the StoredEnvelope tag is not enough to find it (varints come first), so check instead
    // that bincode's index of each variant equals its declaration index.
    for (index, g) in goldens.iter().enumerate() {
        let bytes = codec::encode(&g.env.event).unwrap();
        assert_eq!(usize::from(bytes[0]), index, "{}", g.env.event.type_name());
    }
}

#[test]
fn actors_of_every_kind_are_frozen() {
    let actors: BTreeSet<&str> = all_golden()
        .iter()
        .map(|g| match g.env.actor {
            Actor::User(_) => "user",
            Actor::SharedSecretAdmin => "admin",
            Actor::System => "system",
        })
        .collect();
    assert_eq!(actors, BTreeSet::from(["admin", "system", "user"]));
}

#[test]
fn no_stray_fixture_files() {
    if update_requested() {
        return;
    }
    let expected: BTreeSet<PathBuf> = all_golden().iter().map(|g| fixture_path(&g.env)).collect();
    let present: BTreeSet<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(present, expected);
}
