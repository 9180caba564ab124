//! Basalt's SQL layer: sessions that run Postgres-flavoured SQL on
//! DataFusion over storage snapshots and transactions. DDL and DML are the
//! session's own; queries are DataFusion's, reading storage tables with
//! projection, filter and limit pushed down.

mod ann;
mod catalog;
mod copy;
mod ddl;
mod dml;
mod error;
mod json;
mod load;
mod oltp;
mod pgcatalog;
mod pgfunctions;
pub mod pgtext;
pub mod pgtypes;
pub mod prepare;
mod readfile;
mod sequences;
mod session;
mod settings;
pub mod sqlstate;
mod table;
pub mod vector;

pub use catalog::{CATALOG, PG_TYPE_KEY, SCHEMA};
pub use copy::CopyStream;
pub use copy::Reject;
pub use error::{Error, Result};
pub use load::{
    expand_sources, FileAccess, FileFormat, LoadOptions, LoadProgress, LoadReport, OnError,
    ProgressFn,
};
pub use prepare::{bind, Description, Param};
pub use session::{Database, QueryResult, Session};
pub use table::{StorageScanExec, StorageTable};

/// The parsed statement [`Session::execute_statement`] takes.
pub use datafusion::sql::parser::Statement;

/// The Arrow crates the results are made of, as DataFusion uses them.
pub use datafusion::arrow;

/// The stream of record batches a query result is.
pub mod stream {
    pub use datafusion::execution::SendableRecordBatchStream;
    pub use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
}
