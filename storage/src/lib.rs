//! Basalt's storage engine: a log-structured store of columnar segments.
//!
//! Commits go to the write-ahead log ([`wal`](crate::Options::synchronous_commit))
//! and a per-table memtable; full memtables are flushed in the background to
//! immutable, memory-mapped segment files (formats/FORMAT.md) that compaction
//! merges. Readers take [`Snapshot`]s; writers use [`Transaction`]s with
//! snapshot isolation. Scans return Arrow record batches.

mod background;
mod build_budget;
mod compaction;
mod db;
mod durable_file;
mod error;
pub mod fault;
mod index;
mod ingest;
mod manifest;
mod mapped;
mod memtable;
mod options;
mod predicate;
mod scan;
mod segment;
mod txn;
mod vector;
mod visibility;
mod wal;

pub use basalt_formats::distance::Metric;
pub use basalt_formats::hnsw::HnswParams;
pub use basalt_formats::key::{encode_key, encode_keys};
pub use basalt_formats::manifest::{IndexDef, TableDef};
pub use basalt_formats::scalar::Scalar;
pub use basalt_formats::Error as FormatError;
pub use db::{ColumnRange, Db, TableStats};
pub use error::{Error, Result};
pub use index::btree::FirstRows;
pub use index::hnsw::{index_specs, options as hnsw_options, IndexSpec};
pub use index::search::{IndexSearch, SearchInput};
pub use index::unique::{declared_options, is_building_index, is_unique_index};
pub use ingest::{BulkLoad, LoadSummary};
pub use options::Options;
pub use scan::{Predicate, PredicateOp, ScanOptions, ScanPlan};
pub use txn::{Commit, Durable, Snapshot, Transaction};
pub use vector::{RowFilter, VectorHits, VectorQuery, VectorSearchStats};

// The query layer shares a database across sessions and moves transactions
// between threads; keep that possible.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Db>();
    send_sync::<Snapshot>();
    send::<Transaction>();
    send::<BulkLoad>();
};
