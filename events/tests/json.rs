#![allow(clippy::unwrap_used, clippy::expect_used)]
//! JSON (what `media-ledger events` prints) and the ids' refusal of invalid strings through
//! serde, in JSON and in bincode alike.

mod common;

use common::envelope;
use media_ledger_events::codec;
use media_ledger_events::{
    Authority, BlobLocation, ContentType, DatastoreId, Envelope, Event, MediaId, MediaPurpose,
    MediaRef, ModerationTarget, ServerName, Sha256, ThumbnailMethod, UserId,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;

proptest! {
    #[test]
    fn envelope_json_round_trips(env in envelope()) {
        let text = serde_json::to_string(&env).unwrap();
        prop_assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), env.clone());
        let value = serde_json::to_value(&env).unwrap();
        prop_assert_eq!(serde_json::from_value::<Envelope>(value).unwrap(), env);
    }
}

#[test]
fn envelope_json_shape() {
    let envs = common::sample_envelopes();
    let v = serde_json::to_value(&envs[0]).unwrap();
    assert_eq!(v["seq"], json!(1));
    assert_eq!(v["recorded_at_ms"], json!(1_700_000_000_000u64));
    assert_eq!(v["actor"], json!({"User": "@alice:example.org"}));
    let e = &v["event"]["MediaUploadedV1"];
    assert_eq!(e["sha256"], json!("07".repeat(32)));
    assert_eq!(
        e["media"],
        json!({"origin": "example.org", "media_id": "abcDEF123"})
    );
    assert_eq!(e["content_type"], json!("image/png"));
    assert_eq!(e["datastore"], json!("local"));
    let admin = serde_json::to_value(&envs[1]).unwrap();
    assert_eq!(admin["actor"], json!("SharedSecretAdmin"));
    let system = serde_json::to_value(&envs[2]).unwrap();
    assert_eq!(system["actor"], json!("System"));
}

#[test]
fn transfer_events_json_shape() {
    let envs = common::sample_envelopes();
    let event = |i: usize| serde_json::to_value(&envs[i]).unwrap()["event"].clone();
    assert_eq!(
        event(3),
        json!({"TransferStartedV1": {
            "source": "local",
            "target": "remote",
            "before_ts_ms": null,
            "blobs_total": 1,
            "bytes_total": 12_345,
        }})
    );
    assert_eq!(
        event(4),
        json!({"BlobTransferFailedV1": {
            "task": 4,
            "sha256": "07".repeat(32),
            "attempt": 1,
            "final_attempt": false,
            "error": "timeout",
        }})
    );
    assert_eq!(
        event(5),
        json!({"BlobMovedV1": {
            "task": 4,
            "sha256": "07".repeat(32),
            "size_bytes": 12_345,
            "from_datastore": "local",
            "from_location": "07/07/0707",
            "to_datastore": "remote",
            "to_location": "07/07/0707",
        }})
    );
    assert_eq!(
        event(6),
        json!({"BlobSourceDeletedV1": {
            "task": 4,
            "sha256": "07".repeat(32),
            "datastore": "local",
            "location": "07/07/0707",
        }})
    );
    assert_eq!(
        event(7),
        json!({"TransferFinishedV1": {"task": 4, "error_message": null}})
    );
}

#[test]
fn thumbnail_event_json_shape() {
    let envs = common::sample_envelopes();
    let v = serde_json::to_value(&envs[8]).unwrap();
    assert_eq!(v["actor"], json!({"User": "@alice:example.org"}));
    assert_eq!(
        v["event"],
        json!({"ThumbnailGeneratedV1": {
            "media": {"origin": "example.org", "media_id": "abcDEF123"},
            "width": 320,
            "height": 240,
            "method": "Scale",
            "animated": false,
            "sha256": "09".repeat(32),
            "size_bytes": 2_048,
            "content_type": "image/png",
            "datastore": "remote",
            "location": "09/09/0909",
        }})
    );
    let text = serde_json::to_string(&envs[8]).unwrap();
    assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envs[8]);
}

#[test]
fn thumbnail_event_accessors() {
    let env = common::sample_envelopes().remove(8);
    assert_eq!(env.event.type_name(), "thumbnail.generated.v1");
    assert_eq!(
        env.event.media(),
        Some(&common::mxc("mxc://example.org/abcDEF123"))
    );
    assert_eq!(env.event.sha256(), Some(&Sha256([9; 32])));
}

#[test]
fn thumbnail_methods_in_json_in_bincode_and_by_name() {
    // serde uses the variant names; `as_str` gives the spec's lowercase names.
    for (m, serde_name, spec, index) in [
        (ThumbnailMethod::Crop, "Crop", "crop", 0u8),
        (ThumbnailMethod::Scale, "Scale", "scale", 1),
    ] {
        assert_eq!(serde_json::to_value(m).unwrap(), json!(serde_name));
        assert_eq!(
            serde_json::from_value::<ThumbnailMethod>(json!(serde_name)).unwrap(),
            m
        );
        assert_eq!(m.as_str(), spec);
        // The position is the encoding: Crop stays 0 and Scale 1.
        assert_eq!(codec::encode(&m).unwrap(), [index]);
        assert_eq!(codec::decode::<ThumbnailMethod>(&[index]).unwrap(), m);
    }
    for bad in ["crop", "scale", "Fit", ""] {
        assert!(serde_json::from_value::<ThumbnailMethod>(json!(bad)).is_err());
    }
    assert!(codec::decode::<ThumbnailMethod>(&[2]).is_err());
    assert!(ThumbnailMethod::Crop < ThumbnailMethod::Scale);
}

#[test]
fn thumbnail_event_refuses_bad_fields() {
    let v = serde_json::to_value(&common::sample_envelopes()[8]).unwrap();
    for (field, bad) in [
        ("location", json!("../../etc/passwd")),
        ("location", json!("/abs")),
        ("datastore", json!("a/b")),
        ("content_type", json!("png")),
        ("content_type", json!(null)),
        ("sha256", json!("XYZ")),
        ("method", json!("crop")),
        ("width", json!(-1)),
        ("height", json!(u64::from(u32::MAX) + 1)),
        ("animated", json!("yes")),
        ("media", json!({"origin": "example.org", "media_id": "a/b"})),
    ] {
        let mut v = v.clone();
        v["event"]["ThumbnailGeneratedV1"][field] = bad.clone();
        assert!(
            serde_json::from_value::<Envelope>(v).is_err(),
            "{field}: {bad} accepted"
        );
    }
    for field in ["width", "method", "animated", "content_type"] {
        let mut v = v.clone();
        v["event"]["ThumbnailGeneratedV1"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        assert!(
            serde_json::from_value::<Envelope>(v).is_err(),
            "{field} missing accepted"
        );
    }
    assert!(matches!(
        serde_json::from_value::<Envelope>(v).unwrap().event,
        Event::ThumbnailGeneratedV1(_)
    ));
}

#[test]
fn large_u64_survive_json() {
    let mut env = common::sample_envelopes().remove(0);
    env.seq.0 = u64::MAX;
    env.recorded_at_ms = u64::MAX - 1;
    let text = serde_json::to_string(&env).unwrap();
    assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), env);
}

fn refused_json<T: DeserializeOwned + std::fmt::Debug>(s: &str) {
    let r = serde_json::from_value::<T>(json!(s));
    assert!(r.is_err(), "{s:?} accepted as {r:?}");
}

fn refused_bincode<T: DeserializeOwned + std::fmt::Debug>(s: &str) {
    let bytes = codec::encode(&s.to_owned()).unwrap();
    let r = codec::decode::<T>(&bytes);
    assert!(
        matches!(r, Err(codec::CodecError::Decode(_))),
        "{s:?} accepted as {r:?}"
    );
}

fn refused<T: DeserializeOwned + std::fmt::Debug>(bad: &[&str]) {
    for s in bad {
        refused_json::<T>(s);
        refused_bincode::<T>(s);
    }
}

fn accepted<T: DeserializeOwned + serde::Serialize + std::fmt::Debug + PartialEq>(good: &[&str]) {
    for s in good {
        let v: T = serde_json::from_value(json!(s)).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), json!(s));
        let b: T = codec::decode(&codec::encode(s).unwrap()).unwrap();
        assert_eq!(b, v);
    }
}

#[test]
fn media_ids_refuse_invalid_strings() {
    refused::<MediaId>(&["a/b", "", "..", "a.b", "a%2f", "a b", "é", &"a".repeat(256)]);
    accepted::<MediaId>(&["abcDEF123_-", &"a".repeat(255)]);
}

#[test]
fn server_names_refuse_invalid_strings() {
    refused::<ServerName>(&[
        "a/b",
        "",
        "host:",
        "host:123456",
        "[::1",
        "exa mple",
        "x:y:z",
    ]);
    accepted::<ServerName>(&["localhost", "example.com:8448", "1.2.3.4", "[::1]:443"]);
}

#[test]
fn user_ids_refuse_invalid_strings() {
    refused::<UserId>(&[
        "alice:localhost",
        "@:localhost",
        "@alice",
        "@alice:",
        "@a b:x",
    ]);
    accepted::<UserId>(&["@alice:localhost", "@a.b=c/d:example.org:8448"]);
}

#[test]
fn datastore_ids_refuse_invalid_strings() {
    refused::<DatastoreId>(&["", "a/b", "a b", &"d".repeat(65)]);
    accepted::<DatastoreId>(&["ds-main", "s3.eu_1"]);
}

#[test]
fn blob_locations_refuse_invalid_strings() {
    refused::<BlobLocation>(&["", "/abs", "a/../b", "..", "a//b", "a/./b", "a/", "a\\b"]);
    accepted::<BlobLocation>(&["ab/cd/abcdef", "x.bin"]);
}

#[test]
fn content_types_refuse_invalid_strings() {
    refused::<ContentType>(&["text", "/plain", "text/", "a/b/c", "text/plain\n"]);
    accepted::<ContentType>(&["image/png", "text/plain; charset=utf-8"]);
}

#[test]
fn sha256_refuses_invalid_strings() {
    // Text (JSON) form: 64 lowercase hex digits.
    for s in [
        "",
        "ab",
        &"AB".repeat(32),
        &"ab".repeat(33),
        &"g".repeat(64),
        &format!("{}é", "a".repeat(62)),
    ] {
        refused_json::<Sha256>(s);
    }
    let hex = "0123456789abcdef".repeat(4);
    let v: Sha256 = serde_json::from_value(json!(hex)).unwrap();
    assert_eq!(serde_json::to_value(v).unwrap(), json!(hex));
}

#[test]
fn sha256_is_32_raw_bytes_in_the_log() {
    let h: Sha256 = "0123456789abcdef".repeat(4).parse().unwrap();
    let bytes = codec::encode(&h).unwrap();
    assert_eq!(bytes, h.0.to_vec());
    assert_eq!(codec::decode::<Sha256>(&bytes).unwrap(), h);
    // A hex string where the raw bytes belong is refused (or decodes to trailing garbage).
    assert!(codec::decode::<Sha256>(&codec::encode(&h.to_hex()).unwrap()).is_err());
    assert!(codec::decode::<Sha256>(&bytes[..31]).is_err());
}

#[test]
fn media_ref_and_envelope_refuse_a_bad_id_inside() {
    let bad = json!({"origin": "example.org", "media_id": "a/b"});
    assert!(serde_json::from_value::<MediaRef>(bad).is_err());
    let mut v = serde_json::to_value(&common::sample_envelopes()[0]).unwrap();
    v["event"]["MediaUploadedV1"]["location"] = json!("../../etc/passwd");
    assert!(serde_json::from_value::<Envelope>(v).is_err());
    // The locations and datastores of a transfer go through the same grammar.
    let moved = serde_json::to_value(&common::sample_envelopes()[5]).unwrap();
    for (field, bad) in [
        ("to_location", "/etc/passwd"),
        ("from_location", "a/../../b"),
        ("to_datastore", "a/b"),
        ("sha256", "XYZ"),
    ] {
        let mut v = moved.clone();
        v["event"]["BlobMovedV1"][field] = json!(bad);
        assert!(
            serde_json::from_value::<Envelope>(v).is_err(),
            "{field}: {bad:?} accepted"
        );
    }
}

#[test]
fn remote_media_event_json_shape() {
    let envs = common::sample_envelopes();
    let v = serde_json::to_value(&envs[9]).unwrap();
    assert_eq!(v["actor"], json!({"User": "@alice:example.org"}));
    assert_eq!(
        v["event"],
        json!({"RemoteMediaCachedV1": {
            "media": {"origin": "remote.example", "media_id": "xyz789"},
            "sha256": "0a".repeat(32),
            "size_bytes": 4_096,
            "content_type": "image/jpeg",
            "upload_name": null,
            "fetched_from": "https://remote.example:8448",
            "datastore": "local",
            "location": "0a/0a/0a0a",
        }})
    );
    let text = serde_json::to_string(&envs[9]).unwrap();
    assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envs[9]);
    // The optional fields are optional values, not optional keys: both forms round-trip.
    let mut named = v.clone();
    named["event"]["RemoteMediaCachedV1"]["upload_name"] = json!("cat.png");
    named["event"]["RemoteMediaCachedV1"]["content_type"] = json!(null);
    let env = serde_json::from_value::<Envelope>(named.clone()).unwrap();
    let Event::RemoteMediaCachedV1(e) = &env.event else {
        panic!("{:?}", env.event)
    };
    assert_eq!(e.upload_name.as_deref(), Some("cat.png"));
    assert_eq!(e.content_type, None);
    assert_eq!(serde_json::to_value(&env).unwrap(), named);
}

#[test]
fn remote_media_event_accessors() {
    let env = common::sample_envelopes().remove(9);
    assert_eq!(env.event.type_name(), "media.remote_cached.v1");
    assert_eq!(
        env.event.media(),
        Some(&common::mxc("mxc://remote.example/xyz789"))
    );
    assert_eq!(env.event.sha256(), Some(&Sha256([10; 32])));
}

#[test]
fn remote_media_event_refuses_bad_fields() {
    let v = serde_json::to_value(&common::sample_envelopes()[9]).unwrap();
    for (field, bad) in [
        ("location", json!("../../etc/passwd")),
        ("location", json!("/abs")),
        ("datastore", json!("a/b")),
        ("content_type", json!("png")),
        ("sha256", json!("XYZ")),
        ("sha256", json!("0A".repeat(32))),
        ("size_bytes", json!(-1)),
        ("fetched_from", json!(null)),
        ("fetched_from", json!(42)),
        ("upload_name", json!(7)),
        (
            "media",
            json!({"origin": "remote.example", "media_id": "a/b"}),
        ),
        ("media", json!({"origin": "exa mple", "media_id": "x"})),
    ] {
        let mut v = v.clone();
        v["event"]["RemoteMediaCachedV1"][field] = bad.clone();
        assert!(
            serde_json::from_value::<Envelope>(v).is_err(),
            "{field}: {bad} accepted"
        );
    }
    for field in [
        "media",
        "sha256",
        "size_bytes",
        "fetched_from",
        "datastore",
        "location",
    ] {
        let mut v = v.clone();
        v["event"]["RemoteMediaCachedV1"]
            .as_object_mut()
            .unwrap()
            .remove(field);
        assert!(
            serde_json::from_value::<Envelope>(v).is_err(),
            "{field} missing accepted"
        );
    }
    assert!(matches!(
        serde_json::from_value::<Envelope>(v).unwrap().event,
        Event::RemoteMediaCachedV1(_)
    ));
}

#[test]
fn moderation_events_json_shape() {
    let envs = common::sample_envelopes();
    let event = |i: usize| serde_json::to_value(&envs[i]).unwrap()["event"].clone();
    let first = json!({"origin": "example.org", "media_id": "abcDEF123"});
    assert_eq!(
        event(10),
        json!({"MediaQuarantinedV1": {
            "authority": {"HomeserverAdmin": "example.org"},
            "target": {"Media": first},
            "media": [first],
            "hashes": ["07".repeat(32)],
            "reason": "spam",
        }})
    );
    assert_eq!(
        event(11),
        json!({"MediaUnquarantinedV1": {
            "authority": {"HomeserverAdmin": "example.org"},
            "target": {"Media": first},
            "media": [first],
            "hashes": ["07".repeat(32)],
            "reason": null,
        }})
    );
    assert_eq!(
        event(12),
        json!({"MediaAttributesSetV1": {
            "media": {"origin": "remote.example", "media_id": "xyz789"},
            "purpose": "Pinned",
            "authority": "RepositoryAdmin",
            "reason": "evidence",
        }})
    );
    assert_eq!(
        event(13),
        json!({"MediaPurgedV1": {
            "authority": "Uploader",
            "target": {"Media": first},
            "before_ts_ms": null,
            "media": [{
                "media": first,
                "sha256": "07".repeat(32),
                "size_bytes": 12_345,
                "uploader": {"User": "@alice:example.org"},
                "remote": false,
                "datastore": "remote",
                "created_seq": 1,
                "tombstone": false,
            }],
            "thumbnails": [{
                "media": first,
                "width": 320,
                "height": 240,
                "method": "Scale",
                "animated": false,
                "sha256": "09".repeat(32),
                "size_bytes": 2_048,
                "datastore": "remote",
            }],
            "freed": [
                {
                    "sha256": "07".repeat(32),
                    "size_bytes": 12_345,
                    "datastore": "remote",
                    "location": "07/07/0707",
                },
                {
                    "sha256": "09".repeat(32),
                    "size_bytes": 2_048,
                    "datastore": "remote",
                    "location": "09/09/0909",
                },
            ],
            "reason": null,
        }})
    );
    assert_eq!(
        event(14),
        json!({"BlobDeletedV1": {
            "purge": 14,
            "sha256": "07".repeat(32),
            "datastore": "remote",
            "location": "07/07/0707",
            "kept": false,
        }})
    );
    for env in &envs[10..] {
        let text = serde_json::to_string(env).unwrap();
        assert_eq!(&serde_json::from_str::<Envelope>(&text).unwrap(), env);
    }
}

#[test]
fn moderation_event_accessors() {
    let envs = common::sample_envelopes();
    let first = common::mxc("mxc://example.org/abcDEF123");
    let remote = common::mxc("mxc://remote.example/xyz789");
    for (env, name, media, sha256, affected, moderation) in [
        (
            &envs[10],
            "media.quarantined.v1",
            None,
            None,
            vec![&first],
            true,
        ),
        (
            &envs[11],
            "media.unquarantined.v1",
            None,
            None,
            vec![&first],
            true,
        ),
        (
            &envs[12],
            "media.attributes_set.v1",
            Some(&remote),
            None,
            vec![&remote],
            true,
        ),
        (&envs[13], "media.purged.v1", None, None, vec![&first], true),
        (
            &envs[14],
            "blob.deleted.v1",
            None,
            Some(&Sha256([7; 32])),
            vec![],
            false,
        ),
    ] {
        assert_eq!(env.event.type_name(), name);
        assert_eq!(env.event.media(), media, "{name}");
        assert_eq!(env.event.sha256(), sha256, "{name}");
        assert_eq!(env.event.affected_media(), affected, "{name}");
        assert_eq!(env.event.is_moderation(), moderation, "{name}");
    }
    // Events before moderation existed are not moderation acts; their affected media is
    // their media.
    for env in &envs[..10] {
        assert!(!env.event.is_moderation(), "{}", env.event.type_name());
        assert_eq!(
            env.event.affected_media(),
            env.event.media().into_iter().collect::<Vec<_>>()
        );
    }
}

#[test]
fn authorities_in_json_in_bincode_and_by_origin() {
    let origin: ServerName = common::id("example.org");
    for (a, value, bytes) in [
        (
            Authority::RepositoryAdmin,
            json!("RepositoryAdmin"),
            vec![0u8],
        ),
        (
            Authority::HomeserverAdmin(origin.clone()),
            json!({"HomeserverAdmin": "example.org"}),
            [&[1u8, 11][..], b"example.org"].concat(),
        ),
        (Authority::Uploader, json!("Uploader"), vec![2]),
        (Authority::Import, json!("Import"), vec![3]),
    ] {
        assert_eq!(serde_json::to_value(&a).unwrap(), value);
        assert_eq!(serde_json::from_value::<Authority>(value).unwrap(), a);
        // The position is the encoding: the variants keep their indices.
        assert_eq!(codec::encode(&a).unwrap(), bytes);
        assert_eq!(codec::decode::<Authority>(&bytes).unwrap(), a);
    }
    assert_eq!(Authority::RepositoryAdmin.origin(), None);
    assert_eq!(Authority::Uploader.origin(), None);
    assert_eq!(Authority::Import.origin(), None);
    assert_eq!(
        Authority::HomeserverAdmin(origin.clone()).origin(),
        Some(&origin)
    );
    for bad in [
        json!("repositoryadmin"),
        json!("HomeserverAdmin"),
        json!({"HomeserverAdmin": "exa mple"}),
        json!({"HomeserverAdmin": null}),
        json!({"Uploader": "@alice:example.org"}),
    ] {
        assert!(
            serde_json::from_value::<Authority>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
    assert!(codec::decode::<Authority>(&[4]).is_err());
    assert!(codec::decode::<Authority>(&[1, 3, b'a', b' ', b'b']).is_err());
}

#[test]
fn moderation_targets_in_json_and_in_bincode() {
    let media = common::mxc("mxc://example.org/abc");
    for (t, value, bytes) in [
        (
            ModerationTarget::Media(media),
            json!({"Media": {"origin": "example.org", "media_id": "abc"}}),
            [&[0u8, 11][..], b"example.org", &[3], b"abc"].concat(),
        ),
        (
            ModerationTarget::User(common::id("@a:b")),
            json!({"User": "@a:b"}),
            [&[1u8, 4][..], b"@a:b"].concat(),
        ),
        (
            ModerationTarget::Server(common::id("b")),
            json!({"Server": "b"}),
            vec![2, 1, b'b'],
        ),
        (
            ModerationTarget::Room("!r:b".into()),
            json!({"Room": "!r:b"}),
            [&[3u8, 4][..], b"!r:b"].concat(),
        ),
        (ModerationTarget::Quarantined, json!("Quarantined"), vec![4]),
        (ModerationTarget::Remote, json!("Remote"), vec![5]),
        (
            ModerationTarget::Old {
                include_local: false,
            },
            json!({"Old": {"include_local": false}}),
            vec![6, 0],
        ),
        (
            ModerationTarget::Old {
                include_local: true,
            },
            json!({"Old": {"include_local": true}}),
            vec![6, 1],
        ),
        (ModerationTarget::Thumbnails, json!("Thumbnails"), vec![8]),
    ] {
        assert_eq!(serde_json::to_value(&t).unwrap(), value);
        assert_eq!(
            serde_json::from_value::<ModerationTarget>(value).unwrap(),
            t
        );
        // The position is the encoding: the variants keep their indices.
        assert_eq!(codec::encode(&t).unwrap(), bytes);
        assert_eq!(codec::decode::<ModerationTarget>(&bytes).unwrap(), t);
    }
    for bad in [
        json!("Old"),
        json!({"Old": {}}),
        json!({"Old": {"include_local": "yes"}}),
        json!({"User": "alice"}),
        json!({"Server": "a/b"}),
        json!({"Media": {"origin": "example.org", "media_id": "a/b"}}),
        json!({"Room": 7}),
        json!("quarantined"),
    ] {
        assert!(
            serde_json::from_value::<ModerationTarget>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
    assert!(codec::decode::<ModerationTarget>(&[7]).is_err());
    assert!(codec::decode::<ModerationTarget>(&[6, 2]).is_err());
}

#[test]
fn media_purposes_in_json_in_bincode_and_by_name() {
    // serde uses the variant names; `as_str` gives the admin API's lowercase names.
    for (p, serde_name, api, index) in [
        (MediaPurpose::None, "None", "none", 0u8),
        (MediaPurpose::Pinned, "Pinned", "pinned", 1),
    ] {
        assert_eq!(serde_json::to_value(p).unwrap(), json!(serde_name));
        assert_eq!(
            serde_json::from_value::<MediaPurpose>(json!(serde_name)).unwrap(),
            p
        );
        assert_eq!(p.as_str(), api);
        // The position is the encoding: None stays 0 and Pinned 1.
        assert_eq!(codec::encode(&p).unwrap(), [index]);
        assert_eq!(codec::decode::<MediaPurpose>(&[index]).unwrap(), p);
    }
    for bad in [json!("none"), json!("pinned"), json!(null), json!("")] {
        assert!(serde_json::from_value::<MediaPurpose>(bad).is_err());
    }
    assert!(codec::decode::<MediaPurpose>(&[2]).is_err());
}

/// Sets `bad` at `path` (keys, or indices into arrays) inside the event of sample `i`, and
/// checks the envelope is refused.
fn refused_at(i: usize, variant: &str, path: &[&str], bad: serde_json::Value) {
    let mut v = serde_json::to_value(&common::sample_envelopes()[i]).unwrap();
    let mut at = &mut v["event"][variant];
    for key in path {
        at = match key.parse::<usize>() {
            Ok(n) => &mut at[n],
            Err(_) => &mut at[*key],
        };
    }
    *at = bad.clone();
    assert!(
        serde_json::from_value::<Envelope>(v).is_err(),
        "{variant} {path:?}: {bad} accepted"
    );
}

/// Removes the last key of `path` inside the event of sample `i`, and checks the envelope is
/// refused.
fn refused_without(i: usize, variant: &str, path: &[&str]) {
    let mut v = serde_json::to_value(&common::sample_envelopes()[i]).unwrap();
    let (last, parents) = path.split_last().unwrap();
    let mut at = &mut v["event"][variant];
    for key in parents {
        at = match key.parse::<usize>() {
            Ok(n) => &mut at[n],
            Err(_) => &mut at[*key],
        };
    }
    assert!(at.as_object_mut().unwrap().remove(*last).is_some());
    assert!(
        serde_json::from_value::<Envelope>(v).is_err(),
        "{variant} {path:?} missing accepted"
    );
}

#[test]
fn moderation_events_refuse_bad_fields() {
    for (i, variant) in [(10, "MediaQuarantinedV1"), (11, "MediaUnquarantinedV1")] {
        for (path, bad) in [
            (&["authority"][..], json!("Moderator")),
            (&["authority"], json!({"HomeserverAdmin": "a/b"})),
            (&["target"], json!({"Media": "mxc://example.org/x"})),
            (&["target"], json!({"User": "alice"})),
            (&["media"], json!(null)),
            (
                &["media", "0"],
                json!({"origin": "example.org", "media_id": "a/b"}),
            ),
            (&["hashes"], json!("07".repeat(32))),
            (&["hashes", "0"], json!("XYZ")),
            (&["reason"], json!(7)),
        ] {
            refused_at(i, variant, path, bad);
        }
        for field in ["authority", "target", "media", "hashes"] {
            refused_without(i, variant, &[field]);
        }
    }
    for (path, bad) in [
        (
            &["media"][..],
            json!({"origin": "exa mple", "media_id": "x"}),
        ),
        (&["purpose"], json!("pinned")),
        (&["purpose"], json!(null)),
        (&["authority"], json!(null)),
        (&["reason"], json!(["evidence"])),
    ] {
        refused_at(12, "MediaAttributesSetV1", path, bad);
    }
    for field in ["media", "purpose", "authority"] {
        refused_without(12, "MediaAttributesSetV1", &[field]);
    }
    for (path, bad) in [
        (&["target"][..], json!({"Old": {}})),
        (&["before_ts_ms"], json!(-1)),
        (&["media", "0", "sha256"], json!("0A".repeat(32))),
        (&["media", "0", "uploader"], json!("alice")),
        (&["media", "0", "datastore"], json!("a/b")),
        (&["media", "0", "tombstone"], json!(null)),
        (&["media", "0", "created_seq"], json!(-1)),
        (&["thumbnails", "0", "method"], json!("scale")),
        (
            &["thumbnails", "0", "width"],
            json!(u64::from(u32::MAX) + 1),
        ),
        (&["thumbnails", "0", "datastore"], json!("")),
        (&["freed", "0", "location"], json!("../../etc/passwd")),
        (&["freed", "1", "location"], json!("/abs")),
        (&["freed", "1", "size_bytes"], json!(-1)),
        (&["freed"], json!({})),
    ] {
        refused_at(13, "MediaPurgedV1", path, bad);
    }
    for path in [
        &["authority"][..],
        &["target"],
        &["media"],
        &["thumbnails"],
        &["freed"],
        &["media", "0", "remote"],
        &["media", "0", "uploader"],
        &["media", "0", "created_seq"],
        &["thumbnails", "0", "animated"],
        &["freed", "0", "datastore"],
    ] {
        refused_without(13, "MediaPurgedV1", path);
    }
    for (path, bad) in [
        (&["purge"][..], json!(-1)),
        (&["purge"], json!("14")),
        (&["sha256"], json!("XYZ")),
        (&["datastore"], json!("a b")),
        (&["location"], json!("a/../b")),
        (&["kept"], json!("no")),
    ] {
        refused_at(14, "BlobDeletedV1", path, bad);
    }
    for field in ["purge", "sha256", "datastore", "location", "kept"] {
        refused_without(14, "BlobDeletedV1", &[field]);
    }
    // Untouched, every sample is accepted as the variant it is.
    let envs = common::sample_envelopes();
    for env in &envs[10..] {
        let v = serde_json::to_value(env).unwrap();
        assert_eq!(&serde_json::from_value::<Envelope>(v).unwrap(), env);
    }
}
