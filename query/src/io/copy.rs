//! `COPY ... FROM STDIN` and `COPY ... TO STDOUT` in Postgres' text and CSV
//! formats. Input arrives in chunks of any size (a wire client's CopyData
//! messages); the reader keeps only the unfinished record between chunks
//! and hands rows to the table every [`CHUNK_ROWS`] rows, so the text is
//! never held whole. Output is encoded row by row as the query streams.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::sql::sqlparser::ast::{self, CopyLegacyCsvOption, CopyLegacyOption, CopyOption};
use futures::{Stream, StreamExt};

use crate::sql::error::{Error, Result};
use crate::types::pgtext;

/// Rows parsed before they are written to the table.
pub(crate) const CHUNK_ROWS: usize = 8192;

/// Encoded COPY TO output: one item per row, as Postgres sends them.
pub type CopyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;

/// The text or CSV dialect of one COPY statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyFormat {
    csv: bool,
    delimiter: u8,
    null: String,
    quote: u8,
    escape: u8,
    header: bool,
}

impl CopyFormat {
    /// The format the statement's options ask for, checked as Postgres
    /// checks them.
    pub(crate) fn from_options(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyFormat> {
        let mut spec = FormatSpec::default();
        for option in options {
            spec.apply(option)?;
        }
        for option in legacy {
            spec.apply_legacy(option)?;
        }
        spec.finish()
    }
}

impl CopyFormat {
    /// The fields of one record (without its newline).
    pub(crate) fn split(&self, record: &[u8]) -> std::result::Result<Fields, String> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        if self.csv {
            split_csv(record, self)
        } else {
            split_text(record, self)
        }
    }
}

/// Text in a column's type as Postgres reads it; on failure, the first bad
/// row with its SQLSTATE and message.
pub(crate) fn parse_text_column(
    text: &StringArray,
    field: &Field,
) -> std::result::Result<ArrayRef, (usize, &'static str, String)> {
    parse_column(text, field).map_err(|bad| {
        let message = bad.message(field, text.value(bad.row));
        (bad.row, bad.code, message)
    })
}

/// Options as given, before defaults depend on the format.
#[derive(Default)]
pub(crate) struct FormatSpec {
    pub(crate) csv: bool,
    pub(crate) delimiter: Option<char>,
    pub(crate) null: Option<String>,
    pub(crate) quote: Option<char>,
    pub(crate) escape: Option<char>,
    pub(crate) header: bool,
}

impl FormatSpec {
    fn apply(&mut self, option: &CopyOption) -> Result<()> {
        match option {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "text" => self.csv = false,
                "csv" => self.csv = true,
                "binary" => return Err(Error::not_supported("COPY in binary format")),
                other => {
                    return Err(Error::sql(
                        "22023",
                        format!("COPY format \"{other}\" not recognized"),
                    ))
                }
            },
            CopyOption::Delimiter(c) => self.delimiter = Some(*c),
            CopyOption::Null(text) => self.null = Some(text.clone()),
            CopyOption::Header(header) => self.header = *header,
            CopyOption::Quote(c) => self.quote = Some(*c),
            CopyOption::Escape(c) => self.escape = Some(*c),
            CopyOption::Freeze(_) => {}
            CopyOption::Encoding(name)
                if name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(Error::not_supported(format!("COPY option {other}"))),
        }
        Ok(())
    }

    fn apply_legacy(&mut self, option: &CopyLegacyOption) -> Result<()> {
        match option {
            CopyLegacyOption::Binary => return Err(Error::not_supported("COPY in binary format")),
            CopyLegacyOption::Delimiter(c) => self.delimiter = Some(*c),
            CopyLegacyOption::Null(text) => self.null = Some(text.clone()),
            CopyLegacyOption::Header => self.header = true,
            CopyLegacyOption::Csv(csv_options) => {
                self.csv = true;
                for option in csv_options {
                    match option {
                        CopyLegacyCsvOption::Header => self.header = true,
                        CopyLegacyCsvOption::Quote(c) => self.quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => self.escape = Some(*c),
                        other => return Err(Error::not_supported(format!("COPY option {other}"))),
                    }
                }
            }
            other => return Err(Error::not_supported(format!("COPY option {other}"))),
        }
        Ok(())
    }

    /// The dialect, with Postgres' defaults for what is not given.
    pub(crate) fn finish(self) -> Result<CopyFormat> {
        if !self.csv && (self.quote.is_some() || self.escape.is_some()) {
            return Err(Error::sql(
                "0A000",
                "COPY quote and escape are available only in CSV mode",
            ));
        }
        let delimiter = single_byte(
            "delimiter",
            self.delimiter.unwrap_or(if self.csv { ',' } else { '\t' }),
        )?;
        if matches!(delimiter, b'\r' | b'\n') || (!self.csv && delimiter == b'\\') {
            return Err(Error::sql(
                "22023",
                "COPY delimiter cannot be newline, carriage return or backslash",
            ));
        }
        let quote = single_byte("quote", self.quote.unwrap_or('"'))?;
        let escape = match self.escape {
            Some(c) => single_byte("escape", c)?,
            None => quote,
        };
        if self.csv && quote == delimiter {
            return Err(Error::sql(
                "22023",
                "COPY delimiter and quote must be different",
            ));
        }
        let null = self
            .null
            .unwrap_or_else(|| if self.csv { "" } else { "\\N" }.to_string());
        Ok(CopyFormat {
            csv: self.csv,
            delimiter,
            null,
            quote,
            escape,
            header: self.header,
        })
    }
}

fn single_byte(what: &str, c: char) -> Result<u8> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        Error::sql(
            "0A000",
            format!("COPY {what} must be a single one-byte character"),
        )
    })
}

/// Where COPY-format text comes from, for error messages: a client's COPY
/// names the table as Postgres does (in the DETAIL); a file names itself
/// in the message, so every client and the loader's terminal show it.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Copy {
        table: String,
    },
    File {
        path: String,
    },
    /// A file of rows without lines (Parquet, Arrow): positions are rows.
    Rows {
        path: String,
    },
}

impl Origin {
    /// An error at `line`, and at a column with its offending text if given.
    pub(crate) fn error(
        &self,
        line: u64,
        column: Option<(&str, &str)>,
        code: &'static str,
        message: &str,
    ) -> Error {
        match (self, column) {
            (Origin::Copy { table }, Some((name, value))) => Error::sql(code, message).with_detail(
                format!("COPY {table}, line {line}, column {name}: \"{value}\""),
            ),
            (Origin::Copy { table }, None) => {
                Error::sql(code, message).with_detail(format!("COPY {table}, line {line}"))
            }
            (Origin::File { path }, Some((name, _))) => Error::sql(
                code,
                format!("{path}, line {line}, column {name}: {message}"),
            ),
            (Origin::File { path }, None) => {
                Error::sql(code, format!("{path}, line {line}: {message}"))
            }
            (Origin::Rows { path }, Some((name, _))) => Error::sql(
                code,
                format!("{path}, row {line}, column {name}: {message}"),
            ),
            (Origin::Rows { path }, None) => {
                Error::sql(code, format!("{path}, row {line}: {message}"))
            }
        }
    }
}

/// A row left out of a load that skips bad rows, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
    /// The offending value, or the whole record when it could not be split.
    pub text: String,
}

/// Parsed rows waiting to be written: each column's text, and the input
/// line each row started on (for error messages).
pub(crate) struct RowBuffer {
    columns: Vec<StringBuilder>,
    lines: Vec<u64>,
}

impl RowBuffer {
    fn new(width: usize) -> RowBuffer {
        RowBuffer {
            columns: (0..width).map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// The buffered rows in the columns' types, emptying the buffer.
    #[cfg(test)]
    pub(crate) fn take(&mut self, table: &str, schema: &SchemaRef) -> Result<RecordBatch> {
        let origin = Origin::Copy {
            table: table.to_string(),
        };
        Ok(self.take_lines(&origin, schema, None)?.0)
    }

    /// As [`RowBuffer::take`], with each row's input line. With `rejects`,
    /// a row holding a value its column's type cannot read is left out and
    /// listed there instead of failing the whole batch.
    pub(crate) fn take_lines(
        &mut self,
        origin: &Origin,
        schema: &SchemaRef,
        mut rejects: Option<&mut Vec<Reject>>,
    ) -> Result<(RecordBatch, Vec<u64>)> {
        let mut lines = std::mem::take(&mut self.lines);
        let mut texts: Vec<StringArray> = self.columns.iter_mut().map(|b| b.finish()).collect();
        'parse: loop {
            let mut columns = Vec::with_capacity(texts.len());
            for (text, field) in texts.iter().zip(schema.fields()) {
                let bad = match parse_column(text, field) {
                    Ok(column) => {
                        columns.push(column);
                        continue;
                    }
                    Err(bad) => bad,
                };
                let value = text.value(bad.row).to_string();
                let message = bad.message(field, &value);
                let Some(rejects) = rejects.as_deref_mut() else {
                    let column = Some((field.name().as_str(), value.as_str()));
                    return Err(origin.error(lines[bad.row], column, bad.code, &message));
                };
                rejects.push(Reject {
                    line: lines[bad.row],
                    column: Some(field.name().clone()),
                    message,
                    text: value,
                });
                lines.remove(bad.row);
                texts = texts.iter().map(|t| without_row(t, bad.row)).collect();
                continue 'parse;
            }
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Storage(e.into()))?;
            return Ok((batch, lines));
        }
    }
}

fn without_row(text: &StringArray, row: usize) -> StringArray {
    text.iter()
        .enumerate()
        .filter(|(i, _)| *i != row)
        .map(|(_, v)| v)
        .collect()
}

/// Splits streamed input into records and records into fields.
pub(crate) struct RecordReader {
    format: CopyFormat,
    pub(crate) origin: Origin,
    /// Set when bad records are skipped rather than fatal: those skipped.
    pub(crate) rejects: Option<Vec<Reject>>,
    columns: Vec<String>,
    pending: Vec<u8>,
    /// How far `pending` has been scanned for the end of its first record,
    /// and whether that scan stopped inside CSV quotes.
    scanned: usize,
    in_quotes: bool,
    /// The input line the next record starts on.
    line: u64,
    skip_header: bool,
    /// `\.` ended the data; anything after it is ignored.
    ended: bool,
    pub(crate) rows: RowBuffer,
    /// Where each field of the record being read ends; kept to reuse.
    field_ends: Vec<usize>,
    /// The longest record buffered while its end has not arrived: input
    /// without a newline must not grow memory without bound.
    max_record_bytes: usize,
}

/// The longest COPY record (line) accepted, as PostgreSQL's 1 GB field
/// limit bounds its own; longer is 54000 (program_limit_exceeded).
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 20;

impl RecordReader {
    pub(crate) fn new(format: CopyFormat, table: &str, columns: Vec<String>) -> RecordReader {
        let origin = Origin::Copy {
            table: table.to_string(),
        };
        RecordReader::with_origin(format, origin, columns)
    }

    pub(crate) fn with_origin(
        format: CopyFormat,
        origin: Origin,
        columns: Vec<String>,
    ) -> RecordReader {
        RecordReader {
            skip_header: format.header,
            format,
            origin,
            rejects: None,
            rows: RowBuffer::new(columns.len()),
            columns,
            pending: Vec::new(),
            field_ends: Vec::new(),
            scanned: 0,
            in_quotes: false,
            line: 1,
            ended: false,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }

    /// Numbers the next record's line (for a reader starting mid-file).
    pub(crate) fn set_line(&mut self, line: u64) {
        self.line = line;
    }

    /// Takes a chunk of input, parsing every record it completes.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        // Taken out so records can be read in place while `self` changes.
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.record_end(&pending, start) {
            self.record(&pending[start..end])?;
            start = end + 1;
            self.scanned = start;
            if self.ended {
                break;
            }
        }
        pending.drain(..start);
        self.scanned -= start;
        if pending.len() > self.max_record_bytes && !self.ended {
            return Err(self.error(
                "54000",
                &format!(
                    "COPY record longer than {} bytes without an end of line",
                    self.max_record_bytes
                ),
            ));
        }
        self.pending = pending;
        Ok(())
    }

    /// The input is complete: a last record without a newline counts.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.in_quotes && !self.ended {
            return Err(self.error("22P04", "unterminated CSV quoted field"));
        }
        let rest = std::mem::take(&mut self.pending);
        if !self.ended && !rest.is_empty() {
            self.record(&rest)?;
        }
        Ok(())
    }

    /// The index of the newline ending the record at `start`, scanning on
    /// from where the last call stopped.
    fn record_end(&mut self, bytes: &[u8], start: usize) -> Option<usize> {
        let mut i = self.scanned.max(start);
        while i < bytes.len() {
            if self.format.csv && self.in_quotes {
                let b = bytes[i];
                if b == self.format.escape && self.format.escape != self.format.quote {
                    if i + 1 == bytes.len() {
                        self.scanned = i;
                        return None;
                    }
                    i += 2;
                    continue;
                }
                if b == self.format.quote {
                    self.in_quotes = false;
                }
                i += 1;
                continue;
            }
            // Outside quotes only a newline or an opening quote matters.
            let next = if self.format.csv {
                memchr::memchr2(b'\n', self.format.quote, &bytes[i..])
            } else {
                memchr::memchr(b'\n', &bytes[i..])
            };
            let Some(offset) = next else {
                break;
            };
            i += offset;
            if bytes[i] == b'\n' {
                self.scanned = i + 1;
                return Some(i);
            }
            self.in_quotes = true;
            i += 1;
        }
        self.scanned = bytes.len();
        None
    }

    fn record(&mut self, record: &[u8]) -> Result<()> {
        let line = self.line;
        self.line += 1 + memchr::memchr_iter(b'\n', record).count() as u64;
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        if record == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if std::mem::take(&mut self.skip_header) {
            return Ok(());
        }
        if self.record_without_escapes(line, record) {
            return Ok(());
        }
        let fields = match self.format.split(record) {
            Ok(fields) => fields,
            Err(message) => return self.reject(line, record, "22P04", &message),
        };
        if fields.len() > self.columns.len() {
            let message = "extra data after last expected column";
            return self.reject(line, record, "22P04", message);
        }
        if let Some(missing) = self.columns.get(fields.len()) {
            let message = format!("missing data for column \"{missing}\"");
            return self.reject(line, record, "22P04", &message);
        }
        if fields
            .iter()
            .flatten()
            .any(|bytes| std::str::from_utf8(bytes).is_err())
        {
            let message = "invalid byte sequence for encoding \"UTF8\"";
            return self.reject(line, record, "22021", message);
        }
        for (builder, field) in self.rows.columns.iter_mut().zip(fields) {
            match field.as_deref().map(std::str::from_utf8) {
                Some(Ok(text)) => builder.append_value(text),
                _ => builder.append_null(),
            }
        }
        self.rows.lines.push(line);
        Ok(())
    }

    /// The common case, read without copying: a record with no quote (CSV)
    /// or backslash (text), valid UTF-8, with the right number of fields.
    /// Returns false, having done nothing, for any other record.
    fn record_without_escapes(&mut self, line: u64, record: &[u8]) -> bool {
        let special = if self.format.csv {
            self.format.quote
        } else {
            b'\\'
        };
        if memchr::memchr(special, record).is_some() {
            return false;
        }
        self.field_ends.clear();
        self.field_ends
            .extend(memchr::memchr_iter(self.format.delimiter, record));
        if self.field_ends.len() + 1 != self.columns.len() {
            return false;
        }
        let Ok(text) = std::str::from_utf8(record) else {
            return false;
        };
        self.field_ends.push(record.len());
        let null = self.format.null.as_str();
        let mut start = 0;
        for (builder, &end) in self.rows.columns.iter_mut().zip(&self.field_ends) {
            // The delimiter is ASCII, so every end is a char boundary.
            let field = &text[start..end];
            start = end + 1;
            if field == null {
                builder.append_null();
            } else {
                builder.append_value(field);
            }
        }
        self.rows.lines.push(line);
        true
    }

    /// A record that cannot be read: skipped and listed when bad records
    /// are skipped, the COPY's error otherwise.
    fn reject(
        &mut self,
        line: u64,
        record: &[u8],
        code: &'static str,
        message: &str,
    ) -> Result<()> {
        match &mut self.rejects {
            Some(rejects) => {
                rejects.push(Reject {
                    line,
                    column: None,
                    message: message.to_string(),
                    text: String::from_utf8_lossy(record).into_owned(),
                });
                Ok(())
            }
            None => Err(self.error_at(line, code, message)),
        }
    }

    fn error(&self, code: &'static str, message: &str) -> Error {
        self.error_at(self.line, code, message)
    }

    fn error_at(&self, line: u64, code: &'static str, message: &str) -> Error {
        self.origin.error(line, None, code, message)
    }
}

pub(crate) type Fields = Vec<Option<Vec<u8>>>;

/// One text-format record: fields split on the delimiter, backslash
/// escapes decoded; a field that is exactly the null string is NULL.
fn split_text(record: &[u8], format: &CopyFormat) -> std::result::Result<Fields, String> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i <= record.len() {
        if i == record.len() || record[i] == format.delimiter {
            let raw = &record[start..i];
            fields.push((raw != format.null.as_bytes()).then(|| unescape_text(raw)));
            start = i + 1;
        } else if record[i] == b'\\' {
            // An escaped delimiter belongs to the field.
            i += 1;
        }
        i += 1;
    }
    Ok(fields)
}

fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value);
            }
            other => out.push(other),
        }
    }
    out
}

/// One CSV record. A quoted field is never NULL; an unquoted one equal to
/// the null string is.
fn split_csv(record: &[u8], format: &CopyFormat) -> std::result::Result<Fields, String> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while i < record.len() {
            let b = record[i];
            if in_quotes {
                if b == format.escape && record.get(i + 1) == Some(&format.quote) {
                    value.push(format.quote);
                    i += 2;
                    continue;
                }
                if b == format.quote {
                    in_quotes = false;
                } else {
                    value.push(b);
                }
            } else if b == format.delimiter {
                break;
            } else if b == format.quote {
                in_quotes = true;
                quoted = true;
            } else {
                value.push(b);
            }
            i += 1;
        }
        if in_quotes {
            return Err("unterminated CSV quoted field".to_string());
        }
        let is_null = !quoted && value == format.null.as_bytes();
        fields.push((!is_null).then_some(value));
        if i >= record.len() {
            return Ok(fields);
        }
        i += 1;
    }
}

/// The first value a column's type cannot hold.
#[derive(Debug)]
struct BadValue {
    row: usize,
    code: &'static str,
    detail: Option<String>,
}

impl BadValue {
    fn at(row: usize) -> BadValue {
        BadValue {
            row,
            code: "22P02",
            detail: None,
        }
    }

    fn message(&self, field: &Field, value: &str) -> String {
        let type_name = crate::types::pgtypes::type_name(field);
        match &self.detail {
            Some(detail) => format!("invalid input for type {type_name}: {detail}"),
            None => format!("invalid input syntax for type {type_name}: \"{value}\""),
        }
    }
}

/// Text values in a column's type, read as Postgres reads them.
fn parse_column(text: &StringArray, field: &Field) -> std::result::Result<ArrayRef, BadValue> {
    match field.data_type() {
        DataType::Utf8 => Ok(Arc::new(text.clone())),
        DataType::Binary => parse_bytea(text),
        DataType::List(element) => parse_arrays(text, element),
        other if crate::types::vector::dimensions_of(other).is_some() => parse_vectors(text, other),
        DataType::Interval(arrow_schema::IntervalUnit::MonthDayNano) => parse_intervals(text),
        &DataType::Decimal128(precision, scale) => match plain_decimals(text, precision, scale) {
            Some(decimals) => Ok(Arc::new(decimals)),
            None => cast_checked(text, field.data_type()),
        },
        other => cast_checked(text, other),
    }
}

/// Decimals written plainly (sign, digits, a point, no more fractional
/// digits than the scale) read directly: Arrow's general parser formats a
/// string per value. `None` when any value needs that parser, which then
/// reads the whole column, rounding and errors included.
fn plain_decimals(
    text: &StringArray,
    precision: u8,
    scale: i8,
) -> Option<arrow_array::Decimal128Array> {
    let scale = u32::try_from(scale).ok()?;
    let limit = 10i128.checked_pow(u32::from(precision))?;
    let mut values = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        let value = if text.is_valid(i) {
            plain_decimal(text.value(i).as_bytes(), scale).filter(|v| v.abs() < limit)?
        } else {
            0
        };
        values.push(value);
    }
    arrow_array::Decimal128Array::new(values.into(), text.nulls().cloned())
        .with_precision_and_scale(precision, scale as i8)
        .ok()
}

fn plain_decimal(text: &[u8], scale: u32) -> Option<i128> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (whole, fraction) = match memchr::memchr(b'.', digits) {
        Some(point) => (&digits[..point], &digits[point + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if whole.len() + fraction.len() == 0 || fraction.len() > scale as usize {
        return None;
    }
    let mut value: i128 = 0;
    for &byte in whole.iter().chain(fraction) {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(byte - b'0'))?;
    }
    value = value.checked_mul(10i128.checked_pow(scale - fraction.len() as u32)?)?;
    Some(if negative { -value } else { value })
}

/// pgvector text; the first bad row is found by parsing row by row only
/// once the whole column has failed.
fn parse_vectors(text: &StringArray, to: &DataType) -> std::result::Result<ArrayRef, BadValue> {
    let dimensions = crate::types::vector::dimensions_of(to);
    crate::types::vector::text_to_vectors(text, dimensions).map_err(|e| {
        let row = (0..text.len())
            .find(|&row| {
                crate::types::vector::text_to_vectors(&text.slice(row, 1), dimensions).is_err()
            })
            .unwrap_or(0);
        BadValue {
            row,
            code: e.sqlstate(),
            detail: Some(e.to_string()),
        }
    })
}

fn cast_checked(text: &StringArray, to: &DataType) -> std::result::Result<ArrayRef, BadValue> {
    // Dates and timestamps with PostgreSQL's trailing zone; the rows are
    // the same, so a bad row's number still points into `text`.
    let rewritten = crate::types::text_datetime::arrow_forms(text, to);
    let text = rewritten.as_ref().unwrap_or(text);
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = cast_with_options(text, to, &options).map_err(|e| BadValue {
        detail: Some(e.to_string()),
        ..BadValue::at(0)
    })?;
    // A safe cast turns what it cannot read into NULL: the first such
    // value is the bad one.
    match (0..text.len()).find(|&row| text.is_valid(row) && cast.is_null(row)) {
        Some(row) => Err(BadValue::at(row)),
        None => Ok(cast),
    }
}

/// Intervals as Postgres prints them, or in any form Arrow reads
/// (ISO 8601 among them).
fn parse_intervals(text: &StringArray) -> std::result::Result<ArrayRef, BadValue> {
    use arrow_array::types::IntervalMonthDayNano;
    let mut values = Vec::with_capacity(text.len());
    for (row, value) in text.iter().enumerate() {
        let Some(value) = value else {
            values.push(None);
            continue;
        };
        let parsed = match pgtext::parse_interval(value) {
            Some((months, days, nanos)) => IntervalMonthDayNano::new(months, days, nanos),
            None => datafusion::arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(
                value,
            )
            .map_err(|_| BadValue::at(row))?,
        };
        values.push(Some(parsed));
    }
    Ok(Arc::new(arrow_array::IntervalMonthDayNanoArray::from(
        values,
    )))
}

/// bytea in Postgres' hex (`\x0a1b`) or escape (`a\\b\001`) input form.
fn parse_bytea(text: &StringArray) -> std::result::Result<ArrayRef, BadValue> {
    let values = text
        .iter()
        .enumerate()
        .map(|(row, value)| {
            value
                .map(|v| pgtext::decode_bytea(v).ok_or_else(|| BadValue::at(row)))
                .transpose()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(BinaryArray::from_iter(values)))
}

/// One-dimensional arrays in `{a,"b c",NULL}` form.
fn parse_arrays(
    text: &StringArray,
    element: &Arc<Field>,
) -> std::result::Result<ArrayRef, BadValue> {
    let mut items = StringBuilder::new();
    let mut offsets = vec![0i32];
    let mut nulls = Vec::with_capacity(text.len());
    for (row, value) in text.iter().enumerate() {
        if let Some(value) = value {
            let parsed = split_array(value).ok_or_else(|| BadValue::at(row))?;
            for item in &parsed {
                items.append_option(item.as_deref());
            }
            let count = i32::try_from(parsed.len()).map_err(|_| BadValue::at(row))?;
            offsets.push(offsets[offsets.len() - 1] + count);
        } else {
            offsets.push(offsets[offsets.len() - 1]);
        }
        nulls.push(value.is_some());
    }
    let values = parse_column(&items.finish(), element).map_err(|bad| BadValue {
        detail: bad.detail,
        ..BadValue::at(row_of_item(&offsets, bad.row))
    })?;
    let list = arrow_array::ListArray::try_new(
        element.clone(),
        datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
        values,
        Some(nulls.into()),
    )
    .map_err(|e| BadValue {
        detail: Some(e.to_string()),
        ..BadValue::at(0)
    })?;
    Ok(Arc::new(list))
}

fn row_of_item(offsets: &[i32], item: usize) -> usize {
    offsets
        .iter()
        .skip(1)
        .position(|end| usize::try_from(*end).is_ok_and(|end| end > item))
        .unwrap_or(0)
}

/// The items of `{...}`, unquoted; None when it is not an array literal.
pub(crate) fn split_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            chars.next();
            match c {
                '\\' => item.push(chars.next()?),
                '{' | '}' | '"' => return None,
                c => item.push(c),
            }
        }
        let item = if quoted {
            item
        } else {
            item.trim().to_string()
        };
        items.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
        if chars.next().is_none() {
            return Some(items);
        }
    }
}

/// The COPY TO text of every row of `batches`, one item per row, with a
/// header line before the first row when the format asks for one.
pub(crate) fn encode(
    schema: &SchemaRef,
    batches: crate::stream::SendableRecordBatchStream,
    format: CopyFormat,
) -> CopyStream {
    let mut header = format.header.then(|| {
        let names: Vec<Option<String>> = schema
            .fields()
            .iter()
            .map(|f| Some(f.name().clone()))
            .collect();
        encode_record(&names, &format)
    });
    let rows = batches.flat_map(move |batch| {
        let rows = match batch {
            Ok(batch) => encode_batch(&batch, &format)
                .into_iter()
                .map(Ok)
                .collect::<Vec<_>>(),
            Err(e) => vec![Err(Error::from_datafusion(e))],
        };
        futures::stream::iter(rows)
    });
    // The header rides on the first row so the row count stays right.
    let rows = rows.map(move |row| match (header.take(), row) {
        (Some(mut header), Ok(row)) => {
            header.extend_from_slice(&row);
            Ok(header)
        }
        (_, row) => row,
    });
    Box::pin(rows)
}

fn encode_batch(batch: &RecordBatch, format: &CopyFormat) -> Vec<Vec<u8>> {
    (0..batch.num_rows())
        .map(|row| {
            let values: Vec<Option<String>> = batch
                .columns()
                .iter()
                .map(|column| pgtext::format_value(column.as_ref(), row))
                .collect();
            encode_record(&values, format)
        })
        .collect()
}

fn encode_record(values: &[Option<String>], format: &CopyFormat) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(format.delimiter);
        }
        match value {
            None => out.extend_from_slice(format.null.as_bytes()),
            Some(text) if format.csv => encode_csv_field(text, format, &mut out),
            Some(text) => encode_text_field(text, format.delimiter, &mut out),
        }
    }
    out.push(b'\n');
    out
}

fn encode_text_field(text: &str, delimiter: u8, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            b if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            b => out.push(b),
        }
    }
}

fn encode_csv_field(text: &str, format: &CopyFormat, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let needs_quotes = text == format.null
        || text.starts_with("\\.")
        || bytes
            .iter()
            .any(|&b| b == format.delimiter || b == format.quote || b == b'\n' || b == b'\r');
    if !needs_quotes {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(format.quote);
    for &b in bytes {
        if b == format.quote || b == format.escape {
            out.push(format.escape);
        }
        out.push(b);
    }
    out.push(format.quote);
}

/// The query a COPY TO runs for its source.
pub(crate) fn source_query(source: ast::CopySource) -> String {
    match source {
        ast::CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        ast::CopySource::Table {
            table_name,
            columns,
        } => {
            let list: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", list.join(", "))
        }
        ast::CopySource::Query(query) => query.to_string(),
    }
}

/// The schema of the columns a COPY FROM fills, in the order it lists them.
pub(crate) fn target_schema(
    table_name: &str,
    table: &SchemaRef,
    columns: &[String],
) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|name| {
            table
                .field_with_name(name)
                .map(|f| f.clone().with_nullable(true))
                .map_err(|_| {
                    Error::sql(
                        "42703",
                        format!("column \"{name}\" of relation \"{table_name}\" does not exist"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Decimal128Type;
    use datafusion::sql::sqlparser::ast::Ident;

    fn text() -> CopyFormat {
        CopyFormat::from_options(&[], &[]).unwrap()
    }

    fn csv() -> CopyFormat {
        CopyFormat::from_options(&[CopyOption::Format(Ident::new("csv"))], &[]).unwrap()
    }

    fn read(
        format: CopyFormat,
        chunks: &[&[u8]],
        columns: usize,
    ) -> Result<Vec<Vec<Option<String>>>> {
        let names = (0..columns).map(|i| format!("c{i}")).collect();
        let mut reader = RecordReader::new(format, "t", names);
        for chunk in chunks {
            reader.feed(chunk)?;
        }
        reader.finish()?;
        let schema = Arc::new(Schema::new(
            (0..columns)
                .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let batch = reader.rows.take("t", &schema)?;
        Ok((0..batch.num_rows())
            .map(|row| {
                batch
                    .columns()
                    .iter()
                    .map(|c| pgtext::format_value(c.as_ref(), row))
                    .collect()
            })
            .collect())
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn dates_and_timestamps_read_as_postgres_reads_them() {
        let field = |t: DataType| Field::new("c", t, true);
        let texts = StringArray::from(vec![
            "2024-02-03 +00",
            "2024-2-4",
            "2024-01-03 08:00:00+05:30",
        ]);
        let dates = parse_text_column(&texts, &field(DataType::Date32)).unwrap();
        let shown: Vec<_> = (0..3)
            .map(|r| pgtext::format_value(dates.as_ref(), r))
            .collect();
        assert_eq!(
            shown,
            [
                Some("2024-02-03".into()),
                Some("2024-02-04".into()),
                Some("2024-01-03".into())
            ]
        );
        let timestamp = DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None);
        let stamps = parse_text_column(&texts, &field(timestamp)).unwrap();
        assert_eq!(
            pgtext::format_value(stamps.as_ref(), 2).as_deref(),
            Some("2024-01-03 08:00:00")
        );
        let bad = StringArray::from(vec!["2024-01-01", "2024-13-01 +00"]);
        let (row, _, message) = parse_text_column(&bad, &field(DataType::Date32)).unwrap_err();
        assert_eq!(row, 1);
        assert!(message.contains("2024-13-01 +00"), "{message}");
    }

    #[test]
    fn plain_decimals_read_as_arrow_reads_them() {
        let plain = [
            "0",
            "-0.00",
            "12",
            "12.5",
            "+12.34",
            "-99.99",
            ".5",
            "7.",
            "9999999999999.99",
        ];
        let text = StringArray::from_iter(plain.iter().map(Some).chain([None]));
        let field = Field::new("d", DataType::Decimal128(15, 2), true);
        let fast = plain_decimals(&text, 15, 2).unwrap();
        let arrow = cast_checked(&text, field.data_type()).unwrap();
        assert_eq!(&(Arc::new(fast) as ArrayRef), &arrow);
        assert_eq!(arrow.as_primitive::<Decimal128Type>().value(3), 1250);
        // Anything else goes to Arrow's parser whole: rounding, exponents,
        // spaces, and values too wide are read or refused as before.
        for other in ["1.005", "1e3", " 5", "12345678901234.00", "1.2.3", "-", ""] {
            let text = StringArray::from(vec![Some("1.25"), Some(other)]);
            assert!(plain_decimals(&text, 15, 2).is_none(), "{other}");
            let ours = parse_column(&text, &field).map_err(|bad| bad.row);
            let arrow = cast_checked(&text, field.data_type()).map_err(|bad| bad.row);
            assert_eq!(ours, arrow, "{other}");
        }
    }

    #[test]
    fn a_record_that_never_ends_is_refused_before_it_grows_without_bound() {
        for format in [text(), csv()] {
            let mut reader = RecordReader::new(format, "t", vec!["c0".into()]);
            reader.max_record_bytes = 4096;
            reader.feed(b"short\n").unwrap();
            let chunk = vec![b'x'; 1000];
            let mut outcome = Ok(());
            for _ in 0..10 {
                outcome = reader.feed(&chunk);
                if outcome.is_err() {
                    break;
                }
            }
            let err = outcome.unwrap_err();
            assert_eq!(err.sqlstate(), "54000", "{err}");
            assert!(reader.pending.len() <= 4096 + chunk.len());
        }
        // A long record that does end is fine.
        let mut reader = RecordReader::new(text(), "t", vec!["c0".into()]);
        reader.max_record_bytes = 4096;
        reader.feed(&[b'y'; 3000]).unwrap();
        reader.feed(b"\n").unwrap();
        assert_eq!(reader.rows.len(), 1);
    }

    #[test]
    fn text_format_unescapes_and_reads_nulls_across_chunk_boundaries() {
        let rows = read(
            text(),
            &[
                b"1\ta\\tb\n2\t\\",
                b"N\n3\tx\\\\y\\012\r\n",
                b"\\.\nignored\n",
            ],
            2,
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                row(&[Some("1"), Some("a\tb")]),
                row(&[Some("2"), None]),
                row(&[Some("3"), Some("x\\y\n")]),
            ]
        );
    }

    #[test]
    fn csv_quotes_span_lines_and_keep_quoted_empty_apart_from_null() {
        let rows = read(csv(), &[b"1,\"a,\"\"b\"\"\n", b"c\"\n2,\"\"\n"], 2).unwrap();
        assert_eq!(
            rows,
            vec![
                row(&[Some("1"), Some("a,\"b\"\nc")]),
                row(&[Some("2"), Some("")]),
            ]
        );
        let rows = read(csv(), &[b"3,\n"], 2).unwrap();
        assert_eq!(rows, vec![row(&[Some("3"), None])]);
    }

    #[test]
    fn wrong_field_counts_name_the_line() {
        let err = read(text(), &[b"1\t2\n3\n"], 2).unwrap_err();
        assert_eq!(err.to_string(), "missing data for column \"c1\"");
        assert_eq!(err.detail(), Some("COPY t, line 2"));
        let err = read(csv(), &[b"1,2,3\n"], 2).unwrap_err();
        assert_eq!(err.to_string(), "extra data after last expected column");
        assert_eq!(err.sqlstate(), "22P04");
    }

    #[test]
    fn header_is_skipped_and_invalid_utf8_is_refused() {
        let with_header = CopyFormat::from_options(
            &[
                CopyOption::Format(Ident::new("csv")),
                CopyOption::Header(true),
            ],
            &[],
        )
        .unwrap();
        let rows = read(with_header, &[b"a,b\n1,2\n"], 2).unwrap();
        assert_eq!(rows, vec![row(&[Some("1"), Some("2")])]);
        let err = read(text(), &[b"1\t\xff\n"], 2).unwrap_err();
        assert_eq!(err.sqlstate(), "22021");
    }

    #[test]
    fn values_parse_in_their_column_types_with_the_bad_one_named() {
        let text_values = StringArray::from(vec![Some("1"), None, Some("x")]);
        let bad = parse_column(&text_values, &Field::new("n", DataType::Int32, true)).unwrap_err();
        assert_eq!(bad.row, 2);
        let bytea = parse_column(
            &StringArray::from(vec![Some("\\x0aff"), Some("a\\\\b\\001")]),
            &Field::new("b", DataType::Binary, true),
        )
        .unwrap();
        assert_eq!(pgtext::format_value(bytea.as_ref(), 0).unwrap(), "\\x0aff");
        assert_eq!(
            pgtext::format_value(bytea.as_ref(), 1).unwrap(),
            "\\x615c6201"
        );
        let element = Arc::new(Field::new("item", DataType::Int64, true));
        let arrays = parse_column(
            &StringArray::from(vec![Some("{1, 2,NULL}"), None, Some("{}")]),
            &Field::new("a", DataType::List(element.clone()), true),
        )
        .unwrap();
        assert_eq!(
            pgtext::format_value(arrays.as_ref(), 0).unwrap(),
            "{1,2,NULL}"
        );
        assert!(arrays.is_null(1));
        assert_eq!(pgtext::format_value(arrays.as_ref(), 2).unwrap(), "{}");
        let bad = parse_column(
            &StringArray::from(vec![Some("{1}"), Some("{2,y}")]),
            &Field::new("a", DataType::List(element), true),
        )
        .unwrap_err();
        assert_eq!(bad.row, 1);
        for (value, data_type) in [
            ("t", DataType::Boolean),
            ("2024-02-29", DataType::Date32),
            (
                "2024-02-29 10:11:12.5",
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
            ),
            ("12.50", DataType::Decimal128(10, 2)),
        ] {
            let parsed = parse_column(
                &StringArray::from(vec![value]),
                &Field::new("v", data_type.clone(), true),
            );
            assert!(parsed.is_ok(), "{value} as {data_type}");
        }
    }

    #[test]
    fn encoded_rows_read_back_the_same() {
        for format in [text(), csv()] {
            let values = vec![
                Some("plain".to_string()),
                None,
                Some("tab\there, \"quoted\"\nnewline \\ back".to_string()),
                Some(String::new()),
            ];
            let encoded = encode_record(&values, &format);
            let rows = read(format.clone(), &[&encoded], 4).unwrap();
            assert_eq!(rows, vec![values], "{format:?}");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let err = CopyFormat::from_options(&[CopyOption::Quote('\'')], &[]).unwrap_err();
        assert_eq!(err.sqlstate(), "0A000");
        let err =
            CopyFormat::from_options(&[CopyOption::Format(Ident::new("xml"))], &[]).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
    }
}
