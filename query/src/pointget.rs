//! Primary-key point SELECTs without DataFusion: `SELECT cols FROM t WHERE
//! key = literal [AND ...]` over a stored table reads the one row with
//! [`basalt_storage::Transaction::get`] and projects it.
//!
//! Planning such a query costs far more than answering it (SessionState
//! clones, every optimizer pass, the physical planner), and it is what an
//! OLTP client sends most; `pgbench -S` is nothing else. The shape accepted
//! is narrow on purpose: anything this module does not recognise exactly
//! (an expression, a literal needing coercion, a view, a join) goes to
//! DataFusion, so both paths give the same answer.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, RecordBatch,
    StringArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema};
use basalt_storage::TableDef;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, TableFactor, UnaryOperator, Value,
};

use crate::catalog::storage_name;
use crate::ddl::normalize;
use crate::error::{Error, Result};
use crate::session::{QueryResult, Session};

/// A point SELECT, resolved against the table it reads.
struct PointSelect {
    table: String,
    /// Indexes into the table's schema, with the name each is output as.
    columns: Vec<(usize, String)>,
    key: Vec<u8>,
}

impl Session {
    /// Answers `query` when it is a primary-key point SELECT; `None` sends
    /// it to DataFusion.
    pub(crate) fn point_select(&self, query: &ast::Query) -> Result<Option<QueryResult>> {
        let Some(point) = self.recognise(query) else {
            return Ok(None);
        };
        let def = match self.shared.db.table(&point.table) {
            Ok(def) => def,
            Err(_) => return Ok(None),
        };
        let row = self
            .shared
            .with_reader(|r| r.get(&point.table, &point.key))?;
        let fields: Vec<Field> = point
            .columns
            .iter()
            .map(|(i, name)| def.schema.field(*i).clone().with_name(name))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batches = match row {
            Some(row) => {
                let columns = point.columns.iter().map(|(i, _)| row.column(*i).clone());
                let batch = RecordBatch::try_new(schema.clone(), columns.collect());
                vec![batch.map_err(|e| Error::from_datafusion(e.into()))?]
            }
            None => Vec::new(),
        };
        Ok(Some(QueryResult::rows("SELECT", schema, batches)))
    }

    fn recognise(&self, query: &ast::Query) -> Option<PointSelect> {
        let select = plain_select(query)?;
        let [from] = select.from.as_slice() else {
            return None;
        };
        if !from.joins.is_empty() {
            return None;
        }
        let (name, alias) = plain_table(&from.relation)?;
        let (schema, table) = self.resolve(name).ok()?;
        let full = storage_name(&schema, &table);
        let def = self.shared.db.table(&full).ok()?;
        if def.key_columns.is_empty() {
            return None;
        }
        let qualifier = alias.map(normalize).unwrap_or(table);
        let columns = projection(&select.projection, &def, &qualifier)?;
        let key = key_of(select.selection.as_ref()?, &def, &qualifier)?;
        Some(PointSelect {
            table: full,
            columns,
            key,
        })
    }
}

/// The query's SELECT when nothing but a projection, one FROM item and a
/// WHERE clause is in play.
fn plain_select(query: &ast::Query) -> Option<&ast::Select> {
    let bare_query = query.with.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let no_grouping = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => exprs.is_empty() && modifiers.is_empty(),
        GroupByExpr::All(_) => false,
    };
    let bare_select = select.distinct.is_none()
        && select.top.is_none()
        && select.select_modifiers.is_none()
        && select.exclude.is_none()
        && select.into.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && select.connect_by.is_empty()
        && no_grouping
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.value_table_mode.is_none()
        && select.flavor == ast::SelectFlavor::Standard;
    (bare_query && bare_select).then_some(select.as_ref())
}

/// A table named in FROM without arguments, hints or column aliases.
fn plain_table(relation: &TableFactor) -> Option<(&ast::ObjectName, Option<&ast::Ident>)> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    match alias {
        None => Some((name, None)),
        Some(alias) if alias.columns.is_empty() => Some((name, Some(&alias.name))),
        Some(_) => None,
    }
}

/// The schema index a column reference names: `col` or `qualifier.col`.
fn column_of(expr: &Expr, def: &TableDef, qualifier: &str) -> Option<usize> {
    let name = match expr {
        Expr::Identifier(ident) => normalize(ident),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, column] if normalize(table) == qualifier => normalize(column),
            _ => return None,
        },
        Expr::Nested(inner) => return column_of(inner, def, qualifier),
        _ => return None,
    };
    def.schema.index_of(&name).ok()
}

fn projection(
    items: &[SelectItem],
    def: &TableDef,
    qualifier: &str,
) -> Option<Vec<(usize, String)>> {
    let mut columns = Vec::new();
    for item in items {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let i = column_of(expr, def, qualifier)?;
                columns.push((i, def.schema.field(i).name().clone()));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push((column_of(expr, def, qualifier)?, normalize(alias)));
            }
            SelectItem::Wildcard(options) if *options == Default::default() => {
                let fields = def.schema.fields().iter().enumerate();
                columns.extend(fields.map(|(i, f)| (i, f.name().clone())));
            }
            _ => return None,
        }
    }
    Some(columns)
}

/// The encoded primary key a WHERE clause fixes, when it is nothing but
/// one equality per key column.
fn key_of(selection: &Expr, def: &TableDef, qualifier: &str) -> Option<Vec<u8>> {
    let mut conditions = Vec::new();
    conjuncts(selection, &mut conditions);
    let mut values: Vec<Option<ArrayRef>> = vec![None; def.key_columns.len()];
    for condition in conditions {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = condition
        else {
            return None;
        };
        let (column, literal) = match column_of(left, def, qualifier) {
            Some(column) => (column, right),
            None => (column_of(right, def, qualifier)?, left),
        };
        let slot = def.key_columns.iter().position(|&k| k as usize == column)?;
        if values[slot].is_some() {
            return None;
        }
        values[slot] = Some(key_value(literal, def.schema.field(column).data_type())?);
    }
    let values: Vec<ArrayRef> = values.into_iter().collect::<Option<_>>()?;
    let mut key = Vec::new();
    basalt_storage::encode_key(&values, 0, &mut key).ok()?;
    Some(key)
}

fn conjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// A literal as a one-element array of the key column's type, when it
/// means that value without any coercion DataFusion might do differently.
fn key_value(expr: &Expr, data_type: &DataType) -> Option<ArrayRef> {
    let (text, class) = literal(expr)?;
    match (class, data_type) {
        (Class::Integer, _) => integer_array(text.trim().parse().ok()?, data_type),
        (Class::Text, DataType::Utf8) => Some(Arc::new(StringArray::from(vec![text]))),
        (Class::Text, DataType::LargeUtf8) => Some(Arc::new(LargeStringArray::from(vec![text]))),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Class {
    Integer,
    Text,
}

/// A literal's text and what it is: an integer (a number, or a string cast
/// to an integer type) or text (a string, bare or cast to a text type).
fn literal(expr: &Expr) -> Option<(String, Class)> {
    match expr {
        Expr::Nested(inner) => literal(inner),
        Expr::Value(value) => match &value.value {
            Value::Number(n, false) => Some((n.clone(), Class::Integer)),
            Value::SingleQuotedString(s) => Some((s.clone(), Class::Text)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            (n, Class::Integer) if !n.starts_with('-') => Some((format!("-{n}"), Class::Integer)),
            _ => None,
        },
        Expr::Cast {
            expr,
            data_type,
            format: None,
            ..
        } => {
            let (text, _) = literal(expr)?;
            use ast::DataType as T;
            match data_type {
                T::Int(_)
                | T::Integer(_)
                | T::BigInt(_)
                | T::SmallInt(_)
                | T::Int2(_)
                | T::Int4(_)
                | T::Int8(_) => Some((text, Class::Integer)),
                T::Text | T::Varchar(None) | T::String(None) => Some((text, Class::Text)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `value` in an integer key type; `None` when it does not fit (DataFusion
/// then compares in a wider type and finds nothing, or errors).
fn integer_array(value: i64, data_type: &DataType) -> Option<ArrayRef> {
    Some(match data_type {
        DataType::Int8 => Arc::new(Int8Array::from(vec![i8::try_from(value).ok()?])),
        DataType::Int16 => Arc::new(Int16Array::from(vec![i16::try_from(value).ok()?])),
        DataType::Int32 => Arc::new(Int32Array::from(vec![i32::try_from(value).ok()?])),
        DataType::Int64 => Arc::new(Int64Array::from(vec![value])),
        DataType::UInt8 => Arc::new(UInt8Array::from(vec![u8::try_from(value).ok()?])),
        DataType::UInt16 => Arc::new(UInt16Array::from(vec![u16::try_from(value).ok()?])),
        DataType::UInt32 => Arc::new(UInt32Array::from(vec![u32::try_from(value).ok()?])),
        DataType::UInt64 => Arc::new(UInt64Array::from(vec![u64::try_from(value).ok()?])),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parsed_literal(sql: &str) -> Option<(String, &'static str)> {
        let expr = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .ok()?
            .parse_expr()
            .ok()?;
        literal(&expr).map(|(text, class)| {
            let class = match class {
                Class::Integer => "integer",
                Class::Text => "text",
            };
            (text, class)
        })
    }

    #[test]
    fn literals_are_read_only_when_their_meaning_is_plain() {
        let integer = |n: &str| Some((n.to_string(), "integer"));
        assert_eq!(parsed_literal("42"), integer("42"));
        assert_eq!(parsed_literal("-(42)"), integer("-42"));
        assert_eq!(parsed_literal("CAST('7' AS int4)"), integer("7"));
        assert_eq!(parsed_literal("'7'::bigint"), integer("7"));
        assert_eq!(parsed_literal("'a'::text"), Some(("a".to_string(), "text")));
        assert_eq!(parsed_literal("1.5"), integer("1.5"));
        assert_eq!(parsed_literal("'1'::numeric"), None);
        assert_eq!(parsed_literal("'a'::varchar(3)"), None);
        assert_eq!(parsed_literal("1 + 1"), None);
        assert_eq!(parsed_literal("-(-1)"), None);
    }

    #[test]
    fn key_values_never_coerce() {
        let int = |sql: &str, dt: DataType| {
            let expr = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .ok()?;
            key_value(&expr, &dt)
        };
        assert!(int("5", DataType::Int32).is_some());
        assert!(int("3000000000", DataType::Int32).is_none());
        assert!(int("-1", DataType::UInt32).is_none());
        assert!(int("1.5", DataType::Int64).is_none());
        assert!(int("'5'", DataType::Int64).is_none());
        assert!(int("5", DataType::Utf8).is_none());
        assert!(int("'x'", DataType::Utf8).is_some());
        assert!(int("5", DataType::Float64).is_none());
    }

    fn recognised(session: &Session, sql: &str) -> bool {
        let statement = session.parse(sql).unwrap().pop().unwrap();
        let datafusion::sql::parser::Statement::Statement(inner) = statement else {
            return false;
        };
        let ast::Statement::Query(query) = *inner else {
            return false;
        };
        session.recognise(&query).is_some()
    }

    #[tokio::test]
    async fn only_exact_key_lookups_take_the_fast_path() {
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute("CREATE TABLE a (aid int PRIMARY KEY, abalance int); CREATE TABLE h (x int)")
            .await
            .unwrap();
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SELECT abalance FROM a WHERE aid = 1 ORDER BY 1",
            "SELECT abalance FROM a WHERE aid = 1 LIMIT 1",
            "SELECT abalance FROM a WHERE aid = 1 OR aid = 2",
            "SELECT abalance FROM a WHERE aid > 1",
            "SELECT abalance FROM a",
            "SELECT count(*) FROM a WHERE aid = 1",
            "SELECT DISTINCT abalance FROM a WHERE aid = 1",
            "SELECT abalance FROM a, h WHERE aid = 1",
            "SELECT x FROM h WHERE x = 1",
            "SELECT abalance FROM a WHERE aid = 1.0",
            "WITH c AS (SELECT 1) SELECT abalance FROM a WHERE aid = 1",
        ] {
            assert!(!recognised(&session, sql), "{sql}");
        }
        for sql in [
            "SELECT abalance FROM a WHERE aid = 1",
            "SELECT * FROM public.a WHERE aid = CAST('1' AS int4)",
            "SELECT t.abalance AS b FROM a t WHERE t.aid = 7",
        ] {
            assert!(recognised(&session, sql), "{sql}");
        }
    }
}
