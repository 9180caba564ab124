//! The sqllogictest driver for Basalt, shared by the project's own slt
//! files and the conformance slice.

// Each test binary uses its part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_schema::DataType;

use basalt::query::pgtext::format_value;
use basalt::{Database, QueryResult, Session};
use sqllogictest::{DBOutput, DefaultColumnType, Runner};

pub struct Basalt {
    session: Session,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Basalt {
    type Error = basalt::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, basalt::Error> {
        let result = self.session.execute(sql).await?;
        output(result, column_type, |array, row| {
            match format_value(array, row) {
                None => "NULL".to_string(),
                Some(s) if s.is_empty() => "(empty)".to_string(),
                Some(s) => s,
            }
        })
        .await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "basalt"
    }

    fn error_sql_state(err: &basalt::Error) -> Option<String> {
        Some(err.sqlstate().to_string())
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    use DataType as T;
    match data_type {
        T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => {
            DefaultColumnType::Integer
        }
        T::Float16 | T::Float32 | T::Float64 | T::Decimal128(..) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

/// A runner whose connections are sessions on one fresh database.
pub fn runner(
    database: Database,
) -> Runner<Basalt, impl sqllogictest::MakeConnection<Conn = Basalt>> {
    let mut runner = Runner::new(move || {
        let session = database.session();
        async move { Ok(Basalt { session }) }
    });
    runner.add_label("basalt");
    runner.add_label("postgres");
    runner
}

pub async fn run_file(path: &Path) -> Result<(), String> {
    let database = Database::open_temporary().map_err(|e| e.to_string())?;
    runner(database)
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string())
}

/// A statement's result as sqllogictest output, each value printed by `cell`.
pub async fn output(
    result: QueryResult,
    column_type: fn(&DataType) -> DefaultColumnType,
    cell: fn(&dyn Array, usize) -> String,
) -> Result<DBOutput<DefaultColumnType>, basalt::Error> {
    let types = match &result {
        QueryResult::Rows { schema, .. } => schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect(),
        QueryResult::Command { rows, .. } => return Ok(DBOutput::StatementComplete(*rows)),
        QueryResult::Empty => return Ok(DBOutput::StatementComplete(0)),
        // The data would come from a client; a file can only start it.
        QueryResult::CopyIn { .. } => return Ok(DBOutput::StatementComplete(0)),
        QueryResult::CopyOut { .. } => vec![DefaultColumnType::Text],
    };
    if let QueryResult::CopyOut { data, .. } = result {
        // Each encoded line is one row of one text column.
        let lines: Vec<Vec<u8>> = futures::TryStreamExt::try_collect(data).await?;
        let rows = lines
            .iter()
            .flat_map(|line| {
                String::from_utf8_lossy(line)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .map(|line| vec![line])
            .collect();
        return Ok(DBOutput::Rows { types, rows });
    }
    let mut rows = Vec::new();
    for batch in &result.collect().await? {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), row))
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

/// The `*.slt` files of a directory, in name order.
pub fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}
