#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A checked-in log and the state it must fold into.
//!
//! `fixtures/golden.jsonl` holds 26 envelopes: every event type, duplicate bytes (recorded, as
//! the writer does, with the first upload's datastore and location), two datastores, filled,
//! pending and lapsed async reservations, accesses by users, the admin and the server, and
//! (from sequence 21) a transfer from `alpha` to `beta` of the content shared by cat1 and cat2:
//! one failed attempt, the move, the deletion of the source copy and the end, followed by a
//! duplicate upload of that content, recorded (as the writer does) at its new place.
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
    assert_eq!(envs.len(), 26);
    for (i, env) in (1u64..).zip(&envs) {
        assert_eq!(env.seq, Seq(i), "sequences run from 1 without gaps");
    }
    assert!(envs
        .windows(2)
        .all(|w| w[0].recorded_at_ms < w[1].recorded_at_ms));
    let count = |f: fn(&Event) -> bool| envs.iter().filter(|e| f(&e.event)).count();
    assert_eq!(count(|e| matches!(e, Event::MediaUploadedV1(_))), 11);
    assert_eq!(count(|e| matches!(e, Event::AsyncUploadCreatedV1(_))), 4);
    assert_eq!(count(|e| matches!(e, Event::MediaAccessedV1(_))), 6);
    assert_eq!(count(|e| matches!(e, Event::TransferStartedV1(_))), 1);
    assert_eq!(count(|e| matches!(e, Event::BlobMovedV1(_))), 1);
    assert_eq!(count(|e| matches!(e, Event::BlobSourceDeletedV1(_))), 1);
    assert_eq!(count(|e| matches!(e, Event::BlobTransferFailedV1(_))), 1);
    assert_eq!(count(|e| matches!(e, Event::TransferFinishedV1(_))), 1);
    // Every event after the start names the task by the start's sequence.
    for env in &envs[21..25] {
        let task = match &env.event {
            Event::BlobMovedV1(e) => e.task,
            Event::BlobSourceDeletedV1(e) => e.task,
            Event::BlobTransferFailedV1(e) => e.task,
            Event::TransferFinishedV1(e) => e.task,
            other => panic!("{other:?}"),
        };
        assert_eq!(task, Seq(21));
    }
}

/// Figures checked by hand against the log: the contents of cat1 and dog1 (1 000 and 2 500
/// bytes) were first stored in `alpha`, those of doc1, vid1, async1 and import1 (40 000,
/// 5 000 000, 777 and 123 bytes) in `beta`; every later upload of the same bytes is counted as
/// a row of that datastore but adds no bytes. Then task 21 moves the cat content (rows cat1
/// and cat2) from `alpha` to `beta`, and cat3 adds a third row of it in `beta`.
#[test]
fn golden_figures_make_sense() {
    let snap = expected();
    let alpha = &snap["datastore_sizes"]["alpha"]["totals"];
    assert_eq!(
        alpha["media_affected"], 2,
        "dog1, dog2 (cat1, cat2 moved out)"
    );
    assert_eq!(alpha["media_hashes_affected"], 1);
    assert_eq!(alpha["media_bytes"], 2_500);
    assert_eq!(alpha["total_hashes_affected"], 1);
    assert_eq!(alpha["total_bytes"], 2_500);
    let alpha_hashes = snap["datastore_sizes"]["alpha"]["hashes"]
        .as_object()
        .unwrap();
    assert_eq!(
        alpha_hashes.len(),
        1,
        "the cat row count left alpha with it"
    );
    let beta = &snap["datastore_sizes"]["beta"]["totals"];
    assert_eq!(
        beta["media_affected"], 9,
        "doc1, vid1, async1, import1, vid2, async4, cat1, cat2, cat3"
    );
    assert_eq!(beta["media_hashes_affected"], 5);
    assert_eq!(beta["media_bytes"], 40_000 + 5_000_000 + 777 + 123 + 1_000);
    assert_eq!(beta["total_hashes_affected"], 5);
    assert_eq!(beta["total_bytes"], 40_000 + 5_000_000 + 777 + 123 + 1_000);
    let cat = "ec0b794d57e49e213bc9f47e3e2221123eda3c073d7dc11cf767f9530d804388";
    assert_eq!(snap["datastore_sizes"]["beta"]["hashes"][cat]["media"], 3);

    let media = snap["media_index"].as_object().unwrap();
    assert_eq!(media.keys().filter(|k| k.starts_with("mxc://")).count(), 11);
    for m in [
        "mxc://localhost/cat1",
        "mxc://example.org/cat2",
        "mxc://localhost/cat3",
    ] {
        assert_eq!(media[m]["datastore"], "beta", "{m} points at the copy");
        assert_eq!(
            snap["hash_refs"][cat]["record"]["location"],
            format!("ec/0b/{cat}")
        );
    }
    assert_eq!(media["mxc://localhost/dog1"]["datastore"], "alpha");
    assert_eq!(
        snap["media_index"]["by_hash"][cat],
        serde_json::json!([
            "mxc://localhost/cat1",
            "mxc://example.org/cat2",
            "mxc://localhost/cat3"
        ]),
        "in upload order"
    );
    assert_eq!(snap["media_index"]["by_hash"].as_object().unwrap().len(), 6);

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
    assert_eq!(refs.iter().sum::<u64>(), 11);
    let cat_record = &snap["hash_refs"][cat]["record"];
    assert_eq!(cat_record["datastore"], "beta");
    assert_eq!(cat_record["ref_count"], 3);
    assert_eq!(cat_record["created_seq"], 1, "first stored by cat1");
    assert_eq!(
        cat_record["last_access_ms"],
        1_700_000_000_000u64 + 25 * 60_000,
        "the upload of cat3 at seq 26"
    );
    let cat1 = &snap["media_index"]["mxc://localhost/cat1"];
    assert_eq!(
        cat1["last_access_ms"],
        1_700_000_000_000u64 + 15 * 60_000,
        "accessed last at seq 16; a move is not an access"
    );

    let tasks = snap["tasks"].as_object().unwrap();
    assert_eq!(tasks.keys().collect::<Vec<_>>(), ["task-21"]);
    let task = &tasks["task-21"]["record"];
    assert_eq!(task["source"], "alpha");
    assert_eq!(task["target"], "beta");
    assert_eq!(task["before_ts_ms"], 1_700_001_000_000u64);
    assert_eq!(task["started_at_ms"], 1_700_000_000_000u64 + 20 * 60_000);
    assert_eq!(task["ended_at_ms"], 1_700_000_000_000u64 + 24 * 60_000);
    assert_eq!(
        (task["blobs_total"].as_u64(), task["bytes_total"].as_u64()),
        (Some(1), Some(1_000))
    );
    assert_eq!(
        (task["blobs_done"].as_u64(), task["bytes_done"].as_u64()),
        (Some(1), Some(1_000))
    );
    assert_eq!(task["attempts_failed"], 1);
    assert_eq!(task["blobs_failed"], 0);
    assert_eq!(task["last_error"], "the copy read back does not match");
    assert_eq!(task["error_message"], serde_json::Value::Null);
    assert_eq!(
        tasks["task-21"]["pending_deletions"],
        serde_json::json!({}),
        "the source copy was deleted"
    );
}

/// The transfer of the golden log, one event at a time.
#[test]
fn golden_transfer_step_by_step() {
    let envs = golden();
    let cat = "ec0b794d57e49e213bc9f47e3e2221123eda3c073d7dc11cf767f9530d804388";
    let at = |n: usize| snapshot(&replay(&envs[..n]).unwrap());
    let where_cat = |s: &Value| {
        (
            s["hash_refs"][cat]["record"]["datastore"].clone(),
            s["media_index"]["mxc://localhost/cat1"]["datastore"].clone(),
            s["media_index"]["mxc://example.org/cat2"]["datastore"].clone(),
        )
    };
    let alpha = || ("alpha".into(), "alpha".into(), "alpha".into());
    let beta = || ("beta".into(), "beta".into(), "beta".into());

    let s = at(20);
    assert_eq!(s["tasks"], serde_json::json!({}));
    assert_eq!(where_cat(&s), alpha());

    let s = at(21);
    let task = &s["tasks"]["task-21"]["record"];
    assert_eq!(task["blobs_done"], 0);
    assert_eq!(task["ended_at_ms"], Value::Null);
    assert_eq!(where_cat(&s), alpha(), "starting moves nothing");

    let s = at(22);
    assert_eq!(s["tasks"]["task-21"]["record"]["attempts_failed"], 1);
    assert_eq!(
        where_cat(&s),
        alpha(),
        "a failed attempt leaves the blob in place"
    );
    assert_eq!(s["datastore_sizes"], at(20)["datastore_sizes"]);

    let s = at(23);
    assert_eq!(where_cat(&s), beta());
    assert_eq!(s["tasks"]["task-21"]["record"]["blobs_done"], 1);
    assert_eq!(
        s["tasks"]["task-21"]["pending_deletions"][cat],
        serde_json::json!({
            "datastore": "alpha",
            "location": format!("ec/0b/{cat}"),
        }),
        "moved, old copy not deleted yet"
    );
    assert_eq!(
        s["datastore_sizes"]["alpha"]["totals"]["media_bytes"],
        2_500
    );
    assert_eq!(s["datastore_sizes"]["beta"]["totals"]["media_affected"], 8);

    let s = at(24);
    assert_eq!(
        s["tasks"]["task-21"]["pending_deletions"],
        serde_json::json!({})
    );
    assert_eq!(s["datastore_sizes"], at(23)["datastore_sizes"]);

    let s = at(25);
    assert_eq!(
        s["tasks"]["task-21"]["record"]["ended_at_ms"],
        1_700_000_000_000u64 + 24 * 60_000
    );
}

#[test]
fn golden_log_in_a_real_ledger() {
    let envs = golden();
    let dir = tempfile::tempdir().unwrap();
    let head = raw::append_unprojected(dir.path(), &envs).unwrap();
    assert_eq!(head.seq, Seq(26));

    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(ledger_envelopes(&ledger).unwrap(), envs);
    let state = state_of(&ledger).unwrap();
    assert_eq!(snapshot(&state), expected());
    assert_eq!(state, replay(&envs).unwrap());
    drop(ledger);

    let (head, divergence) = Ledger::verify_path(dir.path()).unwrap();
    assert_eq!(head.seq, Seq(26));
    assert_eq!(divergence, None);
}
