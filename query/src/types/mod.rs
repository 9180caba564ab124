//! PostgreSQL's types as Arrow holds them: type names and OIDs, text
//! forms, JSON, vectors, and date/time input.

pub(crate) mod json;
pub mod pgtext;
pub mod pgtypes;
pub(crate) mod text_datetime;
pub mod vector;
