#![allow(clippy::unwrap_used, clippy::expect_used)]
//! JSON (what `media-ledger events` prints) and the ids' refusal of invalid strings through
//! serde, in JSON and in bincode alike.

mod common;

use common::envelope;
use media_ledger_events::codec;
use media_ledger_events::{
    BlobLocation, ContentType, DatastoreId, Envelope, MediaId, MediaRef, ServerName, Sha256, UserId,
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
    refused::<Sha256>(&[
        "",
        "ab",
        &"AB".repeat(32),
        &"ab".repeat(33),
        &"g".repeat(64),
        &format!("{}é", "a".repeat(62)),
    ]);
    accepted::<Sha256>(&[&"0123456789abcdef".repeat(4)]);
}

#[test]
fn media_ref_and_envelope_refuse_a_bad_id_inside() {
    let bad = json!({"origin": "example.org", "media_id": "a/b"});
    assert!(serde_json::from_value::<MediaRef>(bad).is_err());
    let mut v = serde_json::to_value(&common::sample_envelopes()[0]).unwrap();
    v["event"]["MediaUploadedV1"]["location"] = json!("../../etc/passwd");
    assert!(serde_json::from_value::<Envelope>(v).is_err());
}
