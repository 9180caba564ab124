//! Casts from text to `date` and `timestamp` that read PostgreSQL's
//! input forms. Arrow's cast refuses a date followed by a zone
//! (`'2024-01-01 +00'`, what pgjdbc sends for `setDate`) and converts a
//! `timestamp` with an offset to UTC, where PostgreSQL ignores the
//! offset for a type without a time zone (`'10:30+05:30'::timestamp` is
//! 10:30). An analyzer rule routes every such cast through one function
//! that reduces the text to the form Arrow reads, then casts with Arrow,
//! so every other form and every error is still Arrow's.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::DataType;
use datafusion::arrow::compute::{cast, cast_with_options};
use datafusion::common::config::ConfigOptions;
use datafusion::common::format::DEFAULT_CAST_OPTIONS;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    create_udf, Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarUDF, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Rewrites `CAST(text AS date | timestamp)` to the PostgreSQL-reading cast.
#[derive(Debug, Default)]
pub(crate) struct PostgresDatetimeInput;

impl AnalyzerRule for PostgresDatetimeInput {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan.transform_up_with_subqueries(rewrite_node)?.data)
    }

    fn name(&self) -> &str {
        "postgres_datetime_input"
    }
}

fn rewrite_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let schema = merge_schema(&plan.inputs());
    let preserver = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let saved = preserver.save(&expr);
        let rewritten = expr.transform_up(|e| rewrite_cast(e, &schema))?;
        Ok(rewritten.update_data(|e| saved.restore(e)))
    })
}

fn rewrite_cast(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr: inner, field }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let Some(function) = text_cast_function(field.data_type()) else {
        return Ok(Transformed::no(expr));
    };
    // Outer references in a subquery are not in this schema; leave them.
    let Ok(from) = inner.get_type(schema) else {
        return Ok(Transformed::no(expr));
    };
    let argument = match from {
        DataType::Utf8 => inner.as_ref().clone(),
        DataType::LargeUtf8 | DataType::Utf8View => {
            Expr::Cast(Cast::new(inner.clone(), DataType::Utf8))
        }
        _ => return Ok(Transformed::no(expr)),
    };
    Ok(Transformed::yes(function.call(vec![argument])))
}

/// The function for a cast from text to `target`, when Arrow's reading
/// of text as `target` differs from PostgreSQL's.
fn text_cast_function(target: &DataType) -> Option<ScalarUDF> {
    let name = match target {
        DataType::Date32 => "basalt_text_to_date".to_string(),
        DataType::Timestamp(unit, None) => format!("basalt_text_to_timestamp_{unit:?}"),
        _ => return None,
    };
    let target = target.clone();
    Some(create_udf(
        &name,
        vec![DataType::Utf8],
        target.clone(),
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| cast_text(&args[0], &target)),
    ))
}

fn cast_text(value: &ColumnarValue, target: &DataType) -> Result<ColumnarValue> {
    let read = |texts: &StringArray| -> Result<ArrayRef> {
        let rewritten = arrow_forms(texts, target);
        // Not `cast`: its default turns unreadable text into NULL.
        Ok(cast_with_options(
            rewritten.as_ref().unwrap_or(texts),
            target,
            &DEFAULT_CAST_OPTIONS,
        )?)
    };
    match value {
        ColumnarValue::Array(array) => {
            let texts = cast(array, &DataType::Utf8)?;
            let texts = texts
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| datafusion::common::DataFusionError::Internal("text".into()))?;
            Ok(ColumnarValue::Array(read(texts)?))
        }
        ColumnarValue::Scalar(scalar) => {
            let text = match scalar {
                ScalarValue::Utf8(t) | ScalarValue::LargeUtf8(t) | ScalarValue::Utf8View(t) => t,
                _ => &None,
            };
            let array = read(&StringArray::from(vec![text.as_deref()]))?;
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?))
        }
    }
}

/// `texts` in the forms Arrow reads as `target`, when `target` is a type
/// whose PostgreSQL input Arrow does not read and some text needs
/// rewriting; None when `texts` can be cast as they are. COPY and the
/// loader read their text columns through this too.
pub(crate) fn arrow_forms(texts: &StringArray, target: &DataType) -> Option<StringArray> {
    let date_only = match target {
        DataType::Date32 => true,
        DataType::Timestamp(_, None) => false,
        _ => return None,
    };
    // Each value is parsed once; most columns need no rewrite at all.
    let forms: Vec<Option<Cow<'_, str>>> = texts
        .iter()
        .map(|text| text.map(|t| postgres_form(t, date_only)))
        .collect();
    forms
        .iter()
        .any(|form| matches!(form, Some(Cow::Owned(_))))
        .then(|| forms.into_iter().collect())
}

/// `text` as Arrow reads it: the date (and for a timestamp, the time of
/// day) with PostgreSQL's trailing zone dropped. Text of any other form is
/// returned unchanged for Arrow to read or refuse.
fn postgres_form(text: &str, date_only: bool) -> Cow<'_, str> {
    match DatetimeText::parse(text.trim()) {
        Some(parts) if parts.arrow_reads_as_is(date_only) => Cow::Borrowed(text),
        Some(parts) if date_only => Cow::Owned(parts.date()),
        Some(parts) => Cow::Owned(match &parts.time {
            Some(time) => format!("{} {}", parts.date(), time),
            None => format!("{} 00:00:00", parts.date()),
        }),
        None => Cow::Borrowed(text),
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][ ][zone]`, the forms drivers send.
struct DatetimeText<'a> {
    year: &'a str,
    month: u32,
    day: u32,
    time: Option<String>,
    /// Already `YYYY-MM-DD[ HH:MM:SS[.f]]`, with nothing after it.
    canonical: bool,
}

impl<'a> DatetimeText<'a> {
    fn parse(text: &'a str) -> Option<DatetimeText<'a>> {
        let (year, rest) = split_digits(text, 4, 6)?;
        let (month, rest) = split_digits(rest.strip_prefix('-')?, 1, 2)?;
        let (day, rest) = split_digits(rest.strip_prefix('-')?, 1, 2)?;
        let (time, rest) = match rest.strip_prefix(['T', 't', ' ']).map(str::trim_start) {
            Some(after) => match clock(after) {
                Some((time, rest)) => (Some(time), rest),
                None => (None, rest),
            },
            None => (None, rest),
        };
        if !is_zone(rest.trim()) {
            return None;
        }
        let date_len = year.len() + month.len() + day.len() + 2;
        let canonical = year.len() == 4
            && month.len() == 2
            && day.len() == 2
            && rest.is_empty()
            && match &time {
                None => text.len() == date_len,
                Some(time) => {
                    text.len() == date_len + 1 + time.len() && text.as_bytes()[10] == b' '
                }
            };
        Some(DatetimeText {
            year,
            month: month.parse().ok()?,
            day: day.parse().ok()?,
            time,
            canonical,
        })
    }

    /// Whether Arrow reads the text unchanged as a date (`date_only`) or
    /// a timestamp. A date with a time of day is no date to Arrow.
    fn arrow_reads_as_is(&self, date_only: bool) -> bool {
        self.canonical && (!date_only || self.time.is_none())
    }

    fn date(&self) -> String {
        format!("{}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A run of `min..=max` ASCII digits at the start of `text`, and the rest.
fn split_digits(text: &str, min: usize, max: usize) -> Option<(&str, &str)> {
    let len = text.bytes().take_while(u8::is_ascii_digit).count();
    (min..=max).contains(&len).then(|| text.split_at(len))
}

/// `HH:MM[:SS[.fraction]]` at the start of `text`, as `HH:MM:SS[.fraction]`.
fn clock(text: &str) -> Option<(String, &str)> {
    let (hours, rest) = split_digits(text, 1, 2)?;
    let (minutes, mut rest) = split_digits(rest.strip_prefix(':')?, 2, 2)?;
    let mut seconds = "00";
    let mut fraction = "";
    if let Some(after) = rest.strip_prefix(':') {
        (seconds, rest) = split_digits(after, 2, 2)?;
        if let Some(after) = rest.strip_prefix('.') {
            (fraction, rest) = split_digits(after, 1, 9)?;
        }
    }
    let dot = if fraction.is_empty() { "" } else { "." };
    let hours: u32 = hours.parse().ok()?;
    Some((
        format!("{hours:02}:{minutes}:{seconds}{dot}{fraction}"),
        rest,
    ))
}

/// Nothing, or a zone PostgreSQL accepts after a datetime: `Z`, `UTC`,
/// `GMT`, or `±HH[[:]MM[[:]SS]]`.
fn is_zone(text: &str) -> bool {
    if text.is_empty() || ["z", "utc", "gmt"].contains(&text.to_ascii_lowercase().as_str()) {
        return true;
    }
    let Some(offset) = text.strip_prefix(['+', '-']) else {
        return false;
    };
    let Some((_, mut rest)) = split_digits(offset, 1, 2) else {
        return false;
    };
    for _ in 0..2 {
        if rest.is_empty() {
            return true;
        }
        match split_digits(rest.strip_prefix(':').unwrap_or(rest), 2, 2) {
            Some((_, after)) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_forms_reduce_to_arrows() {
        let date = |t| postgres_form(t, true).into_owned();
        let timestamp = |t| postgres_form(t, false).into_owned();
        assert_eq!(date("2024-01-01 +00"), "2024-01-01");
        assert_eq!(date("2024-1-5"), "2024-01-05");
        assert_eq!(date("2024-01-01 10:30:15+05:30"), "2024-01-01");
        assert_eq!(
            timestamp("2024-01-01 10:30:15+05:30"),
            "2024-01-01 10:30:15"
        );
        assert_eq!(
            timestamp("2024-01-01 9:30:15.123456-08"),
            "2024-01-01 09:30:15.123456"
        );
        assert_eq!(timestamp("2024-01-01T10:30Z"), "2024-01-01 10:30:00");
        assert_eq!(timestamp("2024-01-01"), "2024-01-01");
        // Forms Arrow reads are not copied.
        assert!(matches!(
            postgres_form("2024-01-01", true),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            postgres_form("2024-01-01 10:30:15.5", false),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            postgres_form("2024-01-01 10:30:15", true),
            Cow::Owned(_)
        ));
        // Other forms are left for Arrow to read or refuse.
        assert_eq!(date("yesterday"), "yesterday");
        assert_eq!(
            timestamp("2024-01-01 10:30 Europe/Paris"),
            "2024-01-01 10:30 Europe/Paris"
        );
    }

    #[test]
    fn casts_read_postgres_input_and_keep_arrows_errors() {
        let text = ColumnarValue::Array(Arc::new(StringArray::from(vec![
            Some("2024-02-01 +00"),
            None,
            Some("2024-02-03"),
        ])));
        let dates = cast_text(&text, &DataType::Date32).unwrap();
        let ColumnarValue::Array(dates) = dates else {
            panic!("array in, array out")
        };
        assert_eq!(dates.len(), 3);
        assert!(dates.is_null(1));
        let bad = ColumnarValue::Scalar(ScalarValue::Utf8(Some("2024-13-45".into())));
        assert!(cast_text(&bad, &DataType::Date32).is_err());
        let unit = arrow_schema::TimeUnit::Microsecond;
        let function = text_cast_function(&DataType::Timestamp(unit, None)).unwrap();
        assert_eq!(function.name(), "basalt_text_to_timestamp_Microsecond");
    }
}
