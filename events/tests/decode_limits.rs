#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged bytes must give an error, not a panic or an allocation of the size a corrupt
//! length prefix claims. `decode_record_unchecked` exists precisely to read damaged logs, and
//! `codec::decode` reads stored projection state and checkpoints.
//!
//! Kept in its own test binary: if the codec allocates what the prefix claims, a process
//! abort here cannot take the other tests down with it.

use media_ledger_events::codec::{self, CHAIN_LEN};
use media_ledger_events::Envelope;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The body of a V1 record whose request-id length prefix claims `len` bytes:
/// format 1, StoredEnvelope::V1, seq 1, time 1, Actor::System, then the u64 varint length.
fn body_claiming_request_id_of(len: u64) -> Vec<u8> {
    let mut body = vec![codec::RECORD_FORMAT_V1, 0, 1, 1, 2, 253];
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(b"tiny");
    body
}

#[test]
fn unchecked_record_with_a_huge_length_prefix_is_an_error_not_a_panic() {
    let mut record = body_claiming_request_id_of(u64::MAX);
    record.extend_from_slice(&[0; CHAIN_LEN]);
    let r = catch_unwind(AssertUnwindSafe(|| codec::decode_record_unchecked(&record)));
    match r {
        Ok(Err(_)) => {}
        Ok(Ok(env)) => panic!("decoded {env:?}"),
        Err(_) => panic!("decode_record_unchecked panicked on a corrupt length prefix"),
    }
}

#[test]
fn decode_with_a_huge_length_prefix_is_an_error_not_a_panic() {
    let body = body_claiming_request_id_of(u64::MAX);
    let r = catch_unwind(AssertUnwindSafe(|| codec::decode::<Envelope>(&body[2..])));
    assert!(
        matches!(r, Ok(Err(codec::CodecError::Decode(_)))),
        "codec::decode panicked on a corrupt length prefix"
    );
}

#[test]
fn decode_with_a_plausible_length_prefix_is_an_error() {
    // 1 MiB claimed, 4 bytes present: an error either way, whatever is allocated.
    let body = body_claiming_request_id_of(1 << 20);
    assert!(codec::decode_record_unchecked(&[body, vec![0; CHAIN_LEN]].concat()).is_err());
}
