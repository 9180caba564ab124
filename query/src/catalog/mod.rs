//! The storage catalog as DataFusion sees it: catalog `basalt` with schema
//! `public` (storage tables named plainly), one schema per `CREATE SCHEMA`
//! (storage tables named `schema.table`), and the internal schema the DML
//! statements read rows and their keys through. Views and schemas are rows
//! of a hidden storage table, so they outlive the session that made them.

pub(crate) mod build_keys;
pub(crate) mod join_filter;
pub mod table;

use basalt_storage::TableDef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use basalt_storage::{Db, Predicate, PredicateOp, Scalar, ScanOptions, Transaction};
use datafusion::catalog::SchemaProvider;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::datasource::{TableProvider, ViewTable};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use parking_lot::{Mutex, RwLock};

use crate::catalog::table::StorageTable;
use crate::sql::error::{Error, Result};

pub const CATALOG: &str = "basalt";
pub const SCHEMA: &str = "public";
/// Where DML statements find tables with their row keys, and where the
/// session keeps rows it evaluates RETURNING and ON CONFLICT over.
pub(crate) const INTERNAL_SCHEMA: &str = "basalt_internal";
/// The column of a keyed scan that carries each row's storage key.
pub(crate) const ROW_KEY: &str = "__basalt_row_key";
/// Field metadata: the column's DEFAULT as SQL text.
pub(crate) const DEFAULT_KEY: &str = "basalt.default";

const META_TABLE: &str = "__basalt_catalog";
/// Tables whose names start so are the engine's own and are not listed.
const HIDDEN_PREFIX: &str = "__basalt";

/// What a session shares with the tables it plans: the database, the open
/// transaction (reads go through it for read-your-writes) and the session
/// state, for planning views and column defaults.
pub(crate) struct SessionShared {
    pub db: Arc<Db>,
    pub txn: Mutex<Option<Transaction>>,
    pub state: RwLock<Weak<parking_lot::RwLock<SessionState>>>,
    pub temp_tables: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// `hnsw.ef_search`, read when a query is planned.
    pub ef_search: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionShared")
    }
}

impl SessionShared {
    pub(crate) fn session_state(&self) -> Option<SessionState> {
        let state = self.state.read().upgrade()?;
        let snapshot = state.read().clone();
        Some(snapshot)
    }

    /// Runs `read` against the open transaction, or a fresh snapshot when
    /// the session is outside one.
    pub fn with_reader<T>(
        &self,
        read: impl FnOnce(Reader<'_>) -> basalt_storage::Result<T>,
    ) -> basalt_storage::Result<T> {
        let txn = self.txn.lock();
        match txn.as_ref() {
            Some(txn) => read(Reader::Transaction(txn)),
            None => read(Reader::Snapshot(&self.db.snapshot())),
        }
    }
}

pub(crate) enum Reader<'a> {
    Transaction(&'a Transaction),
    Snapshot(&'a basalt_storage::Snapshot),
}

impl Reader<'_> {
    pub fn scan(
        &self,
        table: &str,
        options: &ScanOptions,
    ) -> basalt_storage::Result<basalt_storage::ScanPlan> {
        match self {
            Reader::Transaction(t) => t.scan(table, options),
            Reader::Snapshot(s) => s.scan(table, options),
        }
    }

    pub fn get(&self, table: &str, key: &[u8]) -> basalt_storage::Result<Option<RecordBatch>> {
        match self {
            Reader::Transaction(t) => t.get(table, key),
            Reader::Snapshot(s) => s.get(table, key),
        }
    }

    /// An index kind's search (see `basalt_storage::IndexSearch`).
    pub fn search<Q: basalt_storage::IndexSearch>(
        &self,
        table: &str,
        query: &Q,
        filter: Option<basalt_storage::RowFilter<'_>>,
    ) -> basalt_storage::Result<Q::Hits> {
        match self {
            Reader::Transaction(t) => t.search(table, query, filter),
            Reader::Snapshot(s) => s.search(table, query, filter),
        }
    }
}

/// The storage table name of `schema.table`.
/// The schema and table a storage name stands for; the inverse of
/// [`storage_name`].
pub(crate) fn split_storage_name(name: &str) -> (&str, &str) {
    name.split_once('.').unwrap_or((SCHEMA, name))
}

pub(crate) fn storage_name(schema: &str, table: &str) -> String {
    if schema == SCHEMA {
        table.to_string()
    } else {
        format!("{schema}.{table}")
    }
}

/// One SQL schema's tables and views.
#[derive(Debug)]
pub(crate) struct StorageSchema {
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) name: String,
}

impl StorageSchema {
    fn prefix(&self) -> Option<String> {
        (self.name != SCHEMA).then(|| format!("{}.", self.name))
    }
}

#[async_trait]
impl SchemaProvider for StorageSchema {
    fn table_names(&self) -> Vec<String> {
        let prefix = self.prefix();
        let mut names: Vec<String> = self
            .shared
            .db
            .tables()
            .into_iter()
            .filter(|t| !t.name.starts_with(HIDDEN_PREFIX))
            .filter_map(|t| match &prefix {
                Some(p) => t.name.strip_prefix(p.as_str()).map(str::to_string),
                None => (!t.name.contains('.')).then_some(t.name),
            })
            .collect();
        if let Ok(views) = meta_rows(&self.shared.db, "view") {
            names.extend(
                views
                    .into_iter()
                    .filter(|v| v.schema == self.name)
                    .map(|v| v.name),
            );
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let full = storage_name(&self.name, name);
        match self.shared.db.table(&full) {
            Ok(def) => {
                let defaults = self.column_defaults(&def.schema)?;
                let table = StorageTable::new(self.shared.clone(), def, false, defaults);
                return Ok(Some(Arc::new(table)));
            }
            Err(basalt_storage::Error::TableNotFound(_)) => {}
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        }
        let Some(definition) =
            view_definition(&self.shared.db, &self.name, name).map_err(Error::into_datafusion)?
        else {
            return Ok(None);
        };
        let Some(state) = self.shared.session_state() else {
            return Ok(None);
        };
        let plan = state.create_logical_plan(&definition).await?;
        Ok(Some(Arc::new(ViewTable::new(plan, Some(definition)))))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        // Tables are created through the session's CREATE TABLE, never as
        // in-memory tables that would vanish with the session.
        Err(DataFusionError::NotImplemented(format!(
            "registering table \"{name}\" outside CREATE TABLE"
        )))
    }

    fn table_exist(&self, name: &str) -> bool {
        let full = storage_name(&self.name, name);
        self.shared.db.table(&full).is_ok()
            || matches!(
                view_definition(&self.shared.db, &self.name, name),
                Ok(Some(_))
            )
    }
}

impl StorageSchema {
    /// Each column's DEFAULT, planned from the SQL text kept in its field.
    fn column_defaults(&self, schema: &SchemaRef) -> DfResult<HashMap<String, Expr>> {
        let mut defaults = HashMap::new();
        let texts: Vec<(&String, &String)> = schema
            .fields()
            .iter()
            .filter_map(|f| f.metadata().get(DEFAULT_KEY).map(|d| (f.name(), d)))
            .collect();
        if texts.is_empty() {
            return Ok(defaults);
        }
        let Some(state) = self.shared.session_state() else {
            return Ok(defaults);
        };
        for (column, text) in texts {
            let expr = state.create_logical_expr(text, &DFSchema::empty())?;
            defaults.insert(column.clone(), expr);
        }
        Ok(defaults)
    }
}

/// Storage tables with their row key column, for UPDATE and DELETE, and the
/// session's temporary row sets.
#[derive(Debug)]
pub(crate) struct InternalSchema {
    pub(crate) shared: Arc<SessionShared>,
}

#[async_trait]
impl SchemaProvider for InternalSchema {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(temp) = self.shared.temp_tables.lock().get(name) {
            return Ok(Some(temp.clone()));
        }
        match self.shared.db.table(name) {
            Ok(def) => Ok(Some(Arc::new(StorageTable::new(
                self.shared.clone(),
                def,
                true,
                HashMap::new(),
            )))),
            Err(basalt_storage::Error::TableNotFound(_)) => Ok(None),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.shared.temp_tables.lock().contains_key(name) || self.shared.db.table(name).is_ok()
    }
}

/// A row of the hidden catalog table.
pub(crate) struct MetaRow {
    pub schema: String,
    pub name: String,
    pub definition: Option<String>,
}

fn meta_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("schema", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, true),
    ]))
}

/// Rows of one kind ("view", "schema") of the catalog table.
pub(crate) fn meta_rows(db: &Db, kind: &str) -> Result<Vec<MetaRow>> {
    if db.table(META_TABLE).is_err() {
        return Ok(Vec::new());
    }
    let options = ScanOptions {
        projection: None,
        predicates: vec![Predicate {
            column: 0,
            op: PredicateOp::Eq(Scalar::Bytes(kind.as_bytes().to_vec())),
        }],
        limit: None,
        with_key: false,
        first_rows: None,
    };
    let batches = db.snapshot().scan(META_TABLE, &options)?.execute(1)?;
    let mut rows = Vec::new();
    for batch in batches {
        let text = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
        };
        let (Some(schemas), Some(names), Some(definitions)) = (text(1), text(2), text(3)) else {
            return Err(Error::sql("XX000", "catalog table has unexpected types"));
        };
        for row in 0..batch.num_rows() {
            rows.push(MetaRow {
                schema: schemas.value(row).to_string(),
                name: names.value(row).to_string(),
                definition: (!definitions.is_null(row)).then(|| definitions.value(row).to_string()),
            });
        }
    }
    Ok(rows)
}

fn view_definition(db: &Db, schema: &str, name: &str) -> Result<Option<String>> {
    Ok(meta_rows(db, "view")?
        .into_iter()
        .find(|v| v.schema == schema && v.name == name)
        .and_then(|v| v.definition))
}

/// Records (or replaces) a catalog entry, committed at once: DDL is not
/// transactional.
pub(crate) fn meta_put(
    db: &Db,
    kind: &str,
    schema: &str,
    name: &str,
    definition: Option<&str>,
) -> Result<()> {
    ensure_meta_table(db)?;
    let batch = RecordBatch::try_new(
        meta_schema(),
        vec![
            Arc::new(StringArray::from(vec![kind])),
            Arc::new(StringArray::from(vec![schema])),
            Arc::new(StringArray::from(vec![name])),
            Arc::new(StringArray::from(vec![definition])),
        ],
    )
    .map_err(|e| Error::Storage(e.into()))?;
    let mut txn = db.begin();
    txn.put(META_TABLE, &batch)?;
    txn.commit()?;
    Ok(())
}

/// Forgets a catalog entry, committed at once.
pub(crate) fn meta_remove(db: &Db, kind: &str, schema: &str, name: &str) -> Result<()> {
    ensure_meta_table(db)?;
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(meta_schema().fields()[..3].to_vec())),
        vec![
            Arc::new(StringArray::from(vec![kind])),
            Arc::new(StringArray::from(vec![schema])),
            Arc::new(StringArray::from(vec![name])),
        ],
    )
    .map_err(|e| Error::Storage(e.into()))?;
    let mut txn = db.begin();
    txn.delete(META_TABLE, &keys)?;
    txn.commit()?;
    Ok(())
}

fn ensure_meta_table(db: &Db) -> Result<()> {
    match db.create_table(META_TABLE, meta_schema(), &["kind", "schema", "name"]) {
        Ok(_) | Err(basalt_storage::Error::TableExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// 23505 for the row at `row`, naming its key as Postgres does.
pub(crate) fn unique_violation(def: &TableDef, batch: &RecordBatch, row: usize) -> Error {
    let names: Vec<&str> = def
        .key_columns
        .iter()
        .map(|&c| def.schema.field(c as usize).name().as_str())
        .collect();
    let values: Vec<String> = def
        .key_columns
        .iter()
        .map(|&c| {
            let column = batch.column(c as usize);
            ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
                .map(|f| f.value(row).to_string())
                .unwrap_or_default()
        })
        .collect();
    let table = split_storage_name(&def.name).1;
    Error::sql(
        "23505",
        format!("duplicate key value violates unique constraint \"{table}_pkey\""),
    )
    .with_detail(format!(
        "Key ({})=({}) already exists.",
        names.join(", "),
        values.join(", ")
    ))
}
