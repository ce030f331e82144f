//! Tests of `keys.rs`.
use super::*;
use serde_json::json;

fn key() -> SigningKey {
    SigningKey::from_seed("test", [7; 32]).unwrap()
}

fn canonical_of(text: &str) -> Result<String, FederationError> {
    canonical_json(&serde_json::from_str(text).unwrap())
}

#[test]
fn canonical_json_spec_examples() {
    let cases = [
        ("{}", "{}"),
        (r#"{"one": 1, "two": "Two"}"#, r#"{"one":1,"two":"Two"}"#),
        (r#"{"b": "2", "a": "1"}"#, r#"{"a":"1","b":"2"}"#),
        (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
        (
            r#"{
                "auth": {
                    "success": true,
                    "mxid": "@john.doe:example.com",
                    "profile": {
                        "display_name": "John Doe",
                        "three_pids": [
                            {"medium": "email", "address": "john.doe@example.org"},
                            {"medium": "msisdn", "address": "123456789"}
                        ]
                    }
                }
            }"#,
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#,
        ),
        (r#"{"a": "日本語"}"#, r#"{"a":"日本語"}"#),
        (r#"{"本": 2, "日": 1}"#, r#"{"日":1,"本":2}"#),
        (r#"{"a": "\u65E5"}"#, r#"{"a":"日"}"#),
        (r#"{"a": null}"#, r#"{"a":null}"#),
        (r#"{"a": -0, "b": 1e10}"#, r#"{"a":0,"b":10000000000}"#),
    ];
    for (input, expected) in cases {
        assert_eq!(canonical_of(input).unwrap(), expected, "input {input}");
    }
}

#[test]
fn canonical_json_escapes_only_what_json_requires() {
    let value = json!({"s": "q\"b\\n\nt\tc\u{1f}d\u{7f}é/😀"});
    assert_eq!(
        canonical_json(&value).unwrap(),
        "{\"s\":\"q\\\"b\\\\n\\nt\\tc\\u001fd\u{7f}é/😀\"}"
    );
}

#[test]
fn canonical_json_refuses_fractions_and_big_integers() {
    assert!(matches!(
        canonical_of(r#"{"a": 1.5}"#),
        Err(FederationError::Json(_))
    ));
    assert!(canonical_of(r#"[0.1]"#).is_err());
    assert!(canonical_of(r#"{"a": {"b": [1, 2.25]}}"#).is_err());
    assert_eq!(
        canonical_of("[9007199254740991, -9007199254740991]").unwrap(),
        "[9007199254740991,-9007199254740991]"
    );
    assert!(canonical_of("[9007199254740992]").is_err());
    assert!(canonical_of("[-9007199254740992]").is_err());
    assert!(canonical_of("[18446744073709551615]").is_err());
    assert!(canonical_of("[1e300]").is_err());
}

#[test]
fn canonical_json_sorts_by_code_point_at_every_depth() {
    let value = json!({"b": [{"z": 1, "a": 2}], "a": {"é": 1, "z": 2, "A": 3}, "": 0});
    assert_eq!(
        canonical_json(&value).unwrap(),
        r#"{"":0,"a":{"A":3,"z":2,"é":1},"b":[{"a":2,"z":1}]}"#
    );
}

/// The "Signing JSON" test vectors of the spec's appendix (Cryptographic test vectors):
/// seed `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`, server `domain`, key `ed25519:1`.
#[test]
fn spec_signing_test_vectors() {
    let seed = decode_fixed::<32>("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "seed").unwrap();
    let key = SigningKey::from_seed("1", seed).unwrap();
    assert_eq!(key.key_id(), "ed25519:1");

    let mut empty = json!({});
    key.sign_json("domain", &mut empty).unwrap();
    assert_eq!(
        empty,
        json!({"signatures": {"domain": {"ed25519:1":
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
    );

    let mut two = json!({"one": 1, "two": "Two"});
    key.sign_json("domain", &mut two).unwrap();
    assert_eq!(
        two,
        json!({"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1":
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}})
    );
    verify_json(&two, "domain", "ed25519:1", &key.public_key_base64()).unwrap();
}

#[test]
fn sign_verify_round_trip_keeps_other_signatures_and_unsigned() {
    let key = key();
    let mut value = json!({
        "content": {"n": 1, "s": "x"},
        "unsigned": {"age": 5},
        "signatures": {"other.example": {"ed25519:o": "c2ln"}},
    });
    key.sign_json("us.example", &mut value).unwrap();
    assert_eq!(value["unsigned"], json!({"age": 5}));
    assert_eq!(
        value["signatures"]["other.example"],
        json!({"ed25519:o": "c2ln"})
    );
    assert_eq!(key.key_id(), "ed25519:test");
    verify_json(
        &value,
        "us.example",
        "ed25519:test",
        &key.public_key_base64(),
    )
    .unwrap();

    // `unsigned` and other signatures are outside the signed bytes.
    value["unsigned"] = json!({"age": 99});
    value["signatures"]["third.example"] = json!({"ed25519:t": "eA"});
    verify_json(
        &value,
        "us.example",
        "ed25519:test",
        &key.public_key_base64(),
    )
    .unwrap();

    // Signing again with the same key replaces our signature, which stays valid.
    key.sign_json("us.example", &mut value).unwrap();
    assert_eq!(
        value["signatures"]["us.example"].as_object().unwrap().len(),
        1
    );
    assert_eq!(value["signatures"].as_object().unwrap().len(), 3);
    verify_json(
        &value,
        "us.example",
        "ed25519:test",
        &key.public_key_base64(),
    )
    .unwrap();
}

#[test]
fn sign_bytes_matches_sign_json() {
    let key = key();
    let mut value = json!({"b": 2, "a": 1});
    key.sign_json("s", &mut value).unwrap();
    assert_eq!(
        value["signatures"]["s"]["ed25519:test"],
        json!(key.sign_bytes(br#"{"a":1,"b":2}"#))
    );
}

#[test]
fn tampered_content_or_signature_fails() {
    let key = key();
    let public = key.public_key_base64();
    let mut value = json!({"content": "hello", "n": 42});
    key.sign_json("us", &mut value).unwrap();

    let mut changed = value.clone();
    changed["content"] = json!("hellp");
    assert!(matches!(
        verify_json(&changed, "us", "ed25519:test", &public),
        Err(FederationError::Signature(_))
    ));
    let mut added = value.clone();
    added["extra"] = json!(true);
    assert!(verify_json(&added, "us", "ed25519:test", &public).is_err());

    let sig = value["signatures"]["us"]["ed25519:test"].as_str().unwrap();
    let mut bytes = B64.decode(sig).unwrap();
    for bit in [0, 7, 100, 511] {
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut flipped = value.clone();
        flipped["signatures"]["us"]["ed25519:test"] = json!(B64.encode(&bytes));
        assert!(
            verify_json(&flipped, "us", "ed25519:test", &public).is_err(),
            "bit {bit}"
        );
        bytes[bit / 8] ^= 1 << (bit % 8);
    }

    // Wrong key, wrong server, wrong key id, garbage.
    let other = SigningKey::from_seed("test", [8; 32]).unwrap();
    assert!(verify_json(&value, "us", "ed25519:test", &other.public_key_base64()).is_err());
    assert!(verify_json(&value, "them", "ed25519:test", &public).is_err());
    assert!(verify_json(&value, "us", "ed25519:other", &public).is_err());
    assert!(verify_json(&value, "us", "curve25519:test", &public).is_err());
    assert!(verify_json(&value, "us", "ed25519:test", "not base64!").is_err());
    assert!(verify_json(&value, "us", "ed25519:test", "AAAA").is_err());
    assert!(verify_json(&json!([1]), "us", "ed25519:test", &public).is_err());
}

#[test]
fn padded_base64_is_accepted_on_input() {
    let key = key();
    let mut value = json!({"a": 1});
    key.sign_json("us", &mut value).unwrap();
    let sig = value["signatures"]["us"]["ed25519:test"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sig.ends_with('='));
    value["signatures"]["us"]["ed25519:test"] = json!(format!("{sig}=="));
    let padded_public = format!("{}=", key.public_key_base64());
    verify_json(&value, "us", "ed25519:test", &padded_public).unwrap();
}

#[test]
fn sign_json_refuses_non_objects_and_floats_leaving_value_alone() {
    let key = key();
    let mut array = json!([1]);
    assert!(key.sign_json("us", &mut array).is_err());
    assert_eq!(array, json!([1]));

    let mut float = json!({"a": 1.5, "unsigned": {"x": 1}, "signatures": {"o": {"k": "v"}}});
    let before = float.clone();
    assert!(matches!(
        key.sign_json("us", &mut float),
        Err(FederationError::Json(_))
    ));
    assert_eq!(float, before);

    let mut empty_signatures = json!({"a": 0.5, "signatures": {}});
    assert!(key.sign_json("us", &mut empty_signatures).is_err());
    assert_eq!(empty_signatures, json!({"a": 0.5, "signatures": {}}));

    let mut bad = json!({"signatures": "nope"});
    assert!(key.sign_json("us", &mut bad).is_err());
    assert_eq!(bad, json!({"signatures": "nope"}));
    let mut bad = json!({"signatures": {"us": 3}});
    assert!(key.sign_json("us", &mut bad).is_err());
}

#[test]
fn from_seed_checks_the_version() {
    for bad in ["", "a-b", "a:b", "a b", "é"] {
        assert!(SigningKey::from_seed(bad, [0; 32]).is_err(), "{bad:?}");
    }
    for good in ["1", "a_AbCd", "auto", "_", "Z9"] {
        assert_eq!(
            SigningKey::from_seed(good, [0; 32]).unwrap().key_id(),
            format!("ed25519:{good}")
        );
    }
    // The public key of the all-zero seed is RFC 8032's derivation, 32 bytes.
    let zero = SigningKey::from_seed("0", [0; 32]).unwrap();
    assert_eq!(B64.decode(zero.public_key_base64()).unwrap().len(), 32);
    assert!(!format!("{zero:?}").contains(&B64.encode([0u8; 32])));
}

#[test]
fn server_keys_parse_back() {
    let key = key();
    let answer = key.server_keys("us.example", 2_000).unwrap();
    assert_eq!(answer["server_name"], json!("us.example"));
    assert_eq!(answer["valid_until_ts"], json!(2_000));
    assert_eq!(answer["old_verify_keys"], json!({}));
    assert_eq!(
        answer["verify_keys"],
        json!({"ed25519:test": {"key": key.public_key_base64()}})
    );
    let keys = parse_server_keys(&answer, "us.example", 1_999).unwrap();
    assert_eq!(
        keys,
        BTreeMap::from([("ed25519:test".to_owned(), key.public_key_base64())])
    );
    // Through text, as it would come over the wire.
    let text = serde_json::to_string(&answer).unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parse_server_keys(&parsed, "us.example", 0).unwrap(), keys);

    assert!(key.server_keys("us.example", u64::MAX).is_err());
}

#[test]
fn server_keys_expired_wrong_server_or_unsigned_are_refused() {
    let key = key();
    let answer = key.server_keys("us.example", 2_000).unwrap();
    assert!(parse_server_keys(&answer, "us.example", 2_000).is_err());
    assert!(parse_server_keys(&answer, "us.example", 5_000).is_err());
    assert!(parse_server_keys(&answer, "them.example", 0).is_err());

    let mut unsigned = answer.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    assert!(matches!(
        parse_server_keys(&unsigned, "us.example", 0),
        Err(FederationError::Signature(_))
    ));

    // Signed, but by a key it does not list.
    let other = SigningKey::from_seed("other", [8; 32]).unwrap();
    let mut foreign = unsigned.clone();
    other.sign_json("us.example", &mut foreign).unwrap();
    assert!(parse_server_keys(&foreign, "us.example", 0).is_err());

    // Signed by its key, but as another server.
    let mut elsewhere = unsigned.clone();
    key.sign_json("them.example", &mut elsewhere).unwrap();
    assert!(parse_server_keys(&elsewhere, "us.example", 0).is_err());

    // Changed after signing.
    let mut changed = answer.clone();
    changed["valid_until_ts"] = json!(9_000);
    assert!(parse_server_keys(&changed, "us.example", 0).is_err());

    // A bad signature by a listed key beside a good one.
    let mut mixed = answer.clone();
    mixed["verify_keys"]["ed25519:other"] = json!({"key": other.public_key_base64()});
    key.sign_json("us.example", &mut mixed).unwrap();
    mixed["signatures"]["us.example"]["ed25519:other"] = json!(key.sign_bytes(b"nope"));
    assert!(parse_server_keys(&mixed, "us.example", 0).is_err());

    // Malformed shapes.
    assert!(parse_server_keys(&json!("x"), "us.example", 0).is_err());
    let mut no_ts = answer.clone();
    no_ts.as_object_mut().unwrap().remove("valid_until_ts");
    assert!(parse_server_keys(&no_ts, "us.example", 0).is_err());
}

#[test]
fn server_keys_with_two_signing_keys_and_foreign_algorithms() {
    let key = key();
    let other = SigningKey::from_seed("other", [8; 32]).unwrap();
    let mut answer = json!({
        "server_name": "us.example",
        "valid_until_ts": 10,
        "verify_keys": {
            "ed25519:test": {"key": key.public_key_base64()},
            "ed25519:other": {"key": other.public_key_base64()},
            "future:x": {"key": "whatever"},
        },
        "old_verify_keys": {"ed25519:old": {"key": other.public_key_base64(), "expired_ts": 1}},
    });
    other.sign_json("us.example", &mut answer).unwrap();
    // A notary's signature is no concern here.
    SigningKey::from_seed("n", [3; 32])
        .unwrap()
        .sign_json("notary.example", &mut answer)
        .unwrap();
    let keys = parse_server_keys(&answer, "us.example", 0).unwrap();
    assert_eq!(
        keys.keys().cloned().collect::<Vec<_>>(),
        vec!["ed25519:other".to_owned(), "ed25519:test".to_owned()]
    );
}
