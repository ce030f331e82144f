#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `verify` and start-up find damage: a changed byte, a removed record (the last one
//! included), a record written past the head, stale or tampered projection state.

use media_ledger::ledger::{raw, Divergence, Ledger, LedgerError};
use media_ledger_events::codec::{self, Chain, CHAIN_LEN, GENESIS_CHAIN};
use media_ledger_events::{RequestId, Seq};
use media_ledger_projections::names;
use media_ledger_projections::ALL;
use media_ledger_replay_tests::{submit_all, Op, Plan};
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::Path;
use tempfile::TempDir;

/// Records in the fixture ledger.
const N: u64 = 22;
/// The record damaged in the middle.
const MID: u64 = 5;

/// A closed ledger of `N` committed commands of every kind, dedup, a transfer, thumbnails and
/// moderation included (so that every projection, `tasks`, `thumbnails` and `moderation` too,
/// holds state; one source deletion and one blob deletion stay pending, and no bytes stay
/// blocked).
fn fixture() -> TempDir {
    let upload = |media_id: &str, sha, datastore| Op::Upload {
        origin: 0,
        media_id: media_id.into(),
        sha,
        datastore,
        user: 0,
        content_type: true,
        upload_name: true,
    };
    let plan = Plan::new(&[
        upload("a", 0, 0),
        upload("b", 1, 1),
        Op::CreateAsync {
            origin: 0,
            media_id: "c".into(),
            owner: 1,
            expired: false,
        },
        Op::Access { pick: 0, actor: 3 },
        upload("d", 0, 1),
        Op::CompleteAsync {
            pick: 0,
            sha: 1,
            datastore: 0,
        },
        Op::CreateAsync {
            origin: 1,
            media_id: "e".into(),
            owner: 2,
            expired: true,
        },
        Op::Access {
            pick: usize::MAX / 2,
            actor: 0,
        },
        upload("f", 2, 1),
        // Task 10: beta → alpha over the contents 1 and 2.
        Op::StartTransfer {
            source: 1,
            before_ts: false,
        },
        Op::MoveBlob { task: 0, pick: 0 },
        Op::TransferFailed {
            task: 0,
            sha: 2,
            final_attempt: false,
        },
        Op::MoveBlob { task: 0, pick: 0 },
        Op::SourceDeleted { task: 0, pick: 0 },
        Op::FinishTransfer {
            task: 0,
            error: true,
        },
        // A thumbnail of new bytes by the server, and one of other bytes already stored.
        Op::Thumbnail {
            pick: 0,
            size: 0,
            sha: media_ledger_replay_tests::SHA_POOL,
            datastore: 1,
            actor: 3,
        },
        Op::Thumbnail {
            pick: 1,
            size: 3,
            sha: 0,
            datastore: 0,
            actor: 0,
        },
        // a's bytes (d's too) quarantined, b pinned, the quarantined media purged into
        // tombstones (a's thumbnail goes and frees its bytes; b's thumbnail keeps the content
        // of a and d), and the quarantine lifted.
        Op::Quarantine {
            picks: vec![0],
            scope: 0,
        },
        Op::SetAttributes {
            pick: 1,
            pinned: true,
            scope: 0,
        },
        Op::Purge {
            kind: 2,
            picks: vec![0],
            scope: 0,
        },
        Op::Unquarantine { pick: 0, scope: 0 },
    ])
    .unwrap();
    // The last record is a link preview (below), outside the plan's model.
    assert_eq!(plan.steps.len() as u64 + 1, N);
    let purge = plan
        .steps
        .iter()
        .find_map(|s| match &s.expected {
            media_ledger_events::Event::MediaPurgedV1(p) => Some(p),
            _ => None,
        })
        .expect("the fixture purges");
    assert_eq!(
        (
            purge.media.iter().filter(|m| m.tombstone).count(),
            purge.thumbnails.len(),
            purge.freed.len()
        ),
        (2, 1, 1)
    );
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    for outcome in submit_all(&ledger, &plan.steps, 1).unwrap() {
        outcome.unwrap();
    }
    // A link preview offering b (live, pinned) as its image: url_previews has state too.
    let image = plan
        .steps
        .iter()
        .find_map(|s| match &s.expected {
            media_ledger_events::Event::MediaUploadedV1(u) if u.media.media_id.as_str() == "b" => {
                Some(u.media.clone())
            }
            _ => None,
        })
        .expect("the fixture uploads b");
    let preview = media_ledger_events::UrlPreviewed {
        homeserver: image.origin.clone(),
        url: "https://example.com/page".into(),
        og: r#"{"og:title":"A page"}"#.into(),
        image: Some(image),
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(ledger.submit(
            media_ledger_events::Actor::System,
            RequestId("preview".into()),
            media_ledger::ledger::Command::RecordPreview(preview),
        ))
        .unwrap();
    drop(ledger);
    assert_intact(dir.path());
    dir
}

fn assert_intact(path: &Path) {
    let (head, divergence) = Ledger::verify_path(path).unwrap();
    assert_eq!(head.seq, Seq(N));
    assert_eq!(divergence, None);
}

fn read(path: &Path, seq: u64) -> Vec<u8> {
    raw::read_record(path, Seq(seq))
        .unwrap()
        .expect("record present")
}

fn chain_of(record: &[u8]) -> Chain {
    record[record.len() - CHAIN_LEN..].try_into().unwrap()
}

fn chain_before(path: &Path, seq: u64) -> Chain {
    if seq == 1 {
        GENESIS_CHAIN
    } else {
        chain_of(&read(path, seq - 1))
    }
}

/// The error of `verify_path`, which must be `Corrupt`: its sequence and reason.
fn verify_corrupt(path: &Path) -> (Seq, String) {
    match Ledger::verify_path(path) {
        Err(LedgerError::Corrupt { seq, reason }) => (seq, reason),
        other => panic!("verify passed a damaged log: {other:?}"),
    }
}

/// `verify`, `open` and `open_rebuilt` all refuse the log, naming record `seq`.
fn assert_refused_at(path: &Path, seq: u64) -> String {
    let (at, reason) = verify_corrupt(path);
    assert_eq!(at, Seq(seq), "verify named the wrong record: {reason}");
    match Ledger::open(path, &mut |_, _| {}) {
        Err(LedgerError::Corrupt { seq: at, .. }) => assert_eq!(at, Seq(seq)),
        Err(e) => panic!("open failed for another reason: {e}"),
        Ok(_) => panic!("open started on a damaged log"),
    }
    match Ledger::open_rebuilt(path, &mut |_, _| {}) {
        Err(LedgerError::Corrupt { seq: at, .. }) => assert_eq!(at, Seq(seq)),
        Err(e) => panic!("open_rebuilt failed for another reason: {e}"),
        Ok(_) => panic!("open_rebuilt started on a damaged log"),
    }
    reason
}

#[test]
fn flipped_byte_in_the_middle_record_is_found() {
    let dir = fixture();
    let original = read(dir.path(), MID);
    let len = original.len();
    // Format version, envelope, first and last byte of the chain value.
    for at in [0, 1, len / 2, len - CHAIN_LEN, len - 1] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        raw::write_record(dir.path(), Seq(MID), &bytes).unwrap();
        assert_refused_at(dir.path(), MID);
    }
    // Nothing else was touched, the refused opens included.
    raw::write_record(dir.path(), Seq(MID), &original).unwrap();
    assert_intact(dir.path());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any change of any byte of any record is found at that record.
    #[test]
    fn any_flipped_byte_is_found_at_its_record(seq in 1..=N, at in any::<Index>(), mask in 1u8..) {
        let dir = fixture();
        let mut bytes = read(dir.path(), seq);
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        raw::write_record(dir.path(), Seq(seq), &bytes).unwrap();
        let (found, reason) = verify_corrupt(dir.path());
        prop_assert_eq!(found, Seq(seq), "{}", reason);
    }
}

#[test]
fn deleted_middle_record_is_found() {
    let dir = fixture();
    raw::delete_record(dir.path(), Seq(MID)).unwrap();
    let reason = assert_refused_at(dir.path(), MID);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn deleted_first_record_is_found() {
    let dir = fixture();
    raw::delete_record(dir.path(), Seq(1)).unwrap();
    assert_refused_at(dir.path(), 1);
}

/// Nothing follows the last record, so only the stored head shows it is gone.
#[test]
fn deleted_last_record_is_found_through_the_head() {
    let dir = fixture();
    raw::delete_record(dir.path(), Seq(N)).unwrap();
    let reason = assert_refused_at(dir.path(), N);
    assert!(reason.contains("head"), "{reason}");
}

#[test]
fn truncated_and_emptied_records_are_found() {
    let dir = fixture();
    let original = read(dir.path(), MID);
    for bytes in [
        &original[..original.len() - 1],
        &original[..CHAIN_LEN - 1],
        &[][..],
    ] {
        raw::write_record(dir.path(), Seq(MID), bytes).unwrap();
        assert_refused_at(dir.path(), MID);
    }
}

#[test]
fn swapped_records_are_found() {
    let dir = fixture();
    let (a, b) = (read(dir.path(), MID), read(dir.path(), MID + 1));
    raw::write_record(dir.path(), Seq(MID), &b).unwrap();
    raw::write_record(dir.path(), Seq(MID + 1), &a).unwrap();
    assert_refused_at(dir.path(), MID);
}

/// Re-encoding a changed record with a valid chain value moves the break to the next record
/// (its chain covers the previous one), or to the head for the last record.
#[test]
fn rewritten_record_with_a_recomputed_chain_is_found() {
    for (seq, found) in [(MID, MID + 1), (N, N)] {
        let dir = fixture();
        let mut env = codec::decode_record_unchecked(&read(dir.path(), seq)).unwrap();
        env.request_id = RequestId("forged".into());
        let (bytes, _) = codec::encode_record(&chain_before(dir.path(), seq), &env).unwrap();
        raw::write_record(dir.path(), Seq(seq), &bytes).unwrap();
        assert_refused_at(dir.path(), found);
    }
}

#[test]
fn record_past_the_head_is_found() {
    let dir = fixture();
    // A well-chained record the head does not cover, then plain garbage.
    let last = read(dir.path(), N);
    let mut env = codec::decode_record_unchecked(&last).unwrap();
    env.seq = Seq(N + 1);
    let (bytes, _) = codec::encode_record(&chain_of(&last), &env).unwrap();
    raw::write_record(dir.path(), Seq(N + 1), &bytes).unwrap();
    let reason = assert_refused_at(dir.path(), N + 1);
    assert!(reason.contains("head"), "{reason}");
    raw::write_record(
        dir.path(),
        Seq(N + 1),
        b"not a record at all, but longer than a chain value",
    )
    .unwrap();
    assert_refused_at(dir.path(), N + 1);
    raw::delete_record(dir.path(), Seq(N + 1)).unwrap();
    assert_intact(dir.path());
}

fn divergence(path: &Path) -> Divergence {
    let (head, divergence) = Ledger::verify_path(path).unwrap();
    assert_eq!(head.seq, Seq(N));
    divergence.expect("verify missed a projection that differs from the replay")
}

/// A projection halted before the last command lags behind the log: `verify` reports it,
/// and the next open brings it up to date.
#[test]
fn lagging_projection_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(&[
        Op::Upload {
            origin: 0,
            media_id: "x".into(),
            sha: 0,
            datastore: 0,
            user: 0,
            content_type: false,
            upload_name: false,
        },
        Op::Access { pick: 0, actor: 1 },
    ])
    .unwrap();
    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    submit_all(&ledger, &plan.steps[..1], 1)
        .unwrap()
        .remove(0)
        .unwrap();
    ledger.halt_projection(names::HASH_REFS, "test");
    submit_all(&ledger, &plan.steps[1..], 1)
        .unwrap()
        .remove(0)
        .unwrap();
    drop(ledger);
    let (_, found) = Ledger::verify_path(dir.path()).unwrap();
    let found = found.expect("lagging projection not reported");
    assert_eq!(found.projection, "hash_refs");
    assert!(found.detail.contains("checkpoint"), "{found:?}");
    drop(Ledger::open(dir.path(), &mut |_, _| {}).unwrap());
    let (head, found) = Ledger::verify_path(dir.path()).unwrap();
    assert_eq!((head.seq, found), (Seq(2), None));
}

/// Opens the database directly, with every column family the ledger creates.
fn open_db(path: &Path) -> rocksdb::DB {
    let names = ["log", "meta", "checkpoints"]
        .into_iter()
        .chain(ALL.iter().map(|p| p.name()));
    rocksdb::DB::open_cf(&rocksdb::Options::default(), path, names).unwrap()
}

fn entry(db: &rocksdb::DB, cf: &str, mode: rocksdb::IteratorMode<'_>) -> (Vec<u8>, Vec<u8>) {
    let cf = db.cf_handle(cf).unwrap();
    let (k, v) = db.iterator_cf(cf, mode).next().unwrap().unwrap();
    (k.to_vec(), v.to_vec())
}

/// There is no API to write projection state; these tests go to RocksDB directly. Every kind
/// of damage is reported against the damaged projection, `open` does not notice it (it only
/// checks the chain), and `open_rebuilt` repairs it.
#[test]
fn tampered_projection_state_is_reported() {
    type Tamper = fn(&rocksdb::DB, &str);
    let tampers: [(&str, Tamper); 4] = [
        ("value of key", |db, cf| {
            let (k, mut v) = entry(db, cf, rocksdb::IteratorMode::Start);
            let last = v.len() - 1;
            v[last] ^= 0x01;
            db.put_cf(db.cf_handle(cf).unwrap(), k, v).unwrap();
        }),
        ("lacks key", |db, cf| {
            let (k, _) = entry(db, cf, rocksdb::IteratorMode::End);
            db.delete_cf(db.cf_handle(cf).unwrap(), k).unwrap();
        }),
        ("extra stored key", |db, cf| {
            db.put_cf(db.cf_handle(cf).unwrap(), b"\xff\xffextra", b"")
                .unwrap();
        }),
        ("checkpoint", |db, cf| {
            let checkpoints = db.cf_handle("checkpoints").unwrap();
            let mut v = db.get_cf(checkpoints, cf).unwrap().unwrap();
            // `Checkpoint { version, seq }` in varints: seq N becomes N - 1.
            let last = v.len() - 1;
            v[last] -= 1;
            db.put_cf(checkpoints, cf, v).unwrap();
        }),
    ];
    for p in ALL {
        for (what, tamper) in &tampers {
            let dir = fixture();
            {
                let db = open_db(dir.path());
                tamper(&db, p.name());
            }
            let found = divergence(dir.path());
            assert_eq!(found.projection, p.name(), "{what}: {found:?}");
            assert!(found.detail.contains(what), "{what}: {found:?}");
            if *what != "checkpoint" {
                drop(Ledger::open(dir.path(), &mut |_, _| {}).unwrap());
                assert_eq!(
                    divergence(dir.path()),
                    found,
                    "open does not look at projection state"
                );
            }
            drop(Ledger::open_rebuilt(dir.path(), &mut |_, _| {}).unwrap());
            assert_intact(dir.path());
        }
    }
}

/// BUG (minor; src/ledger/store.rs `open_db_read_only`, used by `verify_path` and `events_at`):
/// rust-rocksdb creates the directory before every open, read-only ones included, so
/// `verify` of a mistyped path leaves an empty directory behind and fails with RocksDB's
/// "IO error: No such file or directory ... CURRENT" instead of saying there is no ledger.
#[test]
fn verify_of_a_missing_ledger_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-ledger");
    let outcome = Ledger::verify_path(&path);
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        !path.exists(),
        "verify created {} ({outcome:?})",
        path.display()
    );
}

/// `verify` opens read-only, so it runs beside a running ledger, even one that is writing:
/// it sees a committed prefix (log, state and checkpoints of a group are one batch).
#[test]
fn verify_beside_a_running_ledger() {
    let dir = fixture();
    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    assert_intact(dir.path());
    let upload = |i: usize| Op::Upload {
        origin: i % 2,
        media_id: format!("live-{i}"),
        sha: i % 4,
        datastore: i % 2,
        user: i % 3,
        content_type: false,
        upload_name: false,
    };
    let ops: Vec<Op> = (0..40)
        .flat_map(|i| [upload(i), Op::Access { pick: i, actor: i }])
        .collect();
    let plan = Plan::new(&ops).unwrap();
    let mut heads = Vec::new();
    std::thread::scope(|s| {
        let writer = s.spawn(|| submit_all(&ledger, &plan.steps, 1).unwrap());
        while !writer.is_finished() {
            let (head, divergence) = Ledger::verify_path(dir.path()).unwrap();
            assert_eq!(divergence, None, "at head {}", head.seq);
            heads.push(head.seq.0);
        }
        for outcome in writer.join().unwrap() {
            outcome.unwrap();
        }
    });
    assert!(heads.windows(2).all(|w| w[0] <= w[1]), "{heads:?}");
    let end = N + plan.steps.len() as u64;
    let (head, divergence) = Ledger::verify_path(dir.path()).unwrap();
    assert_eq!((head.seq, divergence), (Seq(end), None));
    drop(ledger);
}

/// A record whose chain is intact but which this build cannot decode (here: a record format
/// a newer build would write) is reported and stepped past: `verify` names it and checks the
/// chain of the records after it, `replay --until` before it exports the state as of then,
/// `events` prints the records on both sides, and only a ledger that must fold it refuses it.
#[test]
fn an_undecodable_record_with_an_intact_chain_is_reported_and_stepped_past() {
    let dir = fixture();
    let path = dir.path();
    let later = {
        let mut envs = Vec::new();
        Ledger::events_at(path, Seq(4), Seq(4), |e| {
            envs.push(e);
            true
        })
        .unwrap();
        envs
    };
    raw::append_body(path, vec![codec::RECORD_FORMAT_V1 + 1, 0, 0, 0]).unwrap();
    raw::append_unprojected(path, &later).unwrap();
    raw::append_unprojected(path, &later).unwrap();

    let report = Ledger::verify_report(path).unwrap();
    assert_eq!(
        report.head.seq,
        Seq(N + 3),
        "the chain was not checked past it"
    );
    assert_eq!(report.undecodable.len(), 1);
    assert_eq!(report.undecodable[0].seq, Seq(N + 1));
    assert!(
        report.undecodable[0].reason.contains("format version"),
        "{}",
        report.undecodable[0].reason
    );
    assert_eq!(verify_corrupt(path).0, Seq(N + 1));

    // The state before it.
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("before");
    let head = media_ledger::ledger::recovery::export_until(path, &into, Seq(N)).unwrap();
    assert_eq!(head.seq, Seq(N));
    assert_intact(&into);
    // Not through it.
    let through = out.path().join("through");
    match media_ledger::ledger::recovery::export_until(path, &through, Seq(N + 2)) {
        Err(LedgerError::Corrupt { seq, reason }) => {
            assert_eq!(seq, Seq(N + 1));
            assert!(reason.contains(&format!("--until {N}")), "{reason}");
        }
        other => panic!("exported through an undecodable record: {other:?}"),
    }

    // `events` prints every record, the undecodable one as such.
    let mut seen = Vec::new();
    Ledger::log_at(path, Seq(1), Seq(u64::MAX), |e| {
        seen.push(e.map(|env| env.seq).map_err(|u| u.seq));
        true
    })
    .unwrap();
    assert_eq!(seen.len() as u64, N + 3);
    assert_eq!(seen[N as usize], Err(Seq(N + 1)));
    assert_eq!(seen[N as usize + 2], Ok(Seq(N + 3)));

    // A ledger that must fold it refuses to start, naming it.
    match Ledger::open(path, &mut |_, _| {}) {
        Err(LedgerError::Corrupt { seq, .. }) => assert_eq!(seq, Seq(N + 1)),
        Err(e) => panic!("open failed for another reason: {e}"),
        Ok(_) => panic!("open folded past an undecodable record"),
    }
}

/// Start-up verifies from where the last start-up's verification ended (start-up time does not
/// grow with the log): damage before that point is `verify`'s to find; a change of the record
/// at the point, or a log cut short of it, stops the start there.
#[test]
fn start_up_verifies_from_the_last_verified_point() {
    let dir = fixture();
    // A start verifies all N records and remembers where it got to.
    drop(Ledger::open(dir.path(), &mut |_, _| {}).unwrap());

    // A flipped byte before the point: the next start does not read it again; verify does.
    let original = read(dir.path(), MID);
    let mut bytes = original.clone();
    bytes[1] ^= 0x01;
    raw::write_record(dir.path(), Seq(MID), &bytes).unwrap();
    drop(Ledger::open(dir.path(), &mut |_, _| {}).unwrap());
    assert_eq!(verify_corrupt(dir.path()).0, Seq(MID));
    raw::write_record(dir.path(), Seq(MID), &original).unwrap();

    // The record at the point changed (its bytes, or its chain value): it is checked again.
    let last = read(dir.path(), N);
    let len = last.len();
    for at in [1, len - 1] {
        let mut bytes = last.clone();
        bytes[at] ^= 0x01;
        raw::write_record(dir.path(), Seq(N), &bytes).unwrap();
        match Ledger::open(dir.path(), &mut |_, _| {}) {
            Err(LedgerError::Corrupt { seq, .. }) => assert_eq!(seq, Seq(N)),
            Ok(_) => panic!("start-up with record {N} changed at {at} passed"),
            Err(e) => panic!("start-up with record {N} changed at {at}: {e}"),
        }
        assert_eq!(verify_corrupt(dir.path()).0, Seq(N));
    }
    raw::write_record(dir.path(), Seq(N), &last).unwrap();

    // The log cut short of the point (the last record and the head gone together).
    raw::delete_record(dir.path(), Seq(N)).unwrap();
    match Ledger::open(dir.path(), &mut |_, _| {}) {
        Err(LedgerError::Corrupt { seq, .. }) => assert_eq!(seq, Seq(N)),
        Ok(_) => panic!("start-up with the verified record gone passed"),
        Err(e) => panic!("start-up with the verified record gone: {e}"),
    }
    raw::write_record(dir.path(), Seq(N), &last).unwrap();
    assert_intact(dir.path());
}
