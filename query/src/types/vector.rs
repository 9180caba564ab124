//! pgvector's `vector(n)` type: an Arrow `FixedSizeList<Float32>` of `n`
//! elements, written and read in pgvector's text form `[1,2,3]`. Its
//! operators `<->`, `<=>`, `<#>` become the distance functions here when
//! DataFusion plans them, and `x::vector(n)` becomes `to_vector(x, n)`
//! before planning.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, Float64Builder, Int32Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use arrow_schema::{DataType, Field, FieldRef};
use basalt_formats::distance::{self, Metric};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator};

use crate::sql::error::{Error, Result};

/// The OID Basalt gives `vector` (pgvector's is whatever CREATE EXTENSION
/// was handed; clients look the type up by name).
pub const VECTOR_OID: i64 = 16385;
pub const VECTOR_ARRAY_OID: i64 = 16386;
/// pgvector's limit.
pub const MAX_DIMENSIONS: usize = 16_000;

/// The Arrow type of `vector(dimensions)`.
pub fn vector_type(dimensions: i32) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        dimensions,
    )
}

/// The dimension count when `data_type` is a vector.
pub fn dimensions_of(data_type: &DataType) -> Option<usize> {
    match data_type {
        DataType::FixedSizeList(item, n) if item.data_type() == &DataType::Float32 => {
            usize::try_from(*n).ok()
        }
        _ => None,
    }
}

/// Checks a `vector(n)` type modifier.
pub(crate) fn checked_dimensions(n: i64) -> Result<i32> {
    if n < 1 {
        return Err(Error::sql(
            "22023",
            "dimensions for type vector must be at least 1",
        ));
    }
    if n as u64 > MAX_DIMENSIONS as u64 {
        return Err(Error::sql(
            "22023",
            format!("dimensions for type vector cannot exceed {MAX_DIMENSIONS}"),
        ));
    }
    Ok(n as i32)
}

/// Parses pgvector's input form: `[1, 2.5, -3e2]`.
pub fn parse_vector(text: &str) -> Result<Vec<f32>> {
    let invalid = || {
        Error::sql(
            "22P02",
            format!("invalid input syntax for type vector: \"{text}\""),
        )
    };
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(invalid)?;
    if inner.trim().is_empty() {
        return Err(Error::sql("22000", "vector must have at least 1 dimension"));
    }
    let mut values = Vec::new();
    for element in inner.split(',') {
        let value: f32 = element.trim().parse().map_err(|_| invalid())?;
        check_finite(value)?;
        values.push(value);
    }
    if values.len() > MAX_DIMENSIONS {
        return Err(Error::sql(
            "54000",
            format!("vector cannot have more than {MAX_DIMENSIONS} dimensions"),
        ));
    }
    Ok(values)
}

fn check_finite(value: f32) -> Result<()> {
    if value.is_nan() {
        return Err(Error::sql("22000", "NaN not allowed in vector"));
    }
    if value.is_infinite() {
        return Err(Error::sql("22000", "infinite value not allowed in vector"));
    }
    Ok(())
}

/// pgvector's output form: shortest round-trip decimals, no spaces.
pub fn format_vector(values: &[f32]) -> String {
    let mut out = String::with_capacity(values.len() * 8 + 2);
    out.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out.push(']');
    out
}

/// The elements of a vector array's `row`.
pub fn row_values(vectors: &FixedSizeListArray, row: usize) -> &[f32] {
    distance::vector_at(vectors, row)
}

fn dimension_mismatch(expected: usize, got: usize) -> Error {
    Error::sql(
        "22000",
        format!("expected {expected} dimensions, not {got}"),
    )
}

/// Any text, array or vector column as vectors of `dimensions` (or of the
/// input's own dimension count when `None`).
pub fn to_vectors(input: &ArrayRef, dimensions: Option<usize>) -> Result<ArrayRef> {
    match input.data_type() {
        DataType::FixedSizeList(_, n) => {
            let n = *n as usize;
            if let Some(expected) = dimensions.filter(|&d| d != n) {
                return Err(dimension_mismatch(expected, n));
            }
            let list = input.as_fixed_size_list();
            let values = cast_to(list.values(), &DataType::Float32)?;
            build(
                values.as_primitive::<Float32Type>().clone(),
                n,
                list.nulls().cloned(),
            )
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => lists_to_vectors(
            &cast_to(input, &DataType::new_list(DataType::Float32, true))?,
            dimensions,
        ),
        DataType::Null => {
            let n = dimensions.ok_or_else(unknown_dimensions)?;
            Ok(arrow_array::new_null_array(
                &vector_type(n as i32),
                input.len(),
            ))
        }
        _ => {
            let text = cast_to(input, &DataType::Utf8)?;
            text_to_vectors(text.as_string::<i32>(), dimensions)
        }
    }
}

/// An Arrow cast the input's type does not allow.
fn cast_to(input: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    cast(input, to).map_err(|e| {
        Error::sql(
            "42846",
            format!("cannot cast type {} to vector: {e}", input.data_type()),
        )
    })
}

fn unknown_dimensions() -> Error {
    Error::sql(
        "42804",
        "cannot tell the dimensions of this vector; cast it to vector(n)",
    )
}

fn lists_to_vectors(lists: &ArrayRef, dimensions: Option<usize>) -> Result<ArrayRef> {
    let lists = lists.as_list::<i32>();
    let mut values = Float32Builder::new();
    let mut n = dimensions;
    for row in 0..lists.len() {
        if lists.is_null(row) {
            values.append_slice(&vec![0.0; n.unwrap_or(0)]);
            continue;
        }
        let list = lists.value(row);
        let elements = list.as_primitive::<Float32Type>();
        let expected = *n.get_or_insert(elements.len());
        if elements.len() != expected {
            return Err(dimension_mismatch(expected, elements.len()));
        }
        if elements.null_count() > 0 {
            return Err(Error::sql("22004", "array must not contain nulls"));
        }
        for &v in elements.values() {
            check_finite(v)?;
        }
        values.append_slice(elements.values());
    }
    let n = n.ok_or_else(unknown_dimensions)?;
    build(values.finish(), n, lists.nulls().cloned())
}

/// Parses text vectors; NULL stays NULL.
pub fn text_to_vectors(text: &StringArray, dimensions: Option<usize>) -> Result<ArrayRef> {
    let mut values = Float32Builder::with_capacity(text.len() * dimensions.unwrap_or(1));
    let mut n = dimensions;
    for row in 0..text.len() {
        if text.is_null(row) {
            values.append_slice(&vec![0.0; n.unwrap_or(0)]);
            continue;
        }
        let parsed = parse_vector(text.value(row))?;
        let expected = *n.get_or_insert(parsed.len());
        if parsed.len() != expected {
            return Err(dimension_mismatch(expected, parsed.len()));
        }
        values.append_slice(&parsed);
    }
    let n = n.ok_or_else(unknown_dimensions)?;
    build(values.finish(), n, text.nulls().cloned())
}

fn build(values: Float32Array, n: usize, nulls: Option<NullBuffer>) -> Result<ArrayRef> {
    // Leading NULL rows were padded before the dimension count was known.
    let rows = nulls.as_ref().map(NullBuffer::len);
    let values = match rows {
        Some(rows) if values.len() < rows * n => {
            let mut padded = vec![0.0; rows * n - values.len()];
            padded.extend_from_slice(values.values());
            Float32Array::from(padded)
        }
        _ => values,
    };
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    FixedSizeListArray::try_new(item, n as i32, Arc::new(values), nulls)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| Error::sql("22000", e.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Distance(Metric),
    L1,
    InnerProduct,
    Dims,
    Normalize,
    ToVector,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

/// Every vector function, for registration in a session.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    [
        ("l2_distance", Kind::Distance(Metric::L2), 2),
        ("cosine_distance", Kind::Distance(Metric::Cosine), 2),
        (
            "negative_inner_product",
            Kind::Distance(Metric::InnerProduct),
            2,
        ),
        ("inner_product", Kind::InnerProduct, 2),
        ("l1_distance", Kind::L1, 2),
        ("vector_dims", Kind::Dims, 1),
        ("l2_normalize", Kind::Normalize, 1),
        ("to_vector", Kind::ToVector, 0),
    ]
    .into_iter()
    .map(|(name, kind, arity)| {
        let signature = if arity == 0 {
            Signature::variadic_any(Volatility::Immutable)
        } else {
            Signature::any(arity, Volatility::Immutable)
        };
        ScalarUDF::from(VectorFunction {
            name,
            kind,
            signature,
        })
    })
    .collect()
}

impl ScalarUDFImpl for VectorFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::Distance(_) | Kind::L1 | Kind::InnerProduct => DataType::Float64,
            Kind::Dims => DataType::Int32,
            Kind::Normalize | Kind::ToVector => match args.first().and_then(dimensions_of) {
                Some(n) => vector_type(n as i32),
                None => return Err(unknown_dimensions().into_datafusion()),
            },
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let data_type = match self.kind {
            Kind::ToVector => {
                vector_type(planned_dimensions(&args).map_err(Error::into_datafusion)?)
            }
            Kind::Normalize => {
                let n = args
                    .arg_fields
                    .first()
                    .and_then(|f| dimensions_of(f.data_type()))
                    .or_else(|| {
                        literal_dimensions(args.scalar_arguments.first().copied().flatten())
                    });
                vector_type(n.ok_or_else(|| unknown_dimensions().into_datafusion())? as i32)
            }
            _ => {
                let types: Vec<DataType> = args
                    .arg_fields
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                self.return_type(&types)?
            }
        };
        Ok(Arc::new(Field::new(self.name, data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let result = self
            .evaluate(&args.args, rows, args.return_field.data_type())
            .map_err(Error::into_datafusion)?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?));
        }
        Ok(ColumnarValue::Array(result))
    }
}

/// `to_vector(x, n)`'s dimension count: `n`, the input's, or a literal's.
fn planned_dimensions(args: &ReturnFieldArgs) -> Result<i32> {
    if let Some(Some(n)) = args.scalar_arguments.get(1) {
        let n = match n {
            ScalarValue::Int64(Some(n)) => *n,
            other => other
                .to_string()
                .parse()
                .map_err(|_| Error::sql("22023", "vector dimensions must be an integer"))?,
        };
        return checked_dimensions(n);
    }
    let from_type = args
        .arg_fields
        .first()
        .and_then(|f| dimensions_of(f.data_type()));
    if let Some(n) = from_type {
        return checked_dimensions(n as i64);
    }
    // A literal that does not parse reports why now, not as "unknown".
    if let Some(Some(ScalarValue::Utf8(Some(text)))) = args.scalar_arguments.first() {
        return checked_dimensions(parse_vector(text)?.len() as i64);
    }
    let n = literal_dimensions(args.scalar_arguments.first().copied().flatten())
        .ok_or_else(unknown_dimensions)?;
    checked_dimensions(n as i64)
}

fn literal_dimensions(value: Option<&ScalarValue>) -> Option<usize> {
    let value = value?;
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => parse_vector(text).ok().map(|v| v.len()),
        ScalarValue::List(list) => list.value_length(0).try_into().ok(),
        _ => None,
    }
}

impl VectorFunction {
    fn evaluate(&self, args: &[ColumnarValue], rows: usize, output: &DataType) -> Result<ArrayRef> {
        let arrays: Vec<ArrayRef> = args
            .iter()
            .map(|a| {
                a.to_array(if matches!(a, ColumnarValue::Scalar(_)) {
                    1
                } else {
                    rows
                })
            })
            .collect::<DfResult<_>>()?;
        match self.kind {
            Kind::ToVector => {
                let input = arrays
                    .first()
                    .ok_or_else(|| Error::sql("42883", "to_vector needs an argument"))?;
                to_vectors(input, dimensions_of(output))
            }
            Kind::Dims => {
                let vectors = to_vectors(&arrays[0], None)?;
                let vectors = vectors.as_fixed_size_list();
                let mut out = Int32Builder::with_capacity(vectors.len());
                for row in 0..vectors.len() {
                    out.append_option(vectors.is_valid(row).then_some(vectors.value_length()));
                }
                Ok(Arc::new(out.finish()))
            }
            Kind::Normalize => normalize(&to_vectors(&arrays[0], dimensions_of(output))?),
            Kind::Distance(_) | Kind::L1 | Kind::InnerProduct => {
                let left = to_vectors(&arrays[0], None)?;
                let right = to_vectors(&arrays[1], None)?;
                self.pairwise(left.as_fixed_size_list(), right.as_fixed_size_list(), rows)
            }
        }
    }

    /// One distance per row; a one-row side (a literal) pairs with every row.
    fn pairwise(
        &self,
        left: &FixedSizeListArray,
        right: &FixedSizeListArray,
        rows: usize,
    ) -> Result<ArrayRef> {
        let (l, r) = (left.value_length() as usize, right.value_length() as usize);
        if l != r {
            return Err(Error::sql(
                "22000",
                format!("different vector dimensions {l} and {r}"),
            ));
        }
        let rows = rows
            .max(left.len().min(right.len()))
            .min(left.len().max(right.len()));
        let at = |array: &FixedSizeListArray, row: usize| if array.len() == 1 { 0 } else { row };
        let mut out = Float64Builder::with_capacity(rows);
        for row in 0..rows {
            let (i, j) = (at(left, row), at(right, row));
            if left.is_null(i) || right.is_null(j) {
                out.append_null();
                continue;
            }
            let (a, b) = (row_values(left, i), row_values(right, j));
            out.append_value(match self.kind {
                Kind::Distance(metric) => metric.distance(a, b),
                Kind::L1 => f64::from(distance::l1(a, b)),
                _ => f64::from(distance::dot(a, b)),
            });
        }
        Ok(Arc::new(out.finish()))
    }
}

fn normalize(vectors: &ArrayRef) -> Result<ArrayRef> {
    let list = vectors.as_fixed_size_list();
    let n = list.value_length() as usize;
    let mut values = Vec::with_capacity(list.len() * n);
    for row in 0..list.len() {
        let v = row_values(list, row);
        let norm = distance::dot(v, v).sqrt();
        if norm > 0.0 {
            values.extend(v.iter().map(|x| x / norm));
        } else {
            values.extend_from_slice(v);
        }
    }
    build(Float32Array::from(values), n, list.nulls().cloned())
}

/// Plans pgvector's operators as the distance functions.
#[derive(Debug)]
pub(crate) struct VectorOperators;

impl ExprPlanner for VectorOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let name = match &expr.op {
            BinaryOperator::LtDashGt => "l2_distance",
            BinaryOperator::Spaceship => "cosine_distance",
            BinaryOperator::Custom(op) if op == "<#>" => "negative_inner_product",
            BinaryOperator::Custom(op) if op == "<+>" => "l1_distance",
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let function = functions()
            .into_iter()
            .find(|f| f.name() == name)
            .map(Arc::new)
            .ok_or_else(|| Error::sql("XX000", "vector function missing").into_datafusion())?;
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(function, vec![expr.left, expr.right]),
        )))
    }
}

/// `vector(n)` named in a statement: its dimension count, `None` for a bare
/// `vector`.
pub(crate) fn sql_vector_type(data_type: &ast::DataType) -> Option<Option<Result<i32>>> {
    let ast::DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    let is_vector = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("vector"));
    if !is_vector {
        return None;
    }
    Some(modifiers.first().map(|m| {
        m.parse::<i64>()
            .map_err(|_| {
                Error::sql(
                    "22P02",
                    format!("invalid input syntax for type integer: \"{m}\""),
                )
            })
            .and_then(checked_dimensions)
    }))
}

/// Rewrites `x::vector(n)` (and `CAST(x AS vector)`) as `to_vector(x, n)`.
pub(crate) fn rewrite_casts(statement: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(statement, |expr| {
        if let ast::Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
        {
            if let Some(dimensions) = sql_vector_type(data_type) {
                let mut args = vec![inner.as_ref().clone()];
                if let Some(Ok(n)) = dimensions {
                    args.push(ast::Expr::value(ast::Value::Number(n.to_string(), false)));
                }
                *expr = crate::sql::syntax::call("to_vector", args);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_like_pgvector() {
        let v = parse_vector(" [1, 2.5,-3e2 ] ").unwrap();
        assert_eq!(v, vec![1.0, 2.5, -300.0]);
        assert_eq!(format_vector(&v), "[1,2.5,-300]");
        assert_eq!(format_vector(&[0.1]), "[0.1]");
    }

    #[test]
    fn bad_text_is_refused_with_pgvector_codes() {
        for (text, code) in [
            ("1,2", "22P02"),
            ("[1,x]", "22P02"),
            ("[]", "22000"),
            ("[NaN]", "22000"),
            ("[inf]", "22000"),
            ("[1,,2]", "22P02"),
        ] {
            let err = parse_vector(text).unwrap_err();
            assert_eq!(err.sqlstate(), code, "{text}: {err}");
        }
    }

    #[test]
    fn conversions_check_dimensions_and_keep_nulls() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![None, Some("[1,2]"), Some("[3,4]")]));
        let vectors = to_vectors(&text, None).unwrap();
        assert_eq!(vectors.data_type(), &vector_type(2));
        let list = vectors.as_fixed_size_list();
        assert!(list.is_null(0));
        assert_eq!(row_values(list, 2), &[3.0, 4.0]);
        let err = to_vectors(&text, Some(3)).unwrap_err();
        assert_eq!(err.to_string(), "expected 3 dimensions, not 2");
        assert_eq!(checked_dimensions(16_001).unwrap_err().sqlstate(), "22023");
        assert_eq!(checked_dimensions(16_000).unwrap(), 16_000);
    }
}
