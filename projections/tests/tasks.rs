#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tasks: given transfer events, then each task's record and its pending source deletions.

mod common;

use common::{
    access, assert_invariant, create_async, default_location, ds, location, moved, moved_at, sha,
    source_deleted, space, start_transfer, state_of, transfer_failed, transfer_finished, upload,
};
use media_ledger_events::{Envelope, Event, Seq, Sha256};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::tasks::{self, PendingDeletion, TaskRecord, Tasks};
use media_ledger_projections::{KvTx, Projection, ProjectionError};

const NAME: &str = "tasks";

fn get(state: &MemoryState, task: u64) -> Option<TaskRecord> {
    tasks::get(space(state, NAME), Seq(task)).unwrap()
}

/// The pending deletions of `task`, decoded from a prefix scan as the server does.
fn pending(state: &MemoryState, task: u64) -> Vec<(Sha256, PendingDeletion)> {
    let prefix = tasks::deletion_prefix(Seq(task));
    space(state, NAME)
        .0
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| tasks::decode_deletion_entry(k, v).unwrap().unwrap())
        .collect()
}

/// Task records decoded from a scan of the `t` prefix.
fn all_tasks(state: &MemoryState) -> Vec<(Seq, TaskRecord)> {
    space(state, NAME)
        .0
        .iter()
        .filter_map(|(k, v)| tasks::decode_task_entry(k, v))
        .map(Result::unwrap)
        .collect()
}

fn deletion(ds_id: &str, sha_n: u8) -> PendingDeletion {
    PendingDeletion {
        datastore: ds(ds_id),
        location: default_location(sha_n, ds_id),
    }
}

/// Two hashes in A (h1 shared by two media), then task 4: A → B over both.
fn started() -> Vec<Envelope> {
    vec![
        upload(1, 1_000, "m1", 1, 100, "A"),
        upload(2, 1_001, "m2", 1, 100, "A"),
        upload(3, 1_002, "m3", 2, 50, "A"),
        start_transfer(4, 2_000, "A", "B", 2, 150),
    ]
}

fn fresh_record() -> TaskRecord {
    TaskRecord {
        source: ds("A"),
        target: ds("B"),
        before_ts_ms: None,
        started_at_ms: 2_000,
        ended_at_ms: None,
        blobs_total: 2,
        bytes_total: 150,
        blobs_done: 0,
        bytes_done: 0,
        attempts_failed: 0,
        blobs_failed: 0,
        last_error: None,
        error_message: None,
    }
}

#[test]
fn start_records_the_task_under_its_own_sequence() {
    let s = state_of(&started());
    assert_eq!(get(&s, 4), Some(fresh_record()));
    assert!(!get(&s, 4).unwrap().is_finished());
    assert_eq!(get(&s, 1), None);
    assert_eq!(get(&s, 5), None);
    assert!(pending(&s, 4).is_empty());
    assert_eq!(all_tasks(&s), [(Seq(4), fresh_record())]);
    // The key is `b't' ‖ seq as 8 big-endian bytes`, the only key so far.
    let keys: Vec<&Vec<u8>> = space(&s, NAME).0.keys().collect();
    assert_eq!(keys, [&tasks::task_key(Seq(4))]);
    assert_eq!(tasks::task_key(Seq(4)), [b't', 0, 0, 0, 0, 0, 0, 0, 4]);
}

#[test]
fn start_keeps_before_ts() {
    let mut e = start_transfer(1, 10, "A", "B", 0, 0);
    if let Event::TransferStartedV1(t) = &mut e.event {
        t.before_ts_ms = Some(5);
    }
    let s = state_of(&[e]);
    let r = get(&s, 1).unwrap();
    assert_eq!(
        (r.before_ts_ms, r.blobs_total, r.bytes_total),
        (Some(5), 0, 0)
    );
}

#[test]
fn a_move_counts_as_done_and_leaves_a_pending_deletion() {
    let mut events = started();
    events.push(moved(5, 2_100, 4, 1, 100, "A", "B"));
    let s = state_of(&events);
    assert_eq!(
        get(&s, 4),
        Some(TaskRecord {
            blobs_done: 1,
            bytes_done: 100,
            ..fresh_record()
        })
    );
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);

    events.push(moved(6, 2_200, 4, 2, 50, "A", "B"));
    let s = state_of(&events);
    let r = get(&s, 4).unwrap();
    assert_eq!((r.blobs_done, r.bytes_done), (2, 150));
    assert_eq!(
        pending(&s, 4),
        [(sha(1), deletion("A", 1)), (sha(2), deletion("A", 2))]
    );
}

#[test]
fn the_pending_deletion_is_the_source_copy() {
    let mut events = started();
    events.push(moved_at(
        5,
        2_100,
        4,
        1,
        100,
        "A",
        default_location(1, "A"),
        "B",
        location("elsewhere/h1"),
    ));
    let s = state_of(&events);
    // Where the old copy is (to delete it), not where the new one went.
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);
}

#[test]
fn source_deletion_removes_the_pending_deletion() {
    let mut events = started();
    events.extend([
        moved(5, 2_100, 4, 1, 100, "A", "B"),
        moved(6, 2_200, 4, 2, 50, "A", "B"),
        source_deleted(7, 2_300, 4, 1, "A"),
    ]);
    let s = state_of(&events);
    assert_eq!(pending(&s, 4), [(sha(2), deletion("A", 2))]);
    let r = get(&s, 4).unwrap();
    assert_eq!(
        (r.blobs_done, r.bytes_done),
        (2, 150),
        "counted at the move"
    );

    events.push(source_deleted(8, 2_400, 4, 2, "A"));
    let s = state_of(&events);
    assert!(pending(&s, 4).is_empty());
    assert_eq!(space(&s, NAME).0.len(), 1, "only the task record is left");
}

#[test]
fn failures_count_attempts_and_final_failures_and_keep_the_last_error() {
    let mut events = started();
    events.extend([
        transfer_failed(5, 2_100, 4, 1, 1, false, "timeout"),
        transfer_failed(6, 2_200, 4, 1, 2, false, "connection reset"),
        moved(7, 2_300, 4, 1, 100, "A", "B"),
        transfer_failed(8, 2_400, 4, 2, 1, false, "digest mismatch"),
        transfer_failed(9, 2_500, 4, 2, 2, true, "digest mismatch again"),
    ]);
    let s = state_of(&events);
    assert_eq!(
        get(&s, 4),
        Some(TaskRecord {
            blobs_done: 1,
            bytes_done: 100,
            attempts_failed: 4,
            blobs_failed: 1,
            last_error: Some("digest mismatch again".into()),
            ..fresh_record()
        })
    );
    // A failure leaves no pending deletion: the blob stayed where it was.
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);
}

#[test]
fn finish_sets_the_end_time_and_the_error_message() {
    let mut events = started();
    events.extend([
        moved(5, 2_100, 4, 1, 100, "A", "B"),
        transfer_failed(6, 2_200, 4, 2, 1, true, "gone"),
        transfer_finished(7, 3_000, 4, Some("1 of 2 blobs could not be moved")),
    ]);
    let s = state_of(&events);
    let r = get(&s, 4).unwrap();
    assert!(r.is_finished());
    assert_eq!(
        r,
        TaskRecord {
            ended_at_ms: Some(3_000),
            blobs_done: 1,
            bytes_done: 100,
            attempts_failed: 1,
            blobs_failed: 1,
            last_error: Some("gone".into()),
            error_message: Some("1 of 2 blobs could not be moved".into()),
            ..fresh_record()
        }
    );
    // The source copy not yet deleted stays pending after the end.
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);
}

#[test]
fn a_clean_finish_has_no_error_message() {
    let mut events = started();
    events.extend([
        moved(5, 2_100, 4, 1, 100, "A", "B"),
        moved(6, 2_200, 4, 2, 50, "A", "B"),
        source_deleted(7, 2_300, 4, 1, "A"),
        source_deleted(8, 2_400, 4, 2, "A"),
        transfer_finished(9, 2_500, 4, None),
    ]);
    let s = state_of(&events);
    assert_eq!(
        get(&s, 4),
        Some(TaskRecord {
            ended_at_ms: Some(2_500),
            blobs_done: 2,
            bytes_done: 150,
            ..fresh_record()
        })
    );
    assert!(pending(&s, 4).is_empty());
}

#[test]
fn two_tasks_are_kept_apart() {
    let mut events = started();
    events.extend([
        moved(5, 2_100, 4, 1, 100, "A", "B"),
        transfer_finished(6, 2_200, 4, None),
        // Task 7 moves the same hash back: its pending deletion has the same hash, in B.
        start_transfer(7, 3_000, "B", "A", 1, 100),
        moved(8, 3_100, 7, 1, 100, "B", "A"),
        transfer_failed(9, 3_200, 7, 2, 1, false, "only task 7"),
    ]);
    let s = state_of(&events);
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);
    assert_eq!(pending(&s, 7), [(sha(1), deletion("B", 1))]);
    let t4 = get(&s, 4).unwrap();
    let t7 = get(&s, 7).unwrap();
    assert_eq!((t4.blobs_done, t4.attempts_failed), (1, 0));
    assert_eq!((t7.blobs_done, t7.attempts_failed), (1, 1));
    assert_eq!((t7.source.as_str(), t7.target.as_str()), ("B", "A"));
    assert!(t4.is_finished() && !t7.is_finished());
    let seqs: Vec<Seq> = all_tasks(&s).into_iter().map(|(q, _)| q).collect();
    assert_eq!(seqs, [Seq(4), Seq(7)]);

    // Deleting task 7's copy leaves task 4's pending deletion alone.
    events.push(source_deleted(10, 3_300, 7, 1, "B"));
    let s = state_of(&events);
    assert_eq!(pending(&s, 4), [(sha(1), deletion("A", 1))]);
    assert!(pending(&s, 7).is_empty());
}

#[test]
fn task_keys_sort_by_sequence() {
    // Big-endian: task 256 after task 255, whatever the varint of the value.
    assert!(tasks::task_key(Seq(255)) < tasks::task_key(Seq(256)));
    assert!(tasks::deletion_prefix(Seq(255)) < tasks::deletion_prefix(Seq(256)));
    let s = state_of(&[
        start_transfer(256, 1, "A", "B", 0, 0),
        start_transfer(255, 2, "B", "A", 0, 0),
    ]);
    let seqs: Vec<Seq> = all_tasks(&s).into_iter().map(|(q, _)| q).collect();
    assert_eq!(seqs, [Seq(255), Seq(256)]);
}

#[test]
fn media_events_are_ignored() {
    let s = state_of(&[
        upload(1, 1, "m1", 1, 10, "A"),
        access(2, 2, "m1", 1),
        create_async(3, 3, "p1", "@bob:example.org", 99),
    ]);
    assert!(space(&s, NAME).0.is_empty());
}

/// Each event that names a task, for task 99 that was never started.
fn events_for_unknown_task() -> Vec<(&'static str, Envelope)> {
    vec![
        ("moved", moved(5, 2_100, 99, 1, 100, "A", "B")),
        ("failed", transfer_failed(5, 2_100, 99, 1, 1, false, "x")),
        ("finished", transfer_finished(5, 2_100, 99, None)),
        ("source deleted", source_deleted(5, 2_100, 99, 1, "A")),
    ]
}

#[test]
fn progress_of_an_unknown_task_is_an_invariant_error() {
    for (what, e) in events_for_unknown_task() {
        let mut kv = MemoryKv::default();
        for b in started() {
            Tasks.apply(&b, &mut kv).unwrap();
        }
        let before = kv.clone();
        assert_invariant(Tasks.apply(&e, &mut kv), NAME);
        assert_eq!(kv, before, "{what}: a refused event changes nothing");
    }
}

/// `BlobSourceDeletedV1` of a task that was never started halts the projection, like every
/// other event that names a task.
#[test]
fn source_deletion_of_an_unknown_task_is_an_invariant_error() {
    let (_, e) = events_for_unknown_task().pop().unwrap();
    let mut kv = MemoryKv::default();
    for b in started() {
        Tasks.apply(&b, &mut kv).unwrap();
    }
    let before = kv.clone();
    assert_invariant(Tasks.apply(&e, &mut kv), NAME);
    assert_eq!(kv, before);
}

#[test]
fn corrupt_state_is_a_corrupt_error() {
    let mut kv = MemoryKv::default();
    kv.put(&tasks::task_key(Seq(4)), vec![0xff]);
    assert!(matches!(
        tasks::get(&kv, Seq(4)),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    assert!(matches!(
        Tasks.apply(&transfer_finished(5, 1, 4, None), &mut kv),
        Err(ProjectionError::Corrupt { name: NAME, .. })
    ));
    assert!(matches!(
        tasks::decode_task_entry(&tasks::task_key(Seq(4)), &[0xff]),
        Some(Err(ProjectionError::Corrupt { name: NAME, .. }))
    ));
    let mut dk = tasks::deletion_prefix(Seq(4));
    dk.extend_from_slice(&sha(1).0);
    assert!(matches!(
        tasks::decode_deletion_entry(&dk, &[0xff]),
        Some(Err(ProjectionError::Corrupt { name: NAME, .. }))
    ));
    // Keys of the other kind are not mistaken for entries.
    assert!(tasks::decode_task_entry(&dk, &[]).is_none());
    assert!(tasks::decode_deletion_entry(&tasks::task_key(Seq(4)), &[]).is_none());
}
