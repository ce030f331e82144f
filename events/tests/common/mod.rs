//! Shared helpers of the `events` integration tests: fixed values, proptest strategies for
//! valid ids and envelopes, hex, and hand-made records with a valid chain.
#![allow(dead_code)]

use media_ledger_events::codec::{self, Chain, CHAIN_LEN};
use media_ledger_events::{
    Actor, AsyncUploadCreated, Authority, BlobDeleted, BlobLocation, BlobMoved, BlobSourceDeleted,
    BlobTransferFailed, ContentType, DatastoreId, Envelope, Event, FreedBlob, ImportProgress,
    ImportStarted, MediaAccessed, MediaAttributesSet, MediaExported, MediaId, MediaImported,
    MediaMigrated, MediaPurged, MediaPurpose, MediaQuarantined, MediaRef, MediaUnquarantined,
    MediaUploaded, ModerationTarget, PurgedMedia, PurgedThumbnail, RemoteMediaCached, RequestId,
    Seq, ServerName, Sha256, ThumbnailGenerated, ThumbnailMethod, TransferFinished,
    TransferStarted, UrlPreviewed, UrlPreviewsExpired, UserId,
};
use proptest::prelude::*;
use sha2::Digest;

/// Parses a valid id of any type (panics on an invalid one: these are test constants).
pub fn id<T>(s: &str) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub fn mxc(s: &str) -> MediaRef {
    id(s)
}

/// Lowercase hex of any bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

/// Parses hex written by [`to_hex`], ignoring surrounding whitespace.
pub fn from_hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The chain value the codec documents: SHA-256(prev ‖ seq big-endian ‖ body).
pub fn expected_chain(prev: &Chain, seq: u64, body: &[u8]) -> Chain {
    let mut h = sha2::Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// A record made of arbitrary `body` bytes followed by the *correct* chain value, so that
/// `decode_record` gets past the checksum and has to judge the body itself.
pub fn record_with_valid_chain(prev: &Chain, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = body.to_vec();
    r.extend_from_slice(&expected_chain(prev, seq, body));
    r
}

/// The body (everything before the chain) of a record.
pub fn body_of(record: &[u8]) -> &[u8] {
    &record[..record.len() - CHAIN_LEN]
}

/// How many variants `Event` has; [`variant_index`] does not compile until it is told of a new
/// one, and then this must follow.
pub const VARIANTS: usize = 22;

/// The declaration index of the variant of `event` (no wildcard arm: a new variant must be
/// added here, and then to [`event`] and [`sample_envelopes`]).
pub fn variant_index(event: &Event) -> usize {
    match event {
        Event::MediaUploadedV1(_) => 0,
        Event::AsyncUploadCreatedV1(_) => 1,
        Event::MediaAccessedV1(_) => 2,
        Event::TransferStartedV1(_) => 3,
        Event::BlobMovedV1(_) => 4,
        Event::BlobSourceDeletedV1(_) => 5,
        Event::BlobTransferFailedV1(_) => 6,
        Event::TransferFinishedV1(_) => 7,
        Event::ThumbnailGeneratedV1(_) => 8,
        Event::RemoteMediaCachedV1(_) => 9,
        Event::MediaQuarantinedV1(_) => 10,
        Event::MediaUnquarantinedV1(_) => 11,
        Event::MediaAttributesSetV1(_) => 12,
        Event::MediaPurgedV1(_) => 13,
        Event::BlobDeletedV1(_) => 14,
        Event::MediaImportedV1(_) => 15,
        Event::UrlPreviewedV1(_) => 16,
        Event::UrlPreviewsExpiredV1(_) => 17,
        Event::MediaMigratedV1(_) => 18,
        Event::MediaExportedV1(_) => 19,
        Event::ImportStartedV1(_) => 20,
        Event::ImportProgressV1(_) => 21,
    }
}

/// A simple valid envelope of each variant, for the non-property tests: a log whose records
/// 4 to 8 are a transfer (started, one failed attempt, moved, source deleted, finished),
/// whose 9th is a thumbnail of the first media and whose 10th caches a remote media. Records
/// 11 to 15 are moderation: the first media quarantined and released again by an admin of
/// its homeserver, the remote media pinned, then the first media purged by its uploader (with its thumbnail, freeing both
/// blobs) and its blob deleted.
pub fn sample_envelopes() -> Vec<Envelope> {
    vec![
        Envelope {
            seq: Seq(1),
            recorded_at_ms: 1_700_000_000_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-1".into()),
            event: Event::MediaUploadedV1(MediaUploaded {
                media: mxc("mxc://example.org/abcDEF123"),
                sha256: Sha256([7; 32]),
                size_bytes: 12_345,
                content_type: Some(id("image/png")),
                upload_name: Some("cat.png".into()),
                uploader: Actor::User(id("@alice:example.org")),
                datastore: id("local"),
                location: id("07/07/0707"),
            }),
        },
        Envelope {
            seq: Seq(2),
            recorded_at_ms: 1_700_000_000_500,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-2".into()),
            event: Event::AsyncUploadCreatedV1(AsyncUploadCreated {
                media: mxc("mxc://example.org/pending1"),
                owner: id("@bob:example.org"),
                expires_at_ms: 1_700_000_060_000,
            }),
        },
        Envelope {
            seq: Seq(3),
            recorded_at_ms: 1_700_000_001_000,
            actor: Actor::System,
            request_id: RequestId("access-flush".into()),
            event: Event::MediaAccessedV1(MediaAccessed {
                media: mxc("mxc://example.org/abcDEF123"),
                sha256: Sha256([7; 32]),
            }),
        },
        Envelope {
            seq: Seq(4),
            recorded_at_ms: 1_700_000_002_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-4".into()),
            event: Event::TransferStartedV1(TransferStarted {
                source: id("local"),
                target: id("remote"),
                before_ts_ms: None,
                blobs_total: 1,
                bytes_total: 12_345,
            }),
        },
        Envelope {
            seq: Seq(5),
            recorded_at_ms: 1_700_000_002_100,
            actor: Actor::System,
            request_id: RequestId("task-4".into()),
            event: Event::BlobTransferFailedV1(BlobTransferFailed {
                task: Seq(4),
                sha256: Sha256([7; 32]),
                attempt: 1,
                final_attempt: false,
                error: "timeout".into(),
            }),
        },
        Envelope {
            seq: Seq(6),
            recorded_at_ms: 1_700_000_002_200,
            actor: Actor::System,
            request_id: RequestId("task-4".into()),
            event: Event::BlobMovedV1(BlobMoved {
                task: Seq(4),
                sha256: Sha256([7; 32]),
                size_bytes: 12_345,
                from_datastore: id("local"),
                from_location: id("07/07/0707"),
                to_datastore: id("remote"),
                to_location: id("07/07/0707"),
            }),
        },
        Envelope {
            seq: Seq(7),
            recorded_at_ms: 1_700_000_002_300,
            actor: Actor::System,
            request_id: RequestId("task-4".into()),
            event: Event::BlobSourceDeletedV1(BlobSourceDeleted {
                task: Seq(4),
                sha256: Sha256([7; 32]),
                datastore: id("local"),
                location: id("07/07/0707"),
            }),
        },
        Envelope {
            seq: Seq(8),
            recorded_at_ms: 1_700_000_002_400,
            actor: Actor::System,
            request_id: RequestId("task-4".into()),
            event: Event::TransferFinishedV1(TransferFinished {
                task: Seq(4),
                error_message: None,
            }),
        },
        Envelope {
            seq: Seq(9),
            recorded_at_ms: 1_700_000_003_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-9".into()),
            event: Event::ThumbnailGeneratedV1(ThumbnailGenerated {
                media: mxc("mxc://example.org/abcDEF123"),
                width: 320,
                height: 240,
                method: ThumbnailMethod::Scale,
                animated: false,
                sha256: Sha256([9; 32]),
                size_bytes: 2_048,
                content_type: id("image/png"),
                datastore: id("remote"),
                location: id("09/09/0909"),
            }),
        },
        Envelope {
            seq: Seq(10),
            recorded_at_ms: 1_700_000_004_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-10".into()),
            event: Event::RemoteMediaCachedV1(RemoteMediaCached {
                media: mxc("mxc://remote.example/xyz789"),
                sha256: Sha256([10; 32]),
                size_bytes: 4_096,
                content_type: Some(id("image/jpeg")),
                upload_name: None,
                fetched_from: "https://remote.example:8448".into(),
                datastore: id("local"),
                location: id("0a/0a/0a0a"),
            }),
        },
        Envelope {
            seq: Seq(11),
            recorded_at_ms: 1_700_000_005_000,
            actor: Actor::User(id("@admin:example.org")),
            request_id: RequestId("req-11".into()),
            event: Event::MediaQuarantinedV1(MediaQuarantined {
                authority: Authority::HomeserverAdmin(id("example.org")),
                target: ModerationTarget::Media(mxc("mxc://example.org/abcDEF123")),
                media: vec![mxc("mxc://example.org/abcDEF123")],
                hashes: vec![Sha256([7; 32])],
                reason: Some("spam".into()),
            }),
        },
        Envelope {
            seq: Seq(12),
            recorded_at_ms: 1_700_000_005_500,
            actor: Actor::User(id("@admin:example.org")),
            request_id: RequestId("req-12".into()),
            event: Event::MediaUnquarantinedV1(MediaUnquarantined {
                authority: Authority::HomeserverAdmin(id("example.org")),
                target: ModerationTarget::Media(mxc("mxc://example.org/abcDEF123")),
                media: vec![mxc("mxc://example.org/abcDEF123")],
                hashes: vec![Sha256([7; 32])],
                reason: None,
            }),
        },
        Envelope {
            seq: Seq(13),
            recorded_at_ms: 1_700_000_006_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-13".into()),
            event: Event::MediaAttributesSetV1(MediaAttributesSet {
                media: mxc("mxc://remote.example/xyz789"),
                purpose: MediaPurpose::Pinned,
                authority: Authority::RepositoryAdmin,
                reason: Some("evidence".into()),
            }),
        },
        Envelope {
            seq: Seq(14),
            recorded_at_ms: 1_700_000_007_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-14".into()),
            event: Event::MediaPurgedV1(MediaPurged {
                authority: Authority::Uploader,
                target: ModerationTarget::Media(mxc("mxc://example.org/abcDEF123")),
                before_ts_ms: None,
                media: vec![PurgedMedia {
                    media: mxc("mxc://example.org/abcDEF123"),
                    sha256: Sha256([7; 32]),
                    size_bytes: 12_345,
                    uploader: Actor::User(id("@alice:example.org")),
                    remote: false,
                    datastore: id("remote"),
                    created_seq: Seq(1),
                    tombstone: false,
                }],
                thumbnails: vec![PurgedThumbnail {
                    media: mxc("mxc://example.org/abcDEF123"),
                    width: 320,
                    height: 240,
                    method: ThumbnailMethod::Scale,
                    animated: false,
                    sha256: Sha256([9; 32]),
                    size_bytes: 2_048,
                    datastore: id("remote"),
                }],
                freed: vec![
                    FreedBlob {
                        sha256: Sha256([7; 32]),
                        size_bytes: 12_345,
                        datastore: id("remote"),
                        location: id("07/07/0707"),
                    },
                    FreedBlob {
                        sha256: Sha256([9; 32]),
                        size_bytes: 2_048,
                        datastore: id("remote"),
                        location: id("09/09/0909"),
                    },
                ],
                reason: None,
            }),
        },
        Envelope {
            seq: Seq(15),
            recorded_at_ms: 1_700_000_007_100,
            actor: Actor::System,
            request_id: RequestId("purge-14".into()),
            event: Event::BlobDeletedV1(BlobDeleted {
                purge: Seq(14),
                sha256: Sha256([7; 32]),
                datastore: id("remote"),
                location: id("07/07/0707"),
                kept: false,
            }),
        },
        Envelope {
            seq: Seq(16),
            recorded_at_ms: 1_700_000_008_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-16".into()),
            event: Event::MediaImportedV1(MediaImported {
                media: mxc("mxc://example.org/fromSynapse1"),
                sha256: Sha256([16; 32]),
                size_bytes: 777,
                content_type: Some(id("image/png")),
                upload_name: None,
                origin_homeserver: "http://127.0.0.1:8008".into(),
                origin_created_at_ms: None,
                datastore: id("local"),
                location: id("10/10/1010"),
            }),
        },
        Envelope {
            seq: Seq(17),
            recorded_at_ms: 1_700_000_009_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("req-17".into()),
            event: Event::UrlPreviewedV1(UrlPreviewed {
                homeserver: id("example.org"),
                url: "https://example.com/page".into(),
                og: r#"{"og:title":"A page","og:image":"mxc://example.org/fromSynapse1"}"#.into(),
                image: Some(mxc("mxc://example.org/fromSynapse1")),
            }),
        },
        Envelope {
            seq: Seq(18),
            recorded_at_ms: 1_700_000_010_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("req-18".into()),
            event: Event::UrlPreviewsExpiredV1(UrlPreviewsExpired {
                previews: vec![(id("example.org"), "https://example.com/page".into())],
                before_ms: 1_700_000_009_500,
            }),
        },
        Envelope {
            seq: Seq(19),
            recorded_at_ms: 1_700_000_011_000,
            actor: Actor::SharedSecretAdmin,
            request_id: RequestId("import-1".into()),
            event: Event::MediaMigratedV1(MediaMigrated {
                media: mxc("mxc://example.org/fromSynapseStore"),
                sha256: Sha256([19; 32]),
                size_bytes: 1234,
                content_type: Some(id("image/jpeg")),
                upload_name: Some("photo.jpg".into()),
                uploader: Some(id("@alice:example.org")),
                remote: false,
                created_at_ms: 1_600_000_000_000,
                last_access_ms: 1_650_000_000_000,
                source: "synapse example.org local_media_repository".into(),
                datastore: id("local"),
                location: id("13/13/1313"),
            }),
        },
        Envelope {
            seq: Seq(20),
            recorded_at_ms: 1_700_000_012_000,
            actor: Actor::User(id("@alice:example.org")),
            request_id: RequestId("export-1".into()),
            event: Event::MediaExportedV1(MediaExported {
                entity: "@alice:example.org".into(),
                media_count: 2,
                bytes: 4096,
                quarantined_left_out: 1,
                parts: 2,
            }),
        },
        Envelope {
            seq: Seq(21),
            recorded_at_ms: 1_700_000_013_000,
            actor: Actor::System,
            request_id: RequestId("import-synapse".into()),
            event: Event::ImportStartedV1(ImportStarted {
                kind: "synapse".into(),
                source: "Synapse database /var/lib/synapse/homeserver.db".into(),
                rows_total: 2,
            }),
        },
        Envelope {
            seq: Seq(22),
            recorded_at_ms: 1_700_000_014_000,
            actor: Actor::System,
            request_id: RequestId("import-task-21".into()),
            event: Event::ImportProgressV1(ImportProgress {
                task: Seq(21),
                rows_done: 2,
                imported: 1,
                already_imported: 0,
                skipped: 1,
                bytes: 1234,
                finished: true,
                error: None,
            }),
        },
    ]
}

// ---- proptest strategies: every value they produce is valid by the ids' grammar ----

pub fn server_name() -> impl Strategy<Value = ServerName> {
    prop_oneof![
        6 => "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,4})?",
        1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]{1,5})?",
        1 => (any::<[u16; 8]>(), proptest::option::of(1u16..)).prop_map(|(s, port)| {
            let ip = std::net::Ipv6Addr::from(s);
            match port {
                Some(p) => format!("[{ip}]:{p}"),
                None => format!("[{ip}]"),
            }
        }),
    ]
    .prop_map(|s| s.parse().unwrap())
}

pub fn media_id() -> impl Strategy<Value = MediaId> {
    "[A-Za-z0-9_-]{1,32}".prop_map(|s| s.parse().unwrap())
}

pub fn media_ref() -> impl Strategy<Value = MediaRef> {
    (server_name(), media_id()).prop_map(|(o, m)| MediaRef::new(o, m))
}

pub fn user_id() -> impl Strategy<Value = UserId> {
    // Localpart: printable ASCII except ':' (the historical grammar the ids accept).
    ("[!-9;-~]{1,16}", server_name()).prop_map(|(l, s)| format!("@{l}:{s}").parse().unwrap())
}

pub fn datastore_id() -> impl Strategy<Value = DatastoreId> {
    "[A-Za-z0-9_.-]{1,64}".prop_map(|s| s.parse().unwrap())
}

pub fn blob_location() -> impl Strategy<Value = BlobLocation> {
    // A segment never starts with '.', so it is never "." or "..".
    "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,10}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,10}){0,4}"
        .prop_map(|s| s.parse().unwrap())
}

pub fn content_type() -> impl Strategy<Value = ContentType> {
    "[a-z]{1,12}/[a-z0-9.+-]{1,16}(; ?[a-z]{1,8}=[a-z0-9-]{1,8})?".prop_map(|s| s.parse().unwrap())
}

pub fn sha256() -> impl Strategy<Value = Sha256> {
    any::<[u8; 32]>().prop_map(Sha256)
}

pub fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        user_id().prop_map(Actor::User),
        Just(Actor::SharedSecretAdmin),
        Just(Actor::System),
    ]
}

pub fn request_id() -> impl Strategy<Value = RequestId> {
    "[ -~]{0,64}".prop_map(RequestId)
}

pub fn media_uploaded() -> impl Strategy<Value = MediaUploaded> {
    (
        media_ref(),
        sha256(),
        any::<u64>(),
        proptest::option::of(content_type()),
        proptest::option::of(any::<String>()),
        actor(),
        datastore_id(),
        blob_location(),
    )
        .prop_map(
            |(
                media,
                sha256,
                size_bytes,
                content_type,
                upload_name,
                uploader,
                datastore,
                location,
            )| {
                MediaUploaded {
                    media,
                    sha256,
                    size_bytes,
                    content_type,
                    upload_name,
                    uploader,
                    datastore,
                    location,
                }
            },
        )
}

pub fn seq() -> impl Strategy<Value = Seq> {
    any::<u64>().prop_map(Seq)
}

pub fn transfer_started() -> impl Strategy<Value = TransferStarted> {
    (
        datastore_id(),
        datastore_id(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(source, target, before_ts_ms, blobs_total, bytes_total)| TransferStarted {
                source,
                target,
                before_ts_ms,
                blobs_total,
                bytes_total,
            },
        )
}

pub fn blob_moved() -> impl Strategy<Value = BlobMoved> {
    (
        seq(),
        sha256(),
        any::<u64>(),
        datastore_id(),
        blob_location(),
        datastore_id(),
        blob_location(),
    )
        .prop_map(
            |(
                task,
                sha256,
                size_bytes,
                from_datastore,
                from_location,
                to_datastore,
                to_location,
            )| {
                BlobMoved {
                    task,
                    sha256,
                    size_bytes,
                    from_datastore,
                    from_location,
                    to_datastore,
                    to_location,
                }
            },
        )
}

pub fn blob_source_deleted() -> impl Strategy<Value = BlobSourceDeleted> {
    (seq(), sha256(), datastore_id(), blob_location()).prop_map(
        |(task, sha256, datastore, location)| BlobSourceDeleted {
            task,
            sha256,
            datastore,
            location,
        },
    )
}

pub fn blob_transfer_failed() -> impl Strategy<Value = BlobTransferFailed> {
    (
        seq(),
        sha256(),
        any::<u32>(),
        any::<bool>(),
        any::<String>(),
    )
        .prop_map(
            |(task, sha256, attempt, final_attempt, error)| BlobTransferFailed {
                task,
                sha256,
                attempt,
                final_attempt,
                error,
            },
        )
}

pub fn transfer_finished() -> impl Strategy<Value = TransferFinished> {
    (seq(), proptest::option::of(any::<String>())).prop_map(|(task, error_message)| {
        TransferFinished {
            task,
            error_message,
        }
    })
}

pub fn thumbnail_method() -> impl Strategy<Value = ThumbnailMethod> {
    prop_oneof![Just(ThumbnailMethod::Crop), Just(ThumbnailMethod::Scale)]
}

pub fn thumbnail_generated() -> impl Strategy<Value = ThumbnailGenerated> {
    (
        media_ref(),
        any::<u32>(),
        any::<u32>(),
        thumbnail_method(),
        any::<bool>(),
        sha256(),
        any::<u64>(),
        content_type(),
        datastore_id(),
        blob_location(),
    )
        .prop_map(
            |(
                media,
                width,
                height,
                method,
                animated,
                sha256,
                size_bytes,
                content_type,
                datastore,
                location,
            )| {
                ThumbnailGenerated {
                    media,
                    width,
                    height,
                    method,
                    animated,
                    sha256,
                    size_bytes,
                    content_type,
                    datastore,
                    location,
                }
            },
        )
}

pub fn remote_media_cached() -> impl Strategy<Value = RemoteMediaCached> {
    (
        media_ref(),
        sha256(),
        any::<u64>(),
        proptest::option::of(content_type()),
        proptest::option::of(any::<String>()),
        any::<String>(),
        datastore_id(),
        blob_location(),
    )
        .prop_map(
            |(
                media,
                sha256,
                size_bytes,
                content_type,
                upload_name,
                fetched_from,
                datastore,
                location,
            )| {
                RemoteMediaCached {
                    media,
                    sha256,
                    size_bytes,
                    content_type,
                    upload_name,
                    fetched_from,
                    datastore,
                    location,
                }
            },
        )
}

pub fn media_imported() -> impl Strategy<Value = MediaImported> {
    (
        media_ref(),
        sha256(),
        any::<u64>(),
        proptest::option::of(content_type()),
        proptest::option::of(any::<String>()),
        any::<String>(),
        proptest::option::of(any::<u64>()),
        datastore_id(),
        blob_location(),
    )
        .prop_map(
            |(
                media,
                sha256,
                size_bytes,
                content_type,
                upload_name,
                origin_homeserver,
                origin_created_at_ms,
                datastore,
                location,
            )| MediaImported {
                media,
                sha256,
                size_bytes,
                content_type,
                upload_name,
                origin_homeserver,
                origin_created_at_ms,
                datastore,
                location,
            },
        )
}

pub fn authority() -> impl Strategy<Value = Authority> {
    prop_oneof![
        Just(Authority::RepositoryAdmin),
        server_name().prop_map(Authority::HomeserverAdmin),
        Just(Authority::Uploader),
        Just(Authority::Import),
    ]
}

pub fn moderation_target() -> impl Strategy<Value = ModerationTarget> {
    prop_oneof![
        media_ref().prop_map(ModerationTarget::Media),
        user_id().prop_map(ModerationTarget::User),
        server_name().prop_map(ModerationTarget::Server),
        any::<String>().prop_map(ModerationTarget::Room),
        Just(ModerationTarget::Quarantined),
        Just(ModerationTarget::Remote),
        any::<bool>().prop_map(|include_local| ModerationTarget::Old { include_local }),
        sha256().prop_map(ModerationTarget::Hash),
        Just(ModerationTarget::Thumbnails),
    ]
}

pub fn media_purpose() -> impl Strategy<Value = MediaPurpose> {
    prop_oneof![Just(MediaPurpose::None), Just(MediaPurpose::Pinned)]
}

pub fn media_quarantined() -> impl Strategy<Value = MediaQuarantined> {
    (
        authority(),
        moderation_target(),
        proptest::collection::vec(media_ref(), 0..4),
        proptest::collection::vec(sha256(), 0..4),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(authority, target, media, hashes, reason)| MediaQuarantined {
                authority,
                target,
                media,
                hashes,
                reason,
            },
        )
}

pub fn media_unquarantined() -> impl Strategy<Value = MediaUnquarantined> {
    (
        authority(),
        moderation_target(),
        proptest::collection::vec(media_ref(), 0..4),
        proptest::collection::vec(sha256(), 0..4),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(authority, target, media, hashes, reason)| MediaUnquarantined {
                authority,
                target,
                media,
                hashes,
                reason,
            },
        )
}

pub fn media_attributes_set() -> impl Strategy<Value = MediaAttributesSet> {
    (
        media_ref(),
        media_purpose(),
        authority(),
        proptest::option::of(any::<String>()),
    )
        .prop_map(|(media, purpose, authority, reason)| MediaAttributesSet {
            media,
            purpose,
            authority,
            reason,
        })
}

pub fn purged_media() -> impl Strategy<Value = PurgedMedia> {
    (
        media_ref(),
        sha256(),
        any::<u64>(),
        actor(),
        any::<bool>(),
        datastore_id(),
        seq(),
        any::<bool>(),
    )
        .prop_map(
            |(media, sha256, size_bytes, uploader, remote, datastore, created_seq, tombstone)| {
                PurgedMedia {
                    media,
                    sha256,
                    size_bytes,
                    uploader,
                    remote,
                    datastore,
                    created_seq,
                    tombstone,
                }
            },
        )
}

pub fn purged_thumbnail() -> impl Strategy<Value = PurgedThumbnail> {
    (
        media_ref(),
        any::<u32>(),
        any::<u32>(),
        thumbnail_method(),
        any::<bool>(),
        sha256(),
        any::<u64>(),
        datastore_id(),
    )
        .prop_map(
            |(media, width, height, method, animated, sha256, size_bytes, datastore)| {
                PurgedThumbnail {
                    media,
                    width,
                    height,
                    method,
                    animated,
                    sha256,
                    size_bytes,
                    datastore,
                }
            },
        )
}

pub fn freed_blob() -> impl Strategy<Value = FreedBlob> {
    (sha256(), any::<u64>(), datastore_id(), blob_location()).prop_map(
        |(sha256, size_bytes, datastore, location)| FreedBlob {
            sha256,
            size_bytes,
            datastore,
            location,
        },
    )
}

pub fn media_purged() -> impl Strategy<Value = MediaPurged> {
    (
        authority(),
        moderation_target(),
        proptest::option::of(any::<u64>()),
        proptest::collection::vec(purged_media(), 0..4),
        proptest::collection::vec(purged_thumbnail(), 0..4),
        proptest::collection::vec(freed_blob(), 0..4),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(authority, target, before_ts_ms, media, thumbnails, freed, reason)| MediaPurged {
                authority,
                target,
                before_ts_ms,
                media,
                thumbnails,
                freed,
                reason,
            },
        )
}

pub fn blob_deleted() -> impl Strategy<Value = BlobDeleted> {
    (
        seq(),
        sha256(),
        datastore_id(),
        blob_location(),
        any::<bool>(),
    )
        .prop_map(|(purge, sha256, datastore, location, kept)| BlobDeleted {
            purge,
            sha256,
            datastore,
            location,
            kept,
        })
}

/// Any event, every variant equally likely.
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        transfer_started().prop_map(Event::TransferStartedV1),
        blob_moved().prop_map(Event::BlobMovedV1),
        blob_source_deleted().prop_map(Event::BlobSourceDeletedV1),
        blob_transfer_failed().prop_map(Event::BlobTransferFailedV1),
        transfer_finished().prop_map(Event::TransferFinishedV1),
        media_uploaded().prop_map(Event::MediaUploadedV1),
        (media_ref(), user_id(), any::<u64>()).prop_map(|(media, owner, expires_at_ms)| {
            Event::AsyncUploadCreatedV1(AsyncUploadCreated {
                media,
                owner,
                expires_at_ms,
            })
        }),
        (media_ref(), sha256())
            .prop_map(|(media, sha256)| Event::MediaAccessedV1(MediaAccessed { media, sha256 })),
        thumbnail_generated().prop_map(Event::ThumbnailGeneratedV1),
        remote_media_cached().prop_map(Event::RemoteMediaCachedV1),
        media_quarantined().prop_map(Event::MediaQuarantinedV1),
        media_unquarantined().prop_map(Event::MediaUnquarantinedV1),
        media_attributes_set().prop_map(Event::MediaAttributesSetV1),
        media_purged().prop_map(Event::MediaPurgedV1),
        blob_deleted().prop_map(Event::BlobDeletedV1),
        media_imported().prop_map(Event::MediaImportedV1),
        (
            server_name(),
            any::<String>(),
            any::<String>(),
            proptest::option::of(media_ref())
        )
            .prop_map(
                |(homeserver, url, og, image)| Event::UrlPreviewedV1(UrlPreviewed {
                    homeserver,
                    url,
                    og,
                    image
                })
            ),
        (
            proptest::collection::vec((server_name(), any::<String>()), 0..4),
            any::<u64>()
        )
            .prop_map(|(previews, before_ms)| Event::UrlPreviewsExpiredV1(
                UrlPreviewsExpired {
                    previews,
                    before_ms
                }
            )),
        (
            media_ref(),
            sha256(),
            any::<u64>(),
            proptest::option::of(content_type()),
            proptest::option::of(any::<String>()),
            proptest::option::of(user_id()),
            any::<bool>(),
            (any::<u64>(), any::<u64>()),
            any::<String>(),
            datastore_id(),
            blob_location(),
        )
            .prop_map(
                |(
                    media,
                    sha256,
                    size_bytes,
                    content_type,
                    upload_name,
                    uploader,
                    remote,
                    (created_at_ms, last_access_ms),
                    source,
                    datastore,
                    location,
                )| Event::MediaMigratedV1(MediaMigrated {
                    media,
                    sha256,
                    size_bytes,
                    content_type,
                    upload_name,
                    uploader,
                    remote,
                    created_at_ms,
                    last_access_ms,
                    source,
                    datastore,
                    location,
                })
            ),
        (
            any::<String>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(
                |(entity, media_count, bytes, quarantined_left_out, parts)| {
                    Event::MediaExportedV1(MediaExported {
                        entity,
                        media_count,
                        bytes,
                        quarantined_left_out,
                        parts,
                    })
                }
            ),
        (any::<String>(), any::<String>(), any::<u64>()).prop_map(|(kind, source, rows_total)| {
            Event::ImportStartedV1(ImportStarted {
                kind,
                source,
                rows_total,
            })
        }),
        (
            any::<u64>(),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>()),
            any::<bool>(),
            proptest::option::of(any::<String>())
        )
            .prop_map(
                |(
                    task,
                    (rows_done, imported, already_imported),
                    (skipped, bytes),
                    finished,
                    error,
                )| {
                    Event::ImportProgressV1(ImportProgress {
                        task: Seq(task),
                        rows_done,
                        imported,
                        already_imported,
                        skipped,
                        bytes,
                        finished,
                        error,
                    })
                }
            ),
    ]
}

pub fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), any::<u64>(), actor(), request_id(), event()).prop_map(
        |(seq, recorded_at_ms, actor, request_id, event)| Envelope {
            seq: Seq(seq),
            recorded_at_ms,
            actor,
            request_id,
            event,
        },
    )
}

pub fn chain() -> impl Strategy<Value = Chain> {
    prop_oneof![Just(codec::GENESIS_CHAIN), any::<[u8; 32]>()]
}
