#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays are deterministic and incremental: the same events give the same state, however
//! they are split, and every projection's state matches a simple model of the log.

mod common;

use common::{access, create_async, ds, media, sha, space, state_of, upload, upload_at};
use media_ledger_events::{BlobLocation, Envelope, Event};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::size_estimate::SizeEstimator;
use media_ledger_projections::{datastore_sizes, hash_refs, media_index, pending_uploads, ALL};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn fixed_log() -> Vec<Envelope> {
    vec![
        create_async(1, 900, "p1", "@bob:example.org", 60_900),
        upload(2, 1_000, "m1", 1, 100, "A"),
        upload(3, 1_001, "m2", 1, 100, "A"),
        upload(4, 1_002, "m3", 2, 50, "A"),
        upload(5, 1_003, "m4", 1, 100, "B"),
        access(6, 2_000, "m1", 1),
        upload(7, 2_500, "p1", 3, 7, "B"),
        access(8, 3_000, "p1", 3),
        create_async(9, 3_100, "p2", "@carol:example.org", 63_100),
    ]
}

fn fold(events: &[Envelope]) -> MemoryState {
    state_of(events)
}

#[test]
fn the_same_events_give_equal_states() {
    let log = fixed_log();
    assert_eq!(fold(&log), fold(&log));
    assert_ne!(fold(&log), MemoryState::default());
}

#[test]
fn split_replay_equals_full_replay() {
    let log = fixed_log();
    let full = fold(&log);
    for k in 0..=log.len() {
        let mut s = fold(&log[..k]);
        for e in &log[k..] {
            s.apply(e).unwrap();
        }
        assert_eq!(s, full, "split at {k}");
    }
}

#[test]
fn projections_are_independent() {
    // Folding one projection alone gives the same key space as folding all of them.
    let log = fixed_log();
    let full = fold(&log);
    for p in ALL {
        let mut alone = MemoryState::default();
        for e in &log {
            alone.apply_one(*p, e).unwrap();
        }
        assert_eq!(
            space(&alone, p.name()),
            space(&full, p.name()),
            "{}",
            p.name()
        );
    }
}

#[test]
fn every_projection_has_a_space_and_a_unique_name() {
    let s = MemoryState::default();
    let names: BTreeSet<&str> = ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names.len(), ALL.len());
    assert_eq!(s.spaces.keys().copied().collect::<BTreeSet<_>>(), names);
    assert_eq!(
        names,
        BTreeSet::from([
            "datastore_sizes",
            "hash_refs",
            "media_index",
            "pending_uploads"
        ])
    );
    for p in ALL {
        assert!(p.version() >= 1);
    }
}

// ---- a model of the log, and random valid logs checked against it ----

#[derive(Debug, Clone)]
enum Op {
    Upload { m: u8, h: u8, d: u8, loc: u8 },
    Access { m: u8 },
    Create { m: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..10, 0u8..5, 0u8..2, 0u8..3).prop_map(|(m, h, d, loc)| Op::Upload { m, h, d, loc }),
        3 => (0u8..10).prop_map(|m| Op::Access { m }),
        1 => (0u8..10).prop_map(|m| Op::Create { m }),
    ]
}

fn size_of_hash(h: u8) -> u64 {
    10 + u64::from(h) * 100
}

#[derive(Default)]
struct Model {
    /// media → (hash, datastore, location, created, last access)
    media: BTreeMap<u8, (u8, u8, BlobLocation, u64, u64)>,
    /// hash → (first datastore, first location, last access)
    hashes: BTreeMap<u8, (u8, BlobLocation, u64)>,
    /// media → (created, expires)
    pending: BTreeMap<u8, (u64, u64)>,
}

const DSS: [&str; 2] = ["A", "B"];

/// Turns random ops into a log the writer could have written (invalid ops are skipped),
/// and the model's expectation of it.
fn valid_log(ops: &[(Op, u64)]) -> (Vec<Envelope>, Model) {
    let mut model = Model::default();
    let mut log = Vec::new();
    let mut time = 1_000u64;
    for (op, dt) in ops {
        time += dt;
        let seq = log.len() as u64 + 1;
        match *op {
            Op::Upload { m, h, d, loc } => {
                if model.media.contains_key(&m) {
                    continue;
                }
                let l: BlobLocation = format!("{}/{h}/{loc}", DSS[usize::from(d)])
                    .parse()
                    .unwrap();
                let id = format!("m{m}");
                log.push(upload_at(
                    seq,
                    time,
                    &id,
                    h,
                    size_of_hash(h),
                    DSS[usize::from(d)],
                    l.clone(),
                ));
                model.media.insert(m, (h, d, l.clone(), time, time));
                let e = model.hashes.entry(h).or_insert((d, l, time));
                e.2 = e.2.max(time);
                model.pending.remove(&m);
            }
            Op::Access { m } => {
                let Some(rec) = model.media.get_mut(&m) else {
                    continue;
                };
                log.push(access(seq, time, &format!("m{m}"), rec.0));
                rec.4 = rec.4.max(time);
                let hr = model.hashes.get_mut(&rec.0).unwrap();
                hr.2 = hr.2.max(time);
            }
            Op::Create { m } => {
                if model.media.contains_key(&m) || model.pending.contains_key(&m) {
                    continue;
                }
                log.push(create_async(
                    seq,
                    time,
                    &format!("m{m}"),
                    "@bob:example.org",
                    time + 60_000,
                ));
                model.pending.insert(m, (time, time + 60_000));
            }
        }
    }
    (log, model)
}

fn check_against_model(s: &MemoryState, log: &[Envelope], model: &Model) {
    let mi = space(s, "media_index");
    assert_eq!(mi.0.len(), model.media.len());
    for (m, (h, d, loc, created, last)) in &model.media {
        let r = media_index::get(mi, &media(&format!("m{m}")))
            .unwrap()
            .unwrap();
        assert_eq!(r.sha256, sha(*h));
        assert_eq!(r.size_bytes, size_of_hash(*h));
        assert_eq!(r.datastore, ds(DSS[usize::from(*d)]));
        assert_eq!(&r.location, loc);
        assert_eq!((r.created_at_ms, r.last_access_ms), (*created, *last));
    }

    let hr = space(s, "hash_refs");
    for (h, (d, loc, last)) in &model.hashes {
        let r = hash_refs::get(hr, &sha(*h)).unwrap().unwrap();
        let refs = model.media.values().filter(|v| v.0 == *h).count() as u64;
        assert_eq!(r.ref_count, refs);
        assert_eq!(r.datastore, ds(DSS[usize::from(*d)]));
        assert_eq!(&r.location, loc);
        assert_eq!(r.size_bytes, size_of_hash(*h));
        assert_eq!(r.last_access_ms, *last);
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(&sha(*h).0);
        let keys = hr.0.keys().filter(|k| k.starts_with(&prefix)).count() as u64;
        assert_eq!(keys, refs, "ref_count equals the referrer keys");
    }
    for h in 0u8..5 {
        if !model.hashes.contains_key(&h) {
            assert_eq!(hash_refs::get(hr, &sha(h)).unwrap(), None);
        }
    }

    let dsz = space(s, "datastore_sizes");
    for (i, name) in DSS.iter().enumerate() {
        let mut est = SizeEstimator::default();
        for e in log {
            if let Event::MediaUploadedV1(u) = &e.event {
                if u.datastore == ds(name) {
                    est.add_media(u.sha256, u.size_bytes);
                }
            }
        }
        assert_eq!(
            datastore_sizes::totals(dsz, &ds(name)).unwrap(),
            est.finish(),
            "datastore {i}"
        );
    }

    let pu = space(s, "pending_uploads");
    // Media keys only (owner lists live under keys starting with 0x01).
    let reservations = pu.0.keys().filter(|k| k.first() != Some(&1)).count();
    assert_eq!(reservations, model.pending.len());
    for m in 0u8..10 {
        let got = pending_uploads::get(pu, &media(&format!("m{m}"))).unwrap();
        match model.pending.get(&m) {
            Some(&(created, expires)) => {
                let p = got.unwrap();
                assert_eq!((p.created_at_ms, p.expires_at_ms), (created, expires));
            }
            None => assert_eq!(got, None),
        }
    }
}

proptest! {
    #[test]
    fn random_valid_logs_match_the_model_and_replay_deterministically(
        ops in proptest::collection::vec((op(), 0u64..500), 0..60),
        split in any::<proptest::sample::Index>(),
    ) {
        let (log, model) = valid_log(&ops);
        let full = fold(&log);
        check_against_model(&full, &log, &model);

        prop_assert_eq!(&fold(&log), &full);

        let k = split.index(log.len() + 1);
        let mut resumed = fold(&log[..k]);
        for e in &log[k..] {
            resumed.apply(e).unwrap();
        }
        prop_assert_eq!(&resumed, &full);
    }
}
