//! The one mapping from every Basalt error to a Postgres SQLSTATE, so each
//! client sees the code it expects. The SQL layer's own errors join it here.

use basalt_storage::Error as StorageError;

/// SQLSTATE of a storage error.
pub fn of_storage(err: &StorageError) -> &'static str {
    match err {
        StorageError::Corruption { .. } => "XX001", // data_corrupted
        StorageError::Io { .. } => "58030",         // io_error
        StorageError::Locked(_) => "55006",         // object_in_use
        StorageError::TableNotFound(_) => "42P01",  // undefined_table
        StorageError::TableExists(_) => "42P07",    // duplicate_table
        StorageError::WriteConflict | StorageError::SchemaChanged(_) => "40001", // serialization_failure
        StorageError::ColumnNotFound(_) => "42703",                              // undefined_column
        StorageError::InvalidArgument(_) => "22023", // invalid_parameter_value
        StorageError::NullKey | StorageError::NotNull(_) => "23502", // not_null_violation
        StorageError::Poisoned(_) => "58030",        // the write failure behind it
        StorageError::Format(inner) => of_format(inner),
        StorageError::Arrow(_) => "XX000", // internal_error
        // The enum is non_exhaustive across crates; a variant added in storage
        // must be given its code above and a case in the test below.
        _ => "XX000",
    }
}

/// SQLSTATE of an error from encoding or decoding a byte layout.
pub fn of_format(err: &basalt_storage::FormatError) -> &'static str {
    use basalt_storage::FormatError as F;
    match err {
        F::Corrupt { .. } | F::Checksum { .. } => "XX001", // data_corrupted
        F::UnsupportedType(_) => "0A000",                  // feature_not_supported
        F::InvalidKey(_) => "23502",                       // a null key value
        F::Io(_) => "58030",                               // io_error
        F::Arrow(_) => "XX000",
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storage_error_has_its_code() {
        let io = || std::io::Error::other("disk on fire");
        let cases: Vec<(StorageError, &str)> = vec![
            (
                StorageError::Corruption {
                    file: "f".into(),
                    offset: 1,
                    reason: "r".into(),
                },
                "XX001",
            ),
            (
                StorageError::Io {
                    path: "p".into(),
                    source: io(),
                },
                "58030",
            ),
            (StorageError::Locked("d".into()), "55006"),
            (StorageError::TableNotFound("t".into()), "42P01"),
            (StorageError::TableExists("t".into()), "42P07"),
            (StorageError::WriteConflict, "40001"),
            (StorageError::SchemaChanged("t".into()), "40001"),
            (StorageError::ColumnNotFound("c".into()), "42703"),
            (StorageError::InvalidArgument("x".into()), "22023"),
            (StorageError::NullKey, "23502"),
            (StorageError::NotNull("c".into()), "23502"),
            (StorageError::Poisoned("p".into()), "58030"),
            (
                StorageError::Format(basalt_storage::FormatError::UnsupportedType("x".into())),
                "0A000",
            ),
            (
                StorageError::Format(basalt_storage::FormatError::corrupt(3, "bad")),
                "XX001",
            ),
            (
                StorageError::Arrow(arrow_schema::ArrowError::ComputeError("x".into())),
                "XX000",
            ),
        ];
        for (err, code) in &cases {
            assert_eq!(of_storage(err), *code, "{err}");
        }
    }
}
