//! A conformance slice from a suite nobody here wrote: sqllogictest files
//! from Apache DataFusion's own test suite (`datafusion-sqllogictest`
//! 55.2.0, Apache-2.0, copied unchanged into `tests/conformance/datafusion`),
//! picked for the SQL a Postgres-flavoured engine speaks, and run through
//! Basalt's sessions: every CREATE TABLE, INSERT, UPDATE and DELETE goes to
//! the storage engine instead of DataFusion's memory tables.
//!
//! Each record counts on its own (a failing record does not stop its file).
//! `tests/conformance/baseline.txt` holds the pass count per file; the test
//! fails when any file passes fewer records than recorded. After an
//! improvement, `BASALT_CONFORMANCE_BLESS=1 cargo test --test conformance`
//! rewrites the baseline.
//!
//! Values print in that suite's conventions (`true`/`false`, floats rounded
//! to 12 decimals, decimals without trailing zeros), which differ from the
//! Postgres text format `tests/slt` uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, DecimalType, Float32Type, Float64Type};
use arrow_array::Array;
use arrow_schema::DataType;
use basalt::storage::Options;
use basalt::{Database, Session};
use sqllogictest::{DBOutput, DefaultColumnType, Record, Runner};

mod slt_support;

struct Engine {
    session: Session,
}

/// An error worded as the suite's own runner words it: DataFusion's errors
/// carry a `DataFusion error: ` prefix its expected-error patterns match.
#[derive(Debug)]
struct EngineError {
    message: String,
    sqlstate: &'static str,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EngineError {}

impl From<basalt::Error> for EngineError {
    fn from(err: basalt::Error) -> EngineError {
        let message = match &err {
            basalt::Error::DataFusion(inner) => format!("DataFusion error: {inner}"),
            other => other.to_string(),
        };
        EngineError {
            message,
            sqlstate: err.sqlstate(),
        }
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = EngineError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, EngineError> {
        let result = self.session.execute(sql).await?;
        Ok(slt_support::output(result, |_| DefaultColumnType::Any, cell).await?)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "basalt"
    }

    fn error_sql_state(err: &EngineError) -> Option<String> {
        Some(err.sqlstate.to_string())
    }
}

/// A value as the DataFusion suite's runner prints it.
fn cell(array: &dyn Array, row: usize) -> String {
    if array
        .logical_nulls()
        .is_some_and(|nulls| nulls.is_null(row))
    {
        return "NULL".to_string();
    }
    match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row).to_string()),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row).to_string()),
        DataType::Decimal128(_, scale) => {
            let text = Decimal128Type::format_decimal(
                array.as_primitive::<Decimal128Type>().value(row),
                38,
                *scale,
            );
            trim_fraction(text)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(row),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                _ => array.as_string_view().value(row),
            };
            if text.is_empty() {
                "(empty)".to_string()
            } else {
                text.trim_end_matches('\n').to_string()
            }
        }
        _ => {
            let options = basalt::query::arrow::util::display::FormatOptions::default();
            basalt::query::arrow::util::display::ArrayFormatter::try_new(array, &options)
                .map(|f| f.value(row).to_string())
                .unwrap_or_default()
        }
    }
}

/// Rounded to 12 decimals with trailing zeros dropped.
fn float(text: String) -> String {
    match text.as_str() {
        "NaN" | "-NaN" => return "NaN".to_string(),
        "inf" => return "Infinity".to_string(),
        "-inf" => return "-Infinity".to_string(),
        _ => {}
    }
    let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
    if decimals <= 12 {
        return trim_fraction(text);
    }
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    trim_fraction(format!("{value:.12}"))
}

fn trim_fraction(text: String) -> String {
    if text == "-0" {
        return "0".to_string();
    }
    if !text.contains('.') {
        return text;
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    match trimmed {
        "-0" => "0".to_string(),
        other => other.to_string(),
    }
}

/// Records passed and run in one file.
async fn run_file(path: &Path) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        synchronous_commit: false,
        ..Options::default()
    };
    let database = Database::open_with(dir.path(), options).unwrap();
    let mut runner = Runner::new(move || {
        let session = database.session();
        async move { Ok(Engine { session }) }
    });
    runner.add_label("datafusion");
    let Ok(records) = sqllogictest::parse_file::<DefaultColumnType>(path) else {
        return (0, 0);
    };
    let (mut passed, mut total) = (0, 0);
    for record in records {
        match record {
            Record::Halt { .. } => break,
            Record::Statement { .. } | Record::Query { .. } => {
                total += 1;
                match runner.run_async(record).await {
                    Ok(_) => passed += 1,
                    Err(e) if std::env::var_os("BASALT_CONFORMANCE_VERBOSE").is_some() => {
                        eprintln!("{}: {}\n", path.display(), e.display(false));
                    }
                    Err(_) => {}
                }
            }
            other => {
                let _ = runner.run_async(other).await;
            }
        }
    }
    (passed, total)
}

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/baseline.txt")
}

fn read_baseline() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_slice_does_not_regress() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/datafusion");
    let files = slt_support::slt_files(&dir);
    let baseline = read_baseline();
    let mut results = BTreeMap::new();
    let mut regressions = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let (passed, total) = run_file(file).await;
        let expected = baseline.get(&name).copied();
        if expected.is_none_or(|e| passed < e) {
            regressions.push(format!("{name}: {passed} passed, baseline {expected:?}"));
        }
        results.insert(name, (passed, total));
    }
    let (passed, total) = results
        .values()
        .fold((0, 0), |(p, t), (fp, ft)| (p + fp, t + ft));
    let mut report = format!(
        "# Conformance slice: records passed / run per file (DataFusion 55.2 slt files).\n# total {passed} / {total}\n"
    );
    for (name, (p, t)) in &results {
        report.push_str(&format!("{name} {p} {t}\n"));
    }
    println!("{report}");
    if std::env::var_os("BASALT_CONFORMANCE_BLESS").is_some() {
        std::fs::write(baseline_path(), &report).unwrap();
        return;
    }
    assert!(
        regressions.is_empty(),
        "conformance regressed:\n{}\n\n{report}",
        regressions.join("\n")
    );
}
