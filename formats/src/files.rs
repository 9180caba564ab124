//! Import and export codecs for files that are not Basalt's own: Parquet,
//! JSON lines and Arrow IPC through the Arrow project's readers and writers,
//! and the opening, format detection and gzip/zstd decompression every input
//! goes through (CSV and text are split by the query layer's COPY reader,
//! which keeps Postgres' quoting and NULL rules). These layouts are the
//! upstream projects'; FORMAT.md section 11 lists what Basalt expects of them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};

use crate::error::{Error, Result};

/// Rows per batch the readers produce.
pub const BATCH_ROWS: usize = 8192;

/// A file format the loader and `COPY` read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    /// Tab-separated values: CSV with a tab delimiter.
    Tsv,
    /// Postgres' COPY text format.
    Text,
    Parquet,
    /// JSON lines: one object per line.
    Json,
    /// Arrow IPC, file or stream form.
    Arrow,
}

impl FileFormat {
    /// The format a name given by a user stands for.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        Some(match name.to_ascii_lowercase().as_str() {
            "csv" => FileFormat::Csv,
            "tsv" | "tab" => FileFormat::Tsv,
            "text" | "txt" => FileFormat::Text,
            "parquet" | "pq" => FileFormat::Parquet,
            "json" | "jsonl" | "ndjson" => FileFormat::Json,
            "arrow" | "ipc" | "feather" | "arrows" => FileFormat::Arrow,
            _ => return None,
        })
    }

    /// The format a file's extension names, looking past `.gz` and `.zst`.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let name = path.file_name()?.to_str()?;
        let mut parts = name.rsplit('.');
        let mut extension = parts.next()?;
        if matches!(extension, "gz" | "gzip" | "zst" | "zstd") {
            extension = parts.next()?;
        }
        if extension == name {
            return None;
        }
        FileFormat::from_name(extension)
    }

    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Tsv => "tsv",
            FileFormat::Text => "text",
            FileFormat::Parquet => "parquet",
            FileFormat::Json => "json",
            FileFormat::Arrow => "arrow",
        }
    }

    /// Whether records are lines of text the COPY reader splits.
    pub fn is_delimited_text(self) -> bool {
        matches!(self, FileFormat::Csv | FileFormat::Tsv | FileFormat::Text)
    }
}

/// Bytes read from a file so far, shared with whoever reports progress.
#[derive(Debug, Clone, Default)]
pub struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// An input file opened once and read by position: each reader of it has
/// its own cursor, so threads share one descriptor and nothing opens the
/// file by its name again, by which time the name could point elsewhere.
#[derive(Debug, Clone)]
pub struct InputFile {
    file: Arc<File>,
    /// The name the user gave, for messages.
    path: Arc<Path>,
    len: u64,
}

impl InputFile {
    /// Opens `path` as it stands (for callers who trust the name).
    pub fn open(path: &Path) -> std::io::Result<InputFile> {
        InputFile::from_file(File::open(path)?, path.to_path_buf())
    }

    /// An input over a file already opened, shown to the user as `path`.
    pub fn from_file(file: File, path: PathBuf) -> std::io::Result<InputFile> {
        let len = file.metadata()?.len();
        Ok(InputFile {
            file: Arc::new(file),
            path: path.into(),
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader from the start, with a cursor of its own.
    pub fn reader(&self) -> FileCursor {
        FileCursor {
            file: self.file.clone(),
            position: 0,
            end: self.len,
        }
    }

    /// A reader of bytes `start..end` only.
    pub fn range_reader(&self, start: u64, end: u64) -> FileCursor {
        FileCursor {
            file: self.file.clone(),
            position: start,
            end: end.min(self.len),
        }
    }
}

/// A cursor over an [`InputFile`], reading by position up to its end.
#[derive(Debug)]
pub struct FileCursor {
    file: Arc<File>,
    position: u64,
    end: u64,
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for FileCursor {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.end.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.position)
    }
}

impl parquet::file::reader::Length for InputFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for InputFile {
    type T = FileCursor;

    fn get_read(&self, start: u64) -> parquet::errors::Result<FileCursor> {
        Ok(self.range_reader(start, self.len))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let mut buffer = vec![0u8; length];
        self.file
            .read_exact_at(&mut buffer, start)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(buffer.into())
    }
}

/// A reader that counts the bytes taken from the file under it.
struct Counting<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.add(n);
        Ok(n)
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Opens a file for reading as a byte stream, decompressing gzip or zstd
/// (recognised by their magic numbers, whatever the name says). The
/// counter sees the bytes of the file itself.
pub fn open_stream(input: &InputFile, counter: &ByteCounter) -> Result<Box<dyn BufRead + Send>> {
    let mut file = input.reader();
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut file, &mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    let counted = Counting {
        inner: file,
        counter: counter.clone(),
    };
    let magic = &magic[..got];
    Ok(if magic.starts_with(GZIP_MAGIC) {
        let decoder = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, counted));
        Box::new(BufReader::with_capacity(1 << 20, decoder))
    } else if magic.starts_with(ZSTD_MAGIC) {
        Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::new(counted)?,
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, counted))
    })
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Rows in each row group of a Parquet file.
pub fn parquet_row_groups(input: &InputFile) -> Result<Vec<u64>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(input.clone())?;
    Ok(reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect())
}

/// Some row groups of a Parquet file, read on their own (by one thread of
/// several): which, the file's row number of their first row, and the
/// share of the file's bytes to count as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetPart {
    pub row_groups: Vec<usize>,
    pub first_row: u64,
    pub bytes: u64,
}

/// Record batches from a Parquet file (or part of one), with the file's
/// Arrow schema.
pub fn parquet_reader(
    input: &InputFile,
    counter: &ByteCounter,
    part: Option<&ParquetPart>,
) -> Result<Box<dyn BatchSource>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut total = input.len();
    let mut builder =
        ParquetRecordBatchReaderBuilder::try_new(input.clone())?.with_batch_size(BATCH_ROWS);
    let mut done = 0;
    if let Some(part) = part {
        builder = builder.with_row_groups(part.row_groups.clone());
        total = part.bytes;
        done = part.first_row;
    }
    Ok(Box::new(WholeFileSource {
        reader: Box::new(builder.build()?),
        counter: counter.clone(),
        total,
        done,
    }))
}

/// Record batches from an Arrow IPC file, or an IPC stream.
pub fn arrow_reader(input: &InputFile, counter: &ByteCounter) -> Result<Box<dyn BatchSource>> {
    let mut file = input.reader();
    let total = input.len();
    let mut magic = [0u8; 6];
    let got = read_up_to(&mut file, &mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    let reader: Box<dyn RecordBatchReader + Send> = if &magic[..got] == b"ARROW1" {
        Box::new(arrow_ipc::reader::FileReader::try_new(file, None)?)
    } else {
        Box::new(arrow_ipc::reader::StreamReader::try_new(
            BufReader::with_capacity(1 << 20, file),
            None,
        )?)
    };
    Ok(Box::new(WholeFileSource {
        reader,
        counter: counter.clone(),
        total,
        done: 0,
    }))
}

/// Batches read from a self-describing file, with the number of the
/// file's first row in each.
pub trait BatchSource: Send {
    fn schema(&self) -> SchemaRef;
    /// The next batch and the 0-based row number its first row has in the file.
    fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>>;
}

/// Parquet and IPC readers own their file: progress is credited in
/// proportion to the rows read, the whole file by the end.
struct WholeFileSource {
    reader: Box<dyn RecordBatchReader + Send>,
    counter: ByteCounter,
    total: u64,
    done: u64,
}

impl BatchSource for WholeFileSource {
    fn schema(&self) -> SchemaRef {
        self.reader.schema()
    }

    fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>> {
        match self.reader.next().transpose()? {
            Some(batch) => {
                let first = self.done;
                self.done += batch.num_rows() as u64;
                Ok(Some((first, batch)))
            }
            None => {
                self.counter.add(self.total as usize);
                self.total = 0;
                Ok(None)
            }
        }
    }
}

/// The schema a sample of JSON lines suggests.
pub fn infer_json_schema(reader: impl BufRead, max_records: usize) -> Result<SchemaRef> {
    let (schema, _) = arrow_json::reader::infer_json_schema(reader, Some(max_records))?;
    Ok(Arc::new(schema))
}

/// A JSON-lines decoder into `schema`: numbers and booleans are accepted
/// for text columns, fields the schema lacks are an error.
pub fn json_decoder(schema: SchemaRef) -> Result<arrow_json::reader::Decoder> {
    Ok(arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(BATCH_ROWS)
        .with_coerce_primitive(true)
        .with_strict_mode(true)
        .build_decoder()?)
}

/// Writes record batches to a file in one of the self-describing formats.
pub trait BatchWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Completes the file (footer, flush, fsync).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A writer for `format` (Parquet, JSON lines or Arrow IPC) into `file`,
/// which the caller created.
pub fn batch_writer(
    file: File,
    format: FileFormat,
    schema: SchemaRef,
) -> Result<Box<dyn BatchWriter>> {
    let file = std::io::BufWriter::with_capacity(1 << 20, file);
    Ok(match format {
        FileFormat::Parquet => {
            let properties = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            Box::new(ParquetOut(parquet::arrow::ArrowWriter::try_new(
                file,
                schema,
                Some(properties),
            )?))
        }
        FileFormat::Json => Box::new(JsonOut(arrow_json::LineDelimitedWriter::new(file))),
        FileFormat::Arrow => Box::new(ArrowOut(arrow_ipc::writer::FileWriter::try_new(
            file, &schema,
        )?)),
        other => {
            return Err(Error::UnsupportedType(format!(
                "{} is written by the COPY text encoder",
                other.name()
            )))
        }
    })
}

struct ParquetOut(parquet::arrow::ArrowWriter<std::io::BufWriter<File>>);
struct JsonOut(arrow_json::LineDelimitedWriter<std::io::BufWriter<File>>);
struct ArrowOut(arrow_ipc::writer::FileWriter<std::io::BufWriter<File>>);

fn sync(out: std::io::BufWriter<File>) -> Result<()> {
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

impl BatchWriter for ParquetOut {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.0.write(batch)?)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        sync(self.0.into_inner()?)
    }
}

impl BatchWriter for JsonOut {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.0.write(batch)?)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.0.finish()?;
        let mut out = self.0.into_inner();
        out.flush()?;
        sync(out)
    }
}

impl BatchWriter for ArrowOut {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.0.write(batch)?)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.0.finish()?;
        sync(self.0.into_inner()?)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Arrow(ArrowError::ExternalError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn formats_are_named_by_extension_past_compression() {
        let of = |name: &str| FileFormat::from_path(Path::new(name));
        assert_eq!(of("a/lineitem.csv"), Some(FileFormat::Csv));
        assert_eq!(of("x.tsv.gz"), Some(FileFormat::Tsv));
        assert_eq!(of("x.jsonl.zst"), Some(FileFormat::Json));
        assert_eq!(of("x.parquet"), Some(FileFormat::Parquet));
        assert_eq!(of("x.arrow"), Some(FileFormat::Arrow));
        assert_eq!(of("csv"), None);
        assert_eq!(of("x.gz"), None);
        assert_eq!(of("x.xlsx"), None);
    }

    #[test]
    fn compressed_inputs_read_back_whatever_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a,b\n1,2\n".repeat(1000);
        let gz = dir.path().join("data.csv");
        let mut encoder =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        encoder.write_all(&text).unwrap();
        encoder.finish().unwrap();
        let zst = dir.path().join("data.csv.zst");
        std::fs::write(&zst, zstd::encode_all(&text[..], 1).unwrap()).unwrap();
        for path in [gz, zst] {
            let counter = ByteCounter::default();
            let mut out = Vec::new();
            open_stream(&InputFile::open(&path).unwrap(), &counter)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, text);
            assert_eq!(counter.get(), std::fs::metadata(&path).unwrap().len());
        }
    }

    #[test]
    fn parquet_and_arrow_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        for format in [FileFormat::Parquet, FileFormat::Arrow] {
            let path = dir.path().join(format!("t.{}", format.name()));
            let file = File::create(&path).unwrap();
            let mut writer = batch_writer(file, format, schema.clone()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            let counter = ByteCounter::default();
            let input = InputFile::open(&path).unwrap();
            let mut source = match format {
                FileFormat::Parquet => parquet_reader(&input, &counter, None).unwrap(),
                _ => arrow_reader(&input, &counter).unwrap(),
            };
            let (first, read) = source.next_batch().unwrap().unwrap();
            assert_eq!((first, &read), (0, &batch));
            assert!(source.next_batch().unwrap().is_none());
            assert_eq!(counter.get(), std::fs::metadata(&path).unwrap().len());
        }
    }

    #[test]
    fn a_truncated_parquet_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        std::fs::write(&path, b"PAR1 not really").unwrap();
        let err = parquet_reader(
            &InputFile::open(&path).unwrap(),
            &ByteCounter::default(),
            None,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("arrow error"), "{err}");
    }
}
