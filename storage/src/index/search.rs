//! One search entry for every index kind that answers queries of its own
//! (nearest neighbours now; full-text next): [`Snapshot::search`],
//! [`Transaction::search`], generic over the query. The entry gathers what
//! every kind needs — the table's segments, the memtable rows of the
//! snapshot and a transaction's own writes as runs, newest first — and the
//! query's kind does the rest in two steps: corpus-wide statistics over
//! all of that first (BM25 needs document counts and lengths over every
//! segment and the memtables, so a row's score does not depend on which
//! segment holds it), then the search.
//!
//! [`Snapshot::search`]: crate::Snapshot::search
//! [`Transaction::search`]: crate::Transaction::search

use arrow_array::RecordBatch;

use crate::db::TableState;
use crate::error::{Error, Result};
use crate::scan::run_schema_for;
use crate::segment::ChunkCache;
use crate::txn::Pending;
use crate::vector::RowFilter;
use crate::visibility::KeyTest;

/// What a search reads: a table as one snapshot (and transaction) sees it.
pub struct SearchInput<'a> {
    pub(crate) cache: &'a ChunkCache,
    pub(crate) table: &'a TableState,
    pub(crate) seq: u64,
    /// Runs newest first: a transaction's own writes, then memtables.
    pub(crate) memory: Vec<RecordBatch>,
    /// The keys a transaction has written, which hide every stored version.
    pub(crate) pending_keys: Option<KeyTest<'a>>,
    /// Which memory runs hold a transaction's own writes (always visible).
    pub(crate) own_runs: usize,
}

mod sealed {
    /// Only this crate's query types search (each is one index kind's).
    pub trait Sealed {}
}

/// A query one index kind answers.
pub trait IndexSearch: sealed::Sealed {
    /// What the search returns.
    type Hits;
    /// Statistics over the whole input, gathered before any row is scored;
    /// `()` for a kind that needs none.
    type Corpus;
    /// The table columns the query reads, checked against the table.
    fn columns(&self) -> Vec<usize>;
    fn corpus(&self, input: &SearchInput<'_>) -> Result<Self::Corpus>;
    fn search(
        &self,
        input: &SearchInput<'_>,
        corpus: &Self::Corpus,
        filter: Option<RowFilter<'_>>,
    ) -> Result<Self::Hits>;
}

impl sealed::Sealed for crate::vector::VectorQuery {}

/// Runs `query` over `table` as of `seq`, with `pending` (a transaction's
/// own writes) in front.
pub(crate) fn search_in<Q: IndexSearch>(
    cache: &ChunkCache,
    table: &TableState,
    seq: u64,
    pending: Option<&Pending>,
    query: &Q,
    filter: Option<RowFilter<'_>>,
) -> Result<Q::Hits> {
    let n = table.def.schema.fields().len();
    if let Some(c) = query.columns().into_iter().find(|&c| c >= n) {
        return Err(Error::InvalidArgument(format!(
            "column index {c} out of range for table \"{}\"",
            table.def.name
        )));
    }
    let all: Vec<usize> = (0..n).collect();
    let memtables: Vec<_> = table
        .memtables()
        .filter(|m| m.min_seq().is_some_and(|min| min <= seq))
        .collect();
    let mut memory = Vec::new();
    let own = pending.map(|p| p.index());
    if pending.is_some() || !memtables.is_empty() {
        let run_schema = run_schema_for(&table.storage_schema, &all);
        if let Some(p) = pending {
            memory.push(p.to_run(&all, &run_schema)?);
        }
        for m in memtables {
            memory.push(m.to_run(Some(seq), &all, &run_schema)?);
        }
    }
    let hides = |key: &[u8]| own.as_ref().is_some_and(|rows| rows.contains_key(key));
    let input = SearchInput {
        cache,
        table,
        seq,
        memory,
        pending_keys: own.is_some().then_some(&hides as &dyn Fn(&[u8]) -> bool),
        own_runs: usize::from(pending.is_some()),
    };
    let corpus = query.corpus(&input)?;
    query.search(&input, &corpus, filter)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::{sealed, IndexSearch, SearchInput};
    use crate::{Db, Options, Result, RowFilter};

    /// A kind that counts, in its corpus step, the rows every scorer would
    /// need statistics over, and records that the step ran first.
    struct CountRows {
        steps: Cell<Vec<&'static str>>,
    }

    impl sealed::Sealed for CountRows {}

    impl IndexSearch for CountRows {
        type Hits = (usize, usize, usize);
        type Corpus = usize;

        fn columns(&self) -> Vec<usize> {
            vec![0]
        }

        fn corpus(&self, input: &SearchInput<'_>) -> Result<usize> {
            let mut steps = self.steps.take();
            steps.push("corpus");
            self.steps.set(steps);
            let memory: usize = input.memory.iter().map(RecordBatch::num_rows).sum();
            let stored: usize = input
                .table
                .segments()
                .map(|s| s.summary().num_rows as usize)
                .sum();
            Ok(memory + stored)
        }

        fn search(
            &self,
            input: &SearchInput<'_>,
            corpus: &usize,
            _filter: Option<RowFilter<'_>>,
        ) -> Result<(usize, usize, usize)> {
            let mut steps = self.steps.take();
            steps.push("search");
            self.steps.set(steps);
            Ok((*corpus, input.memory.len(), input.own_runs))
        }
    }

    fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids))]).unwrap()
    }

    /// The corpus step sees every row of the snapshot, in segments, in
    /// memtables and a transaction's own writes, before the search runs.
    #[test]
    fn the_corpus_step_sees_segments_memtables_and_own_writes_first() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            background_work: false,
            ..Options::default()
        };
        let db = Db::open(dir.path(), options).unwrap();
        db.create_table("t", rows(0..1).schema(), &["id"]).unwrap();
        let mut txn = db.begin();
        txn.put("t", &rows(0..10)).unwrap();
        txn.commit().unwrap();
        db.flush().unwrap();
        let mut txn = db.begin();
        txn.put("t", &rows(10..13)).unwrap();
        txn.commit().unwrap();
        let query = CountRows {
            steps: Cell::new(Vec::new()),
        };
        assert_eq!(db.snapshot().search("t", &query, None).unwrap(), (13, 1, 0));
        assert_eq!(query.steps.take(), ["corpus", "search"]);
        let mut txn = db.begin();
        txn.put("t", &rows(13..15)).unwrap();
        assert_eq!(txn.search("t", &query, None).unwrap(), (15, 2, 1));
        let out_of_range = CountRowsOf(7);
        let err = db.snapshot().search("t", &out_of_range, None).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    /// A query naming a column the table does not have.
    struct CountRowsOf(usize);

    impl sealed::Sealed for CountRowsOf {}

    impl IndexSearch for CountRowsOf {
        type Hits = ();
        type Corpus = ();

        fn columns(&self) -> Vec<usize> {
            vec![self.0]
        }

        fn corpus(&self, _input: &SearchInput<'_>) -> Result<()> {
            unreachable!("the columns are checked first")
        }

        fn search(
            &self,
            _input: &SearchInput<'_>,
            _corpus: &(),
            _filter: Option<RowFilter<'_>>,
        ) -> Result<()> {
            unreachable!("the columns are checked first")
        }
    }
}
