#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Import tasks in the `tasks` projection: started, progress, the end; an unknown task halts.

mod common;

use common::{assert_invariant, envelope, space, state_of};
use media_ledger_events::{Actor, Event, ImportProgress, ImportStarted, Seq};
use media_ledger_projections::import_tasks;
use media_ledger_projections::memory::MemoryState;

fn started(seq: u64, time: u64) -> media_ledger_events::Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::ImportStartedV1(ImportStarted {
            kind: "synapse".into(),
            source: "Synapse database /x/homeserver.db".into(),
            rows_total: 10,
        }),
    )
}

fn progress(
    seq: u64,
    time: u64,
    task: u64,
    done: u64,
    finished: bool,
) -> media_ledger_events::Envelope {
    envelope(
        seq,
        time,
        Actor::System,
        Event::ImportProgressV1(ImportProgress {
            task: Seq(task),
            rows_done: done,
            imported: done,
            already_imported: 0,
            skipped: 0,
            bytes: done * 100,
            finished,
            error: None,
        }),
    )
}

fn task(state: &MemoryState, seq: u64) -> Option<import_tasks::ImportTask> {
    import_tasks::get(space(state, "tasks"), Seq(seq)).unwrap()
}

#[test]
fn a_task_keeps_its_source_its_latest_progress_and_its_end() {
    let s = state_of(&[started(1, 100), progress(2, 200, 1, 4, false)]);
    let t = task(&s, 1).unwrap();
    assert_eq!(
        (t.kind.as_str(), t.rows_total, t.started_at_ms),
        ("synapse", 10, 100)
    );
    assert_eq!(t.progress.as_ref().map(|p| p.rows_done), Some(4));
    assert!(!t.is_finished());

    let s = state_of(&[
        started(1, 100),
        progress(2, 200, 1, 4, false),
        progress(3, 300, 1, 10, true),
    ]);
    let t = task(&s, 1).unwrap();
    assert_eq!(t.ended_at_ms, Some(300));
    assert_eq!(t.progress.map(|p| (p.rows_done, p.bytes)), Some((10, 1000)));
}

#[test]
fn progress_of_an_unknown_task_halts_the_projection() {
    let mut s = MemoryState::default();
    let r = s.apply_one(
        &media_ledger_projections::tasks::Tasks,
        &progress(1, 100, 42, 1, false),
    );
    assert_invariant(r, "tasks");
}
