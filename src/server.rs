//! Start and stop: open the ledger, check datastore identities, sweep orphans, build the
//! state, serve until asked to stop.

use crate::auth::Auth;
use crate::config::Config;
use crate::datastore::Datastores;
use crate::http::{self, AppState};
use crate::ledger::Ledger;
use crate::media::{MediaReader, MediaService};
use crate::metrics::Metrics;
use crate::moderation::deleter::DeletionHook;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ledger (for tests and tools that inspect state in-process).
    pub ledger: Arc<Ledger>,
    /// This server's metrics registry (its own: no other server in the process shares it).
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
    grace_ms: u64,
}

/// Wraps each datastore backend (tests inject faults with it).
pub type DatastoreHook = Arc<
    dyn Fn(Arc<dyn crate::datastore::Datastore>) -> Arc<dyn crate::datastore::Datastore>
        + Send
        + Sync,
>;

/// What a caller (a test) may inject into one server; none of it is configuration. Each
/// server holds its own, so two servers in one process never share a hook.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Wraps each datastore backend (fault injection).
    pub datastore_hook: Option<DatastoreHook>,
    /// Leaves purges' deletions pending (see [`DeletionHook`]).
    pub deletion_hook: Option<DeletionHook>,
    /// The time retention runs judge ages by, instead of the wall clock.
    pub retention_clock: Option<crate::abuse::retention::Clock>,
}

/// Opens everything and starts serving on `config.server.bind`.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    start_with(config, StartOptions::default()).await
}

/// [`start`] with the hooks of `options`.
pub async fn start_with(config: Config, options: StartOptions) -> anyhow::Result<Server> {
    let config = Arc::new(config);
    let db_path = config.database.path.clone();
    let metrics = Arc::new(Metrics::default());
    let ledger_metrics = metrics.clone();
    let memory = (
        config.database.block_cache_bytes,
        config.database.write_buffer_bytes,
    );
    // A cluster node: the log is the shared one in PostgreSQL.
    let cluster = config
        .database
        .url
        .clone()
        .filter(|_| config.database.backend == crate::config::LogBackend::Postgres);
    let shared = cluster.clone().map(|url| crate::ledger::SharedOptions {
        url,
        follow_interval: std::time::Duration::from_millis(config.database.follow_interval_ms),
    });
    let ledger = tokio::task::spawn_blocking(move || {
        let mut last = 0u64;
        let memory = crate::ledger::MemoryOptions {
            block_cache_bytes: memory.0,
            write_buffer_bytes: memory.1,
        };
        Ledger::open_node(
            &db_path,
            ledger_metrics,
            memory,
            shared,
            &mut |done, total| {
                if done >= last + 100_000 || done == total {
                    last = done;
                    tracing::info!(done, total, "rebuilding projections");
                }
            },
        )
    })
    .await?
    .context("opening the ledger")?;
    let ledger = Arc::new(ledger);
    ledger.set_max_pending_per_user(config.uploads.max_pending_per_user);
    let mut datastores =
        Datastores::from_config(&config.datastores).context("opening datastores")?;
    // Before anything deletes a byte: two entries reaching one storage must not start.
    let unchecked = datastores
        .claim_all()
        .await
        .context("checking datastore identity markers")?;
    if let Some(hook) = &options.datastore_hook {
        datastores = datastores.wrapped(&**hook);
    }
    let datastores = Arc::new(datastores);
    if cluster.is_none() {
        // Purges recorded before a crash finish first, so their deletions are recorded (the
        // sweep would delete those blobs silently). A cluster's leader does this (`cluster`),
        // and no node sweeps: a blob another node just stored, not yet recorded, is not an
        // orphan.
        crate::moderation::deleter::resume(&ledger, &datastores, options.deletion_hook.as_ref())
            .await
            .context("resuming purge deletions")?;
        crate::sweep::sweep_orphans(&ledger, &datastores, &unchecked).await;
    }
    let moderation = Arc::new(crate::moderation::Moderation::new(
        ledger.clone(),
        datastores.clone(),
        &config,
        options.deletion_hook.clone(),
    ));
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let retention = crate::abuse::retention::SharedStatus::default();
    if config.thumbnails.enabled
        && !config
            .datastores
            .iter()
            .any(|d| d.accepts(crate::config::DatastoreKind::Thumbnails))
    {
        tracing::warn!("no datastore accepts thumbnails: thumbnail requests will answer 503");
    }

    let transfers =
        crate::transfer::Transfers::new(ledger.clone(), datastores.clone(), config.clone());
    // In a cluster, tasks run on the leader only (`cluster::lead`).
    transfers.set_runs_here(cluster.is_none());
    let once = crate::cluster::OnceOnly {
        ledger: ledger.clone(),
        datastores: datastores.clone(),
        moderation: moderation.clone(),
        transfers: transfers.clone(),
        config: config.clone(),
        deletion_hook: options.deletion_hook.clone(),
        retention: retention.clone(),
        retention_clock: options.retention_clock.clone(),
        shutdown: shutdown.clone(),
    };
    match cluster {
        None => once.start().context("resuming transfers")?,
        Some(url) => {
            tokio::spawn(crate::cluster::lead(url, once));
        }
    }
    let keys_config = config.clone();
    let keys = tokio::task::spawn_blocking(move || {
        crate::federation::keyfile::Keyring::load(&keys_config)
    })
    .await?
    .context("loading the federation signing keys")?;
    let client = Arc::new(crate::federation::client::Client::new(
        config.federation.clone(),
        keys,
    ));
    if config.federation.enabled && config.federation.check_published_key {
        // In the background: start-up neither waits for nor fails on it.
        tokio::spawn(crate::federation::diagnose::check_all_published(
            config.clone(),
            client.clone(),
        ));
    }
    let checker = crate::abuse::check::ContentChecker::new(&config.content_check, ledger.clone())
        .context("building the content check's HTTP client")?;
    let media = MediaService::new(ledger.clone(), datastores.clone(), config.clone())
        .with_checker(checker.clone());
    if config.database.backend == crate::config::LogBackend::Postgres {
        tokio::spawn(crate::cluster::wake_waiters(
            ledger.clone(),
            media.waiters().clone(),
            shutdown.clone(),
        ));
    }
    let remote = Arc::new(
        crate::remote::RemoteMedia::new(client, ledger.clone(), datastores.clone(), config.clone())
            .with_checker(checker.clone()),
    );
    let reader = MediaReader::new(
        ledger.clone(),
        datastores.clone(),
        config.clone(),
        media.waiters().clone(),
        remote.clone(),
        shutdown.clone(),
    );
    let previews = Arc::new(
        crate::preview::Previews::new(
            config.clone(),
            ledger.clone(),
            datastores.clone(),
            MediaService::new(ledger.clone(), datastores.clone(), config.clone())
                .with_checker(checker),
        )
        .map_err(|e| anyhow::anyhow!("link previews: {e}"))?,
    );
    let state = Arc::new(AppState {
        shutdown,
        previews,
        archives: Default::default(),
        moderation,
        transfers,
        remote,
        reader,
        thumbnails: crate::thumbnail::Thumbnailer::new(
            ledger.clone(),
            datastores.clone(),
            config.clone(),
        ),
        auth: Auth::new(config.clone()),
        media,
        config: config.clone(),
        ledger: ledger.clone(),
        datastores,
        metrics: metrics.clone(),
        rate_limits: crate::abuse::rate::RateLimits::new(&config.rate_limits),
        retention,
    });
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("binding {}", config.server.bind))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = http::router(state);
    let limits = http::serve::Limits {
        header_read: std::time::Duration::from_millis(config.server.header_read_timeout_ms),
        body_idle: std::time::Duration::from_millis(config.server.body_idle_timeout_ms),
    };
    let task = tokio::spawn(http::serve::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, head = ledger.head().0, "media-ledger listening");
    // Operator messages about each homeserver's cs_api, in the background: start-up neither
    // waits for nor fails on them.
    tokio::spawn(crate::homeserver_check::check_all(config.clone()));
    if config.downloads.allow_unauthenticated && config.downloads.freeze_unauthenticated {
        tracing::info!(
            after_ms = config.downloads.freeze_unauthenticated_after_ms,
            "unauthenticated media freeze on: media created after this time is served on the deprecated /_matrix/media/{{r0,v3}} endpoints only with a valid access token"
        );
    }
    Ok(Server {
        addr,
        ledger,
        metrics,
        stop: Some(stop),
        shutdown: shutdown_tx,
        task,
        grace_ms: config.server.shutdown_grace_ms,
    })
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, then closes the ledger.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let grace = std::time::Duration::from_millis(self.grace_ms);
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(served) => served?,
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace_ms,
                    "requests still in flight after the grace period; closing their connections"
                );
                self.task.abort();
            }
        }
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.shutdown()).await?;
        Ok(())
    }

    /// Waits until the accept loop ends: only after a stop (an error only if it panicked).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?;
        Ok(())
    }
}
