//! `basalt load`: files into a table through the bulk path, with a
//! progress bar on a terminal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use basalt::query::{FileFormat, LoadOptions, LoadProgress, OnError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Data directory (created if missing) [default: basalt-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The table to load, optionally schema-qualified.
    #[arg(long)]
    table: String,
    /// Create the table, with column types guessed from the first file, if
    /// it does not exist.
    #[arg(long)]
    create: bool,
    /// Primary key columns of a table --create makes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// csv, tsv, text, parquet, json or arrow [default: from each file's
    /// extension].
    #[arg(long, value_parser = parse_format)]
    format: Option<FileFormat>,
    /// CSV/TSV/text files have no header line.
    #[arg(long)]
    no_header: bool,
    /// Field delimiter of CSV/text files.
    #[arg(long)]
    delimiter: Option<char>,
    /// Quote character of CSV files.
    #[arg(long)]
    quote: Option<char>,
    /// Escape character inside CSV quotes.
    #[arg(long)]
    escape: Option<char>,
    /// Text that stands for NULL [default: empty for CSV, \N for text].
    #[arg(long)]
    null: Option<String>,
    /// The table columns the files fill, comma-separated, in file order.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// abort: any bad row fails the load; skip: bad rows are left out.
    #[arg(long, default_value = "abort", value_parser = parse_on_error)]
    on_error: OnError,
    /// Where skipped rows are listed, as CSV.
    #[arg(long)]
    reject_file: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long, short)]
    quiet: bool,
    /// Files, directories and glob patterns; gzip and zstd are read as is.
    #[arg(required = true)]
    files: Vec<String>,
}

fn parse_format(name: &str) -> Result<FileFormat, String> {
    FileFormat::from_name(name).ok_or_else(|| format!("unknown format \"{name}\""))
}

fn parse_on_error(value: &str) -> Result<OnError, String> {
    match value {
        "abort" => Ok(OnError::Abort),
        "skip" => Ok(OnError::Skip),
        other => Err(format!("expected abort or skip, not \"{other}\"")),
    }
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(basalt::DEFAULT_DATA_DIR));
    let db = basalt::Database::open(&data)
        .map_err(|e| format!("cannot open {}: {e}", data.display()))?;
    let bar = progress_bar(args.quiet);
    let options = LoadOptions {
        format: args.format,
        header: Some(!args.no_header),
        delimiter: args.delimiter,
        quote: args.quote,
        escape: args.escape,
        null: args.null.clone(),
        columns: args.columns.clone(),
        create: args.create,
        primary_key: args.key.clone(),
        on_error: args.on_error,
        reject_file: args.reject_file.clone(),
        progress: Some(Arc::new({
            let bar = bar.clone();
            move |p: &LoadProgress| show(&bar, p)
        })),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(db.load(&args.table, &args.files, options));
    bar.finish_and_clear();
    let report = outcome.map_err(|e| match e.detail() {
        Some(detail) => format!("ERROR {}: {e}\nDETAIL: {detail}", e.sqlstate()),
        None => format!("ERROR {}: {e}", e.sqlstate()),
    })?;
    db.close()
        .map_err(|e| format!("error closing {}: {e}", data.display()))?;
    if !args.quiet {
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "basalt: loaded {} rows into {}{} from {} file{} in {:.2}s ({:.0} rows/s, {}/s){}",
            report.rows,
            report.table,
            if report.created { " (created)" } else { "" },
            report.files,
            if report.files == 1 { "" } else { "s" },
            seconds,
            report.rows as f64 / seconds,
            indicatif::HumanBytes((report.bytes as f64 / seconds) as u64),
            if report.skipped > 0 {
                format!("; skipped {} bad rows", report.skipped)
            } else {
                String::new()
            },
        );
    }
    Ok(())
}

/// A byte-based bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show(bar: &ProgressBar, progress: &LoadProgress) {
    bar.set_length(progress.total_bytes);
    bar.set_position(progress.bytes);
    let seconds = bar.elapsed().as_secs_f64().max(1e-3);
    let mut message = format!(
        "{} rows ({:.0} rows/s)",
        progress.rows,
        progress.rows as f64 / seconds
    );
    if progress.skipped > 0 {
        message.push_str(&format!(", {} skipped", progress.skipped));
    }
    bar.set_message(message);
}
