//! Basalt's byte layouts: what is on disk, specified in `formats/FORMAT.md`.
//! No policy and no threads live here; the storage engine decides when and
//! where these structures are written.

pub mod array;
pub mod bloom;
pub mod btree;
pub mod codec;
pub mod distance;
pub mod error;
pub mod files;
pub mod frame;
pub mod hnsw;
pub mod key;
pub mod manifest;
pub mod scalar;
pub mod schema;
pub mod segment;
pub mod wal;

pub use error::{Error, Result};
