//! Bulk loading files into a table: `basalt load`, [`Database::load`] and
//! `COPY t FROM '/path'`.
//!
//! Files are CSV, TSV, Postgres text, Parquet, JSON lines or Arrow IPC,
//! optionally gzip- or zstd-compressed. Each file (or, for a large plain
//! CSV/text file whose records are lines, each byte range of it) is parsed
//! on its own thread into the columns' types; the pieces reach the table in
//! input order, so a later row for a key wins. The fast path hands rows to
//! the storage's bulk load, which writes segments and installs them in one
//! manifest edit: the load appears whole or not at all. Where that cannot
//! be used (inside a transaction block, or when a column left out of the
//! input has a DEFAULT to evaluate) the rows go through INSERT instead.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use basalt_formats::files::{self, ByteCounter, InputFile};
use basalt_storage::Db;
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::sql::sqlparser::ast::{self, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

pub use basalt_formats::files::FileFormat;

pub use crate::io::access::FileAccess;

use crate::catalog::DEFAULT_KEY;
use crate::io::copy::{parse_text_column, CopyFormat, FormatSpec, Origin, RecordReader, Reject};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::quote_ident;

/// Rows parsed before a batch goes to the table.
const LOAD_BATCH_ROWS: usize = 65_536;
/// Plain CSV/text files at least this large are split across threads.
const SPLIT_BYTES: u64 = 32 << 20;
/// The largest byte range of a split file: its rows fit the channel it is
/// sent on, so a thread parsing ahead of the consumer is not held back.
const PIECE_BYTES: u64 = 16 << 20;
/// Batches a parsed item may hold waiting for the consumer.
const ITEM_CHANNEL_BATCHES: usize = 4;
/// Items threads may parse ahead of the one being consumed.
const ITEMS_AHEAD: usize = 4;
/// Records read to guess the column types of a CSV file.
const INFER_RECORDS: usize = 10_000;

/// What to do with a row the table cannot take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Fail the load; nothing is loaded.
    #[default]
    Abort,
    /// Leave the row out and list it in the reject file.
    Skip,
}

/// Called as a load advances.
pub type ProgressFn = Arc<dyn Fn(&LoadProgress) + Send + Sync>;

/// How far a load has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadProgress {
    pub rows: u64,
    pub skipped: u64,
    /// Bytes of the input files read (compressed bytes for compressed files).
    pub bytes: u64,
    pub total_bytes: u64,
}

/// How to read the files and what to do with bad rows.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// The files' format; by default each file's extension names it.
    pub format: Option<FileFormat>,
    /// Whether CSV/TSV/text files start with a header line (default: yes
    /// for the loader, no for COPY, as in Postgres).
    pub header: Option<bool>,
    pub delimiter: Option<char>,
    pub quote: Option<char>,
    pub escape: Option<char>,
    /// The text that stands for NULL (default: empty for CSV and TSV, `\N`
    /// for text).
    pub null: Option<String>,
    /// The table columns the files fill, in the files' order (CSV) or by
    /// name (other formats); by default all of them.
    pub columns: Vec<String>,
    /// Create the table, with column types guessed from the first file,
    /// when it does not exist.
    pub create: bool,
    /// The primary key of a table `create` makes.
    pub primary_key: Vec<String>,
    pub on_error: OnError,
    /// Where skipped rows are listed (CSV: file, line, column, error, text).
    pub reject_file: Option<PathBuf>,
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("format", &self.format)
            .field("header", &self.header)
            .field("columns", &self.columns)
            .field("create", &self.create)
            .field("on_error", &self.on_error)
            .field("reject_file", &self.reject_file)
            .finish_non_exhaustive()
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub table: String,
    pub created: bool,
    pub files: usize,
    pub rows: u64,
    pub skipped: u64,
    pub bytes: u64,
}

/// `batch`, whose columns are the table's columns `listed` (by position),
/// as whole rows of `table_schema`: the other columns NULL, NOT NULL
/// checked (23502).
pub(crate) fn whole_rows(
    table_schema: &SchemaRef,
    listed: &[usize],
    batch: &RecordBatch,
    table_name: &str,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = table_schema
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), batch.num_rows()))
        .collect();
    for (position, &column) in listed.iter().enumerate() {
        columns[column] = batch.column(position).clone();
    }
    for (field, column) in table_schema.fields().iter().zip(&columns) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::sql(
                "23502",
                format!(
                    "null value in column \"{}\" of relation \"{table_name}\" violates not-null constraint",
                    field.name(),
                ),
            ));
        }
    }
    RecordBatch::try_new(table_schema.clone(), columns).map_err(arrow_error)
}

/// Begins the name of the staging table of a `--create` load.
pub(crate) const STAGING_MARKER: &str = "__basalt_loading_";

/// The staging table's name (in the same schema as `name`) and the quoted
/// final table name a rename gives it.
pub(crate) fn staging_name(name: &ObjectName) -> Result<(ObjectName, String)> {
    let mut staging = name.clone();
    let Some(last) = staging.0.last_mut() else {
        return Err(Error::sql("42601", "empty table name"));
    };
    let final_ident = last.to_string();
    // Unique enough: two loads creating the same table race on the rename.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let nonce = nanos ^ (u64::from(std::process::id()) << 40);
    *last =
        ast::ObjectNamePart::Identifier(ast::Ident::new(format!("{STAGING_MARKER}{nonce:016x}")));
    Ok((staging, final_ident))
}

/// Drops the staging tables of `--create` loads a crash interrupted.
pub(crate) fn drop_abandoned_staging_tables(db: &basalt_storage::Db) {
    for def in db.tables() {
        let table = def.name.rsplit('.').next().unwrap_or(&def.name);
        if table.starts_with(STAGING_MARKER) {
            match db.drop_table(&def.name) {
                Ok(()) => {
                    tracing::warn!(table = %def.name, "dropped the staging table of an interrupted load")
                }
                Err(e) => {
                    tracing::warn!(table = %def.name, error = %e, "could not drop an interrupted load's staging table")
                }
            }
        }
    }
}

pub(crate) fn parse_table_name(table: &str) -> Result<ObjectName> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(table)
        .and_then(|mut p| p.parse_object_name(false))
        .map_err(|e| Error::sql("42601", format!("invalid table name \"{table}\": {e}")))
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => "58P01",
        std::io::ErrorKind::PermissionDenied => "42501",
        _ => "58030",
    };
    Error::sql(
        code,
        format!(
            "could not open file \"{}\" for reading: {}",
            path.display(),
            io_reason(e)
        ),
    )
}

/// The OS's words for an I/O error, without Rust's "(os error N)".
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn format_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::sql("22P04", format!("{}: {e}", path.display()))
}

/// The format of one file: as given, or as its extension says.
fn format_of(path: &Path, options: &LoadOptions) -> Result<FileFormat> {
    options
        .format
        .or_else(|| FileFormat::from_path(path))
        .ok_or_else(|| {
            Error::sql(
                "22023",
                format!(
                    "cannot tell the format of \"{}\" from its name; give the format",
                    path.display()
                ),
            )
        })
}

/// A piece of input one thread parses: a whole file or a byte range of a
/// plain CSV/text file whose records are lines.
#[derive(Debug, Clone)]
struct Item {
    input: InputFile,
    format: FileFormat,
    range: Option<ByteRange>,
    /// For a Parquet file read by several threads: this thread's row groups.
    part: Option<files::ParquetPart>,
}

#[derive(Debug, Clone, Copy)]
struct ByteRange {
    start: u64,
    end: u64,
    /// The file's line number of the range's first line.
    first_line: u64,
}

/// Parsed rows of the listed columns (nullable, in the table's types) and
/// the input line (or row number) of each.
pub(crate) struct Piece {
    pub(crate) batch: RecordBatch,
    lines: Vec<u64>,
    path: Arc<str>,
}

pub(crate) enum Message {
    Rows(Piece),
    Rejected(Arc<str>, Vec<Reject>),
}

/// Skipped rows with the file each came from.
type Rejects = Vec<(Arc<str>, Reject)>;
type Sender = SyncSender<Result<Message>>;

/// Everything a load needs, shared by its threads.
pub(crate) struct LoadPlan {
    pub(crate) table_name: String,
    pub(crate) table_schema: SchemaRef,
    /// Table columns the files fill, in the files' order.
    pub(crate) listed: Vec<usize>,
    /// Their fields, nullable (NOT NULL is checked with the line at hand).
    listed_schema: SchemaRef,
    items: Vec<Item>,
    options: LoadOptions,
    pub(crate) counter: ByteCounter,
    total_bytes: u64,
}

impl LoadPlan {
    pub(crate) fn new(
        schema: SchemaRef,
        table_name: String,
        inputs: &[InputFile],
        options: &LoadOptions,
    ) -> Result<LoadPlan> {
        let listed = if options.columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            options
                .columns
                .iter()
                .map(|name| {
                    schema.index_of(name).map_err(|_| {
                        Error::sql(
                            "42703",
                            format!(
                                "column \"{name}\" of relation \"{table_name}\" does not exist"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let listed_schema = Arc::new(Schema::new(
            listed
                .iter()
                .map(|&i| schema.field(i).clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut items = Vec::new();
        let mut total_bytes = 0;
        for input in inputs {
            let format = format_of(input.path(), options)?;
            total_bytes += input.len();
            items.extend(split_file(input, format, threads, options)?);
        }
        Ok(LoadPlan {
            table_name,
            table_schema: schema,
            listed,
            listed_schema,
            items,
            options: options.clone(),
            counter: ByteCounter::default(),
            total_bytes,
        })
    }

    /// Files read (a file split across threads counts once).
    pub(crate) fn items_files(&self) -> usize {
        let mut paths: Vec<&Path> = self.items.iter().map(|i| i.input.path()).collect();
        paths.dedup();
        paths.len()
    }

    /// Whether a column the files leave out has a DEFAULT, which only the
    /// INSERT path evaluates.
    pub(crate) fn needs_defaults(&self) -> bool {
        self.table_schema
            .fields()
            .iter()
            .enumerate()
            .any(|(i, f)| !self.listed.contains(&i) && f.metadata().contains_key(DEFAULT_KEY))
    }

    fn skipping(&self) -> bool {
        self.options.on_error == OnError::Skip
    }

    /// Parses the items on worker threads and feeds the pieces, in input
    /// order, to the storage's bulk load; installs it if all went well.
    pub(crate) fn run_bulk(self, db: &Db, table: &str) -> Result<LoadReport> {
        let mut load = db.bulk_load(table)?;
        let mut rejects = Vec::new();
        self.parse_in_parallel(|message| {
            match message {
                Message::Rows(piece) => {
                    let rows = self.table_rows(piece, &mut rejects)?;
                    load.write(&rows)?;
                }
                Message::Rejected(path, list) => {
                    rejects.extend(list.into_iter().map(|r| (path.clone(), r)));
                }
            }
            self.report(load.rows(), rejects.len() as u64);
            Ok(())
        })?;
        let summary = load.finish()?;
        self.report(summary.rows, rejects.len() as u64);
        self.write_rejects(&rejects)?;
        Ok(LoadReport {
            table: self.table_name.clone(),
            created: false,
            files: self.items_files(),
            rows: summary.rows,
            skipped: rejects.len() as u64,
            bytes: self.counter.get(),
        })
    }

    /// Every piece, checked for NOT NULL, for the INSERT path.
    pub(crate) fn read_all(&self) -> Result<(Vec<RecordBatch>, Rejects)> {
        let mut batches = Vec::new();
        let mut rejects = Vec::new();
        self.parse_in_parallel(|message| {
            match message {
                Message::Rows(piece) => {
                    let path = piece.path.clone();
                    let (batch, _) = self.check_not_null(piece, &mut rejects, &path)?;
                    if batch.num_rows() > 0 {
                        batches.push(batch);
                    }
                }
                Message::Rejected(path, list) => {
                    rejects.extend(list.into_iter().map(|r| (path.clone(), r)));
                }
            }
            Ok(())
        })?;
        Ok((batches, rejects))
    }

    fn report(&self, rows: u64, skipped: u64) {
        if let Some(progress) = &self.options.progress {
            progress(&LoadProgress {
                rows,
                skipped,
                bytes: self.counter.get(),
                total_bytes: self.total_bytes,
            });
        }
    }

    /// Runs the items on up to one thread per core and hands their
    /// messages to `consume` in item order.
    pub(crate) fn parse_in_parallel(
        &self,
        mut consume: impl FnMut(Message) -> Result<()>,
    ) -> Result<()> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(self.items.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let window = Window::default();
        let (senders, receivers): (Vec<Sender>, Vec<Receiver<Result<Message>>>) =
            (0..self.items.len())
                .map(|_| sync_channel(ITEM_CHANNEL_BATCHES))
                .unzip();
        let senders: Vec<parking_lot::Mutex<Option<Sender>>> = senders
            .into_iter()
            .map(|s| parking_lot::Mutex::new(Some(s)))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= self.items.len() || !window.wait_for(i) {
                        break;
                    }
                    let Some(sender) = senders[i].lock().take() else {
                        continue;
                    };
                    let outcome =
                        self.parse_item(&self.items[i], &mut |m| sender.send(Ok(m)).is_ok());
                    if let Err(e) = outcome {
                        let _ = sender.send(Err(e));
                    }
                });
            }
            let outcome = (|| {
                for receiver in &receivers {
                    for message in receiver {
                        consume(message?)?;
                    }
                    window.consumed_one();
                }
                Ok(())
            })();
            if outcome.is_err() {
                window.stop();
            }
            drop(receivers);
            outcome
        })
    }

    /// Parses one item, sending its pieces; stops early when `send` fails.
    fn parse_item(&self, item: &Item, send: &mut dyn FnMut(Message) -> bool) -> Result<()> {
        let path: Arc<str> = Arc::from(item.input.path().display().to_string());
        let file = item.input.path();
        if item.format.is_delimited_text() {
            self.parse_delimited(item, path, send)
        } else {
            let mut source: Box<dyn RowSource> = match item.format {
                FileFormat::Parquet => Box::new(FileRows(
                    files::parquet_reader(&item.input, &self.counter, item.part.as_ref())
                        .map_err(|e| format_error(file, e))?,
                )),
                FileFormat::Arrow => Box::new(FileRows(
                    files::arrow_reader(&item.input, &self.counter)
                        .map_err(|e| format_error(file, e))?,
                )),
                _ => Box::new(JsonLines::open(item, self, path.clone())?),
            };
            let mapping = self.map_columns(&source.schema(), file)?;
            let origin = Origin::Rows {
                path: path.to_string(),
            };
            while let Some((batch, lines)) = source.next_rows(file)? {
                let mut rejects = source.take_rejects();
                let (batch, lines) =
                    self.conform(&batch, &mapping, lines, &origin, &mut rejects)?;
                if !rejects.is_empty() && !send(Message::Rejected(path.clone(), rejects)) {
                    return Ok(());
                }
                let piece = Piece {
                    batch,
                    lines,
                    path: path.clone(),
                };
                if !send(Message::Rows(piece)) {
                    return Ok(());
                }
            }
            Ok(())
        }
    }

    fn parse_delimited(
        &self,
        item: &Item,
        path: Arc<str>,
        send: &mut dyn FnMut(Message) -> bool,
    ) -> Result<()> {
        let has_header = self.options.header.unwrap_or(true);
        let first_range = item.range.is_none_or(|r| r.start == 0);
        let format = text_dialect(&self.options, item.format, has_header && first_range)?;
        let names = self
            .listed_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let origin = Origin::File {
            path: path.to_string(),
        };
        let mut reader = RecordReader::with_origin(format, origin.clone(), names);
        if self.skipping() {
            reader.rejects = Some(Vec::new());
        }
        let mut input: Box<dyn Read> = match item.range {
            None => files::open_stream(&item.input, &self.counter)
                .map_err(|e| io_error(item.input.path(), &std::io::Error::other(e.to_string())))?,
            Some(range) => {
                reader.set_line(range.first_line);
                Box::new(RangeReader::open(&item.input, range, self.counter.clone()))
            }
        };
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buffer).map_err(|e| {
                Error::sql(
                    "58030",
                    format!("could not read file \"{path}\": {}", io_reason(&e)),
                )
            })?;
            if n == 0 {
                break;
            }
            reader.feed(&buffer[..n])?;
            if reader.rows.len() >= LOAD_BATCH_ROWS && !self.send_rows(&mut reader, &path, send)? {
                return Ok(());
            }
        }
        reader.finish()?;
        self.send_rows(&mut reader, &path, send)?;
        Ok(())
    }

    /// Converts the reader's buffered rows and sends them with any rows the
    /// reader skipped. Returns whether the receiver still listens.
    fn send_rows(
        &self,
        reader: &mut RecordReader,
        path: &Arc<str>,
        send: &mut dyn FnMut(Message) -> bool,
    ) -> Result<bool> {
        let mut rejects = reader.rejects.take();
        let (batch, lines) =
            reader
                .rows
                .take_lines(&reader.origin, &self.listed_schema, rejects.as_mut())?;
        if let Some(list) = rejects {
            reader.rejects = Some(Vec::new());
            if !list.is_empty() && !send(Message::Rejected(path.clone(), list)) {
                return Ok(false);
            }
        }
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        Ok(send(Message::Rows(Piece {
            batch,
            lines,
            path: path.clone(),
        })))
    }

    /// For each listed column, the index of the file column that fills it.
    fn map_columns(&self, file: &SchemaRef, path: &Path) -> Result<Vec<Option<usize>>> {
        let listed: Vec<&str> = self
            .listed_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        for field in file.fields() {
            if !listed.iter().any(|n| n.eq_ignore_ascii_case(field.name())) {
                return Err(Error::sql(
                    "42703",
                    format!(
                        "{}: column \"{}\" of the file is not a column of \"{}\" being loaded",
                        path.display(),
                        field.name(),
                        self.table_name
                    ),
                ));
            }
        }
        Ok(listed
            .iter()
            .map(|name| {
                file.index_of(name).ok().or_else(|| {
                    file.fields()
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(name))
                })
            })
            .collect())
    }

    /// A batch of a self-describing file in the listed columns' types.
    fn conform(
        &self,
        batch: &RecordBatch,
        mapping: &[Option<usize>],
        mut lines: Vec<u64>,
        origin: &Origin,
        rejects: &mut Vec<Reject>,
    ) -> Result<(RecordBatch, Vec<u64>)> {
        let mut batch = batch.clone();
        'retry: loop {
            let mut columns = Vec::with_capacity(mapping.len());
            for (field, source) in self.listed_schema.fields().iter().zip(mapping) {
                let Some(source) = source else {
                    columns.push(new_null_array(field.data_type(), batch.num_rows()));
                    continue;
                };
                match convert(batch.column(*source), field) {
                    Ok(column) => columns.push(column),
                    Err((row, code, message, text)) => {
                        if !self.skipping() {
                            let column = Some((field.name().as_str(), text.as_str()));
                            return Err(origin.error(lines[row], column, code, &message));
                        }
                        rejects.push(Reject {
                            line: lines[row],
                            column: Some(field.name().clone()),
                            message,
                            text,
                        });
                        let keep: BooleanArray =
                            (0..batch.num_rows()).map(|i| Some(i != row)).collect();
                        batch = filter_record_batch(&batch, &keep).map_err(arrow_error)?;
                        lines.remove(row);
                        continue 'retry;
                    }
                }
            }
            let converted =
                RecordBatch::try_new(self.listed_schema.clone(), columns).map_err(arrow_error)?;
            return Ok((converted, lines));
        }
    }

    /// Leaves out (or fails on) rows with NULL in a NOT NULL column.
    fn check_not_null(
        &self,
        piece: Piece,
        rejects: &mut Rejects,
        path: &Arc<str>,
    ) -> Result<(RecordBatch, Vec<u64>)> {
        let Piece {
            mut batch,
            mut lines,
            ..
        } = piece;
        for (position, &column) in self.listed.iter().enumerate() {
            let field = self.table_schema.field(column);
            if field.is_nullable() || batch.column(position).null_count() == 0 {
                continue;
            }
            let values = batch.column(position).clone();
            let message = format!(
                "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                field.name(),
                self.table_name
            );
            if !self.skipping() {
                let row = (0..values.len()).find(|&r| values.is_null(r)).unwrap_or(0);
                return Err(Error::sql(
                    "23502",
                    format!("{path}, line {}: {message}", lines[row]),
                ));
            }
            for row in (0..values.len()).filter(|&r| values.is_null(r)) {
                rejects.push((
                    path.clone(),
                    Reject {
                        line: lines[row],
                        column: Some(field.name().clone()),
                        message: message.clone(),
                        text: String::new(),
                    },
                ));
            }
            let keep: BooleanArray = (0..values.len())
                .map(|r| Some(values.is_valid(r)))
                .collect();
            batch = filter_record_batch(&batch, &keep).map_err(arrow_error)?;
            lines = lines
                .into_iter()
                .enumerate()
                .filter(|(r, _)| values.is_valid(*r))
                .map(|(_, l)| l)
                .collect();
        }
        Ok((batch, lines))
    }

    /// A piece as whole table rows: NOT NULL checked, columns the files
    /// leave out NULL.
    fn table_rows(&self, piece: Piece, rejects: &mut Rejects) -> Result<RecordBatch> {
        let path = piece.path.clone();
        let (batch, _) = self.check_not_null(piece, rejects, &path)?;
        whole_rows(&self.table_schema, &self.listed, &batch, &self.table_name)
    }

    /// Lists skipped rows in the reject file, if one was asked for.
    pub(crate) fn write_rejects(&self, rejects: &Rejects) -> Result<()> {
        let Some(path) = &self.options.reject_file else {
            return Ok(());
        };
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            writeln!(out, "file,line,column,error,text")?;
            for (file, reject) in rejects {
                let fields = [
                    file.to_string(),
                    reject.line.to_string(),
                    reject.column.clone().unwrap_or_default(),
                    reject.message.clone(),
                    reject.text.clone(),
                ];
                let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                writeln!(out, "{}", quoted.join(","))?;
            }
            out.flush()
        };
        write().map_err(|e| {
            Error::sql(
                "58030",
                format!(
                    "could not write reject file \"{}\": {}",
                    path.display(),
                    io_reason(&e)
                ),
            )
        })
    }
}

fn arrow_error(e: arrow_schema::ArrowError) -> Error {
    Error::Storage(e.into())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A file column in a table column's type: text is read as Postgres reads
/// it, anything else cast. On failure: the first bad row, its SQLSTATE,
/// the message and the value as text.
fn convert(
    column: &ArrayRef,
    field: &Field,
) -> std::result::Result<ArrayRef, (usize, &'static str, String, String)> {
    if column.data_type() == field.data_type() {
        return Ok(column.clone());
    }
    let as_text = || -> Option<StringArray> {
        let cast = cast_with_options(column, &DataType::Utf8, &CastOptions::default()).ok()?;
        cast.as_any().downcast_ref::<StringArray>().cloned()
    };
    if matches!(
        column.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) && field.data_type() != &DataType::Utf8
    {
        if let Some(text) = as_text() {
            return parse_text_column(&text, field)
                .map_err(|(row, code, message)| (row, code, message, text.value(row).to_string()));
        }
    }
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let type_name = crate::types::pgtypes::type_name(field);
    let cast = cast_with_options(column, field.data_type(), &options).map_err(|e| {
        (
            0,
            "42804",
            format!(
                "cannot load a column of type {} into type {type_name}: {e}",
                column.data_type()
            ),
            String::new(),
        )
    })?;
    match (0..column.len()).find(|&r| column.is_valid(r) && cast.is_null(r)) {
        None => Ok(cast),
        Some(row) => {
            let text = as_text()
                .filter(|t| t.is_valid(row))
                .map(|t| t.value(row).to_string())
                .unwrap_or_default();
            Err((
                row,
                "22P02",
                format!("invalid input for type {type_name}: \"{text}\""),
                text,
            ))
        }
    }
}

/// The items a file is read as: byte ranges of a large, plain CSV/text file
/// whose records are all single lines; the whole file otherwise.
fn split_file(
    input: &InputFile,
    format: FileFormat,
    threads: usize,
    options: &LoadOptions,
) -> Result<Vec<Item>> {
    let (path, size) = (input.path(), input.len());
    let whole = vec![Item {
        input: input.clone(),
        format,
        range: None,
        part: None,
    }];
    if format == FileFormat::Parquet && threads > 1 && size >= SPLIT_BYTES {
        return split_parquet(input, threads).map(|parts| parts.unwrap_or(whole));
    }
    if !format.is_delimited_text() || threads < 2 || size < SPLIT_BYTES {
        return Ok(whole);
    }
    let mut magic = [0u8; 4];
    let got = input
        .reader()
        .read(&mut magic)
        .map_err(|e| io_error(path, &e))?;
    if magic[..got].starts_with(&[0x1f, 0x8b])
        || magic[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return Ok(whole);
    }
    // A quote could hold a newline inside a record: such files are read
    // in one piece.
    let quote = (format != FileFormat::Text).then(|| options.quote.unwrap_or('"') as u8);
    let pieces = (threads as u64 * 4).max(size.div_ceil(PIECE_BYTES));
    let targets: Vec<u64> = (1..pieces).map(|i| size * i / pieces).collect();
    let scan = scan_lines(input, &targets, quote)?;
    let Some(starts) = scan else {
        return Ok(whole);
    };
    let mut items = Vec::new();
    let mut bounds: Vec<(u64, u64)> = vec![(0, 1)];
    bounds.extend(starts);
    bounds.dedup_by_key(|b| b.0);
    for (i, &(start, first_line)) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).map_or(size, |b| b.0);
        if end > start {
            items.push(Item {
                input: input.clone(),
                format,
                range: Some(ByteRange {
                    start,
                    end,
                    first_line,
                }),
                part: None,
            });
        }
    }
    Ok(items)
}

/// A large Parquet file as runs of consecutive row groups, one item each;
/// `None` when it has too few row groups to share.
fn split_parquet(input: &InputFile, threads: usize) -> Result<Option<Vec<Item>>> {
    let size = input.len();
    let groups = files::parquet_row_groups(input).map_err(|e| format_error(input.path(), e))?;
    let pieces = (threads * 2).min(groups.len());
    let total_rows: u64 = groups.iter().sum();
    if pieces < 2 || total_rows == 0 {
        return Ok(None);
    }
    let mut items = Vec::with_capacity(pieces);
    let (mut first_row, mut credited) = (0u64, 0u64);
    for piece in 0..pieces {
        let range = groups.len() * piece / pieces..groups.len() * (piece + 1) / pieces;
        let rows: u64 = groups[range.clone()].iter().sum();
        let bytes = if piece + 1 == pieces {
            size - credited
        } else {
            size * (first_row + rows) / total_rows - credited
        };
        items.push(Item {
            input: input.clone(),
            format: FileFormat::Parquet,
            range: None,
            part: Some(files::ParquetPart {
                row_groups: range.collect(),
                first_row,
                bytes,
            }),
        });
        first_row += rows;
        credited += bytes;
    }
    Ok(Some(items))
}

/// One pass over a file: for each target offset, the start of the first
/// line at or after it and that line's number. `None` if the file holds
/// the quote byte.
fn scan_lines(
    input: &InputFile,
    targets: &[u64],
    quote: Option<u8>,
) -> Result<Option<Vec<(u64, u64)>>> {
    let path = input.path();
    let mut file = input.reader();
    let mut buffer = vec![0u8; 8 << 20];
    let mut offset = 0u64;
    let mut lines = 1u64;
    let mut starts = Vec::with_capacity(targets.len());
    let mut next_target = 0;
    loop {
        let n = file.read(&mut buffer).map_err(|e| io_error(path, &e))?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        if quote.is_some_and(|q| memchr::memchr(q, chunk).is_some()) {
            return Ok(None);
        }
        for at in memchr::memchr_iter(b'\n', chunk) {
            lines += 1;
            let line_start = offset + at as u64 + 1;
            while next_target < targets.len() && targets[next_target] < line_start {
                starts.push((line_start, lines));
                next_target += 1;
            }
        }
        offset += n as u64;
    }
    Ok(Some(starts))
}

/// Keeps parsing threads at most [`ITEMS_AHEAD`] items ahead of the
/// consumer, so memory stays bounded however slow the table's side is.
#[derive(Default)]
struct Window {
    state: parking_lot::Mutex<WindowState>,
    moved: parking_lot::Condvar,
}

#[derive(Default)]
struct WindowState {
    consumed: usize,
    stopped: bool,
}

impl Window {
    /// Blocks until item `i` may be parsed; false once the load stops.
    fn wait_for(&self, i: usize) -> bool {
        let mut state = self.state.lock();
        while !state.stopped && i >= state.consumed + ITEMS_AHEAD {
            self.moved.wait(&mut state);
        }
        !state.stopped
    }

    fn consumed_one(&self) {
        self.state.lock().consumed += 1;
        self.moved.notify_all();
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.moved.notify_all();
    }
}

/// A byte range of a file, read as a stream.
struct RangeReader {
    file: files::FileCursor,
    counter: ByteCounter,
}

impl RangeReader {
    fn open(input: &InputFile, range: ByteRange, counter: ByteCounter) -> RangeReader {
        RangeReader {
            file: input.range_reader(range.start, range.end),
            counter,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.counter.add(n);
        Ok(n)
    }
}

/// JSON lines, decoded a chunk of lines at a time so that an error names
/// its line; with rows skipped, a bad line is left out and listed.
struct JsonLines {
    input: Box<dyn std::io::BufRead + Send>,
    schema: SchemaRef,
    line: u64,
    skip: bool,
    path: Arc<str>,
    rejects: Vec<Reject>,
}

impl JsonLines {
    fn open(item: &Item, plan: &LoadPlan, path: Arc<str>) -> Result<JsonLines> {
        let input = files::open_stream(&item.input, &plan.counter)
            .map_err(|e| io_error(item.input.path(), &std::io::Error::other(e.to_string())))?;
        // JSON carries text, numbers, booleans and arrays; other types
        // arrive as text and are read as Postgres reads them.
        let fields: Vec<Field> = plan
            .listed_schema
            .fields()
            .iter()
            .map(|f| {
                let json_native = matches!(
                    f.data_type(),
                    DataType::Boolean
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::Float32
                        | DataType::Float64
                        | DataType::Utf8
                        | DataType::Decimal128(..)
                        | DataType::Date32
                        | DataType::Timestamp(TimeUnit::Microsecond, _)
                        | DataType::List(_)
                );
                if json_native {
                    f.as_ref().clone()
                } else {
                    Field::new(f.name(), DataType::Utf8, true)
                }
            })
            .collect();
        Ok(JsonLines {
            input,
            schema: Arc::new(Schema::new(fields)),
            line: 0,
            skip: plan.skipping(),
            path,
            rejects: Vec::new(),
        })
    }

    fn decode(&self, text: &[u8]) -> std::result::Result<Option<RecordBatch>, String> {
        let mut decoder = files::json_decoder(self.schema.clone()).map_err(|e| e.to_string())?;
        let mut at = 0;
        while at < text.len() {
            let n = decoder.decode(&text[at..]).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            at += n;
        }
        decoder.flush().map_err(|e| e.to_string())
    }

    fn error(&self, line: u64, message: &str) -> Error {
        Error::sql("22P04", format!("{}, line {line}: {message}", self.path))
    }
}

/// Rows of a self-describing file with the line (or row number) of each.
trait RowSource: Send {
    fn schema(&self) -> SchemaRef;
    fn next_rows(&mut self, path: &Path) -> Result<Option<(RecordBatch, Vec<u64>)>>;
    /// Records skipped since the last call.
    fn take_rejects(&mut self) -> Vec<Reject> {
        Vec::new()
    }
}

/// Parquet and Arrow IPC rows, numbered from 1.
struct FileRows(Box<dyn files::BatchSource>);

impl RowSource for FileRows {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn next_rows(&mut self, path: &Path) -> Result<Option<(RecordBatch, Vec<u64>)>> {
        let next = self.0.next_batch().map_err(|e| format_error(path, e))?;
        Ok(next.map(|(first, batch)| {
            let lines = (first + 1..=first + batch.num_rows() as u64).collect();
            (batch, lines)
        }))
    }
}

impl RowSource for JsonLines {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn next_rows(&mut self, path: &Path) -> Result<Option<(RecordBatch, Vec<u64>)>> {
        let mut lines: Vec<(u64, Vec<u8>)> = Vec::new();
        while lines.len() < files::BATCH_ROWS {
            let mut text = Vec::new();
            let n = self.input.read_until(b'\n', &mut text).map_err(|e| {
                Error::sql(
                    "58030",
                    format!(
                        "could not read file \"{}\": {}",
                        path.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            if n == 0 {
                break;
            }
            self.line += 1;
            if !text.iter().all(u8::is_ascii_whitespace) {
                lines.push((self.line, text));
            }
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let batch = match self.decode(&joined(&lines)) {
            Ok(batch) => batch,
            Err(_) => {
                // Find the bad lines one at a time.
                let mut good = Vec::new();
                for (line, text) in lines {
                    match self.decode(&text) {
                        Ok(_) => good.push((line, text)),
                        Err(message) if self.skip => self.rejects.push(Reject {
                            line,
                            column: None,
                            message,
                            text: String::from_utf8_lossy(&text).trim_end().to_string(),
                        }),
                        Err(message) => return Err(self.error(line, &message)),
                    }
                }
                lines = good;
                self.decode(&joined(&lines))
                    .map_err(|m| self.error(self.line, &m))?
            }
        };
        let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        Ok(Some((batch, lines.iter().map(|(l, _)| *l).collect())))
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        std::mem::take(&mut self.rejects)
    }
}

fn joined(lines: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, text) in lines {
        out.extend_from_slice(text);
        if !text.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// `CREATE TABLE` for a file's columns (see [`infer_fields`]).
pub(crate) fn create_table_sql(
    name: &ObjectName,
    input: &InputFile,
    options: &LoadOptions,
) -> Result<String> {
    let fields = infer_fields(input, options)?;
    let mut columns: Vec<String> = fields
        .iter()
        .map(|field| {
            let name = field.name();
            let not_null = if options.primary_key.contains(name) {
                " NOT NULL"
            } else {
                ""
            };
            format!(
                "{} {}{not_null}",
                quote_ident(name),
                crate::types::pgtypes::type_name(field)
            )
        })
        .collect();
    if !options.primary_key.is_empty() {
        let key: Vec<String> = options.primary_key.iter().map(|k| quote_ident(k)).collect();
        columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    Ok(format!("CREATE TABLE {name} ({})", columns.join(", ")))
}

/// The columns a file holds, in types a table can hold: a self-describing
/// file's own, or for CSV/text the narrowest of bigint, double precision,
/// boolean, date, timestamp and text that reads every sampled value.
pub(crate) fn infer_fields(input: &InputFile, options: &LoadOptions) -> Result<Vec<Field>> {
    let path = input.path();
    let format = format_of(path, options)?;
    if format.is_delimited_text() {
        return infer_text_fields(input, format, options);
    }
    let counter = ByteCounter::default();
    let schema = match format {
        FileFormat::Parquet => files::parquet_reader(input, &counter, None).map(|s| s.schema()),
        FileFormat::Arrow => files::arrow_reader(input, &counter).map(|s| s.schema()),
        _ => files::open_stream(input, &counter)
            .and_then(|input| files::infer_json_schema(input, INFER_RECORDS)),
    }
    .map_err(|e| format_error(path, e))?;
    Ok(schema.fields().iter().map(|f| storable(f)).collect())
}

/// An Arrow field as a type a table can hold.
fn storable(field: &Field) -> Field {
    let data_type = match field.data_type() {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..) => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::Int8 | DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::LargeList(item) | DataType::ListView(item) | DataType::FixedSizeList(item, _) => {
            DataType::List(Arc::new(storable(item)))
        }
        DataType::List(item) => DataType::List(Arc::new(storable(item))),
        DataType::Null => DataType::Utf8,
        other => other.clone(),
    };
    Field::new(field.name(), data_type, true)
}

/// Column names (the header's, or column1...) and guessed types of a
/// CSV/text file, from its first records.
fn infer_text_fields(
    file: &InputFile,
    format: FileFormat,
    options: &LoadOptions,
) -> Result<Vec<Field>> {
    let path = file.path();
    let header = options.header.unwrap_or(true);
    let copy_format = text_dialect(options, format, false)?;
    let mut input = files::open_stream(file, &ByteCounter::default())
        .map_err(|e| io_error(path, &std::io::Error::other(e.to_string())))?;
    let mut first = Vec::new();
    input
        .read_until(b'\n', &mut first)
        .map_err(|e| io_error(path, &e))?;
    let first = first.strip_suffix(b"\n").unwrap_or(&first).to_vec();
    let fields = copy_format
        .split(&first)
        .map_err(|m| Error::sql("22P04", format!("{}, line 1: {m}", path.display())))?;
    let names: Vec<String> = if header {
        fields
            .iter()
            .enumerate()
            .map(|(i, f)| match f {
                Some(bytes) if !bytes.is_empty() => String::from_utf8_lossy(bytes).into_owned(),
                _ => format!("column{}", i + 1),
            })
            .collect()
    } else {
        (1..=fields.len()).map(|i| format!("column{i}")).collect()
    };
    let origin = Origin::File {
        path: path.display().to_string(),
    };
    let mut reader = RecordReader::with_origin(copy_format, origin.clone(), names.clone());
    if !header {
        reader.feed(&first)?;
        reader.feed(b"\n")?;
    }
    let mut buffer = vec![0u8; 1 << 16];
    while reader.rows.len() < INFER_RECORDS {
        let n = input.read(&mut buffer).map_err(|e| io_error(path, &e))?;
        if n == 0 {
            reader.finish()?;
            break;
        }
        reader.feed(&buffer[..n])?;
    }
    let text_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let (sample, _) = reader.rows.take_lines(&origin, &text_schema, None)?;
    Ok(names
        .into_iter()
        .zip(sample.columns())
        .map(|(name, column)| Field::new(name, guess_type(column), true))
        .collect())
}

fn guess_type(column: &ArrayRef) -> DataType {
    let candidates = [
        DataType::Int64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, None),
    ];
    if column.null_count() == column.len() {
        return DataType::Utf8;
    }
    let Some(text) = column.as_any().downcast_ref::<StringArray>() else {
        return DataType::Utf8;
    };
    candidates
        .into_iter()
        .find(|candidate| {
            parse_text_column(text, &Field::new("c", candidate.clone(), true)).is_ok()
        })
        .unwrap_or(DataType::Utf8)
}

/// The load options a COPY's option list gives, with the format named by
/// FORMAT or, failing that, by the file's extension (text otherwise).
pub(crate) fn copy_file_options(
    filename: &str,
    options: &[ast::CopyOption],
    legacy: &[ast::CopyLegacyOption],
) -> Result<LoadOptions> {
    let mut load = LoadOptions {
        header: Some(false),
        ..LoadOptions::default()
    };
    let unsupported =
        |what: &dyn std::fmt::Display| Error::not_supported(format!("COPY option {what}"));
    for option in options {
        match option {
            ast::CopyOption::Format(name) => {
                load.format = Some(match name.value.to_ascii_lowercase().as_str() {
                    "binary" => return Err(Error::not_supported("COPY in binary format")),
                    other => FileFormat::from_name(other).ok_or_else(|| {
                        Error::sql("22023", format!("COPY format \"{other}\" not recognized"))
                    })?,
                })
            }
            ast::CopyOption::Delimiter(c) => load.delimiter = Some(*c),
            ast::CopyOption::Null(text) => load.null = Some(text.clone()),
            ast::CopyOption::Header(header) => load.header = Some(*header),
            ast::CopyOption::Quote(c) => load.quote = Some(*c),
            ast::CopyOption::Escape(c) => load.escape = Some(*c),
            ast::CopyOption::Freeze(_) => {}
            ast::CopyOption::Encoding(name)
                if name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(unsupported(other)),
        }
    }
    for option in legacy {
        match option {
            ast::CopyLegacyOption::Binary => {
                return Err(Error::not_supported("COPY in binary format"))
            }
            ast::CopyLegacyOption::Delimiter(c) => load.delimiter = Some(*c),
            ast::CopyLegacyOption::Null(text) => load.null = Some(text.clone()),
            ast::CopyLegacyOption::Header => load.header = Some(true),
            ast::CopyLegacyOption::Csv(csv_options) => {
                load.format = Some(FileFormat::Csv);
                for option in csv_options {
                    match option {
                        ast::CopyLegacyCsvOption::Header => load.header = Some(true),
                        ast::CopyLegacyCsvOption::Quote(c) => load.quote = Some(*c),
                        ast::CopyLegacyCsvOption::Escape(c) => load.escape = Some(*c),
                        other => return Err(unsupported(other)),
                    }
                }
            }
            other => return Err(unsupported(other)),
        }
    }
    let format = load
        .format
        .or_else(|| FileFormat::from_path(Path::new(filename)))
        .unwrap_or(FileFormat::Text);
    load.format = Some(format);
    Ok(load)
}

/// Whether a column goes out as its Postgres text: types the format has
/// no place for (interval in Parquet; bytes, uuid and interval in JSON,
/// which would print them in a form Postgres does not read back).
fn exported_as_text(data_type: &DataType, format: FileFormat) -> bool {
    match format {
        FileFormat::Parquet => matches!(data_type, DataType::Interval(_)),
        FileFormat::Json => matches!(
            data_type,
            DataType::Interval(_) | DataType::Binary | DataType::FixedSizeBinary(_)
        ),
        _ => false,
    }
}

pub(crate) fn export_schema(schema: &SchemaRef, format: FileFormat) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if exported_as_text(f.data_type(), format) {
                Field::new(f.name(), DataType::Utf8, true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

pub(crate) fn export_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                return column.clone();
            }
            let text: StringArray = (0..column.len())
                .map(|row| crate::types::pgtext::format_value(column.as_ref(), row))
                .collect();
            Arc::new(text) as ArrayRef
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

/// The COPY dialect of a CSV, TSV or text file.
pub(crate) fn text_dialect(
    load: &LoadOptions,
    format: FileFormat,
    header: bool,
) -> Result<CopyFormat> {
    let tsv = format == FileFormat::Tsv;
    FormatSpec {
        csv: format != FileFormat::Text,
        delimiter: load.delimiter.or(tsv.then_some('\t')),
        null: load.null.clone().or(tsv.then(String::new)),
        quote: load.quote,
        escape: load.escape,
        header,
    }
    .finish()
}
