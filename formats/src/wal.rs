//! WAL record payloads (FORMAT.md, "WAL record"). Each committed write batch is
//! one framed record (see [`crate::frame`]).
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
use crate::segment::{KEY_COLUMN, OP_COLUMN};

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
}
