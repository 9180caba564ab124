//! The `basalt` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use basalt::storage::{Db, Options};
use clap::{Parser, Subcommand};

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
    /// Open the data directory and serve it to Postgres clients.
    Serve {
        /// Data directory (created if missing).
        #[arg(long, default_value = basalt::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { data, listen } => serve(data, &listen),
    }
}

fn serve(data: PathBuf, listen: &str) -> ExitCode {
    let db = match Db::open(&data, Options::default()) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("basalt: cannot open {}: {e}", data.display());
            return ExitCode::FAILURE;
        }
    };
    let tables = db.tables();
    println!(
        "basalt: opened {} ({} table{}, last commit {})",
        data.display(),
        tables.len(),
        if tables.len() == 1 { "" } else { "s" },
        db.last_sequence()
    );
    println!("basalt: the Postgres wire server on {listen} arrives with the wire-server issue; nothing to serve yet.");
    match db.close() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt: error closing {}: {e}", data.display());
            ExitCode::FAILURE
        }
    }
}
