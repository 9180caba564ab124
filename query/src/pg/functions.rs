//! Session information functions Postgres clients call on connect:
//! `version()`, `current_database()`, `current_schema()`.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use std::sync::Arc;

use arrow_schema::DataType;

/// What `version()` answers: drivers parse the leading `PostgreSQL 15.0`.
pub const VERSION: &str = concat!(
    "PostgreSQL 15.0 (Basalt ",
    env!("CARGO_PKG_VERSION"),
    ") on Rust, compiled by rustc"
);

fn constant(name: &str, value: &'static str) -> ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                value.to_string(),
            ))))
        }),
    )
}

pub(crate) fn functions(database_name: &'static str) -> Vec<ScalarUDF> {
    vec![
        constant("version", VERSION),
        constant("current_database", database_name),
        constant("current_schema", crate::SCHEMA),
    ]
}
