//! Nearest-neighbour queries through HNSW indexes. An optimizer rule finds
//! `ORDER BY col <-> q LIMIT k` (any of pgvector's three distances, any
//! WHERE clause) over a storage table whose column has an index of that
//! distance, and replaces the table scan with [`VectorSearchExec`]: each
//! segment's k best rows that pass every filter, from which the Sort above
//! keeps k. Filters are evaluated before ranking, so a query that k rows
//! match returns k rows.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use basalt_storage::{index_specs, Metric, VectorQuery, VectorSearchStats};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider, TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Expr, LogicalPlan, Sort, TableProviderFilterPushDown, TableScan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use datafusion::sql::sqlparser::ast;

use super::{
    index_name, projection_over, require_column, resolve_through, sort_over, IndexBuild,
    IndexTarget, Setting,
};
use crate::catalog::table::StorageTable;
use crate::catalog::SessionShared;
use crate::sql::syntax::normalize;

/// pgvector's default `hnsw.ef_search`.
pub const DEFAULT_EF_SEARCH: usize = 40;

/// `hnsw.ef_search`: candidates kept per search, as pgvector's.
pub(crate) const SETTINGS: &[Setting] = &[Setting {
    name: "hnsw.ef_search",
    default: "40",
    apply: set_ef_search,
}];

fn set_ef_search(shared: &SessionShared, text: &str) -> crate::Result<()> {
    let ef: usize = text
        .parse()
        .ok()
        .filter(|ef| (1..=1000).contains(ef))
        .ok_or_else(|| {
            crate::Error::sql(
                "22023",
                format!("invalid value for parameter \"hnsw.ef_search\": \"{text}\""),
            )
            .with_detail("Valid values are between \"1\" and \"1000\".")
        })?;
    shared.ef_search.store(ef, Ordering::Relaxed);
    Ok(())
}

/// The rule, one per session; `ef_search` follows `SET hnsw.ef_search`.
#[derive(Debug)]
pub(crate) struct VectorSearchRule {
    pub ef_search: Arc<AtomicUsize>,
}

impl OptimizerRule for VectorSearchRule {
    fn name(&self) -> &str {
        "basalt_vector_search"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down(|node| match node {
            LogicalPlan::Sort(sort) if sort.fetch.is_some() => self.rewrite_sort(sort),
            other => Ok(Transformed::no(other)),
        })
    }
}

/// What the sort ranks by, once it names an indexed column.
struct Ranking {
    column: String,
    metric: Metric,
    query: Vec<f32>,
}

impl VectorSearchRule {
    fn rewrite_sort(&self, sort: Sort) -> Result<Transformed<LogicalPlan>> {
        let Some(k) = sort.fetch else {
            return Ok(Transformed::no(LogicalPlan::Sort(sort)));
        };
        let first = match sort.expr.first() {
            Some(first) if first.asc => first.expr.clone(),
            _ => return Ok(Transformed::no(LogicalPlan::Sort(sort))),
        };
        let input = replace_scan(
            sort.input.as_ref(),
            &first,
            k,
            self.ef_search.load(Ordering::Relaxed),
        )?;
        Ok(sort_over(sort, input))
    }
}

/// The plan under the sort with its storage scan replaced by a vector
/// search, when the sort expression (seen through projections) ranks an
/// indexed column by its index's distance.
fn replace_scan(
    plan: &LogicalPlan,
    ranked_by: &Expr,
    k: usize,
    ef_search: usize,
) -> Result<Option<LogicalPlan>> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let resolved = resolve_through(projection, ranked_by);
            let Some(input) = replace_scan(&projection.input, &resolved, k, ef_search)? else {
                return Ok(None);
            };
            Ok(Some(projection_over(projection, input)?))
        }
        LogicalPlan::Filter(filter) => match filter.input.as_ref() {
            LogicalPlan::TableScan(scan) => {
                let extra = split_conjunction_owned(filter.predicate.clone());
                vector_scan(scan, ranked_by, k, ef_search, extra)
            }
            _ => Ok(None),
        },
        LogicalPlan::TableScan(scan) => vector_scan(scan, ranked_by, k, ef_search, Vec::new()),
        _ => Ok(None),
    }
}

fn vector_scan(
    scan: &TableScan,
    ranked_by: &Expr,
    k: usize,
    ef_search: usize,
    extra_filters: Vec<Expr>,
) -> Result<Option<LogicalPlan>> {
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = provider.downcast_ref::<StorageTable>() else {
        return Ok(None);
    };
    let Some(ranking) = ranking(ranked_by) else {
        return Ok(None);
    };
    let def = table.def();
    let Ok(column) = def.schema.index_of(&ranking.column) else {
        return Ok(None);
    };
    let indexed = index_specs(def)
        .iter()
        .any(|spec| spec.column == column && spec.params.metric == ranking.metric);
    let dims_match = crate::types::vector::dimensions_of(def.schema.field(column).data_type())
        == Some(ranking.query.len());
    if !indexed || !dims_match || table.is_keyed() {
        return Ok(None);
    }
    let source = VectorSearchTable {
        table: provider.clone(),
        qualifier: scan.table_name.clone(),
        query: VectorQuery {
            column,
            metric: ranking.metric,
            query: ranking.query,
            k,
            ef_search: ef_search.max(k),
            projection: Vec::new(),
            filter_columns: Vec::new(),
        },
    };
    let mut filters = scan.filters.clone();
    filters.extend(extra_filters);
    let mut replaced = scan.clone();
    replaced.source = provider_as_source(Arc::new(source));
    replaced.filters = filters;
    replaced.fetch = None;
    Ok(Some(LogicalPlan::TableScan(replaced)))
}

/// `distance(column, constant)` in either order.
fn ranking(expr: &Expr) -> Option<Ranking> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    let metric = match call.func.name() {
        "l2_distance" => Metric::L2,
        "cosine_distance" => Metric::Cosine,
        "negative_inner_product" => Metric::InnerProduct,
        _ => return None,
    };
    let [left, right] = call.args.as_slice() else {
        return None;
    };
    let (column, constant) = match (left, right) {
        (Expr::Column(c), other) | (other, Expr::Column(c)) => (c.name.clone(), other),
        _ => return None,
    };
    Some(Ranking {
        column,
        metric,
        query: constant_vector(constant)?,
    })
}

/// A constant query vector: text, a vector literal or `to_vector(text)`.
fn constant_vector(expr: &Expr) -> Option<Vec<f32>> {
    match expr {
        Expr::Literal(value, _) => scalar_vector(value),
        Expr::Cast(cast) => constant_vector(&cast.expr),
        Expr::ScalarFunction(call) if call.func.name() == "to_vector" => {
            constant_vector(call.args.first()?)
        }
        _ => None,
    }
}

fn scalar_vector(value: &ScalarValue) -> Option<Vec<f32>> {
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => crate::types::vector::parse_vector(text).ok(),
        ScalarValue::FixedSizeList(list) if list.len() == 1 && list.is_valid(0) => {
            let values =
                arrow_array::cast::AsArray::as_fixed_size_list(list.as_ref() as &dyn Array)
                    .value(0);
            let values =
                datafusion::arrow::compute::cast(&values, &arrow_schema::DataType::Float32).ok()?;
            Some(values.as_primitive::<Float32Type>().values().to_vec())
        }
        _ => None,
    }
}

/// The table as a vector search sees it: every filter is applied before
/// ranking.
#[derive(Debug)]
struct VectorSearchTable {
    table: Arc<dyn TableProvider>,
    qualifier: TableReference,
    query: VectorQuery,
}

#[async_trait]
impl TableProvider for VectorSearchTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(storage) = self.table.downcast_ref::<StorageTable>() else {
            return Err(DataFusionError::Internal(
                "vector search over a non-storage table".into(),
            ));
        };
        let schema = self.table.schema();
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut query = self.query.clone();
        query.projection = wanted.clone();
        let mut filter_columns: Vec<usize> = Vec::new();
        for filter in filters {
            for column in filter.column_refs() {
                let index = schema.index_of(&column.name)?;
                if !filter_columns.contains(&index) {
                    filter_columns.push(index);
                }
            }
        }
        let filter = match conjunction(filters.iter().cloned()) {
            Some(predicate) => {
                let filter_schema = schema.project(&filter_columns)?;
                let df_schema =
                    DFSchema::try_from_qualified_schema(self.qualifier.clone(), &filter_schema)?;
                Some(state.create_physical_expr(predicate, &df_schema)?)
            }
            None => None,
        };
        query.filter_columns = filter_columns;
        let output = Arc::new(schema.project(&wanted)?);
        Ok(Arc::new(VectorSearchExec::new(
            storage.shared().clone(),
            storage.def().name.clone(),
            query,
            filter,
            filters.to_vec(),
            output,
        )))
    }
}

/// Runs one storage vector search and yields its rows.
pub struct VectorSearchExec {
    shared: Arc<SessionShared>,
    table: String,
    query: VectorQuery,
    filter: Option<Arc<dyn PhysicalExpr>>,
    shown_filters: Vec<Expr>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl VectorSearchExec {
    fn new(
        shared: Arc<SessionShared>,
        table: String,
        query: VectorQuery,
        filter: Option<Arc<dyn PhysicalExpr>>,
        shown_filters: Vec<Expr>,
        schema: SchemaRef,
    ) -> VectorSearchExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        VectorSearchExec {
            shared,
            table,
            query,
            filter,
            shown_filters,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    fn search(&self) -> Result<(RecordBatch, VectorSearchStats)> {
        let filter_fn = self.filter.clone().map(|expr| {
            move |batch: &RecordBatch| -> std::result::Result<BooleanArray, String> {
                let value = expr.evaluate(batch).map_err(|e| e.to_string())?;
                let array = value
                    .into_array(batch.num_rows())
                    .map_err(|e| e.to_string())?;
                array
                    .as_boolean_opt()
                    .cloned()
                    .ok_or_else(|| "a WHERE clause must be boolean".to_string())
            }
        });
        let hits = self
            .shared
            .with_reader(|reader| {
                reader.search(
                    &self.table,
                    &self.query,
                    filter_fn
                        .as_ref()
                        .map(|f| f as basalt_storage::RowFilter<'_>),
                )
            })
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let options = RecordBatchOptions::new().with_row_count(Some(hits.batch.num_rows()));
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            hits.batch.columns().to_vec(),
            &options,
        )?;
        Ok((batch, hits.stats))
    }
}

impl fmt::Debug for VectorSearchExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VectorSearchExec({})", self.table)
    }
}

impl DisplayAs for VectorSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let metric = match self.query.metric {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "inner_product",
        };
        write!(
            f,
            "VectorSearchExec: table={}, index=hnsw, column=#{}, metric={metric}, k={}, ef_search={}",
            self.table, self.query.column, self.query.k, self.query.ef_search
        )?;
        if !self.shown_filters.is_empty() {
            let shown: Vec<String> = self.shown_filters.iter().map(ToString::to_string).collect();
            write!(f, ", filters=[{}]", shown.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for VectorSearchExec {
    fn name(&self) -> &'static str {
        "VectorSearchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    leaf_plan_methods!();

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "VectorSearchExec has one partition, not {partition}"
            )));
        }
        let counter = |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, 0);
        let (graph, exact, fallbacks, memory) = (
            counter("graph_segments"),
            counter("exact_segments"),
            counter("fallbacks"),
            counter("memtable_rows"),
        );
        let output = MetricBuilder::new(&self.metrics).output_rows(0);
        let result = self.search().map(|(batch, stats)| {
            graph.add(stats.graph_segments);
            exact.add(stats.exact_segments);
            fallbacks.add(stats.fallbacks);
            memory.add(stats.memory_rows);
            output.add(batch.num_rows());
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(std::iter::once(result)),
        )))
    }
}

/// pgvector's form: the metric as the column's operator class, the rest
/// as `WITH (...)`.
pub(crate) fn shown_hnsw_options(options: &[(String, String)]) -> crate::index::Shown {
    let mut shown = crate::index::Shown {
        column_suffix: None,
        with: Vec::new(),
    };
    for (key, value) in options {
        match key.as_str() {
            "metric" => {
                let class = match value.as_str() {
                    "cosine" => "vector_cosine_ops",
                    "ip" => "vector_ip_ops",
                    _ => "vector_l2_ops",
                };
                shown.column_suffix = Some(class.to_string());
            }
            _ => shown.with.push((key.clone(), value.clone())),
        }
    }
    shown
}

/// `CREATE INDEX [name] ON t USING hnsw (col opclass) WITH (m, ef_construction)`.
pub(crate) fn plan_index(
    create: &ast::CreateIndex,
    target: &IndexTarget,
) -> crate::Result<IndexBuild> {
    use crate::Error;
    if create.unique || create.predicate.is_some() || !create.include.is_empty() {
        return Err(Error::not_supported(
            "UNIQUE, partial or covering hnsw indexes",
        ));
    }
    let [column] = create.columns.as_slice() else {
        return Err(Error::sql(
            "0A000",
            "an hnsw index covers exactly one column",
        ));
    };
    let ast::Expr::Identifier(ident) = &column.column.expr else {
        return Err(Error::not_supported("an hnsw index over an expression"));
    };
    let column_name = normalize(ident);
    let metric = operator_class_metric(column.operator_class.as_ref())?;
    let mut params = basalt_storage::HnswParams::new(metric);
    for option in &create.with {
        apply_index_option(option, &mut params)?;
    }
    if params.ef_construction < 2 * params.m {
        return Err(Error::sql(
            "22023",
            "ef_construction must be greater than or equal to 2 * m",
        ));
    }
    require_column(&target.def, &column_name)?;
    let field = target
        .def
        .schema
        .field_with_name(&column_name)
        .map_err(|e| Error::sql("42703", e.to_string()))?;
    if crate::types::vector::dimensions_of(field.data_type()).is_none() {
        return Err(Error::sql(
            "42804",
            format!("column \"{column_name}\" is not a vector column; hnsw indexes vector(n)"),
        ));
    }
    Ok(IndexBuild {
        table: target.full.clone(),
        name: index_name(create, &target.full, std::slice::from_ref(&column_name)),
        kind: "hnsw",
        columns: vec![column_name],
        options: basalt_storage::hnsw_options(&params),
    })
}

fn operator_class_metric(class: Option<&ast::ObjectName>) -> crate::Result<Metric> {
    let name = class
        .and_then(|c| c.0.last())
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase());
    match name.as_deref() {
        None | Some("vector_l2_ops") => Ok(Metric::L2),
        Some("vector_cosine_ops") => Ok(Metric::Cosine),
        Some("vector_ip_ops") => Ok(Metric::InnerProduct),
        Some(other) => Err(crate::Error::sql(
            "42704",
            format!("operator class \"{other}\" does not exist for access method \"hnsw\""),
        )),
    }
}

/// `m = 16` or `ef_construction = 64`, in pgvector's ranges.
fn apply_index_option(
    option: &ast::Expr,
    params: &mut basalt_storage::HnswParams,
) -> crate::Result<()> {
    use ast::{BinaryOperator, Expr as SqlExpr};
    let SqlExpr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = option
    else {
        return Err(crate::Error::sql(
            "42601",
            format!("invalid index option {option}"),
        ));
    };
    let name = left.to_string().to_ascii_lowercase();
    let value: i64 = right.to_string().trim_matches('\'').parse().map_err(|_| {
        crate::Error::sql(
            "22023",
            format!("invalid value for parameter \"{name}\": {right}"),
        )
    })?;
    let (slot, low, high) = match name.as_str() {
        "m" => (&mut params.m, 2, 100),
        "ef_construction" => (&mut params.ef_construction, 4, 1000),
        other => {
            return Err(crate::Error::sql(
                "22023",
                format!("unrecognized parameter \"{other}\""),
            ))
        }
    };
    if !(low..=high).contains(&value) {
        return Err(crate::Error::sql(
            "22023",
            format!("value {value} out of bounds for option \"{name}\""),
        )
        .with_detail(format!(
            "Valid values are between \"{low}\" and \"{high}\"."
        )));
    }
    *slot = value as usize;
    Ok(())
}
