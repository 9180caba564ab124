//! The `basalt` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use basalt::server::{Config, Server};
use basalt::storage::Options;
use clap::{Parser, Subcommand};

mod load;

/// glibc's allocator was a fifth of the server's time under pgbench, much
/// of it in arena locks and chunk coalescing between threads; mimalloc's
/// per-thread pages avoid both. The library leaves the choice to its user.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Basalt: an embedded columnar + LSM database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a data directory to Postgres clients (psql, drivers).
    Serve(ServeArgs),
    /// Load CSV, TSV, Parquet, JSON-lines or Arrow files into a table, all
    /// at once or not at all.
    Load(load::LoadArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (created if missing) [default: basalt-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5433].
    #[arg(long)]
    listen: Option<String>,
    /// Connections served at once [default: 100].
    #[arg(long)]
    max_connections: Option<usize>,
    /// A user and password, NAME=PASSWORD; repeatable. Any user turns on
    /// SCRAM-SHA-256; with none, loopback clients are trusted.
    #[arg(long = "user", value_name = "NAME=PASSWORD")]
    users: Vec<String>,
    /// TLS certificate (PEM); needs --tls-key.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Acknowledge commits before their WAL record is on disk (on|off).
    #[arg(long, value_parser = parse_on_off)]
    synchronous_commit: Option<bool>,
    /// Memory all running queries may hold together, e.g. 4GiB [default:
    /// half the machine's memory].
    #[arg(long)]
    query_memory_limit: Option<String>,
    /// Decoded column chunks kept in memory, e.g. 1GiB.
    #[arg(long)]
    cache_size: Option<String>,
    /// Let clients' COPY ... FROM/TO 'path' read and write files inside
    /// this directory (by default they may not touch server files).
    #[arg(long, value_name = "DIR")]
    allow_files: Option<PathBuf>,
    /// Threads answering clients [default: one per core]. With one per core
    /// each is pinned to its core, and a connection moves to the thread on
    /// the core its client sends from. Queries run on a pool of their own,
    /// a thread per core.
    #[arg(long)]
    network_threads: Option<usize>,
    /// What to log to stderr: error, warn, info, debug or trace, or a filter
    /// such as `basalt_storage=debug` [default: info; env BASALT_LOG].
    #[arg(long)]
    log_level: Option<String>,
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        other => Err(format!("expected on or off, not \"{other}\"")),
    }
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Serve(args) => {
            init_logging(args.log_level.as_deref(), "info");
            serve(args)
        }
        Command::Load(args) => {
            // The progress bar owns the terminal; only problems are logged.
            init_logging(None, "warn");
            load::run(args)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("basalt: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: recovery decisions (a cut WAL tail, an ignored manifest
/// tail, files kept aside or removed), write failures and retries. `level`
/// (the flag), else `BASALT_LOG`, else `default`; a bare level applies to
/// Basalt's own crates, with dependencies at warn.
fn init_logging(level: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let spec = level
        .map(str::to_owned)
        .or_else(|| std::env::var("BASALT_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let spec = if spec.contains(['=', ',']) {
        spec
    } else {
        [
            "basalt",
            "basalt_storage",
            "basalt_query",
            "basalt_server",
            "basalt_formats",
        ]
        .iter()
        .fold("warn".to_owned(), |acc, krate| {
            format!("{acc},{krate}={spec}")
        })
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("basalt: ignoring log filter {spec:?}: {e}");
        EnvFilter::new(default)
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The configuration file, then the flags over it.
fn config(args: ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(data) = args.data {
        config.data = Some(data);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(n) = args.max_connections {
        config.max_connections = n;
    }
    for user in args.users {
        let (name, password) = user
            .split_once('=')
            .ok_or_else(|| format!("--user wants NAME=PASSWORD, not \"{user}\""))?;
        config.users.insert(name.to_string(), password.to_string());
    }
    config.tls_cert = args.tls_cert.or(config.tls_cert);
    config.tls_key = args.tls_key.or(config.tls_key);
    if let Some(on) = args.synchronous_commit {
        config.synchronous_commit = on;
    }
    config.query_memory_limit = args.query_memory_limit.or(config.query_memory_limit);
    config.cache_size = args.cache_size.or(config.cache_size);
    config.allow_files = args.allow_files.or(config.allow_files);
    config.network_threads = args.network_threads.or(config.network_threads);
    config.check().map_err(|e| e.to_string())?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let config = config(args)?;
    let data = config
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(basalt::DEFAULT_DATA_DIR));
    let mut options = Options {
        synchronous_commit: config.synchronous_commit,
        ..Options::default()
    };
    if let Some(bytes) = config.cache_bytes().map_err(|e| e.to_string())? {
        options.cache_bytes = bytes;
    }
    let mut db = basalt::Database::open_with(&data, options)
        .map_err(|e| format!("cannot open {}: {e}", data.display()))?;
    if let Some(bytes) = config.query_memory_bytes().map_err(|e| e.to_string())? {
        db = db
            .with_query_memory_limit(bytes)
            .map_err(|e| e.to_string())?;
    }
    // Accepts and signals only: connections are served on the server's
    // network threads, queries on its query threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let db = runtime.block_on(async {
        let server = Server::bind(db, &config).await.map_err(|e| e.to_string())?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        say(format_args!(
            "basalt: serving {} on {addr}; connect with: psql -h {} -p {} -U {} basalt",
            data.display(),
            addr.ip(),
            addr.port(),
            config
                .users
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("basalt"),
        ));
        server
            .run(shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })?;
    drop(runtime);
    db.close()
        .map_err(|e| format!("error closing {}: {e}", data.display()))?;
    say(format_args!("basalt: shut down cleanly"));
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    say(format_args!(
        "basalt: shutting down: waiting for running statements"
    ));
}

/// A status line on stdout; a closed stdout must not stop the server.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
