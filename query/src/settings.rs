//! Postgres session settings (`SET`, `SHOW`): the parameters clients and
//! drivers read or set on connect. `datafusion.*` options pass through to
//! DataFusion's own configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::StringArray;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{self, Expr, Ident, Value};

use crate::error::{Error, Result};
use crate::session::{QueryResult, Session};

/// The value every setting starts at, as Postgres 15 reports them.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "repeatable read"),
    ("extra_float_digits", "1"),
    ("hnsw.ef_search", "40"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", "15.0"),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "repeatable read"),
    ("transaction_read_only", "off"),
];

/// Settings a client may not change.
const READ_ONLY: &[&str] = &[
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "server_encoding",
    "server_version",
    "server_version_num",
];

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    values: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            values: DEFAULTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Settings {
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn set(&mut self, name: &str, value: String) -> Result<()> {
        let name = name.to_ascii_lowercase();
        if READ_ONLY.contains(&name.as_str()) {
            return Err(Error::sql(
                "55P02",
                format!("parameter \"{name}\" cannot be changed"),
            ));
        }
        // Postgres accepts any two-part name as a custom setting.
        if !self.values.contains_key(&name) && !name.contains('.') {
            return Err(unrecognized(&name));
        }
        self.values.insert(name, value);
        Ok(())
    }
}

fn unrecognized(name: &str) -> Error {
    Error::sql(
        "42704",
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// The text of a SET value: `'x'`, `x`, `1`, `DEFAULT`.
fn value_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

impl Session {
    pub(crate) fn set(&mut self, set: ast::Set) -> Result<QueryResult> {
        let (name, values) = match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => (variable.to_string(), values),
            ast::Set::SetTimeZone { value, .. } => ("timezone".to_string(), vec![value]),
            ast::Set::SetNames { charset_name, .. } => (
                "client_encoding".to_string(),
                vec![Expr::Identifier(charset_name)],
            ),
            ast::Set::SetTransaction { .. } | ast::Set::SetSessionParam(_) => {
                // Every transaction runs under snapshot isolation.
                return Ok(QueryResult::command("SET"));
            }
            other => return Err(Error::not_supported(format!("SET form `{other}`"))),
        };
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("datafusion.") {
            let text = values.iter().map(value_text).collect::<Vec<_>>().join(",");
            let state = self.ctx.state_ref();
            let mut state = state.write();
            state
                .config_mut()
                .options_mut()
                .set(&lower, &text)
                .map_err(Error::from_datafusion)?;
            return Ok(QueryResult::command("SET"));
        }
        let text = match values.as_slice() {
            [Expr::Identifier(Ident { value, .. })] if value.eq_ignore_ascii_case("default") => {
                DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == lower)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            }
            values => values.iter().map(value_text).collect::<Vec<_>>().join(", "),
        };
        if lower == "timezone" {
            self.set_time_zone(&text)?;
        }
        if lower == "hnsw.ef_search" {
            let ef: usize = text
                .parse()
                .ok()
                .filter(|ef| (1..=1000).contains(ef))
                .ok_or_else(|| {
                    Error::sql(
                        "22023",
                        format!("invalid value for parameter \"hnsw.ef_search\": \"{text}\""),
                    )
                    .with_detail("Valid values are between \"1\" and \"1000\".")
                })?;
            self.shared
                .ef_search
                .store(ef, std::sync::atomic::Ordering::Relaxed);
        }
        self.settings.set(&lower, text)?;
        Ok(QueryResult::command("SET"))
    }

    /// Time zones DataFusion evaluates in are offsets; `UTC` and `+hh:mm`
    /// forms are accepted.
    fn set_time_zone(&mut self, text: &str) -> Result<()> {
        let offset = if names_utc(text) {
            "+00:00".to_string()
        } else if text.starts_with('+') || text.starts_with('-') {
            text.to_string()
        } else {
            return Err(Error::sql(
                "22023",
                format!("invalid value for parameter \"TimeZone\": \"{text}\""),
            ));
        };
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state
            .config_mut()
            .options_mut()
            .set("datafusion.execution.time_zone", &offset)
            .map_err(Error::from_datafusion)
    }

    pub(crate) async fn show(&mut self, variable: &[Ident]) -> Result<QueryResult> {
        let name = show_name(variable);
        if name.starts_with("datafusion.") {
            let statement = ast::Statement::ShowVariable {
                variable: variable.to_vec(),
            };
            return self
                .run_datafusion(Statement::Statement(Box::new(statement)))
                .await;
        }
        if name == "all" {
            let (names, values): (Vec<&str>, Vec<&str>) = self
                .settings
                .values()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .unzip();
            let schema = self.show_columns(variable);
            let batch = arrow_array::RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(values)),
                ],
            )
            .map_err(|e| Error::Storage(e.into()))?;
            return Ok(QueryResult::rows("SHOW", schema, vec![batch]));
        }
        let value = self
            .settings
            .get(&name)
            .ok_or_else(|| unrecognized(&name))?;
        let schema = self.show_columns(variable);
        let batch = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![value]))],
        )
        .map_err(|e| Error::Storage(e.into()))?;
        Ok(QueryResult::rows("SHOW", schema, vec![batch]))
    }

    /// The columns SHOW answers with, known before it runs.
    pub(crate) fn show_columns(&self, variable: &[Ident]) -> SchemaRef {
        let name = show_name(variable);
        let fields = if name == "all" {
            vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("setting", DataType::Utf8, false),
            ]
        } else if name.starts_with("datafusion.") {
            vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ]
        } else {
            vec![Field::new(&name, DataType::Utf8, false)]
        };
        Arc::new(Schema::new(fields))
    }
}

/// The setting SHOW names, as the settings table keys it.
fn show_name(variable: &[Ident]) -> String {
    let words: Vec<String> = variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    // The parser splits both `time zone` and `myapp.tenant` into words.
    match words.join(" ").as_str() {
        "time zone" => "timezone".to_string(),
        "transaction isolation level" => "transaction_isolation".to_string(),
        "all" => "all".to_string(),
        _ => words.join("."),
    }
}

/// Whether a TimeZone setting names UTC.
pub(crate) fn names_utc(zone: &str) -> bool {
    matches!(
        zone.to_ascii_uppercase().as_str(),
        "UTC" | "GMT" | "Z" | "ZULU" | "ETC/UTC"
    )
}
