//! CREATE/DROP/ALTER: DataFusion's planner turns column definitions into
//! Arrow fields; the session creates the storage table, keeping what Arrow
//! cannot say (DEFAULT text, the Postgres type name) in field metadata.
//! Schema changes take effect at once, outside any transaction.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use datafusion::common::Constraint;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    self, ColumnDef, ColumnOption, DataType as SqlType, ObjectName, ObjectType, TableConstraint,
};
use futures::StreamExt;

use crate::catalog::{meta_put, meta_remove, meta_rows, storage_name, DEFAULT_KEY, SCHEMA};
use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;
use crate::types::pgtypes::PG_TYPE_KEY;

/// A table definition DataFusion planned, with Basalt's additions.
struct PlannedTable {
    schema: SchemaRef,
    key_columns: Vec<String>,
    /// The query of CREATE TABLE ... AS.
    input: Option<LogicalPlan>,
    if_not_exists: bool,
    /// Sequences the table's serial columns draw from, created with it.
    serials: Vec<String>,
    /// UNIQUE constraints, created as unique indexes once the table is.
    unique: Vec<crate::index::UniqueConstraint>,
}

impl Session {
    pub(crate) async fn create_table(&mut self, create: ast::CreateTable) -> Result<QueryResult> {
        let (schema_name, table) = self.resolve(&create.name)?;
        self.require_schema(&schema_name)?;
        let full = storage_name(&schema_name, &table);
        let planned = self.plan_table(create, &full).await?;
        self.before_ddl()?;
        let key_columns: Vec<&str> = planned.key_columns.iter().map(String::as_str).collect();
        let created = self
            .shared
            .db
            .create_table(&full, planned.schema.clone(), &key_columns);
        match created {
            Err(basalt_storage::Error::TableExists(_)) if planned.if_not_exists => {
                return Ok(QueryResult::command("CREATE TABLE"));
            }
            Err(basalt_storage::Error::TableExists(_)) => {
                return Err(Error::sql(
                    "42P07",
                    format!("relation \"{table}\" already exists"),
                ));
            }
            other => other?,
        };
        for sequence in &planned.serials {
            self.sequences.create(&self.shared.db, sequence, 1, false)?;
        }
        self.after_ddl();
        for constraint in planned.unique {
            if let Err(e) = self.add_unique_constraint(&full, constraint).await {
                // The statement failed: it leaves no table behind.
                self.before_ddl()?;
                self.shared.db.drop_table(&full)?;
                self.after_ddl();
                return Err(e);
            }
        }
        let Some(input) = planned.input else {
            return Ok(QueryResult::command("CREATE TABLE"));
        };
        let rows = self.fill_table(&full, &planned.schema, input).await?;
        Ok(QueryResult::Command {
            tag: format!("SELECT {rows}"),
            rows,
        })
    }

    /// Writes the rows of CREATE TABLE ... AS into the session's transaction.
    async fn fill_table(
        &mut self,
        full: &str,
        schema: &SchemaRef,
        input: LogicalPlan,
    ) -> Result<u64> {
        let mut stream = self.stream_plan(input).await?;
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from_datafusion)?;
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(column, field)| {
                    datafusion::arrow::compute::cast(column, field.data_type())
                        .map_err(|e| Error::Storage(e.into()))
                })
                .collect::<Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Storage(e.into()))?;
            rows += batch.num_rows() as u64;
            let mut txn = self.shared.txn.lock();
            match txn.as_mut() {
                Some(txn) => txn.put(full, &batch)?,
                None => return Err(Error::sql("XX000", "CREATE TABLE AS outside a transaction")),
            }
        }
        Ok(rows)
    }

    fn require_schema(&self, schema: &str) -> Result<()> {
        if schema == SCHEMA
            || meta_rows(&self.shared.db, "schema")?
                .iter()
                .any(|r| r.name == schema)
        {
            Ok(())
        } else {
            Err(Error::sql(
                "3F000",
                format!("schema \"{schema}\" does not exist"),
            ))
        }
    }

    /// Plans a CREATE TABLE through DataFusion for its Arrow schema and key.
    async fn plan_table(
        &mut self,
        mut create: ast::CreateTable,
        full: &str,
    ) -> Result<PlannedTable> {
        let unique = crate::index::take_unique_constraints(
            &mut create,
            crate::catalog::split_storage_name(full).1,
        )?;
        reject_unsupported_constraints(&create)?;
        ignore_storage_parameters(&mut create)?;
        let mut metadata: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut serials = Vec::new();
        let mut vectors: HashMap<String, i32> = HashMap::new();
        for column in &mut create.columns {
            let name = normalize(&column.name);
            if let Some(dimensions) = crate::types::vector::sql_vector_type(&column.data_type) {
                let dimensions = dimensions.ok_or_else(|| {
                    Error::not_supported("a vector column without dimensions; declare it vector(n)")
                })??;
                vectors.insert(name.clone(), dimensions);
                // Planned as real[]; the field becomes a fixed-size list below.
                column.data_type = SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(
                    Box::new(SqlType::Real),
                    None,
                ));
            }
            let entry = metadata.entry(name.clone()).or_default();
            if let Some(integer) = serial_type(&column.data_type) {
                // serial = an integer NOT NULL DEFAULT nextval(its own sequence).
                let sequence = format!("{full}_{name}_seq");
                column.data_type = integer;
                column.options.push(ast::ColumnOptionDef {
                    name: None,
                    option: ColumnOption::NotNull,
                });
                entry.insert(DEFAULT_KEY.to_string(), format!("nextval('{sequence}')"));
                serials.push(sequence);
            }
            if let Some(pg_type) = text_stored_type(&column.data_type) {
                entry.insert(PG_TYPE_KEY.to_string(), pg_type.to_string());
                column.data_type = SqlType::Text;
            }
            for option in &column.options {
                if let ColumnOption::Default(expr) = &option.option {
                    entry.insert(DEFAULT_KEY.to_string(), expr.to_string());
                }
            }
        }
        let if_not_exists = create.if_not_exists;
        let statement = Statement::Statement(Box::new(ast::Statement::CreateTable(create)));
        let plan = self.plan(statement).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) = plan else {
            return Err(Error::not_supported("this form of CREATE TABLE"));
        };
        let arrow = table.input.schema().as_arrow().clone();
        let mut key_indices = Vec::new();
        for constraint in table.constraints.iter() {
            match constraint {
                Constraint::PrimaryKey(indices) => key_indices.extend(indices.iter().copied()),
                Constraint::Unique(_) => {
                    return Err(Error::not_supported(
                        "a UNIQUE constraint other than the primary key",
                    ))
                }
            }
        }
        let fields: Vec<Field> = arrow
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let data_type = match vectors.get(f.name()) {
                    Some(&n) => crate::types::vector::vector_type(n),
                    None => storable(f.data_type()),
                };
                let mut field = f.as_ref().clone().with_data_type(data_type);
                if key_indices.contains(&i) {
                    field = field.with_nullable(false);
                }
                match metadata.remove(f.name()) {
                    Some(m) if !m.is_empty() => field.with_metadata(m),
                    _ => field,
                }
            })
            .collect();
        let key_columns = key_indices
            .iter()
            .map(|&i| arrow.field(i).name().clone())
            .collect();
        let is_query = !matches!(table.input.as_ref(), LogicalPlan::EmptyRelation(_));
        Ok(PlannedTable {
            schema: Arc::new(Schema::new(fields)),
            key_columns,
            input: is_query.then(|| table.input.as_ref().clone()),
            if_not_exists,
            serials,
            unique,
        })
    }

    pub(crate) async fn create_view(&mut self, view: ast::CreateView) -> Result<QueryResult> {
        if view.materialized {
            return Err(Error::not_supported("CREATE MATERIALIZED VIEW"));
        }
        let (schema, name) = self.resolve(&view.name)?;
        self.require_schema(&schema)?;
        let query = view.query.to_string();
        let definition = if view.columns.is_empty() {
            query
        } else {
            let columns: Vec<String> = view.columns.iter().map(|c| c.name.to_string()).collect();
            format!("SELECT * FROM ({query}) AS {name}({})", columns.join(", "))
        };
        // Planning now reports a bad definition at CREATE, not at first use.
        self.ctx
            .state()
            .create_logical_plan(&definition)
            .await
            .map_err(Error::from_datafusion)?;
        let full = storage_name(&schema, &name);
        let view_exists = meta_rows(&self.shared.db, "view")?
            .iter()
            .any(|v| v.schema == schema && v.name == name);
        if self.shared.db.table(&full).is_ok() || (view_exists && !view.or_replace) {
            if view.if_not_exists {
                return Ok(QueryResult::command("CREATE VIEW"));
            }
            return Err(Error::sql(
                "42P07",
                format!("relation \"{name}\" already exists"),
            ));
        }
        self.before_ddl()?;
        meta_put(&self.shared.db, "view", &schema, &name, Some(&definition))?;
        self.after_ddl();
        Ok(QueryResult::command("CREATE VIEW"))
    }

    pub(crate) fn create_schema(
        &mut self,
        name: &ast::SchemaName,
        if_not_exists: bool,
    ) -> Result<QueryResult> {
        let ast::SchemaName::Simple(object) = name else {
            return Err(Error::not_supported("CREATE SCHEMA AUTHORIZATION"));
        };
        let name = object_name_text(object)?;
        if name == crate::catalog::INTERNAL_SCHEMA || name == "information_schema" {
            return Err(Error::sql(
                "42939",
                format!("schema name \"{name}\" is reserved"),
            ));
        }
        if self.require_schema(&name).is_ok() {
            if if_not_exists {
                return Ok(QueryResult::command("CREATE SCHEMA"));
            }
            return Err(Error::sql(
                "42P06",
                format!("schema \"{name}\" already exists"),
            ));
        }
        self.before_ddl()?;
        meta_put(&self.shared.db, "schema", &name, &name, None)?;
        self.after_ddl();
        Ok(QueryResult::command("CREATE SCHEMA"))
    }

    pub(crate) fn drop(
        &mut self,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
        cascade: bool,
    ) -> Result<QueryResult> {
        self.before_ddl()?;
        let tag = match object_type {
            ObjectType::Table => {
                for name in names {
                    self.drop_table(name, if_exists)?;
                }
                "DROP TABLE"
            }
            ObjectType::View => {
                for name in names {
                    self.drop_view(name, if_exists)?;
                }
                "DROP VIEW"
            }
            ObjectType::Schema => {
                for name in names {
                    self.drop_schema(name, if_exists, cascade)?;
                }
                "DROP SCHEMA"
            }
            ObjectType::Index => {
                for name in names {
                    self.drop_index(name, if_exists)?;
                }
                "DROP INDEX"
            }
            ObjectType::Sequence => {
                for name in names {
                    let (schema, sequence) = self.resolve(name)?;
                    let full = storage_name(&schema, &sequence);
                    self.sequences.remove(&self.shared.db, &full, if_exists)?;
                }
                "DROP SEQUENCE"
            }
            other => return Err(Error::not_supported(format!("DROP {other}"))),
        };
        self.after_ddl();
        Ok(QueryResult::command(tag))
    }

    fn drop_table(&mut self, name: &ObjectName, if_exists: bool) -> Result<()> {
        let (schema, table) = self.resolve(name)?;
        match self.shared.db.drop_table(&storage_name(&schema, &table)) {
            Ok(()) => Ok(()),
            Err(basalt_storage::Error::TableNotFound(_)) if if_exists => Ok(()),
            Err(basalt_storage::Error::TableNotFound(_)) => Err(Error::sql(
                "42P01",
                format!("table \"{table}\" does not exist"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Index names are unique per schema, so the name finds its table.
    fn drop_index(&mut self, name: &ObjectName, if_exists: bool) -> Result<()> {
        let (schema, index) = self.resolve(name)?;
        let table = self
            .shared
            .db
            .tables()
            .into_iter()
            .filter(|t| crate::catalog::split_storage_name(&t.name).0 == schema)
            .find(|t| t.indexes.iter().any(|i| i.name == index));
        match (table, if_exists) {
            (Some(table), _) => {
                self.shared.db.drop_index(&table.name, &index)?;
                Ok(())
            }
            (None, true) => Ok(()),
            (None, false) => Err(Error::sql(
                "42704",
                format!("index \"{index}\" does not exist"),
            )),
        }
    }

    fn drop_view(&mut self, name: &ObjectName, if_exists: bool) -> Result<()> {
        let (schema, view) = self.resolve(name)?;
        let exists = meta_rows(&self.shared.db, "view")?
            .iter()
            .any(|v| v.schema == schema && v.name == view);
        match (exists, if_exists) {
            (true, _) => meta_remove(&self.shared.db, "view", &schema, &view),
            (false, true) => Ok(()),
            (false, false) => Err(Error::sql(
                "42P01",
                format!("view \"{view}\" does not exist"),
            )),
        }
    }

    fn drop_schema(&mut self, name: &ObjectName, if_exists: bool, cascade: bool) -> Result<()> {
        let name = object_name_text(name)?;
        if name == SCHEMA {
            return Err(Error::not_supported("dropping schema \"public\""));
        }
        if self.require_schema(&name).is_err() {
            return match if_exists {
                true => Ok(()),
                false => Err(Error::sql(
                    "3F000",
                    format!("schema \"{name}\" does not exist"),
                )),
            };
        }
        let prefix = format!("{name}.");
        let tables: Vec<String> = self
            .shared
            .db
            .tables()
            .into_iter()
            .map(|t| t.name)
            .filter(|t| t.starts_with(&prefix))
            .collect();
        let views: Vec<String> = meta_rows(&self.shared.db, "view")?
            .into_iter()
            .filter(|v| v.schema == name)
            .map(|v| v.name)
            .collect();
        let empty = tables.is_empty() && views.is_empty();
        if !cascade && !empty {
            return Err(Error::sql(
                "2BP01",
                format!("cannot drop schema {name} because other objects depend on it"),
            )
            .with_detail("Use DROP ... CASCADE to drop the dependent objects too."));
        }
        for table in tables {
            self.shared.db.drop_table(&table)?;
        }
        for view in views {
            meta_remove(&self.shared.db, "view", &name, &view)?;
        }
        meta_remove(&self.shared.db, "schema", &name, &name)
    }

    pub(crate) async fn alter_table(&mut self, alter: ast::AlterTable) -> Result<QueryResult> {
        let (schema, table) = self.resolve(&alter.name)?;
        let full = storage_name(&schema, &table);
        if let Err(basalt_storage::Error::TableNotFound(_)) = self.shared.db.table(&full) {
            if alter.if_exists {
                return Ok(QueryResult::command("ALTER TABLE"));
            }
            return Err(Error::sql(
                "42P01",
                format!("relation \"{table}\" does not exist"),
            ));
        }
        for operation in alter.operations {
            match operation {
                ast::AlterTableOperation::AddColumn {
                    column_def,
                    if_not_exists,
                    ..
                } => self.add_column(&full, column_def, if_not_exists).await?,
                ast::AlterTableOperation::RenameTable { table_name } => {
                    let (ast::RenameTableNameKind::As(to) | ast::RenameTableNameKind::To(to)) =
                        table_name;
                    let (to_schema, to_table) = self.resolve(&to)?;
                    // Postgres' RENAME keeps the table in its schema.
                    let to_schema = if to.0.len() == 1 {
                        schema.clone()
                    } else {
                        to_schema
                    };
                    self.before_ddl()?;
                    self.shared
                        .db
                        .rename_table(&full, &storage_name(&to_schema, &to_table))
                        .map_err(|e| match e {
                            basalt_storage::Error::TableExists(_) => Error::sql(
                                "42P07",
                                format!("relation \"{to_table}\" already exists"),
                            ),
                            other => other.into(),
                        })?;
                    self.after_ddl();
                }
                ast::AlterTableOperation::AddConstraint {
                    constraint: ast::TableConstraint::Unique(unique),
                    ..
                } => {
                    let constraint = crate::index::unique_constraint(&unique, &table)?;
                    self.add_unique_constraint(&full, constraint).await?;
                }
                ast::AlterTableOperation::DropConstraint {
                    name, if_exists, ..
                } => self.drop_unique_constraint(&full, &normalize(&name), if_exists)?,
                other => return Err(Error::not_supported(format!("ALTER TABLE {other}"))),
            }
        }
        Ok(QueryResult::command("ALTER TABLE"))
    }

    async fn add_column(
        &mut self,
        full: &str,
        column: ColumnDef,
        if_not_exists: bool,
    ) -> Result<()> {
        let name = normalize(&column.name);
        let current = self.shared.db.table(full)?;
        if current.schema.field_with_name(&name).is_ok() {
            if if_not_exists {
                return Ok(());
            }
            return Err(Error::sql(
                "42701",
                format!("column \"{name}\" of relation \"{full}\" already exists"),
            ));
        }
        for option in &column.options {
            match &option.option {
                ColumnOption::Null => {}
                ColumnOption::Default(ast::Expr::Value(v))
                    if matches!(v.value, ast::Value::Null) => {}
                other => {
                    // Rows already stored read NULL for a new column, so a
                    // default or NOT NULL would not hold for them.
                    return Err(Error::not_supported(format!(
                        "ADD COLUMN with `{other}` (new columns are nullable, without a default)"
                    )));
                }
            }
        }
        let probe = ast::CreateTable {
            columns: vec![column],
            ..probe_table()?
        };
        let planned = self.plan_table(probe, full).await?;
        if !planned.serials.is_empty() {
            return Err(Error::not_supported("ADD COLUMN of a serial type"));
        }
        let field = planned.schema.field(0).clone();
        self.before_ddl()?;
        self.shared.db.add_column(full, field)?;
        self.after_ddl();
        Ok(())
    }
}

impl Session {
    pub(crate) fn create_sequence(
        &mut self,
        name: &ObjectName,
        if_not_exists: bool,
        options: &[ast::SequenceOptions],
    ) -> Result<QueryResult> {
        let (schema, sequence) = self.resolve(name)?;
        self.require_schema(&schema)?;
        let mut start = 1;
        for option in options {
            match option {
                ast::SequenceOptions::StartWith(value, _) => {
                    start = value.to_string().parse().map_err(|_| {
                        Error::sql("22023", format!("START WITH {value} is not an integer"))
                    })?;
                }
                // Sequences count up by one; other options would be ignored
                // silently, so they are refused.
                other => return Err(Error::not_supported(format!("sequence option `{other}`"))),
            }
        }
        self.before_ddl()?;
        let full = storage_name(&schema, &sequence);
        self.sequences
            .create(&self.shared.db, &full, start, if_not_exists)?;
        self.after_ddl();
        Ok(QueryResult::command("CREATE SEQUENCE"))
    }
}

/// The integer type of `serial`, `bigserial`, `smallserial` (and serial2/4/8).
fn serial_type(data_type: &SqlType) -> Option<SqlType> {
    let SqlType::Custom(name, modifiers) = data_type else {
        return None;
    };
    if !modifiers.is_empty() || name.0.len() != 1 {
        return None;
    }
    let type_name = name.0[0].as_ident()?.value.to_lowercase();
    match type_name.as_str() {
        "serial" | "serial4" => Some(SqlType::Int(None)),
        "bigserial" | "serial8" => Some(SqlType::BigInt(None)),
        "smallserial" | "serial2" => Some(SqlType::SmallInt(None)),
        _ => None,
    }
}

/// An empty CREATE TABLE to plan a lone column definition with.
fn probe_table() -> Result<ast::CreateTable> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, "CREATE TABLE probe (x INT)")
        .map_err(|e| Error::sql("XX000", e.to_string()))?;
    match statements.into_iter().next() {
        Some(ast::Statement::CreateTable(create)) => Ok(create),
        _ => Err(Error::sql("XX000", "could not build a probe table")),
    }
}

fn object_name_text(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize)
            .ok_or_else(|| Error::sql("42601", format!("invalid name {name}"))),
        _ => Err(Error::sql("42601", format!("invalid schema name {name}"))),
    }
}

/// The type storage keeps for a query's column type: view, dictionary and
/// run-end encodings become the plain type of their values, Float16 Float32.
fn storable(data_type: &arrow_schema::DataType) -> arrow_schema::DataType {
    use arrow_schema::DataType as T;
    match data_type {
        T::Utf8View => T::Utf8,
        T::BinaryView => T::Binary,
        T::Float16 => T::Float32,
        T::Dictionary(_, values) => storable(values),
        T::RunEndEncoded(_, values) => storable(values.data_type()),
        T::ListView(item) | T::LargeListView(item) | T::LargeList(item) | T::List(item) => {
            T::List(Arc::new(
                item.as_ref()
                    .clone()
                    .with_data_type(storable(item.data_type())),
            ))
        }
        other => other.clone(),
    }
}

/// Postgres types Basalt stores as text, by the name it reports them as.
fn text_stored_type(data_type: &SqlType) -> Option<&'static str> {
    match data_type {
        SqlType::Uuid => Some("uuid"),
        SqlType::JSON => Some("json"),
        SqlType::JSONB => Some("jsonb"),
        _ => None,
    }
}

fn reject_unsupported_constraints(create: &ast::CreateTable) -> Result<()> {
    let column_options = create.columns.iter().flat_map(|c| &c.options);
    for option in column_options {
        match &option.option {
            ColumnOption::ForeignKey(_) => return Err(Error::not_supported("REFERENCES")),
            ColumnOption::Check(_) => return Err(Error::not_supported("a CHECK constraint")),
            _ => {}
        }
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::ForeignKey(_) => return Err(Error::not_supported("FOREIGN KEY")),
            TableConstraint::Check(_) => return Err(Error::not_supported("a CHECK constraint")),
            _ => {}
        }
    }
    Ok(())
}

/// `WITH (fillfactor = 100)` and the autovacuum and TOAST parameters tune
/// Postgres' heap pages; an LSM table has none, so they are accepted and
/// have no effect. Anything else is an unknown parameter, as in Postgres.
fn ignore_storage_parameters(create: &mut ast::CreateTable) -> Result<()> {
    let ast::CreateTableOptions::With(options) = &create.table_options else {
        return Ok(());
    };
    for option in options {
        let name = match option {
            ast::SqlOption::KeyValue { key, .. } => key.value.to_ascii_lowercase(),
            other => other.to_string(),
        };
        let known = name == "fillfactor"
            || name.starts_with("autovacuum_")
            || name.starts_with("toast_")
            || name == "parallel_workers";
        if !known {
            return Err(Error::sql(
                "22023",
                format!("unrecognized parameter \"{name}\""),
            ));
        }
    }
    create.table_options = ast::CreateTableOptions::None;
    Ok(())
}
