#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The link preview cache: the latest preview per (homeserver, URL), which media are preview
//! images, expiry, and a purged image taking its preview with it.

mod common;

use common::{default_location, ds, envelope, media, sha, space, state_of, upload, user, ORIGIN};
use media_ledger_events::{
    Actor, Authority, Envelope, Event, FreedBlob, MediaPurged, MediaRef, ModerationTarget,
    PurgedMedia, Seq, ServerName, UrlPreviewed, UrlPreviewsExpired,
};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::url_previews::{self, ImageOf, PreviewRecord};

const NAME: &str = "url_previews";
const URL: &str = "https://example.com/a";

fn hs() -> ServerName {
    ORIGIN.parse().unwrap()
}

fn alice() -> Actor {
    Actor::User(user("@alice:example.org"))
}

fn previewed(seq: u64, time: u64, url: &str, image: Option<MediaRef>) -> Envelope {
    envelope(
        seq,
        time,
        alice(),
        Event::UrlPreviewedV1(UrlPreviewed {
            homeserver: hs(),
            url: url.into(),
            og: format!(r#"{{"og:title":"seq {seq}"}}"#),
            image,
        }),
    )
}

fn expired(seq: u64, time: u64, urls: &[&str]) -> Envelope {
    envelope(
        seq,
        time,
        Actor::SharedSecretAdmin,
        Event::UrlPreviewsExpiredV1(UrlPreviewsExpired {
            previews: urls.iter().map(|u| (hs(), (*u).to_owned())).collect(),
            before_ms: time,
        }),
    )
}

fn purged(seq: u64, time: u64, m: MediaRef, sha_n: u8, created_seq: u64) -> Envelope {
    envelope(
        seq,
        time,
        Actor::SharedSecretAdmin,
        Event::MediaPurgedV1(MediaPurged {
            authority: Authority::RepositoryAdmin,
            target: ModerationTarget::Old {
                include_local: false,
            },
            before_ts_ms: Some(time),
            media: vec![PurgedMedia {
                media: m,
                sha256: sha(sha_n),
                size_bytes: 10,
                uploader: alice(),
                remote: false,
                datastore: ds("d"),
                created_seq: Seq(created_seq),
                tombstone: false,
            }],
            thumbnails: vec![],
            freed: vec![FreedBlob {
                sha256: sha(sha_n),
                size_bytes: 10,
                datastore: ds("d"),
                location: default_location(sha_n, "d"),
            }],
            reason: None,
        }),
    )
}

fn get(state: &MemoryState, url: &str) -> Option<PreviewRecord> {
    url_previews::get(space(state, NAME), &hs(), url).unwrap()
}

fn image_of(state: &MemoryState, id: &str) -> Option<ImageOf> {
    url_previews::image_of(space(state, NAME), &media(id)).unwrap()
}

#[test]
fn a_preview_is_kept_with_its_time_actor_object_and_image() {
    let s = state_of(&[
        upload(1, 100, "img1", 1, 10, "d"),
        previewed(2, 200, URL, Some(media("img1"))),
    ]);
    assert_eq!(
        get(&s, URL),
        Some(PreviewRecord {
            seq: Seq(2),
            fetched_at_ms: 200,
            actor: alice(),
            og: r#"{"og:title":"seq 2"}"#.into(),
            image: Some(media("img1")),
        })
    );
    assert_eq!(
        image_of(&s, "img1"),
        Some(ImageOf {
            seq: Seq(2),
            homeserver: hs(),
            url: URL.into()
        })
    );
    assert_eq!(get(&s, "https://example.com/other"), None);
}

#[test]
fn a_later_preview_replaces_the_earlier_one_and_the_old_image_stays_marked() {
    let s = state_of(&[
        upload(1, 100, "img1", 1, 10, "d"),
        previewed(2, 200, URL, Some(media("img1"))),
        upload(3, 300, "img2", 2, 10, "d"),
        previewed(4, 400, URL, Some(media("img2"))),
    ]);
    let p = get(&s, URL).unwrap();
    assert_eq!((p.seq, p.image), (Seq(4), Some(media("img2"))));
    // Still a preview image (purge/old finds it unused: no preview offers it).
    assert!(image_of(&s, "img1").is_some());
}

#[test]
fn expiry_drops_the_listed_previews_only() {
    let s = state_of(&[
        previewed(1, 100, URL, None),
        previewed(2, 200, "https://example.com/b", None),
        expired(3, 300, &[URL, "https://example.com/never-previewed"]),
    ]);
    assert_eq!(get(&s, URL), None);
    assert!(get(&s, "https://example.com/b").is_some());
}

#[test]
fn a_purged_image_takes_its_preview_and_its_mark_with_it() {
    let s = state_of(&[
        upload(1, 100, "img1", 1, 10, "d"),
        previewed(2, 200, URL, Some(media("img1"))),
        purged(3, 300, media("img1"), 1, 1),
    ]);
    assert_eq!(get(&s, URL), None);
    assert_eq!(image_of(&s, "img1"), None);
}

#[test]
fn purging_an_image_no_longer_offered_keeps_the_newer_preview() {
    let s = state_of(&[
        upload(1, 100, "img1", 1, 10, "d"),
        previewed(2, 200, URL, Some(media("img1"))),
        upload(3, 300, "img2", 2, 10, "d"),
        previewed(4, 400, URL, Some(media("img2"))),
        purged(5, 500, media("img1"), 1, 1),
    ]);
    assert_eq!(get(&s, URL).unwrap().image, Some(media("img2")));
    assert_eq!(image_of(&s, "img1"), None);
    assert!(image_of(&s, "img2").is_some());
}

#[test]
fn keys_round_trip_and_stay_apart_from_image_keys() {
    let k = url_previews::preview_key(&hs(), "https://x.example/a?b=c");
    assert_eq!(
        url_previews::parse_preview_key(&k),
        Some((hs(), "https://x.example/a?b=c".to_owned()))
    );
    assert!(k.starts_with(url_previews::PREVIEW_PREFIX));
    assert!(url_previews::image_key(&media("m")).starts_with(url_previews::IMAGE_PREFIX));
    assert_eq!(
        url_previews::parse_preview_key(&url_previews::image_key(&media("m"))),
        None
    );
}
