//! Evaluating the filters hash joins push into a scan, cheaply.
//!
//! A join built per partition pushes `CASE hash(key) % n WHEN 0 THEN t0
//! WHEN 1 THEN t1 ... ELSE e END`: each probe row is tested against the
//! build side of the partition it will be routed to. DataFusion's CASE
//! evaluation copies every column of the batch once per branch and merges
//! the branch results with a generic kernel, which on a lineitem scan cost
//! more than the lookups themselves. Here the filter only ever sees the
//! columns it reads, and a routed CASE is evaluated by bucketing row
//! numbers and scattering each branch's answer back into one mask.
//!
//! A filter that reads one integer column answers the same for every row
//! with the same key, and a join key repeats: each `l_partkey` appears 30
//! times in lineitem. Such a filter's answers are remembered per key in a
//! bitmap ([`KeyMemo`]), so each distinct key is hashed and looked up in
//! the join's table once per scan partition rather than once per row.
//!
//! A join on one integer key whose build keys are known as a bitmap
//! (`build_keys.rs`) is answered from the bitmap instead: the filter then
//! passes exactly the rows whose key is among the build keys, one bit test
//! per row.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Int16Type, Int32Type, Int64Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, BooleanArray, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::DataType;
use datafusion::arrow::array::BooleanBufferBuilder;
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{cast::as_boolean_array, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::physical_expr::{
    is_volatile, snapshot_generation, snapshot_physical_expr,
};
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::PhysicalExpr;

use crate::catalog::build_keys::{BuildKeys, KeySet};

/// A filter pushed into the scan, with its compiled form for the filter's
/// current generation (a join fills its filter in once its build side is
/// done, and the placeholder before that must not be kept).
pub(crate) struct JoinFilter {
    filter: Arc<dyn PhysicalExpr>,
    /// The keys of the join that pushed the filter, when they are known
    /// as a set: testing them answers as the filter does.
    build_keys: Option<BuildKeysUse>,
    compiled: Option<(u64, Compiled)>,
}

impl JoinFilter {
    pub(crate) fn new(
        filter: Arc<dyn PhysicalExpr>,
        build_keys: Option<BuildKeysUse>,
    ) -> JoinFilter {
        JoinFilter {
            filter,
            build_keys,
            compiled: None,
        }
    }

    /// Which rows of `batch` pass; NULL counts as not passing.
    pub(crate) fn mask(&mut self, batch: &RecordBatch) -> Result<BooleanArray> {
        self.with_compiled(|compiled| compiled.mask(&batch.project(&compiled.read)?))
    }

    /// Which of the `selected` rows of `batch` pass; only the columns the
    /// filter reads are copied to test them.
    pub(crate) fn mask_within(
        &mut self,
        batch: &RecordBatch,
        selected: &BooleanArray,
    ) -> Result<BooleanArray> {
        self.with_compiled(|compiled| {
            let chosen = filter_record_batch(&batch.project(&compiled.read)?, selected)?;
            let passes = compiled.mask(&chosen)?;
            let mut within = BooleanBufferBuilder::new(batch.num_rows());
            within.append_n(batch.num_rows(), false);
            scatter(&mut within, selected.values().set_indices(), &passes);
            Ok(BooleanArray::new(within.finish(), None))
        })
    }

    fn with_compiled<R>(&mut self, f: impl FnOnce(&mut Compiled) -> Result<R>) -> Result<R> {
        let generation = snapshot_generation(&self.filter);
        let mut compiled = match self.compiled.take() {
            Some((seen, compiled)) if seen == generation => compiled,
            _ => {
                let keys = self.build_keys.as_ref().and_then(BuildKeysUse::current);
                Compiled::new(snapshot_physical_expr(self.filter.clone())?, keys)?
            }
        };
        let result = f(&mut compiled);
        self.compiled = Some((generation, compiled));
        result
    }
}

/// A join's build keys, and the count of rows tested against them.
pub(crate) struct BuildKeysUse {
    pub(crate) keys: Arc<BuildKeys>,
    pub(crate) rows_tested: Count,
}

impl BuildKeysUse {
    fn current(&self) -> Option<(Arc<KeySet>, Count)> {
        Some((self.keys.current()?, self.rows_tested.clone()))
    }
}

struct Compiled {
    /// The batch columns the filter reads, ascending; the expressions
    /// below address them by position in this list.
    read: Vec<usize>,
    form: Form,
    /// Answers by key, for a deterministic filter of one column; `None`
    /// once keys have turned out not to repeat enough to pay for it.
    memo: Option<KeyMemo>,
}

enum Form {
    Plain(Arc<dyn PhysicalExpr>),
    Routed(RoutedCase),
    /// The join's build keys; `filter` answers for a column that turns
    /// out not to hold integers.
    BuildKeys {
        keys: Arc<KeySet>,
        filter: Arc<dyn PhysicalExpr>,
        rows_tested: Count,
    },
}

impl Compiled {
    fn new(
        filter: Arc<dyn PhysicalExpr>,
        build_keys: Option<(Arc<KeySet>, Count)>,
    ) -> Result<Compiled> {
        let mut read: Vec<usize> = collect_columns(&filter).iter().map(Column::index).collect();
        read.sort_unstable();
        if let Some((keys, rows_tested)) = build_keys.filter(|_| read.len() == 1) {
            let filter = narrowed(filter, &read)?;
            let form = Form::BuildKeys {
                keys,
                filter,
                rows_tested,
            };
            return Ok(Compiled {
                read,
                form,
                memo: None,
            });
        }
        let memo = (read.len() == 1 && !is_volatile(&filter)).then(KeyMemo::default);
        let form = match filter.downcast_ref::<CaseExpr>().and_then(RoutedCase::of) {
            Some(routed) => Form::Routed(routed.narrowed(&read)?),
            None => Form::Plain(narrowed(filter, &read)?),
        };
        Ok(Compiled { read, form, memo })
    }

    /// Which rows of `narrow` (the columns in `read`) pass, from
    /// remembered answers while they pay.
    fn mask(&mut self, narrow: &RecordBatch) -> Result<BooleanArray> {
        let Some(memo) = &mut self.memo else {
            return self.form.mask(narrow);
        };
        let Some(keys) = integer_keys(narrow.column(0).as_ref()) else {
            self.memo = None;
            return self.form.mask(narrow);
        };
        let form = &self.form;
        let mask = memo.mask(&keys, narrow.column(0).nulls(), |rows| {
            let indices = UInt32Array::from(rows.to_vec());
            form.mask(&take_record_batch(narrow, &indices)?)
        })?;
        if !memo.pays() {
            self.memo = None;
        }
        Ok(mask)
    }
}

impl Form {
    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        match self {
            Form::Plain(filter) => boolean(filter.as_ref(), batch),
            Form::Routed(routed) => routed.mask(batch),
            Form::BuildKeys {
                keys,
                filter,
                rows_tested,
            } => {
                let column = batch.column(0);
                let Some(values) = integer_keys(column.as_ref()) else {
                    return boolean(filter.as_ref(), batch);
                };
                rows_tested.add(values.len());
                let found = keys.contains_each(&values, column.nulls());
                Ok(BooleanArray::new(found, None))
            }
        }
    }
}

/// The column's values as `i64`s, for the integer types join keys come
/// in; `None` for other types. NULL slots hold arbitrary values.
pub(crate) fn integer_keys(column: &dyn Array) -> Option<Cow<'_, [i64]>> {
    fn widened<T: ArrowPrimitiveType>(column: &dyn Array) -> Cow<'_, [i64]>
    where
        i64: From<T::Native>,
    {
        let values = column.as_primitive::<T>().values();
        Cow::Owned(values.iter().map(|&v| i64::from(v)).collect())
    }
    Some(match column.data_type() {
        DataType::Int64 => Cow::Borrowed(column.as_primitive::<Int64Type>().values()),
        DataType::Int16 => widened::<Int16Type>(column),
        DataType::Int32 => widened::<Int32Type>(column),
        DataType::UInt16 => widened::<UInt16Type>(column),
        DataType::UInt32 => widened::<UInt32Type>(column),
        DataType::Date32 => widened::<Date32Type>(column),
        _ => return None,
    })
}

/// Remembered answers of a one-column filter, by key: pages of 2^16
/// consecutive keys, each two bitmaps (answered, passed), in a window of
/// pages starting at the first batch's smallest key. Keys outside the
/// window or beyond the page budget are evaluated every time.
#[derive(Default)]
struct KeyMemo {
    first_page: Option<i64>,
    pages: Vec<Option<Box<MemoPage>>>,
    allocated: usize,
    batches: u64,
    /// Rows in the latest batch, and how many of them were evaluated.
    last_batch: (usize, usize),
}

struct MemoPage {
    answered: [u64; PAGE_WORDS],
    passed: [u64; PAGE_WORDS],
}

const PAGE_BITS: u32 = 16;
const PAGE_WORDS: usize = (1 << PAGE_BITS) / 64;

impl KeyMemo {
    /// The window: 2^26 keys.
    const WINDOW_PAGES: usize = 1024;
    /// At most 4 MiB of answers per scan partition.
    const MAX_PAGES: usize = 256;

    /// Which of `keys` pass. `evaluate(rows)` answers for the listed rows:
    /// those whose key is not remembered yet, and NULL keys.
    fn mask(
        &mut self,
        keys: &[i64],
        nulls: Option<&NullBuffer>,
        evaluate: impl FnOnce(&[u32]) -> Result<BooleanArray>,
    ) -> Result<BooleanArray> {
        if self.first_page.is_none() {
            self.first_page = keys.iter().min().map(|&k| k >> PAGE_BITS);
        }
        let mut passes = BooleanBufferBuilder::new(keys.len());
        passes.append_n(keys.len(), false);
        let mut unanswered = Vec::new();
        for (row, &key) in keys.iter().enumerate() {
            let known = match nulls {
                Some(nulls) if nulls.is_null(row) => None,
                _ => self.answer(key),
            };
            match known {
                Some(pass) => passes.set_bit(row, pass),
                None => unanswered.push(row as u32),
            }
        }
        self.batches += 1;
        self.last_batch = (keys.len(), unanswered.len());
        if !unanswered.is_empty() {
            let answers = evaluate(&unanswered)?;
            for (&row, answer) in unanswered.iter().zip(answers.iter()) {
                let pass = answer == Some(true);
                passes.set_bit(row as usize, pass);
                if nulls.is_none_or(|nulls| nulls.is_valid(row as usize)) {
                    self.remember(keys[row as usize], pass);
                }
            }
        }
        Ok(BooleanArray::new(passes.finish(), None))
    }

    /// False once a batch after the first found under a fifth of its keys
    /// remembered: the keys do not repeat across batches (a scan in key
    /// order, or a unique key), and looking them up costs more than it
    /// saves.
    fn pays(&self) -> bool {
        let (rows, evaluated) = self.last_batch;
        self.batches < 2 || (rows - evaluated) * 5 >= rows
    }

    /// The page holding `key` and the key's bit in it.
    fn slot(&self, key: i64) -> Option<(usize, usize)> {
        let page = (key >> PAGE_BITS).checked_sub(self.first_page?)?;
        let page = usize::try_from(page)
            .ok()
            .filter(|&p| p < Self::WINDOW_PAGES)?;
        Some((page, (key & ((1 << PAGE_BITS) - 1)) as usize))
    }

    fn answer(&self, key: i64) -> Option<bool> {
        let (page, bit) = self.slot(key)?;
        let page = self.pages.get(page)?.as_ref()?;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        (page.answered[word] & mask != 0).then_some(page.passed[word] & mask != 0)
    }

    fn remember(&mut self, key: i64, pass: bool) {
        let Some((page, bit)) = self.slot(key) else {
            return;
        };
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
        }
        if self.pages[page].is_none() {
            if self.allocated == Self::MAX_PAGES {
                return;
            }
            self.allocated += 1;
            self.pages[page] = Some(Box::new(MemoPage {
                answered: [0; PAGE_WORDS],
                passed: [0; PAGE_WORDS],
            }));
        }
        if let Some(page) = &mut self.pages[page] {
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            page.answered[word] |= mask;
            if pass {
                page.passed[word] |= mask;
            }
        }
    }
}

/// `expr` addressing the columns of a batch projected to `read`.
fn narrowed(expr: Arc<dyn PhysicalExpr>, read: &[usize]) -> Result<Arc<dyn PhysicalExpr>> {
    let rewritten = expr.transform_up(|expr| match expr.downcast_ref::<Column>() {
        Some(column) => {
            let position = read.binary_search(&column.index()).map_err(|_| {
                DataFusionError::Internal(format!("filter column {column} not collected"))
            })?;
            Ok(Transformed::yes(
                Arc::new(Column::new(column.name(), position)) as Arc<dyn PhysicalExpr>,
            ))
        }
        None => Ok(Transformed::no(expr)),
    })?;
    Ok(rewritten.data)
}

/// `CASE route % partitions WHEN i THEN test_i ... ELSE otherwise END`
/// with literal partition numbers and a literal (or absent) ELSE.
struct RoutedCase {
    route: Arc<dyn PhysicalExpr>,
    partitions: u64,
    /// Per partition, the first branch naming it (later ones never run).
    tests: Vec<Option<Arc<dyn PhysicalExpr>>>,
    otherwise: bool,
}

impl RoutedCase {
    /// Branches beyond this many partitions are left to DataFusion.
    const MAX_PARTITIONS: u64 = 1024;

    fn of(case: &CaseExpr) -> Option<RoutedCase> {
        let modulo = case.expr()?.downcast_ref::<BinaryExpr>()?;
        if *modulo.op() != Operator::Modulo {
            return None;
        }
        let partitions = match literal(modulo.right())? {
            ScalarValue::UInt64(Some(n)) if (1..=Self::MAX_PARTITIONS).contains(n) => *n,
            _ => return None,
        };
        let otherwise = match case.else_expr().map(literal) {
            None => false,
            Some(Some(ScalarValue::Boolean(value))) => value.unwrap_or(false),
            Some(_) => return None,
        };
        let mut tests = vec![None; partitions as usize];
        for (when, then) in case.when_then_expr() {
            let ScalarValue::UInt64(Some(partition)) = literal(when)? else {
                return None;
            };
            // A branch no route reaches never runs.
            if let Some(slot) = tests.get_mut(*partition as usize) {
                slot.get_or_insert_with(|| then.clone());
            }
        }
        Some(RoutedCase {
            route: modulo.left().clone(),
            partitions,
            tests,
            otherwise,
        })
    }

    fn narrowed(self, read: &[usize]) -> Result<RoutedCase> {
        let tests = self
            .tests
            .into_iter()
            .map(|test| test.map(|test| narrowed(test, read)).transpose())
            .collect::<Result<_>>()?;
        Ok(RoutedCase {
            route: narrowed(self.route, read)?,
            tests,
            ..self
        })
    }

    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let routes = self.route.evaluate(batch)?.into_array(rows)?;
        let routes = routes
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataFusionError::Internal("join filter route is not UInt64".into()))?;
        let mut rows_of = vec![Vec::<u32>::new(); self.partitions as usize];
        for (row, route) in routes.iter().enumerate() {
            // A NULL route matches no WHEN.
            if let Some(route) = route {
                rows_of[(route % self.partitions) as usize].push(row as u32);
            }
        }
        let mut passes = BooleanBufferBuilder::new(rows);
        passes.append_n(rows, self.otherwise);
        for (rows, test) in rows_of.into_iter().zip(&self.tests) {
            // Rows of a partition no branch names keep the ELSE value.
            let Some(test) = test else { continue };
            if rows.is_empty() {
                continue;
            }
            let indices = UInt32Array::from(rows);
            let routed = take_record_batch(batch, &indices)?;
            let answers = boolean(test.as_ref(), &routed)?;
            let rows = indices.values().iter().map(|&row| row as usize);
            scatter(&mut passes, rows, &answers);
        }
        Ok(BooleanArray::new(passes.finish(), None))
    }
}

/// Sets the bit of each of `rows` to its answer, NULL read as false.
fn scatter(
    passes: &mut BooleanBufferBuilder,
    rows: impl Iterator<Item = usize>,
    answers: &BooleanArray,
) {
    for (row, answer) in rows.zip(answers.iter()) {
        passes.set_bit(row, answer == Some(true));
    }
}

fn literal(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    expr.downcast_ref::<Literal>().map(Literal::value)
}

fn boolean(expr: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(as_boolean_array(&values)?.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::{col, lit, DynamicFilterPhysicalExpr};

    const ROWS: usize = 5_000;

    type Branches = Vec<(u64, Arc<dyn PhysicalExpr>)>;

    /// key (with NULLs), a text column no filter reads, and route (with NULLs).
    fn batch() -> RecordBatch {
        let mut next = crate::test_rng::xorshift();
        let keys: Int64Array = (0..ROWS)
            .map(|_| match next() % 10 {
                0 => None,
                r => Some((r * 1000 + next() % 1000) as i64),
            })
            .collect();
        let text: StringArray = (0..ROWS).map(|i| Some(format!("row {i}"))).collect();
        let routes: UInt64Array = (0..ROWS)
            .map(|_| (!next().is_multiple_of(20)).then(&mut next))
            .collect();
        let schema = Schema::new(vec![
            Field::new("text", DataType::Utf8, false),
            Field::new("key", DataType::Int64, true),
            Field::new("route", DataType::UInt64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![Arc::new(text), Arc::new(keys), Arc::new(routes)];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn routed_case(
        batch: &RecordBatch,
        partitions: u64,
        branches: &[(u64, Arc<dyn PhysicalExpr>)],
        otherwise: Option<bool>,
    ) -> Arc<dyn PhysicalExpr> {
        let schema = batch.schema();
        let route = Arc::new(BinaryExpr::new(
            col("route", &schema).unwrap(),
            Operator::Modulo,
            lit(ScalarValue::UInt64(Some(partitions))),
        ));
        let when_then = branches
            .iter()
            .map(|(partition, test)| (lit(ScalarValue::UInt64(Some(*partition))), test.clone()))
            .collect();
        Arc::new(CaseExpr::try_new(Some(route), when_then, otherwise.map(lit)).unwrap())
    }

    fn key_between(batch: &RecordBatch, low: i64, high: i64) -> Arc<dyn PhysicalExpr> {
        let key = col("key", &batch.schema()).unwrap();
        let above = Arc::new(BinaryExpr::new(key.clone(), Operator::GtEq, lit(low)));
        let below = Arc::new(BinaryExpr::new(key, Operator::LtEq, lit(high)));
        Arc::new(BinaryExpr::new(above, Operator::And, below))
    }

    /// DataFusion's own evaluation, NULL read as not passing.
    fn expected(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        passes(&boolean(filter.as_ref(), batch).unwrap())
    }

    fn ours(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        passes(&JoinFilter::new(filter.clone(), None).mask(batch).unwrap())
    }

    #[test]
    fn routed_cases_pass_exactly_the_rows_datafusion_passes() {
        let batch = batch();
        let low = key_between(&batch, 1000, 4000);
        let high = key_between(&batch, 3000, 9999);
        let nothing = lit(false);
        let shapes: Vec<(u64, Branches, Option<bool>)> = vec![
            (2, vec![(0, low.clone()), (1, high.clone())], Some(false)),
            (2, vec![(0, low.clone()), (1, high.clone())], None),
            // Partition 2 has no branch: its rows take the ELSE.
            (3, vec![(1, low.clone()), (0, high.clone())], Some(true)),
            (3, vec![(1, low.clone()), (0, high.clone())], Some(false)),
            // The first branch naming a partition wins; one beyond n never runs.
            (
                2,
                vec![(0, low.clone()), (0, high.clone()), (7, nothing)],
                Some(true),
            ),
            (1, vec![(0, high.clone())], Some(false)),
        ];
        for (partitions, branches, otherwise) in shapes {
            let filter = routed_case(&batch, partitions, &branches, otherwise);
            let want = expected(&filter, &batch);
            assert!(want.iter().any(|pass| *pass) && want.iter().any(|pass| !*pass));
            assert_eq!(ours(&filter, &batch), want, "{filter}");
        }
    }

    #[test]
    fn other_filters_are_evaluated_over_only_the_columns_they_read() {
        let batch = batch();
        let filter = key_between(&batch, 2500, 7500);
        assert_eq!(ours(&filter, &batch), expected(&filter, &batch));
        let compiled = Compiled::new(filter, None).unwrap();
        assert_eq!(compiled.read, vec![1]);
    }

    /// A routed filter over the key alone, so that its answers are
    /// remembered per key.
    fn routed_on_key(batch: &RecordBatch) -> Arc<dyn PhysicalExpr> {
        let schema = batch.schema();
        let route = Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
            col("key", &schema).unwrap(),
            DataType::UInt64,
            None,
        ));
        let route = Arc::new(BinaryExpr::new(
            route,
            Operator::Modulo,
            lit(ScalarValue::UInt64(Some(3))),
        ));
        let in_list = datafusion::physical_expr::expressions::in_list(
            col("key", &schema).unwrap(),
            (0..400_i64).map(|k| lit(k * 23 + 1000)).collect(),
            &false,
            &schema,
        )
        .unwrap();
        let when_then = vec![
            (
                lit(ScalarValue::UInt64(Some(0))),
                key_between(batch, 1000, 6000),
            ),
            (lit(ScalarValue::UInt64(Some(1))), in_list),
        ];
        Arc::new(CaseExpr::try_new(Some(route), when_then, Some(lit(true))).unwrap())
    }

    /// A batch of one nullable Int64 column, `key`.
    fn key_batch(keys: Int64Array) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("key", DataType::Int64, true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(keys)]).unwrap()
    }

    /// The rows a mask passes, NULL read as not passing.
    fn passes(mask: &BooleanArray) -> Vec<bool> {
        mask.iter().map(|answer| answer == Some(true)).collect()
    }

    /// Keys from 60 values between 1000 and 6900, a tenth NULL.
    fn repeating_keys() -> RecordBatch {
        let mut next = crate::test_rng::xorshift();
        key_batch(
            (0..ROWS)
                .map(|_| (!next().is_multiple_of(10)).then(|| 1000 + (next() % 60) as i64 * 100))
                .collect(),
        )
    }

    #[test]
    fn remembered_answers_match_datafusion_batch_after_batch() {
        let keys = repeating_keys();
        for filter in [routed_on_key(&keys), key_between(&keys, 2500, 7500)] {
            let mut ours = JoinFilter::new(filter.clone(), None);
            // The same keys come back in later batches, answered from memory.
            for round in 0..3 {
                for start in (0..ROWS).step_by(700) {
                    let slice = keys.slice(start, 700.min(ROWS - start));
                    let mask = ours.mask(&slice).unwrap();
                    let want = expected(&filter, &slice);
                    assert_eq!(passes(&mask), want, "{filter}, round {round}");
                }
            }
            let Some((_, compiled)) = &ours.compiled else {
                panic!("not compiled")
            };
            let memo = compiled
                .memo
                .as_ref()
                .expect("keys repeat, so the memo stays");
            // Only NULL keys (a tenth) are evaluated in the last round.
            let (rows, evaluated) = memo.last_batch;
            assert!(evaluated * 5 < rows, "{evaluated} of {rows}");
        }
        let batch = batch();
        let two_columns = routed_case(&batch, 2, &[(0, key_between(&batch, 0, 5000))], None);
        assert!(Compiled::new(two_columns, None).unwrap().memo.is_none());
    }

    #[test]
    fn keys_in_runs_with_nulls_are_answered_as_datafusion_answers() {
        // Keys in runs of 1 to 4, NULLs inside some runs, as a scan in key
        // order sees a foreign key.
        let mut next = crate::test_rng::xorshift();
        let mut keys = Vec::new();
        let mut key = 0_i64;
        while keys.len() < ROWS {
            key += 1 + (next() % 3) as i64;
            for _ in 0..1 + next() % 4 {
                keys.push((!next().is_multiple_of(15)).then_some(key * 3));
            }
        }
        let batch = key_batch(keys.into_iter().take(ROWS).collect());
        let filter = key_between(&batch, 3000, 9000);
        let mut ours = JoinFilter::new(filter.clone(), None);
        for start in (0..ROWS).step_by(1000) {
            let slice = batch.slice(start, 1000);
            let mask = ours.mask(&slice).unwrap();
            assert_eq!(passes(&mask), expected(&filter, &slice));
        }
    }

    #[test]
    fn within_a_selection_only_selected_rows_that_pass_are_kept() {
        let batch = batch();
        let selected = BooleanArray::from_iter((0..ROWS).map(|i| Some(i % 3 != 1)));
        let shapes = [
            key_between(&batch, 2500, 7500),
            routed_case(
                &batch,
                2,
                &[(0, key_between(&batch, 1000, 4000))],
                Some(true),
            ),
        ];
        for filter in shapes {
            let within = JoinFilter::new(filter.clone(), None)
                .mask_within(&batch, &selected)
                .unwrap();
            let want: Vec<bool> = expected(&filter, &batch)
                .into_iter()
                .zip(selected.values().iter())
                .map(|(pass, chosen)| pass && chosen)
                .collect();
            assert!(want.iter().any(|pass| *pass));
            assert_eq!(passes(&within), want, "{filter}");
        }
    }

    #[test]
    fn keys_that_do_not_repeat_stop_being_remembered() {
        let rows = 300_000;
        let batch = key_batch(Int64Array::from_iter_values(
            (0..rows).map(|k| k * 7 - 500_000),
        ));
        let filter = key_between(&batch, -100_000, 300_000);
        let mut ours = JoinFilter::new(filter.clone(), None);
        let rows = rows as usize;
        for start in (0..rows).step_by(65_536) {
            let slice = batch.slice(start, 65_536.min(rows - start));
            let mask = ours.mask(&slice).unwrap();
            assert_eq!(passes(&mask), expected(&filter, &slice));
        }
        let Some((_, compiled)) = &ours.compiled else {
            panic!("not compiled")
        };
        assert!(compiled.memo.is_none());
    }

    #[test]
    fn a_filter_filled_in_after_the_scan_started_is_compiled_afresh() {
        let batch = batch();
        let key = col("key", &batch.schema()).unwrap();
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![key], lit(true)));
        let mut filter = JoinFilter::new(dynamic.clone(), None);
        let everything = filter.mask(&batch).unwrap();
        assert_eq!(everything.true_count(), ROWS);
        let filled = routed_case(
            &batch,
            2,
            &[(0, key_between(&batch, 1000, 2000))],
            Some(false),
        );
        dynamic.update(filled.clone()).unwrap();
        let some = filter.mask(&batch).unwrap();
        assert_eq!(passes(&some), expected(&filled, &batch));
    }
}
