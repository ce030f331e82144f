#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The record codec: round trips, the hash chain, and every way a record can be damaged.

mod common;

use common::{body_of, chain, envelope, expected_chain, record_with_valid_chain};
use media_ledger_events::codec::{self, CodecError, CHAIN_LEN, GENESIS_CHAIN, RECORD_FORMAT_V1};
use media_ledger_events::{Envelope, Seq};
use proptest::prelude::*;
use proptest::sample::Index;

fn encode(prev: &codec::Chain, env: &Envelope) -> (Vec<u8>, codec::Chain) {
    codec::encode_record(prev, env).unwrap()
}

proptest! {
    #[test]
    fn record_round_trips(prev in chain(), env in envelope()) {
        let (record, chain) = encode(&prev, &env);
        prop_assert_eq!(record.first(), Some(&RECORD_FORMAT_V1));
        prop_assert_eq!(&record[record.len() - CHAIN_LEN..], chain.as_slice());
        let (back, back_chain) = codec::decode_record(&prev, env.seq, &record).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back_chain, chain);
        prop_assert_eq!(codec::decode_record_unchecked(&record).unwrap(), env);
    }

    #[test]
    fn encoding_is_deterministic(prev in chain(), env in envelope()) {
        prop_assert_eq!(encode(&prev, &env), encode(&prev, &env.clone()));
    }

    #[test]
    fn plain_value_round_trips(env in envelope()) {
        let bytes = codec::encode(&env).unwrap();
        prop_assert_eq!(codec::decode::<Envelope>(&bytes).unwrap(), env);
    }

    #[test]
    fn chain_is_sha256_of_prev_seq_and_body(prev in chain(), env in envelope()) {
        let (record, chain) = encode(&prev, &env);
        prop_assert_eq!(chain, expected_chain(&prev, env.seq.0, body_of(&record)));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected(
        prev in chain(),
        env in envelope(),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let (mut record, _) = encode(&prev, &env);
        let i = at.index(record.len());
        record[i] ^= mask;
        match codec::decode_record(&prev, env.seq, &record) {
            Ok((got, _)) => prop_assert!(false, "flip at {} accepted, decoded {:?}", i, got),
            Err(CodecError::ChainMismatch | CodecError::Decode(_) | CodecError::Malformed(_)) => {}
            Err(other) => prop_assert!(false, "flip at {} gave {:?}", i, other),
        }
    }

    #[test]
    fn a_record_at_another_seq_is_refused(
        prev in chain(),
        env in envelope(),
        other in any::<u64>(),
    ) {
        prop_assume!(other != env.seq.0);
        let (record, _) = encode(&prev, &env);
        prop_assert!(codec::decode_record(&prev, Seq(other), &record).is_err());
    }

    #[test]
    fn a_record_after_another_chain_is_a_chain_mismatch(
        prev in chain(),
        other in any::<[u8; 32]>(),
        env in envelope(),
    ) {
        prop_assume!(other != prev);
        let (record, _) = encode(&prev, &env);
        prop_assert!(matches!(
            codec::decode_record(&other, env.seq, &record),
            Err(CodecError::ChainMismatch)
        ));
    }

    #[test]
    fn every_truncation_is_an_error(prev in chain(), env in envelope()) {
        let (record, _) = encode(&prev, &env);
        for len in 0..record.len() {
            let r = codec::decode_record(&prev, env.seq, &record[..len]);
            prop_assert!(r.is_err(), "prefix of {} of {} bytes accepted", len, record.len());
            if len < CHAIN_LEN {
                prop_assert!(matches!(r, Err(CodecError::Malformed(_))));
            }
        }
    }

    #[test]
    fn appended_bytes_are_an_error(prev in chain(), env in envelope(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let (mut record, _) = encode(&prev, &env);
        record.extend(extra);
        prop_assert!(codec::decode_record(&prev, env.seq, &record).is_err());
    }

    #[test]
    fn random_bytes_never_decode_as_a_checked_record(
        prev in chain(),
        seq in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        prop_assert!(codec::decode_record(&prev, Seq(seq), &bytes).is_err());
    }
}

#[test]
fn a_log_of_records_chains_and_detects_removal_and_reordering() {
    let envs = common::sample_envelopes();
    let mut prev = GENESIS_CHAIN;
    let mut records = Vec::new();
    for env in &envs {
        let (r, c) = encode(&prev, env);
        records.push((prev, r));
        prev = c;
    }
    // In order: each decodes against the chain of the one before.
    let mut prev = GENESIS_CHAIN;
    for (env, (_, r)) in envs.iter().zip(&records) {
        let (back, c) = codec::decode_record(&prev, env.seq, r).unwrap();
        assert_eq!(&back, env);
        prev = c;
    }
    // Record 2 removed: record 3 does not follow record 1.
    let (_, c1) = codec::decode_record(&GENESIS_CHAIN, Seq(1), &records[0].1).unwrap();
    assert!(matches!(
        codec::decode_record(&c1, Seq(3), &records[2].1),
        Err(CodecError::ChainMismatch)
    ));
    // Records 2 and 3 swapped (even renumbered by position).
    assert!(codec::decode_record(&c1, Seq(2), &records[2].1).is_err());
}

#[test]
fn a_record_that_lies_about_its_seq_is_a_seq_mismatch() {
    // The chain binds the seq, so this can only be built by hand: envelope says 5, stored
    // (and chained) at 6.
    let mut env = common::sample_envelopes().remove(0);
    env.seq = Seq(5);
    let (record, _) = encode(&GENESIS_CHAIN, &env);
    let forged = record_with_valid_chain(&GENESIS_CHAIN, 6, body_of(&record));
    match codec::decode_record(&GENESIS_CHAIN, Seq(6), &forged) {
        Err(CodecError::SeqMismatch { claimed, stored }) => {
            assert_eq!((claimed, stored), (5, 6));
        }
        other => panic!("expected SeqMismatch, got {other:?}"),
    }
}

#[test]
fn unknown_format_version_is_malformed() {
    let env = common::sample_envelopes().remove(0);
    let (record, _) = encode(&GENESIS_CHAIN, &env);
    let mut body = body_of(&record).to_vec();
    body[0] = RECORD_FORMAT_V1 + 1;
    let forged = record_with_valid_chain(&GENESIS_CHAIN, 1, &body);
    assert!(matches!(
        codec::decode_record(&GENESIS_CHAIN, Seq(1), &forged),
        Err(CodecError::Malformed(_))
    ));
    assert!(matches!(
        codec::decode_record_unchecked(&forged),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn empty_body_is_malformed() {
    let forged = record_with_valid_chain(&GENESIS_CHAIN, 1, &[]);
    assert_eq!(forged.len(), CHAIN_LEN);
    assert!(matches!(
        codec::decode_record(&GENESIS_CHAIN, Seq(1), &forged),
        Err(CodecError::Malformed(_))
    ));
    assert!(matches!(
        codec::decode_record_unchecked(&forged),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn trailing_bytes_inside_the_body_are_a_decode_error() {
    let env = common::sample_envelopes().remove(0);
    let (record, _) = encode(&GENESIS_CHAIN, &env);
    let mut body = body_of(&record).to_vec();
    body.push(0);
    let forged = record_with_valid_chain(&GENESIS_CHAIN, 1, &body);
    assert!(matches!(
        codec::decode_record(&GENESIS_CHAIN, Seq(1), &forged),
        Err(CodecError::Decode(_))
    ));
}

#[test]
fn an_invalid_id_inside_a_chained_record_is_a_decode_error() {
    // Same length, valid chain, but the media id becomes "abc/EF123": the id's grammar is
    // enforced on decode too, not only the checksum.
    let env = common::sample_envelopes().remove(0);
    let (record, _) = encode(&GENESIS_CHAIN, &env);
    let mut body = body_of(&record).to_vec();
    let needle = b"abcDEF123";
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    body[at + 3] = b'/';
    let forged = record_with_valid_chain(&GENESIS_CHAIN, 1, &body);
    assert!(matches!(
        codec::decode_record(&GENESIS_CHAIN, Seq(1), &forged),
        Err(CodecError::Decode(_))
    ));
}

#[test]
fn unchecked_decoding_ignores_the_chain_but_not_the_length() {
    let env = common::sample_envelopes().remove(0);
    let (mut record, _) = encode(&GENESIS_CHAIN, &env);
    let last = record.len() - 1;
    record[last] ^= 0xff;
    assert!(matches!(
        codec::decode_record(&GENESIS_CHAIN, env.seq, &record),
        Err(CodecError::ChainMismatch)
    ));
    assert_eq!(codec::decode_record_unchecked(&record).unwrap(), env);
    for len in 0..CHAIN_LEN {
        assert!(matches!(
            codec::decode_record_unchecked(&record[..len]),
            Err(CodecError::Malformed(_))
        ));
    }
}

#[test]
fn decode_refuses_trailing_bytes() {
    let mut bytes = codec::encode(&42u64).unwrap();
    assert_eq!(codec::decode::<u64>(&bytes).unwrap(), 42);
    bytes.push(0);
    assert!(matches!(
        codec::decode::<u64>(&bytes),
        Err(CodecError::Decode(_))
    ));
}

#[test]
fn varint_layout_of_the_standard_config() {
    // The format doc promises bincode standard() varints; pin the boundaries.
    assert_eq!(codec::encode(&250u64).unwrap(), [250]);
    assert_eq!(codec::encode(&251u64).unwrap(), [251, 251, 0]);
    assert_eq!(
        codec::encode(&u64::MAX).unwrap(),
        [253, 255, 255, 255, 255, 255, 255, 255, 255]
    );
}

#[test]
fn samples_and_strategy_cover_every_variant() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    use std::collections::BTreeMap;

    let samples = common::sample_envelopes();
    let mut indices: Vec<usize> = samples
        .iter()
        .map(|e| common::variant_index(&e.event))
        .collect();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..common::VARIANTS).collect::<Vec<_>>(),
        "one of each"
    );

    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    let mut seen = BTreeMap::<usize, usize>::new();
    // 80 draws of each variant expected, so that the floor of 40 below stays far from chance.
    for _ in 0..80 * common::VARIANTS {
        let event = common::event().new_tree(&mut runner).unwrap().current();
        let i = common::variant_index(&event);
        // bincode writes the declaration index first (a varint, one byte below 251).
        assert_eq!(usize::from(codec::encode(&event).unwrap()[0]), i);
        *seen.entry(i).or_default() += 1;
    }
    assert_eq!(seen.len(), common::VARIANTS, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 40), "{seen:?}");
}

#[test]
fn sample_log_with_transfer_events_chains_and_round_trips() {
    let mut prev = GENESIS_CHAIN;
    for env in common::sample_envelopes() {
        let (record, chain) = encode(&prev, &env);
        let (back, back_chain) = codec::decode_record(&prev, env.seq, &record).unwrap();
        assert_eq!(back, env);
        assert_eq!(back_chain, chain);
        prev = chain;
    }
}
