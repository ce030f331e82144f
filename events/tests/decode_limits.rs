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

/// A quarantine naming `n` media of a 255-character server with 255-character ids: the act
/// the writer used to record whole (seen: 33 460 media, 17 MB).
fn huge_quarantine(n: usize) -> Envelope {
    use media_ledger_events::{
        Actor, Authority, Event, MediaQuarantined, MediaRef, ModerationTarget, RequestId, Seq,
    };
    let label = "a".repeat(63);
    let server = format!("{label}.{label}.{label}.{label}");
    let media = (0..n)
        .map(|i| {
            let id = format!("{}{i:08}", "m".repeat(247));
            format!("mxc://{server}/{id}").parse::<MediaRef>().unwrap()
        })
        .collect();
    Envelope {
        seq: Seq(1),
        recorded_at_ms: 1,
        actor: Actor::System,
        request_id: RequestId("r".into()),
        event: Event::MediaQuarantinedV1(MediaQuarantined {
            authority: Authority::RepositoryAdmin,
            target: ModerationTarget::Remote,
            media,
            hashes: Vec::new(),
            reason: None,
        }),
    }
}

#[test]
fn the_writer_side_refuses_a_record_over_the_limit() {
    let env = huge_quarantine(33_460);
    match codec::encode_record(&codec::GENESIS_CHAIN, &env) {
        Err(codec::CodecError::TooLarge { bytes, limit, .. }) => {
            assert!(bytes > limit);
            assert_eq!(limit, codec::MAX_RECORD_BYTES);
        }
        other => panic!(
            "an oversized record was encoded: {:?}",
            other.map(|r| r.0.len())
        ),
    }
    // Under the limit, the same kind of act is written and reads back.
    let small = huge_quarantine(1_000);
    let (record, _) = codec::encode_record(&codec::GENESIS_CHAIN, &small).unwrap();
    assert!(record.len() <= codec::MAX_RECORD_BYTES);
    let (back, _) = codec::decode_record(&codec::GENESIS_CHAIN, small.seq, &record).unwrap();
    assert_eq!(back, small);
}

#[test]
fn an_oversized_record_written_before_the_bound_reads_back_when_its_chain_is_intact() {
    // What the unbounded writer wrote: the body, sealed with a valid chain.
    let env = huge_quarantine(33_460);
    let mut body = vec![codec::RECORD_FORMAT_V1];
    body.extend(codec::encode(&codec::StoredEnvelope::V1(env.clone())).unwrap());
    assert!(
        body.len() > codec::DECODE_LIMIT_BYTES,
        "{} bytes",
        body.len()
    );
    let (record, _) = codec::seal_body(&codec::GENESIS_CHAIN, env.seq, body);
    // Unauthenticated, the standard limit refuses it ...
    assert!(matches!(
        codec::decode_record_unchecked(&record),
        Err(codec::CodecError::Decode(e)) if e.contains("LimitExceeded")
    ));
    // ... authenticated by its chain, it is read (the ledger opens again).
    let (back, _) = codec::decode_record(&codec::GENESIS_CHAIN, env.seq, &record).unwrap();
    assert_eq!(back, env);
}
