//! The SQL layer's error: its own failures carry their SQLSTATE; storage and
//! DataFusion errors are wrapped and mapped by [`crate::sql::sqlstate`].

use datafusion::common::DataFusionError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An error the SQL layer raises itself, with its SQLSTATE.
    #[error("{message}")]
    Sql {
        code: &'static str,
        message: String,
        detail: Option<String>,
    },
    #[error(transparent)]
    Storage(basalt_storage::Error),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn sql(code: &'static str, message: impl Into<String>) -> Error {
        Error::Sql {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn not_supported(what: impl std::fmt::Display) -> Error {
        Error::sql("0A000", format!("{what} is not supported"))
    }

    pub fn with_detail(self, detail: impl Into<String>) -> Error {
        match self {
            Error::Sql { code, message, .. } => Error::Sql {
                code,
                message,
                detail: Some(detail.into()),
            },
            other => other,
        }
    }

    /// The Postgres SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Sql { code, .. } => code,
            Error::Storage(e) => crate::sql::sqlstate::of_storage(e),
            Error::DataFusion(e) => crate::sql::sqlstate::of_datafusion(e),
        }
    }

    /// Postgres' DETAIL line, when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Sql { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// Unwraps DataFusion's wrapping of an error raised inside a plan, so
    /// the inner error's code and message reach the client.
    pub fn from_datafusion(err: DataFusionError) -> Error {
        match err {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(inner) => match inner.downcast::<basalt_storage::Error>() {
                    Ok(storage) => Error::from(*storage),
                    Err(inner) => Error::DataFusion(DataFusionError::External(inner)),
                },
            },
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Error::from_datafusion(*inner)
            }
            DataFusionError::Plan(message) => match unknown_relation(&message) {
                Some(name) => Error::sql("42P01", format!("relation \"{name}\" does not exist")),
                None => Error::DataFusion(DataFusionError::Plan(message)),
            },
            other => Error::DataFusion(other),
        }
    }

    /// Wraps this error to pass through DataFusion interfaces.
    pub(crate) fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<basalt_storage::Error> for Error {
    /// A unique violation gets PostgreSQL's DETAIL line naming the key.
    fn from(err: basalt_storage::Error) -> Error {
        match err {
            basalt_storage::Error::UniqueViolation {
                ref values,
                creating,
                ..
            } => {
                let key = key_text(values);
                let detail = match creating {
                    true => format!("Key {key} is duplicated."),
                    false => format!("Key {key} already exists."),
                };
                Error::sql("23505", err.to_string()).with_detail(detail)
            }
            other => Error::Storage(other),
        }
    }
}

/// `(a, b)=(1, x)`: columns and values as PostgreSQL's key details show them.
pub(crate) fn key_text(values: &arrow_array::RecordBatch) -> String {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let names: Vec<&str> = values
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let shown: Vec<String> = values
        .columns()
        .iter()
        .map(|column| {
            ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
                .map(|f| f.value(0).to_string())
                .unwrap_or_default()
        })
        .collect();
    format!("({})=({})", names.join(", "), shown.join(", "))
}

/// The relation DataFusion's "table 'basalt.public.t' not found" names, as
/// the user would have written it.
pub(crate) fn unknown_relation(message: &str) -> Option<&str> {
    let name = message
        .strip_prefix("table '")?
        .strip_suffix("' not found")?;
    let name = name.strip_prefix("basalt.").unwrap_or(name);
    Some(name.strip_prefix("public.").unwrap_or(name))
}
