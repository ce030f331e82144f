//! Migration from another media store (`media-ledger import …`): rows read from the source
//! ([`synapse`]) become media here with their ids, origins, uploaders, names, types and
//! times (`media.migrated.v1`), their thumbnails (`thumbnail.generated.v1`), their quarantine
//! (an act by the source's `quarantined_by`) and their protection (pinned).
//!
//! Each file is read once: spooled into the target datastore while hashed (or, with `link`,
//! hashed and hard-linked), checked against the row's length and SHA-256, and only then placed
//! under its blob lock and recorded (`blob_place::place_and_record`, invariant 6). A row whose
//! file is missing or disagrees is reported and skipped, never recorded. Every step is
//! idempotent against the ledger (an id already recorded is not imported again; a thumbnail,
//! quarantine or pin already there is not recorded again), so an import killed at any point
//! and run again completes what it left, and never records a media twice.

pub mod archive;
pub mod cli;
pub mod db;
pub mod mmr;
pub mod synapse;

use crate::blob_place::place_and_record;
use crate::config::DatastoreKind;
use crate::datastore::{Datastore, Datastores};
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use crate::moderation::{Act, Moderation};
use anyhow::Context;
use futures_util::StreamExt;
use media_ledger_events::{
    Actor, Authority, ContentType, DatastoreId, MediaMigrated, MediaPurpose, MediaRef,
    ModerationTarget, RequestId, Seq, Sha256, ThumbnailGenerated, ThumbnailMethod, UserId,
};
use media_ledger_projections::{media_index, names, thumbnails};
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// One thumbnail of a source row.
#[derive(Debug, Clone)]
pub struct ThumbRow {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Crop or scale.
    pub method: ThumbnailMethod,
    /// Its type.
    pub content_type: String,
    /// The length the source recorded.
    pub length: Option<i64>,
    /// Its file, if the row names one.
    pub path: Option<PathBuf>,
    /// Or its object in a datastore of ours (a source's S3 bucket configured here).
    pub object: Option<Object>,
}

/// A blob of the source read through a datastore of ours (an S3 bucket of matrix-media-repo,
/// configured in media-ledger's config, read-only).
#[derive(Debug, Clone)]
pub struct Object {
    /// The datastore of ours that reaches it.
    pub datastore: DatastoreId,
    /// Its name there.
    pub location: media_ledger_events::BlobLocation,
}

/// Where a blob of the source is read from.
#[derive(Clone, Copy)]
enum Src<'a> {
    File(&'a Path),
    Object(&'a Object),
}

impl std::fmt::Display for Src<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Src::File(p) => write!(f, "{}", p.display()),
            Src::Object(o) => write!(f, "{} in datastore {}", o.location, o.datastore),
        }
    }
}

fn src<'a>(path: Option<&'a Path>, object: Option<&'a Object>) -> Option<Src<'a>> {
    path.map(Src::File).or(object.map(Src::Object))
}

/// One media of the source.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its id and origin.
    pub media: MediaRef,
    /// Its file, if the row names one.
    pub path: Option<PathBuf>,
    /// Or its object in a datastore of ours.
    pub object: Option<Object>,
    /// The length the source recorded.
    pub length: Option<i64>,
    /// The SHA-256 the source recorded (hex), if any.
    pub sha256_hex: Option<String>,
    /// As recorded.
    pub content_type: Option<String>,
    /// As recorded.
    pub upload_name: Option<String>,
    /// As recorded (local media).
    pub uploader: Option<UserId>,
    /// Cached remote media.
    pub remote: bool,
    /// When the source stored it.
    pub created_at_ms: u64,
    /// When the source last served it.
    pub last_access_ms: u64,
    /// Who quarantined it there.
    pub quarantined_by: Option<String>,
    /// Protected from quarantine there.
    pub pinned: bool,
    /// Where the row came from.
    pub source: String,
    /// Its thumbnails.
    pub thumbnails: Vec<ThumbRow>,
}

/// What a source holds: the rows, and those that cannot name a media (what, why).
pub struct Source {
    /// Importable rows.
    pub rows: Vec<Row>,
    /// Rows refused as read.
    pub bad: Vec<(String, String)>,
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Put every blob into this datastore (else: the datastore new media of the kind go to).
    pub datastore: Option<DatastoreId>,
    /// Hard-link files into a `file` datastore instead of copying (same filesystem).
    pub link: bool,
    /// Read and check everything, record nothing.
    pub dry_run: bool,
    /// Rows imported at once.
    pub parallel: usize,
}

/// A row (or thumbnail) not imported, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// What (`mxc://…`, or the row as read).
    pub media: String,
    /// Why.
    pub reason: String,
}

/// The end of an import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Media recorded by this run.
    pub imported: u64,
    /// Media found recorded already (an earlier run).
    pub already_imported: u64,
    /// Thumbnails recorded by this run.
    pub thumbnails: u64,
    /// Media quarantined by this run.
    pub quarantined: u64,
    /// Media pinned by this run.
    pub pinned: u64,
    /// Bytes of the media recorded by this run.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// What was not imported.
    pub skipped: Vec<Skipped>,
}

enum Outcome {
    Imported(u64),
    Already,
}

/// The import of one source into one ledger.
pub struct Importer {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    moderation: Arc<Moderation>,
    options: Options,
}

/// Bytes spooled and hashed.
struct Spooled {
    ds: Arc<dyn Datastore>,
    path: PathBuf,
    sha: Sha256,
    size: u64,
}

impl Importer {
    /// An importer writing to `ledger` and `datastores`.
    pub fn new(
        ledger: Arc<Ledger>,
        datastores: Arc<Datastores>,
        moderation: Arc<Moderation>,
        options: Options,
    ) -> Self {
        Self {
            ledger,
            datastores,
            moderation,
            options,
        }
    }

    /// Imports every row of `source`, `parallel` at a time; a ledger failure (not a refusal of
    /// one row) stops the import.
    pub async fn run(&self, source: Source) -> Result<Report, LedgerError> {
        self.run_in(source, None).await
    }

    /// [`Self::run`] as a task of the tasks API (`import.started.v1`, then its progress every
    /// couple of seconds and at the end, `import.progress.v1`); `kind` and `what` describe
    /// the source. A dry run records no task.
    pub async fn run_task(
        &self,
        source: Source,
        kind: &str,
        what: &str,
    ) -> Result<Report, LedgerError> {
        if self.options.dry_run {
            return self.run(source).await;
        }
        let rows_total = (source.rows.len() + source.bad.len()) as u64;
        let started = self
            .ledger
            .submit(
                Actor::System,
                RequestId(format!("import-{kind}")),
                Command::StartImport(media_ledger_events::ImportStarted {
                    kind: kind.to_owned(),
                    source: what.to_owned(),
                    rows_total,
                }),
            )
            .await?;
        let task = started.seq;
        eprintln!(
            "import: task {} (media-ledger tasks --follow {})",
            task.0, task.0
        );
        let outcome = self.run_in(source, Some(task)).await;
        let (report, error) = match &outcome {
            Ok(r) => (r.clone(), None),
            Err(e) => (Report::default(), Some(e.to_string())),
        };
        self.progress(task, rows_total, &report, true, error).await;
        outcome
    }

    /// Records how far `task` got (a failure to record is logged: the import goes on).
    async fn progress(
        &self,
        task: Seq,
        done: u64,
        r: &Report,
        finished: bool,
        error: Option<String>,
    ) {
        let cmd = Command::ImportProgress(media_ledger_events::ImportProgress {
            task,
            rows_done: done,
            imported: r.imported,
            already_imported: r.already_imported,
            skipped: r.skipped.len() as u64,
            bytes: r.bytes,
            finished,
            error,
        });
        let id = RequestId(format!("import-task-{}", task.0));
        if let Err(e) = self.ledger.submit(Actor::System, id, cmd).await {
            tracing::warn!(task = task.0, error = %e, "cannot record the import's progress");
        }
    }

    async fn run_in(&self, source: Source, task: Option<Seq>) -> Result<Report, LedgerError> {
        let started = std::time::Instant::now();
        let mut report = Report {
            skipped: source
                .bad
                .into_iter()
                .map(|(media, reason)| Skipped { media, reason })
                .collect(),
            ..Report::default()
        };
        let total = source.rows.len();
        let mut done = 0usize;
        let mut last_print = std::time::Instant::now();
        let rows = &source.rows;
        // By index, not by reference: a closure taking `&Row` makes the stream's future not
        // general enough to be spawned (the server runs archive imports in the background).
        let mut results = futures_util::stream::iter(0..rows.len())
            .map(|i| async move {
                let row = &rows[i];
                (row, self.one(row).await)
            })
            .buffer_unordered(self.options.parallel.max(1));
        while let Some((row, result)) = results.next().await {
            done += 1;
            match result {
                Ok((outcome, extra)) => {
                    match outcome {
                        Outcome::Imported(bytes) => {
                            report.imported += 1;
                            report.bytes += bytes;
                        }
                        Outcome::Already => report.already_imported += 1,
                    }
                    report.thumbnails += extra.thumbnails;
                    report.skipped.extend(extra.skipped);
                }
                Err(RowError::Skip(reason)) => report.skipped.push(Skipped {
                    media: row.media.to_string(),
                    reason,
                }),
                Err(RowError::Fatal(e)) => return Err(e),
            }
            if last_print.elapsed().as_secs() >= 2 || done == total {
                last_print = std::time::Instant::now();
                if let Some(task) = task {
                    self.progress(task, done as u64, &report, false, None).await;
                }
                eprintln!(
                    "import: {done}/{total} rows ({} imported, {} already there, {} skipped)",
                    report.imported,
                    report.already_imported,
                    report.skipped.len()
                );
            }
        }
        if !self.options.dry_run {
            // Pins before quarantines (a quarantine reaches same-hash siblings, never pinned
            // ones), and both after every media is recorded (siblings exist when it does).
            for row in &source.rows {
                report.pinned += self.pin(row).await?;
            }
            for row in &source.rows {
                report.quarantined += self.quarantine(row).await?;
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn record_of(&self, media: &MediaRef) -> Result<Option<media_index::MediaRecord>, RowError> {
        let view = self
            .ledger
            .view(names::MEDIA_INDEX)
            .map_err(RowError::Fatal)?;
        media_index::get(&view, media).map_err(|e| RowError::Fatal(e.into()))
    }

    async fn one(&self, row: &Row) -> Result<(Outcome, Extra), RowError> {
        let outcome = match self.record_of(&row.media)? {
            Some(_) => Outcome::Already,
            None => {
                let path = src(row.path.as_deref(), row.object.as_ref()).ok_or_else(|| {
                    RowError::Skip("the row names no file in the media store".into())
                })?;
                let kind = if row.remote {
                    DatastoreKind::RemoteMedia
                } else {
                    DatastoreKind::LocalMedia
                };
                let spooled = self.spool(path, kind, row.length).await?;
                if let Some(want) = &row.sha256_hex {
                    if !want.eq_ignore_ascii_case(&spooled.sha.to_string()) {
                        let _ = tokio::fs::remove_file(&spooled.path).await;
                        return Err(RowError::Skip(format!(
                            "the file's SHA-256 is {}, the row says {want}",
                            spooled.sha
                        )));
                    }
                }
                if self.options.dry_run {
                    let _ = tokio::fs::remove_file(&spooled.path).await;
                    Outcome::Imported(spooled.size)
                } else {
                    self.migrate(row, spooled).await?
                }
            }
        };
        let mut extra = Extra::default();
        self.thumbnails(row, &mut extra).await?;
        Ok((outcome, extra))
    }

    /// Reads `path` once into the spool of the datastore of `kind` (or the chosen one),
    /// hashing it, and checks its length.
    async fn spool(
        &self,
        path: Src<'_>,
        kind: DatastoreKind,
        length: Option<i64>,
    ) -> Result<Spooled, RowError> {
        let ds = match &self.options.datastore {
            Some(id) => self
                .datastores
                .get(id)
                .cloned()
                .ok_or_else(|| RowError::Skip(format!("no datastore {id}")))?,
            None => crate::media::pick_datastore(&self.ledger, &self.datastores, kind)
                .map_err(|e| RowError::Skip(e.to_string()))?,
        };
        let spool = ds.spool_dir().join(format!(
            "import-{}.part",
            crate::media::new_media_id().map_err(|e| RowError::Skip(e.to_string()))?
        ));
        let result = match path {
            Src::File(p) if self.options.link => link_and_hash(p, &spool).await,
            Src::File(p) => copy_and_hash(p, &spool, ds.spool_needs_sync()).await,
            Src::Object(o) => {
                self.object_and_hash(o, length, &spool, ds.spool_needs_sync())
                    .await
            }
        };
        let (sha, size) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&spool).await;
                return Err(RowError::Skip(format!("{path}: {e}")));
            }
        };
        if let Some(want) = length {
            if u64::try_from(want).ok() != Some(size) {
                let _ = tokio::fs::remove_file(&spool).await;
                return Err(RowError::Skip(format!(
                    "{path} has {size} bytes, the row says {want}"
                )));
            }
        }
        Ok(Spooled {
            ds,
            path: spool,
            sha,
            size,
        })
    }

    /// Streams `o` (its recorded `length`, else its size there) into `to`, hashing it.
    async fn object_and_hash(
        &self,
        o: &Object,
        length: Option<i64>,
        to: &Path,
        sync: bool,
    ) -> anyhow::Result<(Sha256, u64)> {
        let store = self
            .datastores
            .get(&o.datastore)
            .with_context(|| format!("no datastore {} in the config", o.datastore))?;
        let len = match length.and_then(|l| u64::try_from(l).ok()) {
            Some(l) => l,
            None => store
                .size_of(&o.location)
                .await?
                .context("no such object")?,
        };
        let mut stream = store.open(&o.location, 0, len).await?;
        let mut spool = crate::media::Spool::create(to, u64::MAX)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        while let Some(chunk) = stream.next().await {
            spool
                .push(&chunk?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        spool.finish(sync).await.map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn migrate(&self, row: &Row, s: Spooled) -> Result<Outcome, RowError> {
        let size = s.size;
        let recorded = place_and_record(
            &self.ledger,
            &self.datastores,
            &s.ds,
            &s.path,
            &s.sha,
            Actor::System,
            request_id(&row.media),
            |placed| {
                Command::Migrate(MediaMigrated {
                    media: row.media.clone(),
                    sha256: s.sha,
                    size_bytes: size,
                    content_type: row.content_type.as_deref().and_then(ContentType::normalise),
                    upload_name: row
                        .upload_name
                        .clone()
                        .filter(|n| !n.is_empty() && !n.chars().any(char::is_control)),
                    uploader: row.uploader.clone(),
                    remote: row.remote,
                    created_at_ms: row.created_at_ms,
                    last_access_ms: row.last_access_ms.max(row.created_at_ms),
                    source: row.source.clone(),
                    datastore: placed.datastore.clone(),
                    location: placed.location.clone(),
                })
            },
        )
        .await
        .map_err(|e| RowError::Skip(e.to_string()))?;
        match recorded {
            Ok(_) => Ok(Outcome::Imported(size)),
            Err(LedgerError::Conflict(Conflict::MediaExists)) => Ok(Outcome::Already),
            Err(LedgerError::Conflict(Conflict::Quarantined)) => Err(RowError::Skip(
                "its bytes are quarantined here for its origin".into(),
            )),
            Err(e) => Err(RowError::Fatal(e)),
        }
    }

    async fn thumbnails(&self, row: &Row, extra: &mut Extra) -> Result<(), RowError> {
        for t in &row.thumbnails {
            let exists = {
                let view = self
                    .ledger
                    .view(names::THUMBNAILS)
                    .map_err(RowError::Fatal)?;
                thumbnails::get(&view, &row.media, t.width, t.height, t.method, false)
                    .map_err(|e| RowError::Fatal(e.into()))?
                    .is_some()
            };
            let what = format!(
                "{} thumbnail {}x{} {}",
                row.media,
                t.width,
                t.height,
                t.method.as_str()
            );
            let (Some(path), Some(ct), false) = (
                src(t.path.as_deref(), t.object.as_ref()),
                ContentType::normalise(&t.content_type),
                exists,
            ) else {
                continue;
            };
            let spooled = match self.spool(path, DatastoreKind::Thumbnails, t.length).await {
                Ok(s) => s,
                Err(RowError::Skip(reason)) => {
                    extra.skipped.push(Skipped {
                        media: what,
                        reason,
                    });
                    continue;
                }
                Err(fatal) => return Err(fatal),
            };
            if self.options.dry_run {
                let _ = tokio::fs::remove_file(&spooled.path).await;
                extra.thumbnails += 1;
                continue;
            }
            let recorded = place_and_record(
                &self.ledger,
                &self.datastores,
                &spooled.ds,
                &spooled.path,
                &spooled.sha,
                Actor::System,
                request_id(&row.media),
                |placed| {
                    Command::RecordThumbnail(ThumbnailGenerated {
                        media: row.media.clone(),
                        width: t.width,
                        height: t.height,
                        method: t.method,
                        animated: false,
                        sha256: spooled.sha,
                        size_bytes: spooled.size,
                        content_type: ct.clone(),
                        datastore: placed.datastore.clone(),
                        location: placed.location.clone(),
                    })
                },
            )
            .await
            .map_err(|e| RowError::Skip(e.to_string()))?;
            match recorded {
                Ok(_) => extra.thumbnails += 1,
                Err(LedgerError::Conflict(Conflict::ThumbnailExists)) => {}
                Err(LedgerError::Conflict(c)) => extra.skipped.push(Skipped {
                    media: what,
                    reason: c.to_string(),
                }),
                Err(e) => return Err(RowError::Fatal(e)),
            }
        }
        Ok(())
    }

    /// The source's protection (pinned), when the media does not have it here yet; 1 when
    /// this run pinned it.
    async fn pin(&self, row: &Row) -> Result<u64, LedgerError> {
        let Some(record) = self.record_of(&row.media).map_err(RowError::into_fatal)? else {
            return Ok(0);
        };
        if !row.pinned || record.pinned || record.tombstone {
            return Ok(0);
        }
        let act = Act {
            actor: Actor::System,
            request_id: request_id(&row.media),
            authority: Authority::Import,
            reason: Some(format!("protected in {}; imported", row.source)),
        };
        self.moderation
            .set_purpose(&act, row.media.clone(), MediaPurpose::Pinned)
            .await
            .map_err(api_fatal)?;
        Ok(1)
    }

    /// The source's quarantine (an act by its `quarantined_by`), or one because the bytes are
    /// quarantined here for the media's origin, when the media is not quarantined here yet;
    /// the number of media the act changed.
    async fn quarantine(&self, row: &Row) -> Result<u64, LedgerError> {
        let Some(record) = self.record_of(&row.media).map_err(RowError::into_fatal)? else {
            return Ok(0);
        };
        if record.quarantined || record.tombstone || record.pinned {
            return Ok(0);
        }
        let (actor, reason) = match &row.quarantined_by {
            Some(by) => (
                by.parse::<UserId>().map_or(Actor::System, Actor::User),
                format!("quarantined by {by} in {}; imported", row.source),
            ),
            None => {
                let mods = self.ledger.view(names::MODERATION)?;
                if !media_ledger_projections::moderation::blocks(&mods, &record.sha256)?
                    .blocks(&row.media.origin)
                {
                    return Ok(0);
                }
                (
                    Actor::System,
                    "imported with bytes quarantined here".to_owned(),
                )
            }
        };
        let act = Act {
            actor,
            request_id: request_id(&row.media),
            authority: Authority::Import,
            reason: Some(reason),
        };
        self.moderation
            .quarantine(
                &act,
                ModerationTarget::Media(row.media.clone()),
                vec![row.media.clone()],
            )
            .await
            .map_err(api_fatal)
    }
}

/// A moderation act refused for another reason than the ledger failing is a bug here: the
/// import stops with it.
fn api_fatal(e: crate::error::ApiError) -> LedgerError {
    LedgerError::Storage(format!("recording an imported act: {e}"))
}

impl RowError {
    fn into_fatal(self) -> LedgerError {
        match self {
            RowError::Fatal(e) => e,
            RowError::Skip(m) => LedgerError::Storage(m),
        }
    }
}

#[derive(Default)]
struct Extra {
    thumbnails: u64,
    skipped: Vec<Skipped>,
}

enum RowError {
    /// This row is not imported (reported); the import goes on.
    Skip(String),
    /// The ledger failed: the import stops.
    Fatal(LedgerError),
}

fn request_id(media: &MediaRef) -> RequestId {
    RequestId(format!("import-{}-{}", media.origin, media.media_id))
}

/// Copies `from` into `to` while hashing it (fsynced when the datastore renames spool files
/// into place).
async fn copy_and_hash(from: &Path, to: &Path, sync: bool) -> anyhow::Result<(Sha256, u64)> {
    let mut input = tokio::fs::File::open(from).await?;
    let mut spool = crate::media::Spool::create(to, u64::MAX)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        spool
            .push(buf.get(..n).unwrap_or_default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    spool.finish(sync).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Hashes `from` (read once) and hard-links it as `to`; falls back to a copy when the link is
/// refused (another filesystem).
async fn link_and_hash(from: &Path, to: &Path) -> anyhow::Result<(Sha256, u64)> {
    let (from_owned, to_owned) = (from.to_owned(), to.to_owned());
    let linked = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<(Sha256, u64)>> {
        let mut f = std::fs::File::open(&from_owned)?;
        let mut hasher = sha2::Sha256::new();
        let size = std::io::copy(&mut f, &mut hasher)?;
        match std::fs::hard_link(&from_owned, &to_owned) {
            Ok(()) => Ok(Some((Sha256(hasher.finalize().into()), size))),
            Err(_) => Ok(None),
        }
    })
    .await??;
    match linked {
        Some(done) => Ok(done),
        None => copy_and_hash(from, to, true).await,
    }
}
