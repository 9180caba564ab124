//! Postgres type identities of Arrow columns: the type OID a column has in
//! `pg_type`, `pg_attribute` and the wire server's RowDescription, its type
//! modifier, and the name `format_type` prints.

use arrow_schema::{DataType, Field};

/// Field metadata: the Postgres type name when Arrow's type does not say it
/// (uuid, json, jsonb are stored as text).
pub const PG_TYPE_KEY: &str = "basalt.pg_type";

/// `(oid, typname, typlen, array oid, category)` of every type a column
/// can have, as Postgres numbers them.
pub(crate) const TYPES: &[(i64, &str, i16, i64, &str)] = &[
    (16, "bool", 1, 1000, "B"),
    (17, "bytea", -1, 1001, "U"),
    (18, "char", 1, 1002, "Z"),
    (19, "name", 64, 1003, "S"),
    (20, "int8", 8, 1016, "N"),
    (21, "int2", 2, 1005, "N"),
    (23, "int4", 4, 1007, "N"),
    (25, "text", -1, 1009, "S"),
    (26, "oid", 4, 1028, "N"),
    (114, "json", -1, 199, "U"),
    (700, "float4", 4, 1021, "N"),
    (701, "float8", 8, 1022, "N"),
    (1043, "varchar", -1, 1015, "S"),
    (1082, "date", 4, 1182, "D"),
    (1083, "time", 8, 1183, "D"),
    (1114, "timestamp", 8, 1115, "D"),
    (1184, "timestamptz", 8, 1185, "D"),
    (1186, "interval", 16, 1187, "T"),
    (1700, "numeric", -1, 1231, "N"),
    (2950, "uuid", 16, 2951, "U"),
    (3802, "jsonb", -1, 3807, "U"),
    (
        crate::types::vector::VECTOR_OID,
        "vector",
        -1,
        crate::types::vector::VECTOR_ARRAY_OID,
        "U",
    ),
];

/// The OID of a column's type (text for types Postgres has no match for).
pub fn type_oid(field: &Field) -> i64 {
    match field.metadata().get(PG_TYPE_KEY).map(String::as_str) {
        Some("uuid") => return 2950,
        Some("json") => return 114,
        Some("jsonb") => return 3802,
        _ => {}
    }
    data_type_oid(field.data_type())
}

/// The OID of an Arrow type (text for types Postgres has no match for).
pub fn data_type_oid(data_type: &DataType) -> i64 {
    match data_type {
        DataType::Boolean => 16,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => 21,
        DataType::Int32 | DataType::UInt16 => 23,
        DataType::Int64 | DataType::UInt32 => 20,
        // No Postgres integer holds every u64.
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => 1700,
        DataType::Float16 | DataType::Float32 => 700,
        DataType::Float64 => 701,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => 17,
        DataType::Date32 | DataType::Date64 => 1082,
        DataType::Timestamp(_, None) => 1114,
        DataType::Timestamp(_, Some(_)) => 1184,
        DataType::Time32(_) | DataType::Time64(_) => 1083,
        DataType::Interval(_) | DataType::Duration(_) => 1186,
        DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32 => {
            crate::types::vector::VECTOR_OID
        }
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            array_oid(type_oid(item))
        }
        _ => 25,
    }
}

fn array_oid(element: i64) -> i64 {
    TYPES.iter().find(|t| t.0 == element).map_or(1009, |t| t.3)
}

/// The type modifier Postgres keeps for a column: numeric's precision and
/// scale, -1 for none.
pub(crate) fn typmod(field: &Field) -> i32 {
    match field.data_type() {
        DataType::Decimal128(precision, scale) => {
            ((i32::from(*precision) << 16) | (i32::from(*scale) & 0xffff)) + 4
        }
        // pgvector's typmod is the dimension count.
        DataType::FixedSizeList(item, n) if item.data_type() == &DataType::Float32 => *n,
        _ => -1,
    }
}

/// What Postgres' `format_type(oid, typmod)` prints.
pub(crate) fn format_type(oid: i64, typmod: Option<i32>) -> Option<String> {
    if let Some(element) = TYPES.iter().find(|t| t.3 == oid) {
        return format_type(element.0, typmod).map(|name| format!("{name}[]"));
    }
    let name = TYPES.iter().find(|t| t.0 == oid)?.1;
    Some(match (name, typmod) {
        ("numeric", Some(m)) if m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", m >> 16, m & 0xffff)
        }
        ("vector", Some(n)) if n > 0 => format!("vector({n})"),
        ("bool", _) => "boolean".into(),
        ("int2", _) => "smallint".into(),
        ("int4", _) => "integer".into(),
        ("int8", _) => "bigint".into(),
        ("float4", _) => "real".into(),
        ("float8", _) => "double precision".into(),
        ("varchar", _) => "character varying".into(),
        ("char", _) => "\"char\"".into(),
        ("timestamp", _) => "timestamp without time zone".into(),
        ("timestamptz", _) => "timestamp with time zone".into(),
        ("time", _) => "time without time zone".into(),
        (name, _) => name.into(),
    })
}

/// A column's type as `format_type` names it.
pub(crate) fn type_name(field: &Field) -> String {
    let typmod = typmod(field);
    format_type(type_oid(field), (typmod >= 0).then_some(typmod)).unwrap_or_else(|| "text".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn names_match_postgres_format_type() {
        let cases = [
            (DataType::Int32, "integer"),
            (DataType::Decimal128(10, 2), "numeric(10,2)"),
            (
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("+00:00".into())),
                "timestamp with time zone",
            ),
            (
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                "bigint[]",
            ),
            (DataType::Utf8, "text"),
        ];
        for (data_type, name) in cases {
            assert_eq!(type_name(&Field::new("c", data_type, true)), name);
        }
        assert_eq!(format_type(1700, None).as_deref(), Some("numeric"));
        assert_eq!(format_type(1231, Some(-1)).as_deref(), Some("numeric[]"));
        assert_eq!(format_type(424242, None), None);
    }
}
