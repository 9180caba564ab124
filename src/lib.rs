//! Basalt: an embedded columnar + LSM database engine.
//!
//! Today this facade exposes the storage engine ([`storage`]) and the on-disk
//! formats ([`formats`]); the SQL layer arrives on top of them.

pub use basalt_formats as formats;
pub use basalt_storage as storage;

/// The data directory `basalt serve` uses when none is given.
pub const DEFAULT_DATA_DIR: &str = "basalt-data";
