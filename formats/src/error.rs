use thiserror::Error;

/// Errors from encoding or decoding Basalt byte layouts.
///
/// Offsets are relative to the start of the byte slice handed to the decoder;
/// the storage layer adds the file name and the slice's position in the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("corrupt data at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error(
        "checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("unsupported data type {0}")]
    UnsupportedType(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn corrupt(offset: impl TryInto<u64>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            offset: offset.try_into().unwrap_or(u64::MAX),
            reason: reason.into(),
        }
    }

    /// The byte offset this error points at, if it points at one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corrupt { offset, .. } | Error::Checksum { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// Shifts the offset of a positional error by `base`, for a slice that starts
    /// at `base` within a larger file.
    pub fn at_base(self, base: u64) -> Self {
        match self {
            Error::Corrupt { offset, reason } => Error::Corrupt {
                offset: offset + base,
                reason,
            },
            Error::Checksum {
                offset,
                stored,
                computed,
            } => Error::Checksum {
                offset: offset + base,
                stored,
                computed,
            },
            other => other,
        }
    }
}
