//! `media-ledger import synapse|mmr …`: arguments, opening the ledger and the datastores (the
//! server must not be running: the ledger is opened exclusively), the source, the run, and
//! the summary as one JSON object on stdout.

use super::{Importer, Options, Source};
use crate::config::Config;
use crate::datastore::Datastores;
use crate::ledger::Ledger;
use anyhow::{bail, Context};
use media_ledger_events::ServerName;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Usage of `import`.
pub const USAGE: &str =
    "usage: media-ledger import synapse --config PATH --database SQLITE_FILE|postgres://URL
         --media-store DIR [--server-name NAME] [--datastore ID] [--link] [--dry-run]
         [--parallel N]
       media-ledger import mmr --config PATH --database postgres://URL
         --datastore-path ID=DIR [--datastore-path ID=DIR ...] [--datastore-s3 ID=OURS ...]
         [--datastore ID] [--link]
         [--dry-run] [--parallel N]
  Imports Synapse's or matrix-media-repo's media (local, cached remote, thumbnails,
  quarantine, protection) with their ids; run it with the server stopped. Run again to
  resume: nothing is imported twice. For mmr, give each file datastore of MMR's config
  (`datastores:` id and opts.path) as --datastore-path ID=DIR.
       media-ledger import archive --config PATH PART... [--dry-run] [--parallel N]
  Restores a matrix-media-repo (v2) export archive, ours or MMR's: every part, the
  export-manifest one included.";

struct Args {
    kind: String,
    config: PathBuf,
    database: Option<String>,
    media_store: Option<PathBuf>,
    server_name: Option<String>,
    datastore_paths: HashMap<String, PathBuf>,
    /// `--datastore-s3 MMR_ID=OUR_ID`.
    datastore_objects: HashMap<String, media_ledger_events::DatastoreId>,
    mmr_config: Option<PathBuf>,
    /// `import archive`: the part files.
    parts: Vec<PathBuf>,
    options: Options,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut out = Args {
        kind: String::new(),
        config: "config.toml".into(),
        database: None,
        media_store: None,
        server_name: None,
        datastore_paths: HashMap::new(),
        datastore_objects: HashMap::new(),
        mmr_config: None,
        parts: Vec::new(),
        options: Options {
            parallel: 4,
            ..Options::default()
        },
    };
    let mut it = args;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" | "-c" => out.config = value("--config")?.into(),
            "--database" => out.database = Some(value("--database")?),
            "--media-store" => out.media_store = Some(value("--media-store")?.into()),
            "--server-name" => out.server_name = Some(value("--server-name")?),
            "--datastore-path" => {
                let v = value("--datastore-path")?;
                let (id, dir) = v
                    .split_once('=')
                    .filter(|(id, dir)| !id.is_empty() && !dir.is_empty())
                    .with_context(|| format!("--datastore-path {v:?}: expected ID=DIR"))?;
                out.datastore_paths.insert(id.to_owned(), dir.into());
            }
            "--datastore-s3" => {
                let v = value("--datastore-s3")?;
                let (id, ours) = v
                    .split_once('=')
                    .filter(|(id, ours)| !id.is_empty() && !ours.is_empty())
                    .with_context(|| format!("--datastore-s3 {v:?}: expected MMR_ID=OUR_ID"))?;
                let ours = ours
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--datastore-s3 {v:?}: {e}"))?;
                out.datastore_objects.insert(id.to_owned(), ours);
            }
            "--mmr-config" => out.mmr_config = Some(value("--mmr-config")?.into()),
            "--datastore" => {
                out.options.datastore = Some(
                    value("--datastore")?
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--datastore: {e}"))?,
                )
            }
            "--parallel" => {
                out.options.parallel = value("--parallel")?.parse().context("--parallel")?
            }
            "--link" => out.options.link = true,
            "--dry-run" => out.options.dry_run = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            k if out.kind.is_empty() && !k.starts_with('-') => out.kind = k.to_owned(),
            part if out.kind == "archive" && !part.starts_with('-') => out.parts.push(part.into()),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    Ok(out)
}

/// The folders the source's files are read from exist (before the config is read).
fn check_paths(args: &Args) -> anyhow::Result<()> {
    if args.kind == "synapse" {
        let media_store = args
            .media_store
            .as_ref()
            .context("--media-store is required")?;
        if !media_store.is_dir() {
            bail!("--media-store {}: not a directory", media_store.display());
        }
        return Ok(());
    }
    if let Some(path) = &args.mmr_config {
        bail!(
            "--mmr-config {}: this build reads no YAML; pass each file datastore of its \
             `datastores:` list as --datastore-path ID=DIR (its id and opts.path)",
            path.display()
        );
    }
    for (id, dir) in &args.datastore_paths {
        if !dir.is_dir() {
            bail!("--datastore-path {id}={}: not a directory", dir.display());
        }
    }
    Ok(())
}

/// Reads Synapse's media tables and media store.
fn synapse_source(args: &Args, config: &Config, database: &str) -> anyhow::Result<Source> {
    let media_store = args
        .media_store
        .as_ref()
        .context("--media-store is required")?;
    let server_name: ServerName = match &args.server_name {
        Some(n) => {
            ServerName::parse_strict(n).map_err(|e| anyhow::anyhow!("--server-name: {e}"))?
        }
        None => config.homeserver_for(None).name.clone(),
    };
    if !config.homeservers.iter().any(|h| h.name == server_name) {
        bail!(
            "--server-name {server_name}: not a [[homeservers]] name of the config (its local \
             media would be served by no homeserver)"
        );
    }
    let mut db = super::db::Db::open(database)?;
    super::synapse::read(&mut db, media_store, &server_name).with_context(|| {
        format!(
            "reading Synapse's media tables from {}",
            super::db::redact(database)
        )
    })
}

/// Reads MMR's media tables and its file datastores (the config's homeservers are local).
fn mmr_source(args: &Args, config: &Config, database: &str) -> anyhow::Result<Source> {
    let homeservers: Vec<ServerName> = config.homeservers.iter().map(|h| h.name.clone()).collect();
    let mut db = super::db::Db::open(database)?;
    for ours in args.datastore_objects.values() {
        if !config.datastores.iter().any(|d| &d.id == ours) {
            bail!("--datastore-s3 …={ours}: no such datastore in the config");
        }
    }
    super::mmr::read(
        &mut db,
        &args.datastore_paths,
        &args.datastore_objects,
        &homeservers,
    )
    .with_context(|| {
        format!(
            "reading matrix-media-repo's media tables from {}",
            super::db::redact(database)
        )
    })
}

/// Runs `import` with the arguments after it.
pub fn run(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    if args.kind == "archive" {
        return archive(args);
    }
    if args.kind != "synapse" && args.kind != "mmr" {
        bail!("import: what to import? (synapse, mmr, archive)\n{USAGE}");
    }
    let database = args.database.clone().context("--database is required")?;
    check_paths(&args)?;
    let config = Config::load(&args.config)?;
    if let Some(id) = &args.options.datastore {
        if !config.datastores.iter().any(|d| &d.id == id) {
            bail!("--datastore {id}: no such datastore in the config");
        }
    }
    // The source first: a database that cannot be read stops before the ledger is touched.
    let (source, what) = if args.kind == "mmr" {
        (mmr_source(&args, &config, &database)?, "matrix-media-repo")
    } else {
        (synapse_source(&args, &config, &database)?, "Synapse")
    };
    eprintln!(
        "import: {} media rows read from {what} ({} unusable)",
        source.rows.len(),
        source.bad.len()
    );
    let described = format!("{what} database {}", super::db::redact(&database));
    let report = import_into(&config, source, args.options, &args.kind, &described)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The ledger and datastores of `config`, for a command run with the server stopped: the
/// ledger opened exclusively (a running server holds it: the error says so), the
/// datastores' identity markers checked.
pub async fn open_exclusive(config: &Config) -> anyhow::Result<(Arc<Ledger>, Arc<Datastores>)> {
    let path = config.database.path.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(&path, &mut |_, _| {}))
        .await?
        .with_context(|| {
            format!(
                "opening the ledger at {} (is the server running on it? stop it first)",
                config.database.path.display()
            )
        })?;
    let datastores = Datastores::from_config(&config.datastores).context("opening datastores")?;
    datastores
        .claim_all()
        .await
        .context("checking datastore identity markers")?;
    Ok((Arc::new(ledger), Arc::new(datastores)))
}

/// Opens the ledger and datastores of `config` and imports `source` into them.
fn import_into(
    config: &Config,
    source: Source,
    options: Options,
    kind: &str,
    what: &str,
) -> anyhow::Result<super::Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let (ledger, datastores) = open_exclusive(config).await?;
        let moderation = Arc::new(crate::moderation::Moderation::new(
            ledger.clone(),
            datastores.clone(),
            config,
            None,
        ));
        let importer = Importer::new(ledger.clone(), datastores, moderation, options);
        let report = importer.run_task(source, kind, what).await?;
        drop(importer);
        // Everything recorded is synced before the writer stops.
        tokio::task::spawn_blocking(move || ledger.shutdown()).await?;
        anyhow::Ok(report)
    })?;
    Ok(report)
}

/// The media of the archive `parts`, unpacked into `work`: origins that are not one of the
/// config's homeservers are cached remote media.
pub fn archive_source(
    config: &Config,
    parts: &[PathBuf],
    work: &std::path::Path,
) -> anyhow::Result<Source> {
    let manifest = super::archive::unpack(parts, work)?;
    let label = parts
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut source = super::archive::read(&manifest, work, &label);
    for row in &mut source.rows {
        row.remote = !config
            .homeservers
            .iter()
            .any(|h| h.name == row.media.origin);
        if row.remote {
            row.uploader = None;
        }
    }
    eprintln!(
        "import: {} media in the archive of {} ({} unusable)",
        source.rows.len(),
        manifest.entity_id,
        source.bad.len()
    );
    Ok(source)
}

/// `import archive PART...`: unpacks the parts into a work folder beside the ledger, then
/// imports the manifest's media (origins that are not ours are cached remote media).
fn archive(args: Args) -> anyhow::Result<()> {
    if args.parts.is_empty() {
        bail!("import archive: which part files?\n{USAGE}");
    }
    let config = Config::load(&args.config)?;
    let work = tempfile_dir(&config)?;
    let described = args
        .parts
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let result = archive_source(&config, &args.parts, &work)
        .and_then(|source| import_into(&config, source, args.options, "archive", &described));
    let _ = std::fs::remove_dir_all(&work);
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}

/// A fresh work folder beside the ledger (same filesystem as the datastores, usually).
fn tempfile_dir(config: &Config) -> anyhow::Result<PathBuf> {
    let base = config
        .database
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        ".import-archive-{}",
        crate::media::new_media_id().map_err(|e| anyhow::anyhow!("{e}"))?
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `media-ledger tasks`: one line per import task, after the transfers.
pub fn list_tasks(ledger: &Ledger) -> anyhow::Result<()> {
    use media_ledger_projections::{import_tasks, names};
    ledger.scan(names::TASKS, import_tasks::IMPORT_PREFIX, |k, v| {
        if let Some(entry) = import_tasks::decode_entry(k, v) {
            let (seq, t) = entry?;
            println!("{seq}\timport {}\t{}", t.kind, task_line(&t));
        }
        Ok(())
    })?;
    Ok(())
}

fn task_line(t: &media_ledger_projections::import_tasks::ImportTask) -> String {
    let p = t
        .progress
        .clone()
        .unwrap_or(media_ledger_events::ImportProgress {
            task: media_ledger_events::Seq(0),
            rows_done: 0,
            imported: 0,
            already_imported: 0,
            skipped: 0,
            bytes: 0,
            finished: false,
            error: None,
        });
    let state = match (t.is_finished(), &p.error) {
        (false, _) => "running (or killed: run the import again)",
        (true, None) => "finished",
        (true, Some(_)) => "failed",
    };
    format!(
        "{state}\t{}/{} rows\t{} imported, {} already there, {} skipped, {:.1} MB{}",
        p.rows_done,
        t.rows_total,
        p.imported,
        p.already_imported,
        p.skipped,
        p.bytes as f64 / 1e6,
        p.error.map(|e| format!("\t{e}")).unwrap_or_default()
    )
}

/// `media-ledger tasks --follow ID` of an import task: its progress until it ends (read-only,
/// beside the import).
pub fn follow_task(
    db: &std::path::Path,
    id: media_ledger_events::Seq,
) -> anyhow::Result<std::process::ExitCode> {
    use media_ledger_projections::{import_tasks, names};
    loop {
        // Re-open each time: a read-only open sees the writer's records as of opening.
        let ledger = Ledger::open_read_only(db)?;
        let t = import_tasks::get(&ledger.view(names::TASKS)?, id)?
            .with_context(|| format!("no task {id}"))?;
        drop(ledger);
        eprint!("\r{}", task_line(&t));
        if t.is_finished() {
            eprintln!();
            let failed = t.progress.and_then(|p| p.error).is_some();
            return Ok(if failed {
                std::process::ExitCode::from(4)
            } else {
                std::process::ExitCode::SUCCESS
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
