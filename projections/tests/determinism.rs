#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replays are deterministic and incremental: the same events give the same state, however
//! they are split, and every projection's state matches a simple model of the log.

mod common;

use common::{
    access, access_of, create_async, ds, envelope, imported, media, media_on, moved, moved_at,
    remote_at, sha, source_deleted, space, start_transfer, state_of, thumbnail, thumbnail_at,
    transfer_failed, transfer_finished, upload, upload_at, ThumbSize, CROP_32, CROP_96, SCALE_320,
};
use media_ledger_events::{Actor, BlobLocation, BlobSourceDeleted, Envelope, Event, Seq};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::size_estimate::SizeEstimator;
use media_ledger_projections::tasks::{self, PendingDeletion, TaskRecord};
use media_ledger_projections::{
    datastore_sizes, hash_refs, media_index, pending_uploads, thumbnails, ALL,
};
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
        start_transfer(10, 3_200, "A", "B", 2, 150),
        moved(11, 3_300, 10, 1, 100, "A", "B"),
        transfer_failed(12, 3_400, 10, 2, 1, false, "timeout"),
        source_deleted(13, 3_500, 10, 1, "A"),
        transfer_failed(14, 3_600, 10, 2, 2, true, "timeout again"),
        transfer_finished(15, 3_700, 10, Some("1 blob could not be moved")),
        access(16, 3_800, "m4", 1),
        start_transfer(17, 3_900, "B", "A", 2, 107),
        moved(18, 4_000, 17, 3, 7, "B", "A"),
        // Thumbnails: of new bytes (h4, into B), of m3's bytes (h2, where that blob is: A),
        // and of h4 again for another media; then h4 (only thumbnails) moves B → A.
        thumbnail(19, 4_100, "m1", CROP_32, 4, 5, "B"),
        thumbnail(20, 4_200, "m1", SCALE_320, 2, 50, "A"),
        thumbnail(21, 4_300, "p1", CROP_32, 4, 5, "B"),
        transfer_finished(22, 4_400, 17, None),
        start_transfer(23, 4_500, "B", "A", 2, 105),
        moved(24, 4_600, 23, 4, 5, "B", "A"),
    ]
}

/// [`fixed_log`] followed by media the homeserver stored itself, read through: one of bytes
/// already here (h2, recorded where that blob is), one of new bytes with the homeserver's
/// time; then an access and a thumbnail of the latter.
fn log_with_imports() -> Vec<Envelope> {
    let mut log = fixed_log();
    log.extend([
        imported(25, 4_700, "s1", 2, 50, "A", None),
        imported(26, 4_800, "s2", 5, 9, "B", Some(10)),
        access(27, 4_900, "s2", 5),
        thumbnail(28, 5_000, "s2", CROP_32, 6, 3, "B"),
    ]);
    log
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

// Imported media replays like the rest: any split gives the full state, each projection
// folds alone to the same key space, and the figures count imports as media rows.
#[test]
fn imports_replay_deterministically() {
    let log = log_with_imports();
    let full = fold(&log);
    for k in 0..=log.len() {
        let mut s = fold(&log[..k]);
        for e in &log[k..] {
            s.apply(e).unwrap();
        }
        assert_eq!(s, full, "split at {k}");
    }
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
    let before = fold(&fixed_log());
    let sizes = |s: &MemoryState, d: &str| {
        let t = datastore_sizes::totals(space(s, "datastore_sizes"), &ds(d)).unwrap();
        (t.media_affected, t.media_hashes_affected, t.media_bytes)
    };
    // s1 shares h2 in A: a row, no bytes; s2 brings h5 (9 bytes) to B.
    let (a0, b0) = (sizes(&before, "A"), sizes(&before, "B"));
    assert_eq!(sizes(&full, "A"), (a0.0 + 1, a0.1, a0.2));
    assert_eq!(sizes(&full, "B"), (b0.0 + 1, b0.1 + 1, b0.2 + 9));
    let hr = space(&full, "hash_refs");
    assert_eq!(hash_refs::get(hr, &sha(2)).unwrap().unwrap().ref_count, 3);
    let s2 = media_index::get(space(&full, "media_index"), &media("s2"))
        .unwrap()
        .unwrap();
    assert_eq!((s2.created_at_ms, s2.access_count), (10, 1));
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
            "moderation",
            "pending_uploads",
            "tasks",
            "thumbnails",
            "url_previews",
            "usage"
        ])
    );
    for p in ALL {
        assert!(p.version() >= 1);
    }
}

// ---- a model of the log, and random valid logs checked against it ----

#[derive(Debug, Clone)]
enum Op {
    Upload {
        m: u8,
        h: u8,
        d: u8,
        loc: u8,
    },
    /// A download of local media `m` (below 10) or remote media `m - 10`.
    Access {
        m: u8,
    },
    /// Remote media `m` (model key `10 + m`) is cached with bytes `h`; bytes already stored
    /// are recorded at their blob (as the writer does), new ones in `DSS[d]`.
    Remote {
        m: u8,
        h: u8,
        d: u8,
        loc: u8,
    },
    Create {
        m: u8,
    },
    /// A transfer from `DSS[src]` to the other datastore.
    Start {
        src: u8,
    },
    /// The `h`-th hash in the source of the `t`-th unfinished task moves to its target.
    Move {
        t: usize,
        h: usize,
        loc: u8,
    },
    /// The `p`-th pending deletion of the `t`-th unfinished task is done.
    Delete {
        t: usize,
        p: usize,
    },
    /// An attempt of the `t`-th unfinished task on hash `h` fails.
    Fail {
        t: usize,
        h: u8,
        last: bool,
    },
    /// The `t`-th unfinished task ends.
    Finish {
        t: usize,
        err: bool,
    },
    /// A thumbnail of media `m` at `THUMB_SIZES[size]` with bytes `h` (hashes 0..5 are also
    /// upload bytes, 5..8 only ever thumbnails' or remote media's), new bytes stored in `DSS[d]`.
    Thumb {
        m: u8,
        size: u8,
        h: u8,
        d: u8,
        loc: u8,
    },
}

const THUMB_SIZES: [ThumbSize; 4] = [
    CROP_32,
    CROP_96,
    SCALE_320,
    (320, 240, media_ledger_events::ThumbnailMethod::Scale, true),
];

/// Every hash any op uses.
const HASHES: std::ops::Range<u8> = 0..8;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..10, 0u8..5, 0u8..2, 0u8..3).prop_map(|(m, h, d, loc)| Op::Upload { m, h, d, loc }),
        3 => (0u8..15).prop_map(|m| Op::Access { m }),
        2 => (0u8..5, 0u8..8, 0u8..2, 0u8..3).prop_map(|(m, h, d, loc)| Op::Remote { m, h, d, loc }),
        1 => (0u8..10).prop_map(|m| Op::Create { m }),
        1 => (0u8..2).prop_map(|src| Op::Start { src }),
        2 => (any::<usize>(), any::<usize>(), 0u8..3).prop_map(|(t, h, loc)| Op::Move { t, h, loc }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(t, p)| Op::Delete { t, p }),
        1 => (any::<usize>(), 0u8..5, any::<bool>()).prop_map(|(t, h, last)| Op::Fail { t, h, last }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(t, err)| Op::Finish { t, err }),
        3 => (0u8..10, 0u8..4, 0u8..8, 0u8..2, 0u8..3)
            .prop_map(|(m, size, h, d, loc)| Op::Thumb { m, size, h, d, loc }),
    ]
}

/// Model media key → media: `m<k>` of our origin below 10, `r<k - 10>` of a remote above.
fn media_of(m: u8) -> media_ledger_events::MediaRef {
    if m < 10 {
        media(&format!("m{m}"))
    } else {
        media_on(common::REMOTE, &format!("r{}", m - 10))
    }
}

fn size_of_hash(h: u8) -> u64 {
    10 + u64::from(h) * 100
}

#[derive(Debug)]
struct TaskModel {
    record: TaskRecord,
    src: u8,
    /// hash → where its old copy is.
    deletions: BTreeMap<u8, (u8, BlobLocation)>,
}

#[derive(Default)]
struct Model {
    /// media → (hash, datastore, location, created, last access)
    media: BTreeMap<u8, (u8, u8, BlobLocation, u64, u64)>,
    /// hash → (datastore, location, last access, created seq)
    hashes: BTreeMap<u8, (u8, BlobLocation, u64, u64)>,
    /// hash → its media, in upload order
    by_hash: BTreeMap<u8, Vec<u8>>,
    /// media → (created, expires)
    pending: BTreeMap<u8, (u64, u64)>,
    /// task seq → task
    tasks: BTreeMap<u64, TaskModel>,
    /// (media, size index) → (hash, datastore, created)
    thumbs: BTreeMap<(u8, u8), (u8, u8, u64)>,
}

impl Model {
    /// The sequence of the `t`-th unfinished task (modulo their number).
    fn unfinished(&self, t: usize) -> Option<u64> {
        let open: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, task)| !task.record.is_finished())
            .map(|(&seq, _)| seq)
            .collect();
        open.get(t % open.len().max(1)).copied()
    }
}

const DSS: [&str; 2] = ["A", "B"];

fn ds_name(d: u8) -> &'static str {
    DSS[usize::from(d)]
}

/// Turns random ops into a log the writer could have written (invalid ops are skipped),
/// and the model's expectation of it. Duplicate bytes may be logged in either datastore (the
/// projections take the event's word for it); a move starts where `hash_refs` has the blob,
/// and with two datastores that takes every row of the hash to the target.
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
                let l: BlobLocation = format!("{}/{h}/{loc}", ds_name(d)).parse().unwrap();
                let id = format!("m{m}");
                log.push(upload_at(
                    seq,
                    time,
                    &id,
                    h,
                    size_of_hash(h),
                    ds_name(d),
                    l.clone(),
                ));
                model.media.insert(m, (h, d, l.clone(), time, time));
                model.by_hash.entry(h).or_default().push(m);
                let e = model.hashes.entry(h).or_insert((d, l, time, seq));
                e.2 = e.2.max(time);
                model.pending.remove(&m);
            }
            Op::Access { m } => {
                let Some(rec) = model.media.get_mut(&m) else {
                    continue;
                };
                log.push(access_of(seq, time, media_of(m), rec.0));
                rec.4 = rec.4.max(time);
                let hr = model.hashes.get_mut(&rec.0).unwrap();
                hr.2 = hr.2.max(time);
            }
            Op::Remote { m, h, d, loc } => {
                let m = 10 + m;
                if model.media.contains_key(&m) {
                    continue;
                }
                let (d, l) = match model.hashes.get(&h) {
                    Some((hd, hl, ..)) => (*hd, hl.clone()),
                    None => (d, format!("{}/r{h}/{loc}", ds_name(d)).parse().unwrap()),
                };
                log.push(remote_at(
                    seq,
                    time,
                    &format!("r{}", m - 10),
                    h,
                    size_of_hash(h),
                    ds_name(d),
                    l.clone(),
                ));
                model.media.insert(m, (h, d, l.clone(), time, time));
                model.by_hash.entry(h).or_default().push(m);
                let e = model.hashes.entry(h).or_insert((d, l, time, seq));
                e.2 = e.2.max(time);
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
            Op::Start { src } => {
                let selected: Vec<u8> = model
                    .hashes
                    .iter()
                    .filter(|(_, v)| v.0 == src)
                    .map(|(&h, _)| h)
                    .collect();
                let blobs = selected.len() as u64;
                let bytes = selected.iter().map(|&h| size_of_hash(h)).sum();
                log.push(start_transfer(
                    seq,
                    time,
                    ds_name(src),
                    ds_name(1 - src),
                    blobs,
                    bytes,
                ));
                model.tasks.insert(
                    seq,
                    TaskModel {
                        record: TaskRecord {
                            source: ds(ds_name(src)),
                            target: ds(ds_name(1 - src)),
                            before_ts_ms: None,
                            started_at_ms: time,
                            ended_at_ms: None,
                            blobs_total: blobs,
                            bytes_total: bytes,
                            blobs_done: 0,
                            bytes_done: 0,
                            attempts_failed: 0,
                            blobs_failed: 0,
                            last_error: None,
                            error_message: None,
                        },
                        src,
                        deletions: BTreeMap::new(),
                    },
                );
            }
            Op::Move { t, h, loc } => {
                let Some(task) = model.unfinished(t) else {
                    continue;
                };
                let src = model.tasks[&task].src;
                let in_source: Vec<u8> = model
                    .hashes
                    .iter()
                    .filter(|(_, v)| v.0 == src)
                    .map(|(&h, _)| h)
                    .collect();
                let Some(&hash) = in_source.get(h % in_source.len().max(1)) else {
                    continue;
                };
                let to = 1 - src;
                let from_loc = model.hashes[&hash].1.clone();
                let to_loc: BlobLocation = format!("{}/{hash}/moved{loc}", ds_name(to))
                    .parse()
                    .unwrap();
                log.push(moved_at(
                    seq,
                    time,
                    task,
                    hash,
                    size_of_hash(hash),
                    ds_name(src),
                    from_loc.clone(),
                    ds_name(to),
                    to_loc.clone(),
                ));
                let hr = model.hashes.get_mut(&hash).unwrap();
                (hr.0, hr.1) = (to, to_loc.clone());
                for m in model.by_hash.get(&hash).into_iter().flatten() {
                    let rec = model.media.get_mut(m).unwrap();
                    (rec.1, rec.2) = (to, to_loc.clone());
                }
                for t in model.thumbs.values_mut().filter(|t| t.0 == hash) {
                    t.1 = to;
                }
                let tm = model.tasks.get_mut(&task).unwrap();
                tm.record.blobs_done += 1;
                tm.record.bytes_done += size_of_hash(hash);
                tm.deletions.insert(hash, (src, from_loc));
            }
            Op::Delete { t, p } => {
                let Some(task) = model.unfinished(t) else {
                    continue;
                };
                let tm = model.tasks.get_mut(&task).unwrap();
                let Some(&hash) = tm.deletions.keys().nth(p % tm.deletions.len().max(1)) else {
                    continue;
                };
                let (d, loc) = tm.deletions.remove(&hash).unwrap();
                log.push(envelope(
                    seq,
                    time,
                    Actor::System,
                    Event::BlobSourceDeletedV1(BlobSourceDeleted {
                        task: Seq(task),
                        sha256: sha(hash),
                        datastore: ds(ds_name(d)),
                        location: loc,
                    }),
                ));
            }
            Op::Fail { t, h, last } => {
                let Some(task) = model.unfinished(t) else {
                    continue;
                };
                let tm = model.tasks.get_mut(&task).unwrap();
                let error = format!("failure at {seq}");
                let attempt = u32::try_from(tm.record.attempts_failed + 1).unwrap();
                log.push(transfer_failed(seq, time, task, h, attempt, last, &error));
                tm.record.attempts_failed += 1;
                tm.record.blobs_failed += u64::from(last);
                tm.record.last_error = Some(error);
            }
            Op::Finish { t, err } => {
                let Some(task) = model.unfinished(t) else {
                    continue;
                };
                let tm = model.tasks.get_mut(&task).unwrap();
                let message = err.then(|| format!("{} blobs failed", tm.record.blobs_failed));
                log.push(transfer_finished(seq, time, task, message.as_deref()));
                tm.record.ended_at_ms = Some(time);
                tm.record.error_message = message;
            }
            Op::Thumb { m, size, h, d, loc } => {
                // The writer: refused for a media not uploaded (UnknownMedia) or a thumbnail
                // already recorded (ThumbnailExists); bytes already stored go where they are.
                if !model.media.contains_key(&m) || model.thumbs.contains_key(&(m, size)) {
                    continue;
                }
                let (d, l) = match model.hashes.get(&h) {
                    Some((hd, hl, ..)) => (*hd, hl.clone()),
                    None => (d, format!("{}/t{h}/{loc}", ds_name(d)).parse().unwrap()),
                };
                log.push(thumbnail_at(
                    seq,
                    time,
                    &format!("m{m}"),
                    THUMB_SIZES[usize::from(size)],
                    h,
                    size_of_hash(h),
                    ds_name(d),
                    l.clone(),
                ));
                model.hashes.entry(h).or_insert((d, l, time, seq));
                model.thumbs.insert((m, size), (h, d, time));
            }
        }
    }
    (log, model)
}

fn check_against_model(s: &MemoryState, model: &Model) {
    let mi = space(s, "media_index");
    let records =
        mi.0.keys()
            .filter(|k| media_index::is_record_key(k))
            .count();
    assert_eq!(records, model.media.len());
    for (m, (h, d, loc, created, last)) in &model.media {
        let r = media_index::get(mi, &media_of(*m)).unwrap().unwrap();
        let kind = if *m < 10 {
            media_index::MediaKind::Local
        } else {
            media_index::MediaKind::Remote
        };
        assert_eq!(r.kind, kind);
        assert_eq!(
            r.uploader == Actor::System,
            *m >= 10,
            "remote media have no uploader"
        );
        assert_eq!(r.sha256, sha(*h));
        assert_eq!(r.size_bytes, size_of_hash(*h));
        assert_eq!(r.datastore, ds(ds_name(*d)));
        let _ = loc; // the location lives in hash_refs only
        assert_eq!((r.created_at_ms, r.last_access_ms), (*created, *last));
    }
    // The hash → media index: one head key per hash and one link per media, listing its
    // media in upload order.
    let tagged = |tag: u8| mi.0.keys().filter(|k| k.first() == Some(&tag)).count();
    assert_eq!(tagged(media_index::SHA_INDEX_TAG), model.by_hash.len());
    assert_eq!(tagged(media_index::SHA_LINK_TAG), records);
    assert_eq!(mi.0.len(), records * 2 + model.by_hash.len());
    for h in HASHES {
        let want: Vec<_> = model
            .by_hash
            .get(&h)
            .map(|ms| ms.iter().map(|&m| media_of(m)).collect())
            .unwrap_or_default();
        assert_eq!(media_index::media_with_hash(mi, &sha(h)).unwrap(), want);
    }

    let hr = space(s, "hash_refs");
    for (h, (d, loc, last, created)) in &model.hashes {
        let r = hash_refs::get(hr, &sha(*h)).unwrap().unwrap();
        let media_refs = model.media.values().filter(|v| v.0 == *h).count() as u64;
        let thumb_refs = model.thumbs.values().filter(|v| v.0 == *h).count() as u64;
        let refs = media_refs + thumb_refs;
        assert_eq!(r.ref_count, refs);
        assert_eq!(r.datastore, ds(ds_name(*d)));
        assert_eq!(&r.location, loc);
        assert_eq!(r.size_bytes, size_of_hash(*h));
        assert_eq!(r.last_access_ms, *last);
        assert_eq!(r.created_seq, Seq(*created));
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(&sha(*h).0);
        let keys = hr.0.keys().filter(|k| k.starts_with(&prefix)).count() as u64;
        assert_eq!(keys, media_refs, "one media referrer key per media");
        prefix[0] = b't';
        let keys = hr.0.keys().filter(|k| k.starts_with(&prefix)).count() as u64;
        assert_eq!(keys, thumb_refs, "one thumbnail referrer key per thumbnail");
    }
    // Nothing else: hash records, media and thumbnail referrers only.
    let all_refs: usize = model.media.len() + model.thumbs.len();
    assert_eq!(hr.0.len(), model.hashes.len() + all_refs);
    for h in HASHES {
        if !model.hashes.contains_key(&h) {
            assert_eq!(hash_refs::get(hr, &sha(h)).unwrap(), None);
        }
    }

    // Per datastore, the counting rule over the media rows where the model has them now.
    let dsz = space(s, "datastore_sizes");
    for (i, name) in DSS.iter().enumerate() {
        let mut est = SizeEstimator::default();
        for (h, d, ..) in model.media.values() {
            if usize::from(*d) == i {
                est.add_media(sha(*h), size_of_hash(*h));
            }
        }
        for (h, d, _) in model.thumbs.values() {
            if usize::from(*d) == i {
                est.add_thumbnail(sha(*h), size_of_hash(*h));
            }
        }
        assert_eq!(
            datastore_sizes::totals(dsz, &ds(name)).unwrap(),
            est.finish(),
            "datastore {name}"
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

    let ts = space(s, "tasks");
    let mut keys = 0;
    for (&seq, tm) in &model.tasks {
        assert_eq!(tasks::get(ts, Seq(seq)).unwrap().as_ref(), Some(&tm.record));
        let prefix = tasks::deletion_prefix(Seq(seq));
        let got: Vec<_> =
            ts.0.iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| tasks::decode_deletion_entry(k, v).unwrap().unwrap())
                .collect();
        let want: Vec<_> = tm
            .deletions
            .iter()
            .map(|(h, (d, loc))| {
                let pd = PendingDeletion {
                    datastore: ds(ds_name(*d)),
                    location: loc.clone(),
                };
                (sha(*h), pd)
            })
            .collect();
        assert_eq!(got, want, "pending deletions of task {seq}");
        keys += 1 + want.len();
    }
    assert_eq!(ts.0.len(), keys, "no other keys in tasks");

    let th = space(s, "thumbnails");
    assert_eq!(th.0.len(), model.thumbs.len(), "one key per thumbnail");
    for m in 0u8..10 {
        for (i, &(w, ht, method, animated)) in THUMB_SIZES.iter().enumerate() {
            let got =
                thumbnails::get(th, &media(&format!("m{m}")), w, ht, method, animated).unwrap();
            let size = u8::try_from(i).unwrap();
            match model.thumbs.get(&(m, size)) {
                Some(&(h, _, created)) => {
                    let r = got.unwrap();
                    assert_eq!(r.sha256, sha(h));
                    assert_eq!(r.size_bytes, size_of_hash(h));
                    assert_eq!(r.created_at_ms, created);
                }
                None => assert_eq!(got, None),
            }
        }
    }
}

#[test]
fn the_fixed_log_matches_hand_computed_figures() {
    let s = fold(&fixed_log());
    // h1 (100 bytes, m1 m2 in A, m4 in B) moved A → B by task 10; h3 (7 bytes, p1 in B)
    // moved back B → A by task 17; h2 (50 bytes, m3) failed and stayed in A.
    let a = datastore_sizes::totals(space(&s, "datastore_sizes"), &ds("A")).unwrap();
    let b = datastore_sizes::totals(space(&s, "datastore_sizes"), &ds("B")).unwrap();
    assert_eq!(
        (a.media_affected, a.media_hashes_affected, a.media_bytes),
        (2, 2, 57)
    );
    assert_eq!(
        (b.media_affected, b.media_hashes_affected, b.media_bytes),
        (3, 1, 100)
    );
    let t10 = tasks::get(space(&s, "tasks"), Seq(10)).unwrap().unwrap();
    assert_eq!(
        (
            t10.blobs_done,
            t10.attempts_failed,
            t10.blobs_failed,
            t10.ended_at_ms
        ),
        (1, 2, 1, Some(3_700))
    );
    let t17 = tasks::get(space(&s, "tasks"), Seq(17)).unwrap().unwrap();
    assert_eq!(
        (t17.blobs_done, t17.bytes_done, t17.ended_at_ms),
        (1, 7, Some(4_400))
    );
    // Thumbnails: h2 (50 bytes, also m3's) and h4 (5 bytes, twice) all end in A; h4 brings
    // one hash and 5 bytes to A's totals, h2 none (m3 counts it already).
    assert_eq!(
        (
            a.thumbnails_affected,
            a.thumbnail_hashes_affected,
            a.thumbnail_bytes,
            a.total_hashes_affected,
            a.total_bytes
        ),
        (3, 2, 55, 3, 62)
    );
    assert_eq!(
        (
            b.thumbnails_affected,
            b.thumbnail_hashes_affected,
            b.thumbnail_bytes,
            b.total_hashes_affected,
            b.total_bytes
        ),
        (0, 0, 0, 1, 100)
    );
    let hr = space(&s, "hash_refs");
    let h4 = hash_refs::get(hr, &sha(4)).unwrap().unwrap();
    assert_eq!(
        (
            h4.datastore,
            h4.ref_count,
            h4.created_seq,
            h4.last_access_ms
        ),
        (ds("A"), 2, Seq(19), 4_100)
    );
    assert_eq!(hash_refs::get(hr, &sha(2)).unwrap().unwrap().ref_count, 2);
    let th = space(&s, "thumbnails");
    assert_eq!(th.0.len(), 3);
    let (w, h, m, an) = CROP_32;
    let t = thumbnails::get(th, &media("p1"), w, h, m, an)
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.sha256, t.size_bytes, t.created_at_ms),
        (sha(4), 5, 4_300)
    );
}

proptest! {
    #[test]
    fn random_valid_logs_match_the_model_and_replay_deterministically(
        ops in proptest::collection::vec((op(), 0u64..500), 0..80),
        split in any::<proptest::sample::Index>(),
    ) {
        let (log, model) = valid_log(&ops);
        let full = fold(&log);
        check_against_model(&full, &model);

        prop_assert_eq!(&fold(&log), &full);

        let k = split.index(log.len() + 1);
        let mut resumed = fold(&log[..k]);
        for e in &log[k..] {
            resumed.apply(e).unwrap();
        }
        prop_assert_eq!(&resumed, &full);
    }
}

/// The generator of the property above does produce transfers with every kind of progress.
#[test]
fn random_logs_contain_transfers() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    let strategy = proptest::collection::vec((op(), 0u64..500), 0..80);
    let mut seen = BTreeMap::<&str, usize>::new();
    for _ in 0..100 {
        let (log, _) = valid_log(&strategy.new_tree(&mut runner).unwrap().current());
        for e in &log {
            *seen.entry(e.event.type_name()).or_default() += 1;
        }
    }
    for name in [
        "media.uploaded.v1",
        "media.accessed.v1",
        "media.async_created.v1",
        "transfer.started.v1",
        "blob.moved.v1",
        "blob.source_deleted.v1",
        "blob.transfer_failed.v1",
        "transfer.finished.v1",
        "thumbnail.generated.v1",
        "media.remote_cached.v1",
    ] {
        assert!(
            seen.get(name).copied().unwrap_or(0) >= 20,
            "{name}: {seen:?}"
        );
    }
}
