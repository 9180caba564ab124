//! Point SELECTs without DataFusion: `SELECT cols FROM t WHERE ...` whose
//! WHERE clause is nothing but equalities against literals or parameters,
//! either fixing the primary key (one get) or fixing a column a B-tree
//! index leads with (a storage scan the index narrows, its predicates
//! exact). Planning such a statement costs far more than running it; the
//! shapes and literals accepted are `oltp`'s, so both paths answer alike.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use basalt_storage::{Predicate, PredicateOp, ScanOptions, ScanPlan, TableDef};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast;

use crate::catalog::storage_name;
use crate::catalog::table::storage_scalar;
use crate::session::oltp::{
    as_key, encode_point_key, equalities, plain_select, plain_table, projection, source_value,
    KeySource, PreparedStatement,
};
use crate::session::prepare::Param;
use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;

/// A point SELECT, resolved against the table it reads. It depends on the
/// statement and the table's definition only, so a prepared statement
/// keeps it ([`PreparedStatement`]) for as long as the table's id and
/// schema version stay the same (an index created or dropped changes
/// neither, and changes only how fast a lookup runs, not its rows).
pub(crate) struct PointSelect {
    table: String,
    /// The table's (id, schema version) it was resolved against.
    version: (u32, u32),
    /// Indexes into the table's schema, in output order.
    columns: Vec<usize>,
    /// The output columns, under the names the query gives them.
    schema: SchemaRef,
    lookup: Lookup,
}

enum Lookup {
    /// Where each key column's value comes from, in key order.
    Key(Vec<KeySource>),
    /// Columns fixed by equalities, one of which a B-tree index leads
    /// with: a scan with those predicates.
    Indexed {
        fixed: Vec<(usize, KeySource)>,
        /// The table columns the scan returns: the output's, each once, in
        /// table order (a lookup decodes no other column).
        read: Vec<usize>,
        /// Each output column's position among `read`.
        picks: Vec<usize>,
    },
}

impl Session {
    /// Answers `query` when it is a point SELECT; `None` sends it to
    /// DataFusion.
    pub(crate) fn point_select(&self, query: &ast::Query) -> Result<Option<QueryResult>> {
        if !self.settings.fast_paths() {
            return Ok(None);
        }
        match self.recognise(query) {
            Some(point) => self.run_point_select(&point, &[]),
            None => Ok(None),
        }
    }

    /// [`Session::point_select`] of a prepared statement, its placeholders
    /// standing for `params`; the recognised shape is kept with it.
    pub(crate) fn point_select_prepared(
        &self,
        prepared: &PreparedStatement,
        params: &[Param],
    ) -> Result<Option<QueryResult>> {
        if !self.settings.fast_paths() {
            return Ok(None);
        }
        let cached = prepared.point.lock().clone();
        let point = match cached {
            Some(point) if self.shared.db.table_version(&point.table) == Some(point.version) => {
                point
            }
            _ => {
                let Some(point) = prepared.query().and_then(|q| self.recognise(q)) else {
                    return Ok(None);
                };
                let point = Arc::new(point);
                *prepared.point.lock() = Some(point.clone());
                point
            }
        };
        self.run_point_select(&point, params)
    }

    /// Reads the rows; `None` when the parameters do not make exact values.
    fn run_point_select(
        &self,
        point: &PointSelect,
        params: &[Param],
    ) -> Result<Option<QueryResult>> {
        match &point.lookup {
            Lookup::Key(sources) => self.get_by_key(point, sources, params),
            Lookup::Indexed { fixed, read, picks } => {
                self.scan_by_index(point, fixed, read, picks, params)
            }
        }
    }

    fn get_by_key(
        &self,
        point: &PointSelect,
        sources: &[KeySource],
        params: &[Param],
    ) -> Result<Option<QueryResult>> {
        let Some(key) = encode_point_key(sources, params) else {
            return Ok(None);
        };
        let row = self.shared.with_reader(|r| r.get(&point.table, &key))?;
        let batches = match row {
            Some(row) => vec![point.output(&row)?],
            None => Vec::new(),
        };
        Ok(Some(QueryResult::rows(
            "SELECT",
            point.schema.clone(),
            batches,
        )))
    }

    /// The rows the equalities select, streamed a scan unit at a time: a
    /// non-unique index may select many.
    fn scan_by_index(
        &self,
        point: &PointSelect,
        fixed: &[(usize, KeySource)],
        read: &[usize],
        picks: &[usize],
        params: &[Param],
    ) -> Result<Option<QueryResult>> {
        let mut predicates = Vec::with_capacity(fixed.len());
        for (column, source) in fixed {
            let value = source_value(source, params)
                .and_then(|v| ScalarValue::try_from_array(&v, 0).ok())
                .and_then(|v| storage_scalar(&v));
            let Some(value) = value else {
                return Ok(None);
            };
            predicates.push(Predicate {
                column: *column,
                op: PredicateOp::Eq(value),
            });
        }
        let options = ScanOptions {
            // A scan of no column would lose the row count.
            projection: (!read.is_empty()).then(|| read.to_vec()),
            predicates,
            ..ScanOptions::default()
        };
        let plan = self
            .shared
            .with_reader(|r| r.scan(&point.table, &options))?;
        let batches = UnitBatches {
            plan,
            next: 0,
            columns: picks.to_vec(),
            schema: point.schema.clone(),
        };
        Ok(Some(QueryResult::streamed(
            "SELECT",
            point.schema.clone(),
            batches,
        )))
    }

    pub(crate) fn recognise(&self, query: &ast::Query) -> Option<PointSelect> {
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
        let qualifier = alias.map(normalize).unwrap_or(table);
        let columns = projection(&select.projection, &def, &qualifier)?;
        let fixed = equalities(select.selection.as_ref()?, &def, &qualifier)?;
        let lookup = lookup(fixed, &columns, &def)?;
        let fields: Vec<Field> = columns
            .iter()
            .map(|(i, name)| def.schema.field(*i).clone().with_name(name))
            .collect();
        Some(PointSelect {
            table: full,
            version: (def.id, def.schema_version),
            columns: columns.into_iter().map(|(i, _)| i).collect(),
            schema: Arc::new(Schema::new(fields)),
            lookup,
        })
    }
}

impl PointSelect {
    /// The output columns of a batch of whole rows.
    fn output(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        project(rows, &self.columns, &self.schema).map_err(Error::from_datafusion)
    }
}

fn project(
    rows: &RecordBatch,
    columns: &[usize],
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, DataFusionError> {
    let columns = columns.iter().map(|&i| rows.column(i).clone()).collect();
    // `SELECT FROM t WHERE ...` has rows but no columns.
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// How the fixed columns are read: by key when they are the key exactly,
/// through an index when a B-tree index leads with one of them.
fn lookup(
    fixed: Vec<(usize, KeySource)>,
    output: &[(usize, String)],
    def: &TableDef,
) -> Option<Lookup> {
    let fixed = match as_key(fixed, def) {
        Ok(key) => return Some(Lookup::Key(key)),
        Err(fixed) => fixed,
    };
    let indexed = fixed.iter().any(|(column, _)| {
        def.indexes
            .iter()
            .any(|i| i.kind == "btree" && i.columns.first() == Some(&(*column as u32)))
    });
    if !indexed {
        return None;
    }
    let mut read: Vec<usize> = output.iter().map(|(column, _)| *column).collect();
    read.sort_unstable();
    read.dedup();
    let picks = output
        .iter()
        .map(|(column, _)| read.binary_search(column).unwrap_or_default())
        .collect();
    Some(Lookup::Indexed { fixed, read, picks })
}

/// A scan's units run one at a time as the result is read.
struct UnitBatches {
    plan: ScanPlan,
    next: usize,
    /// The output columns' positions in the scan's rows.
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl Iterator for UnitBatches {
    type Item = std::result::Result<RecordBatch, DataFusionError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.plan.num_units() {
            let unit = self.next;
            self.next += 1;
            match self.plan.execute_unit(unit) {
                Ok(Some(rows)) if rows.num_rows() > 0 => {
                    return Some(project(&rows, &self.columns, &self.schema))
                }
                Ok(_) => continue,
                Err(e) => return Some(Err(DataFusionError::External(Box::new(e)))),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::session::Session;

    fn recognised(session: &Session, sql: &str) -> Option<&'static str> {
        let statement = session.parse(sql).unwrap().pop().unwrap();
        let datafusion::sql::parser::Statement::Statement(inner) = statement else {
            return None;
        };
        let datafusion::sql::sqlparser::ast::Statement::Query(query) = *inner else {
            return None;
        };
        session.recognise(&query).map(|point| match point.lookup {
            super::Lookup::Key(_) => "key",
            super::Lookup::Indexed { .. } => "index",
        })
    }

    #[tokio::test]
    async fn equalities_on_a_btree_index_lead_column_take_the_indexed_lookup() {
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute(
                "CREATE TABLE t (id int PRIMARY KEY, a int, b text, v vector(2)); \
                 CREATE INDEX t_a_b ON t (a, b); \
                 CREATE INDEX t_v ON t USING hnsw (v)",
            )
            .await
            .unwrap();
        for (sql, want) in [
            ("SELECT * FROM t WHERE id = 1", Some("key")),
            ("SELECT * FROM t WHERE id = 1 AND a = 2", Some("index")),
            ("SELECT b FROM t WHERE a = 2", Some("index")),
            ("SELECT b FROM t WHERE a = $1 AND b = 'x'", Some("index")),
            ("SELECT b FROM t WHERE b = 'x' AND a = 2", Some("index")),
            // Only the first column of an index narrows a lookup.
            ("SELECT a FROM t WHERE b = 'x'", None),
            ("SELECT a FROM t WHERE a = 2 OR a = 3", None),
            ("SELECT a FROM t WHERE a > 2", None),
            ("SELECT a FROM t WHERE a = 2 AND a = 3", None),
            ("SELECT a FROM t WHERE a = 2 ORDER BY b", None),
            ("SELECT a FROM t WHERE v = '[1,2]'", None),
        ] {
            assert_eq!(recognised(&session, sql), want, "{sql}");
        }
        session.execute("DROP INDEX t_a_b").await.unwrap();
        assert_eq!(recognised(&session, "SELECT b FROM t WHERE a = 2"), None);
    }
}
