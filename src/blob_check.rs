//! `verify --blobs`: does every live media's and thumbnail's blob exist where its records say?
//!
//! The log and projections can be perfectly consistent while bytes are gone (deleted by hand,
//! a lost disk, or a bug deleting the wrong copy), so this asks the datastores: for each
//! distinct SHA-256 used by a live media (not a tombstone) or a thumbnail, the hash record's
//! datastore and location, a stat (file) or HEAD (S3) of the blob, and its length.

use crate::config::Config;
use crate::datastore::Datastores;
use crate::ledger::{Ledger, LedgerError};
use crate::media::read::{locate, LocateError, Located};
use futures_util::StreamExt;
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use media_ledger_projections::names;
use media_ledger_projections::{media_index, parse_media_key, thumbnails};
use std::collections::BTreeMap;
use std::fmt;

/// How many referrers a missing blob lists (the count is always complete).
const SHOWN_USERS: usize = 3;
/// Blobs checked at once (HEAD requests to S3 are worth overlapping).
const PARALLEL: usize = 16;

/// What `verify --blobs` found.
#[derive(Debug, Default)]
pub struct BlobReport {
    /// Live media records looked at.
    pub media: u64,
    /// Thumbnail records looked at.
    pub thumbnails: u64,
    /// Distinct blobs checked.
    pub blobs: u64,
    /// The blobs that are not where their records say, by hash.
    pub missing: Vec<MissingBlob>,
}

/// One blob that is not where its records say.
#[derive(Debug)]
pub struct MissingBlob {
    /// Its hash.
    pub sha256: Sha256,
    /// The datastore its hash record names (`None`: no hash record).
    pub datastore: Option<DatastoreId>,
    /// Where in it.
    pub location: Option<BlobLocation>,
    /// What is wrong.
    pub problem: String,
    /// How many media and thumbnails use it.
    pub used_by: u64,
    /// The first few of them (`mxc://…`, `thumbnail WxH of mxc://…`).
    pub examples: Vec<String>,
}

#[derive(Default)]
struct Users {
    count: u64,
    examples: Vec<String>,
}

impl Users {
    fn add(&mut self, who: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < SHOWN_USERS {
            self.examples.push(who());
        }
    }
}

/// Checks every blob used by a live media or a thumbnail against `datastores`.
pub async fn check_blobs(
    ledger: &Ledger,
    datastores: &Datastores,
) -> Result<BlobReport, LedgerError> {
    let mut report = BlobReport::default();
    let mut used: BTreeMap<Sha256, Users> = BTreeMap::new();
    ledger.scan(names::MEDIA_INDEX, b"", |k, v| {
        if !media_index::is_record_key(k) {
            return Ok(());
        }
        let r = media_index::decode_record(v)?;
        if !r.tombstone {
            report.media += 1;
            used.entry(r.sha256).or_default().add(|| name_of(k));
        }
        Ok(())
    })?;
    ledger.scan(names::THUMBNAILS, b"", |k, v| {
        let t = thumbnails::decode_record(v)?;
        report.thumbnails += 1;
        used.entry(t.sha256).or_default().add(|| {
            let media = k
                .get(..k.len().saturating_sub(11))
                .map_or_else(String::new, name_of);
            match thumbnails::parse_thumb_key(k) {
                Some((w, h, _, _)) => format!("thumbnail {w}x{h} of {media}"),
                None => format!("a thumbnail of {media}"),
            }
        });
        Ok(())
    })?;
    report.blobs = used.len() as u64;
    let view = ledger.view(names::HASH_REFS)?;
    let mut checks = Vec::with_capacity(used.len());
    for (sha, users) in used {
        let located = match locate(&view, datastores, &sha) {
            Err(LocateError::Read(e)) => return Err(e.into()),
            other => other,
        };
        checks.push((sha, located, users));
    }
    report.missing = futures_util::stream::iter(checks)
        .map(|(sha, located, users)| async move {
            let (problem, record) = match located {
                Ok(Located { record: h, store }) => {
                    let problem = match store.size_of(&h.location).await {
                        Ok(Some(n)) if n == h.size_bytes => None,
                        Ok(Some(n)) => Some(format!("{n} bytes, recorded {}", h.size_bytes)),
                        Ok(None) => Some("missing".to_owned()),
                        Err(e) => Some(format!("cannot check: {e}")),
                    };
                    (problem, Some(h))
                }
                Err(LocateError::NotConfigured(h)) => (
                    Some(format!("datastore {} is not configured", h.datastore)),
                    Some(h),
                ),
                Err(_) => (Some("no hash record".to_owned()), None),
            };
            problem.map(|problem| MissingBlob {
                sha256: sha,
                datastore: record.as_ref().map(|h| h.datastore.clone()),
                location: record.map(|h| h.location),
                problem,
                used_by: users.count,
                examples: users.examples,
            })
        })
        .buffered(PARALLEL)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    Ok(report)
}

fn name_of(media_key: &[u8]) -> String {
    parse_media_key(media_key).map_or_else(|| "an unparsable media key".into(), |m| m.to_string())
}

/// [`check_blobs`] for the CLI: opens the ledger read-only (beside a running server) and the
/// configured datastores.
pub fn check_config(config: &Config) -> anyhow::Result<BlobReport> {
    let ledger = Ledger::open_read_only(&config.database.path)?;
    let datastores = Datastores::from_config(&config.datastores)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(check_blobs(&ledger, &datastores))?)
}

impl fmt::Display for BlobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.missing {
            write!(f, "MISSING blob {}: {}", m.sha256, m.problem)?;
            if let (Some(ds), Some(loc)) = (&m.datastore, &m.location) {
                write!(f, " (datastore {ds}, location {loc})")?;
            }
            writeln!(f, "; used by {}: {}", m.used_by, m.examples.join(", "))?;
        }
        let verdict = if self.missing.is_empty() {
            "ok"
        } else {
            "FAIL"
        };
        writeln!(
            f,
            "{verdict}: {} of {} blobs missing or wrong ({} live media, {} thumbnails)",
            self.missing.len(),
            self.blobs,
            self.media,
            self.thumbnails
        )
    }
}
