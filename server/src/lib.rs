//! Basalt's Postgres-wire server: pgwire on tokio over `query::Session`.
//!
//! Every connection gets its own session (and so its own transaction
//! state); simple and extended query protocols, text and binary formats,
//! trust or SCRAM-SHA-256 authentication, TLS and cancel requests.

mod admission;
mod auth;
mod cancel;
pub mod config;
mod error;
mod handler;
mod held;
mod preauth;
mod serve;
mod server;
mod shards;
mod tls;
mod types;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;

/// Stack of the threads that parse, plan and run statements. Statements are
/// bounded (54001 past a nesting limit), but the passes over a statement
/// near that bound recurse deeply; memory is committed only as it is used.
pub const STATEMENT_STACK_BYTES: usize = 64 << 20;
