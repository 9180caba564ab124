//! Basalt's SQL layer: DataFusion over storage snapshots. So far: SELECT over
//! storage tables with projection, filter and limit pushdown, and the
//! error-to-SQLSTATE mapping every layer reports through.

mod session;
pub mod sqlstate;
mod table;

pub use session::{Database, Session, CATALOG, SCHEMA};
pub use table::{StorageScanExec, StorageTable};
