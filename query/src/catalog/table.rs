//! A storage table as a DataFusion table: scans read one storage snapshot,
//! with the projection, the filters the engine answers exactly, and the
//! limit pushed down, and the scan's independent units spread over
//! DataFusion partitions.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use basalt_storage::{FirstRows, Predicate, PredicateOp, Scalar, ScanOptions, ScanPlan, TableDef};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{
    ColumnStatistics, Constraint, Constraints, DataFusionError, Result, ScalarValue, Statistics,
};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
};

use crate::catalog::build_keys::BuildKeys;
use crate::catalog::join_filter::{BuildKeysUse, JoinFilter};
use crate::catalog::{SessionShared, ROW_KEY};

/// A table of the storage engine. A keyed table shows each row's storage
/// key as one more column, [`ROW_KEY`], for UPDATE and DELETE to address it.
#[derive(Debug)]
pub struct StorageTable {
    shared: Arc<SessionShared>,
    def: TableDef,
    keyed: bool,
    schema: SchemaRef,
    defaults: HashMap<String, Expr>,
    /// The primary key, so the planner knows what it determines
    /// (`GROUP BY id` may select the other columns, as in Postgres).
    constraints: Constraints,
    /// Set under a sort with a limit on an indexed column (see
    /// `crate::index::btree`): segments contribute only their first rows.
    first_rows: Option<FirstRows>,
}

impl StorageTable {
    pub(crate) fn new(
        shared: Arc<SessionShared>,
        def: TableDef,
        keyed: bool,
        defaults: HashMap<String, Expr>,
    ) -> StorageTable {
        let schema = if keyed {
            let mut fields: Vec<FieldRef> = def.schema.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(ROW_KEY, DataType::Binary, false)));
            Arc::new(Schema::new_with_metadata(
                fields,
                def.schema.metadata().clone(),
            ))
        } else {
            def.schema.clone()
        };
        let key: Vec<usize> = def.key_columns.iter().map(|&c| c as usize).collect();
        let constraints = match key.is_empty() {
            true => Constraints::default(),
            false => Constraints::new_unverified(vec![Constraint::PrimaryKey(key)]),
        };
        StorageTable {
            shared,
            def,
            keyed,
            schema,
            defaults,
            constraints,
            first_rows: None,
        }
    }
}

impl StorageTable {
    pub(crate) fn def(&self) -> &TableDef {
        &self.def
    }

    /// The table, scanned for only the first rows in one column's order.
    pub(crate) fn with_first_rows(&self, first_rows: FirstRows) -> StorageTable {
        StorageTable {
            shared: self.shared.clone(),
            def: self.def.clone(),
            keyed: self.keyed,
            schema: self.schema.clone(),
            defaults: self.defaults.clone(),
            constraints: self.constraints.clone(),
            first_rows: Some(first_rows),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<SessionShared> {
        &self.shared
    }

    /// Whether the table shows the row key column (a DML target).
    pub(crate) fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Rows the scan may return, for the planner's join order: the stored
    /// rows (versions included) and the memtables at a guessed row width,
    /// cut to DataFusion's default filter selectivity (20%) when filtered.
    fn estimated_rows(&self, options: &ScanOptions) -> Option<usize> {
        let stats = self.shared.db.table_stats(&self.def.name).ok()?;
        let mut rows = stats.segment_rows as usize + stats.memtable_bytes / 64;
        if !options.predicates.is_empty() {
            rows /= 5;
        }
        Some(match options.limit {
            Some(limit) => rows.min(limit),
            None => rows,
        })
    }
}

impl StorageTable {
    /// Zone-map bounds of the scanned columns, for join estimates.
    fn column_statistics(&self, wanted: &[usize]) -> Vec<ColumnStatistics> {
        let ranges = self
            .shared
            .db
            .column_ranges(&self.def.name)
            .unwrap_or_default();
        wanted
            .iter()
            .map(|&c| {
                let (Some(range), Some(field)) = (ranges.get(c), self.def.schema.fields().get(c))
                else {
                    return ColumnStatistics::new_unknown();
                };
                let bound = |value: &Option<Scalar>| {
                    let array = value.as_ref()?.to_array(field.data_type()).ok()?;
                    ScalarValue::try_from_array(&array, 0).ok()
                };
                let mut statistics = ColumnStatistics::new_unknown();
                statistics.null_count = Precision::Inexact(range.null_count as usize);
                if !range.unbounded {
                    if let (Some(min), Some(max)) = (bound(&range.min), bound(&range.max)) {
                        statistics.min_value = Precision::Inexact(min);
                        statistics.max_value = Precision::Inexact(max);
                    }
                }
                statistics
            })
            .collect()
    }
}

#[async_trait]
impl TableProvider for StorageTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match to_predicate(&self.def.schema, f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicates: Vec<Predicate> = filters
            .iter()
            .filter_map(|f| to_predicate(&self.def.schema, f))
            .collect();
        if predicates.len() != filters.len() {
            return Err(DataFusionError::Internal(
                "a filter the scan cannot answer was pushed down".into(),
            ));
        }
        let columns = self.def.schema.fields().len();
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let with_key = self.keyed && wanted.contains(&columns);
        let storage_projection: Vec<usize> =
            wanted.iter().copied().filter(|&c| c < columns).collect();
        // Storage puts the key last; DataFusion wants the columns in the
        // order it asked for.
        let mut produced = storage_projection.clone();
        if with_key {
            produced.push(columns);
        }
        let reorder: Vec<usize> = wanted
            .iter()
            .filter_map(|c| produced.iter().position(|p| p == c))
            .collect();
        let output_schema = Arc::new(self.schema.project(&wanted)?);
        let options = ScanOptions {
            projection: Some(storage_projection),
            predicates,
            limit,
            with_key,
            first_rows: self.first_rows.clone(),
        };
        let plan = self
            .shared
            .with_reader(|reader| reader.scan(&self.def.name, &options))
            .map_err(external)?;
        let partitions = state.config().target_partitions().max(1);
        let mut scan = StorageScanExec::new(
            self.def.name.clone(),
            plan,
            options,
            partitions,
            output_schema,
            reorder,
        );
        scan.estimated_rows = self.estimated_rows(&scan.options);
        scan.column_statistics = self.column_statistics(&wanted);
        Ok(Arc::new(scan))
    }
}

fn external(err: basalt_storage::Error) -> DataFusionError {
    DataFusionError::External(Box::new(err))
}

/// The storage predicate for `expr` when the engine evaluates it exactly:
/// a column compared with a non-null literal the column's type can hold.
fn to_predicate(schema: &SchemaRef, expr: &Expr) -> Option<Predicate> {
    let column_index = |e: &Expr| match e {
        Expr::Column(c) => schema.index_of(&c.name).ok(),
        _ => None,
    };
    let fits =
        |column: usize, value: &Scalar| value.to_array(schema.field(column).data_type()).is_ok();
    let (column, op) = match expr {
        // DataFusion writes a short IN list as `c = 1 OR c = 2`.
        Expr::BinaryExpr(BinaryExpr {
            op: Operator::Or, ..
        }) => {
            let mut values = Vec::new();
            let column = or_of_equalities(schema, expr, &mut values)?;
            (column, PredicateOp::In(values))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, literal, op) = match (column_index(left), literal(right)) {
                (Some(c), Some(v)) => (c, v, *op),
                _ => (column_index(right)?, literal(left)?, op.swap()?),
            };
            if !fits(column, &literal) {
                return None;
            }
            let op = match op {
                Operator::Eq => PredicateOp::Eq(literal),
                Operator::Lt => PredicateOp::Lt(literal),
                Operator::LtEq => PredicateOp::LtEq(literal),
                Operator::Gt => PredicateOp::Gt(literal),
                Operator::GtEq => PredicateOp::GtEq(literal),
                _ => return None,
            };
            (column, op)
        }
        Expr::IsNull(e) => (column_index(e)?, PredicateOp::IsNull),
        Expr::IsNotNull(e) => (column_index(e)?, PredicateOp::IsNotNull),
        Expr::InList(list) if !list.negated => {
            let column = column_index(&list.expr)?;
            let values = list.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
            if !values.iter().all(|v| fits(column, v)) {
                return None;
            }
            (column, PredicateOp::In(values))
        }
        _ => return None,
    };
    Some(Predicate { column, op })
}

/// The column of `c = v1 OR c = v2 OR ...`, collecting the values.
fn or_of_equalities(schema: &SchemaRef, expr: &Expr, values: &mut Vec<Scalar>) -> Option<usize> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let left = or_of_equalities(schema, left, values)?;
            let right = or_of_equalities(schema, right, values)?;
            (left == right).then_some(left)
        }
        Expr::BinaryExpr(BinaryExpr {
            op: Operator::Eq, ..
        }) => match to_predicate(schema, expr)? {
            Predicate {
                column,
                op: PredicateOp::Eq(value),
            } => {
                values.push(value);
                Some(column)
            }
            _ => None,
        },
        _ => None,
    }
}

/// A non-null literal as a storage scalar.
fn literal(expr: &Expr) -> Option<Scalar> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    storage_scalar(value)
}

/// A non-null value as a storage scalar, as a pushed-down predicate
/// compares it (the point SELECT path converts its values here too).
pub(crate) fn storage_scalar(value: &ScalarValue) -> Option<Scalar> {
    Some(match value {
        ScalarValue::Boolean(Some(v)) => Scalar::Boolean(*v),
        ScalarValue::Int8(Some(v)) => Scalar::Int(i64::from(*v)),
        ScalarValue::Int16(Some(v)) => Scalar::Int(i64::from(*v)),
        ScalarValue::Int32(Some(v)) => Scalar::Int(i64::from(*v)),
        ScalarValue::Int64(Some(v)) => Scalar::Int(*v),
        ScalarValue::UInt8(Some(v)) => Scalar::UInt(u64::from(*v)),
        ScalarValue::UInt16(Some(v)) => Scalar::UInt(u64::from(*v)),
        ScalarValue::UInt32(Some(v)) => Scalar::UInt(u64::from(*v)),
        ScalarValue::UInt64(Some(v)) => Scalar::UInt(*v),
        ScalarValue::Float32(Some(v)) => Scalar::Float(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => Scalar::Float(*v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Scalar::Bytes(v.as_bytes().to_vec()),
        ScalarValue::Binary(Some(v)) | ScalarValue::LargeBinary(Some(v)) => {
            Scalar::Bytes(v.clone())
        }
        ScalarValue::Date32(Some(v)) => Scalar::Int(i64::from(*v)),
        ScalarValue::Date64(Some(v)) => Scalar::Int(*v),
        ScalarValue::TimestampSecond(Some(v), _)
        | ScalarValue::TimestampMillisecond(Some(v), _)
        | ScalarValue::TimestampMicrosecond(Some(v), _)
        | ScalarValue::TimestampNanosecond(Some(v), _) => Scalar::Int(*v),
        ScalarValue::Decimal128(Some(v), _, _) => Scalar::Decimal(*v),
        _ => return None,
    })
}

/// Reads a storage scan plan: partition `p` runs the plan's units
/// `p, p + n, p + 2n, ...`.
#[derive(Clone)]
pub struct StorageScanExec {
    table: String,
    plan: Arc<ScanPlan>,
    options: ScanOptions,
    partitions: usize,
    properties: Arc<PlanProperties>,
    schema: SchemaRef,
    /// Output column i is the scan's column `reorder[i]`.
    reorder: Vec<usize>,
    metrics: ExecutionPlanMetricsSet,
    estimated_rows: Option<usize>,
    column_statistics: Vec<ColumnStatistics>,
    /// Filters a hash join (or TopK) above pushes down once the plan is
    /// built and fills in at run time, e.g. the build side's join keys:
    /// rows they reject are dropped here, before any join or aggregate
    /// above sees them.
    dynamic_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Build keys of the joins above, for the join filters among
    /// `dynamic_filters` they answer for; set once the plan is final.
    build_keys: Arc<parking_lot::Mutex<Vec<Arc<BuildKeys>>>>,
}

impl StorageScanExec {
    fn new(
        table: String,
        plan: ScanPlan,
        options: ScanOptions,
        target_partitions: usize,
        schema: SchemaRef,
        reorder: Vec<usize>,
    ) -> StorageScanExec {
        // With a limit the units run in key order in one partition, so the
        // first rows found are the ones returned.
        let partitions = match options.limit {
            Some(_) => 1,
            None => target_partitions.min(plan.num_units()).max(1),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StorageScanExec {
            table,
            plan: Arc::new(plan),
            options,
            partitions,
            properties: Arc::new(properties),
            schema,
            reorder,
            metrics: ExecutionPlanMetricsSet::new(),
            estimated_rows: None,
            column_statistics: Vec::new(),
            dynamic_filters: Vec::new(),
            build_keys: Arc::default(),
        }
    }

    pub(crate) fn offer_build_keys(&self, keys: &[Arc<BuildKeys>]) {
        *self.build_keys.lock() = keys.to_vec();
    }

    fn with_dynamic_filters(&self, filters: Vec<Arc<dyn PhysicalExpr>>) -> StorageScanExec {
        let mut node = self.clone();
        node.metrics = ExecutionPlanMetricsSet::new();
        node.dynamic_filters.extend(filters);
        node
    }
}

/// Whether a partition's dynamic filters still pay for themselves. A join
/// filter that removes few rows costs the scan a key lookup per row that
/// the join repeats anyway, so once enough rows have been seen, filters
/// that removed under a fifth of them are dropped.
#[derive(Default)]
struct Selectivity {
    seen: usize,
    removed: usize,
}

impl Selectivity {
    const SAMPLE_ROWS: usize = 100_000;

    fn worth_applying(&self) -> bool {
        self.seen < Self::SAMPLE_ROWS || self.removed * 5 >= self.seen
    }

    fn record(&mut self, rows: usize, kept: usize) {
        self.seen += rows;
        self.removed += rows - kept;
    }
}

/// Keeps the rows of `batch` that are `selected` (all when `None`) and
/// that every filter accepts, copying the columns once.
fn apply_filters(
    filters: &mut [JoinFilter],
    batch: RecordBatch,
    mut selected: Option<BooleanArray>,
) -> Result<RecordBatch> {
    for filter in filters {
        selected = Some(match &selected {
            None => filter.mask(&batch)?,
            Some(selected) => filter.mask_within(&batch, selected)?,
        });
    }
    match selected {
        Some(selected) => Ok(filter_record_batch(&batch, &selected)?),
        None => Ok(batch),
    }
}

impl fmt::Debug for StorageScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageScanExec({})", self.table)
    }
}

impl DisplayAs for StorageScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StorageScanExec: table={}, units={}",
            self.table,
            self.plan.num_units()
        )?;
        if let Some(index) = self.plan.index() {
            write!(f, ", index={index}")?;
        }
        if let Some(projection) = &self.options.projection {
            write!(f, ", projection={projection:?}")?;
        }
        if !self.options.predicates.is_empty() {
            let shown: Vec<String> = self
                .options
                .predicates
                .iter()
                .map(|p| format!("#{} {:?}", p.column, p.op))
                .collect();
            write!(f, ", predicates=[{}]", shown.join(", "))?;
        }
        if let Some(limit) = self.options.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for StorageScanExec {
    fn name(&self) -> &'static str {
        "StorageScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    leaf_plan_methods!(expressions: |plan| plan.dynamic_filters);

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.schema);
        if self.column_statistics.len() == statistics.column_statistics.len() {
            statistics.column_statistics = self.column_statistics.clone();
        }
        if let Some(rows) = self.estimated_rows {
            let share = match partition {
                Some(_) => rows / self.partitions.max(1),
                None => rows,
            };
            statistics.num_rows = Precision::Inexact(share);
        }
        Ok(Arc::new(statistics))
    }

    /// Takes the filters offered after physical planning (the dynamic
    /// ones) and applies them to its batches; the parents keep them too,
    /// since they are told the filters were not pushed down.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let offered: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|f| f.filter)
            .collect();
        let answers = vec![PushedDown::No; offered.len()];
        if !matches!(phase, FilterPushdownPhase::Post) || offered.is_empty() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                answers,
            ));
        }
        let updated: Arc<dyn ExecutionPlan> = Arc::new(self.with_dynamic_filters(offered));
        Ok(
            FilterPushdownPropagation::with_parent_pushdown_result(answers)
                .with_updated_node(updated),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "no partition {partition} of {}",
                self.partitions
            )));
        }
        let plan = self.plan.clone();
        let schema = self.schema.clone();
        let reorder = self.reorder.clone();
        let mut remaining = self.options.limit.unwrap_or(usize::MAX);
        let limited = self.options.limit.is_some();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let units_read = MetricBuilder::new(&self.metrics).counter("units_read", partition);
        let tested_by_build_keys =
            MetricBuilder::new(&self.metrics).counter("rows_tested_by_build_keys", partition);
        let build_keys = self.build_keys.lock().clone();
        let mut dynamic_filters: Vec<JoinFilter> = self
            .dynamic_filters
            .iter()
            .map(|filter| {
                let keys = build_keys.iter().find(|keys| keys.answer_for(filter));
                let keys = keys.map(|keys| BuildKeysUse {
                    keys: keys.clone(),
                    rows_tested: tested_by_build_keys.clone(),
                });
                JoinFilter::new(filter.clone(), keys)
            })
            .collect();
        let mut selectivity = Selectivity::default();
        let dynamically_filtered =
            MetricBuilder::new(&self.metrics).counter("rows_removed_by_dynamic_filters", partition);
        let units = (partition..plan.num_units()).step_by(self.partitions);
        let batches = units.filter_map(move |unit| {
            if remaining == 0 {
                return None;
            }
            let timer = baseline.elapsed_compute().timer();
            let result = plan.execute_unit_masked(unit);
            timer.done();
            units_read.add(1);
            match result {
                Ok(Some((batch, selected))) => {
                    // The predicates' mask is kept for the join filters to
                    // narrow, so that columns are copied once; a LIMIT
                    // counts rows after the predicates, so it filters now.
                    let filter_now =
                        limited || dynamic_filters.is_empty() || !selectivity.worth_applying();
                    let (batch, selected) = match selected {
                        Some(selected) if filter_now => {
                            match filter_record_batch(&batch, &selected) {
                                Ok(batch) => (batch, None),
                                Err(e) => return Some(Err(e.into())),
                            }
                        }
                        other => (batch, other),
                    };
                    let batch = if batch.num_rows() > remaining {
                        batch.slice(0, remaining)
                    } else {
                        batch
                    };
                    let rows = selected
                        .as_ref()
                        .map_or(batch.num_rows(), |s| s.true_count());
                    remaining -= rows;
                    baseline.record_output(rows);
                    let columns = reorder.iter().map(|&c| batch.column(c).clone()).collect();
                    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                    let batch =
                        RecordBatch::try_new_with_options(schema.clone(), columns, &options)
                            .map_err(DataFusionError::from);
                    Some(batch.and_then(|batch| {
                        if !selectivity.worth_applying() {
                            return Ok(batch);
                        }
                        let kept = apply_filters(&mut dynamic_filters, batch, selected)?;
                        selectivity.record(rows, kept.num_rows());
                        dynamically_filtered.add(rows - kept.num_rows());
                        Ok(kept)
                    }))
                }
                Ok(None) => None,
                Err(e) => Some(Err(external(e))),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        )))
    }
}
