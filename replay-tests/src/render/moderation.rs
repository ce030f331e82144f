//! Rendering of the moderation projection: `blocks`, `quarantined`, `pending_deletions`,
//! `audit`, `history` and `blob_history`.

use super::{json_of, sha_at, unparsed};
use media_ledger_events::{codec, Seq};
use media_ledger_projections::memory::MemoryKv;
use media_ledger_projections::{moderation, parse_media_key, ProjectionError};
use serde_json::{json, Map, Value};

fn seq_at(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// Adds `value` under `outer` → `inner` of `out`.
fn insert_in(out: &mut Map<String, Value>, outer: &str, inner: String, value: Value) {
    if let Value::Object(m) = out
        .entry(outer)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        m.insert(inner, value);
    }
}

/// Appends `seq` to the list under `outer` → `inner` of `out`.
fn push_in(out: &mut Map<String, Value>, outer: &str, inner: String, seq: u64) {
    if let Value::Object(m) = out
        .entry(outer)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        if let Value::Array(list) = m.entry(inner).or_insert_with(|| Value::Array(Vec::new())) {
            list.push(json!(seq));
        }
    }
}

/// The moderation projection rendered by kind of key (hashes, MXC URIs and sequences as names).
pub(super) fn render(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        let Some((tag, rest)) = k.split_first() else {
            unparsed(&mut out, k, v);
            continue;
        };
        match tag {
            b'q' => match sha_at(rest) {
                Some(sha) => {
                    let b = moderation::blocks(kv, &sha).map(Some);
                    insert_in(&mut out, "blocks", sha.to_hex(), json_of(b, v));
                }
                None => unparsed(&mut out, k, v),
            },
            b'm' => match moderation::quarantined_media_of_key(k) {
                Some(media) => {
                    let seq = codec::decode::<Seq>(v).map(Some).map_err(|source| {
                        ProjectionError::Corrupt {
                            name: media_ledger_projections::names::MODERATION.as_str(),
                            source,
                        }
                    });
                    insert_in(&mut out, "quarantined", media.to_string(), json_of(seq, v));
                }
                None => unparsed(&mut out, k, v),
            },
            b'p' => match moderation::decode_pending(k, v) {
                Some(Ok((seq, freed))) if rest.len() == 40 => insert_in(
                    &mut out,
                    "pending_deletions",
                    format!("purge-{} {}", seq.0, freed.sha256.to_hex()),
                    json_of(Ok(Some(freed)), v),
                ),
                _ => unparsed(&mut out, k, v),
            },
            b'a' => match moderation::decode_audit(k, v) {
                Some(Ok((seq, entry))) => {
                    insert_in(
                        &mut out,
                        "audit",
                        seq.0.to_string(),
                        json_of(Ok(Some(entry)), v),
                    );
                }
                _ => unparsed(&mut out, k, v),
            },
            b'h' if rest.len() > 9 && v.is_empty() => {
                let (media, seq) = rest.split_at(rest.len() - 8);
                match (
                    media.strip_suffix(&[0]).and_then(parse_media_key),
                    seq_at(seq),
                ) {
                    (Some(media), Some(seq)) => {
                        push_in(&mut out, "history", media.to_string(), seq);
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            b's' if rest.len() == 40 && v.is_empty() => {
                let (sha, seq) = rest.split_at(32);
                match (sha_at(sha), seq_at(seq)) {
                    (Some(sha), Some(seq)) => {
                        push_in(&mut out, "blob_history", sha.to_hex(), seq);
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    Value::Object(out)
}
