//! `media-ledger import synapse …`: arguments, opening the ledger and the datastores (the
//! server must not be running: the ledger is opened exclusively), the source, the run, and
//! the summary as one JSON object on stdout.

use super::{Importer, Options};
use crate::config::Config;
use crate::datastore::Datastores;
use crate::ledger::Ledger;
use anyhow::{bail, Context};
use media_ledger_events::ServerName;
use std::path::PathBuf;
use std::sync::Arc;

/// Usage of `import`.
pub const USAGE: &str =
    "usage: media-ledger import synapse --config PATH --database SQLITE_FILE|postgres://URL
         --media-store DIR [--server-name NAME] [--datastore ID] [--link] [--dry-run]
         [--parallel N]
  Imports Synapse's media (local, cached remote, thumbnails, quarantine, protection) with
  their ids; run it with the server stopped. Run again to resume: nothing is imported twice.";

struct Args {
    kind: String,
    config: PathBuf,
    database: Option<String>,
    media_store: Option<PathBuf>,
    server_name: Option<String>,
    options: Options,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut out = Args {
        kind: String::new(),
        config: "config.toml".into(),
        database: None,
        media_store: None,
        server_name: None,
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
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    Ok(out)
}

/// Runs `import` with the arguments after it.
pub fn run(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = parse(args)?;
    if args.kind != "synapse" {
        bail!("import: what to import? (synapse)\n{USAGE}");
    }
    let database = args.database.context("--database is required")?;
    let media_store = args.media_store.context("--media-store is required")?;
    if !media_store.is_dir() {
        bail!("--media-store {}: not a directory", media_store.display());
    }
    let config = Config::load(&args.config)?;
    let server_name: ServerName = match &args.server_name {
        Some(n) => {
            ServerName::parse_strict(n).map_err(|e| anyhow::anyhow!("--server-name: {e}"))?
        }
        None => config.homeserver_for(None).name.clone(),
    };
    if let Some(id) = &args.options.datastore {
        if !config.datastores.iter().any(|d| &d.id == id) {
            bail!("--datastore {id}: no such datastore in the config");
        }
    }
    // The source first: a database that cannot be read stops before the ledger is touched.
    let mut db = super::db::Db::open(&database)?;
    let source = super::synapse::read(&mut db, &media_store, &server_name).with_context(|| {
        format!(
            "reading Synapse's media tables from {}",
            super::db::redact(&database)
        )
    })?;
    drop(db);
    eprintln!(
        "import: {} media rows read from Synapse ({} unusable)",
        source.rows.len(),
        source.bad.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let path = config.database.path.clone();
        let ledger = tokio::task::spawn_blocking(move || Ledger::open(&path, &mut |_, _| {}))
            .await?
            .with_context(|| {
                format!(
                    "opening the ledger at {} (is the server running on it? stop it first)",
                    config.database.path.display()
                )
            })?;
        let ledger = Arc::new(ledger);
        let datastores =
            Datastores::from_config(&config.datastores).context("opening datastores")?;
        datastores
            .claim_all()
            .await
            .context("checking datastore identity markers")?;
        let datastores = Arc::new(datastores);
        let moderation =
            crate::moderation::Moderation::new(ledger.clone(), datastores.clone(), &config, None);
        let importer = Importer::new(ledger.clone(), datastores, moderation, args.options);
        let report = importer.run(source).await?;
        drop(importer);
        // Everything recorded is synced before the writer stops.
        tokio::task::spawn_blocking(move || ledger.shutdown()).await?;
        anyhow::Ok(report)
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
