//! Postgres session settings (`SET`, `SHOW`): the parameters clients and
//! drivers read or set on connect. `datafusion.*` options pass through to
//! DataFusion's own configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::StringArray;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{self, Expr, Ident, Value};

use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};

/// The value every setting starts at, as Postgres 15 reports them.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    // Off sends every statement through the general (DataFusion) path:
    // for comparing the two, which must agree.
    ("basalt.fast_paths", "on"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "repeatable read"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
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

/// Every setting with its default: PostgreSQL's and each index method's.
fn defaults() -> impl Iterator<Item = (&'static str, &'static str)> {
    DEFAULTS
        .iter()
        .copied()
        .chain(crate::index::settings().map(|s| (s.name, s.default)))
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    values: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            values: defaults()
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

    /// Whether the OLTP fast paths may answer (`basalt.fast_paths`).
    pub fn fast_paths(&self) -> bool {
        !matches!(
            self.get("basalt.fast_paths")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("off" | "false" | "0" | "no")
        )
    }

    /// `statement_timeout`, if set (0 means none).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.duration("statement_timeout")
    }

    /// `lock_timeout`, if set (0 means none).
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.duration("lock_timeout")
    }

    /// `idle_in_transaction_session_timeout`, if set (0 means none).
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        self.duration("idle_in_transaction_session_timeout")
    }

    fn duration(&self, name: &str) -> Option<Duration> {
        self.get(name)
            .and_then(|text| parse_milliseconds(text).ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    fn set(&mut self, name: &str, value: String) -> Result<()> {
        let name = name.to_ascii_lowercase();
        if TIMEOUTS.contains(&name.as_str()) {
            parse_milliseconds(&value).map_err(|hint| {
                Error::sql(
                    "22023",
                    format!("invalid value for parameter \"{name}\": \"{value}\""),
                )
                .with_detail(hint)
            })?;
        }
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

/// DataFusion options a client may set: ones that shape plans, name
/// resolution and output. Options naming files or locations, memory,
/// spilling, threads or the string types storage reads are the server's
/// alone.
const ENGINE_OPTIONS: &[&str] = &[
    "datafusion.explain.",
    "datafusion.optimizer.",
    "datafusion.catalog.information_schema",
    "datafusion.catalog.default_catalog",
    "datafusion.catalog.default_schema",
    "datafusion.sql_parser.dialect",
    "datafusion.execution.batch_size",
    "datafusion.execution.target_partitions",
    "datafusion.sql_parser.enable_ident_normalization",
    "datafusion.sql_parser.support_varchar_with_length",
];

/// Most rows per batch a client may ask for.
const MAX_BATCH_SIZE: u64 = 1 << 16;
/// Most partitions a client may spread one query over.
const MAX_TARGET_PARTITIONS: u64 = 64;

fn check_engine_option(name: &str, text: &str) -> Result<()> {
    let allowed = ENGINE_OPTIONS.iter().any(|option| {
        if option.ends_with('.') {
            name.starts_with(option)
        } else {
            name == *option
        }
    });
    if !allowed {
        return Err(Error::sql(
            "42501",
            format!("permission denied to set parameter \"{name}\""),
        ));
    }
    let most = match name {
        "datafusion.execution.batch_size" => MAX_BATCH_SIZE,
        "datafusion.execution.target_partitions" => MAX_TARGET_PARTITIONS,
        _ => return Ok(()),
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=most).contains(&n) => Ok(()),
        _ => Err(Error::sql(
            "22023",
            format!("invalid value for parameter \"{name}\": \"{text}\""),
        )
        .with_detail(format!("Valid values are between \"1\" and \"{most}\"."))),
    }
}

/// Settings that are durations in milliseconds.
const TIMEOUTS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// A Postgres time setting in milliseconds: a number (of milliseconds) or a
/// number with a unit (`us`, `ms`, `s`, `min`, `h`, `d`), as `SET
/// statement_timeout = '5s'` takes it.
fn parse_milliseconds(text: &str) -> std::result::Result<u64, &'static str> {
    const HINT: &str =
        "Valid units for this parameter are \"us\", \"ms\", \"s\", \"min\", \"h\", and \"d\".";
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| HINT)?;
    let per_unit = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(HINT),
    };
    let ms = (number * per_unit).round();
    // Postgres' limit for these settings: INT_MAX milliseconds.
    if !(0.0..=2_147_483_647.0).contains(&ms) {
        return Err("Value exceeds the allowed range of 0 .. 2147483647 milliseconds.");
    }
    Ok(ms as u64)
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
            self.set_engine_option(&lower, &text)?;
            return Ok(QueryResult::command("SET"));
        }
        let text = match values.as_slice() {
            [Expr::Identifier(Ident { value, .. })] if value.eq_ignore_ascii_case("default") => {
                defaults()
                    .find(|(k, _)| *k == lower)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            }
            values => values.iter().map(value_text).collect::<Vec<_>>().join(", "),
        };
        if lower == "timezone" {
            self.set_time_zone(&text)?;
        }
        if let Some(setting) = crate::index::setting(&lower) {
            (setting.apply)(&self.shared, &text)?;
        }
        self.settings.set(&lower, text)?;
        Ok(QueryResult::command("SET"))
    }

    /// Sets one of DataFusion's options, if a client may: only those on
    /// [`ENGINE_OPTIONS`], within their bounds.
    fn set_engine_option(&mut self, name: &str, text: &str) -> Result<()> {
        check_engine_option(name, text)?;
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state
            .config_mut()
            .options_mut()
            .set(name, text)
            .map_err(Error::from_datafusion)
    }

    /// `RESET name` and `RESET ALL`: back to the value a new session has.
    pub(crate) fn reset(&mut self, name: &str) -> Result<QueryResult> {
        let lower = name.to_ascii_lowercase();
        if lower == "all" {
            let fresh = Settings::default();
            for (name, _) in defaults() {
                if !READ_ONLY.contains(&name) && self.settings.get(name) != fresh.get(name) {
                    self.reset(name)?;
                }
            }
            self.settings
                .values
                .retain(|name, _| fresh.values.contains_key(name));
            return Ok(QueryResult::command("RESET"));
        }
        if lower.starts_with("datafusion.") {
            let initial = crate::session::session_config();
            let value = initial
                .options()
                .entries()
                .into_iter()
                .find(|entry| entry.key == lower)
                .ok_or_else(|| unrecognized(&lower))?
                .value
                .unwrap_or_default();
            self.set_engine_option(&lower, &value)?;
            return Ok(QueryResult::command("RESET"));
        }
        let default = defaults()
            .find(|(k, _)| *k == lower)
            .map(|(_, v)| v.to_string());
        match default {
            Some(value) => {
                let set = ast::Set::SingleAssignment {
                    scope: None,
                    hivevar: false,
                    variable: ast::ObjectName::from(vec![Ident::new(lower)]),
                    values: vec![Expr::value(Value::SingleQuotedString(value))],
                };
                self.set(set)?;
            }
            // A custom setting goes away.
            None if lower.contains('.') => {
                self.settings.values.remove(&lower);
            }
            None => return Err(unrecognized(&lower)),
        }
        Ok(QueryResult::command("RESET"))
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
