//! The one mapping from every Basalt error to a Postgres SQLSTATE, so each
//! client sees the code it expects. The SQL layer's own errors join it here.

use arrow_schema::ArrowError;
use basalt_storage::Error as StorageError;
use datafusion::common::{DataFusionError, SchemaError};

/// The message an interval overflow raises, mapped to 22008.
pub(crate) const INTERVAL_OUT_OF_RANGE: &str = "interval out of range";

/// SQLSTATE of a storage error.
pub fn of_storage(err: &StorageError) -> &'static str {
    match err {
        StorageError::Corruption { .. } => "XX001", // data_corrupted
        StorageError::Io { source, .. } if is_disk_full(source) => "53100", // disk_full
        StorageError::Io { .. } => "58030",         // io_error
        StorageError::Locked(_) => "55006",         // object_in_use
        StorageError::TableNotFound(_) => "42P01",  // undefined_table
        StorageError::TableExists(_) => "42P07",    // duplicate_table
        StorageError::WriteConflict | StorageError::SchemaChanged(_) => "40001", // serialization_failure
        StorageError::ColumnNotFound(_) => "42703",                              // undefined_column
        StorageError::InvalidArgument(_) => "22023", // invalid_parameter_value
        StorageError::NullKey | StorageError::NotNull(_) => "23502", // not_null_violation
        StorageError::Poisoned(_) => "58030",        // the write failure behind it
        StorageError::TransactionTooLarge { .. } => "53200", // out_of_memory
        StorageError::DuplicateKey { .. } | StorageError::UniqueViolation { .. } => "23505", // unique_violation
        StorageError::Format(inner) => of_format(inner),
        StorageError::Arrow(_) => "XX000", // internal_error
        // The enum is non_exhaustive across crates; a variant added in storage
        // must be given its code above and a case in the test below.
        _ => "XX000",
    }
}

/// Out of space or over quota: the write may succeed once space is freed.
fn is_disk_full(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull || err.kind() == std::io::ErrorKind::QuotaExceeded
}

/// SQLSTATE of an error from encoding or decoding a byte layout.
pub fn of_format(err: &basalt_storage::FormatError) -> &'static str {
    use basalt_storage::FormatError as F;
    match err {
        F::Corrupt { .. } | F::Checksum { .. } => "XX001", // data_corrupted
        F::UnsupportedType(_) => "0A000",                  // feature_not_supported
        F::InvalidKey(_) => "23502",                       // a null key value
        F::Io(e) if is_disk_full(e) => "53100",            // disk_full
        F::Io(_) => "58030",                               // io_error
        F::Arrow(_) => "XX000",
        _ => "XX000",
    }
}

/// SQLSTATE of an error from planning or running a query.
pub fn of_datafusion(err: &DataFusionError) -> &'static str {
    match err {
        DataFusionError::External(inner) => {
            if let Some(storage) = inner.downcast_ref::<StorageError>() {
                of_storage(storage)
            } else if let Some(ours) = inner.downcast_ref::<crate::Error>() {
                ours.sqlstate()
            } else {
                "XX000"
            }
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            of_datafusion(inner)
        }
        DataFusionError::Shared(inner) => of_datafusion(inner),
        DataFusionError::SQL(..) => "42601", // syntax_error
        DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703", // undefined_column
            SchemaError::AmbiguousReference { .. } => "42702", // ambiguous_column
            _ => "42P16",                                 // invalid_table_definition
        },
        // The planner reports unknown relations only in its message.
        DataFusionError::Plan(message)
            if crate::sql::error::unknown_relation(message).is_some() =>
        {
            "42P01"
        }
        DataFusionError::Plan(_) => "42601",
        // DataFusion checks NOT NULL columns itself before rows reach a table.
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            ArrowError::InvalidArgumentError(m) if m.contains("non-nullable but contains null") => {
                "23502"
            }
            ArrowError::InvalidArgumentError(m) | ArrowError::ComputeError(m)
                if m.contains("too large to store") || m.contains("Overflow") =>
            {
                "22003" // numeric_value_out_of_range
            }
            ArrowError::ComputeError(m) | ArrowError::InvalidArgumentError(m)
                if m.contains("Timestamp out of range")
                    || m == INTERVAL_OUT_OF_RANGE
                    || m.contains("Date out of range")
                    || m.contains("Date arithmetic overflow") =>
            {
                "22008" // datetime_field_overflow
            }
            // An interval literal whose field does not fit its unit.
            ArrowError::ParseError(m) if m.contains("Unable to represent") => "22015", // interval_field_overflow
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02", // invalid_text_representation
            ArrowError::DivideByZero => "22012",                             // division_by_zero
            ArrowError::ArithmeticOverflow(_) => "22003", // numeric_value_out_of_range
            _ => "XX000",
        },
        DataFusionError::NotImplemented(_) => "0A000", // feature_not_supported
        DataFusionError::ResourcesExhausted(_) => "53200", // out_of_memory
        DataFusionError::IoError(_) => "58030",
        DataFusionError::Collection(errors) => errors.first().map_or("XX000", of_datafusion),
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
            (
                StorageError::Io {
                    path: "p".into(),
                    source: std::io::Error::from(std::io::ErrorKind::StorageFull),
                },
                "53100",
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
            (StorageError::TransactionTooLarge { limit: 1 }, "53200"),
            (
                StorageError::DuplicateKey {
                    table: "t".into(),
                    row: Box::new(arrow_array::RecordBatch::new_empty(std::sync::Arc::new(
                        arrow_schema::Schema::empty(),
                    ))),
                },
                "23505",
            ),
            (
                StorageError::UniqueViolation {
                    index: "i".into(),
                    values: Box::new(arrow_array::RecordBatch::new_empty(std::sync::Arc::new(
                        arrow_schema::Schema::empty(),
                    ))),
                    creating: false,
                },
                "23505",
            ),
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

    #[tokio::test]
    async fn query_errors_carry_postgres_codes() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::Database::open(dir.path()).unwrap();
        let schema =
            std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "id",
                arrow_schema::DataType::Int64,
                false,
            )]));
        db.storage().create_table("t", schema, &["id"]).unwrap();
        let mut session = db.session();
        let conflict = DataFusionError::External(Box::new(StorageError::WriteConflict));
        assert_eq!(
            of_datafusion(&DataFusionError::Context("scan".into(), Box::new(conflict))),
            "40001"
        );
        for (sql, code) in [
            ("SELECT * FROM missing", "42P01"),
            ("SELECT nope FROM t", "42703"),
            ("SELEC 1", "42601"),
            ("SELECT id FROM t WHERE", "42601"),
        ] {
            let err = session.query(sql).await.unwrap_err();
            assert_eq!(err.sqlstate(), code, "{sql}: {err}");
        }
    }
}
