//! What the writer's read-back check costs: `codec::encode_record` decodes every record once
//! before it is appended (a record the decoder would refuse is never written). Prints the time
//! per record of the encoding alone, of the read-back decode, and of `encode_record` whole, for
//! an upload event (the hot path) and for a 1 000-media quarantine act.
//!
//! `cargo bench -p media-ledger-events --bench record`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_ledger_events::codec::{self, StoredEnvelope, GENESIS_CHAIN};
use media_ledger_events::{
    Actor, Authority, Envelope, Event, MediaQuarantined, MediaRef, MediaUploaded, ModerationTarget,
    RequestId, Seq,
};
use std::hint::black_box;
use std::time::Instant;

fn upload() -> Envelope {
    let sha = "ab".repeat(32).parse().unwrap();
    Envelope {
        seq: Seq(123_456),
        recorded_at_ms: 1_700_000_000_000,
        actor: Actor::User("@alice:example.org".parse().unwrap()),
        request_id: RequestId("0123456789abcdef".into()),
        event: Event::MediaUploadedV1(MediaUploaded {
            media: "mxc://example.org/AbCdEfGhIjKlMnOpQrStUvWx"
                .parse()
                .unwrap(),
            uploader: Actor::User("@alice:example.org".parse().unwrap()),
            sha256: sha,
            size_bytes: 65_536,
            content_type: Some("image/png".parse().unwrap()),
            upload_name: Some("holiday.png".into()),
            datastore: "files".parse().unwrap(),
            location: format!("ab/ab/{}", "ab".repeat(32)).parse().unwrap(),
        }),
    }
}

fn quarantine() -> Envelope {
    let media = (0..1_000)
        .map(|i| {
            format!("mxc://remote.example/media{i:06}")
                .parse::<MediaRef>()
                .unwrap()
        })
        .collect();
    Envelope {
        event: Event::MediaQuarantinedV1(MediaQuarantined {
            authority: Authority::RepositoryAdmin,
            target: ModerationTarget::Remote,
            media,
            hashes: Vec::new(),
            reason: Some("spam".into()),
        }),
        ..upload()
    }
}

fn per_record(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(n) * 1e6
}

fn main() {
    for (name, env, n) in [
        ("upload", upload(), 200_000),
        ("quarantine of 1 000 media", quarantine(), 2_000),
    ] {
        let stored = codec::encode(&StoredEnvelope::V1(env.clone())).unwrap();
        let encode = per_record(n, || {
            black_box(codec::encode(&StoredEnvelope::V1(black_box(&env).clone())).unwrap());
        });
        let decode = per_record(n, || {
            black_box(codec::decode::<StoredEnvelope>(black_box(&stored)).unwrap());
        });
        let whole = per_record(n, || {
            black_box(codec::encode_record(&GENESIS_CHAIN, black_box(&env)).unwrap());
        });
        println!(
            "{name}: {} bytes; encode {encode:.2} µs, read-back decode {decode:.2} µs, \
             encode_record (encode + decode + chain) {whole:.2} µs per record",
            stored.len()
        );
    }
}
