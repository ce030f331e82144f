//! The `media-ledger` binary: `serve` (default), `replay`, `verify`, `events`, `tasks`,
//! `snapshot`, `keys`.

use anyhow::{bail, Context};
use media_ledger::config::Config;
use media_ledger::ledger::Ledger;
use media_ledger_events::{MediaRef, Seq};
use media_ledger_projections::names;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the per-request buffers and answers of the download
/// path cost ~11 % of its CPU in glibc (`_int_free`, `malloc_consolidate`, …).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: media-ledger [serve|replay|verify|events|tasks|snapshot|keys|import|export] [--config PATH]
  serve                 run the server (default)
  replay                rebuild every projection from sequence 0
  replay --until N --into DIR
                        write to DIR a ledger holding events 1..=N with its projections
                        rebuilt: the state as of N (the live ledger is only read)
  snapshot --into DIR   a consistent copy of the ledger (server stopped; while it runs use
                        POST /_matrix/media/unstable/admin/snapshot)
  verify [--blobs]      check sequence gaps, the checksum chain and projections == replay;
                        --blobs: also that every live media's and thumbnail's blob exists
                        where its records say (exit 5 when one does not)
  events [--from N] [--to N] [--media mxc://server/id]
                        print the log as JSON lines
  tasks [--follow ID]   list transfer tasks, or follow one with a progress bar
  keys print [--homeserver NAME]
                        our signing key's line in Synapse's key file format (generated if
                        missing), to append to the homeserver's signing_key_path file
  import synapse --database DB --media-store DIR [...]
                        import Synapse's media with their ids (server stopped;
                        `media-ledger import --help` for the options)
  export (--user @u:s | --server NAME) --into DIR
                        a matrix-media-repo archive of their media (server stopped)
  migrate-log --to postgres --url URL
                        copy this node's embedded log into a cluster's shared log in
                        PostgreSQL (server stopped; verified record by record; a second
                        run continues an interrupted one); then set [database]
                        backend = \"postgres\" and url, and start the node
  keys import PATH [--homeserver NAME] [--force]
                        sign with the first key of Synapse's key file PATH (--force
                        replaces a key of ours already there)";

struct Args {
    command: String,
    config: PathBuf,
    from: u64,
    to: u64,
    media: Option<MediaRef>,
    follow: Option<u64>,
    until: Option<u64>,
    into: Option<PathBuf>,
    blobs: bool,
    /// Words after the command (`keys print`, `keys import PATH`).
    words: Vec<String>,
    homeserver: Option<String>,
    force: bool,
    /// `migrate-log --to`.
    target: Option<String>,
    /// `migrate-log --url`.
    url: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        command: "serve".into(),
        config: "config.toml".into(),
        from: 1,
        to: u64::MAX,
        media: None,
        follow: None,
        until: None,
        into: None,
        blobs: false,
        words: Vec::new(),
        homeserver: None,
        force: false,
        target: None,
        url: None,
    };
    let mut it = std::env::args().skip(1);
    let mut first = true;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" | "-c" => args.config = value("--config")?.into(),
            "--from" => args.from = value("--from")?.parse().context("--from")?,
            "--to" if args.command == "migrate-log" => args.target = Some(value("--to")?),
            "--to" => args.to = value("--to")?.parse().context("--to")?,
            "--media" => args.media = Some(value("--media")?.parse().context("--media")?),
            "--follow" => args.follow = Some(value("--follow")?.parse().context("--follow")?),
            "--until" => args.until = Some(value("--until")?.parse().context("--until")?),
            "--into" => args.into = Some(value("--into")?.into()),
            "--blobs" => args.blobs = true,
            "--homeserver" => args.homeserver = Some(value("--homeserver")?),
            "--force" => args.force = true,
            "--url" => args.url = Some(value("--url")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            cmd if first && !cmd.starts_with('-') => args.command = cmd.to_owned(),
            word if args.command == "keys" && !word.starts_with('-') => {
                args.words.push(word.to_owned())
            }
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
        first = false;
    }
    Ok(args)
}

fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // LOG_FORMAT=json: one JSON object per line, with the request span (its request id).
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        // Colours only for a terminal: journald and log files get plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    // `import` has arguments of its own.
    match std::env::args().nth(1).as_deref() {
        Some("import") => {
            media_ledger::import::cli::run(std::env::args().skip(2))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some("export") => {
            media_ledger::export::run(std::env::args().skip(2))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let args = parse_args()?;
    let config = Config::load(&args.config)?;
    match args.command.as_str() {
        "serve" => serve(config),
        "replay" => match (args.until, &args.into) {
            (None, None) => replay(&config),
            (Some(until), Some(into)) => replay_until(&config, until, into),
            _ => bail!("replay --until needs --into DIR (and --into needs --until)"),
        },
        "snapshot" => {
            let into = args.into.as_ref().context("snapshot needs --into DIR")?;
            let ledger = Ledger::open(&config.database.path, &mut |_, _| {})?;
            let head = ledger.snapshot(into)?;
            ledger.shutdown();
            println!("snapshot of {} events written to {}", head, into.display());
            Ok(ExitCode::SUCCESS)
        }
        "verify" => verify(&config).and_then(|code| match args.blobs {
            true => verify_blobs(&config, code),
            false => Ok(code),
        }),
        "events" => events(&config, &args),
        "tasks" => tasks(&config, args.follow),
        "keys" => keys(&config, &args),
        "migrate-log" => migrate_log(&config, &args),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = media_ledger::server::start(config).await?;
        shutdown_signal().await?;
        tracing::info!("shutting down");
        server.stop().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn replay(config: &Config) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr();
    let (ledger, report) = Ledger::open_rebuilt(&config.database.path, &mut |done, total| {
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let bar = "#".repeat((pct / 5.0) as usize);
        let _ = write!(err, "\r[{bar:<20}] {done}/{total} events ({pct:.0}%)");
    })?;
    ledger.shutdown();
    let rate = if report.seconds > 0.0 {
        report.events as f64 / report.seconds
    } else {
        0.0
    };
    eprintln!(
        "\nreplayed {} events in {:.2} s ({:.0} events/s)",
        report.events, report.seconds, rate
    );
    Ok(ExitCode::SUCCESS)
}

fn replay_until(config: &Config, until: u64, into: &std::path::Path) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let head =
        media_ledger::ledger::recovery::export_until(&config.database.path, into, Seq(until))?;
    eprintln!(
        "ledger as of sequence {} written to {} in {:.2} s; serve it with database.path = {:?}",
        head.seq,
        into.display(),
        started.elapsed().as_secs_f64(),
        into.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}

fn migrate_log(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    if args.target.as_deref() != Some("postgres") {
        bail!("migrate-log needs --to postgres");
    }
    let url = args
        .url
        .as_deref()
        .context("migrate-log needs --url postgres://…")?;
    let mut err = std::io::stderr();
    let done = media_ledger::ledger::migrate::migrate_to_shared(
        &config.database.path,
        url,
        &mut |done, total| {
            let _ = write!(err, "\r{done}/{total} records in the shared log");
        },
    )?;
    eprintln!(
        "\nshared log verified: {} records ({} copied now, {} were there); now set [database] backend = \"postgres\" and url, and start the node",
        done.head, done.copied, done.already
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    if let (media_ledger::config::LogBackend::Postgres, Some(url)) =
        (config.database.backend, &config.database.url)
    {
        match media_ledger::ledger::migrate::verify_shared(&config.database.path, url) {
            Ok(head) => println!("shared log: {head} records, sequence and chain intact; the local log is a prefix of it"),
            Err(e) => {
                println!("shared log: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    match Ledger::verify_report(&config.database.path) {
        Ok(report) if !report.undecodable.is_empty() => {
            let first = report.undecodable.first().map_or(0, |u| u.seq.0);
            println!(
                "FAIL: chain intact to {}, but {} record(s) cannot be decoded by this build:",
                report.head.seq,
                report.undecodable.len()
            );
            for u in &report.undecodable {
                println!("  sequence {}: {}", u.seq, u.reason);
            }
            println!(
                "the state before the first: `media-ledger replay --until {} --into DIR`; \
                 `media-ledger events` prints the others",
                first.saturating_sub(1)
            );
            Ok(ExitCode::from(3))
        }
        Ok(media_ledger::ledger::VerifyReport {
            head,
            divergence: None,
            ..
        }) => {
            println!(
                "ok: {} events, chain intact, projections equal a fresh replay",
                head.seq
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(media_ledger::ledger::VerifyReport {
            head,
            divergence: Some(d),
            ..
        }) => {
            println!(
                "FAIL: log intact to {}, but projection {} differs from replay: {}",
                head.seq, d.projection, d.detail
            );
            Ok(ExitCode::from(2))
        }
        Err(media_ledger::ledger::LedgerError::Corrupt { seq, reason }) => {
            println!("FAIL: first bad sequence {seq}: {reason}");
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}

/// `verify --blobs`: after the ledger checks, every live blob where its records say.
fn verify_blobs(config: &Config, code: ExitCode) -> anyhow::Result<ExitCode> {
    let report = media_ledger::blob_check::check_config(config)?;
    print!("{report}");
    Ok(
        match report.missing.is_empty() || code != ExitCode::SUCCESS {
            true => code,
            false => ExitCode::from(5),
        },
    )
}

/// `keys print` / `keys import PATH`: the key of `--homeserver` (needed only when the
/// homeservers' key files differ).
fn keys(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    use media_ledger::federation::keyfile::{import, Imported};
    use media_ledger::federation::keys::SigningKey;
    let hs = match &args.homeserver {
        Some(name) => config
            .homeservers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .with_context(|| format!("{name} is not in [[homeservers]]"))?,
        None => {
            let paths: std::collections::BTreeSet<_> = config
                .homeservers
                .iter()
                .map(|h| config.signing_key_path_for(&h.name))
                .collect();
            if paths.len() > 1 {
                bail!("the homeservers have different key files (federation.signing_key_paths): name one with --homeserver");
            }
            config.homeserver_for(None)
        }
    };
    let path = config.signing_key_path_for(&hs.name);
    match args.words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["print"] => {
            let key = SigningKey::load_or_generate(&path)?;
            print!("{}", key.synapse_line());
            eprintln!(
                "{} of {} (public key {}, from {}): append this line to the homeserver's signing_key_path file and restart it, so that it publishes the key",
                key.key_id(),
                hs.name,
                key.public_key_base64(),
                path.display()
            );
        }
        ["import", from] => {
            let (key, count, done) = import(std::path::Path::new(from), &path, args.force)?;
            let others = match count {
                1 => String::new(),
                n => format!(" (the first of its {n} keys, the one it signs with)"),
            };
            match done {
                Imported::Written => eprintln!(
                    "{} of {from}{others} written to {}: media-ledger signs for {} with it from its next start",
                    key.key_id(),
                    path.display(),
                    hs.name
                ),
                Imported::Unchanged => eprintln!(
                    "{} already holds {} of {from}: nothing to do",
                    path.display(),
                    key.key_id()
                ),
            }
        }
        _ => bail!("keys needs `print` or `import PATH`\n{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn tasks(config: &Config, follow: Option<u64>) -> anyhow::Result<ExitCode> {
    use media_ledger_projections::tasks;
    let Some(id) = follow else {
        let ledger = Ledger::open_read_only(&config.database.path)?;
        ledger.scan(names::TASKS, b"t", |k, v| {
            if let Some(entry) = tasks::decode_task_entry(k, v) {
                let (seq, t) = entry?;
                let state = match (&t.ended_at_ms, &t.error_message) {
                    (None, _) => "running",
                    (Some(_), None) => "finished",
                    (Some(_), Some(_)) => "failed",
                };
                println!(
                    "{seq}\t{} -> {}\t{state}\t{}/{} blobs\t{}/{} bytes{}",
                    t.source,
                    t.target,
                    t.blobs_done,
                    t.blobs_total,
                    t.bytes_done,
                    t.bytes_total,
                    t.error_message
                        .map(|e| format!("\t{e}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        })?;
        media_ledger::import::cli::list_tasks(&ledger)?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut err = std::io::stderr();
    loop {
        // Re-open each time: a read-only open sees the server's writes as of opening.
        let ledger = Ledger::open_read_only(&config.database.path)?;
        let Some(t) = tasks::get(&ledger.view(names::TASKS)?, Seq(id))? else {
            drop(ledger);
            return media_ledger::import::cli::follow_task(&config.database.path, Seq(id));
        };
        drop(ledger);
        let pct = if t.bytes_total == 0 {
            100.0
        } else {
            t.bytes_done as f64 * 100.0 / t.bytes_total as f64
        };
        let bar = "#".repeat((pct / 5.0) as usize);
        let _ = write!(
            err,
            "\r[{bar:<20}] {}/{} blobs, {:.1}/{:.1} MB ({pct:.0}%), {} failed attempts",
            t.blobs_done,
            t.blobs_total,
            t.bytes_done as f64 / 1e6,
            t.bytes_total as f64 / 1e6,
            t.attempts_failed
        );
        if t.is_finished() {
            match t.error_message {
                None => {
                    eprintln!("\ntask {id} finished");
                    return Ok(ExitCode::SUCCESS);
                }
                Some(e) => {
                    eprintln!("\ntask {id} failed: {e}");
                    return Ok(ExitCode::from(4));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn events(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut failed = None;
    Ledger::log_at(
        &config.database.path,
        Seq(args.from),
        Seq(args.to),
        |entry| {
            let env = match entry {
                Ok(env) => env,
                Err(u) => {
                    // Stepped past: the operator sees where and why, and the records after it.
                    let line = serde_json::json!({ "seq": u.seq.0, "undecodable": u.reason });
                    return writeln!(out, "{line}")
                        .map_err(|e| failed = Some(e))
                        .is_ok();
                }
            };
            if args
                .media
                .as_ref()
                .is_some_and(|m| !env.event.affected_media().contains(&m))
            {
                return true;
            }
            let line = serde_json::json!({
                "seq": env.seq.0,
                "recorded_at_ms": env.recorded_at_ms,
                "actor": env.actor.to_string(),
                "request_id": env.request_id.0,
                "type": env.event.type_name(),
                "event": env.event,
            });
            match writeln!(out, "{line}") {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        },
    )?;
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
