//! Manifest edits (FORMAT.md, "Manifest"). The manifest is a framed log (see
//! [`crate::frame`]); each record is one atomic batch of edits:
//!
//! ```text
//! n_edits: u32 | n_edits x (tag: u8 | fields)
//! ```

use arrow_schema::SchemaRef;

use crate::codec::{Decoder, Encoder};
use crate::error::Result;
use crate::schema::{decode_schema, encode_schema};

pub const CURRENT_FILE: &str = "CURRENT";

#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub id: u32,
    pub name: String,
    /// The table's columns; each field carries its stable column id in metadata.
    pub schema: SchemaRef,
    /// Indexes into `schema` of the primary-key columns; empty = hidden row id.
    pub key_columns: Vec<u32>,
    pub schema_version: u32,
    /// Secondary indexes of every kind, in creation order.
    pub indexes: Vec<IndexDef>,
    /// Index ids below this were handed out for the table and are never
    /// used again, so a file named by an index id always means one index.
    pub next_index_id: u32,
}

/// A secondary index: what CREATE INDEX declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Unique within the table, never reused; names its files.
    pub id: u32,
    pub name: String,
    /// The index kind's registered name (`hnsw`, `btree`, ...).
    pub kind: String,
    /// Positions in the table schema, in index order.
    pub columns: Vec<u32>,
    /// The kind's options (`WITH (...)`), as given, in order.
    pub options: Vec<(String, String)>,
}

impl IndexDef {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDef {
    pub table_id: u32,
    pub segment_id: u64,
    pub level: u8,
    pub num_rows: u64,
    pub file_size: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Creates a table, or replaces its definition (rename, new columns).
    PutTable(TableDef),
    DropTable {
        table_id: u32,
    },
    AddSegment(SegmentDef),
    RemoveSegment {
        table_id: u32,
        segment_id: u64,
    },
    /// Every write to the table with sequence <= `seq` is in its segments.
    TableFlushed {
        table_id: u32,
        seq: u64,
    },
    /// Row ids below `next` have been handed out for the table.
    NextRowId {
        table_id: u32,
        next: u64,
    },
    /// Sequence numbers up to `seq` have been used.
    LastSeq {
        seq: u64,
    },
    /// File numbers below `next` have been used.
    NextFileNumber {
        next: u64,
    },
    /// Written before index definitions (read only): segment `segment_id`
    /// has the HNSW index file of the index on column position `column_id`.
    AddSegmentIndex {
        table_id: u32,
        segment_id: u64,
        column_id: u32,
    },
    /// Segment `segment_id` has a file of index `index_id` of the table.
    AddIndexFile {
        table_id: u32,
        segment_id: u64,
        index_id: u32,
    },
}

mod tag {
    /// Written before index definitions: read, never written.
    pub const PUT_TABLE_V1: u8 = 1;
    pub const DROP_TABLE: u8 = 2;
    pub const ADD_SEGMENT: u8 = 3;
    pub const REMOVE_SEGMENT: u8 = 4;
    pub const TABLE_FLUSHED: u8 = 5;
    pub const NEXT_ROW_ID: u8 = 6;
    pub const LAST_SEQ: u8 = 7;
    pub const NEXT_FILE_NUMBER: u8 = 8;
    pub const ADD_SEGMENT_INDEX: u8 = 9;
    pub const PUT_TABLE: u8 = 10;
    pub const ADD_INDEX_FILE: u8 = 11;
    /// A tag-10 PutTable whose table has a UNIQUE index: a reader that
    /// does not enforce them must refuse the manifest, not open it.
    pub const PUT_TABLE_UNIQUE: u8 = 12;
}

/// The btree option that makes an index UNIQUE (FORMAT.md, section 13).
pub const UNIQUE_OPTION: &str = "unique";

impl TableDef {
    /// Whether one of the table's indexes is UNIQUE.
    pub fn has_unique_index(&self) -> bool {
        self.indexes
            .iter()
            .any(|i| i.option(UNIQUE_OPTION) == Some("true"))
    }
}

/// Field metadata by which a column declared its HNSW index before index
/// definitions (`name=N;metric=M;m=16;ef_construction=64`).
pub const LEGACY_HNSW_KEY: &str = "basalt.hnsw";

pub fn encode_edits(edits: &[Edit]) -> Result<Vec<u8>> {
    let mut e = Encoder::new();
    e.u32(edits.len() as u32);
    for edit in edits {
        encode_edit(edit, &mut e)?;
    }
    Ok(e.into_inner())
}

fn encode_edit(edit: &Edit, e: &mut Encoder) -> Result<()> {
    match edit {
        Edit::PutTable(t) => {
            e.u8(match t.has_unique_index() {
                true => tag::PUT_TABLE_UNIQUE,
                false => tag::PUT_TABLE,
            });
            e.u32(t.id);
            e.str(&t.name);
            encode_schema(&t.schema, e)?;
            e.u32(t.key_columns.len() as u32);
            for k in &t.key_columns {
                e.u32(*k);
            }
            e.u32(t.schema_version);
            e.u32(t.next_index_id);
            e.u32(t.indexes.len() as u32);
            for index in &t.indexes {
                encode_index(index, e);
            }
        }
        Edit::DropTable { table_id } => {
            e.u8(tag::DROP_TABLE);
            e.u32(*table_id);
        }
        Edit::AddSegment(s) => {
            e.u8(tag::ADD_SEGMENT);
            e.u32(s.table_id);
            e.u64(s.segment_id);
            e.u8(s.level);
            e.u64(s.num_rows);
            e.u64(s.file_size);
            e.u64(s.min_seq);
            e.u64(s.max_seq);
            e.bytes(&s.min_key);
            e.bytes(&s.max_key);
        }
        Edit::RemoveSegment {
            table_id,
            segment_id,
        } => {
            e.u8(tag::REMOVE_SEGMENT);
            e.u32(*table_id);
            e.u64(*segment_id);
        }
        Edit::TableFlushed { table_id, seq } => {
            e.u8(tag::TABLE_FLUSHED);
            e.u32(*table_id);
            e.u64(*seq);
        }
        Edit::NextRowId { table_id, next } => {
            e.u8(tag::NEXT_ROW_ID);
            e.u32(*table_id);
            e.u64(*next);
        }
        Edit::LastSeq { seq } => {
            e.u8(tag::LAST_SEQ);
            e.u64(*seq);
        }
        Edit::NextFileNumber { next } => {
            e.u8(tag::NEXT_FILE_NUMBER);
            e.u64(*next);
        }
        Edit::AddSegmentIndex {
            table_id,
            segment_id,
            column_id,
        } => {
            e.u8(tag::ADD_SEGMENT_INDEX);
            e.u32(*table_id);
            e.u64(*segment_id);
            e.u32(*column_id);
        }
        Edit::AddIndexFile {
            table_id,
            segment_id,
            index_id,
        } => {
            e.u8(tag::ADD_INDEX_FILE);
            e.u32(*table_id);
            e.u64(*segment_id);
            e.u32(*index_id);
        }
    }
    Ok(())
}

fn encode_index(index: &IndexDef, e: &mut Encoder) {
    e.u32(index.id);
    e.str(&index.name);
    e.str(&index.kind);
    e.u32(index.columns.len() as u32);
    for c in &index.columns {
        e.u32(*c);
    }
    e.u32(index.options.len() as u32);
    for (key, value) in &index.options {
        e.str(key);
        e.str(value);
    }
}

fn decode_index(d: &mut Decoder<'_>, columns_in_schema: usize) -> Result<IndexDef> {
    let at = d.position();
    let id = d.u32()?;
    let name = d.str()?.to_string();
    let kind = d.str()?.to_string();
    let n_columns = d.count(4)?;
    let columns = (0..n_columns)
        .map(|_| d.u32())
        .collect::<Result<Vec<_>>>()?;
    if columns.is_empty() || columns.iter().any(|c| *c as usize >= columns_in_schema) {
        return Err(crate::Error::corrupt(at, "index column outside the schema"));
    }
    let n_options = d.count(8)?;
    let options = (0..n_options)
        .map(|_| Ok((d.str()?.to_string(), d.str()?.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Ok(IndexDef {
        id,
        name,
        kind,
        columns,
        options,
    })
}

/// A version-1 PutTable's HNSW indexes, declared in field metadata, as
/// index definitions: the index on column position `c` gets id `c + 1`,
/// and the metadata is dropped from the schema.
fn upgrade_v1_table(mut def: TableDef) -> TableDef {
    let mut fields = Vec::with_capacity(def.schema.fields().len());
    for (column, field) in def.schema.fields().iter().enumerate() {
        let mut metadata = field.metadata().clone();
        if let Some(spec) = metadata.remove(LEGACY_HNSW_KEY) {
            let mut name = format!("index_{column}");
            let mut options = Vec::new();
            for (key, value) in spec.split(';').filter_map(|p| p.split_once('=')) {
                match key {
                    "name" => name = value.to_string(),
                    _ => options.push((key.to_string(), value.to_string())),
                }
            }
            def.indexes.push(IndexDef {
                id: column as u32 + 1,
                name,
                kind: "hnsw".into(),
                columns: vec![column as u32],
                options,
            });
        }
        fields.push(field.as_ref().clone().with_metadata(metadata));
    }
    def.next_index_id = def.indexes.iter().map(|i| i.id + 1).max().unwrap_or(1);
    def.schema = std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        def.schema.metadata().clone(),
    ));
    def
}

pub fn decode_edits(payload: &[u8]) -> Result<Vec<Edit>> {
    let mut d = Decoder::new(payload);
    let n = d.count(1)?;
    let edits = (0..n)
        .map(|_| decode_edit(&mut d))
        .collect::<Result<Vec<_>>>()?;
    d.expect_end("manifest record")?;
    Ok(edits)
}

fn decode_edit(d: &mut Decoder<'_>) -> Result<Edit> {
    let at = d.position();
    Ok(match d.u8()? {
        tag::PUT_TABLE_V1 => Edit::PutTable(upgrade_v1_table(decode_table(d, at)?)),
        tag::PUT_TABLE | tag::PUT_TABLE_UNIQUE => {
            let mut def = decode_table(d, at)?;
            def.next_index_id = d.u32()?;
            let n_indexes = d.count(16)?;
            let columns = def.schema.fields().len();
            def.indexes = (0..n_indexes)
                .map(|_| decode_index(d, columns))
                .collect::<Result<Vec<_>>>()?;
            if def.indexes.iter().any(|i| i.id >= def.next_index_id) {
                return Err(crate::Error::corrupt(at, "index id not yet handed out"));
            }
            Edit::PutTable(def)
        }
        tag::DROP_TABLE => Edit::DropTable { table_id: d.u32()? },
        tag::ADD_SEGMENT => Edit::AddSegment(SegmentDef {
            table_id: d.u32()?,
            segment_id: d.u64()?,
            level: d.u8()?,
            num_rows: d.u64()?,
            file_size: d.u64()?,
            min_seq: d.u64()?,
            max_seq: d.u64()?,
            min_key: d.bytes()?.to_vec(),
            max_key: d.bytes()?.to_vec(),
        }),
        tag::REMOVE_SEGMENT => Edit::RemoveSegment {
            table_id: d.u32()?,
            segment_id: d.u64()?,
        },
        tag::TABLE_FLUSHED => Edit::TableFlushed {
            table_id: d.u32()?,
            seq: d.u64()?,
        },
        tag::NEXT_ROW_ID => Edit::NextRowId {
            table_id: d.u32()?,
            next: d.u64()?,
        },
        tag::LAST_SEQ => Edit::LastSeq { seq: d.u64()? },
        tag::NEXT_FILE_NUMBER => Edit::NextFileNumber { next: d.u64()? },
        tag::ADD_SEGMENT_INDEX => Edit::AddSegmentIndex {
            table_id: d.u32()?,
            segment_id: d.u64()?,
            column_id: d.u32()?,
        },
        tag::ADD_INDEX_FILE => Edit::AddIndexFile {
            table_id: d.u32()?,
            segment_id: d.u64()?,
            index_id: d.u32()?,
        },
        other => {
            return Err(crate::Error::corrupt(
                at,
                format!("unknown manifest edit tag {other}"),
            ))
        }
    })
}

/// The fields version 1 and version 2 PutTable share.
fn decode_table(d: &mut Decoder<'_>, at: usize) -> Result<TableDef> {
    let id = d.u32()?;
    let name = d.str()?.to_string();
    let schema = decode_schema(d)?;
    let n_keys = d.count(4)?;
    let key_columns = (0..n_keys).map(|_| d.u32()).collect::<Result<Vec<_>>>()?;
    if key_columns
        .iter()
        .any(|k| *k as usize >= schema.fields().len())
    {
        return Err(crate::Error::corrupt(at, "key column outside the schema"));
    }
    let schema_version = d.u32()?;
    Ok(TableDef {
        id,
        name,
        schema,
        key_columns,
        schema_version,
        indexes: Vec::new(),
        next_index_id: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    pub(crate) fn every_edit() -> Vec<Edit> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        vec![
            Edit::PutTable(TableDef {
                id: 1,
                name: "t".into(),
                schema,
                key_columns: vec![0],
                schema_version: 2,
                indexes: vec![
                    IndexDef {
                        id: 3,
                        name: "t_v".into(),
                        kind: "btree".into(),
                        columns: vec![1, 0],
                        options: vec![],
                    },
                    IndexDef {
                        id: 5,
                        name: "t_v_hnsw".into(),
                        kind: "hnsw".into(),
                        columns: vec![1],
                        options: vec![("m".into(), "16".into())],
                    },
                ],
                next_index_id: 6,
            }),
            Edit::DropTable { table_id: 9 },
            Edit::AddSegment(SegmentDef {
                table_id: 1,
                segment_id: 17,
                level: 2,
                num_rows: 1000,
                file_size: 4096,
                min_seq: 5,
                max_seq: 99,
                min_key: b"a".to_vec(),
                max_key: b"z".to_vec(),
            }),
            Edit::RemoveSegment {
                table_id: 1,
                segment_id: 3,
            },
            Edit::TableFlushed {
                table_id: 1,
                seq: 77,
            },
            Edit::NextRowId {
                table_id: 1,
                next: 1 << 40,
            },
            Edit::LastSeq { seq: 123 },
            Edit::NextFileNumber { next: 18 },
            Edit::AddSegmentIndex {
                table_id: 1,
                segment_id: 17,
                column_id: 4,
            },
            Edit::AddIndexFile {
                table_id: 1,
                segment_id: 17,
                index_id: 5,
            },
        ]
    }

    /// A version-1 PutTable (tag 1), as the code before index definitions
    /// wrote it, reads with its field-metadata HNSW index as a definition.
    #[test]
    fn a_version_1_table_reads_with_its_vector_index_as_a_definition() {
        let spec = "name=docs_v_idx;metric=cosine;m=8;ef_construction=32";
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true)
                .with_metadata([(LEGACY_HNSW_KEY.to_string(), spec.to_string())].into()),
        ]));
        let mut e = Encoder::new();
        e.u32(1);
        e.u8(tag::PUT_TABLE_V1);
        e.u32(4);
        e.str("docs");
        encode_schema(&schema, &mut e).unwrap();
        e.u32(1);
        e.u32(0);
        e.u32(1);
        let edits = decode_edits(&e.into_inner()).unwrap();
        let Edit::PutTable(def) = &edits[0] else {
            panic!("{edits:?}")
        };
        assert_eq!(
            def.indexes,
            vec![IndexDef {
                id: 2,
                name: "docs_v_idx".into(),
                kind: "hnsw".into(),
                columns: vec![1],
                options: vec![
                    ("metric".into(), "cosine".into()),
                    ("m".into(), "8".into()),
                    ("ef_construction".into(), "32".into()),
                ],
            }]
        );
        assert_eq!(def.next_index_id, 3);
        assert!(def.schema.field(1).metadata().is_empty());
    }

    #[test]
    fn every_edit_round_trips() {
        let edits = every_edit();
        assert_eq!(decode_edits(&encode_edits(&edits).unwrap()).unwrap(), edits);
    }

    /// A table with a UNIQUE index is written under its own tag, which a
    /// reader that does not enforce uniqueness refuses; both tags read.
    #[test]
    fn a_table_with_a_unique_index_is_written_under_tag_12() {
        let Edit::PutTable(plain) = every_edit().remove(0) else {
            unreachable!()
        };
        let mut unique = plain.clone();
        unique.indexes[0]
            .options
            .push((UNIQUE_OPTION.into(), "true".into()));
        for (def, tag) in [(plain, tag::PUT_TABLE), (unique, tag::PUT_TABLE_UNIQUE)] {
            let edits = vec![Edit::PutTable(def)];
            let bytes = encode_edits(&edits).unwrap();
            assert_eq!(bytes[4], tag, "the edit's tag follows the edit count");
            assert_eq!(decode_edits(&bytes).unwrap(), edits);
        }
    }

    #[test]
    fn damaged_edits_do_not_panic() {
        let bytes = encode_edits(&every_edit()).unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xA5;
            let _ = decode_edits(&damaged);
            assert!(decode_edits(&bytes[..i]).is_err());
        }
    }
}
