//! The HNSW kind: a graph over a vector column's non-null rows (FORMAT.md,
//! "HNSW index file"); searched by `crate::vector`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt8Type};
use arrow_array::Array;
use arrow_buffer::Buffer;
use arrow_schema::DataType;
use basalt_formats::distance::Metric;
use basalt_formats::hnsw::{self, HnswIndex, HnswParams};
use basalt_formats::manifest::{IndexDef, TableDef};
use basalt_formats::segment::OP_DELETE;

use super::{IndexKind, IndexRows, OpenIndex};
use crate::error::{Error, IoContext, Result};

pub(crate) const KIND: &str = "hnsw";

pub(crate) struct Hnsw;

/// An HNSW index a table declares, as the vector search needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    /// Index into the table schema.
    pub column: usize,
    pub index_id: u32,
    pub params: HnswParams,
}

/// The options an HNSW definition carries for `params`.
pub fn options(params: &HnswParams) -> Vec<(String, String)> {
    let metric = match params.metric {
        Metric::L2 => "l2",
        Metric::Cosine => "cosine",
        Metric::InnerProduct => "ip",
    };
    vec![
        ("metric".into(), metric.into()),
        ("m".into(), params.m.to_string()),
        ("ef_construction".into(), params.ef_construction.to_string()),
    ]
}

fn params(index: &IndexDef) -> Result<HnswParams> {
    let invalid =
        |what: &str| Error::InvalidArgument(format!("index \"{}\": invalid {what}", index.name));
    let metric = match index.option("metric").unwrap_or("l2") {
        "l2" => Metric::L2,
        "cosine" => Metric::Cosine,
        "ip" => Metric::InnerProduct,
        _ => return Err(invalid("metric")),
    };
    let mut params = HnswParams::new(metric);
    if let Some(m) = index.option("m") {
        params.m = m.parse().map_err(|_| invalid("m"))?;
    }
    if let Some(ef) = index.option("ef_construction") {
        params.ef_construction = ef.parse().map_err(|_| invalid("ef_construction"))?;
    }
    Ok(params)
}

/// The HNSW indexes a table declares.
pub fn index_specs(def: &TableDef) -> Vec<IndexSpec> {
    def.indexes
        .iter()
        .filter(|i| i.kind == KIND)
        .filter_map(|i| {
            Some(IndexSpec {
                name: i.name.clone(),
                column: *i.columns.first()? as usize,
                index_id: i.id,
                params: params(i).ok()?,
            })
        })
        .collect()
}

impl IndexKind for Hnsw {
    fn name(&self) -> &'static str {
        KIND
    }

    fn validate(&self, table: &TableDef, index: &IndexDef) -> Result<()> {
        let [column] = index.columns.as_slice() else {
            return Err(Error::InvalidArgument(
                "an hnsw index covers exactly one column".into(),
            ));
        };
        let field = table.schema.field(*column as usize);
        if !matches!(field.data_type(), DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32)
        {
            return Err(Error::InvalidArgument(format!(
                "column \"{}\" is not a vector column",
                field.name()
            )));
        }
        params(index).map(|_| ())
    }

    fn build(
        &self,
        index: &IndexDef,
        rows: &IndexRows,
        threads: usize,
        out: &mut dyn Write,
    ) -> Result<()> {
        let params = params(index)?;
        let (dims, vectors, positions) =
            collect_vectors(rows.columns[0].as_ref(), rows.ops.as_ref())?;
        hnsw::build(params, dims, &vectors, &positions, threads, out)?;
        Ok(())
    }

    fn open(&self, _index: &IndexDef, path: &Path) -> Result<OpenIndex> {
        Ok(open_index(path)?)
    }
}

/// The non-null, non-tombstone vectors of `column`, flattened, with their
/// row numbers.
fn collect_vectors(column: &dyn Array, ops: &dyn Array) -> Result<(usize, Vec<f32>, Vec<u32>)> {
    let DataType::FixedSizeList(_, dims) = column.data_type() else {
        return Err(Error::InvalidArgument(format!(
            "an HNSW index needs a vector column, not {}",
            column.data_type()
        )));
    };
    let dims = *dims as usize;
    let list = column.as_fixed_size_list();
    // Rows are read as float4 below.
    if list.values().as_primitive_opt::<Float32Type>().is_none() {
        return Err(Error::InvalidArgument(
            "an HNSW index needs float4 vector elements".into(),
        ));
    }
    let deletes = ops.as_primitive::<UInt8Type>();
    let mut vectors = Vec::with_capacity(list.len() * dims);
    let mut rows = Vec::with_capacity(list.len());
    for row in 0..list.len() {
        if list.is_null(row) || deletes.value(row) == OP_DELETE {
            continue;
        }
        vectors.extend_from_slice(basalt_formats::distance::vector_at(list, row));
        rows.push(row as u32);
    }
    Ok((dims, vectors, rows))
}

/// Index files at least this large are copied into memory backed by huge
/// pages instead of being read in place (see `load_index`).
const HUGE_PAGE_COPY_MIN: u64 = 32 << 20;

/// Maps an index file and checks it.
pub(crate) fn open_index(path: &Path) -> Result<Arc<HnswIndex>> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let buffer = if len >= HUGE_PAGE_COPY_MIN {
        load_index(file, len).at(path)?
    } else {
        crate::mapped::map_file(&file).at(path)?
    };
    HnswIndex::open(buffer)
        .map(Arc::new)
        .map_err(|e| Error::in_file(path, 0, e))
}

/// A graph walk touches one node after another at random across the whole
/// file; with 4 KiB pages nearly every step also misses the TLB. Copied
/// into anonymous memory advised to use huge pages, a million-vector
/// search answered about 17% more queries per second (benches/RESULTS.md).
/// Opening reads the whole file for its checksum anyway, so the copy adds
/// little time; it costs resident memory the page cache could have shared.
fn load_index(mut file: File, len: u64) -> std::io::Result<Buffer> {
    use std::io::Read;
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("index file too large"))?;
    let mut memory = memmap2::MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    {
        // Only a hint: without transparent huge pages the copy still works.
        let _ = memory.advise(memmap2::Advice::HugePage);
    }
    file.read_exact(&mut memory[..])?;
    Ok(crate::mapped::buffer_over(Arc::new(
        memory.make_read_only()?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_through_options() {
        let params = HnswParams {
            metric: Metric::Cosine,
            m: 8,
            ef_construction: 40,
        };
        let index = IndexDef {
            id: 1,
            name: "items_idx".into(),
            kind: KIND.into(),
            columns: vec![0],
            options: options(&params),
        };
        assert_eq!(super::params(&index).unwrap(), params);
        let bad = IndexDef {
            options: vec![("metric".into(), "manhattan".into())],
            ..index
        };
        assert!(super::params(&bad).is_err());
    }

    /// Large files are copied rather than mapped; both must read the same
    /// index, and a copy must still detect corruption.
    #[test]
    fn copied_and_mapped_index_files_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.c1.hnsw");
        let dims = 4;
        let vectors: Vec<f32> = (0..400).map(|i| ((i * 37) % 101) as f32).collect();
        let rows: Vec<u32> = (0..100).collect();
        let mut file = File::create(&path).unwrap();
        let params = HnswParams::new(Metric::L2);
        hnsw::build(params, dims, &vectors, &rows, 1, &mut file).unwrap();
        let len = file.metadata().unwrap().len();
        let copied = HnswIndex::open(load_index(File::open(&path).unwrap(), len).unwrap()).unwrap();
        let mapped =
            HnswIndex::open(crate::mapped::map_file(&File::open(&path).unwrap()).unwrap()).unwrap();
        let query = [3.0, 50.0, 7.0, 99.0];
        let nodes = |index: &HnswIndex| -> Vec<u32> {
            index
                .search(&query, 20, &mut |_| true)
                .iter()
                .map(|s| s.node)
                .collect()
        };
        assert_eq!(nodes(&copied), nodes(&mapped));
        assert_eq!(copied.node_vector(7), &vectors[28..32]);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = load_index(File::open(&path).unwrap(), len).unwrap();
        assert!(HnswIndex::open(damaged).is_err());
    }
}
