//! Typed identifiers, validated when they are built.
//!
//! Every id that crosses a layer is one of these newtypes. Their constructors enforce the Matrix
//! grammar (server names, media ids, user ids) or our own (datastore ids, blob locations), so a
//! value that exists is valid: nothing downstream re-checks it, and no request string ever
//! becomes a filesystem path without passing through here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a server name by the spec's grammar.
    #[error("invalid server name: {0:?}")]
    ServerName(String),
    /// Not a media id (`[A-Za-z0-9_-]{1,255}`).
    #[error("invalid media id: {0:?}")]
    MediaId(String),
    /// Not a user id (`@localpart:server`).
    #[error("invalid user id: {0:?}")]
    UserId(String),
    /// Not a room id (`!opaque:server`, or room version 12's `!` + 43 url-safe base64).
    #[error("invalid room id: {0:?}")]
    RoomId(String),
    /// Not a datastore id (`[A-Za-z0-9_.-]{1,64}`).
    #[error("invalid datastore id: {0:?}")]
    DatastoreId(String),
    /// Not 64 lowercase hex digits.
    #[error("invalid sha256: {0:?}")]
    Sha256(String),
    /// Not a relative blob location.
    #[error("invalid blob location: {0:?}")]
    BlobLocation(String),
    /// Not an `mxc://server/id` URI.
    #[error("invalid mxc uri: {0:?}")]
    Mxc(String),
    /// Not a `type/subtype` content type.
    #[error("invalid content type: {0:?}")]
    ContentType(String),
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:path, $err:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                if $check(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError::$err(s))
                }
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s.to_owned())
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A Matrix server name: `host[:port]`, host being an IPv4 literal, a bracketed IPv6
    /// literal or a DNS name (spec appendix "Server Name").
    ServerName,
    is_server_name,
    ServerName
);
string_id!(
    /// A media id: the opaque part of an MXC URI.
    MediaId,
    is_media_id,
    MediaId
);
string_id!(
    /// A Matrix user id, `@localpart:server`.
    UserId,
    is_user_id,
    UserId
);
string_id!(
    /// A Matrix room id: `!opaque:server` (room versions 1–11), or room version 12's
    /// `!` followed by the create event's reference hash (43 url-safe unpadded base64
    /// characters, no server part). At most 255 bytes, printable ASCII.
    RoomId,
    is_room_id,
    RoomId
);
string_id!(
    /// The stable id of a datastore, from config.
    DatastoreId,
    is_datastore_id,
    DatastoreId
);
string_id!(
    /// Where a blob lives inside its datastore: a relative path of `[A-Za-z0-9_.-]` segments.
    BlobLocation,
    is_blob_location,
    BlobLocation
);
string_id!(
    /// A MIME type as given by the uploader, `type/subtype[; params]`, printable ASCII.
    ContentType,
    is_content_type,
    ContentType
);

fn is_server_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let (host, port) = split_port(s);
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(v6) = inner.strip_suffix(']') else {
            return false;
        };
        return (2..=45).contains(&v6.len()) && v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Splits `host[:port]`, minding that an IPv6 literal contains colons.
fn split_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        match s.rfind("]:") {
            Some(i) => (&s[..=i], Some(&s[i + 2..])),
            None => (s, None),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    }
}

fn is_media_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_user_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('@') else {
        return false;
    };
    let Some((local, server)) = rest.split_once(':') else {
        return false;
    };
    s.len() <= 255
        && !local.is_empty()
        && local
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
        && is_server_name(server)
}

fn is_room_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('!') else {
        return false;
    };
    if s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    match rest.split_once(':') {
        // Room versions 1–11: an opaque part (any printable ASCII) and the creator's server.
        Some((opaque, server)) => !opaque.is_empty() && is_server_name(server),
        // Room version 12: the SHA-256 reference hash of the create event, url-safe
        // unpadded base64 (32 bytes → 43 characters).
        None => {
            rest.len() == 43
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
    }
}

fn is_datastore_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_blob_location(s: &str) -> bool {
    // One pass over the bytes (this runs on every decode of a record that holds a location).
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 512 {
        return false;
    }
    let mut seg_start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'/' {
            if !is_segment(&b[seg_start..i]) {
                return false;
            }
            seg_start = i + 1;
        } else if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.') {
            return false;
        }
    }
    is_segment(&b[seg_start..])
}

fn is_segment(seg: &[u8]) -> bool {
    !seg.is_empty() && seg != b"." && seg != b".."
}

fn is_content_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or_default().trim();
    s.len() <= 255
        && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(t, st)| !t.is_empty() && !st.is_empty() && !st.contains('/'))
}

impl ServerName {
    /// The host part, without any port.
    pub fn host(&self) -> &str {
        split_port(&self.0).0
    }

    /// Parses a name that must be resolvable (requests, config, federation headers):
    /// Synapse's rule — a bracketed IPv6 literal, or labels of `[A-Za-z0-9-]` separated by
    /// single dots (an IPv4 literal is such a name; no empty label, no leading or trailing
    /// dot) — with an optional port of 1 to 65535. Decoding a stored event keeps the older,
    /// lenient grammar ([`FromStr`]), so a log written before this rule stays readable.
    pub fn parse_strict(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::ServerName(s.to_owned());
        let name: Self = s.parse().map_err(|_| bad())?;
        let (host, port) = split_port(s);
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(bad());
        }
        let labels_ok = host.starts_with('[')
            || host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if labels_ok {
            Ok(name)
        } else {
            Err(bad())
        }
    }
}

impl UserId {
    /// The server part, after the first `:`.
    pub fn server_name(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, s)| s)
    }
}

/// What a client or a browser reads as one `Content-Type`; [`ContentType`]'s decoding stays
/// lenient (stored events are immutable), these are the strict readings.
impl ContentType {
    /// Parses what a client sends: `type/subtype` of RFC 9110 tokens, then `; name=value`
    /// parameters (token name; token or plain quoted-string value), and no comma anywhere (a
    /// browser reads `image/png;, image/svg+xml` as a list and takes the last type). Returns
    /// the canonical form: lowercase type, subtype and parameter names, `; ` between parts.
    pub fn parse_strict(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::ContentType(s.to_owned());
        if s.contains(',') || !is_content_type(s) {
            return Err(bad());
        }
        let mut parts = s.split(';');
        let mut out = essence_of(parts.next().unwrap_or_default()).ok_or_else(bad)?;
        for p in parts.map(trim_ows).filter(|p| !p.is_empty()) {
            let (name, value) = p.split_once('=').ok_or_else(bad)?;
            if !is_token(name) || !(is_token(value) || is_quoted(value)) {
                return Err(bad());
            }
            out.push_str("; ");
            out.push_str(&name.to_ascii_lowercase());
            out.push('=');
            out.push_str(value);
        }
        Self::try_from(out)
    }

    /// Reads what another server sent: the strict form if it parses, else its leading
    /// `type/subtype` alone (up to the first `;` or `,`), else nothing (served as
    /// `application/octet-stream`).
    pub fn normalise(s: &str) -> Option<Self> {
        Self::parse_strict(s)
            .ok()
            .or_else(|| essence_of(s).and_then(|e| Self::try_from(e).ok()))
    }

    /// The lowercase `type/subtype` (the first one, up to the first `;` or `,`), or
    /// `application/octet-stream` when the value does not start with one.
    pub fn essence(&self) -> String {
        essence_of(&self.0).unwrap_or_else(|| OCTET_STREAM.to_owned())
    }

    /// The value to serve in a `Content-Type` header: [`Self::essence`] and, if present as a
    /// token, the `charset` parameter; nothing else of what was stored (older records may
    /// hold values that [`Self::parse_strict`] refuses).
    pub fn served(&self) -> String {
        let mut out = self.essence();
        let charset = self.0.split(';').skip(1).map(trim_ows).find_map(|p| {
            let (name, value) = p.split_once('=')?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (name.eq_ignore_ascii_case("charset") && is_token(value)).then_some(value)
        });
        if let Some(c) = charset.filter(|_| out != OCTET_STREAM) {
            out.push_str("; charset=");
            out.push_str(c);
        }
        out
    }
}

/// The type served when none is known or the stored one is unusable.
pub const OCTET_STREAM: &str = "application/octet-stream";

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A quoted-string without escapes, `;` or `,`.
fn is_quoted(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with('"')
        && s.ends_with('"')
        && s[1..s.len() - 1]
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && !b"\"\\;,".contains(&b))
}

/// The lowercase `type/subtype` at the start of `s`, up to the first `;` or `,`.
fn essence_of(s: &str) -> Option<String> {
    let first = trim_ows(s.split([';', ',']).next().unwrap_or_default());
    let (t, st) = first.split_once('/')?;
    (is_token(t) && is_token(st) && !st.contains('/')).then(|| first.to_ascii_lowercase())
}

/// An MXC URI: the origin server and the media id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MediaRef {
    /// The server that owns the media.
    pub origin: ServerName,
    /// The media id on that server.
    pub media_id: MediaId,
}

impl MediaRef {
    /// Builds a reference from its parts.
    pub fn new(origin: ServerName, media_id: MediaId) -> Self {
        Self { origin, media_id }
    }
}

impl fmt::Display for MediaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.origin, self.media_id)
    }
}

impl FromStr for MediaRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Mxc(s.to_owned());
        let rest = s.strip_prefix("mxc://").ok_or_else(bad)?;
        let (origin, id) = rest.split_once('/').ok_or_else(bad)?;
        Ok(Self {
            origin: origin.parse().map_err(|_| bad())?,
            media_id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// A SHA-256 digest; text form is 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}
impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
/// Hex in human-readable formats (JSON), the 32 raw bytes in binary ones (the log).
impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Sha256)
        }
    }
}

impl TryFrom<String> for Sha256 {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}
impl From<Sha256> for String {
    fn from(h: Sha256) -> String {
        h.to_hex()
    }
}
impl FromStr for Sha256 {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Sha256(s.to_owned());
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = hex_val(pair.first().copied()).ok_or_else(bad)?;
            let lo = hex_val(pair.get(1).copied()).ok_or_else(bad)?;
            *o = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_val(b: Option<u8>) -> Option<u8> {
    match b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The position of an event in the log: gap-free, starting at 1, assigned by the single writer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_take_both_forms() {
        let v12 = format!("!{}", "aB3-_".repeat(8) + "xyz");
        assert_eq!(v12.len(), 44);
        for ok in [
            "!room:localhost",
            "!OGEhHVWSdvArJzumhm:matrix.org",
            "!a:example.com:8448",
            "!x:[::1]",
            v12.as_str(),
        ] {
            assert!(ok.parse::<RoomId>().is_ok(), "{ok}");
        }
        let long = format!("!{}:example.com", "a".repeat(250));
        for bad in [
            "",
            "!",
            "room:localhost",
            "@user:localhost",
            "!:localhost",
            "!room:",
            "!room:a/b",
            "!ro om:localhost",
            "!abc",
            &v12[..43],
            &format!("{v12}A"),
            &v12.replace('-', "+"),
            &v12.replace('_', "/"),
            &format!("{v12}="),
            long.as_str(),
        ] {
            assert!(bad.parse::<RoomId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn server_names_follow_the_grammar() {
        for ok in [
            "localhost",
            "matrix.org",
            "example.com:8448",
            "1.2.3.4",
            "[::1]",
            "[1234:5678::abcd]:443",
        ] {
            assert!(ok.parse::<ServerName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "../etc",
            "host:",
            "host:123456",
            "[::1",
            "exa mple",
            "x:y:z",
        ] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn strict_server_names_are_resolvable() {
        for ok in [
            "localhost",
            "matrix.org",
            "Matrix.ORG:8448",
            "1.2.3.4",
            "[::1]:443",
            "a-b.c-d",
        ] {
            assert!(ServerName::parse_strict(ok).is_ok(), "{ok}");
        }
        for bad in [
            "..",
            ".",
            "a..b",
            ".a",
            "blocked.test.",
            "blocked.test.:8448",
            "a_b.test",
            "host:0",
            "host:65536",
            "",
        ] {
            assert!(ServerName::parse_strict(bad).is_err(), "{bad}");
        }
        // The stored-event grammar stays lenient: old logs may hold such names.
        for old in ["..", "a..b", "blocked.test."] {
            assert!(old.parse::<ServerName>().is_ok(), "{old}");
        }
    }

    #[test]
    fn media_ids_and_locations_refuse_paths() {
        assert!("abcDEF123_-".parse::<MediaId>().is_ok());
        for bad in ["", "a/b", "..", "a.b", "a%2f"] {
            assert!(bad.parse::<MediaId>().is_err(), "{bad}");
        }
        assert!("ab/cd/abcdef".parse::<BlobLocation>().is_ok());
        for bad in ["", "/abs", "a/../b", "a//b", "a/./b"] {
            assert!(bad.parse::<BlobLocation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_hex_round_trips() {
        let h = Sha256([0xab; 32]);
        assert_eq!(h.to_hex().parse::<Sha256>(), Ok(h));
        assert!("AB".repeat(32).parse::<Sha256>().is_err());
    }

    #[test]
    fn mxc_parses() {
        let r: MediaRef = "mxc://example.org:8448/abc".parse().unwrap();
        assert_eq!(r.origin.host(), "example.org");
        assert_eq!(r.to_string(), "mxc://example.org:8448/abc");
        assert!("mxc://ex/a/b".parse::<MediaRef>().is_err());
    }

    #[test]
    fn content_types_strict_and_served() {
        let ok = |s: &str| ContentType::parse_strict(s).map(String::from);
        assert_eq!(ok("image/PNG").as_deref(), Ok("image/png"));
        assert_eq!(
            ok("text/plain;Charset=\"utf-8\"").as_deref(),
            Ok("text/plain; charset=\"utf-8\"")
        );
        assert_eq!(ok("text/plain;").as_deref(), Ok("text/plain"));
        for bad in [
            "text/plain;, text/html",
            "image/png;, image/svg+xml",
            "image/png, image/svg+xml",
            "text/plain; a=\"x,y\"",
            "text/plain; charset",
            "text /plain",
            "text/plain/x",
            "text",
        ] {
            assert!(ContentType::parse_strict(bad).is_err(), "{bad}");
        }
        // What a remote sent: the first type.
        let n = |s: &str| ContentType::normalise(s).map(String::from);
        assert_eq!(n("image/png;, image/svg+xml").as_deref(), Some("image/png"));
        assert_eq!(n("Image/PNG, image/svg+xml").as_deref(), Some("image/png"));
        assert_eq!(n(", image/svg+xml"), None);
        // A stored value from before the strict rule: only the parsed type is served.
        let old: ContentType = "text/plain;, text/html".parse().unwrap();
        assert_eq!(old.served(), "text/plain");
        assert_eq!(old.essence(), "text/plain");
        let old: ContentType = "text/html;, text/plain; charset=utf-8".parse().unwrap();
        assert_eq!(old.served(), "text/html; charset=utf-8");
        let old: ContentType = "x y/z".parse().unwrap();
        assert_eq!(old.served(), OCTET_STREAM);
        let cs: ContentType = "text/plain; charset=\"utf-8\"; q=1".parse().unwrap();
        assert_eq!(cs.served(), "text/plain; charset=utf-8");
    }

    #[test]
    fn user_ids() {
        assert!("@alice:localhost".parse::<UserId>().is_ok());
        assert!("alice:localhost".parse::<UserId>().is_err());
        assert!("@:localhost".parse::<UserId>().is_err());
    }
}
