#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A checked-in log and the state it must fold into.
//!
//! `fixtures/golden.jsonl` holds 20 envelopes: every event type, duplicate bytes (recorded, as
//! the writer does, with the first upload's datastore and location), two datastores, filled,
//! pending and lapsed async reservations, and accesses by users, the admin and the server.
//! `fixtures/golden.expected.json` is its snapshot. A change of a projection's fold shows as a
//! diff of that file; after checking the diff by eye, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test -p media-ledger-replay-tests --test golden`.

use media_ledger::ledger::{raw, Ledger};
use media_ledger_events::{Event, Seq};
use media_ledger_replay_tests::{
    fixtures_dir, ledger_envelopes, load_jsonl, replay, snapshot, state_of,
};
use serde_json::Value;

fn golden() -> Vec<media_ledger_events::Envelope> {
    load_jsonl(&fixtures_dir().join("golden.jsonl")).unwrap()
}

fn expected() -> Value {
    let path = fixtures_dir().join("golden.expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn golden_log_folds_into_the_expected_snapshot() {
    let envs = golden();
    let snap = snapshot(&replay(&envs).unwrap());
    let path = fixtures_dir().join("golden.expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, serde_json::to_string_pretty(&snap).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    assert_eq!(
        snap,
        expected(),
        "the golden log no longer folds into {}; if the change is intended, check the diff \
         and rerun with UPDATE_GOLDEN=1 (and bump the projection's version)",
        path.display()
    );
}

#[test]
fn golden_log_is_well_formed() {
    let envs = golden();
    assert_eq!(envs.len(), 20);
    for (i, env) in (1u64..).zip(&envs) {
        assert_eq!(env.seq, Seq(i), "sequences run from 1 without gaps");
    }
    assert!(envs
        .windows(2)
        .all(|w| w[0].recorded_at_ms < w[1].recorded_at_ms));
    let count = |f: fn(&Event) -> bool| envs.iter().filter(|e| f(&e.event)).count();
    assert_eq!(count(|e| matches!(e, Event::MediaUploadedV1(_))), 10);
    assert_eq!(count(|e| matches!(e, Event::AsyncUploadCreatedV1(_))), 4);
    assert_eq!(count(|e| matches!(e, Event::MediaAccessedV1(_))), 6);
}

/// Figures checked by hand against the log: the contents of cat1 and dog1 (1 000 and 2 500
/// bytes) were first stored in `alpha`, those of doc1, vid1, async1 and import1 (40 000,
/// 5 000 000, 777 and 123 bytes) in `beta`; every later upload of the same bytes is counted as
/// a row of that datastore but adds no bytes.
#[test]
fn golden_figures_make_sense() {
    let snap = expected();
    let alpha = &snap["datastore_sizes"]["alpha"]["totals"];
    assert_eq!(alpha["media_affected"], 4, "cat1, dog1, cat2, dog2");
    assert_eq!(alpha["media_hashes_affected"], 2);
    assert_eq!(alpha["media_bytes"], 1_000 + 2_500);
    assert_eq!(alpha["total_bytes"], 1_000 + 2_500);
    let beta = &snap["datastore_sizes"]["beta"]["totals"];
    assert_eq!(
        beta["media_affected"], 6,
        "doc1, vid1, async1, import1, vid2, async4"
    );
    assert_eq!(beta["media_hashes_affected"], 4);
    assert_eq!(beta["media_bytes"], 40_000 + 5_000_000 + 777 + 123);
    assert_eq!(snap["media_index"].as_object().unwrap().len(), 10);
    let pending: Vec<&String> = snap["pending_uploads"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("mxc://"))
        .collect();
    assert_eq!(
        pending,
        ["mxc://localhost/async2", "mxc://localhost/async3"]
    );
    let refs: Vec<u64> = snap["hash_refs"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h["record"]["ref_count"].as_u64().unwrap())
        .collect();
    assert_eq!(refs.iter().sum::<u64>(), 10);
    let cat1 = &snap["media_index"]["mxc://localhost/cat1"];
    assert_eq!(
        cat1["last_access_ms"],
        1_700_000_000_000u64 + 15 * 60_000,
        "accessed last at seq 16"
    );
}

#[test]
fn golden_log_in_a_real_ledger() {
    let envs = golden();
    let dir = tempfile::tempdir().unwrap();
    let head = raw::append_unprojected(dir.path(), &envs).unwrap();
    assert_eq!(head.seq, Seq(20));

    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(ledger_envelopes(&ledger).unwrap(), envs);
    let state = state_of(&ledger).unwrap();
    assert_eq!(snapshot(&state), expected());
    assert_eq!(state, replay(&envs).unwrap());
    drop(ledger);

    let (head, divergence) = Ledger::verify_path(dir.path()).unwrap();
    assert_eq!(head.seq, Seq(20));
    assert_eq!(divergence, None);
}
