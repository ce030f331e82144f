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
#[path = "xmatrix_tests.rs"]
mod tests;
