//! Our ed25519 server signing key, Matrix canonical JSON, and signing and verifying JSON
//! objects (Matrix server-server API, "Signing JSON" and "Publishing Keys").
//!
//! - [`SigningKey`]: the key (its file, in Synapse's format, is read and written by
//!   [`super::keyfile`]).
//! - [`canonical_json`]: sorted keys, no whitespace, UTF-8, integers only.
//! - [`SigningKey::sign_json`] / [`verify_json`]: the `signatures` block of a JSON object.
//! - [`SigningKey::server_keys`] / [`parse_server_keys`]: the `/_matrix/key/v2/server` answer,
//!   ours and another server's.
//!
//! Base64 is written as unpadded standard base64; it is read with or without padding, as the
//! spec asks ("implementations SHOULD accept input with or without padding characters").

use std::collections::BTreeMap;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, VerifyingKey};
use serde_json::{Map, Value};

use super::FederationError;

/// Unpadded standard base64 out; padded or unpadded in, unused trailing bits tolerated (the
/// spec's own test seed `YJDBA9…XA1` has some).
pub(super) const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The largest integer canonical JSON allows, 2^53 - 1 (the smallest is its negation).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The only signing algorithm Matrix defines.
pub(super) const ED25519: &str = "ed25519";

/// Our server's ed25519 signing key and its key id `ed25519:<version>`.
///
/// The secret half never leaves this struct (its `Debug` shows the key id and the public key
/// only, and the underlying key is zeroed on drop).
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of version `version` (key id `ed25519:<version>`) whose 32-byte seed is `seed`.
    ///
    /// The version must match `[A-Za-z0-9_]+`.
    pub fn from_seed(version: &str, seed: [u8; 32]) -> Result<Self, FederationError> {
        if !is_valid_version(version) {
            return Err(FederationError::Key(format!(
                "key version {version:?} must be made of [A-Za-z0-9_] and not be empty"
            )));
        }
        Ok(Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            key_id: format!("{ED25519}:{version}"),
        })
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, unpadded standard base64 of its 32 bytes.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// The ed25519 signature of `bytes`, unpadded standard base64 of its 64 bytes.
    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        B64.encode(self.key.sign(bytes).to_bytes())
    }

    /// Signs the JSON object `value` as `server_name`: the canonical JSON of the object without
    /// its `signatures` and `unsigned` members is signed, and the signature is added as
    /// `signatures.<server_name>.<key_id>`, keeping every other signature already there
    /// (one of ours under the same key id is replaced). `unsigned` is kept as it was.
    ///
    /// Fails, leaving `value` as it was, when `value` is not an object, when its `signatures`
    /// member (or `signatures.<server_name>`) is not an object, or when it cannot be made
    /// canonical (see [`canonical_json`]).
    pub fn sign_json(&self, server_name: &str, value: &mut Value) -> Result<(), FederationError> {
        let Some(object) = value.as_object_mut() else {
            return Err(FederationError::Json(
                "only a JSON object can be signed".to_owned(),
            ));
        };
        match object.get("signatures") {
            None => {}
            Some(Value::Object(servers)) => match servers.get(server_name) {
                None | Some(Value::Object(_)) => {}
                Some(_) => {
                    return Err(FederationError::Json(format!(
                        "signatures.{server_name} is not an object"
                    )))
                }
            },
            Some(_) => {
                return Err(FederationError::Json(
                    "signatures is not an object".to_owned(),
                ))
            }
        }
        let signatures = object.remove("signatures");
        let unsigned = object.remove("unsigned");
        let canonical = canonical_json(value);
        // Put back what was taken out before anything else can fail.
        let object = match value.as_object_mut() {
            Some(object) => object,
            None => return Err(FederationError::Json("not an object".to_owned())),
        };
        if let Some(unsigned) = unsigned {
            object.insert("unsigned".to_owned(), unsigned);
        }
        let had_signatures = signatures.is_some();
        let mut signatures = match signatures {
            Some(Value::Object(signatures)) => signatures,
            _ => Map::new(),
        };
        let canonical = match canonical {
            Ok(canonical) => canonical,
            Err(e) => {
                if had_signatures {
                    object.insert("signatures".to_owned(), Value::Object(signatures));
                }
                return Err(e);
            }
        };
        let signature = self.sign_bytes(canonical.as_bytes());
        let ours = signatures
            .entry(server_name.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ours) = ours {
            ours.insert(self.key_id.clone(), Value::String(signature));
        }
        object.insert("signatures".to_owned(), Value::Object(signatures));
        Ok(())
    }

    /// Our `/_matrix/key/v2/server` answer: `server_name`, `valid_until_ts`, this key in
    /// `verify_keys`, an empty `old_verify_keys`, signed by this key as `server_name`.
    ///
    /// Fails only when `valid_until_ts_ms` is above 2^53 - 1, which canonical JSON cannot hold.
    pub fn server_keys(
        &self,
        server_name: &str,
        valid_until_ts_ms: u64,
    ) -> Result<Value, FederationError> {
        let mut verify_keys = Map::new();
        verify_keys.insert(
            self.key_id.clone(),
            serde_json::json!({ "key": self.public_key_base64() }),
        );
        let mut answer = serde_json::json!({
            "server_name": server_name,
            "valid_until_ts": valid_until_ts_ms,
            "verify_keys": verify_keys,
            "old_verify_keys": {},
        });
        self.sign_json(server_name, &mut answer)?;
        Ok(answer)
    }

    /// The 32-byte seed, for writing the key file (`keyfile.rs`).
    pub(super) fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The version, the key id without its `ed25519:`.
    pub fn version(&self) -> &str {
        self.key_id
            .strip_prefix(ED25519)
            .and_then(|v| v.strip_prefix(':'))
            .unwrap_or(&self.key_id)
    }
}

/// A key version as the spec allows it: `[A-Za-z0-9_]+`.
pub(super) fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Matrix canonical JSON of `value`: object keys sorted by code point, no whitespace, UTF-8
/// strings escaped only where JSON requires it, numbers as integers.
///
/// Refuses numbers that are not integers in [-(2^53)+1, 2^53-1]. A number that JSON wrote with
/// a fraction or an exponent but whose value is such an integer is written as that integer,
/// as in the spec's example `{"a": -0, "b": 1e10}` → `{"a":0,"b":10000000000}`.
pub fn canonical_json(value: &Value) -> Result<String, FederationError> {
    let mut out = String::new();
    write_canonical(&mut out, value)?;
    Ok(out)
}

fn write_canonical(out: &mut String, value: &Value) -> Result<(), FederationError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&canonical_integer(n)?.to_string()),
        Value::String(s) => write_string(out, s)?,
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            // Sorted here rather than trusting the map's order (serde_json's `preserve_order`
            // feature would make it insertion order). `str` order is UTF-8 byte order, which
            // is code point order.
            let mut members: Vec<(&String, &Value)> = members.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key)?;
                out.push(':');
                write_canonical(out, item)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string: serde_json escapes `"`, `\` and the control characters (as `\b`, `\f`,
/// `\n`, `\r`, `\t` or `\u00xx`) and nothing else, as canonical JSON wants.
fn write_string(out: &mut String, s: &str) -> Result<(), FederationError> {
    let encoded = serde_json::to_string(s).map_err(|e| FederationError::Json(e.to_string()))?;
    out.push_str(&encoded);
    Ok(())
}

/// The integer value of `n`, when canonical JSON can hold it.
fn canonical_integer(n: &serde_json::Number) -> Result<i64, FederationError> {
    let out_of_range =
        || FederationError::Json(format!("{n} is outside canonical JSON's integer range"));
    if let Some(i) = n.as_i64() {
        return if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) {
            Ok(i)
        } else {
            Err(out_of_range())
        };
    }
    if n.as_u64().is_some() {
        // Above i64::MAX, so above 2^53 - 1.
        return Err(out_of_range());
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            if f.abs() <= MAX_SAFE_INTEGER as f64 {
                // Exact: f is an integer and |f| < 2^53.
                Ok(f as i64)
            } else {
                Err(out_of_range())
            }
        }
        _ => Err(FederationError::Json(format!(
            "{n} is not an integer; canonical JSON allows integers only"
        ))),
    }
}

/// Decodes base64 (padded or not) into exactly `N` bytes; `what` names it in the error.
fn decode_fixed<const N: usize>(encoded: &str, what: &str) -> Result<[u8; N], FederationError> {
    let bytes = B64
        .decode(encoded)
        .map_err(|e| FederationError::Signature(format!("{what} is not base64: {e}")))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        FederationError::Signature(format!("{what} is {} bytes, not {N}", bytes.len()))
    })
}

/// Checks the signature `signatures.<server_name>.<key_id>` of the JSON object `value` with the
/// ed25519 public key `public_key_base64`: it must sign the canonical JSON of `value` without
/// its `signatures` and `unsigned` members.
///
/// `key_id` must be an `ed25519:<version>` id (any non-empty version is taken here, as other
/// servers' versions are theirs to choose). Verification is strict (RFC 8032 plus the refusal of
/// weak public keys and non-canonical signatures, as libsodium does for Synapse).
pub fn verify_json(
    value: &Value,
    server_name: &str,
    key_id: &str,
    public_key_base64: &str,
) -> Result<(), FederationError> {
    match key_id.split_once(':') {
        Some((ED25519, version)) if !version.is_empty() => {}
        _ => {
            return Err(FederationError::Signature(format!(
                "key id {key_id:?} is not an ed25519:<version> id"
            )))
        }
    }
    let Some(object) = value.as_object() else {
        return Err(FederationError::Json(
            "only a JSON object can be verified".to_owned(),
        ));
    };
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(server_name))
        .and_then(|s| s.get(key_id))
        .ok_or_else(|| {
            FederationError::Signature(format!("no signature by {server_name} with {key_id}"))
        })?;
    let Some(signature) = signature.as_str() else {
        return Err(FederationError::Signature(format!(
            "the signature by {server_name} with {key_id} is not a string"
        )));
    };
    let signature =
        ed25519_dalek::Signature::from_bytes(&decode_fixed::<64>(signature, "the signature")?);
    let public_key =
        VerifyingKey::from_bytes(&decode_fixed::<32>(public_key_base64, "the public key")?)
            .map_err(|e| FederationError::Signature(format!("the public key is not valid: {e}")))?;

    let mut signed = object.clone();
    signed.remove("signatures");
    signed.remove("unsigned");
    let canonical = canonical_json(&Value::Object(signed))?;
    public_key
        .verify_strict(canonical.as_bytes(), &signature)
        .map_err(|_| {
            FederationError::Signature(format!(
                "the signature by {server_name} with {key_id} does not match"
            ))
        })
}

/// Reads another server's `/_matrix/key/v2/server` answer `value`: its `server_name` must be
/// `expected_server`, its `valid_until_ts` must be after `now_ms`, and it must be signed by
/// `expected_server` with at least one of its own `verify_keys` (and every such signature must
/// match). Returns the `verify_keys`, key id → unpadded base64 public key; `old_verify_keys` are
/// not returned, and keys of algorithms other than ed25519 are left out.
pub fn parse_server_keys(
    value: &Value,
    expected_server: &str,
    now_ms: u64,
) -> Result<BTreeMap<String, String>, FederationError> {
    let Some(object) = value.as_object() else {
        return Err(FederationError::Json(
            "the server keys are not a JSON object".to_owned(),
        ));
    };
    match object.get("server_name").and_then(Value::as_str) {
        Some(name) if name == expected_server => {}
        Some(name) => {
            return Err(FederationError::Json(format!(
                "the server keys are for {name:?}, not {expected_server:?}"
            )))
        }
        None => {
            return Err(FederationError::Json(
                "the server keys have no server_name string".to_owned(),
            ))
        }
    }
    match object.get("valid_until_ts").and_then(Value::as_u64) {
        Some(valid_until) if valid_until > now_ms => {}
        Some(valid_until) => {
            return Err(FederationError::Json(format!(
                "the server keys of {expected_server} expired at {valid_until} (now {now_ms})"
            )))
        }
        None => {
            return Err(FederationError::Json(format!(
                "the server keys of {expected_server} have no valid_until_ts integer"
            )))
        }
    }
    let Some(verify_keys) = object.get("verify_keys").and_then(Value::as_object) else {
        return Err(FederationError::Json(format!(
            "the server keys of {expected_server} have no verify_keys object"
        )));
    };
    let mut keys = BTreeMap::new();
    for (key_id, key) in verify_keys {
        if key_id.split_once(':').map(|(algorithm, _)| algorithm) != Some(ED25519) {
            continue;
        }
        let Some(public_key) = key.get("key").and_then(Value::as_str) else {
            return Err(FederationError::Json(format!(
                "verify key {key_id} of {expected_server} has no key string"
            )));
        };
        decode_fixed::<32>(public_key, "a verify key")?;
        keys.insert(key_id.clone(), public_key.to_owned());
    }
    let mut signed_by_own_key = false;
    if let Some(signatures) = object
        .get("signatures")
        .and_then(|s| s.get(expected_server))
        .and_then(Value::as_object)
    {
        for key_id in signatures.keys() {
            if let Some(public_key) = keys.get(key_id) {
                verify_json(value, expected_server, key_id, public_key)?;
                signed_by_own_key = true;
            }
        }
    }
    if !signed_by_own_key {
        return Err(FederationError::Signature(format!(
            "the server keys of {expected_server} are not signed by any of their verify_keys"
        )));
    }
    Ok(keys)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
