//! Prepared statements for the extended query protocol: what a statement's
//! parameters and result columns are before it runs ([`Session::describe`]),
//! and a statement with its `$n` placeholders replaced by values
//! ([`bind`]).
//!
//! Values are bound as SQL literals (cast to the parameter's type) rather
//! than as DataFusion parameter values, because DDL and DML are the
//! session's own and never see a DataFusion plan with placeholders.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{self, Expr, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::session::Session;
use crate::sql::error::{Error, Result};
use crate::sql::syntax::quote_ident;

/// A statement's parameters and result columns.
#[derive(Debug, Clone)]
pub struct Description {
    /// One entry per `$n`, in order; `None` where the type is not implied
    /// by the statement.
    pub parameters: Vec<Option<DataType>>,
    /// The columns of the rows the statement returns; `None` for a
    /// statement that returns a command tag only.
    pub columns: Option<SchemaRef>,
}

/// One parameter value, as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL, cast to the SQL type when one is known.
    Null(Option<String>),
    /// A value in Postgres text form, cast to the SQL type (`bigint`,
    /// `timestamptz`, ...) when one is known, else an untyped string literal.
    Text {
        text: String,
        sql_type: Option<String>,
    },
    /// Raw bytes for a bytea parameter.
    Bytes(Vec<u8>),
}

impl Session {
    /// The parameter types and result columns of `statement`, without
    /// running it.
    pub async fn describe(&self, statement: &Statement) -> Result<Description> {
        let count = placeholder_count(statement)?;
        let mut inferred = self.inferred_parameter_types(statement).await;
        for (name, sql_type) in cast_placeholders(statement) {
            if inferred.get(&name).cloned().flatten().is_none() {
                if let Ok(data_type) = self.sql_data_type(&sql_type).await {
                    inferred.insert(name, Some(data_type));
                }
            }
        }
        // Vectors are sent in pgvector's text form: a client asked for a
        // vector parameter binds text, which every driver can.
        let parameters = (1..=count)
            .map(|n| inferred.get(&format!("${n}")).cloned().flatten())
            .map(|t| match t {
                Some(t) if crate::types::vector::dimensions_of(&t).is_some() => {
                    Some(DataType::Utf8)
                }
                other => other,
            })
            .collect();
        let columns = self.result_columns(statement).await?;
        Ok(Description {
            parameters,
            columns,
        })
    }

    /// DataFusion's inference of placeholder types; statements DataFusion
    /// cannot plan (DDL, ON CONFLICT, ...) infer nothing.
    async fn inferred_parameter_types(
        &self,
        statement: &Statement,
    ) -> BTreeMap<String, Option<DataType>> {
        let plannable = match statement {
            Statement::Statement(inner) => match inner.as_ref() {
                ast::Statement::Insert(insert) => {
                    let mut insert = insert.clone();
                    insert.on = None;
                    insert.returning = None;
                    Statement::Statement(Box::new(ast::Statement::Insert(insert)))
                }
                ast::Statement::Update(_)
                | ast::Statement::Delete(_)
                | ast::Statement::Query(_) => statement.clone(),
                _ => return BTreeMap::new(),
            },
            Statement::Explain(_) => statement.clone(),
            _ => return BTreeMap::new(),
        };
        match self.plan(plannable).await {
            Ok(plan) => plan
                .get_parameter_types()
                .map(|types| types.into_iter().collect())
                .unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// The columns a statement returns rows with, if it returns rows.
    async fn result_columns(&self, statement: &Statement) -> Result<Option<SchemaRef>> {
        let Statement::Statement(inner) = statement else {
            return match statement {
                Statement::Explain(_) => self.planned_columns(statement.clone()).await.map(Some),
                _ => Ok(None),
            };
        };
        let returning = |table: &ast::ObjectName, items: &Option<Vec<ast::SelectItem>>| {
            items.as_ref().map(|items| returning_query(table, items))
        };
        let query = match inner.as_ref() {
            ast::Statement::Query(_) | ast::Statement::Explain { .. } => {
                return self.planned_columns(statement.clone()).await.map(Some)
            }
            ast::Statement::ShowVariable { variable } => {
                return Ok(Some(self.show_columns(variable)))
            }
            ast::Statement::Insert(insert) => match &insert.table {
                ast::TableObject::TableName(name) => returning(name, &insert.returning),
                _ => None,
            },
            ast::Statement::Update(update) => match &update.table.relation {
                ast::TableFactor::Table { name, .. } => returning(name, &update.returning),
                _ => None,
            },
            ast::Statement::Delete(delete) => {
                let tables = match &delete.from {
                    ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
                };
                match tables.first().map(|t| &t.relation) {
                    Some(ast::TableFactor::Table { name, .. }) => {
                        returning(name, &delete.returning)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match query {
            Some(sql) => {
                let parsed = self
                    .parse(&sql)?
                    .pop()
                    .ok_or_else(|| Error::sql("XX000", "empty RETURNING query"))?;
                self.planned_columns(parsed).await.map(Some)
            }
            None => Ok(None),
        }
    }

    /// The Arrow type DataFusion gives a SQL type name.
    async fn sql_data_type(&self, sql_type: &str) -> Result<DataType> {
        let probe = self
            .parse(&format!("SELECT CAST(NULL AS {sql_type})"))?
            .pop()
            .ok_or_else(|| Error::sql("XX000", "empty type probe"))?;
        let columns = self.planned_columns(probe).await?;
        Ok(columns.field(0).data_type().clone())
    }

    async fn planned_columns(&self, statement: Statement) -> Result<SchemaRef> {
        let plan = self.plan(statement).await?;
        Ok(std::sync::Arc::new(plan.schema().as_arrow().clone()))
    }
}

/// The query whose columns are a RETURNING list's.
fn returning_query(table: &ast::ObjectName, items: &[ast::SelectItem]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    let alias = table
        .0
        .last()
        .map(|part| part.to_string())
        .unwrap_or_default();
    format!(
        "SELECT {} FROM {table} AS {} WHERE false",
        items.join(", "),
        quote_ident(alias.trim_matches('"'))
    )
}

/// Placeholders written as `CAST($n AS type)` or `$n::type`: the type
/// Postgres infers for them, which DataFusion leaves open.
fn cast_placeholders(statement: &Statement) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut visit = |s: &ast::Statement| {
        let _ = ast::visit_expressions(s, |expr| {
            if let Expr::Cast {
                expr: inner,
                data_type,
                ..
            } = expr
            {
                if let Expr::Value(value) = inner.as_ref() {
                    if let Value::Placeholder(name) = &value.value {
                        found.push((name.clone(), data_type.to_string()));
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
    };
    if let Some(s) = sql_statement(statement) {
        visit(s);
    }
    found
}

/// The highest `$n` in the statement.
pub(crate) fn placeholder_count(statement: &Statement) -> Result<usize> {
    let mut highest = 0usize;
    let mut bad = None;
    visit_placeholders(statement, |name| match placeholder_number(name) {
        Some(n) => highest = highest.max(n),
        None => bad = Some(name.to_string()),
    });
    match bad {
        Some(name) => Err(Error::sql(
            "42601",
            format!("syntax error at or near \"{name}\""),
        )),
        None => Ok(highest),
    }
}

fn placeholder_number(name: &str) -> Option<usize> {
    name.strip_prefix('$')?.parse().ok().filter(|n| *n > 0)
}

/// `n` when `expr` is the placeholder `$n`.
pub(crate) fn placeholder_of(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Placeholder(name) => placeholder_number(name),
            _ => None,
        },
        _ => None,
    }
}

fn visit_placeholders(statement: &Statement, mut found: impl FnMut(&str)) {
    let mut inner = |s: &ast::Statement| {
        let _ = ast::visit_expressions(s, |expr| {
            if let Expr::Value(value) = expr {
                if let Value::Placeholder(name) = &value.value {
                    found(name);
                }
            }
            ControlFlow::<()>::Continue(())
        });
    };
    if let Some(s) = sql_statement(statement) {
        inner(s);
    }
}

/// The SQL statement a parsed statement holds, looking through EXPLAIN.
fn sql_statement(statement: &Statement) -> Option<&ast::Statement> {
    match statement {
        Statement::Statement(s) => Some(s),
        Statement::Explain(explain) => match explain.statement.as_ref() {
            Statement::Statement(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// `statement` with every `$n` replaced by `params[n - 1]`.
pub fn bind(statement: &Statement, params: &[Param]) -> Result<Statement> {
    bind_counted(statement, placeholder_count(statement)?, params)
}

/// As [`bind`], for a statement whose highest `$n` is known to be `needed`.
pub(crate) fn bind_counted(
    statement: &Statement,
    needed: usize,
    params: &[Param],
) -> Result<Statement> {
    if needed > params.len() {
        return Err(Error::sql(
            "08P01",
            format!(
                "bind message supplies {} parameters, but prepared statement requires {needed}",
                params.len()
            ),
        ));
    }
    if params.is_empty() {
        return Ok(statement.clone());
    }
    let literals = params
        .iter()
        .map(param_expr)
        .collect::<Result<Vec<Expr>>>()?;
    let mut bound = statement.clone();
    let replace = |s: &mut ast::Statement| {
        let _ = ast::visit_expressions_mut(s, |expr| {
            if let Some(n) = placeholder_of(expr) {
                *expr = literals[n - 1].clone();
            }
            ControlFlow::<()>::Continue(())
        });
    };
    match &mut bound {
        Statement::Statement(s) => replace(s),
        Statement::Explain(explain) => {
            if let Statement::Statement(s) = explain.statement.as_mut() {
                replace(s)
            }
        }
        _ => {}
    }
    Ok(bound)
}

pub(crate) fn param_expr(param: &Param) -> Result<Expr> {
    // The common case is built directly: parsing SQL text per parameter
    // per Execute was a seventh of pgbench's -N time.
    if let Param::Text { text, sql_type } = param {
        let literal = Expr::value(Value::SingleQuotedString(text.clone()));
        match sql_type {
            None => return Ok(literal),
            Some(sql_type) if !sql_type.trim_end().ends_with("[]") => {
                return Ok(Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(literal),
                    data_type: parsed_type(sql_type)?,
                    array: false,
                    format: None,
                })
            }
            Some(_) => {}
        }
    }
    let sql = match param {
        Param::Null(None) => "NULL".to_string(),
        Param::Null(Some(sql_type)) => format!("CAST(NULL AS {sql_type})"),
        Param::Text {
            text,
            sql_type: None,
        } => quote_literal(text),
        Param::Text {
            text,
            sql_type: Some(sql_type),
        } => match array_literal(text, sql_type) {
            Some(array) => array,
            None => format!("CAST({} AS {sql_type})", quote_literal(text)),
        },
        Param::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("decode('{hex}', 'hex')")
        }
    };
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut parser| parser.parse_expr())
        .map_err(|e| Error::sql("22P02", format!("invalid parameter value: {e}")))
}

/// A parameter's SQL type, parsed once per thread.
fn parsed_type(sql_type: &str) -> Result<ast::DataType> {
    thread_local! {
        static TYPES: std::cell::RefCell<std::collections::HashMap<String, ast::DataType>> =
            Default::default();
    }
    if let Some(parsed) = TYPES.with(|types| types.borrow().get(sql_type).cloned()) {
        return Ok(parsed);
    }
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql_type)
        .and_then(|mut parser| parser.parse_data_type())
        .map_err(|e| Error::sql("22P02", format!("invalid parameter type {sql_type}: {e}")))?;
    TYPES.with(|types| {
        types
            .borrow_mut()
            .insert(sql_type.to_string(), parsed.clone())
    });
    Ok(parsed)
}

/// An array parameter in Postgres' `{1,NULL,3}` text form as an ARRAY
/// expression of its element type (DataFusion cannot cast that text).
fn array_literal(text: &str, sql_type: &str) -> Option<String> {
    let element_type = sql_type.trim().strip_suffix("[]")?;
    let items = crate::io::copy::split_array(text)?;
    let elements: Vec<String> = items
        .iter()
        .map(|item| match item {
            None => format!("CAST(NULL AS {element_type})"),
            Some(value) => format!("CAST({} AS {element_type})", quote_literal(value)),
        })
        .collect();
    Some(if elements.is_empty() {
        format!("CAST(make_array() AS {sql_type})")
    } else {
        format!("CAST(ARRAY[{}] AS {sql_type})", elements.join(", "))
    })
}

/// A standard-conforming string literal: quotes doubled, backslashes literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Database;

    fn parse_one(session: &Session, sql: &str) -> Statement {
        session.parse(sql).unwrap().pop().unwrap()
    }

    #[tokio::test]
    async fn describes_parameters_and_columns() {
        let db = Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, at timestamptz)")
            .await
            .unwrap();
        let select = parse_one(
            &session,
            "SELECT name, id FROM t WHERE id = $1 AND name <> $2",
        );
        let description = session.describe(&select).await.unwrap();
        assert_eq!(
            description.parameters,
            vec![Some(DataType::Int64), Some(DataType::Utf8)]
        );
        let columns = description.columns.unwrap();
        assert_eq!(columns.field(0).name(), "name");
        assert_eq!(columns.field(1).data_type(), &DataType::Int64);

        let insert = parse_one(
            &session,
            "INSERT INTO t VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING id",
        );
        let description = session.describe(&insert).await.unwrap();
        assert_eq!(description.parameters.len(), 3);
        assert_eq!(description.parameters[0], Some(DataType::Int64));
        assert!(matches!(
            description.parameters[2],
            Some(DataType::Timestamp(_, Some(_)))
        ));
        assert_eq!(description.columns.unwrap().fields().len(), 1);

        let create = parse_one(&session, "CREATE TABLE u (a int)");
        let description = session.describe(&create).await.unwrap();
        assert!(description.parameters.is_empty());
        assert!(description.columns.is_none());
    }

    #[tokio::test]
    async fn binds_typed_and_untyped_values() {
        let db = Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, data bytea)")
            .await
            .unwrap();
        let insert = parse_one(&session, "INSERT INTO t VALUES ($1, $2, $3)");
        let params = [
            Param::Text {
                text: "7".into(),
                sql_type: Some("bigint".into()),
            },
            Param::Text {
                text: "it's".into(),
                sql_type: None,
            },
            Param::Bytes(vec![0, 255]),
        ];
        let bound = bind(&insert, &params).unwrap();
        session.execute_statement(bound).await.unwrap();
        let rows = session
            .query("SELECT id, name, encode(data, 'hex') FROM t")
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        assert!(text.contains("| 7  | it's | 00ff"), "{text}");

        let too_few = bind(&insert, &params[..1]).unwrap_err();
        assert_eq!(too_few.sqlstate(), "08P01");
    }
}
