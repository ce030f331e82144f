//! Helpers of the replay and recovery tests.
//!
//! - [`ops`] generates abstract steps and [`Plan::new`] resolves them against a small model of
//!   the ledger into commands that the writer accepts: uploads of random media ids whose
//!   digests come from a small pool (so deduplication happens) across two datastores, async
//!   reservations (some filled later by their owner, some left to expire) and accesses of
//!   existing media. Each step also carries the event the writer is expected to record (with
//!   the blob location of the first upload of a digest), so a plan can be submitted to a real
//!   [`Ledger`] or written as raw envelopes.
//! - [`submit_all`] submits steps to a ledger (in groups, so group commit and the writer's
//!   overlay are exercised) on a runtime of its own.
//! - [`state_of`], [`replay`] and [`snapshot`] read, recompute and render projection state.

use media_ledger::ledger::{Command, Committed, Ledger, LedgerError};
use media_ledger_events::{
    codec, Actor, AsyncUploadCreated, BlobLocation, ContentType, DatastoreId, Envelope, Event,
    MediaAccessed, MediaId, MediaRef, MediaUploaded, RequestId, Seq, ServerName, Sha256, UserId,
};
use media_ledger_projections::datastore_sizes::{self, HashCount};
use media_ledger_projections::memory::{MemoryKv, MemoryState};
use media_ledger_projections::{
    hash_refs, media_index, parse_media_key, pending_uploads, ProjectionError, ALL,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Any error of these helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Origins media are uploaded to.
pub const ORIGINS: [&str; 2] = ["localhost", "example.org:8448"];
/// Datastore ids uploads are written to.
pub const DATASTORES: [&str; 2] = ["ds-alpha", "ds-beta"];
/// Users who upload, reserve and download.
pub const USERS: [&str; 3] = ["@alice:localhost", "@bob:localhost", "@carol:example.org"];
/// How many distinct contents there are; small, so that digests repeat.
pub const SHA_POOL: usize = 5;
/// Expiry of reservations that are meant to be filled (2100-01-01).
pub const FAR_FUTURE_MS: u64 = 4_102_444_800_000;
/// Time of the first envelope of [`Plan::envelopes`] (2023-11-14).
pub const PLAN_START_MS: u64 = 1_700_000_000_000;
/// Time between two envelopes of [`Plan::envelopes`].
pub const PLAN_STEP_MS: u64 = 1_000;

/// One abstract step; [`Plan::new`] turns it into a command that is valid where it stands.
#[derive(Debug, Clone)]
pub enum Op {
    /// A plain upload of a new media id.
    Upload {
        /// Index into [`ORIGINS`].
        origin: usize,
        /// The wanted media id (made unique if taken).
        media_id: String,
        /// Index into the digest pool.
        sha: usize,
        /// Index into [`DATASTORES`] (ignored when the digest is already stored).
        datastore: usize,
        /// Index into [`USERS`].
        user: usize,
        /// Whether a content type is declared.
        content_type: bool,
        /// Whether a file name is given.
        upload_name: bool,
    },
    /// A reservation for an asynchronous upload.
    CreateAsync {
        /// Index into [`ORIGINS`].
        origin: usize,
        /// The wanted media id (made unique if taken).
        media_id: String,
        /// Index into [`USERS`].
        owner: usize,
        /// Reserve with an expiry in the past (the reservation is never filled).
        expired: bool,
    },
    /// The owner fills one of the open reservations (skipped when there is none).
    CompleteAsync {
        /// Which open reservation (modulo their number).
        pick: usize,
        /// Index into the digest pool.
        sha: usize,
        /// Index into [`DATASTORES`].
        datastore: usize,
    },
    /// A download of an existing media (skipped when there is none).
    Access {
        /// Which uploaded media (modulo their number).
        pick: usize,
        /// Who downloads it: a user, the admin or the server.
        actor: usize,
    },
}

fn media_id_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,10}"
}

/// One abstract step.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0..ORIGINS.len(),
            media_id_strategy(),
            0..SHA_POOL,
            0..DATASTORES.len(),
            0..USERS.len(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(origin, media_id, sha, datastore, user, content_type, upload_name)| {
                Op::Upload { origin, media_id, sha, datastore, user, content_type, upload_name }
            }),
        2 => (0..ORIGINS.len(), media_id_strategy(), 0..USERS.len(), proptest::bool::weighted(0.2))
            .prop_map(|(origin, media_id, owner, expired)| Op::CreateAsync { origin, media_id, owner, expired }),
        2 => (any::<usize>(), 0..SHA_POOL, 0..DATASTORES.len())
            .prop_map(|(pick, sha, datastore)| Op::CompleteAsync { pick, sha, datastore }),
        3 => (any::<usize>(), 0..USERS.len() + 2).prop_map(|(pick, actor)| Op::Access { pick, actor }),
    ]
}

/// Between 1 and `max_len` abstract steps.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=max_len.max(1))
}

/// Digest number `i` of the pool.
pub fn pool_sha(i: usize) -> Sha256 {
    let seed = u8::try_from(i % 256).unwrap_or(0);
    Sha256(std::array::from_fn(|j| {
        seed.wrapping_mul(0x3b)
            .wrapping_add(0x11)
            .wrapping_add(u8::try_from(j).unwrap_or(0).wrapping_mul(7))
    }))
}

/// Length of content number `i` (distinct per digest, so double counting shows in totals).
pub fn pool_size(i: usize) -> u64 {
    let i = u64::try_from(i).unwrap_or(0);
    1_000 * (i + 1) + i
}

/// The blob location a datastore would give content `sha`: `ab/cd/<hex>`.
pub fn location_of(sha: &Sha256) -> Result<BlobLocation, BoxError> {
    let hex = sha.to_hex();
    let (a, rest) = hex.split_at(2);
    let b = rest.get(..2).unwrap_or_default();
    Ok(format!("{a}/{b}/{hex}").parse()?)
}

/// A command with its author and the event the writer should turn it into.
#[derive(Debug, Clone)]
pub struct Step {
    /// Who submits it.
    pub actor: Actor,
    /// Its request id.
    pub request_id: RequestId,
    /// The command.
    pub command: Command,
    /// The event the writer records for it.
    pub expected: Event,
}

impl Step {
    /// The command's event as the writer should record it at `seq` and `time`.
    pub fn envelope(&self, seq: Seq, recorded_at_ms: u64) -> Envelope {
        Envelope {
            seq,
            recorded_at_ms,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            event: self.expected.clone(),
        }
    }
}

/// A sequence of commands that is valid when submitted in order to an empty ledger.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The commands, in order.
    pub steps: Vec<Step>,
}

#[derive(Default)]
struct Model {
    taken: BTreeSet<MediaRef>,
    uploaded: Vec<(MediaRef, Sha256)>,
    open: Vec<(MediaRef, UserId)>,
    blobs: BTreeMap<Sha256, (DatastoreId, BlobLocation)>,
}

impl Model {
    fn fresh(&mut self, origin: usize, wanted: &str, step: usize) -> Result<MediaRef, BoxError> {
        let origin: ServerName = ORIGINS
            .get(origin)
            .copied()
            .unwrap_or("localhost")
            .parse()?;
        let mut id = wanted.to_owned();
        loop {
            let media = MediaRef::new(origin.clone(), id.parse::<MediaId>()?);
            if self.taken.insert(media.clone()) {
                return Ok(media);
            }
            id = format!("{id}-{step}");
        }
    }

    fn upload(
        &mut self,
        media: MediaRef,
        sha_index: usize,
        datastore: usize,
        uploader: Actor,
        content_type: Option<ContentType>,
        upload_name: Option<String>,
    ) -> Result<(MediaUploaded, MediaUploaded), BoxError> {
        let sha = pool_sha(sha_index);
        let datastore: DatastoreId = DATASTORES
            .get(datastore)
            .copied()
            .unwrap_or("ds-alpha")
            .parse()?;
        let submitted = MediaUploaded {
            media: media.clone(),
            sha256: sha,
            size_bytes: pool_size(sha_index),
            content_type,
            upload_name,
            uploader,
            datastore: datastore.clone(),
            location: location_of(&sha)?,
        };
        let (ds, loc) = self
            .blobs
            .entry(sha)
            .or_insert_with(|| (datastore, submitted.location.clone()))
            .clone();
        let recorded = MediaUploaded {
            datastore: ds,
            location: loc,
            ..submitted.clone()
        };
        self.uploaded.push((media, sha));
        Ok((submitted, recorded))
    }
}

fn user(i: usize) -> Result<UserId, BoxError> {
    Ok(USERS
        .get(i % USERS.len())
        .copied()
        .unwrap_or("@alice:localhost")
        .parse()?)
}

fn content_type(i: usize) -> Result<ContentType, BoxError> {
    const TYPES: [&str; 3] = ["image/png", "video/mp4", "text/plain; charset=utf-8"];
    Ok(TYPES
        .get(i % TYPES.len())
        .copied()
        .unwrap_or("image/png")
        .parse()?)
}

impl Plan {
    /// Resolves abstract steps in order, skipping those that have no valid form (an access
    /// before any upload, a completion without an open reservation).
    pub fn new(ops: &[Op]) -> Result<Self, BoxError> {
        let mut model = Model::default();
        let mut steps = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let request_id = RequestId(format!("req-{i:03}"));
            let step = match op {
                Op::Upload {
                    origin,
                    media_id,
                    sha,
                    datastore,
                    user: u,
                    content_type: ct,
                    upload_name,
                } => {
                    let media = model.fresh(*origin, media_id, i)?;
                    let actor = Actor::User(user(*u)?);
                    let ct = if *ct { Some(content_type(*sha)?) } else { None };
                    let name = upload_name.then(|| format!("file-{i}.bin"));
                    let (event, recorded) =
                        model.upload(media, *sha, *datastore, actor.clone(), ct, name)?;
                    Step {
                        actor,
                        request_id,
                        command: Command::Upload {
                            event,
                            completes_async: None,
                        },
                        expected: Event::MediaUploadedV1(recorded),
                    }
                }
                Op::CreateAsync {
                    origin,
                    media_id,
                    owner,
                    expired,
                } => {
                    let media = model.fresh(*origin, media_id, i)?;
                    let owner = user(*owner)?;
                    let expires_at_ms = if *expired { 1 } else { FAR_FUTURE_MS };
                    if !*expired {
                        model.open.push((media.clone(), owner.clone()));
                    }
                    let event = AsyncUploadCreated {
                        media,
                        owner: owner.clone(),
                        expires_at_ms,
                    };
                    Step {
                        actor: Actor::User(owner),
                        request_id,
                        command: Command::CreateAsync(event.clone()),
                        expected: Event::AsyncUploadCreatedV1(event),
                    }
                }
                Op::CompleteAsync {
                    pick,
                    sha,
                    datastore,
                } => {
                    if model.open.is_empty() {
                        continue;
                    }
                    let (media, owner) = model.open.remove(pick % model.open.len());
                    let actor = Actor::User(owner.clone());
                    let (event, recorded) = model.upload(
                        media,
                        *sha,
                        *datastore,
                        actor.clone(),
                        Some(content_type(*sha)?),
                        None,
                    )?;
                    Step {
                        actor,
                        request_id,
                        command: Command::Upload {
                            event,
                            completes_async: Some(owner),
                        },
                        expected: Event::MediaUploadedV1(recorded),
                    }
                }
                Op::Access { pick, actor } => {
                    let Some((media, sha)) = model
                        .uploaded
                        .get(pick % model.uploaded.len().max(1))
                        .cloned()
                    else {
                        continue;
                    };
                    let actor = match actor.checked_sub(USERS.len()) {
                        None => Actor::User(user(*actor)?),
                        Some(0) => Actor::SharedSecretAdmin,
                        Some(_) => Actor::System,
                    };
                    let event = MediaAccessed { media, sha256: sha };
                    Step {
                        actor,
                        request_id,
                        command: Command::Access(event.clone()),
                        expected: Event::MediaAccessedV1(event),
                    }
                }
            };
            steps.push(step);
        }
        Ok(Self { steps })
    }

    /// The expected events as a log from sequence 1, at [`PLAN_START_MS`] plus
    /// [`PLAN_STEP_MS`] per step.
    pub fn envelopes(&self) -> Vec<Envelope> {
        (1u64..)
            .zip(&self.steps)
            .map(|(seq, s)| s.envelope(Seq(seq), PLAN_START_MS + PLAN_STEP_MS * (seq - 1)))
            .collect()
    }
}

/// Submits `steps` in order, `group` at a time concurrently (1: one after the other), and
/// returns every outcome. Concurrent submissions of one group are queued in order, so the
/// writer sees the plan's order and may fold several into one commit.
pub fn submit_all(
    ledger: &Ledger,
    steps: &[Step],
    group: usize,
) -> Result<Vec<Result<Committed, LedgerError>>, BoxError> {
    // join_all polls its futures in order only while it has at most 30 of them.
    let group = group.clamp(1, 16);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let outcomes = rt.block_on(async {
        let mut outcomes = Vec::with_capacity(steps.len());
        for chunk in steps.chunks(group) {
            let futures = chunk
                .iter()
                .map(|s| ledger.submit(s.actor.clone(), s.request_id.clone(), s.command.clone()));
            outcomes.extend(futures_util::future::join_all(futures).await);
        }
        outcomes
    });
    Ok(outcomes)
}

/// The committed state of every projection of a running ledger.
pub fn state_of(ledger: &Ledger) -> Result<MemoryState, LedgerError> {
    let mut state = MemoryState::default();
    for p in ALL {
        let mut kv = MemoryKv::default();
        ledger.scan(p.name(), b"", |k, v| {
            kv.0.insert(k.to_vec(), v.to_vec());
            Ok(())
        })?;
        state.spaces.insert(p.name(), kv);
    }
    Ok(state)
}

/// Every envelope of a running ledger's log, in order.
pub fn ledger_envelopes(ledger: &Ledger) -> Result<Vec<Envelope>, LedgerError> {
    let mut out = Vec::new();
    ledger.events(Seq(1), Seq(u64::MAX), |env| {
        out.push(env);
        true
    })?;
    Ok(out)
}

/// Folds envelopes into a fresh in-memory state.
pub fn replay(envelopes: &[Envelope]) -> Result<MemoryState, ProjectionError> {
    let mut state = MemoryState::default();
    for env in envelopes {
        state.apply(env)?;
    }
    Ok(state)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha_at(bytes: &[u8]) -> Option<Sha256> {
    bytes.try_into().ok().map(Sha256)
}

fn json_of<T: serde::Serialize>(value: Result<Option<T>, ProjectionError>, raw: &[u8]) -> Value {
    match value {
        Ok(Some(v)) => serde_json::to_value(v).unwrap_or_else(|_| Value::String(hex(raw))),
        _ => json!({ "undecoded": hex(raw) }),
    }
}

/// Adds a key no decoder understood to the `unparsed` map of a projection's rendering.
fn unparsed(out: &mut Map<String, Value>, k: &[u8], v: &[u8]) {
    if let Value::Object(m) = out
        .entry("unparsed")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        m.insert(hex(k), Value::String(hex(v)));
    }
}

fn render_media_index(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match parse_media_key(k) {
            Some(media) => {
                let record = media_index::decode_record(v).map(Some);
                out.insert(media.to_string(), json_of(record, v));
            }
            None => unparsed(&mut out, k, v),
        }
    }
    Value::Object(out)
}

fn render_hash_refs(kv: &MemoryKv) -> Value {
    let mut hashes: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match k.split_first() {
            Some((b'h', rest)) => match sha_at(rest) {
                Some(sha) => {
                    let entry = hashes
                        .entry(sha.to_hex())
                        .or_insert((Value::Null, Vec::new()));
                    entry.0 = json_of(hash_refs::get(kv, &sha), v);
                }
                None => unparsed(&mut out, k, v),
            },
            Some((b'r', rest)) if rest.len() > 32 => {
                let (sha, media) = rest.split_at(32);
                match parse_media_key(media) {
                    Some(media) => {
                        let entry = hashes.entry(hex(sha)).or_insert((Value::Null, Vec::new()));
                        entry.1.push(Value::String(media.to_string()));
                    }
                    None => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    for (sha, (record, refs)) in hashes {
        out.insert(sha, json!({ "record": record, "refs": refs }));
    }
    Value::Object(out)
}

fn render_datastore_sizes(kv: &MemoryKv) -> Value {
    let mut stores: BTreeMap<String, (Value, Map<String, Value>)> = BTreeMap::new();
    let mut out = Map::new();
    for (k, v) in &kv.0 {
        match k.split_first() {
            Some((b't', rest)) => match std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse::<DatastoreId>().ok())
            {
                Some(ds) => {
                    let entry = stores
                        .entry(ds.to_string())
                        .or_insert((Value::Null, Map::new()));
                    entry.0 = json_of(datastore_sizes::totals(kv, &ds).map(Some), v);
                }
                None => unparsed(&mut out, k, v),
            },
            Some((b'h', rest)) if rest.len() > 33 => {
                let (ds, sha) = rest.split_at(rest.len() - 32);
                match (ds.split_last(), sha_at(sha)) {
                    (Some((0, ds)), Some(sha)) => {
                        let ds = String::from_utf8_lossy(ds).into_owned();
                        let count = codec::decode::<HashCount>(v).map(Some).map_err(|source| {
                            ProjectionError::Corrupt {
                                name: "datastore_sizes",
                                source,
                            }
                        });
                        let entry = stores.entry(ds).or_insert((Value::Null, Map::new()));
                        entry.1.insert(sha.to_hex(), json_of(count, v));
                    }
                    _ => unparsed(&mut out, k, v),
                }
            }
            _ => unparsed(&mut out, k, v),
        }
    }
    for (ds, (totals, hashes)) in stores {
        out.insert(ds, json!({ "totals": totals, "hashes": hashes }));
    }
    Value::Object(out)
}

fn render_pending_uploads(kv: &MemoryKv) -> Value {
    let mut out = Map::new();
    let mut owners = Map::new();
    for (k, v) in &kv.0 {
        let owner = k
            .strip_prefix(&[1u8])
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| u.parse::<media_ledger_events::UserId>().ok());
        if let Some(user) = owner {
            let list = pending_uploads::owner(kv, &user).map(|o| {
                o.entries
                    .iter()
                    .map(|(mk, exp)| {
                        let m = parse_media_key(mk).map_or_else(|| hex(mk), |m| m.to_string());
                        json!({ "media": m, "expires_at_ms": exp })
                    })
                    .collect::<Vec<_>>()
            });
            owners.insert(user.to_string(), json_of(list.map(Some), v));
            continue;
        }
        match parse_media_key(k) {
            Some(media) => {
                let pending = pending_uploads::get(kv, &media);
                out.insert(media.to_string(), json_of(pending, v));
            }
            None => unparsed(&mut out, k, v),
        }
    }
    if !owners.is_empty() {
        out.insert("by_owner".into(), Value::Object(owners));
    }
    Value::Object(out)
}

fn render_hex(kv: &MemoryKv) -> Value {
    Value::Object(
        kv.0.iter()
            .map(|(k, v)| (hex(k), Value::String(hex(v))))
            .collect(),
    )
}

/// Renders every projection's state readably: media by MXC URI, hashes and datastores by
/// name, values decoded with the projections' own helpers. A key no decoder understands (or
/// a projection this function does not know) appears as hex, so nothing is hidden.
pub fn snapshot(state: &MemoryState) -> Value {
    let mut out = Map::new();
    for (name, kv) in &state.spaces {
        let rendered = match *name {
            "media_index" => render_media_index(kv),
            "hash_refs" => render_hash_refs(kv),
            "datastore_sizes" => render_datastore_sizes(kv),
            "pending_uploads" => render_pending_uploads(kv),
            _ => render_hex(kv),
        };
        out.insert((*name).to_owned(), rendered);
    }
    Value::Object(out)
}

/// This crate's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Reads envelopes written one JSON object per line (blank lines ignored).
pub fn load_jsonl(path: &Path) -> Result<Vec<Envelope>, BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}
