#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A checked-in log and the state it must fold into.
//!
//! `fixtures/golden.jsonl` holds 31 envelopes: every event type, duplicate bytes (recorded, as
//! the writer does, with the first upload's datastore and location), two datastores, filled,
//! pending and lapsed async reservations, accesses by users, the admin and the server, and
//! (from sequence 21) a transfer from `alpha` to `beta` of the content shared by cat1 and cat2:
//! one failed attempt, the move, the deletion of the source copy and the end, followed by a
//! duplicate upload of that content, recorded (as the writer does) at its new place. Then
//! (from sequence 27) three thumbnails: cat1 at 32x32 crop, new bytes stored in `alpha`; cat3
//! at the same size, the same bytes (the cats share their content), recorded at that blob;
//! and cat2 at 96x96 crop, whose bytes are the cat content itself (a 96x96 picture encodes
//! to the same file), recorded at the cat blob's new place in `beta`. Last (sequences 30
//! and 31) two remote media of `remote.example` cached over federation: `rcat`, whose bytes
//! are the cat content (recorded, as the writer does, at the cat blob in `beta`), asked for by
//! alice, and `sunset`, 3 000 new bytes stored in `alpha`, fetched for an anonymous request.
//! `fixtures/golden.expected.json` is its snapshot. A change of a projection's fold shows as a
//! diff of that file; after checking the diff by eye, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test -p media-ledger-replay-tests --test golden`.

use media_ledger::ledger::{raw, Command, Ledger};
use media_ledger_events::{Event, RemoteMediaCached, Seq, ThumbnailGenerated};
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
    assert_eq!(envs.len(), 31);
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
    assert_eq!(count(|e| matches!(e, Event::ThumbnailGeneratedV1(_))), 3);
    assert_eq!(count(|e| matches!(e, Event::RemoteMediaCachedV1(_))), 2);
    // Every variant of the log's format appears (a new one must be added to this log).
    let mut types: Vec<&str> = envs.iter().map(|e| e.event.type_name()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), 10, "{types:?}");
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

/// The content of the 32x32 thumbnails of the cats (600 bytes).
const THUMB: &str = "53b12bb9b2109875683b8603d8769e9e4685db50f7258fe66999ee341ad3a764";
/// The content shared by cat1, cat2 and cat3 (1 000 bytes).
const CAT: &str = "ec0b794d57e49e213bc9f47e3e2221123eda3c073d7dc11cf767f9530d804388";
/// The content of the remote media `sunset` (3 000 bytes).
const SUNSET: &str = "bde577fb816474481ee7614bc136e5520eba781b1ea193c7eef28e3f159763da";

/// Figures checked by hand against the log: the contents of cat1 and dog1 (1 000 and 2 500
/// bytes) were first stored in `alpha`, those of doc1, vid1, async1 and import1 (40 000,
/// 5 000 000, 777 and 123 bytes) in `beta`; every later upload of the same bytes is counted as
/// a row of that datastore but adds no bytes. Then task 21 moves the cat content (rows cat1
/// and cat2) from `alpha` to `beta`, and cat3 adds a third row of it in `beta`. Last, two
/// thumbnail rows of one 600-byte content in `alpha` (new to alpha: a thumbnail hash and a
/// total hash), and one thumbnail row in `beta` of the cat content (a thumbnail hash and its
/// bytes, but no total hash: beta's media have it already). Then the remote `rcat` adds a
/// fourth row of the cat content to `beta` (a row, no hash, no bytes), and the remote `sunset`
/// a row, a hash and 3 000 bytes to `alpha`.
#[test]
fn golden_figures_make_sense() {
    let snap = expected();
    let alpha = &snap["datastore_sizes"]["alpha"]["totals"];
    assert_eq!(
        alpha["media_affected"], 3,
        "dog1, dog2, sunset (cat1, cat2 moved out)"
    );
    assert_eq!(alpha["media_hashes_affected"], 2);
    assert_eq!(alpha["media_bytes"], 2_500 + 3_000);
    assert_eq!(alpha["thumbnails_affected"], 2, "of cat1 and cat3");
    assert_eq!(alpha["thumbnail_hashes_affected"], 1);
    assert_eq!(alpha["thumbnail_bytes"], 600);
    assert_eq!(alpha["total_hashes_affected"], 3);
    assert_eq!(alpha["total_bytes"], 2_500 + 600 + 3_000);
    let alpha_hashes = snap["datastore_sizes"]["alpha"]["hashes"]
        .as_object()
        .unwrap();
    assert_eq!(
        alpha_hashes.keys().collect::<Vec<_>>(),
        [
            "048656df1192ba1fec4e5e9cf0beacf09b180d044478cd3b9a639ac762d17ee1",
            THUMB,
            SUNSET
        ],
        "dog, the thumbnail content and sunset; the cat row count left alpha with the cat blob"
    );
    assert_eq!(
        alpha_hashes[SUNSET],
        serde_json::json!({ "media": 1, "thumbnails": 0 })
    );
    assert_eq!(
        alpha_hashes[THUMB],
        serde_json::json!({ "media": 0, "thumbnails": 2 })
    );
    let beta = &snap["datastore_sizes"]["beta"]["totals"];
    assert_eq!(
        beta["media_affected"], 10,
        "doc1, vid1, async1, import1, vid2, async4, cat1, cat2, cat3, rcat"
    );
    assert_eq!(beta["media_hashes_affected"], 5);
    assert_eq!(beta["media_bytes"], 40_000 + 5_000_000 + 777 + 123 + 1_000);
    assert_eq!(beta["thumbnails_affected"], 1, "of cat2");
    assert_eq!(beta["thumbnail_hashes_affected"], 1);
    assert_eq!(beta["thumbnail_bytes"], 1_000);
    assert_eq!(beta["total_hashes_affected"], 5);
    assert_eq!(beta["total_bytes"], 40_000 + 5_000_000 + 777 + 123 + 1_000);
    let cat = CAT;
    assert_eq!(
        snap["datastore_sizes"]["beta"]["hashes"][cat],
        serde_json::json!({ "media": 4, "thumbnails": 1 }),
        "cat1, cat2, cat3 and the remote rcat"
    );

    let media = snap["media_index"].as_object().unwrap();
    assert_eq!(media.keys().filter(|k| k.starts_with("mxc://")).count(), 13);
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
            "mxc://localhost/cat3",
            "mxc://remote.example/rcat"
        ]),
        "in upload order, the remote one too"
    );
    assert_eq!(
        snap["media_index"]["by_hash"][SUNSET],
        serde_json::json!(["mxc://remote.example/sunset"])
    );
    assert_eq!(snap["media_index"]["by_hash"].as_object().unwrap().len(), 7);
    let kinds = |kind: &str| {
        media
            .iter()
            .filter(|(k, v)| k.starts_with("mxc://") && v["kind"] == kind)
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds("Remote"),
        ["mxc://remote.example/rcat", "mxc://remote.example/sunset"]
    );
    assert_eq!(kinds("Local").len(), 11, "every upload");
    assert_eq!(
        media["mxc://remote.example/rcat"],
        serde_json::json!({
            "sha256": CAT,
            "size_bytes": 1_000,
            "content_type": "image/png",
            "upload_name": "cat.png",
            "uploader": "System",
            "created_at_ms": 1_700_000_000_000u64 + 29 * 60_000,
            "kind": "Remote",
            "datastore": "beta",
            "quarantined": false,
            "last_access_ms": 1_700_000_000_000u64 + 29 * 60_000,
            "pinned": false,
            "tombstone": false,
            "created_seq": 30,
            "access_count": 0,
        }),
        "the envelope's actor (alice asked for it) is not its uploader"
    );
    let sunset = &media["mxc://remote.example/sunset"];
    assert_eq!(
        (
            &sunset["content_type"],
            &sunset["upload_name"],
            &sunset["datastore"],
            &sunset["created_at_ms"]
        ),
        (
            &Value::Null,
            &Value::Null,
            &serde_json::json!("alpha"),
            &serde_json::json!(1_700_000_000_000u64 + 30 * 60_000)
        )
    );

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
    assert_eq!(
        refs.iter().sum::<u64>(),
        13 + 3,
        "11 local and 2 remote media, 3 thumbnails"
    );
    let cat_record = &snap["hash_refs"][cat]["record"];
    assert_eq!(cat_record["datastore"], "beta");
    assert_eq!(
        cat_record["ref_count"], 5,
        "three local media, a remote one and a thumbnail"
    );
    assert_eq!(
        snap["hash_refs"][CAT]["refs"].as_array().unwrap().len(),
        4,
        "one media referrer per local or remote media"
    );
    assert_eq!(
        snap["hash_refs"][cat]["thumbnail_refs"],
        serde_json::json!(["mxc://example.org/cat2 96x96-crop"])
    );
    assert_eq!(cat_record["created_seq"], 1, "first stored by cat1");
    assert_eq!(
        cat_record["last_access_ms"],
        1_700_000_000_000u64 + 29 * 60_000,
        "the cache of rcat at seq 30 (a thumbnail is not an access, caching is)"
    );
    assert_eq!(
        snap["hash_refs"][SUNSET]["record"],
        serde_json::json!({
            "datastore": "alpha",
            "location": format!("bd/e5/{SUNSET}"),
            "size_bytes": 3_000,
            "ref_count": 1,
            "last_access_ms": 1_700_000_000_000u64 + 30 * 60_000,
            "created_seq": 31,
        })
    );
    let thumb_record = &snap["hash_refs"][THUMB];
    assert_eq!(
        thumb_record["record"],
        serde_json::json!({
            "datastore": "alpha",
            "location": format!("53/b1/{THUMB}"),
            "size_bytes": 600,
            "ref_count": 2,
            "last_access_ms": 1_700_000_000_000u64 + 26 * 60_000,
            "created_seq": 27,
        })
    );
    assert_eq!(thumb_record["refs"], serde_json::json!([]), "no media");
    assert_eq!(
        thumb_record["thumbnail_refs"],
        serde_json::json!([
            "mxc://localhost/cat1 32x32-crop",
            "mxc://localhost/cat3 32x32-crop"
        ])
    );
    let thumbs = snap["thumbnails"].as_object().unwrap();
    assert_eq!(
        thumbs.keys().collect::<Vec<_>>(),
        [
            "mxc://example.org/cat2",
            "mxc://localhost/cat1",
            "mxc://localhost/cat3"
        ]
    );
    assert_eq!(
        thumbs["mxc://localhost/cat1"],
        serde_json::json!({ "32x32-crop": {
            "sha256": THUMB,
            "size_bytes": 600,
            "content_type": "image/png",
            "created_at_ms": 1_700_000_000_000u64 + 26 * 60_000,
        }})
    );
    assert_eq!(
        thumbs["mxc://localhost/cat3"]["32x32-crop"]["sha256"],
        THUMB
    );
    assert_eq!(
        thumbs["mxc://example.org/cat2"]["96x96-crop"]["sha256"],
        cat
    );
    assert_eq!(
        snap["media_index"].get("mxc://localhost/thumb"),
        None,
        "thumbnails are not media rows"
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
    assert_eq!(head.seq, Seq(31));

    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(ledger_envelopes(&ledger).unwrap(), envs);
    let state = state_of(&ledger).unwrap();
    assert_eq!(snapshot(&state), expected());
    assert_eq!(state, replay(&envs).unwrap());
    drop(ledger);

    let (head, divergence) = Ledger::verify_path(dir.path()).unwrap();
    assert_eq!(head.seq, Seq(31));
    assert_eq!(divergence, None);
}

/// The thumbnails of the golden log, one event at a time.
#[test]
fn golden_thumbnails_step_by_step() {
    let envs = golden();
    let at = |n: usize| snapshot(&replay(&envs[..n]).unwrap());
    let before = at(26);
    assert_eq!(before["thumbnails"], serde_json::json!({}));

    let s = at(27);
    let alpha = &s["datastore_sizes"]["alpha"]["totals"];
    assert_eq!(
        (
            &alpha["thumbnails_affected"],
            &alpha["thumbnail_bytes"],
            &alpha["total_bytes"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(600),
            &serde_json::json!(3_100)
        )
    );
    assert_eq!(s["hash_refs"][THUMB]["record"]["ref_count"], 1);
    assert_eq!(
        s["datastore_sizes"]["beta"],
        before["datastore_sizes"]["beta"]
    );
    assert_eq!(s["media_index"], before["media_index"], "no media row");

    let s = at(28);
    let alpha = &s["datastore_sizes"]["alpha"]["totals"];
    assert_eq!(alpha["thumbnails_affected"], 2, "a row");
    assert_eq!(alpha["thumbnail_bytes"], 600, "but no bytes");
    assert_eq!(alpha["total_bytes"], 3_100);
    assert_eq!(s["hash_refs"][THUMB]["record"]["ref_count"], 2);

    let s = at(29);
    let beta = &s["datastore_sizes"]["beta"]["totals"];
    let beta_before = &before["datastore_sizes"]["beta"]["totals"];
    assert_eq!(beta["thumbnail_bytes"], 1_000);
    assert_eq!(
        beta["total_bytes"], beta_before["total_bytes"],
        "beta had the bytes"
    );
    assert_eq!(
        beta["total_hashes_affected"],
        beta_before["total_hashes_affected"]
    );
    assert_eq!(s["hash_refs"][CAT]["record"]["ref_count"], 4);
    assert_eq!(
        s["hash_refs"][CAT]["record"]["last_access_ms"],
        before["hash_refs"][CAT]["record"]["last_access_ms"]
    );
}

/// The thumbnail and remote media events of the golden log are what the writer records for
/// thumbnails generated and remote media fetched into any datastore: bytes already stored
/// are pointed at their blob.
#[test]
fn golden_thumbnails_are_what_the_writer_records() {
    let envs = golden();
    let dir = tempfile::tempdir().unwrap();
    raw::append_unprojected(dir.path(), &envs[..26]).unwrap();
    let ledger = Ledger::open(dir.path(), &mut |_, _| {}).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (i, env) in envs[26..29].iter().enumerate() {
        let Event::ThumbnailGeneratedV1(golden_event) = &env.event else {
            panic!("{:?}", env.event)
        };
        // The thumbnailer stored its file where it liked: new bytes in alpha, then the two
        // others in the datastore where their content is not.
        let (ds, loc) = match i {
            0 => ("alpha", golden_event.location.clone()),
            1 => ("beta", golden_event.location.clone()),
            _ => ("alpha", "spool/cat2-96".parse().unwrap()),
        };
        let submitted = ThumbnailGenerated {
            datastore: ds.parse().unwrap(),
            location: loc,
            ..golden_event.clone()
        };
        let committed = rt
            .block_on(ledger.submit(
                env.actor.clone(),
                env.request_id.clone(),
                Command::RecordThumbnail(submitted),
            ))
            .unwrap();
        assert_eq!(committed.seq, env.seq);
        assert_eq!(committed.event, env.event, "seq {}", env.seq);
    }
    // The remote media: rcat was fetched into alpha's spool, but its bytes are the cat
    // content, so the writer records it at the cat blob in beta; sunset is new and stays.
    for env in &envs[29..] {
        let Event::RemoteMediaCachedV1(golden_event) = &env.event else {
            panic!("{:?}", env.event)
        };
        let submitted = if golden_event.media.media_id.as_str() == "rcat" {
            RemoteMediaCached {
                datastore: "alpha".parse().unwrap(),
                location: "spool/rcat".parse().unwrap(),
                ..golden_event.clone()
            }
        } else {
            golden_event.clone()
        };
        let committed = rt
            .block_on(ledger.submit(
                env.actor.clone(),
                env.request_id.clone(),
                Command::CacheRemote(submitted.clone()),
            ))
            .unwrap();
        assert_eq!(committed.seq, env.seq);
        assert_eq!(committed.event, env.event, "seq {}", env.seq);
        // A second fetch of the same remote media is refused and records nothing.
        let again = rt.block_on(ledger.submit(
            env.actor.clone(),
            env.request_id.clone(),
            Command::CacheRemote(submitted),
        ));
        assert!(
            matches!(
                again,
                Err(media_ledger::ledger::LedgerError::Conflict(
                    media_ledger::ledger::Conflict::MediaExists
                ))
            ),
            "{again:?}"
        );
        assert_eq!(ledger.head(), env.seq);
    }
    // Live state and snapshot: the golden one, but for the times of the writer's clock.
    let live = snapshot(&state_of(&ledger).unwrap());
    let expected = expected();
    assert_eq!(live["datastore_sizes"], expected["datastore_sizes"]);
    assert_eq!(
        live["thumbnails"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        expected["thumbnails"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        live["hash_refs"][THUMB]["thumbnail_refs"],
        expected["hash_refs"][THUMB]["thumbnail_refs"]
    );
}
