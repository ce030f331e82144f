//! The bytes of the log, and the hash chain that protects them.
//!
//! A record is `[format version: 1 byte][bincode of StoredEnvelope][chain: 32 bytes]`, where
//! `chain = SHA-256(previous chain ‖ seq as 8 big-endian bytes ‖ the bytes before the chain)`
//! and the chain before sequence 1 is 32 zero bytes. Changing any byte of any record, or
//! removing one, breaks every chain value after it.
//!
//! bincode 2.0.1 with `config::standard()` (varint integers) is the one encoding of this crate;
//! golden fixtures in `tests/` freeze its output, so a dependency upgrade that changed the bytes
//! fails the build's tests rather than silently forking the format.

use crate::envelope::Envelope;
use crate::ids::Seq;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256 as Hasher};

/// The record layout written by this version.
pub const RECORD_FORMAT_V1: u8 = 1;
/// Length of the chain value at the end of each record.
pub const CHAIN_LEN: usize = 32;
/// The chain value "before" sequence 1.
pub const GENESIS_CHAIN: [u8; CHAIN_LEN] = [0; CHAIN_LEN];

/// A chain value.
pub type Chain = [u8; CHAIN_LEN];

/// The versioned wrapper that is actually encoded; a new envelope layout is a new variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEnvelope {
    /// The first envelope layout.
    V1(Envelope),
}

/// Why bytes could not be decoded or verified.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// bincode refused to encode the value.
    #[error("encode: {0}")]
    Encode(String),
    /// The bytes are not a value of the expected type.
    #[error("decode: {0}")]
    Decode(String),
    /// The record is too short or of an unknown format version.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The record's chain value is not the one its bytes and predecessor give.
    #[error("checksum chain broken")]
    ChainMismatch,
    /// The writer refuses a record the decoder could not read back (or one far past the
    /// size any event needs): recording it would make the log unreadable from there on.
    #[error("record of {bytes} bytes refused (limit {limit}): {why}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
        /// Why it was refused.
        why: String,
    },
    /// The record's envelope says another sequence than its position.
    #[error("record claims sequence {claimed}, stored at {stored}")]
    SeqMismatch {
        /// The sequence in the envelope.
        claimed: u64,
        /// The sequence of the key.
        stored: u64,
    },
}

/// Largest value the decoder accepts. A limit does not change encoded bytes; it stops a
/// corrupt length prefix from making the decoder reserve terabytes (and abort the process).
/// bincode counts what a value claims while decoding (string bytes, container lengths times
/// their element size), which can exceed its encoded length.
pub const DECODE_LIMIT_BYTES: usize = 16 << 20;

/// Largest record [`encode_record`] produces: a quarter of [`DECODE_LIMIT_BYTES`], the margin
/// for what decoding a record claims beyond its length. One limit for both sides: a record
/// over it, or one the decoder refuses, is never written (so the log stays readable).
pub const MAX_RECORD_BYTES: usize = DECODE_LIMIT_BYTES / 4;

/// What a chain-verified record written before [`MAX_RECORD_BYTES`] existed may claim while
/// decoding. Such a record was written by this software (its chain is intact), so its length
/// prefixes are not corrupt: reading it back needs memory in proportion to its size only.
pub const LEGACY_DECODE_LIMIT_BYTES: usize = 1 << 30;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

fn legacy_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LEGACY_DECODE_LIMIT_BYTES>,
> {
    bincode::config::standard().with_limit::<LEGACY_DECODE_LIMIT_BYTES>()
}

/// Encodes any serde value with the crate's one bincode configuration.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value written by [`encode`]; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

fn chain_of(prev: &Chain, seq: Seq, body: &[u8]) -> Chain {
    let mut h = Hasher::new();
    h.update(prev);
    h.update(seq.0.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// Encodes `env` as the record following a record whose chain is `prev`; returns the record
/// and its own chain value. Refuses ([`CodecError::TooLarge`]) a record over
/// [`MAX_RECORD_BYTES`] or one that [`decode_record`] would not read back: the bytes are
/// decoded once here, with the reader's own limit.
pub fn encode_record(prev: &Chain, env: &Envelope) -> Result<(Vec<u8>, Chain), CodecError> {
    let mut body = vec![RECORD_FORMAT_V1];
    // `StoredEnvelope` is encoded by reference through a borrowed mirror to avoid a clone.
    #[derive(Serialize)]
    enum StoredRef<'a> {
        V1(&'a Envelope),
    }
    body.extend(encode(&StoredRef::V1(env))?);
    let too_large = |why: String| CodecError::TooLarge {
        bytes: body.len(),
        limit: MAX_RECORD_BYTES,
        why,
    };
    if body.len() + CHAIN_LEN > MAX_RECORD_BYTES {
        return Err(too_large("over the record size limit".into()));
    }
    if let Err(e) = decode_body_with(&body, false) {
        return Err(too_large(format!("the decoder would refuse it: {e}")));
    }
    let chain = chain_of(prev, env.seq, &body);
    body.extend_from_slice(&chain);
    Ok((body, chain))
}

/// Seals an already encoded body (format byte included) as the record at `seq` after a record
/// whose chain is `prev`, without any check of the body: for recovery tests and tools that
/// must write what another build could have written.
pub fn seal_body(prev: &Chain, seq: Seq, mut body: Vec<u8>) -> (Vec<u8>, Chain) {
    let chain = chain_of(prev, seq, &body);
    body.extend_from_slice(&chain);
    (body, chain)
}

/// Checks a record stored at sequence `seq` against the previous chain value without
/// decoding it. Returns this record's chain value and its body (the bytes before the chain).
pub fn check_chain<'a>(
    prev: &Chain,
    seq: Seq,
    record: &'a [u8],
) -> Result<(Chain, &'a [u8]), CodecError> {
    let split = record
        .len()
        .checked_sub(CHAIN_LEN)
        .ok_or(CodecError::Malformed("shorter than its checksum"))?;
    let (body, stored) = record.split_at(split);
    let chain = chain_of(prev, seq, body);
    if chain.as_slice() != stored {
        return Err(CodecError::ChainMismatch);
    }
    Ok((chain, body))
}

/// Decodes a record stored at sequence `seq` and checks it against the previous chain value.
/// Returns the envelope and this record's chain value. A record whose chain is intact was
/// written by this software, so one written before the writer bounded record sizes is read
/// with [`LEGACY_DECODE_LIMIT_BYTES`].
pub fn decode_record(
    prev: &Chain,
    seq: Seq,
    record: &[u8],
) -> Result<(Envelope, Chain), CodecError> {
    let (chain, body) = check_chain(prev, seq, record)?;
    Ok((decode_checked_body(seq, body)?, chain))
}

/// Decodes the body of a record stored at `seq` whose chain [`check_chain`] verified.
pub fn decode_checked_body(seq: Seq, body: &[u8]) -> Result<Envelope, CodecError> {
    let env = decode_body_with(body, true)?;
    if env.seq != seq {
        return Err(CodecError::SeqMismatch {
            claimed: env.seq.0,
            stored: seq.0,
        });
    }
    Ok(env)
}

/// Decodes a record without checking its chain (for tools that print a damaged log).
pub fn decode_record_unchecked(record: &[u8]) -> Result<Envelope, CodecError> {
    let split = record
        .len()
        .checked_sub(CHAIN_LEN)
        .ok_or(CodecError::Malformed("shorter than its checksum"))?;
    decode_body_with(record.get(..split).unwrap_or_default(), false)
}

/// Decodes a record body; `authentic` (its chain was verified) lifts the decode limit to
/// [`LEGACY_DECODE_LIMIT_BYTES`] for records the standard limit refuses.
fn decode_body_with(body: &[u8], authentic: bool) -> Result<Envelope, CodecError> {
    match body.split_first() {
        Some((&RECORD_FORMAT_V1, rest)) => {
            let stored =
                match bincode::serde::decode_from_slice::<StoredEnvelope, _>(rest, config()) {
                    Ok(v) => v,
                    Err(bincode::error::DecodeError::LimitExceeded) if authentic => {
                        bincode::serde::decode_from_slice(rest, legacy_config())
                            .map_err(|e| CodecError::Decode(e.to_string()))?
                    }
                    Err(e) => return Err(CodecError::Decode(e.to_string())),
                };
            let (StoredEnvelope::V1(env), used) = stored;
            if used != rest.len() {
                return Err(CodecError::Decode(format!(
                    "{} trailing bytes",
                    rest.len() - used
                )));
            }
            Ok(env)
        }
        Some(_) => Err(CodecError::Malformed("unknown record format version")),
        None => Err(CodecError::Malformed("empty record")),
    }
}
