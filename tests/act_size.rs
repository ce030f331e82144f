#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Moderation acts whose events would outgrow the decoder: a quarantine of a remote server
//! with long names and tens of thousands of media (every same-hash sibling is listed), and a
//! remote purge of thousands of media with five thumbnails each (every thumbnail is listed).
//! Before the writer budgeted acts by encoded size, both wrote a record the decoder refused
//! ("decode: LimitExceeded") and the ledger could no longer be opened. Now each act is cut at
//! the writer's budget and recorded as several events, every record stays under the record
//! limit, the log verifies, the server restarts, and the audit API reads every act.
//!
//! The media are recorded straight through the ledger (as the remote cache records them after
//! a fetch): what is under test is the act, not tens of thousands of federation fetches.

use crate::common;
use media_ledger_projections::names;

use common::{TestServer, ADMIN, DS};
use media_ledger::ledger::{Command, Ledger};
use media_ledger_events::codec::{self, MAX_RECORD_BYTES};
use media_ledger_events::{
    ContentType, DatastoreId, Event, MediaRef, RemoteMediaCached, Seq, Sha256, ThumbnailGenerated,
    ThumbnailMethod,
};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;

const API: &str = "/_matrix/media/unstable/admin";

/// A 255-character server name (four labels of 63 characters).
fn long_server(tag: char) -> String {
    let label = |c: char| std::iter::repeat_n(c, 63).collect::<String>();
    format!(
        "{}.{}.{}.{}",
        label(tag),
        label('b'),
        label('c'),
        label('d')
    )
}

/// A 255-character media id ending in `n`.
fn long_id(n: usize) -> String {
    let tail = format!("{n:08}");
    format!("{}{tail}", "m".repeat(255 - tail.len()))
}

fn sha_of(origin: &str, n: usize) -> Sha256 {
    let hex = common::sha256_hex(format!("{origin}/{n}").as_bytes());
    hex.parse().unwrap()
}

/// Submits every command (as the system), at most 2 048 at once, each must be recorded.
async fn submit_all(ledger: &Arc<Ledger>, commands: impl IntoIterator<Item = Command>) {
    let mut pending = tokio::task::JoinSet::new();
    for cmd in commands {
        let ledger = ledger.clone();
        pending.spawn(async move {
            ledger
                .submit(
                    media_ledger_events::Actor::System,
                    media_ledger_events::RequestId("seed".into()),
                    cmd,
                )
                .await
                .unwrap();
        });
        if pending.len() >= 2048 {
            pending.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap();
    }
}

/// Records `count` remote media of `origin` (distinct bytes).
async fn cache_remote(ledger: &Arc<Ledger>, origin: &str, count: usize) -> Vec<MediaRef> {
    let ds: DatastoreId = DS.parse().unwrap();
    let media: Vec<MediaRef> = (0..count)
        .map(|n| format!("mxc://{origin}/{}", long_id(n)).parse().unwrap())
        .collect();
    let commands = media.iter().enumerate().map(|(n, m)| {
        let sha = sha_of(origin, n);
        Command::CacheRemote(RemoteMediaCached {
            media: m.clone(),
            sha256: sha,
            size_bytes: 10,
            content_type: Some("image/png".parse::<ContentType>().unwrap()),
            upload_name: None,
            fetched_from: format!("https://{origin}"),
            datastore: ds.clone(),
            location: media_ledger::datastore::content_location(&sha).unwrap(),
        })
    });
    submit_all(ledger, commands.collect::<Vec<_>>()).await;
    media
}

/// Records `per_media` thumbnails of each media.
async fn thumbnails(ledger: &Arc<Ledger>, media: &[MediaRef], per_media: u32) {
    let ds: DatastoreId = DS.parse().unwrap();
    let commands = media.iter().enumerate().flat_map(|(i, m)| {
        let ds = ds.clone();
        (0..per_media).map(move |t| {
            let sha = sha_of("thumb", i * 16 + t as usize);
            Command::RecordThumbnail(ThumbnailGenerated {
                media: m.clone(),
                width: 32 * (t + 1),
                height: 32 * (t + 1),
                method: ThumbnailMethod::Scale,
                animated: false,
                sha256: sha,
                size_bytes: 5,
                content_type: "image/png".parse().unwrap(),
                datastore: ds.clone(),
                location: media_ledger::datastore::content_location(&sha).unwrap(),
            })
        })
    });
    submit_all(ledger, commands.collect::<Vec<_>>()).await;
}

/// Every record after `from`: its size and, for moderation acts, (type, media count).
fn acts_after(db: &std::path::Path, from: Seq) -> Vec<(&'static str, usize)> {
    let mut acts = Vec::new();
    Ledger::events_at(db, Seq(from.0 + 1), Seq(u64::MAX), |env| {
        match &env.event {
            Event::MediaQuarantinedV1(e) => acts.push(("quarantine", e.media.len())),
            Event::MediaPurgedV1(e) => acts.push(("purge", e.media.len())),
            _ => {}
        }
        true
    })
    .unwrap();
    acts
}

/// Stops the server, checks every record's size and that the log verifies, starts it again.
async fn assert_log_readable(srv: &mut TestServer) {
    srv.stop().await;
    let db = srv.db_path();
    let (head, divergence) = Ledger::verify_path(&db).expect("the log verifies");
    assert!(divergence.is_none(), "{divergence:?}");
    // The stored bytes of a record are its encoding (the chain value aside): re-encoded, each
    // one is under the record limit.
    let mut records = 0;
    Ledger::events_at(&db, Seq(1), head.seq, |env| {
        let (record, _) = codec::encode_record(&codec::GENESIS_CHAIN, &env).unwrap();
        assert!(record.len() <= MAX_RECORD_BYTES, "{} bytes", record.len());
        records += 1;
        true
    })
    .unwrap();
    assert_eq!(records, head.seq.0);
    srv.restart().await;
}

async fn audit(srv: &TestServer) -> Value {
    let resp = srv
        .client
        .get(srv.url(&format!("{API}/audit?limit=1000")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_of_a_server_with_long_names_is_split_and_the_log_stays_readable() {
    const N: usize = 33_460;
    let mut srv = TestServer::start().await;
    let origin = long_server('a');
    let ledger = srv.server().ledger.clone();
    let media = cache_remote(&ledger, &origin, N).await;
    let before = ledger.head();

    let resp = srv
        .client
        .post(srv.url(&format!("{API}/quarantine/server/{origin}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["num_quarantined"], N as u64);

    let acts = acts_after(&srv.db_path(), before);
    eprintln!("quarantine of {N} media recorded as {} acts", acts.len());
    assert!(acts.len() >= 16, "one act of 17 MB was not split: {acts:?}");
    assert!(acts.iter().all(|(kind, _)| *kind == "quarantine"));
    assert_eq!(acts.iter().map(|(_, n)| n).sum::<usize>(), N);

    drop(ledger);
    assert_log_readable(&mut srv).await;
    // Every media is quarantined (served as not found / placeholder, never its bytes): the
    // media index says so for each, read back after the restart.
    let ledger = srv.server().ledger.clone();
    for m in media.iter().step_by(997) {
        let rec = media_ledger_projections::media_index::get(
            &ledger.view(names::MEDIA_INDEX).unwrap(),
            m,
        )
        .unwrap()
        .unwrap();
        assert!(rec.quarantined, "{m} not quarantined");
    }
    drop(ledger);
    let audit = audit(&srv).await;
    assert!(audit.to_string().contains("quarantine"), "{audit}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_purge_of_media_with_thumbnails_is_split_and_the_log_stays_readable() {
    const N: usize = 5_000;
    let mut srv = TestServer::start().await;
    let origin = long_server('p');
    let ledger = srv.server().ledger.clone();
    let media = cache_remote(&ledger, &origin, N).await;
    thumbnails(&ledger, &media, 5).await;
    let before = ledger.head();

    let far = u64::MAX / 2;
    let resp = srv
        .client
        .post(srv.url(&format!("{API}/purge/remote?before_ts={far}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let acts: Vec<_> = acts_after(&srv.db_path(), before)
        .into_iter()
        .filter(|(kind, _)| *kind == "purge")
        .collect();
    eprintln!(
        "purge of {N} media × 5 thumbnails recorded as {} acts",
        acts.len()
    );
    assert!(acts.len() >= 2, "the purge was not split: {acts:?}");
    assert_eq!(acts.iter().map(|(_, n)| n).sum::<usize>(), N);

    drop(ledger);
    assert_log_readable(&mut srv).await;
    let ledger = srv.server().ledger.clone();
    for m in media.iter().step_by(499) {
        let rec = media_ledger_projections::media_index::get(
            &ledger.view(names::MEDIA_INDEX).unwrap(),
            m,
        )
        .unwrap();
        assert!(rec.is_none(), "{m} survived the purge");
    }
    drop(ledger);
    audit(&srv).await;
    srv.stop().await;
}
