//! Exact evaluation of a scan's pushed-down predicates over decoded columns.
//!
//! Comparisons with constants on one integer, date, timestamp or decimal
//! column are merged into a single range `lo..=hi` and tested as one
//! unsigned comparison, `(v - lo) <= (hi - lo)` in wrapping arithmetic, which
//! holds exactly for the values inside the range. While many rows are still
//! selected, tests run over whole columns, 64 rows to a word. Once under a quarter remain (TPC-H's date ranges keep
//! a seventh), the survivors become a list of row numbers and each later
//! test looks at only those rows, compacting the list without branches.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Date64Type, Decimal128Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, BooleanArray, Datum};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow_schema::{DataType, TimeUnit};
use basalt_formats::scalar::Scalar;

use crate::error::{Error, Result};
use crate::scan::{Predicate, PredicateOp};

/// Below one selected row in this many, later tests visit only the
/// selected rows.
const SPARSE: usize = 4;

/// Rows satisfying every predicate; `None` when there are no predicates.
/// `column(i)` gives the decoded column of table column `needed[i]`.
pub(crate) fn predicate_mask(
    predicates: &[Predicate],
    needed: &[usize],
    column: &dyn Fn(usize) -> Result<ArrayRef>,
) -> Result<Option<BooleanArray>> {
    if predicates.is_empty() {
        return Ok(None);
    }
    let tests = plan_tests(predicates, needed, column)?;
    let rows = tests.first().map_or(0, |t| t.values().len());
    let mut selection = Selection::All;
    for test in &tests {
        selection = test.narrow(selection, rows)?;
        if selection.is_empty() {
            break;
        }
    }
    Ok(Some(selection.into_mask(rows)))
}

/// The predicates as tests, cheapest first: one range per orderable column,
/// then other tests on fixed-width columns, then text.
fn plan_tests(
    predicates: &[Predicate],
    needed: &[usize],
    column: &dyn Fn(usize) -> Result<ArrayRef>,
) -> Result<Vec<Test>> {
    let mut ranges: Vec<(usize, ArrayRef, Bounds)> = Vec::new();
    let mut others: Vec<Test> = Vec::new();
    for predicate in predicates {
        let position = needed
            .iter()
            .position(|&c| c == predicate.column)
            .ok_or_else(|| Error::InvalidArgument("predicate column not decoded".into()))?;
        let values = column(position)?;
        let Some(bound) = Bound::of(&predicate.op, values.data_type()) else {
            others.push(Test::Other(values, predicate.op.clone()));
            continue;
        };
        match ranges.iter_mut().find(|(p, _, _)| *p == position) {
            Some((_, _, bounds)) => bounds.tighten(bound),
            None => {
                let mut bounds = Bounds::everything(values.data_type());
                bounds.tighten(bound);
                ranges.push((position, values, bounds));
            }
        }
    }
    let mut tests = Vec::with_capacity(ranges.len() + others.len());
    for (_, values, bounds) in ranges {
        if bounds.is_empty() {
            return Ok(vec![Test::Never(values)]);
        }
        tests.push(Test::Range(values, bounds));
    }
    // Fixed-width comparisons before text: the rows they drop are then
    // never compared as text.
    others.sort_by_key(|t| !t.values().data_type().is_primitive());
    tests.extend(others);
    Ok(tests)
}

/// One side of a range, in the column's native integer domain (decimals
/// unscaled).
enum Bound {
    AtLeast(i128),
    AtMost(i128),
    Exactly(i128),
    /// `< MIN` or `> MAX`.
    Nothing,
}

impl Bound {
    /// The bound `op` sets, for comparisons a range test can answer.
    fn of(op: &PredicateOp, data_type: &DataType) -> Option<Bound> {
        let (PredicateOp::Eq(c)
        | PredicateOp::Lt(c)
        | PredicateOp::LtEq(c)
        | PredicateOp::Gt(c)
        | PredicateOp::GtEq(c)) = op
        else {
            return None;
        };
        let constant = match (c, range_domain(data_type)?) {
            (Scalar::Int(v), Domain::Integer) => i128::from(*v),
            (Scalar::Decimal(v), Domain::Decimal) => *v,
            _ => return None,
        };
        Some(match op {
            PredicateOp::Eq(_) => Bound::Exactly(constant),
            PredicateOp::LtEq(_) => Bound::AtMost(constant),
            PredicateOp::GtEq(_) => Bound::AtLeast(constant),
            PredicateOp::Lt(_) => constant
                .checked_sub(1)
                .map_or(Bound::Nothing, Bound::AtMost),
            _ => constant
                .checked_add(1)
                .map_or(Bound::Nothing, Bound::AtLeast),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Domain {
    Integer,
    Decimal,
}

fn range_domain(data_type: &DataType) -> Option<Domain> {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..) => Some(Domain::Integer),
        DataType::Decimal128(..) => Some(Domain::Decimal),
        _ => None,
    }
}

/// An inclusive range `lo..=hi`; empty when `lo > hi`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: i128,
    hi: i128,
}

impl Bounds {
    fn everything(data_type: &DataType) -> Bounds {
        match range_domain(data_type) {
            Some(Domain::Integer) => Bounds {
                lo: i128::from(i64::MIN),
                hi: i128::from(i64::MAX),
            },
            _ => Bounds {
                lo: i128::MIN,
                hi: i128::MAX,
            },
        }
    }

    fn tighten(&mut self, bound: Bound) {
        match bound {
            Bound::AtLeast(v) => self.lo = self.lo.max(v),
            Bound::AtMost(v) => self.hi = self.hi.min(v),
            Bound::Exactly(v) => {
                self.lo = self.lo.max(v);
                self.hi = self.hi.min(v);
            }
            Bound::Nothing => {
                self.lo = 1;
                self.hi = 0;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }
}

enum Test {
    Range(ArrayRef, Bounds),
    /// A column whose bounds no value meets.
    Never(ArrayRef),
    Other(ArrayRef, PredicateOp),
}

impl Test {
    fn values(&self) -> &ArrayRef {
        match self {
            Test::Range(values, _) | Test::Never(values) | Test::Other(values, _) => values,
        }
    }

    /// The rows of `selection` that also pass this test.
    fn narrow(&self, selection: Selection, rows: usize) -> Result<Selection> {
        let selection = match selection {
            Selection::Bits(bits) if bits.count_set_bits() * SPARSE <= rows => {
                match u32::try_from(rows) {
                    Ok(_) => Selection::Rows(bits.set_indices().map(|r| r as u32).collect()),
                    Err(_) => Selection::Bits(bits),
                }
            }
            other => other,
        };
        match (self, selection) {
            (Test::Never(_), _) => Ok(Selection::Rows(Vec::new())),
            (Test::Range(values, bounds), Selection::Rows(mut rows)) => {
                keep_in_range(&mut rows, values, *bounds);
                Ok(Selection::Rows(rows))
            }
            (Test::Range(values, bounds), selection) => {
                let passing = dense_in_range(values, *bounds);
                Ok(Selection::Bits(selection.and(passing)))
            }
            (Test::Other(values, op), Selection::Rows(mut rows)) => {
                keep_passing(&mut rows, values, op)?;
                Ok(Selection::Rows(rows))
            }
            (Test::Other(values, op), selection) => {
                let passing = evaluate(values, op)?;
                Ok(Selection::Bits(selection.and(passing.values().clone())))
            }
        }
    }
}

/// The rows still selected: all, a bitmap, or (when few) their numbers in
/// ascending order.
enum Selection {
    All,
    Bits(BooleanBuffer),
    Rows(Vec<u32>),
}

impl Selection {
    fn is_empty(&self) -> bool {
        match self {
            Selection::All => false,
            Selection::Bits(bits) => bits.count_set_bits() == 0,
            Selection::Rows(rows) => rows.is_empty(),
        }
    }

    /// `self` and `passing`, for a selection that is not a row list.
    fn and(self, passing: BooleanBuffer) -> BooleanBuffer {
        match self {
            Selection::Bits(bits) => &bits & &passing,
            _ => passing,
        }
    }

    fn into_mask(self, rows: usize) -> BooleanArray {
        let bits = match self {
            Selection::All => BooleanBuffer::new_set(rows),
            Selection::Bits(bits) => bits,
            Selection::Rows(selected) => {
                let mut words = vec![0u64; rows.div_ceil(64)];
                for row in selected {
                    let row = row as usize;
                    words[row / 64] |= 1 << (row % 64);
                }
                BooleanBuffer::new(Buffer::from_vec(words), 0, rows)
            }
        };
        BooleanArray::new(bits, None)
    }
}

/// Calls `$body` with `$values` as the column's native slice and `$widen`
/// turning a native value into an `i128`, for each type a range covers.
macro_rules! with_native {
    ($array:expr, |$values:ident, $widen:ident| $body:expr) => {{
        let array: &ArrayRef = $array;
        match array.data_type() {
            DataType::Int8 => with_native!(@one array, Int8Type, $values, $widen, $body),
            DataType::Int16 => with_native!(@one array, Int16Type, $values, $widen, $body),
            DataType::Int32 => with_native!(@one array, Int32Type, $values, $widen, $body),
            DataType::Int64 => with_native!(@one array, Int64Type, $values, $widen, $body),
            DataType::Date32 => with_native!(@one array, Date32Type, $values, $widen, $body),
            DataType::Date64 => with_native!(@one array, Date64Type, $values, $widen, $body),
            DataType::Timestamp(TimeUnit::Second, _) => {
                with_native!(@one array, TimestampSecondType, $values, $widen, $body)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                with_native!(@one array, TimestampMillisecondType, $values, $widen, $body)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                with_native!(@one array, TimestampMicrosecondType, $values, $widen, $body)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                with_native!(@one array, TimestampNanosecondType, $values, $widen, $body)
            }
            _ => with_native!(@one array, Decimal128Type, $values, $widen, $body),
        }
    }};
    (@one $array:ident, $t:ty, $values:ident, $widen:ident, $body:expr) => {{
        let $values: &[<$t as ArrowPrimitiveType>::Native] = $array.as_primitive::<$t>().values();
        let $widen = |v: <$t as ArrowPrimitiveType>::Native| i128::from(v);
        $body
    }};
}

/// Whether `v` lies in `lo..=hi`, as one comparison: below `lo` the
/// wrapping difference is larger than any in-range one.
#[inline(always)]
fn inside(v: i128, lo: i128, span: u128) -> bool {
    (v.wrapping_sub(lo) as u128) <= span
}

/// Narrower forms of [`inside`] for values that fit an `i64`, which is
/// what lets the comparison vectorise.
#[inline(always)]
fn inside_i64(v: i64, lo: i64, span: u64) -> bool {
    (v.wrapping_sub(lo) as u64) <= span
}

/// Every row of `values` in `bounds`, as a bitmap (nulls never pass).
fn dense_in_range(values: &ArrayRef, bounds: Bounds) -> BooleanBuffer {
    let span = bounds.hi.wrapping_sub(bounds.lo) as u128;
    let bits = match (i64::try_from(bounds.lo), u64::try_from(span)) {
        (Ok(lo), Ok(span)) if range_domain(values.data_type()) == Some(Domain::Integer) => {
            with_native!(values, |native, widen| {
                BooleanBuffer::collect_bool(native.len(), |row| {
                    inside_i64(widen(native[row]) as i64, lo, span)
                })
            })
        }
        _ => with_native!(values, |native, widen| {
            BooleanBuffer::collect_bool(native.len(), |row| {
                inside(widen(native[row]), bounds.lo, span)
            })
        }),
    };
    match values.nulls() {
        Some(nulls) => &bits & nulls.inner(),
        None => bits,
    }
}

/// Drops from `rows` those whose value is null or outside `bounds`.
fn keep_in_range(rows: &mut Vec<u32>, values: &ArrayRef, bounds: Bounds) {
    let span = bounds.hi.wrapping_sub(bounds.lo) as u128;
    let nulls = values.nulls();
    with_native!(values, |native, widen| keep_rows(rows, nulls, |row| {
        inside(widen(native[row]), bounds.lo, span)
    }))
}

/// Drops from `rows` those that are null or fail `test`, without a branch
/// per row: every row is written, and the write position only advances
/// past the ones that pass.
fn keep_rows(rows: &mut Vec<u32>, nulls: Option<&NullBuffer>, test: impl Fn(usize) -> bool) {
    let mut kept = 0;
    match nulls {
        None => {
            for i in 0..rows.len() {
                let row = rows[i];
                rows[kept] = row;
                kept += usize::from(test(row as usize));
            }
        }
        Some(nulls) => {
            for i in 0..rows.len() {
                let row = rows[i];
                rows[kept] = row;
                let row = row as usize;
                kept += usize::from(nulls.is_valid(row) && test(row));
            }
        }
    }
    rows.truncate(kept);
}

/// [`keep_rows`] for a test other than a range: text `=` and `IN` look at
/// only the listed rows; anything else is evaluated over the column.
fn keep_passing(rows: &mut Vec<u32>, values: &ArrayRef, op: &PredicateOp) -> Result<()> {
    if let (DataType::Utf8, Some(wanted)) = (values.data_type(), wanted_texts(op)) {
        let text = values.as_string::<i32>();
        keep_rows(rows, values.nulls(), |row| {
            wanted.contains(&text.value(row).as_bytes())
        });
        return Ok(());
    }
    let passing = evaluate(values, op)?;
    let passing = passing.values();
    keep_rows(rows, None, |row| passing.value(row));
    Ok(())
}

/// The texts an `=` or `IN` accepts.
fn wanted_texts(op: &PredicateOp) -> Option<Vec<&[u8]>> {
    fn bytes(v: &Scalar) -> Option<&[u8]> {
        match v {
            Scalar::Bytes(b) => Some(b),
            _ => None,
        }
    }
    match op {
        PredicateOp::Eq(v) => Some(vec![bytes(v)?]),
        PredicateOp::In(vs) => vs.iter().map(bytes).collect(),
        _ => None,
    }
}

/// `op` over every row of `column`, by Arrow's kernels; null rows are false.
fn evaluate(column: &ArrayRef, op: &PredicateOp) -> Result<BooleanArray> {
    let scalar = |v: &Scalar| -> Result<arrow_array::Scalar<ArrayRef>> {
        Ok(arrow_array::Scalar::new(
            v.to_array(column.data_type())
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
        ))
    };
    let col: &dyn Datum = column;
    let result = match op {
        PredicateOp::Eq(v) => arrow_ord::cmp::eq(col, &scalar(v)?)?,
        PredicateOp::Lt(v) => arrow_ord::cmp::lt(col, &scalar(v)?)?,
        PredicateOp::LtEq(v) => arrow_ord::cmp::lt_eq(col, &scalar(v)?)?,
        PredicateOp::Gt(v) => arrow_ord::cmp::gt(col, &scalar(v)?)?,
        PredicateOp::GtEq(v) => arrow_ord::cmp::gt_eq(col, &scalar(v)?)?,
        PredicateOp::IsNull => arrow_arith::boolean::is_null(column.as_ref())?,
        PredicateOp::IsNotNull => arrow_arith::boolean::is_not_null(column.as_ref())?,
        PredicateOp::In(values) => {
            let mut acc = BooleanArray::from(vec![false; column.len()]);
            for v in values {
                acc = arrow_arith::boolean::or(&acc, &arrow_ord::cmp::eq(col, &scalar(v)?)?)?;
            }
            acc
        }
    };
    // SQL semantics: a comparison with a null value does not match.
    Ok(match result.nulls() {
        Some(nulls) => BooleanArray::new(result.values() & nulls.inner(), None),
        None => result,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        Date32Array, Decimal128Array, Int16Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Values from -100 to 99, one in nine null.
    fn numbers(rng: &mut StdRng, rows: usize) -> Vec<Option<i64>> {
        (0..rows)
            .map(|_| (rng.gen_range(0..9) != 0).then(|| rng.gen_range(-100..100)))
            .collect()
    }

    /// One column of each type a range covers, and text, over `numbers`.
    fn columns(n: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![
            Arc::new(Int16Array::from_iter(n.iter().map(|v| v.map(|v| v as i16)))),
            Arc::new(Int32Array::from_iter(n.iter().map(|v| v.map(|v| v as i32)))),
            Arc::new(Int64Array::from_iter(n.iter().copied())),
            Arc::new(Date32Array::from_iter(
                n.iter().map(|v| v.map(|v| v as i32)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter(n.iter().copied())),
            Arc::new(
                Decimal128Array::from_iter(n.iter().map(|v| v.map(|v| v as i128 * 100)))
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from_iter(
                n.iter().map(|v| v.map(|v| format!("{}", v % 20))),
            )),
        ]
    }

    fn random_op(rng: &mut StdRng, data_type: &DataType) -> PredicateOp {
        if *data_type == DataType::Utf8 {
            let text = |rng: &mut StdRng| Scalar::Bytes(rng.gen_range(-20..20).to_string().into());
            return match rng.gen_range(0..4) {
                0 => PredicateOp::Eq(text(rng)),
                1 => PredicateOp::In(vec![text(rng), text(rng), text(rng)]),
                2 => PredicateOp::IsNull,
                _ => PredicateOp::IsNotNull,
            };
        }
        let v: i64 = match rng.gen_range(0..10) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 1 << 40,
            _ => rng.gen_range(-110..110),
        };
        let constant = match data_type {
            DataType::Decimal128(..) => Scalar::Decimal(i128::from(v) * 100),
            _ => Scalar::Int(v),
        };
        match rng.gen_range(0..7) {
            0 => PredicateOp::Eq(constant),
            1 => PredicateOp::Lt(constant),
            2 => PredicateOp::LtEq(constant),
            3 => PredicateOp::Gt(constant),
            4 => PredicateOp::GtEq(constant),
            5 => PredicateOp::IsNull,
            _ => PredicateOp::IsNotNull,
        }
    }

    /// What `op` says of one row, computed the obvious way.
    fn model(value: Option<i64>, data_type: &DataType, op: &PredicateOp) -> bool {
        let Some(v) = value else {
            return matches!(op, PredicateOp::IsNull);
        };
        let row = match data_type {
            DataType::Utf8 => Scalar::Bytes((v % 20).to_string().into()),
            DataType::Decimal128(..) => Scalar::Decimal(i128::from(v) * 100),
            _ => Scalar::Int(v),
        };
        let order = |c: &Scalar| row.partial_cmp_same(c);
        use std::cmp::Ordering::*;
        match op {
            PredicateOp::Eq(c) => order(c) == Some(Equal),
            PredicateOp::Lt(c) => order(c) == Some(Less),
            PredicateOp::LtEq(c) => matches!(order(c), Some(Less | Equal)),
            PredicateOp::Gt(c) => order(c) == Some(Greater),
            PredicateOp::GtEq(c) => matches!(order(c), Some(Greater | Equal)),
            PredicateOp::IsNull => false,
            PredicateOp::IsNotNull => true,
            PredicateOp::In(cs) => cs.iter().any(|c| order(c) == Some(Equal)),
        }
    }

    #[test]
    fn masks_match_a_row_by_row_model() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..1200 {
            // Sizes around word boundaries, and a large one.
            let rows = [1, 63, 64, 65, 1000, 5000][case % 6];
            let data: Vec<Vec<Option<i64>>> = (0..3).map(|_| numbers(&mut rng, rows)).collect();
            let all: Vec<(Vec<Option<i64>>, ArrayRef)> = data
                .iter()
                .flat_map(|n| columns(n).into_iter().map(move |c| (n.clone(), c)))
                .collect();
            let needed: Vec<usize> = (0..all.len()).collect();
            let predicates: Vec<Predicate> = (0..rng.gen_range(1..6))
                .map(|_| {
                    let column = rng.gen_range(0..all.len());
                    let op = random_op(&mut rng, all[column].1.data_type());
                    Predicate { column, op }
                })
                .collect();
            let column = |i: usize| Ok(all[i].1.clone());
            let mask = predicate_mask(&predicates, &needed, &column)
                .unwrap()
                .unwrap();
            assert_eq!(mask.len(), rows);
            assert_eq!(mask.null_count(), 0);
            for row in 0..rows {
                let expected = predicates.iter().all(|p| {
                    let (numbers, values) = &all[p.column];
                    model(numbers[row], values.data_type(), &p.op)
                });
                assert_eq!(mask.value(row), expected, "row {row} of {predicates:?}");
            }
        }
    }

    #[test]
    fn no_predicates_give_no_mask() {
        let column = |_: usize| -> Result<ArrayRef> { unreachable!() };
        assert!(predicate_mask(&[], &[], &column).unwrap().is_none());
    }
}
