//! Postgres' JSON operators and functions over json/jsonb columns, which
//! Basalt stores as text: `->`, `->>`, `json_extract_path[_text]`,
//! `json_typeof`, `json_array_length` (and their `jsonb_` names).

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use datafusion::arrow::compute::cast;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `->` / json_extract_path: the element as JSON text.
    Get,
    /// `->>` / json_extract_path_text: strings unquoted.
    GetText,
    TypeOf,
    ArrayLength,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

impl JsonFunction {
    fn new(name: &'static str, kind: Kind) -> JsonFunction {
        let signature = match kind {
            Kind::Get | Kind::GetText => Signature::variadic_any(Volatility::Immutable),
            Kind::TypeOf | Kind::ArrayLength => Signature::any(1, Volatility::Immutable),
        };
        JsonFunction {
            name,
            kind,
            signature,
        }
    }
}

/// Every JSON function, for registration in a session.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    [
        ("json_extract_path", Kind::Get),
        ("jsonb_extract_path", Kind::Get),
        ("json_extract_path_text", Kind::GetText),
        ("jsonb_extract_path_text", Kind::GetText),
        ("json_typeof", Kind::TypeOf),
        ("jsonb_typeof", Kind::TypeOf),
        ("json_array_length", Kind::ArrayLength),
        ("jsonb_array_length", Kind::ArrayLength),
    ]
    .into_iter()
    .map(|(name, kind)| ScalarUDF::from(JsonFunction::new(name, kind)))
    .collect()
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::ArrayLength => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<Result<_>>()?;
        let Some((document, path)) = arrays.split_first() else {
            return Err(DataFusionError::Plan(format!(
                "{} needs an argument",
                self.name
            )));
        };
        let document = cast(document, &DataType::Utf8)?;
        let document = document.as_string::<i32>();
        let path: Vec<PathStep> = path.iter().map(PathStep::of).collect::<Result<_>>()?;
        let result: ArrayRef = match self.kind {
            Kind::Get | Kind::GetText => {
                let mut out = StringBuilder::new();
                for row in 0..document.len() {
                    match walk(document, &path, row)? {
                        Some(Value::String(s)) if self.kind == Kind::GetText => out.append_value(s),
                        Some(Value::Null) if self.kind == Kind::GetText => out.append_null(),
                        Some(v) => out.append_value(v.to_string()),
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::TypeOf => {
                let mut out = StringBuilder::new();
                for row in 0..document.len() {
                    match parse(document, row)? {
                        Some(v) => out.append_value(type_name(&v)),
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
            Kind::ArrayLength => {
                let mut out = Int64Builder::new();
                for row in 0..document.len() {
                    match parse(document, row)? {
                        Some(Value::Array(items)) => out.append_value(items.len() as i64),
                        Some(other) => {
                            return Err(json_error(format!(
                                "cannot get array length of a {}",
                                type_name(&other)
                            )))
                        }
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(result))
    }
}

/// One step of a path: an object key or an array index.
enum PathStep {
    Keys(ArrayRef),
    Indexes(ArrayRef),
}

impl PathStep {
    fn of(array: &ArrayRef) -> Result<PathStep> {
        Ok(if array.data_type().is_integer() {
            PathStep::Indexes(cast(array, &DataType::Int64)?)
        } else {
            PathStep::Keys(cast(array, &DataType::Utf8)?)
        })
    }
}

fn parse(document: &arrow_array::StringArray, row: usize) -> Result<Option<Value>> {
    if document.is_null(row) {
        return Ok(None);
    }
    serde_json::from_str(document.value(row))
        .map(Some)
        .map_err(|e| json_error(format!("invalid input syntax for type json: {e}")))
}

fn walk(
    document: &arrow_array::StringArray,
    path: &[PathStep],
    row: usize,
) -> Result<Option<Value>> {
    let Some(mut value) = parse(document, row)? else {
        return Ok(None);
    };
    for step in path {
        let next = match step {
            PathStep::Keys(keys) => {
                let keys = keys.as_string::<i32>();
                if keys.is_null(row) {
                    return Ok(None);
                }
                match value {
                    Value::Object(mut map) => map.remove(keys.value(row)),
                    // A text step into an array reads it as an index, as
                    // json_extract_path does.
                    Value::Array(mut items) => keys
                        .value(row)
                        .parse::<usize>()
                        .ok()
                        .filter(|&i| i < items.len())
                        .map(|i| items.swap_remove(i)),
                    _ => None,
                }
            }
            PathStep::Indexes(indexes) => {
                let indexes = indexes.as_primitive::<arrow_array::types::Int64Type>();
                if indexes.is_null(row) {
                    return Ok(None);
                }
                match value {
                    Value::Array(mut items) => {
                        let i = indexes.value(row);
                        // Negative indexes count from the end, as in Postgres.
                        let i = if i < 0 { items.len() as i64 + i } else { i };
                        (0..items.len() as i64)
                            .contains(&i)
                            .then(|| items.swap_remove(i as usize))
                    }
                    _ => None,
                }
            }
        };
        match next {
            Some(v) => value = v,
            None => return Ok(None),
        }
    }
    Ok(Some(value))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn json_error(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::Error::sql("22P02", message)))
}

/// Plans `->` and `->>` as the JSON functions.
#[derive(Debug)]
pub(crate) struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let (name, kind) = match expr.op {
            BinaryOperator::Arrow => ("json_extract_path", Kind::Get),
            BinaryOperator::LongArrow => ("json_extract_path_text", Kind::GetText),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let function = Arc::new(ScalarUDF::from(JsonFunction::new(name, kind)));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(function, vec![expr.left, expr.right]),
        )))
    }
}

/// Whether `text` is a JSON document (for json/jsonb column input).
pub(crate) fn is_valid(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok()
}
