//! Tests of `xmatrix.rs`.
use super::*;
use base64::Engine as _;
use serde_json::json;

const URI: &str = "/_matrix/federation/v1/media/download/abc?timeout_ms=20000";

fn key() -> SigningKey {
    SigningKey::from_seed("v1", [5; 32]).unwrap()
}

fn x(origin: &str, destination: Option<&str>, key_id: &str, sig: &str) -> XMatrix {
    XMatrix {
        origin: origin.to_owned(),
        destination: destination.map(str::to_owned),
        key_id: key_id.to_owned(),
        sig: sig.to_owned(),
    }
}

#[test]
fn authorization_has_the_spec_shape_and_signs_the_request_json() {
    let key = key();
    let header = authorization(&key, "us.example", "them.example:8448", "GET", URI, None).unwrap();
    let sig = key.sign_bytes(
        format!(
            r#"{{"destination":"them.example:8448","method":"GET","origin":"us.example","uri":"{URI}"}}"#
        )
        .as_bytes(),
    );
    assert_eq!(
        header,
        format!(
            r#"X-Matrix origin="us.example",destination="them.example:8448",key="ed25519:v1",sig="{sig}""#
        )
    );

    let content = json!({"b": [1, 2], "a": "x"});
    let with_body = authorization(
        &key,
        "us.example",
        "them.example",
        "POST",
        "/p",
        Some(&content),
    )
    .unwrap();
    let sig = key.sign_bytes(
        br#"{"content":{"a":"x","b":[1,2]},"destination":"them.example","method":"POST","origin":"us.example","uri":"/p"}"#,
    );
    assert!(
        with_body.ends_with(&format!(r#"sig="{sig}""#)),
        "{with_body}"
    );
}

#[test]
fn round_trip_with_and_without_content() {
    let key = key();
    let public = key.public_key_base64();
    for content in [None, Some(json!({"n": 1, "s": "日本"}))] {
        let header = authorization(
            &key,
            "us.example",
            "them.example",
            "PUT",
            URI,
            content.as_ref(),
        )
        .unwrap();
        let parsed = parse(&header).unwrap();
        assert_eq!(parsed.origin, "us.example");
        assert_eq!(parsed.destination.as_deref(), Some("them.example"));
        assert_eq!(parsed.key_id, "ed25519:v1");
        verify(
            &parsed,
            &public,
            "PUT",
            URI,
            "them.example",
            content.as_ref(),
        )
        .unwrap();

        // The body's presence is signed.
        let other = match content {
            Some(_) => None,
            None => Some(json!({})),
        };
        assert!(verify(&parsed, &public, "PUT", URI, "them.example", other.as_ref()).is_err());
    }
}

#[test]
fn verify_refuses_wrong_destination_method_uri_content_or_key() {
    let key = key();
    let public = key.public_key_base64();
    let content = json!({"media": "x"});
    let header = authorization(
        &key,
        "us.example",
        "them.example",
        "POST",
        URI,
        Some(&content),
    )
    .unwrap();
    let parsed = parse(&header).unwrap();
    verify(
        &parsed,
        &public,
        "POST",
        URI,
        "them.example",
        Some(&content),
    )
    .unwrap();

    assert!(matches!(
        verify(
            &parsed,
            &public,
            "POST",
            URI,
            "third.example",
            Some(&content)
        ),
        Err(FederationError::Signature(_))
    ));
    assert!(verify(&parsed, &public, "GET", URI, "them.example", Some(&content)).is_err());
    assert!(verify(
        &parsed,
        &public,
        "post",
        URI,
        "them.example",
        Some(&content)
    )
    .is_err());
    assert!(verify(
        &parsed,
        &public,
        "POST",
        "/other",
        "them.example",
        Some(&content)
    )
    .is_err());
    assert!(verify(
        &parsed,
        &public,
        "POST",
        "/_matrix/federation/v1/media/download/abc?timeout_ms=20001",
        "them.example",
        Some(&content)
    )
    .is_err());
    let changed = json!({"media": "y"});
    assert!(verify(
        &parsed,
        &public,
        "POST",
        URI,
        "them.example",
        Some(&changed)
    )
    .is_err());
    let other_key = SigningKey::from_seed("v1", [6; 32]).unwrap();
    assert!(verify(
        &parsed,
        &other_key.public_key_base64(),
        "POST",
        URI,
        "them.example",
        Some(&content)
    )
    .is_err());

    // A header saying another origin than the one who signed.
    let mut forged = parsed.clone();
    forged.origin = "evil.example".to_owned();
    assert!(verify(
        &forged,
        &public,
        "POST",
        URI,
        "them.example",
        Some(&content)
    )
    .is_err());
}

#[test]
fn verify_refuses_a_flipped_signature_bit() {
    let key = key();
    let public = key.public_key_base64();
    let parsed = parse(&authorization(&key, "a", "b", "GET", URI, None).unwrap()).unwrap();
    verify(&parsed, &public, "GET", URI, "b", None).unwrap();
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let bytes = engine.decode(&parsed.sig).unwrap();
    for bit in [0, 9, 255, 256, 511] {
        let mut flipped_bytes = bytes.clone();
        flipped_bytes[bit / 8] ^= 1 << (bit % 8);
        let mut flipped = parsed.clone();
        flipped.sig = engine.encode(&flipped_bytes);
        assert!(
            verify(&flipped, &public, "GET", URI, "b", None).is_err(),
            "bit {bit}"
        );
    }
    let mut garbage = parsed.clone();
    garbage.sig = "not base64".to_owned();
    assert!(verify(&garbage, &public, "GET", URI, "b", None).is_err());
}

#[test]
fn verify_without_destination_from_older_servers() {
    let key = key();
    let header = authorization(&key, "old.example", "us.example", "GET", URI, None).unwrap();
    let mut parsed = parse(&header).unwrap();
    parsed.destination = None;
    verify(
        &parsed,
        &key.public_key_base64(),
        "GET",
        URI,
        "us.example",
        None,
    )
    .unwrap();
    // Signed for someone else: the destination in the signed JSON is ours, so it fails.
    assert!(verify(
        &parsed,
        &key.public_key_base64(),
        "GET",
        URI,
        "x.example",
        None
    )
    .is_err());
}

#[test]
fn parse_variants() {
    let expected = x("o.example", Some("d.example"), "ed25519:v", "c2ln");
    let variants = [
        r#"X-Matrix origin="o.example",destination="d.example",key="ed25519:v",sig="c2ln""#,
        r#"X-Matrix origin=o.example,destination=d.example,key=ed25519:v,sig=c2ln"#,
        r#"X-Matrix sig="c2ln",key="ed25519:v",destination="d.example",origin="o.example""#,
        r#"X-Matrix origin = "o.example" , destination= d.example ,key ="ed25519:v",	sig="c2ln" "#,
        "  X-Matrix\torigin=\"o.example\",destination=\"d.example\",key=\"ed25519:v\",sig=\"c2ln\"  ",
        r#"x-matrix ORIGIN="o.example",Destination="d.example",KEY="ed25519:v",Sig="c2ln""#,
        r#"X-Matrix origin="o\.example",destination="d.exampl\e",key="ed25519\:v",sig="c2ln""#,
        r#"X-Matrix origin="o.example",,destination="d.example", key="ed25519:v",sig="c2ln","#,
        r#"X-Matrix origin="o.example",destination="d.example",key="ed25519:v",sig="c2ln",future="x, y""#,
    ];
    for variant in variants {
        assert_eq!(parse(variant).unwrap(), expected, "{variant}");
    }
}

#[test]
fn parse_older_and_escaped_headers() {
    // Synapse before destination: origin unquoted, no destination.
    let old =
        parse(r#"X-Matrix origin=old.example:8448,key="ed25519:a_AbCd",sig="c2/+ln""#).unwrap();
    assert_eq!(old, x("old.example:8448", None, "ed25519:a_AbCd", "c2/+ln"));

    let escaped = parse(r#"X-Matrix origin="a\"b\\c",key="ed25519:v",sig="s,=t""#).unwrap();
    assert_eq!(escaped.origin, r#"a"b\c"#);
    assert_eq!(escaped.sig, "s,=t");

    let ipv6 = parse(r#"X-Matrix origin="[::1]:8448",key="ed25519:v",sig="s""#).unwrap();
    assert_eq!(ipv6.origin, "[::1]:8448");
}

#[test]
fn authorization_quotes_what_parse_unquotes() {
    let key = key();
    let header = authorization(&key, r#"we"ird\name"#, "d", "GET", "/", None).unwrap();
    assert!(header.contains(r#"origin="we\"ird\\name""#), "{header}");
    assert_eq!(parse(&header).unwrap().origin, r#"we"ird\name"#);
    assert!(authorization(&key, "bad\r\nname", "d", "GET", "/", None).is_err());
    assert!(authorization(&key, "o", "", "GET", "/", None).is_err());
    assert!(authorization(&key, "o", "d", "GET", "/", Some(&json!({"f": 0.5}))).is_err());
}

#[test]
fn parse_refuses_malformed_headers() {
    let bad = [
        "",
        "X-Matrix",
        "X-Matrix ",
        r#"Bearer origin="o",key="ed25519:v",sig="s""#,
        r#"X-Matrixorigin="o",key="ed25519:v",sig="s""#,
        r#"X-Matrix key="ed25519:v",sig="s""#,
        r#"X-Matrix origin="o",sig="s""#,
        r#"X-Matrix origin="o",key="ed25519:v""#,
        r#"X-Matrix origin="o",destination="d""#,
        r#"X-Matrix origin="",key="ed25519:v",sig="s""#,
        r#"X-Matrix origin=,key="ed25519:v",sig="s""#,
        r#"X-Matrix origin="o",key="ed25519:v",sig="s"#,
        r#"X-Matrix origin="o",key="ed25519:v",sig="s\"#,
        r#"X-Matrix origin="o"x,key="ed25519:v",sig="s""#,
        r#"X-Matrix origin=o x,key="ed25519:v",sig="s""#,
        r#"X-Matrix origin=o"x",key="ed25519:v",sig="s""#,
        r#"X-Matrix origin,key="ed25519:v",sig="s""#,
        r#"X-Matrix origin="o",key="ed25519:v",sig="s",origin="p""#,
        r#"X-Matrix origin="o",key="ed25519:v",sig="s",ORIGIN="o""#,
        r#"X-Matrix origin="o",key="nocolon",sig="s""#,
        r#"X-Matrix origin="o",key="ed25519:",sig="s""#,
        r#"X-Matrix or(igin="o",key="ed25519:v",sig="s""#,
        "X-Matrix origin=\"o\u{1}\",key=\"ed25519:v\",sig=\"s\"",
    ];
    for header in bad {
        assert!(
            matches!(parse(header), Err(FederationError::Header(_))),
            "{header:?} was accepted"
        );
    }
}
