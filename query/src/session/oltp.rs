//! OLTP statements without DataFusion: primary-key point SELECTs and
//! UPDATEs (a get, and for an UPDATE a put), and INSERT ... VALUES of
//! constants.
//!
//! Planning such a statement costs far more than running it (SessionState
//! clones, every optimizer pass, the physical planner), and they are what
//! an OLTP client sends most; pgbench's `-S` and `-N` are nothing else. The
//! shapes accepted are narrow on purpose: anything this module does not
//! recognise exactly (an expression, a literal needing coercion, a view, a
//! join, a column default) goes to DataFusion, so both paths give the same
//! answer. Where they differ it is this path that follows Postgres:
//! integer overflow is 22003 here.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type};
use arrow_array::{
    new_null_array, ArrayRef, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray,
    RecordBatch, StringArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, TimeUnit};
use basalt_storage::TableDef;
use datafusion::arrow::compute::{cast, concat};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, TableFactor, UnaryOperator, Value,
};
use parking_lot::Mutex;

use crate::session::dml::{cast_value, conform, Target};
use crate::session::prepare::{param_expr, placeholder_of, Param};
use crate::session::Session;
use crate::sql::error::{Error, Result};
use crate::sql::syntax::conjuncts;
use crate::sql::syntax::normalize;

/// A point SELECT's key column value: a literal, or a parameter read as a
/// literal of the column's type would be.
pub(crate) enum KeySource {
    Value(ArrayRef),
    Param { index: usize, data_type: DataType },
}

/// A statement prepared once and executed many times (the extended
/// protocol's Parse, then Bind/Execute), with what the session learnt about
/// it on earlier executions: recognising a point SELECT was a sixteenth of
/// a prepared lookup's time.
pub struct PreparedStatement {
    statement: Statement,
    /// The highest `$n`, or `None` for a malformed placeholder (an error
    /// each Bind reports); counting them walked the whole syntax tree on
    /// every Execute.
    placeholders: Option<usize>,
    pub(crate) point: Mutex<Option<Arc<crate::session::point_select::PointSelect>>>,
    update: Mutex<Option<Arc<PointUpdate>>>,
    insert: Mutex<Option<Arc<PreparedInsert>>>,
}

impl PreparedStatement {
    pub fn new(statement: Statement) -> PreparedStatement {
        PreparedStatement {
            placeholders: crate::session::prepare::placeholder_count(&statement).ok(),
            statement,
            point: Mutex::new(None),
            update: Mutex::new(None),
            insert: Mutex::new(None),
        }
    }

    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The statement with its parameters in place.
    pub(crate) fn bind(&self, params: &[Param]) -> Result<Statement> {
        match self.placeholders {
            Some(needed) => crate::session::prepare::bind_counted(&self.statement, needed, params),
            None => crate::session::prepare::bind(&self.statement, params),
        }
    }

    fn sql(&self) -> Option<&ast::Statement> {
        match &self.statement {
            Statement::Statement(inner) => Some(inner),
            _ => None,
        }
    }

    fn insert(&self) -> Option<&ast::Insert> {
        match self.sql()? {
            ast::Statement::Insert(insert) => Some(insert),
            _ => None,
        }
    }

    fn update(&self) -> Option<&ast::Update> {
        match self.sql()? {
            ast::Statement::Update(update) => Some(update),
            _ => None,
        }
    }

    pub(crate) fn query(&self) -> Option<&ast::Query> {
        match self.sql()? {
            ast::Statement::Query(query) => Some(query),
            _ => None,
        }
    }
}

impl std::fmt::Debug for PreparedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedStatement({})", self.statement)
    }
}

/// The query's SELECT when nothing but a projection, one FROM item and a
/// WHERE clause is in play.
pub(crate) fn plain_select(query: &ast::Query) -> Option<&ast::Select> {
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
pub(crate) fn plain_table(
    relation: &TableFactor,
) -> Option<(&ast::ObjectName, Option<&ast::Ident>)> {
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
pub(crate) fn column_of(expr: &Expr, def: &TableDef, qualifier: &str) -> Option<usize> {
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

pub(crate) fn projection(
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
    encode_point_key(&key_sources(selection, def, qualifier)?, &[])
}

/// Where each key column's value comes from, when `selection` is nothing
/// but one equality per key column against a literal or a placeholder.
fn key_sources(selection: &Expr, def: &TableDef, qualifier: &str) -> Option<Vec<KeySource>> {
    as_key(equalities(selection, def, qualifier)?, def).ok()
}

/// `equalities` (of distinct columns) in key order when they fix each key
/// column and nothing else; otherwise handed back.
pub(crate) fn as_key(
    mut equalities: Vec<(usize, KeySource)>,
    def: &TableDef,
) -> std::result::Result<Vec<KeySource>, Vec<(usize, KeySource)>> {
    let slot = |column: usize| def.key_columns.iter().position(|&k| k as usize == column);
    let is_key = !def.key_columns.is_empty()
        && equalities.len() == def.key_columns.len()
        && equalities.iter().all(|(column, _)| slot(*column).is_some());
    if !is_key {
        return Err(equalities);
    }
    equalities.sort_by_key(|(column, _)| slot(*column));
    Ok(equalities.into_iter().map(|(_, source)| source).collect())
}

/// The columns `selection` fixes and where each value comes from, when it
/// is nothing but equalities of distinct columns with a literal or a
/// placeholder.
pub(crate) fn equalities(
    selection: &Expr,
    def: &TableDef,
    qualifier: &str,
) -> Option<Vec<(usize, KeySource)>> {
    let mut conditions = Vec::new();
    conjuncts(selection, &mut conditions);
    let mut found: Vec<(usize, KeySource)> = Vec::new();
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
        if found.iter().any(|(c, _)| *c == column) {
            return None;
        }
        let data_type = def.schema.field(column).data_type().clone();
        let source = match placeholder_of(literal) {
            Some(n) => KeySource::Param {
                index: n.checked_sub(1)?,
                data_type,
            },
            None => KeySource::Value(key_value(literal, &data_type)?),
        };
        found.push((column, source));
    }
    Some(found)
}

/// The value a source stands for, the parameters bound; `None` when it is
/// not exactly of its column's type.
pub(crate) fn source_value(source: &KeySource, params: &[Param]) -> Option<ArrayRef> {
    match source {
        KeySource::Value(value) => Some(value.clone()),
        KeySource::Param { index, data_type } => {
            key_value(&param_expr(params.get(*index)?).ok()?, data_type)
        }
    }
}

/// The encoded key, a placeholder meaning what binding would put in its
/// place; `None` when a value is missing or is not exactly of its column's
/// type.
pub(crate) fn encode_point_key(sources: &[KeySource], params: &[Param]) -> Option<Vec<u8>> {
    let values = sources
        .iter()
        .map(|source| source_value(source, params))
        .collect::<Option<Vec<_>>>()?;
    let mut key = Vec::new();
    basalt_storage::encode_key(&values, 0, &mut key).ok()?;
    Some(key)
}

/// A literal as a one-element array of the key column's type, when it
/// means that value without any coercion DataFusion might do differently.
pub(crate) fn key_value(expr: &Expr, data_type: &DataType) -> Option<ArrayRef> {
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

/// What a point UPDATE's `SET col = value` computes from the old row.
#[derive(Clone)]
pub(crate) enum NewValue {
    /// Another column of the row.
    Column(usize),
    /// A constant, in the assigned column's type.
    Constant(ArrayRef),
    /// An integer column plus a constant, in Postgres' integer arithmetic.
    Sum { column: usize, addend: i64 },
}

/// A point UPDATE's SET list: schema index and what it becomes.
pub(crate) type Assignments = Vec<(usize, NewValue)>;

/// A prepared point UPDATE, recognised once: binding and recognising it on
/// every Execute was most of its time outside the storage engine.
pub(crate) struct PointUpdate {
    pub(crate) target: Target,
    key: Vec<KeySource>,
    assignments: Vec<(usize, Assigned)>,
    /// The statement's RETURNING list, answered from the row written.
    pub(crate) returning: Option<Vec<SelectItem>>,
}

/// A prepared SET value: known without the parameters, or read from one
/// as the bound statement's literal would be.
enum Assigned {
    Known(NewValue),
    /// `SET col = $n`.
    Param {
        index: usize,
    },
    /// `SET col = other + $n` (or `$n + other`, or `other - $n`).
    SumParam {
        column: usize,
        index: usize,
        negated: bool,
    },
}

impl PointUpdate {
    /// The key and SET values the parameters make; `None` when a value is
    /// not one the point path takes, and the bound statement must run.
    pub(crate) fn with_params(&self, params: &[Param]) -> Option<(Vec<u8>, Assignments)> {
        let key = encode_point_key(&self.key, params)?;
        let param = |index: usize| param_expr(params.get(index)?).ok();
        let mut assignments = Vec::with_capacity(self.assignments.len());
        for (column, assigned) in &self.assignments {
            let value = match assigned {
                Assigned::Known(value) => value.clone(),
                Assigned::Param { index } => {
                    let data_type = self.target.def.schema.field(*column).data_type();
                    NewValue::Constant(constant(&param(*index)?, data_type, None)?)
                }
                Assigned::SumParam {
                    column: source,
                    index,
                    negated,
                } => {
                    let addend = integer_literal(&param(*index)?)?;
                    NewValue::Sum {
                        column: *source,
                        addend: if *negated {
                            addend.checked_neg()?
                        } else {
                            addend
                        },
                    }
                }
            };
            assignments.push((*column, value));
        }
        Some((key, assignments))
    }
}

impl Session {
    /// Runs an UPDATE whose WHERE fixes the primary key and whose SET values
    /// are constants, columns or `column ± integer`, as a get and a put;
    /// `None` sends it through DataFusion. Returns the rows written.
    pub(crate) fn point_update(
        &mut self,
        target: &Target,
        update: &ast::Update,
    ) -> Result<Option<Vec<RecordBatch>>> {
        if !self.settings.fast_paths() {
            return Ok(None);
        }
        let Some((key, assignments)) = recognise_update(target, update) else {
            return Ok(None);
        };
        self.apply_point_update(target, key, assignments).map(Some)
    }

    /// Writes the row `key` names with `assignments` made; returns the
    /// rows written (none when the key is absent).
    pub(crate) fn apply_point_update(
        &mut self,
        target: &Target,
        key: Vec<u8>,
        assignments: Assignments,
    ) -> Result<Vec<RecordBatch>> {
        let Some(old) = self.shared.with_reader(|r| r.get(&target.full, &key))? else {
            return Ok(Vec::new());
        };
        let schema = &target.def.schema;
        let mut columns = old.columns().to_vec();
        for (index, value) in assignments {
            let field = schema.field(index);
            columns[index] = match value {
                NewValue::Column(source) => cast_value(old.column(source), field)?,
                NewValue::Constant(array) => array,
                NewValue::Sum { column, addend } => sum(old.column(column), addend, field)?,
            };
        }
        let new_row = conform(schema, &target.full, columns)?;
        self.replace_rows(target, vec![key], &new_row)?;
        Ok(vec![new_row])
    }

    /// Whether `target` is still the table of its name, as a shape
    /// recognised against it assumes.
    fn is_current(&self, target: &Target) -> bool {
        let def = &target.def;
        self.shared.db.table_version(&target.full) == Some((def.id, def.schema_version))
    }

    /// The recognised shape of a prepared point UPDATE, kept with the
    /// statement while its table's id and schema version stay the same.
    pub(crate) fn prepared_point_update(
        &self,
        prepared: &PreparedStatement,
    ) -> Option<Arc<PointUpdate>> {
        if !self.settings.fast_paths() {
            return None;
        }
        prepared.placeholders?;
        let cached = prepared.update.lock().clone();
        if let Some(update) = cached.filter(|c| self.is_current(&c.target)) {
            return Some(update);
        }
        let update = prepared.update()?;
        let (name, alias) = crate::session::dml::table_of(&update.table).ok()?;
        let target = self.target(&name, alias.as_ref()).ok()?;
        let shape = Arc::new(recognise_prepared_update(target, update)?);
        *prepared.update.lock() = Some(shape.clone());
        Some(shape)
    }
}

fn recognise_update(target: &Target, update: &ast::Update) -> Option<(Vec<u8>, Assignments)> {
    let key = key_of(update.selection.as_ref()?, &target.def, &target.alias)?;
    let assignments = set_list(target, update, |expr, data_type| {
        new_value(expr, &target.def, &target.alias, data_type)
    })?;
    Some((key, assignments))
}

/// [`recognise_update`] of a statement with placeholders, keeping where
/// each parameter goes.
pub(crate) fn recognise_prepared_update(
    target: Target,
    update: &ast::Update,
) -> Option<PointUpdate> {
    if update.limit.is_some() || !update.order_by.is_empty() {
        return None;
    }
    let key = key_sources(update.selection.as_ref()?, &target.def, &target.alias)?;
    let assignments = set_list(&target, update, |expr, data_type| {
        assigned(expr, &target.def, &target.alias, data_type)
    })?;
    Some(PointUpdate {
        target,
        key,
        assignments,
        returning: update.returning.clone(),
    })
}

/// The SET list as schema indexes and what `value_of` makes of each value,
/// when the statement is a plain single-table UPDATE setting each column
/// once.
fn set_list<T>(
    target: &Target,
    update: &ast::Update,
    value_of: impl Fn(&Expr, &DataType) -> Option<T>,
) -> Option<Vec<(usize, T)>> {
    if update.from.is_some() || update.output.is_some() || update.or.is_some() {
        return None;
    }
    let def = &target.def;
    let mut assignments: Vec<(usize, T)> = Vec::new();
    for assignment in &update.assignments {
        let ast::AssignmentTarget::ColumnName(name) = &assignment.target else {
            return None;
        };
        let [part] = name.0.as_slice() else {
            return None;
        };
        let index = def.schema.index_of(&normalize(part.as_ident()?)).ok()?;
        let data_type = def.schema.field(index).data_type();
        if assignments.iter().any(|(i, _)| *i == index) || data_type == &DataType::Binary {
            return None;
        }
        assignments.push((index, value_of(&assignment.value, data_type)?));
    }
    Some(assignments)
}

/// A prepared SET value the point path can compute once its parameters
/// are known.
fn assigned(
    expr: &Expr,
    def: &TableDef,
    qualifier: &str,
    data_type: &DataType,
) -> Option<Assigned> {
    if !has_placeholder(expr) {
        return new_value(expr, def, qualifier, data_type).map(Assigned::Known);
    }
    if let Some(n) = placeholder_of(expr) {
        return Some(Assigned::Param { index: n - 1 });
    }
    let Expr::BinaryOp { left, op, right } = expr else {
        return None;
    };
    let integer_column = |e: &Expr| {
        column_of(e, def, qualifier).filter(|&c| is_integer(def.schema.field(c).data_type()))
    };
    let param = |e: &Expr| placeholder_of(e).map(|n| n - 1);
    if !is_integer(data_type) {
        return None;
    }
    let (column, index, negated) = match op {
        BinaryOperator::Plus => match (integer_column(left), integer_column(right)) {
            (Some(column), None) => (column, param(right)?, false),
            (None, Some(column)) => (column, param(left)?, false),
            _ => return None,
        },
        BinaryOperator::Minus => (integer_column(left)?, param(right)?, true),
        _ => return None,
    };
    Some(Assigned::SumParam {
        column,
        index,
        negated,
    })
}

fn has_placeholder(expr: &Expr) -> bool {
    ast::visit_expressions(expr, |e| match e {
        Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// An integer literal's value (a number, or a string cast to an integer).
fn integer_literal(expr: &Expr) -> Option<i64> {
    match literal(expr)? {
        (text, Class::Integer) => text.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn new_value(
    expr: &Expr,
    def: &TableDef,
    qualifier: &str,
    data_type: &DataType,
) -> Option<NewValue> {
    if let Some(column) = column_of(expr, def, qualifier) {
        return Some(NewValue::Column(column));
    }
    // No clock: `SET t = now()` is DataFusion's.
    if let Some(constant) = constant(expr, data_type, None) {
        return Some(NewValue::Constant(constant));
    }
    let Expr::BinaryOp { left, op, right } = expr else {
        return None;
    };
    let integer = integer_literal;
    let integer_column = |e: &Expr| {
        column_of(e, def, qualifier).filter(|&c| is_integer(def.schema.field(c).data_type()))
    };
    if !is_integer(data_type) {
        return None;
    }
    match op {
        BinaryOperator::Plus => match (integer_column(left), integer_column(right)) {
            (Some(column), None) => Some(NewValue::Sum {
                column,
                addend: integer(right)?,
            }),
            (None, Some(column)) => Some(NewValue::Sum {
                column,
                addend: integer(left)?,
            }),
            _ => None,
        },
        BinaryOperator::Minus => Some(NewValue::Sum {
            column: integer_column(left)?,
            addend: integer(right)?.checked_neg()?,
        }),
        _ => None,
    }
}

pub(crate) fn is_integer(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

/// `column + addend` in the type Postgres computes it in (the wider of the
/// column's and the constant's: int4 unless the constant needs int8), then
/// stored in `field`'s type; overflow is 22003, as in Postgres.
fn sum(column: &ArrayRef, addend: i64, field: &Field) -> Result<ArrayRef> {
    let Some(values) = integers(column) else {
        let values =
            cast(column, &DataType::Int64).map_err(|e| Error::from_datafusion(e.into()))?;
        return sum_of(
            values.as_primitive::<Int64Type>().iter(),
            column,
            addend,
            field,
        );
    };
    sum_of(values, column, addend, field)
}

/// An integer column's values widened to i64, without Arrow's cast (whose
/// dispatch was most of a pgbench UPDATE's `abalance + $1`).
fn integers(column: &ArrayRef) -> Option<Box<dyn Iterator<Item = Option<i64>> + '_>> {
    Some(match column.data_type() {
        DataType::Int16 => Box::new(
            column
                .as_primitive::<Int16Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int32 => Box::new(
            column
                .as_primitive::<Int32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int64 => Box::new(column.as_primitive::<Int64Type>().iter()),
        _ => return None,
    })
}

fn sum_of(
    values: impl Iterator<Item = Option<i64>>,
    column: &ArrayRef,
    addend: i64,
    field: &Field,
) -> Result<ArrayRef> {
    let constant_type = match i32::try_from(addend) {
        Ok(_) => DataType::Int32,
        Err(_) => DataType::Int64,
    };
    let arithmetic_type = match (column.data_type(), constant_type) {
        (DataType::Int64, _) | (_, DataType::Int64) => DataType::Int64,
        _ => DataType::Int32,
    };
    let mut sums = Vec::with_capacity(column.len());
    for value in values {
        let sum = match value {
            Some(value) => {
                let sum = value
                    .checked_add(addend)
                    .filter(|s| fits(*s, &arithmetic_type))
                    .ok_or_else(|| out_of_range(&arithmetic_type))?;
                if !fits(sum, field.data_type()) {
                    return Err(out_of_range(field.data_type()));
                }
                Some(sum)
            }
            None => None,
        };
        sums.push(sum);
    }
    // Each sum fits the field's type (checked above), so narrowing is exact.
    Ok(match field.data_type() {
        DataType::Int16 => Arc::new(Int16Array::from_iter(
            sums.iter().map(|s| s.map(|s| s as i16)),
        )),
        DataType::Int32 => Arc::new(Int32Array::from_iter(
            sums.iter().map(|s| s.map(|s| s as i32)),
        )),
        DataType::Int64 => Arc::new(Int64Array::from(sums)),
        other => {
            let sums: ArrayRef = Arc::new(Int64Array::from(sums));
            cast(&sums, other).map_err(|e| Error::from_datafusion(e.into()))?
        }
    })
}

fn fits(value: i64, data_type: &DataType) -> bool {
    match data_type {
        DataType::Int16 => i16::try_from(value).is_ok(),
        DataType::Int32 => i32::try_from(value).is_ok(),
        _ => true,
    }
}

pub(crate) fn out_of_range(data_type: &DataType) -> Error {
    let name = match data_type {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        _ => "bigint",
    };
    Error::sql("22003", format!("{name} out of range"))
}

impl Session {
    /// The rows of an `INSERT ... VALUES` whose values are all constants, in
    /// the table's types, with omitted columns NULL; `None` sends the
    /// statement through DataFusion (also when an omitted column has a
    /// default).
    pub(crate) fn constant_rows(
        &self,
        insert: &ast::Insert,
        target: &Target,
    ) -> Result<Option<RecordBatch>> {
        if !self.settings.fast_paths() {
            return Ok(None);
        }
        let Some(shape) = values_shape(insert, target)? else {
            return Ok(None);
        };
        let now = self.utc_clock().then(chrono::Utc::now);
        fill_rows(target, &shape, |expr, data_type| {
            constant(expr, data_type, now)
        })
    }

    /// The shape of a prepared `INSERT ... VALUES` the point path takes,
    /// kept with the statement while its table stays the same.
    pub(crate) fn prepared_insert(
        &self,
        prepared: &PreparedStatement,
    ) -> Option<Arc<PreparedInsert>> {
        if !self.settings.fast_paths() {
            return None;
        }
        prepared.placeholders?;
        let cached = prepared.insert.lock().clone();
        if let Some(insert) = cached.filter(|c| self.is_current(&c.target)) {
            return Some(insert);
        }
        let shape = Arc::new(self.recognise_prepared_insert(prepared.insert()?)?);
        *prepared.insert.lock() = Some(shape.clone());
        Some(shape)
    }

    fn recognise_prepared_insert(&self, insert: &ast::Insert) -> Option<PreparedInsert> {
        if insert.on.is_some() || insert.returning.is_some() || insert.table_alias.is_some() {
            return None;
        }
        let ast::TableObject::TableName(name) = &insert.table else {
            return None;
        };
        // A parameter inside an expression is DataFusion's to evaluate.
        let rows = insert.source.as_deref().and_then(values_rows)?;
        let cells = rows.iter().flat_map(|row| row.iter());
        if cells
            .into_iter()
            .any(|cell| has_placeholder(cell) && placeholder_of(cell).is_none())
        {
            return None;
        }
        let target = self.target(name, None).ok()?;
        let mut insert = insert.clone();
        crate::session::dml::rewrite_values(&mut insert, &target.def.schema).ok()?;
        let shape = values_shape(&insert, &target).ok()??;
        let binary_parameter = shape.targets.iter().enumerate().any(|(position, &index)| {
            target.def.schema.field(index).data_type() == &DataType::Binary
                && shape.rows.iter().any(|row| has_placeholder(&row[position]))
        });
        if binary_parameter {
            return None;
        }
        Some(PreparedInsert {
            target,
            targets: shape.targets,
            rows: shape.rows.into_iter().map(|row| row.to_vec()).collect(),
        })
    }

    /// The row a prepared INSERT's parameters make; `None` when a value is
    /// not a constant the point path reads, and the bound statement must
    /// run.
    pub(crate) fn prepared_insert_rows(
        &self,
        insert: &PreparedInsert,
        params: &[Param],
    ) -> Result<Option<RecordBatch>> {
        let now = self.utc_clock().then(chrono::Utc::now);
        let shape = ValuesShape {
            targets: insert.targets.clone(),
            rows: insert.rows.iter().map(Vec::as_slice).collect(),
        };
        fill_rows(
            &insert.target,
            &shape,
            |expr, data_type| match placeholder_of(expr) {
                Some(n) => constant(&param_expr(params.get(n - 1)?).ok()?, data_type, now),
                None => constant(expr, data_type, now),
            },
        )
    }

    /// Whether CURRENT_TIMESTAMP's wall-clock reading is UTC's, as a
    /// `timestamp` column would store it.
    fn utc_clock(&self) -> bool {
        self.settings
            .get("timezone")
            .is_some_and(crate::session::settings::names_utc)
    }
}

/// A prepared `INSERT ... VALUES` the point path takes.
pub(crate) struct PreparedInsert {
    pub(crate) target: Target,
    targets: Vec<usize>,
    rows: Vec<Vec<Expr>>,
}

/// The columns an `INSERT ... VALUES` fills and its rows of expressions.
struct ValuesShape<'a> {
    targets: Vec<usize>,
    rows: Vec<&'a [Expr]>,
}

/// The targets and rows of an INSERT the point path can take; `None` when
/// it must be planned, an error when Postgres refuses its shape.
fn values_shape<'a>(insert: &'a ast::Insert, target: &Target) -> Result<Option<ValuesShape<'a>>> {
    let schema = &target.def.schema;
    let Some(targets) = insert_targets(insert, &target.def) else {
        return Ok(None);
    };
    let Some(rows) = insert.source.as_deref().and_then(values_rows) else {
        return Ok(None);
    };
    let width = rows[0].len();
    if width > targets.len() {
        return Err(Error::sql(
            "42601",
            "INSERT has more expressions than target columns",
        ));
    }
    if width < targets.len() {
        if !insert.columns.is_empty() {
            return Err(Error::sql(
                "42601",
                "INSERT has more target columns than expressions",
            ));
        }
        return Ok(None);
    }
    let omitted_default = schema.fields().iter().enumerate().any(|(index, field)| {
        !targets.contains(&index) && field.metadata().contains_key(crate::catalog::DEFAULT_KEY)
    });
    if omitted_default {
        return Ok(None);
    }
    Ok(Some(ValuesShape { targets, rows }))
}

/// The rows, each value made by `value_of` in its column's type and the
/// columns not named NULL; `None` when a value is not one it can make.
fn fill_rows(
    target: &Target,
    shape: &ValuesShape,
    value_of: impl Fn(&Expr, &DataType) -> Option<ArrayRef>,
) -> Result<Option<RecordBatch>> {
    let schema = &target.def.schema;
    let count = shape.rows.len();
    let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    for (position, &index) in shape.targets.iter().enumerate() {
        let data_type = schema.field(index).data_type();
        let mut values = Vec::with_capacity(count);
        for row in &shape.rows {
            let Some(value) = row.get(position).and_then(|e| value_of(e, data_type)) else {
                return Ok(None);
            };
            values.push(value);
        }
        let values: Vec<&dyn arrow_array::Array> = values.iter().map(|v| v.as_ref()).collect();
        columns[index] = Some(concat(&values).map_err(|e| Error::from_datafusion(e.into()))?);
    }
    let filled = schema
        .fields()
        .iter()
        .zip(columns)
        .map(|(field, column)| column.unwrap_or_else(|| new_null_array(field.data_type(), count)))
        .collect();
    conform(schema, &target.full, filled).map(Some)
}

/// The schema indexes an INSERT names, when each names a column once and
/// there are values for exactly those.
fn insert_targets(insert: &ast::Insert, def: &TableDef) -> Option<Vec<usize>> {
    if insert.columns.is_empty() {
        return Some((0..def.schema.fields().len()).collect());
    }
    let mut targets = Vec::with_capacity(insert.columns.len());
    for column in &insert.columns {
        let [part] = column.0.as_slice() else {
            return None;
        };
        let index = def.schema.index_of(&normalize(part.as_ident()?)).ok()?;
        if targets.contains(&index) {
            return None;
        }
        targets.push(index);
    }
    Some(targets)
}

/// The rows of a bare `VALUES (...), (...)` source.
fn values_rows(source: &ast::Query) -> Option<Vec<&[Expr]>> {
    let bare = source.with.is_none()
        && source.order_by.is_none()
        && source.limit_clause.is_none()
        && source.fetch.is_none();
    let SetExpr::Values(values) = source.body.as_ref() else {
        return None;
    };
    let rows: Vec<&[Expr]> = values
        .rows
        .iter()
        .map(|row| row.content.as_slice())
        .collect();
    let width = rows.first()?.len();
    (bare && rows.iter().all(|row| row.len() == width)).then_some(rows)
}

/// A constant as a one-element array of `data_type`: NULL, a plain literal
/// (see [`key_value`]), or CURRENT_TIMESTAMP / now() when `now` is known.
fn constant(
    expr: &Expr,
    data_type: &DataType,
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<ArrayRef> {
    if let Expr::Value(value) = expr {
        if value.value == Value::Null {
            return Some(new_null_array(data_type, 1));
        }
    }
    if let Some(value) = key_value(expr, data_type) {
        return Some(value);
    }
    let Expr::Function(function) = expr else {
        return None;
    };
    let name = function.name.to_string().to_ascii_lowercase();
    let no_arguments = match &function.args {
        ast::FunctionArguments::None => true,
        ast::FunctionArguments::List(list) => list.args.is_empty() && list.clauses.is_empty(),
        ast::FunctionArguments::Subquery(_) => false,
    };
    if !(matches!(name.as_str(), "current_timestamp" | "now") && no_arguments)
        || function.filter.is_some()
        || function.over.is_some()
    {
        return None;
    }
    let nanos = now?.timestamp_nanos_opt()?;
    let DataType::Timestamp(unit, zone) = data_type else {
        return None;
    };
    if zone.as_deref().is_some_and(|z| z != "+00:00" && z != "UTC") {
        return None;
    }
    let value = match unit {
        TimeUnit::Second => nanos / 1_000_000_000,
        TimeUnit::Millisecond => nanos / 1_000_000,
        TimeUnit::Microsecond => nanos / 1_000,
        TimeUnit::Nanosecond => nanos,
    };
    let array: ArrayRef = Arc::new(Int64Array::from(vec![value]));
    cast(&array, data_type).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::QueryResult;
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

    /// A prepared point SELECT answered from its parameters gives what
    /// binding them into the statement gives, error codes included.
    #[tokio::test]
    async fn prepared_lookups_answer_as_bound_ones() {
        use crate::session::prepare::{bind, Param};
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute("CREATE TABLE a (aid int PRIMARY KEY, abalance int); INSERT INTO a VALUES (1, 10), (7, 70)")
            .await
            .unwrap();
        let text = |t: &str, sql_type: Option<&str>| Param::Text {
            text: t.to_string(),
            sql_type: sql_type.map(str::to_string),
        };
        let statement = session
            .parse("SELECT abalance FROM a WHERE aid = $1")
            .unwrap()
            .pop()
            .unwrap();
        let prepared = PreparedStatement::new(statement.clone());
        let cases = [
            vec![text("7", Some("integer"))],
            vec![text("7", None)],
            vec![text("2", Some("integer"))],
            vec![text("3000000000", Some("bigint"))],
            vec![text("x", Some("integer"))],
            vec![Param::Null(Some("integer".into()))],
            vec![],
        ];
        for params in cases {
            let answered = match session.execute_prepared(&prepared, &params).await {
                Ok(result) => Ok(result.collect().await.unwrap()),
                Err(e) => Err(e.sqlstate()),
            };
            let bound = match bind(&statement, &params) {
                Ok(bound) => match session.execute_statement(bound).await {
                    Ok(result) => Ok(result.collect().await.unwrap()),
                    Err(e) => Err(e.sqlstate()),
                },
                Err(e) => Err(e.sqlstate()),
            };
            assert_eq!(answered, bound, "{params:?}");
        }
        let first_value = |rows: Vec<RecordBatch>| {
            crate::types::pgtext::format_value(rows[0].column(0).as_ref(), 0)
        };
        let seven = session
            .execute_prepared(&prepared, &[text("7", Some("integer"))])
            .await
            .unwrap();
        assert_eq!(
            first_value(seven.collect().await.unwrap()).as_deref(),
            Some("70")
        );

        // The statement keeps its recognised shape only while the table is
        // the one it was recognised against: a new table of the same name
        // has another key type and the balance in another column.
        session
            .execute("DROP TABLE a; CREATE TABLE a (aid bigint PRIMARY KEY, note text, abalance int); INSERT INTO a VALUES (7, 'x', 700)")
            .await
            .unwrap();
        let seven = session
            .execute_prepared(&prepared, &[text("7", Some("bigint"))])
            .await
            .unwrap();
        assert_eq!(
            first_value(seven.collect().await.unwrap()).as_deref(),
            Some("700")
        );
    }

    /// Runs `shape` prepared on table `a` and bound on its twin `b` with
    /// each of `cases`, out of and in transaction blocks, and asserts the
    /// same tags or SQLSTATEs and the same `columns` of both tables after
    /// each; `reset` runs after each pass. Returns the prepared statement.
    async fn matches_bound(
        session: &mut Session,
        shape: &str,
        cases: &[Vec<Param>],
        columns: &str,
        reset: Option<&str>,
    ) -> PreparedStatement {
        let parse = |session: &Session, table: &str| {
            let sql = shape.replace("{t}", table);
            session.parse(&sql).unwrap().pop().unwrap()
        };
        let prepared = PreparedStatement::new(parse(session, "a"));
        let statement = parse(session, "b");
        for in_block in [false, true] {
            for params in cases {
                let (answered, bound) =
                    prepared_and_bound(session, &prepared, &statement, params, in_block).await;
                let case = format!("{shape} {params:?} in block: {in_block}");
                assert_eq!(answered, bound, "{case}");
                let a = select_text(session, "a", columns).await;
                let b = select_text(session, "b", columns).await;
                assert_eq!(a, b, "{case}");
            }
            if let Some(reset) = reset {
                session.execute(reset).await.unwrap();
            }
        }
        prepared
    }

    /// `prepared` run with `params`, and `statement` with them bound, each
    /// in a block of its own when `in_block` (a failure fails its block):
    /// their command tags or SQLSTATEs.
    async fn prepared_and_bound(
        session: &mut Session,
        prepared: &PreparedStatement,
        statement: &Statement,
        params: &[Param],
        in_block: bool,
    ) -> (
        std::result::Result<String, String>,
        std::result::Result<String, String>,
    ) {
        let outcome = |result: Result<QueryResult>| match result {
            Ok(result) => Ok(tag_of(result)),
            Err(e) => Err(e.sqlstate().to_string()),
        };
        block(session, in_block, "BEGIN").await;
        let answered = outcome(session.execute_prepared(prepared, params).await);
        block(session, in_block, "COMMIT").await;
        block(session, in_block, "BEGIN").await;
        let bound = match crate::session::prepare::bind(statement, params) {
            Ok(bound) => outcome(session.execute_statement(bound).await),
            Err(e) => Err(e.sqlstate().to_string()),
        };
        block(session, in_block, "COMMIT").await;
        (answered, bound)
    }

    async fn block(session: &mut Session, in_block: bool, word: &str) {
        if in_block {
            session.execute(word).await.unwrap();
        }
    }

    fn tag_of(result: QueryResult) -> String {
        match result {
            QueryResult::Command { tag, .. } => tag,
            other => format!("{other:?}"),
        }
    }

    /// Every row of `table`, in key order, as Postgres text.
    async fn table_text(session: &mut Session, table: &str) -> Vec<Vec<Option<String>>> {
        select_text(session, table, "*").await
    }

    async fn select_text(
        session: &mut Session,
        table: &str,
        columns: &str,
    ) -> Vec<Vec<Option<String>>> {
        let sql = format!("SELECT {columns} FROM {table} ORDER BY 1");
        let batches = session.execute(&sql).await.unwrap();
        let mut rows = Vec::new();
        for batch in batches.collect().await.unwrap() {
            for row in 0..batch.num_rows() {
                let text = |c: &ArrayRef| crate::types::pgtext::format_value(c.as_ref(), row);
                rows.push(batch.columns().iter().map(text).collect());
            }
        }
        rows
    }

    /// RETURNING on a prepared point UPDATE answers the row written, as the
    /// literal statement does (it used to answer `UPDATE 1` with no rows).
    #[tokio::test]
    async fn a_prepared_point_update_returns_its_rows() {
        use crate::session::prepare::Param;
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        session
            .execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 10)")
            .await
            .unwrap();
        let prepared = PreparedStatement::new(
            session
                .parse("UPDATE t SET v = v + 1 WHERE id = $1 RETURNING v, id * 2 AS twice")
                .unwrap()
                .pop()
                .unwrap(),
        );
        let key = Param::Text {
            text: "1".into(),
            sql_type: Some("integer".into()),
        };
        for (in_block, expected) in [(false, "11"), (true, "12")] {
            if in_block {
                session.execute("BEGIN").await.unwrap();
            }
            let result = session
                .execute_prepared(&prepared, std::slice::from_ref(&key))
                .await
                .unwrap();
            assert!(prepared.update.lock().is_some(), "not the point path");
            let batches = result.collect().await.unwrap();
            let rows: Vec<_> = batches
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |r| {
                        (0..b.num_columns())
                            .map(|c| crate::types::pgtext::format_value(b.column(c).as_ref(), r))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            assert_eq!(
                rows,
                vec![vec![Some(expected.to_string()), Some("2".to_string())]]
            );
            if in_block {
                session.execute("COMMIT").await.unwrap();
            }
        }
    }

    /// A prepared point UPDATE run from its parameters writes what binding
    /// them into the statement writes, with the same tags and error codes,
    /// in and out of a transaction block.
    #[tokio::test]
    async fn prepared_updates_write_as_bound_ones() {
        use crate::session::prepare::Param;
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        for table in ["a", "b"] {
            let sql = format!(
                "CREATE TABLE {table} (aid int PRIMARY KEY, abalance int, note text); \
                 INSERT INTO {table} VALUES (1, 10, 'one'), (7, 2147483000, NULL)"
            );
            session.execute(&sql).await.unwrap();
        }
        let text = |t: &str, sql_type: Option<&str>| Param::Text {
            text: t.to_string(),
            sql_type: sql_type.map(str::to_string),
        };
        let int = |t: &str| text(t, Some("integer"));
        let shapes = [
            "UPDATE {t} SET abalance = abalance + $1, note = $2 WHERE aid = $3",
            "UPDATE {t} SET abalance = $1 + abalance, note = $2 WHERE aid = $3",
            "UPDATE {t} AS x SET abalance = x.abalance - $1, note = $2 WHERE x.aid = $3",
        ];
        let cases = [
            vec![int("5"), text("five", None), int("1")],
            vec![int("-5"), text("minus", Some("text")), int("1")],
            vec![int("5"), text("absent", None), int("2")],
            vec![int("1000"), text("overflows", None), int("7")],
            vec![
                text("3000000000", Some("bigint")),
                text("wide", None),
                int("1"),
            ],
            vec![
                Param::Null(Some("integer".into())),
                text("null", None),
                int("1"),
            ],
            vec![int("x"), text("bad", None), int("1")],
            vec![int("1"), Param::Null(None), int("1")],
            vec![int("1"), text("short", None)],
        ];
        for shape in shapes {
            let prepared = matches_bound(&mut session, shape, &cases, "*", None).await;
            assert!(
                prepared.update.lock().is_some(),
                "{shape} was not recognised"
            );
        }

        // A failed fast-path UPDATE fails its block as any statement does.
        let prepared = PreparedStatement::new(
            session
                .parse("UPDATE a SET abalance = abalance + $1 WHERE aid = $2")
                .unwrap()
                .pop()
                .unwrap(),
        );
        session
            .execute("INSERT INTO a VALUES (9, 2147483000, NULL); BEGIN")
            .await
            .unwrap();
        let overflow = session
            .execute_prepared(&prepared, &[int("1000"), int("9")])
            .await;
        assert_eq!(overflow.unwrap_err().sqlstate(), "22003");
        let refused = session
            .execute_prepared(&prepared, &[int("1"), int("1")])
            .await;
        assert_eq!(refused.unwrap_err().sqlstate(), "25P02");
        session.execute("ROLLBACK").await.unwrap();

        // A new table of the same name, with the balance elsewhere and
        // another key type, is recognised afresh.
        session
            .execute("DROP TABLE a; CREATE TABLE a (note text, abalance bigint, aid bigint PRIMARY KEY); INSERT INTO a VALUES ('x', 5, 1)")
            .await
            .unwrap();
        let tag = tag_of(
            session
                .execute_prepared(&prepared, &[int("3"), text("1", Some("bigint"))])
                .await
                .unwrap(),
        );
        assert_eq!(tag, "UPDATE 1");
        let rows = table_text(&mut session, "a").await;
        assert_eq!(
            rows,
            vec![vec![Some("x".into()), Some("8".into()), Some("1".into())]]
        );
    }

    /// A prepared INSERT ... VALUES read from its parameters writes what
    /// binding them into the statement writes, errors included.
    #[tokio::test]
    async fn prepared_inserts_write_as_bound_ones() {
        use crate::session::prepare::Param;
        let db = crate::Database::open_temporary().unwrap();
        let mut session = db.session();
        for table in ["a", "b"] {
            let sql = format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL, note text, at timestamp)"
            );
            session.execute(&sql).await.unwrap();
        }
        let text = |t: &str, sql_type: Option<&str>| Param::Text {
            text: t.to_string(),
            sql_type: sql_type.map(str::to_string),
        };
        let int = |t: &str| text(t, Some("integer"));
        let big = |t: &str| text(t, Some("bigint"));
        let shapes = [
            ("INSERT INTO {t} (id, n, note) VALUES ($1, $2, $3)", true),
            ("INSERT INTO {t} VALUES ($1, $2, $3, NULL)", true),
            ("INSERT INTO {t} (n, id) VALUES ($2, $1)", true),
            (
                "INSERT INTO {t} (id, n, note, at) VALUES ($1, $2, $3, CURRENT_TIMESTAMP)",
                true,
            ),
            (
                "INSERT INTO {t} VALUES ($1, $2, 'x', NULL), ($1 + 100, $2, $3, NULL)",
                false,
            ),
        ];
        let cases = [
            vec![int("1"), big("10"), text("one", None)],
            vec![int("1"), big("11"), text("again", None)],
            vec![
                int("2"),
                Param::Null(Some("bigint".into())),
                text("null", None),
            ],
            vec![int("x"), big("1"), text("bad", None)],
            vec![int("3"), big("3000000000"), Param::Null(None)],
            vec![int("4"), text("5", None), text("untyped", Some("text"))],
            vec![int("5"), big("1")],
        ];
        for (shape, recognised) in shapes {
            let columns = "id, n, note, at IS NULL";
            let reset = Some("DELETE FROM a; DELETE FROM b");
            let prepared = matches_bound(&mut session, shape, &cases, columns, reset).await;
            assert_eq!(prepared.insert.lock().is_some(), recognised, "{shape}");
        }

        // A new table of the same name, its columns in another order and
        // of other types, is recognised afresh.
        let prepared = PreparedStatement::new(
            session
                .parse("INSERT INTO a (id, n, note) VALUES ($1, $2, $3)")
                .unwrap()
                .pop()
                .unwrap(),
        );
        let params = [int("1"), big("2"), text("three", None)];
        session.execute_prepared(&prepared, &params).await.unwrap();
        session
            .execute("DROP TABLE a; CREATE TABLE a (note text, n int, id bigint PRIMARY KEY)")
            .await
            .unwrap();
        session.execute_prepared(&prepared, &params).await.unwrap();
        let rows = table_text(&mut session, "a").await;
        let row = |values: [&str; 3]| values.map(|v| Some(v.to_string())).to_vec();
        assert_eq!(rows, vec![row(["three", "2", "1"])]);
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
