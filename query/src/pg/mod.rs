//! PostgreSQL's own surface: the `pg_catalog` schema, its functions, and
//! sequences.

pub(crate) mod catalog;
pub(crate) mod functions;
pub(crate) mod sequences;
