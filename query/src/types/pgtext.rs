//! Values in Postgres' text output format, as psql and every driver's text
//! mode show them: `t`/`f`, `\x` bytea, ISO dates, `+00` zones, Postgres
//! intervals, `{...}` arrays. NULL is `None`.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, IntervalMonthDayNanoType,
};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The text of `array[row]`, or None for NULL.
pub fn format_value(array: &dyn Array, row: usize) -> Option<String> {
    // Logical nulls: a Null-typed array (SELECT NULL) has no null buffer.
    if array
        .logical_nulls()
        .is_some_and(|nulls| nulls.is_null(row))
    {
        return None;
    }
    Some(match array.data_type() {
        DataType::Boolean => if array.as_boolean().value(row) {
            "t"
        } else {
            "f"
        }
        .to_string(),
        DataType::Float32 => {
            format_float(f64::from(array.as_primitive::<Float32Type>().value(row)))
        }
        DataType::Float64 => format_float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            format_decimal(array.as_primitive::<Decimal128Type>().value(row), *scale)
        }
        DataType::Binary => format_bytea(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => format_bytea(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => format_bytea(array.as_binary_view().value(row)),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            arrow_array::temporal_conversions::date32_to_datetime(days)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| days.to_string())
        }
        DataType::Timestamp(unit, tz) => format_timestamp(array, row, unit, tz.is_some()),
        DataType::Interval(arrow_schema::IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            format_interval(v.months, v.days, v.nanoseconds)
        }
        DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32 => {
            crate::types::vector::format_vector(crate::types::vector::row_values(
                array.as_fixed_size_list(),
                row,
            ))
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            format_array(array, row)
        }
        _ => fallback(array, row),
    })
}

fn fallback(array: &dyn Array, row: usize) -> String {
    ArrayFormatter::try_new(array, &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// Shortest text that reads back to the same float, as Postgres 12+.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else if v != 0.0 && (v.abs() >= 1e15 || v.abs() < 1e-4) {
        // Postgres switches to exponents here, with a signed two-digit one.
        let text = format!("{v:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    } else {
        v.to_string()
    }
}

fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        // A negative scale appends zeros; written out, it cannot overflow.
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return if v == 0 {
            "0".to_string()
        } else {
            format!("{v}{zeros}")
        };
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{whole}.{fraction}")
}

fn format_bytea(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// bytea from Postgres' hex (`\x0a1b`) or escape (`a\\b\001`) input form;
/// None when the text is neither.
pub fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u32> = hex
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_digit(16))
            .collect::<Option<_>>()?;
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return Some(digits.chunks(2).map(|p| (p[0] * 16 + p[1]) as u8).collect());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', _) => {
                let octal = text.get(i + 1..i + 4)?;
                out.push(u8::from_str_radix(octal, 8).ok()?);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

fn format_timestamp(array: &dyn Array, row: usize, unit: &TimeUnit, zoned: bool) -> String {
    use arrow_array::types::*;
    let micros = match unit {
        TimeUnit::Second => {
            array.as_primitive::<TimestampSecondType>().value(row) as i128 * 1_000_000
        }
        TimeUnit::Millisecond => {
            array.as_primitive::<TimestampMillisecondType>().value(row) as i128 * 1_000
        }
        TimeUnit::Microsecond => {
            array.as_primitive::<TimestampMicrosecondType>().value(row) as i128
        }
        TimeUnit::Nanosecond => {
            array.as_primitive::<TimestampNanosecondType>().value(row) as i128 / 1_000
        }
    };
    let seconds = micros.div_euclid(1_000_000) as i64;
    let fraction = micros.rem_euclid(1_000_000) as u32;
    let Some(at) = chrono::DateTime::from_timestamp(seconds, fraction * 1_000) else {
        return fallback(array, row);
    };
    let mut text = at.format("%Y-%m-%d %H:%M:%S").to_string();
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    if zoned {
        text.push_str("+00");
    }
    text
}

/// Postgres' default `postgres` interval style: `1 year 2 mons 3 days 04:05:06`.
pub fn format_interval(months: i32, days: i32, nanos: i64) -> String {
    let mut parts = Vec::new();
    let (years, months) = (months / 12, months % 12);
    let unit = |n: i32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(years, "year", "years"));
    }
    if months != 0 {
        parts.push(unit(months, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days, "day", "days"));
    }
    if nanos != 0 || parts.is_empty() {
        let sign = if nanos < 0 { "-" } else { "" };
        let micros = (nanos / 1_000).unsigned_abs();
        let (h, rest) = (micros / 3_600_000_000, micros % 3_600_000_000);
        let (m, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (s, frac) = (rest / 1_000_000, rest % 1_000_000);
        let mut time = format!("{sign}{h:02}:{m:02}:{s:02}");
        if frac != 0 {
            time.push('.');
            time.push_str(format!("{frac:06}").trim_end_matches('0'));
        }
        parts.push(time);
    }
    parts.join(" ")
}

/// Postgres' own interval output (and its verbose input): quantities with
/// units (`1 year 2 mons -3 days`, `@ 4 hours ago`) and an optional
/// `[-]HH:MM[:SS[.ffffff]]`. Returns (months, days, nanoseconds).
pub fn parse_interval(text: &str) -> Option<(i32, i32, i64)> {
    let text = text.trim().trim_start_matches('@').trim();
    let (text, ago) = match text.strip_suffix("ago") {
        Some(rest) => (rest.trim_end(), true),
        None => (text, false),
    };
    let (mut months, mut days, mut nanos) = (0i64, 0i64, 0i64);
    let mut words = text.split_whitespace().peekable();
    let mut any = false;
    while let Some(word) = words.next() {
        any = true;
        if word.contains(':') {
            nanos = nanos.checked_add(parse_clock(word)?)?;
            continue;
        }
        let amount: f64 = word.parse().ok()?;
        let unit = words.next()?.trim_end_matches(',').to_ascii_lowercase();
        // Out of range is `None` (an invalid interval), never a wrapped value.
        let scaled = |factor: f64| {
            let value = (amount * factor).round();
            (value.abs() < 9.2e18).then_some(value as i64)
        };
        let whole = scaled(1.0).map(|_| amount.trunc() as i64);
        match unit.as_str() {
            "year" | "years" | "yr" | "yrs" | "y" => months = months.checked_add(scaled(12.0)?)?,
            "mon" | "mons" | "month" | "months" => months = months.checked_add(whole?)?,
            "week" | "weeks" | "w" => days = days.checked_add(whole?.checked_mul(7)?)?,
            "day" | "days" | "d" => days = days.checked_add(whole?)?,
            "hour" | "hours" | "hr" | "hrs" | "h" => nanos = nanos.checked_add(scaled(3.6e12)?)?,
            "minute" | "minutes" | "min" | "mins" | "m" => {
                nanos = nanos.checked_add(scaled(6e10)?)?
            }
            "second" | "seconds" | "sec" | "secs" | "s" => {
                nanos = nanos.checked_add(scaled(1e9)?)?
            }
            "millisecond" | "milliseconds" | "ms" => nanos = nanos.checked_add(scaled(1e6)?)?,
            "microsecond" | "microseconds" | "us" => nanos = nanos.checked_add(scaled(1e3)?)?,
            _ => return None,
        }
    }
    if !any {
        return None;
    }
    let sign = if ago { -1 } else { 1 };
    Some((
        i32::try_from(months.checked_mul(sign)?).ok()?,
        i32::try_from(days.checked_mul(sign)?).ok()?,
        nanos.checked_mul(sign)?,
    ))
}

/// `[-]HH:MM[:SS[.ffffff]]` in nanoseconds.
fn parse_clock(word: &str) -> Option<i64> {
    let (negative, word) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word.strip_prefix('+').unwrap_or(word)),
    };
    let mut parts = word.split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds: f64 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    if parts.next().is_some() || minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    let nanos =
        hours * 3_600_000_000_000 + minutes * 60_000_000_000 + (seconds * 1e9).round() as i64;
    Some(if negative { -nanos } else { nanos })
}

fn format_array(array: &dyn Array, row: usize) -> String {
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(row),
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        _ => array.as_fixed_size_list().value(row),
    };
    let items: Vec<String> = (0..values.len())
        .map(|i| match format_value(values.as_ref(), i) {
            None => "NULL".to_string(),
            Some(text) if needs_quotes(&text) => {
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
            Some(text) => text,
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text.eq_ignore_ascii_case("null")
        || text
            .chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace())
}

#[cfg(test)]
mod interval_tests {
    use super::*;

    #[test]
    fn intervals_out_of_range_are_invalid_not_wrapped() {
        for text in [
            "100000000000000000000 years",
            "9223372036854775807 days 9223372036854775807 days",
            "2562048 hours 2562048 hours",
            "3000000000 days",
            "1e300 seconds",
        ] {
            assert_eq!(parse_interval(text), None, "{text}");
        }
        assert_eq!(parse_interval("-2147483648 days"), Some((0, i32::MIN, 0)));
    }

    #[test]
    fn intervals_read_back_as_postgres_prints_them() {
        for (months, days, nanos) in [
            (14, 3, 14_706_000_000_000),
            (0, -1, 0),
            (0, 0, -1_500_000),
            (-25, 0, 3_600_000_000_000),
            (0, 0, 0),
        ] {
            let text = format_interval(months, days, nanos);
            assert_eq!(parse_interval(&text), Some((months, days, nanos)), "{text}");
        }
        assert_eq!(
            parse_interval("@ 2 hours ago"),
            Some((0, 0, -7_200_000_000_000))
        );
        assert_eq!(parse_interval("1.5 years"), Some((18, 0, 0)));
        assert_eq!(parse_interval("3 fortnights"), None);
        assert_eq!(parse_interval(""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_postgres_prints_them() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(format_float(1e20), "1e+20");
        assert_eq!(format_float(-1.5e-5), "-1.5e-05");
        assert_eq!(format_float(-0.0), "-0");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(12345, 2), "123.45");
        assert_eq!(format_decimal(-12, -3), "-12000");
        assert_eq!(format_decimal(i128::MAX, -10).len(), 39 + 10);
        assert_eq!(format_bytea(&[0xde, 0xad]), "\\xdead");
        assert_eq!(
            format_interval(14, 3, 4 * 3_600_000_000_000 + 5_000_000_000),
            "1 year 2 mons 3 days 04:00:05"
        );
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, -1, 0), "-1 days");
        let nulls = arrow_array::NullArray::new(2);
        assert_eq!(format_value(&nulls, 1), None);
    }
}
