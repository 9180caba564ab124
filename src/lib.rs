//! Basalt: an embedded columnar + LSM database engine.
//!
//! Open a [`Database`], take a [`Session`] and run SQL:
//!
//! ```no_run
//! # async fn demo() -> basalt::Result<()> {
//! let db = basalt::Database::open("basalt-data")?;
//! let mut session = db.session();
//! session.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text)").await?;
//! session.execute("INSERT INTO t VALUES (1, 'one')").await?;
//! let rows = session.query("SELECT name FROM t WHERE id = 1").await?;
//! # Ok(()) }
//! ```
//!
//! The storage engine ([`storage`]) and the on-disk formats ([`formats`])
//! are reachable underneath.

pub use basalt_formats as formats;
pub use basalt_query as query;
pub use basalt_query::{Database, Error, QueryResult, Result, Session};
pub use basalt_server as server;
pub use basalt_storage as storage;

/// The data directory `basalt serve` uses when none is given.
pub const DEFAULT_DATA_DIR: &str = "basalt-data";
