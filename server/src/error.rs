//! The server's error: its own protocol and configuration failures, and
//! the SQL layer's errors passed through with their SQLSTATE.

use pgwire::error::{ErrorInfo, PgWireError};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure the server raises itself, with its SQLSTATE.
    #[error("{message}")]
    Sql { code: &'static str, message: String },
    #[error(transparent)]
    Query(#[from] basalt_query::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn sql(code: &'static str, message: impl Into<String>) -> Error {
        Error::Sql {
            code,
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The SQLSTATE a client sees.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Sql { code, .. } => code,
            Error::Query(e) => e.sqlstate(),
            Error::Io { .. } => "58030",
            Error::Config(_) => "F0000",
        }
    }

    /// The ErrorResponse fields the client gets.
    pub fn to_error_info(&self) -> ErrorInfo {
        let mut info = ErrorInfo::new(
            "ERROR".to_string(),
            self.sqlstate().to_string(),
            self.to_string(),
        );
        if let Error::Query(e) = self {
            info.detail = e.detail().map(str::to_string);
        }
        info
    }
}

impl From<Error> for PgWireError {
    fn from(e: Error) -> PgWireError {
        PgWireError::UserError(Box::new(e.to_error_info()))
    }
}

/// A SQL-layer error as the client gets it.
pub fn to_pgwire(e: basalt_query::Error) -> PgWireError {
    Error::Query(e).into()
}
