//! Segment files: immutable, columnar, sorted by key (FORMAT.md, "Segment file").
//!
//! ```text
//! header (16) | column chunks, each 64-byte aligned | footer | trailer (32)
//! ```
//! Every row carries three leading system columns: `_key` (Binary, the encoded
//! primary key), `_seq` (UInt64, the commit sequence number) and `_op` (UInt8,
//! 0 = put, 1 = delete). Rows are sorted by key ascending, then sequence
//! descending.

use std::io::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::array::{compress, decode_array, decompress, encode_array, Codec};
use crate::bloom::BloomFilter;
use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::scalar::{min_max, Scalar};
use crate::schema::{decode_schema, encode_schema};

pub const SEGMENT_MAGIC: [u8; 8] = *b"BASALTSG";
pub const SEGMENT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 16;
pub const TRAILER_LEN: usize = 32;
pub const CHUNK_ALIGN: usize = 64;

pub const KEY_COLUMN: &str = "_key";
pub const SEQ_COLUMN: &str = "_seq";
pub const OP_COLUMN: &str = "_op";
pub const SYSTEM_COLUMNS: usize = 3;
pub const OP_PUT: u8 = 0;
pub const OP_DELETE: u8 = 1;

const FLAG_TOMBSTONES: u8 = 1;
const FLAG_UNIQUE_KEYS: u8 = 2;

/// The schema rows are stored under: the system columns, then the table's
/// columns made nullable (a tombstone has no values).
pub fn storage_schema(table_schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Arc::new(Field::new(KEY_COLUMN, DataType::Binary, false)),
        Arc::new(Field::new(SEQ_COLUMN, DataType::UInt64, false)),
        Arc::new(Field::new(OP_COLUMN, DataType::UInt8, false)),
    ];
    fields.extend(
        table_schema
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
    );
    Arc::new(Schema::new_with_metadata(
        fields,
        table_schema.metadata().clone(),
    ))
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkMeta {
    pub offset: u64,
    pub stored_len: u64,
    pub raw_len: u64,
    pub codec: Codec,
    pub crc: u32,
    pub null_count: u32,
    pub min: Option<Scalar>,
    pub max: Option<Scalar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowGroupMeta {
    pub num_rows: u32,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
    pub min_seq: u64,
    pub max_seq: u64,
    pub has_tombstones: bool,
    pub unique_keys: bool,
    pub columns: Vec<ChunkMeta>,
}

/// What a finished segment holds; also recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentSummary {
    pub num_rows: u64,
    pub file_size: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
    pub has_tombstones: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Footer {
    pub schema: SchemaRef,
    pub summary: SegmentSummary,
    pub bloom: BloomFilter,
    pub row_groups: Vec<RowGroupMeta>,
}

/// Writes one segment. Row groups must arrive in key order and use
/// [`storage_schema`].
pub struct SegmentWriter<W: Write> {
    out: W,
    position: u64,
    schema: SchemaRef,
    row_groups: Vec<RowGroupMeta>,
    key_hashes: Vec<u64>,
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(mut out: W, schema: SchemaRef) -> Result<Self> {
        let mut header = Encoder::new();
        header.raw(&SEGMENT_MAGIC);
        header.u32(SEGMENT_VERSION);
        header.u32(0);
        out.write_all(&header.buf)?;
        Ok(SegmentWriter {
            out,
            position: HEADER_LEN as u64,
            schema,
            row_groups: Vec::new(),
            key_hashes: Vec::new(),
        })
    }

    fn write_aligned(&mut self, bytes: &[u8]) -> Result<u64> {
        let pad = (CHUNK_ALIGN - (self.position as usize % CHUNK_ALIGN)) % CHUNK_ALIGN;
        self.out.write_all(&[0u8; CHUNK_ALIGN][..pad])?;
        let offset = self.position + pad as u64;
        self.out.write_all(bytes)?;
        self.position = offset + bytes.len() as u64;
        Ok(offset)
    }

    pub fn write_row_group(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::UnsupportedType(
                "row group schema differs from segment schema".into(),
            ));
        }
        let keys = batch.column(0).as_binary::<i32>();
        let seqs = batch.column(1).as_primitive::<UInt64Type>();
        let ops = batch.column(2).as_primitive::<UInt8Type>();
        self.key_hashes
            .extend(keys.iter().flatten().map(BloomFilter::hash));
        let unique_keys = (1..keys.len()).all(|i| keys.value(i - 1) != keys.value(i));
        let mut columns = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            columns.push(self.write_chunk(column)?);
        }
        self.row_groups.push(RowGroupMeta {
            num_rows: batch.num_rows() as u32,
            min_key: keys.value(0).to_vec(),
            max_key: keys.value(keys.len() - 1).to_vec(),
            min_seq: seqs.values().iter().copied().min().unwrap_or(0),
            max_seq: seqs.values().iter().copied().max().unwrap_or(0),
            has_tombstones: ops.values().contains(&OP_DELETE),
            unique_keys,
            columns,
        });
        Ok(())
    }

    fn write_chunk(&mut self, column: &ArrayRef) -> Result<ChunkMeta> {
        let raw = encode_array(&column.to_data())?;
        let raw_len = raw.len() as u64;
        let (codec, stored) = compress(raw);
        let crc = crc32fast::hash(&stored);
        let offset = self.write_aligned(&stored)?;
        let (min, max) = min_max(column.as_ref());
        Ok(ChunkMeta {
            offset,
            stored_len: stored.len() as u64,
            raw_len,
            codec,
            crc,
            null_count: column.null_count() as u32,
            min,
            max,
        })
    }

    /// Writes footer and trailer; returns the summary and the sink.
    pub fn finish(mut self) -> Result<(SegmentSummary, W)> {
        let summary = self.summary();
        let footer = Footer {
            schema: self.schema.clone(),
            summary: summary.clone(),
            bloom: BloomFilter::from_hashes(&self.key_hashes),
            row_groups: std::mem::take(&mut self.row_groups),
        };
        let footer_bytes = encode_footer(&footer)?;
        let footer_offset = self.write_aligned(&footer_bytes)?;
        let mut trailer = Encoder::new();
        trailer.u64(footer_offset);
        trailer.u64(footer_bytes.len() as u64);
        trailer.u32(crc32fast::hash(&footer_bytes));
        trailer.u32(SEGMENT_VERSION);
        trailer.raw(&SEGMENT_MAGIC);
        self.out.write_all(&trailer.buf)?;
        self.out.flush()?;
        let file_size = self.position + TRAILER_LEN as u64;
        Ok((
            SegmentSummary {
                file_size,
                ..summary
            },
            self.out,
        ))
    }

    fn summary(&self) -> SegmentSummary {
        let groups = &self.row_groups;
        SegmentSummary {
            num_rows: groups.iter().map(|g| g.num_rows as u64).sum(),
            file_size: 0,
            min_seq: groups.iter().map(|g| g.min_seq).min().unwrap_or(0),
            max_seq: groups.iter().map(|g| g.max_seq).max().unwrap_or(0),
            min_key: groups
                .first()
                .map(|g| g.min_key.clone())
                .unwrap_or_default(),
            max_key: groups.last().map(|g| g.max_key.clone()).unwrap_or_default(),
            has_tombstones: groups.iter().any(|g| g.has_tombstones),
        }
    }
}

fn encode_optional(value: &Option<Scalar>, e: &mut Encoder) {
    match value {
        Some(v) => {
            e.u8(1);
            v.encode(e);
        }
        None => e.u8(0),
    }
}

fn decode_optional(d: &mut Decoder<'_>) -> Result<Option<Scalar>> {
    Ok(if d.bool()? {
        Some(Scalar::decode(d)?)
    } else {
        None
    })
}

fn encode_footer(footer: &Footer) -> Result<Vec<u8>> {
    let mut e = Encoder::new();
    encode_schema(&footer.schema, &mut e)?;
    let s = &footer.summary;
    e.u64(s.num_rows);
    e.u64(s.min_seq);
    e.u64(s.max_seq);
    e.bytes(&s.min_key);
    e.bytes(&s.max_key);
    e.u8(if s.has_tombstones { FLAG_TOMBSTONES } else { 0 });
    footer.bloom.encode(&mut e);
    e.u32(footer.row_groups.len() as u32);
    for g in &footer.row_groups {
        e.u32(g.num_rows);
        e.bytes(&g.min_key);
        e.bytes(&g.max_key);
        e.u64(g.min_seq);
        e.u64(g.max_seq);
        let flags = (if g.has_tombstones { FLAG_TOMBSTONES } else { 0 })
            | (if g.unique_keys { FLAG_UNIQUE_KEYS } else { 0 });
        e.u8(flags);
        for c in &g.columns {
            e.u64(c.offset);
            e.u64(c.stored_len);
            e.u64(c.raw_len);
            e.u8(c.codec as u8);
            e.u32(c.crc);
            e.u32(c.null_count);
            encode_optional(&c.min, &mut e);
            encode_optional(&c.max, &mut e);
        }
    }
    Ok(e.into_inner())
}

fn decode_footer(bytes: &[u8]) -> Result<Footer> {
    let mut d = Decoder::new(bytes);
    let schema = decode_schema(&mut d)?;
    let num_rows = d.u64()?;
    let min_seq = d.u64()?;
    let max_seq = d.u64()?;
    let min_key = d.bytes()?.to_vec();
    let max_key = d.bytes()?.to_vec();
    let has_tombstones = d.u8()? & FLAG_TOMBSTONES != 0;
    let bloom = BloomFilter::decode(&mut d)?;
    let n_groups = d.count(33)?;
    let mut row_groups = Vec::with_capacity(n_groups);
    for _ in 0..n_groups {
        let num_rows = d.u32()?;
        let min_key = d.bytes()?.to_vec();
        let max_key = d.bytes()?.to_vec();
        let min_seq = d.u64()?;
        let max_seq = d.u64()?;
        let flags = d.u8()?;
        let columns = (0..schema.fields().len())
            .map(|_| decode_chunk_meta(&mut d))
            .collect::<Result<Vec<_>>>()?;
        row_groups.push(RowGroupMeta {
            num_rows,
            min_key,
            max_key,
            min_seq,
            max_seq,
            has_tombstones: flags & FLAG_TOMBSTONES != 0,
            unique_keys: flags & FLAG_UNIQUE_KEYS != 0,
            columns,
        });
    }
    d.expect_end("segment footer")?;
    Ok(Footer {
        schema,
        summary: SegmentSummary {
            num_rows,
            file_size: 0,
            min_seq,
            max_seq,
            min_key,
            max_key,
            has_tombstones,
        },
        bloom,
        row_groups,
    })
}

fn decode_chunk_meta(d: &mut Decoder<'_>) -> Result<ChunkMeta> {
    let offset = d.u64()?;
    let stored_len = d.u64()?;
    let raw_len = d.u64()?;
    let codec_byte = d.u8()?;
    let codec =
        Codec::from_u8(codec_byte).ok_or_else(|| d.error(format!("unknown codec {codec_byte}")))?;
    Ok(ChunkMeta {
        offset,
        stored_len,
        raw_len,
        codec,
        crc: d.u32()?,
        null_count: d.u32()?,
        min: decode_optional(d)?,
        max: decode_optional(d)?,
    })
}

/// A segment opened over its whole contents (in Basalt, a memory map).
/// Offsets in errors are file offsets.
#[derive(Debug)]
pub struct SegmentReader {
    data: Buffer,
    footer: Footer,
}

impl SegmentReader {
    pub fn open(data: Buffer) -> Result<SegmentReader> {
        let bytes = data.as_slice();
        let len = bytes.len();
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(Error::corrupt(
                0,
                format!("segment too short ({len} bytes)"),
            ));
        }
        if bytes[..8] != SEGMENT_MAGIC {
            return Err(Error::corrupt(0, "bad segment header magic"));
        }
        let header_version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if header_version != SEGMENT_VERSION {
            return Err(Error::corrupt(
                8,
                format!("unsupported segment version {header_version}"),
            ));
        }
        let trailer_at = len - TRAILER_LEN;
        let mut t = Decoder::new(&bytes[trailer_at..]);
        let footer_offset = t.u64()?;
        let footer_len = t.u64()?;
        let footer_crc = t.u32()?;
        let version = t.u32()?;
        if t.take(8)? != SEGMENT_MAGIC {
            return Err(Error::corrupt(
                trailer_at as u64 + 24,
                "bad segment trailer magic",
            ));
        }
        if version != SEGMENT_VERSION {
            return Err(Error::corrupt(
                trailer_at as u64 + 20,
                format!("unsupported segment version {version}"),
            ));
        }
        let footer_end = footer_offset.checked_add(footer_len);
        if footer_end.is_none_or(|end| end > trailer_at as u64) {
            return Err(Error::corrupt(
                trailer_at as u64,
                "footer location outside the file",
            ));
        }
        let footer_bytes = &bytes[footer_offset as usize..(footer_offset + footer_len) as usize];
        let computed = crc32fast::hash(footer_bytes);
        if computed != footer_crc {
            return Err(Error::Checksum {
                offset: footer_offset,
                stored: footer_crc,
                computed,
            });
        }
        let mut footer = decode_footer(footer_bytes).map_err(|e| e.at_base(footer_offset))?;
        footer.summary.file_size = len as u64;
        for group in &footer.row_groups {
            for chunk in &group.columns {
                let end = chunk.offset.checked_add(chunk.stored_len);
                if end.is_none_or(|end| end > footer_offset) {
                    return Err(Error::corrupt(
                        footer_offset,
                        "column chunk outside the data area",
                    ));
                }
            }
        }
        Ok(SegmentReader { data, footer })
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.footer.schema
    }

    /// Decodes one column chunk, checking its crc first. Uncompressed chunks
    /// share the reader's memory.
    pub fn read_column(&self, row_group: usize, column: usize) -> Result<ArrayRef> {
        let chunk = self
            .footer
            .row_groups
            .get(row_group)
            .and_then(|g| g.columns.get(column))
            .ok_or_else(|| Error::corrupt(0, format!("no chunk {row_group}/{column}")))?;
        let stored = self
            .data
            .slice_with_length(chunk.offset as usize, chunk.stored_len as usize);
        let computed = crc32fast::hash(stored.as_slice());
        if computed != chunk.crc {
            return Err(Error::Checksum {
                offset: chunk.offset,
                stored: chunk.crc,
                computed,
            });
        }
        let data_type = self.footer.schema.field(column).data_type();
        let payload = decompress(chunk.codec, stored, chunk.raw_len as usize)
            .and_then(|p| decode_array(&p, data_type))
            .map_err(|e| e.at_base(chunk.offset))?;
        if payload.len() != self.footer.row_groups[row_group].num_rows as usize {
            return Err(Error::corrupt(
                chunk.offset,
                "column chunk length differs from its row group",
            ));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int64Array, StringArray, UInt64Array, UInt8Array};

    fn table_schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ])
    }

    fn group(start: i64, n: i64, schema: &SchemaRef) -> RecordBatch {
        let keys: Vec<Vec<u8>> = (start..start + n)
            .map(|i| (i as u64).to_be_bytes().to_vec())
            .collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values(keys.iter())),
                Arc::new(UInt64Array::from_iter_values(
                    (0..n as u64).map(|i| 100 + i),
                )),
                Arc::new(UInt8Array::from_iter_values((0..n).map(|i| {
                    if i == 3 {
                        OP_DELETE
                    } else {
                        OP_PUT
                    }
                }))),
                Arc::new(Int64Array::from_iter_values(start..start + n)),
                Arc::new(StringArray::from_iter_values(
                    (start..start + n).map(|i| format!("name-{}", i % 7)),
                )),
            ],
        )
        .unwrap()
    }

    fn write_segment() -> (Vec<u8>, SchemaRef, Vec<RecordBatch>) {
        let schema = storage_schema(&table_schema());
        let groups = vec![group(0, 1000, &schema), group(1000, 500, &schema)];
        let mut w = SegmentWriter::new(Vec::new(), schema.clone()).unwrap();
        for g in &groups {
            w.write_row_group(g).unwrap();
        }
        let (summary, bytes) = w.finish().unwrap();
        assert_eq!(summary.num_rows, 1500);
        assert_eq!(summary.file_size, bytes.len() as u64);
        assert_eq!((summary.min_seq, summary.max_seq), (100, 1099));
        assert!(summary.has_tombstones);
        (bytes, schema, groups)
    }

    #[test]
    fn segment_round_trips() {
        let (bytes, schema, groups) = write_segment();
        let reader = SegmentReader::open(Buffer::from_vec(bytes)).unwrap();
        assert_eq!(reader.schema(), &schema);
        let footer = reader.footer();
        assert_eq!(footer.row_groups.len(), 2);
        assert!(footer.row_groups[0].unique_keys);
        assert_eq!(footer.row_groups[1].columns[3].min, Some(Scalar::Int(1000)));
        assert_eq!(footer.row_groups[1].columns[3].max, Some(Scalar::Int(1499)));
        for (g, expected) in groups.iter().enumerate() {
            for c in 0..expected.num_columns() {
                assert_eq!(&reader.read_column(g, c).unwrap(), expected.column(c));
            }
        }
        assert!(footer.bloom.may_contain(&7u64.to_be_bytes()));
        // The name column repeats and compresses; the chunk is lz4.
        assert_eq!(footer.row_groups[0].columns[4].codec, Codec::Lz4);
    }

    #[test]
    fn flipped_chunk_byte_is_reported_at_the_chunk() {
        let (mut bytes, _, _) = write_segment();
        let reader = SegmentReader::open(Buffer::from_vec(bytes.clone())).unwrap();
        let chunk = reader.footer().row_groups[1].columns[3].clone();
        bytes[chunk.offset as usize + 10] ^= 0x01;
        let reader = SegmentReader::open(Buffer::from_vec(bytes)).unwrap();
        let err = reader.read_column(1, 3).unwrap_err();
        assert!(
            matches!(err, Error::Checksum { offset, .. } if offset == chunk.offset),
            "{err}"
        );
        assert!(reader.read_column(0, 3).is_ok());
    }

    #[test]
    fn flipped_footer_byte_fails_open_with_offset() {
        let (bytes, _, _) = write_segment();
        let len = bytes.len();
        let footer_offset = u64::from_le_bytes(bytes[len - 32..len - 24].try_into().unwrap());
        let mut damaged = bytes.clone();
        damaged[footer_offset as usize + 5] ^= 0x80;
        let err = SegmentReader::open(Buffer::from_vec(damaged)).unwrap_err();
        assert!(
            matches!(err, Error::Checksum { offset, .. } if offset == footer_offset),
            "{err}"
        );
    }

    #[test]
    fn any_single_byte_flip_is_an_error_or_detected_never_a_panic() {
        let (bytes, _, _) = write_segment();
        let step = (bytes.len() / 400).max(1);
        for i in (0..bytes.len()).step_by(step) {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            if let Ok(reader) = SegmentReader::open(Buffer::from_vec(damaged)) {
                for g in 0..reader.footer().row_groups.len() {
                    for c in 0..reader.schema().fields().len() {
                        let _ = reader.read_column(g, c);
                    }
                }
            }
        }
        for cut in [0, 10, 40, bytes.len() - 1] {
            assert!(SegmentReader::open(Buffer::from_vec(bytes[..cut].to_vec())).is_err());
        }
    }
}
