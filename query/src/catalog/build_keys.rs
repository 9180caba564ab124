//! A hash join's build keys as a bitmap, for the scans below its probe side.
//!
//! A hash join on one integer key pushes `key BETWEEN min AND max AND
//! hash_lookup(key)` into the scan of its probe side, and the lookup is a
//! probe of the join's hash table per row: with 227,000 orders built in
//! TPC-H q05, each of lineitem's 6M rows missed the cache in a 4 MB
//! table. The keys themselves are not reachable from the filter, so a
//! pass-through node under the join's build side ([`BuildKeysExec`])
//! notes them as they stream by and, at the end of the build input, sets
//! one bit per key over their range ([`KeySet`]). The scan then tests a
//! bit instead of probing the table. The bitmap holds exactly the build
//! keys, so it passes exactly the rows the lookup passes.
//!
//! Two rules place it (`crate::optimizer::build_keys`): `CollectBuildKeys` wraps build sides before
//! DataFusion pushes its dynamic filters down (a join's keys are final by
//! then), and `LinkBuildKeys`, after, tells each scan which join filter
//! each bitmap answers for, by the filter's expression id.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use arrow_array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;

use crate::catalog::join_filter::integer_keys;

/// The keys one join's build side produced, once every partition of it
/// has produced them all, and the id of the join's dynamic filter they
/// answer for.
#[derive(Debug)]
pub(crate) struct BuildKeys {
    pub(crate) filter_id: OnceLock<u64>,
    partitions: usize,
    run: Mutex<Run>,
}

/// One execution of the build side.
#[derive(Debug, Default)]
struct Run {
    finished: Vec<usize>,
    seen: Vec<ArrayRef>,
    keys: Option<Arc<KeySet>>,
}

impl BuildKeys {
    pub(crate) fn new(partitions: usize) -> BuildKeys {
        BuildKeys {
            filter_id: OnceLock::new(),
            partitions,
            run: Mutex::default(),
        }
    }

    /// Whether these are the keys of the join that pushed `filter`.
    pub(crate) fn answer_for(&self, filter: &Arc<dyn PhysicalExpr>) -> bool {
        filter
            .expression_id()
            .is_some_and(|id| self.filter_id.get() == Some(&id))
    }

    /// The complete set, once every partition's build input has ended;
    /// `None` before, or when the keys were too sparse for a bitmap.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.run.lock().keys.clone()
    }

    /// A partition starts; one that already finished starts a new run,
    /// whose scans must not see the last run's keys.
    fn start(&self, partition: usize) {
        let mut run = self.run.lock();
        if run.finished.contains(&partition) {
            *run = Run::default();
        }
    }

    /// A partition's build input ended with these key columns; the last
    /// partition to end publishes the set.
    fn finish(&self, partition: usize, seen: Vec<ArrayRef>) {
        let mut run = self.run.lock();
        if run.finished.contains(&partition) {
            return;
        }
        run.finished.push(partition);
        run.seen.extend(seen);
        if run.finished.len() == self.partitions {
            let seen = std::mem::take(&mut run.seen);
            run.keys = KeySet::of(&seen).map(Arc::new);
        }
    }
}

/// One bit per key in `base ..= base + bits - 1`.
#[derive(Debug)]
pub(crate) struct KeySet {
    base: i64,
    bits: u64,
    words: Vec<u64>,
}

impl KeySet {
    /// At most 8 MiB of bitmap.
    const MAX_BITS: u64 = 1 << 26;
    /// Bits allowed per build row beyond a floor: 256 bits is 32 bytes,
    /// under what the join's hash table holds per row (about 40 bytes for
    /// an integer key), so the bitmap is never the bigger one.
    const BITS_PER_KEY: u64 = 256;
    const FLOOR_BITS: u64 = 1 << 16;

    /// The set of the non-null values of `columns`; `None` when a column
    /// is not of an integer type or the keys spread too thin for a bitmap.
    fn of(columns: &[ArrayRef]) -> Option<KeySet> {
        let mut range: Option<(i64, i64)> = None;
        let mut count = 0u64;
        for_each_key(columns, |key| {
            count += 1;
            range = Some(match range {
                Some((low, high)) => (low.min(key), high.max(key)),
                None => (key, key),
            });
        })?;
        let (base, high) = range.unwrap_or((0, -1));
        let bits = u64::try_from(i128::from(high) - i128::from(base) + 1).ok()?;
        let budget = Self::MAX_BITS.min(Self::FLOOR_BITS + count * Self::BITS_PER_KEY);
        if bits > budget {
            return None;
        }
        let mut words = vec![0u64; bits.div_ceil(64) as usize];
        for_each_key(columns, |key| {
            let offset = key.wrapping_sub(base) as u64;
            words[(offset / 64) as usize] |= 1 << (offset % 64);
        })?;
        Some(KeySet { base, bits, words })
    }

    /// Which of `keys` are in the set; rows that `nulls` marks NULL are not.
    pub(crate) fn contains_each(&self, keys: &[i64], nulls: Option<&NullBuffer>) -> BooleanBuffer {
        let found = BooleanBuffer::collect_bool(keys.len(), |row| {
            let offset = keys[row].wrapping_sub(self.base) as u64;
            offset < self.bits && self.words[(offset / 64) as usize] >> (offset % 64) & 1 == 1
        });
        match nulls {
            Some(nulls) => &found & nulls.inner(),
            None => found,
        }
    }
}

/// Calls `f` with each non-null value of `columns` as an `i64`; `None`
/// when a column is not of an integer type.
fn for_each_key(columns: &[ArrayRef], mut f: impl FnMut(i64)) -> Option<()> {
    for column in columns {
        let keys = integer_keys(column.as_ref())?;
        match column.nulls() {
            Some(nulls) => nulls.valid_indices().for_each(|row| f(keys[row])),
            None => keys.iter().for_each(|&key| f(key)),
        }
    }
    Some(())
}

/// Passes its input through and publishes the set of column `key`'s values
/// when the input ends.
#[derive(Debug)]
pub(crate) struct BuildKeysExec {
    pub(crate) input: Arc<dyn ExecutionPlan>,
    pub(crate) key: usize,
    pub(crate) keys: Arc<BuildKeys>,
}

impl DisplayAs for BuildKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let name = self.input.schema().field(self.key).name().clone();
        write!(f, "BuildKeysExec: key={name}@{}", self.key)
    }
}

impl ExecutionPlan for BuildKeysExec {
    fn name(&self) -> &'static str {
        "BuildKeysExec"
    }

    pass_through_plan_methods!(|plan, input| BuildKeysExec {
        input,
        key: plan.key,
        keys: plan.keys.clone(),
    });

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.keys.start(partition);
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(NoteKeys {
            input,
            partition,
            key: self.key,
            seen: Vec::new(),
            keys: self.keys.clone(),
        }))
    }
}

struct NoteKeys {
    input: SendableRecordBatchStream,
    partition: usize,
    key: usize,
    seen: Vec<ArrayRef>,
    keys: Arc<BuildKeys>,
}

impl Stream for NoteKeys {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                let column = batch.column(self.key).clone();
                self.seen.push(column);
            }
            Poll::Ready(None) => {
                let seen = std::mem::take(&mut self.seen);
                self.keys.finish(self.partition, seen);
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for NoteKeys {
    fn schema(&self) -> arrow_schema::SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;

    use super::*;

    fn int64s(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn a_key_set_answers_as_a_set_of_the_non_null_keys_does() {
        let mut next = crate::test_rng::xorshift();
        let mut random_keys = |count: usize| -> Vec<Option<i64>> {
            (0..count)
                .map(|_| {
                    let r = next();
                    (!r.is_multiple_of(13)).then_some((r % 20_000) as i64 - 10_000)
                })
                .collect()
        };
        let build = [int64s(&random_keys(3_000)), int64s(&random_keys(2_000))];
        let model: HashSet<i64> = build
            .iter()
            .flat_map(|column| column.as_any().downcast_ref::<Int64Array>().unwrap().iter())
            .flatten()
            .collect();
        let set = KeySet::of(&build).expect("a dense range makes a set");

        let mut probe = random_keys(10_000);
        probe.extend([Some(i64::MIN), Some(i64::MAX), Some(-10_001), Some(10_000)]);
        let probe_column = Int64Array::from(probe.clone());
        let found = set.contains_each(probe_column.values(), probe_column.nulls());
        for (row, key) in probe.iter().enumerate() {
            let expected = key.is_some_and(|key| model.contains(&key));
            assert_eq!(found.value(row), expected, "row {row}, key {key:?}");
        }
    }

    #[test]
    fn keys_too_sparse_or_not_integers_make_no_set() {
        let sparse = int64s(&[Some(0), Some(1 << 40)]);
        assert!(KeySet::of(&[sparse]).is_none());
        let extremes = int64s(&[Some(i64::MIN), Some(i64::MAX)]);
        assert!(KeySet::of(&[extremes]).is_none());
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        assert!(KeySet::of(&[text]).is_none());

        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![Some(-3), None, Some(60_000)]));
        let set = KeySet::of(&[narrow]).expect("60,004 bits is within the floor");
        let probe = [-4, -3, 0, 60_000, 60_001];
        let found = set.contains_each(&probe, None);
        let found: Vec<bool> = (0..probe.len()).map(|row| found.value(row)).collect();
        assert_eq!(found, [false, true, false, true, false]);

        let nothing = KeySet::of(&[int64s(&[None])]).expect("no keys make an empty set");
        assert!(!nothing.contains_each(&[0], None).value(0));
    }

    #[tokio::test]
    async fn keys_are_published_only_once_the_build_input_has_ended() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let batch = |keys: &[Option<i64>]| {
            RecordBatch::try_new(schema.clone(), vec![int64s(keys)]).unwrap()
        };
        let batches = vec![batch(&[Some(5), None]), batch(&[Some(9)])];
        let input = MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None).unwrap();
        let keys = Arc::new(BuildKeys::new(1));
        let exec = BuildKeysExec {
            input,
            key: 0,
            keys: keys.clone(),
        };
        let mut stream = exec.execute(0, Arc::new(TaskContext::default())).unwrap();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            assert!(keys.current().is_none(), "published before the input ended");
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, 3);
        let set = keys.current().expect("published at the end");
        let found = set.contains_each(&[4, 5, 9, 10], None);
        let found: Vec<bool> = (0..4).map(|row| found.value(row)).collect();
        assert_eq!(found, [false, true, true, false]);

        // Running the plan again forgets the last run's keys until its own end.
        let _again = exec.execute(0, Arc::new(TaskContext::default())).unwrap();
        assert!(keys.current().is_none());
    }

    #[test]
    fn a_partitioned_build_publishes_once_every_partition_has_ended() {
        let keys = BuildKeys::new(3);
        keys.start(0);
        keys.start(1);
        keys.finish(1, vec![int64s(&[Some(10)])]);
        keys.start(2);
        keys.finish(0, vec![int64s(&[Some(3)])]);
        // A partition reporting twice in one run does not count twice.
        keys.finish(0, vec![int64s(&[Some(4)])]);
        assert!(keys.current().is_none());
        keys.finish(2, vec![int64s(&[Some(7), None])]);
        let set = keys.current().expect("every partition ended");
        let found = set.contains_each(&[3, 4, 7, 10, 11], None);
        let found: Vec<bool> = (0..5).map(|row| found.value(row)).collect();
        assert_eq!(found, [true, false, true, true, false]);

        // A finished partition starting again begins a new run.
        keys.start(1);
        assert!(keys.current().is_none());
        keys.finish(1, vec![int64s(&[Some(1)])]);
        assert!(keys.current().is_none());
    }
}
