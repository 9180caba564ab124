//! WAL files and record payloads (FORMAT.md, "WAL file and WAL record"). Each
//! committed write batch is one framed record (see [`crate::frame`]). A version
//! 2 file opens with a [`WAL_FILE_HEADER_LEN`]-byte header and holds synced
//! frames; a version 1 file has no header and holds plain frames.
//!
//! ```text
//! seq: u64 | n_tables: u32 | n_tables x table write
//! table write: table_id u32 | schema_version u32 | num_rows u32 | n_columns u32
//!              | n_columns x (payload_len u32 | array payload)
//! ```
//! A table write's columns are `_key` (Binary), `_op` (UInt8) and then the
//! table's columns as of `schema_version`, all nullable.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::MutableBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::array::{decode_array, encode_array_into, ArrayScratch};
use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::frame::{read_log, read_synced_log, LogEnd, FRAME_HEADER_LEN, SYNCED_FRAME_HEADER_LEN};
use crate::segment::{KEY_COLUMN, OP_COLUMN};

pub const WAL_MAGIC: [u8; 4] = *b"BWAL";
/// The version new WAL files are written in.
pub const WAL_FILE_VERSION: u32 = 2;
/// `magic [4] | version u32 | reserved u32 (0) | crc32 of bytes 0..12`.
pub const WAL_FILE_HEADER_LEN: usize = 16;

pub fn encode_wal_file_header() -> [u8; WAL_FILE_HEADER_LEN] {
    let mut header = [0u8; WAL_FILE_HEADER_LEN];
    header[..4].copy_from_slice(&WAL_MAGIC);
    header[4..8].copy_from_slice(&WAL_FILE_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A WAL file's records (offset of each frame and its payload) and how it ends.
#[derive(Debug)]
pub struct WalFileContents<'a> {
    pub version: u32,
    pub records: Vec<(usize, &'a [u8])>,
    pub end: LogEnd,
    /// Where a record's payload starts relative to its frame's offset.
    pub payload_offset: usize,
}

/// Reads a WAL file of either version. A file too short to hold a header
/// whose bytes are a header's beginning was torn while being created.
pub fn read_wal_file_contents(data: &[u8]) -> Result<WalFileContents<'_>> {
    let magic_len = data.len().min(WAL_MAGIC.len());
    if magic_len == 0 || data[..magic_len] != WAL_MAGIC[..magic_len] {
        // Version 1: no header. A v1 frame cannot start with the magic, whose
        // length field (0x4c415742) exceeds the largest frame.
        let (records, end) = read_log(data);
        return Ok(WalFileContents {
            version: 1,
            records,
            end,
            payload_offset: FRAME_HEADER_LEN,
        });
    }
    if data.len() < WAL_FILE_HEADER_LEN {
        let expected = encode_wal_file_header();
        let end = if data == &expected[..data.len()] {
            LogEnd::TornTail {
                offset: 0,
                reason: "truncated WAL file header".into(),
            }
        } else {
            LogEnd::Corrupt {
                offset: 0,
                reason: "damaged WAL file header".into(),
            }
        };
        return Ok(WalFileContents {
            version: WAL_FILE_VERSION,
            records: Vec::new(),
            end,
            payload_offset: SYNCED_FRAME_HEADER_LEN,
        });
    }
    let stored = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
    let computed = crc32fast::hash(&data[..12]);
    if stored != computed {
        return Err(Error::Checksum {
            offset: 12,
            stored,
            computed,
        });
    }
    let version = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if version != WAL_FILE_VERSION {
        return Err(Error::corrupt(
            4,
            format!("WAL file version {version} is not one this build reads (1, 2)"),
        ));
    }
    let (records, end) = read_synced_log(data, WAL_FILE_HEADER_LEN);
    Ok(WalFileContents {
        version,
        records,
        end,
        payload_offset: SYNCED_FRAME_HEADER_LEN,
    })
}

/// The schema of a table write: `_key`, `_op`, then the table's columns nullable.
pub fn wal_batch_schema(table_schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Arc::new(Field::new(KEY_COLUMN, DataType::Binary, false)),
        Arc::new(Field::new(OP_COLUMN, DataType::UInt8, false)),
    ];
    fields.extend(
        table_schema
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
    );
    Arc::new(Schema::new(fields))
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableWrite {
    pub table_id: u32,
    pub schema_version: u32,
    /// Columns per [`wal_batch_schema`].
    pub batch: RecordBatch,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    pub seq: u64,
    pub tables: Vec<TableWrite>,
}

pub fn encode_wal_record(record: &WalRecord) -> Result<Vec<u8>> {
    let mut e = Encoder::new();
    let mut scratch = ArrayScratch::default();
    e.u64(record.seq);
    e.u32(record.tables.len() as u32);
    for t in &record.tables {
        e.u32(t.table_id);
        e.u32(t.schema_version);
        e.u32(t.batch.num_rows() as u32);
        e.u32(t.batch.num_columns() as u32);
        for column in t.batch.columns() {
            encode_array_into(&column.to_data(), &mut scratch, &mut e)?;
        }
    }
    Ok(e.into_inner())
}

/// The sequence number of an encoded record, without decoding it.
pub fn wal_record_seq(payload: &[u8]) -> Result<u64> {
    Decoder::new(payload).u64()
}

/// Decodes a record; `schema_of(table_id, schema_version)` gives the schema
/// of [`wal_batch_schema`] the writes were made under, or `None` to skip that
/// table's write (a dropped table, or one already flushed).
pub fn decode_wal_record(
    payload: &[u8],
    schema_of: &mut dyn FnMut(u32, u32) -> Result<Option<SchemaRef>>,
) -> Result<WalRecord> {
    let mut d = Decoder::new(payload);
    let seq = d.u64()?;
    let n_tables = d.count(16)?;
    let mut tables = Vec::with_capacity(n_tables);
    for _ in 0..n_tables {
        let at = d.position();
        let table_id = d.u32()?;
        let schema_version = d.u32()?;
        let num_rows = d.u32()? as usize;
        let n_columns = d.count(4)?;
        let Some(schema) = schema_of(table_id, schema_version)? else {
            for _ in 0..n_columns {
                d.bytes()?;
            }
            continue;
        };
        if schema.fields().len() != n_columns {
            return Err(Error::corrupt(
                at,
                format!(
                    "table {table_id} write has {n_columns} columns, schema has {}",
                    schema.fields().len()
                ),
            ));
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(n_columns);
        for field in schema.fields() {
            let column_at = d.position();
            let bytes = d.bytes()?;
            // Copy into an aligned buffer: the record itself sits at any address.
            let mut aligned = MutableBuffer::new(bytes.len());
            aligned.extend_from_slice(bytes);
            let array = decode_array(&aligned.into(), field.data_type())
                .map_err(|e| e.at_base(column_at as u64 + 4))?;
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(num_rows)),
        )
        .map_err(|e| Error::corrupt(at, format!("invalid table write: {e}")))?;
        tables.push(TableWrite {
            table_id,
            schema_version,
            batch,
        });
    }
    d.expect_end("WAL record")?;
    Ok(WalRecord { seq, tables })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int32Array, StringArray, UInt8Array};

    fn sample() -> (WalRecord, SchemaRef) {
        let table = Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Utf8, true),
        ]);
        let schema = wal_batch_schema(&table);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values([b"k1", b"k2"])),
                Arc::new(UInt8Array::from(vec![0, 1])),
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
            ],
        )
        .unwrap();
        let record = WalRecord {
            seq: 42,
            tables: vec![TableWrite {
                table_id: 3,
                schema_version: 1,
                batch,
            }],
        };
        (record, schema)
    }

    #[test]
    fn wal_record_round_trips() {
        let (record, schema) = sample();
        let bytes = encode_wal_record(&record).unwrap();
        let back = decode_wal_record(&bytes, &mut |id, v| {
            assert_eq!((id, v), (3, 1));
            Ok(Some(schema.clone()))
        })
        .unwrap();
        assert_eq!(back, record);
        assert_eq!(wal_record_seq(&bytes).unwrap(), record.seq);
    }

    #[test]
    fn skipped_tables_are_left_out() {
        let (record, _) = sample();
        let bytes = encode_wal_record(&record).unwrap();
        let back = decode_wal_record(&bytes, &mut |_, _| Ok(None)).unwrap();
        assert_eq!(back.seq, record.seq);
        assert!(back.tables.is_empty());
    }

    #[test]
    fn truncated_record_is_an_error() {
        let (record, schema) = sample();
        let bytes = encode_wal_record(&record).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_wal_record(&bytes[..cut], &mut |_, _| Ok(Some(schema.clone()))).is_err()
            );
        }
    }

    #[test]
    fn both_file_versions_are_read() {
        let (record, _) = sample();
        let payload = encode_wal_record(&record).unwrap();
        let mut v1 = Vec::new();
        crate::frame::encode_frame(&payload, &mut v1);
        let contents = read_wal_file_contents(&v1).unwrap();
        assert_eq!((contents.version, contents.records.len()), (1, 1));
        assert_eq!(contents.records[0].1, &payload[..]);

        let mut v2 = encode_wal_file_header().to_vec();
        crate::frame::encode_synced_frame(&payload, 16, &mut v2);
        v2.resize(4096, 0);
        let contents = read_wal_file_contents(&v2).unwrap();
        assert_eq!((contents.version, contents.records.len()), (2, 1));
        assert_eq!(contents.records[0], (WAL_FILE_HEADER_LEN, &payload[..]));
        assert_eq!(contents.end, LogEnd::Clean);
    }

    #[test]
    fn a_damaged_or_unknown_header_is_an_error_and_a_torn_one_a_torn_tail() {
        let header = encode_wal_file_header();
        let mut flipped = header.to_vec();
        flipped[5] ^= 1;
        assert!(matches!(
            read_wal_file_contents(&flipped),
            Err(Error::Checksum { offset: 12, .. })
        ));
        let torn = read_wal_file_contents(&header[..6]).unwrap();
        assert!(matches!(torn.end, LogEnd::TornTail { offset: 0, .. }));
        let mut future = header.to_vec();
        future[4] = 3;
        let crc = crc32fast::hash(&future[..12]);
        future[12..].copy_from_slice(&crc.to_le_bytes());
        let err = read_wal_file_contents(&future).unwrap_err().to_string();
        assert!(err.contains("version 3"), "{err}");
    }
}
