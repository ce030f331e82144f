//! The `Authorization: X-Matrix …` header of server-to-server requests (Matrix server-server
//! API, "Request Authentication").
//!
//! The origin signs, with its server key, the canonical JSON object
//! `{"method", "uri", "origin", "destination", "content"}` (`uri` is the path and query as
//! sent; `content` is there only when the request has a JSON body) and sends
//! `Authorization: X-Matrix origin="origin.name",destination="destination.name",key="ed25519:v",sig="<base64>"`.
//!
//! - [`authorization`] makes that header value for a request we send.
//! - [`parse`] reads one from a request we receive, leniently (names in any case, quoted or
//!   unquoted values, whitespace around separators, `destination` absent for older servers),
//!   and [`verify`] checks its signature once the caller has the origin's public key.

use serde_json::{Map, Value};

use super::keys::{canonical_json, verify_json, SigningKey};
use super::FederationError;

/// The authentication scheme, compared without regard to case as HTTP wants.
const SCHEME: &str = "X-Matrix";

/// The `Authorization` header value (`X-Matrix origin="…",destination="…",key="…",sig="…"`)
/// for a request from `origin` to `destination` signed with `key`: `method` as sent (`GET`),
/// `uri` the path and query as sent (`/_matrix/federation/v1/media/download/abc?x=1`),
/// `content` the JSON body, if the request has one.
///
/// Fails when the content cannot be made canonical (see [`canonical_json`]), or when the
/// origin or destination holds characters a header value cannot carry (control characters).
pub fn authorization(
    key: &SigningKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String, FederationError> {
    let signed = request_json(method, uri, origin, destination, content);
    let sig = key.sign_bytes(canonical_json(&Value::Object(signed))?.as_bytes());
    Ok(format!(
        "{SCHEME} origin={},destination={},key={},sig={}",
        quote("origin", origin)?,
        quote("destination", destination)?,
        quote("key", key.key_id())?,
        quote("sig", &sig)?,
    ))
}

/// The parameters of an `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The server name of the sending server.
    pub origin: String,
    /// The server name of the receiving server; older servers do not send it.
    pub destination: Option<String>,
    /// The id of the origin's key that made the signature, `ed25519:<version>`.
    pub key_id: String,
    /// The signature, unpadded base64 as sent.
    pub sig: String,
}

/// Reads an `Authorization` header value `X-Matrix origin=…,destination=…,key=…,sig=…`.
///
/// The scheme and the parameter names are matched without regard to case; parameters come
/// in any order, separated by commas with optional whitespace around the commas and the
/// `=` signs; values are tokens or quoted strings with backslash escapes. `origin`, `key` and
/// `sig` are required, `destination` optional; unknown parameters are ignored; a known one
/// given twice, an empty value or anything that does not follow this grammar is refused.
pub fn parse(header_value: &str) -> Result<XMatrix, FederationError> {
    let header_value = header_value.trim_matches(is_ows);
    let (scheme, params) = header_value
        .split_once(is_ows)
        .unwrap_or((header_value, ""));
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(FederationError::Header(format!(
            "the scheme is {scheme:?}, not {SCHEME}"
        )));
    }

    let mut origin = None;
    let mut destination = None;
    let mut key_id = None;
    let mut sig = None;
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches(|c| is_ows(c) || c == ',');
        if rest.is_empty() {
            break;
        }
        let name_end = rest
            .find(|c: char| c == '=' || c == ',' || is_ows(c))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !name.chars().all(is_tchar) {
            return Err(FederationError::Header(format!(
                "{name:?} is not a parameter name"
            )));
        }
        rest = rest[name_end..].trim_start_matches(is_ows);
        let Some(after_equals) = rest.strip_prefix('=') else {
            return Err(FederationError::Header(format!(
                "parameter {name:?} has no `=value`"
            )));
        };
        let (value, after_value) = parse_value(name, after_equals.trim_start_matches(is_ows))?;
        rest = after_value.trim_start_matches(is_ows);
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(FederationError::Header(format!(
                "unexpected {rest:?} after parameter {name:?}"
            )));
        }
        if value.is_empty() {
            return Err(FederationError::Header(format!(
                "parameter {name:?} is empty"
            )));
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "origin" => &mut origin,
            "destination" => &mut destination,
            "key" => &mut key_id,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(FederationError::Header(format!(
                "parameter {name:?} is given twice"
            )));
        }
    }

    let missing = |name: &str| FederationError::Header(format!("no {name} parameter"));
    let key_id = key_id.ok_or_else(|| missing("key"))?;
    match key_id.split_once(':') {
        Some((algorithm, version)) if !algorithm.is_empty() && !version.is_empty() => {}
        _ => {
            return Err(FederationError::Header(format!(
                "key {key_id:?} is not an <algorithm>:<version> key id"
            )))
        }
    }
    Ok(XMatrix {
        origin: origin.ok_or_else(|| missing("origin"))?,
        destination,
        key_id,
        sig: sig.ok_or_else(|| missing("sig"))?,
    })
}

/// Checks that `x` signs this request to us: `method` and `uri` as received, `our_name` our
/// server name, `content` the JSON body if the request has one, `public_key_base64` the
/// origin's key `x.key_id` (fetched by the caller).
///
/// Refuses a header whose `destination` is present and is not `our_name`; without one (older
/// servers), the signature must still cover `our_name` as the destination.
pub fn verify(
    x: &XMatrix,
    public_key_base64: &str,
    method: &str,
    uri: &str,
    our_name: &str,
    content: Option<&Value>,
) -> Result<(), FederationError> {
    if let Some(destination) = &x.destination {
        if destination != our_name {
            return Err(FederationError::Signature(format!(
                "the request is for {destination:?}, we are {our_name:?}"
            )));
        }
    }
    let mut signed = request_json(method, uri, &x.origin, our_name, content);
    let mut by_key = Map::new();
    by_key.insert(x.key_id.clone(), Value::String(x.sig.clone()));
    let mut signatures = Map::new();
    signatures.insert(x.origin.clone(), Value::Object(by_key));
    signed.insert("signatures".to_owned(), Value::Object(signatures));
    verify_json(
        &Value::Object(signed),
        &x.origin,
        &x.key_id,
        public_key_base64,
    )
}

/// The JSON object the origin signs.
fn request_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("method".to_owned(), Value::String(method.to_owned()));
    object.insert("uri".to_owned(), Value::String(uri.to_owned()));
    object.insert("origin".to_owned(), Value::String(origin.to_owned()));
    object.insert(
        "destination".to_owned(),
        Value::String(destination.to_owned()),
    );
    if let Some(content) = content {
        object.insert("content".to_owned(), content.clone());
    }
    object
}

/// Optional whitespace of HTTP: space and horizontal tab.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A character of an HTTP token (RFC 9110 `tchar`).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A character a parameter value may hold: anything but control characters.
fn is_value_char(c: char) -> bool {
    c == '\t' || !c.is_control()
}

/// Reads the value of parameter `name` at the start of `s`, quoted or not; returns it and
/// what follows it.
fn parse_value<'a>(name: &str, s: &'a str) -> Result<(String, &'a str), FederationError> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(|c: char| c == ',' || is_ows(c)).unwrap_or(s.len());
        let value = &s[..end];
        if value.contains('"') || !value.chars().all(is_value_char) {
            return Err(FederationError::Header(format!(
                "parameter {name:?} has a malformed value"
            )));
        }
        return Ok((value.to_owned(), &s[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &quoted[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) if is_value_char(escaped) => value.push(escaped),
                _ => break,
            },
            c if is_value_char(c) => value.push(c),
            _ => break,
        }
    }
    Err(FederationError::Header(format!(
        "parameter {name:?} has a malformed quoted value"
    )))
}

/// `value` as a quoted string for parameter `name`.
fn quote(name: &str, value: &str) -> Result<String, FederationError> {
    if value.is_empty() || !value.chars().all(is_value_char) {
        return Err(FederationError::Header(format!(
            "{name} {value:?} cannot be sent in a header"
        )));
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
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
        let header =
            authorization(&key, "us.example", "them.example:8448", "GET", URI, None).unwrap();
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
}
