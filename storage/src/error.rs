use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("corruption in {file}: {reason} (offset {offset})")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("table \"{0}\" does not exist")]
    TableNotFound(String),
    #[error("table \"{0}\" already exists")]
    TableExists(String),
    #[error("could not serialize access due to concurrent update")]
    WriteConflict,
    #[error("table \"{0}\" was altered by a concurrent transaction")]
    SchemaChanged(String),
    #[error("column \"{0}\" does not exist")]
    ColumnNotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("null value in primary key column")]
    NullKey,
    #[error("null value in column \"{0}\" violates not-null constraint")]
    NotNull(String),
    #[error("transaction writes more than {limit} bytes, the most one commit may hold; commit in parts or load the rows with COPY outside a transaction block or basalt load")]
    TransactionTooLarge { limit: usize },
    /// A bulk insert gave a key twice or a key the table already holds;
    /// `row` is the loaded row, in the table's schema.
    #[error("duplicate key value in table \"{table}\"")]
    DuplicateKey {
        table: String,
        row: Box<arrow_array::RecordBatch>,
    },
    /// A write gave a UNIQUE index's value to a second row (`creating`:
    /// CREATE UNIQUE INDEX found two rows holding it); `values` are the
    /// index columns' values.
    #[error("{}", if *creating { format!("could not create unique index \"{index}\"") } else { format!("duplicate key value violates unique constraint \"{index}\"") })]
    UniqueViolation {
        index: String,
        values: Box<arrow_array::RecordBatch>,
        creating: bool,
    },
    #[error("database is read-only after an earlier write failure: {0}")]
    Poisoned(String),
    #[error("format error: {0}")]
    Format(#[from] basalt_formats::Error),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Attaches a file (and the position of the decoded slice within it) to a
    /// format error, so corruption names file and offset.
    pub fn in_file(path: impl Into<PathBuf>, base: u64, err: basalt_formats::Error) -> Self {
        let err = err.at_base(base);
        match err.offset() {
            Some(offset) => Error::Corruption {
                file: path.into(),
                offset,
                reason: err.to_string(),
            },
            None => Error::Format(err),
        }
    }
}

impl Error {
    /// Like [`Error::in_file`], but a decode error without an offset of its
    /// own is still corruption at `base`: damage always names file and offset.
    pub fn corrupt_in(path: impl Into<PathBuf>, base: u64, err: basalt_formats::Error) -> Self {
        let offset = err.offset().map_or(base, |at| at + base);
        Error::Corruption {
            file: path.into(),
            offset,
            reason: err.to_string(),
        }
    }
}

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
