//! Operator messages about our signing key, whose mistakes otherwise show only as "answered
//! 401" followed by a back-off: [`refusal_message`], what a remote's refusal of our signed
//! request said (its error body, capped) and what to check; and the start-up check
//! ([`check_published`], [`check_all_published`]) that each homeserver publishes the key
//! media-ledger signs for it with (remote servers verify our X-Matrix requests with the keys
//! the homeserver publishes at `/_matrix/key/v2/server`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::client::{capped_json, Client, MAX_JSON_BYTES};
use super::keys::{parse_server_keys, SigningKey};
use crate::config::{Config, HomeserverConfig};
use crate::homeserver_check::{error_chain, Finding};

/// At most this much of a remote's error body goes into a log line.
pub const MAX_LOGGED_BODY: usize = 1024;

/// A remote error body for a log line: lossy UTF-8, control characters as spaces, at most
/// [`MAX_LOGGED_BODY`] bytes (cut on a character boundary, marked).
pub fn loggable_body(body: &[u8]) -> String {
    let cut = body.len() > MAX_LOGGED_BODY;
    let mut end = body.len().min(MAX_LOGGED_BODY);
    if cut {
        // Not inside a UTF-8 sequence: back to the start of the character cut.
        while end > 0 && body.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
            end -= 1;
        }
    }
    let text = String::from_utf8_lossy(body.get(..end).unwrap_or_default());
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let out_trimmed = out.trim_end().len();
    out.truncate(out_trimmed);
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    if cut {
        out.push_str(" …(truncated)");
    }
    out
}

/// What to log when `origin` answered `status` (401 or 403) to our request signed as
/// `our_name` with `key_id`: its body (capped) and what the operator should check.
pub fn refusal_message(
    origin: &str,
    our_name: &str,
    key_id: &str,
    status: u16,
    body: &[u8],
) -> String {
    format!(
        "{origin} refused our federation request signed as {our_name} with {key_id} \
         (HTTP {status}): {body}. Remote servers verify media-ledger's X-Matrix signature with \
         the keys {our_name} publishes at /_matrix/key/v2/server: {key_id} must be among them \
         (append `media-ledger keys print` to the homeserver's signing key file, or sign with the \
         homeserver's key: `media-ledger keys import`; see README \"Deploying beside Synapse\"), \
         and {origin} must be able to fetch them. {origin} is backed off meanwhile.",
        body = loggable_body(body)
    )
}

/// The finding for the verify keys `published` by homeserver `hs` (asked at `asked`), for
/// `key`, read from `key_path`.
pub fn compare_published(
    hs: &str,
    asked: &str,
    published: &BTreeMap<String, String>,
    key: &SigningKey,
    key_path: &str,
) -> Finding {
    let (id, public) = (key.key_id(), key.public_key_base64());
    match published.get(id) {
        Some(p) if *p == public => Finding::Fine(format!(
            "homeserver {hs} publishes media-ledger's signing key {id} (asked at {asked})"
        )),
        Some(p) => Finding::Problem(format!(
            "homeserver {hs} publishes another key under media-ledger's key id {id} \
             (its public key {p}, ours {public} from {key_path}; asked at {asked}): remote \
             servers will refuse media-ledger's federation requests (401). Give media-ledger a key \
             of another version (remove {key_path} to generate one, then append \
             `media-ledger keys print` to the homeserver's signing key file), or import the \
             homeserver's key (`media-ledger keys import <its key file> --force`)"
        )),
        None => Finding::Problem(format!(
            "homeserver {hs} does not publish media-ledger's signing key {id} (public key \
             {public}, from {key_path}): its /_matrix/key/v2/server (asked at {asked}) lists {ids}. \
             Remote servers verify media-ledger's federation requests with the homeserver's keys, \
             so they will answer them 401 and remote media cannot be fetched. Either append \
             media-ledger's key to the homeserver's key file (`media-ledger keys print \
             --homeserver {hs} >> <Synapse's signing_key_path>`, then restart Synapse), or make \
             media-ledger sign with the homeserver's key (`media-ledger keys import <Synapse's \
             signing key file> --homeserver {hs}`, then restart media-ledger)",
            ids = if published.is_empty() {
                "no ed25519 key".to_owned()
            } else {
                published.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        )),
    }
}

/// Checks that homeserver `hs` publishes `key`: its `/_matrix/key/v2/server` is asked at its
/// `cs_api` (Synapse serves it there with its `federation` or `keys` listener resource), and,
/// when there is no `cs_api` or it does not serve the keys (404), through `federation`
/// (discovery or a pin, as a remote server would).
pub async fn check_published(
    http: &reqwest::Client,
    federation: &Client,
    hs: &HomeserverConfig,
    key: &SigningKey,
    key_path: &str,
) -> Finding {
    let name = hs.name.as_str();
    let cannot = |asked: &str, why: String| {
        Finding::Problem(format!(
            "homeserver {name}: cannot check that it publishes media-ledger's signing key {} \
             ({why}; asked at {asked}). Check by hand that https://{name}/_matrix/key/v2/server \
             lists {} with key {}",
            key.key_id(),
            key.key_id(),
            key.public_key_base64()
        ))
    };
    if let Some(cs_api) = &hs.cs_api {
        let url = format!("{}/_matrix/key/v2/server", cs_api.trim_end_matches('/'));
        match http.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let published = capped_json(resp, MAX_JSON_BYTES).await.and_then(|v| {
                    parse_server_keys(&v, name, crate::clock::now_ms()).map_err(|e| e.to_string())
                });
                return match published {
                    Ok(keys) => compare_published(name, &url, &keys, key, key_path),
                    Err(e) => cannot(&url, format!("its answer cannot be used: {e}")),
                };
            }
            Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(resp) => return cannot(&url, format!("it answered {}", resp.status())),
            Err(e) => return cannot(&url, error_chain(&e)),
        }
    }
    let asked = format!("{name} over federation");
    match federation.server_keys(&hs.name).await {
        Ok(keys) => compare_published(name, &asked, &keys, key, key_path),
        Err(e) => cannot(&asked, e.to_string()),
    }
}

/// [`check_published`] for every homeserver with a `cs_api` (one without is standalone, or
/// `homeserver_check` already says it lacks one), logged (fine: INFO, a problem: WARN). Run in
/// the background at start-up when `federation.enabled` and `federation.check_published_key`.
pub async fn check_all_published(config: Arc<Config>, federation: Arc<Client>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    for hs in config.homeservers.iter().filter(|h| h.cs_api.is_some()) {
        let path = config.signing_key_path_for(&hs.name);
        let key = federation.key_for(&hs.name);
        match check_published(&http, &federation, hs, key, &path.display().to_string()).await {
            Finding::Fine(m) => tracing::info!("{m}"),
            Finding::Problem(m) => tracing::warn!("{m}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_key_and_carries_the_remote_body_capped() {
        let body = br#"{"errcode":"M_UNAUTHORIZED","error":"Invalid signature for server a.example with key ed25519:a_ml01"}"#;
        let m = refusal_message("b.example", "a.example", "ed25519:a_ml01", 401, body);
        assert!(m.contains("b.example refused"), "{m}");
        assert!(m.contains("HTTP 401"), "{m}");
        assert!(m.contains(std::str::from_utf8(body).unwrap()), "{m}");
        assert!(m.contains("ed25519:a_ml01 must be among them"), "{m}");
        assert!(m.contains("media-ledger keys print"), "{m}");

        // Capped, on a character boundary, control characters blanked, marked as cut.
        let mut long = "é".repeat(MAX_LOGGED_BODY).into_bytes();
        long.extend_from_slice(b"\x1b[31mTAIL");
        let shown = loggable_body(&long);
        assert!(shown.ends_with(" …(truncated)"), "{shown}");
        assert!(!shown.contains("TAIL") && !shown.contains('\u{fffd}'));
        assert!(shown.len() <= MAX_LOGGED_BODY + " …(truncated)".len());
        assert_eq!(loggable_body(b"a\x1b[0m\nb\r\n"), "a [0m b");
        assert_eq!(loggable_body(b""), "(empty body)");
        // Invalid UTF-8 is shown, not refused.
        assert_eq!(loggable_body(b"\xff!"), "\u{fffd}!");
    }

    #[test]
    fn published_keys_are_compared_by_id_and_public_key() {
        let key = SigningKey::from_seed("a_ml01", [1; 32]).unwrap();
        let other = SigningKey::from_seed("a_ml01", [2; 32]).unwrap();
        let mut published = BTreeMap::new();
        published.insert("ed25519:a_hs01".to_owned(), other.public_key_base64());
        let Finding::Problem(m) = compare_published("hs", "u", &published, &key, "/k") else {
            panic!("not published is a problem");
        };
        assert!(
            m.contains("does not publish media-ledger's signing key ed25519:a_ml01"),
            "{m}"
        );
        assert!(m.contains("lists ed25519:a_hs01"), "{m}");
        published.insert("ed25519:a_ml01".to_owned(), other.public_key_base64());
        let Finding::Problem(m) = compare_published("hs", "u", &published, &key, "/k") else {
            panic!("another key under our id is a problem");
        };
        assert!(m.contains("another key under media-ledger's key id"), "{m}");
        published.insert("ed25519:a_ml01".to_owned(), key.public_key_base64());
        assert!(matches!(
            compare_published("hs", "u", &published, &key, "/k"),
            Finding::Fine(_)
        ));
    }
}
