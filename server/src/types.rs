//! Postgres types on the wire: which type OID an Arrow column goes out as,
//! values in binary format (text format is `query::pgtext`), and parameter
//! values read back from either format.

use basalt_query::arrow::array::{Array, AsArray};
use basalt_query::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, Time64MicrosecondType, Time64NanosecondType, TimeUnit, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use basalt_query::Param;
use bytes::{BufMut, BytesMut};
use pgwire::api::Type;

use crate::error::{Error, Result};

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (Postgres).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// The type a column goes out as, the one the catalog lists too. uuid and
/// json(b) are stored as text and recognised by their field metadata.
pub fn column_type(field: &Field) -> Type {
    from_oid(basalt_query::pgtypes::type_oid(field))
}

/// The Postgres type of an Arrow type; text for anything without one.
pub fn data_type(data_type: &DataType) -> Type {
    from_oid(basalt_query::pgtypes::data_type_oid(data_type))
}

fn from_oid(oid: i64) -> Type {
    if oid == basalt_query::vector::VECTOR_OID {
        return Type::new(
            "vector".into(),
            oid as u32,
            postgres_types::Kind::Simple,
            "public".into(),
        );
    }
    u32::try_from(oid)
        .ok()
        .and_then(Type::from_oid)
        .unwrap_or(Type::TEXT)
}

/// Appends `array[row]` in binary format (without its length word); types
/// without a binary form of their own go out as their text bytes.
pub fn encode_binary(array: &dyn Array, row: usize, pg_type: &Type, out: &mut BytesMut) {
    match array.data_type() {
        DataType::Boolean => out.put_u8(u8::from(array.as_boolean().value(row))),
        DataType::Int8 => out.put_i16(i16::from(array.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => out.put_i16(array.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => out.put_i16(i16::from(array.as_primitive::<UInt8Type>().value(row))),
        DataType::Int32 => out.put_i32(array.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => out.put_i32(i32::from(array.as_primitive::<UInt16Type>().value(row))),
        DataType::Int64 => out.put_i64(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => out.put_i64(i64::from(array.as_primitive::<UInt32Type>().value(row))),
        DataType::UInt64 => encode_numeric(
            i128::from(array.as_primitive::<UInt64Type>().value(row)),
            0,
            out,
        ),
        DataType::Float32 => out.put_f32(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => out.put_f64(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => encode_numeric(
            array.as_primitive::<Decimal128Type>().value(row),
            *scale,
            out,
        ),
        DataType::Binary => out.put_slice(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => out.put_slice(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => out.put_slice(array.as_binary_view().value(row)),
        DataType::Date32 => {
            out.put_i32(array.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS)
        }
        DataType::Timestamp(unit, _) => out.put_i64(timestamp_micros(array, row, unit)),
        DataType::Time64(TimeUnit::Microsecond) => {
            out.put_i64(array.as_primitive::<Time64MicrosecondType>().value(row))
        }
        DataType::Time64(TimeUnit::Nanosecond) => {
            out.put_i64(array.as_primitive::<Time64NanosecondType>().value(row) / 1000)
        }
        DataType::Interval(unit) => encode_interval(array, row, unit, out),
        DataType::FixedSizeList(_, _)
            if pg_type.oid() as i64 == basalt_query::vector::VECTOR_OID =>
        {
            encode_vector(array, row, out)
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            encode_array(array, row, pg_type, out)
        }
        _ => encode_text_binary(array, row, pg_type, out),
    }
}

/// Types whose binary form is their text (text, json) or derived from it
/// (uuid, jsonb).
fn encode_text_binary(array: &dyn Array, row: usize, pg_type: &Type, out: &mut BytesMut) {
    let text = basalt_query::pgtext::format_value(array, row).unwrap_or_default();
    match *pg_type {
        Type::UUID => match parse_uuid(&text) {
            Some(bytes) => out.put_slice(&bytes),
            None => out.put_slice(&[0; 16]),
        },
        Type::JSONB => {
            out.put_u8(1);
            out.put_slice(text.as_bytes());
        }
        _ => out.put_slice(text.as_bytes()),
    }
}

fn timestamp_micros(array: &dyn Array, row: usize, unit: &TimeUnit) -> i64 {
    use basalt_query::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let micros = match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1000),
    };
    micros - PG_EPOCH_MICROS
}

fn encode_interval(array: &dyn Array, row: usize, unit: &IntervalUnit, out: &mut BytesMut) {
    let (months, days, micros) = match unit {
        IntervalUnit::YearMonth => (
            array.as_primitive::<IntervalYearMonthType>().value(row),
            0,
            0,
        ),
        IntervalUnit::DayTime => {
            let v = array.as_primitive::<IntervalDayTimeType>().value(row);
            (0, v.days, i64::from(v.milliseconds) * 1000)
        }
        IntervalUnit::MonthDayNano => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            (v.months, v.days, v.nanoseconds / 1000)
        }
    };
    out.put_i64(micros);
    out.put_i32(days);
    out.put_i32(months);
}

/// pgvector's binary form: dimensions (int16), an unused int16, then each
/// element as a float4.
fn encode_vector(array: &dyn Array, row: usize, out: &mut BytesMut) {
    let values = basalt_query::vector::row_values(array.as_fixed_size_list(), row);
    out.put_i16(values.len() as i16);
    out.put_i16(0);
    for v in values {
        out.put_f32(*v);
    }
}

/// A one-dimensional array: ndim, has-nulls flag, element OID, length,
/// lower bound 1, then each element with its length word.
fn encode_array(array: &dyn Array, row: usize, pg_type: &Type, out: &mut BytesMut) {
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(row),
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        _ => array.as_fixed_size_list().value(row),
    };
    let element = match pg_type.kind() {
        postgres_types::Kind::Array(element) => element.clone(),
        _ => Type::TEXT,
    };
    out.put_i32(i32::from(!values.is_empty()));
    out.put_i32(i32::from(values.null_count() > 0));
    out.put_u32(element.oid());
    if !values.is_empty() {
        out.put_i32(values.len() as i32);
        out.put_i32(1);
    }
    for i in 0..values.len() {
        encode_field(values.as_ref(), i, &element, true, out);
    }
}

/// Appends one field: its length word (-1 for NULL) and its bytes.
pub fn encode_field(
    array: &dyn Array,
    row: usize,
    pg_type: &Type,
    binary: bool,
    out: &mut BytesMut,
) {
    if array.logical_nulls().is_some_and(|n| n.is_null(row)) {
        out.put_i32(-1);
        return;
    }
    let at = out.len();
    out.put_i32(0);
    if binary {
        encode_binary(array, row, pg_type, out);
    } else if let Some(text) = basalt_query::pgtext::format_value(array, row) {
        out.put_slice(text.as_bytes());
    }
    let length = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
}

/// Postgres' binary numeric: digit count, weight, sign, display scale, then
/// base-10000 digits.
pub fn encode_numeric(value: i128, scale: i8, out: &mut BytesMut) {
    let scale = scale.max(0) as usize;
    let digits = value.unsigned_abs().to_string();
    let (integer, fraction) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("", digits.as_str())
    };
    let fraction = format!("{fraction:0>scale$}");
    // Integer digits group from the right, fraction digits from the left.
    let integer_padded = format!("{}{integer}", "0".repeat((4 - integer.len() % 4) % 4));
    let fraction_padded = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| {
                std::str::from_utf8(c)
                    .ok()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    };
    let mut groups = group(&integer_padded);
    let mut weight = groups.len() as i16 - 1;
    groups.extend(group(&fraction_padded));
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if value < 0 { 0x4000 } else { 0 });
    out.put_i16(scale as i16);
    for g in groups {
        out.put_i16(g);
    }
}

/// The text of a binary numeric.
fn decode_numeric(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes(bytes.get(i..i + 2)?.try_into().ok()?))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?).ok()?;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let groups: Vec<i16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let mut integer = String::new();
    for position in 0..=weight.max(0) {
        let g = usize::try_from(position)
            .ok()
            .and_then(|p| groups.get(p))
            .copied()
            .filter(|_| weight >= 0)
            .unwrap_or(0);
        if integer.is_empty() {
            integer = g.to_string();
        } else {
            integer.push_str(&format!("{g:04}"));
        }
    }
    let mut fraction = String::new();
    let mut position = weight + 1;
    while fraction.len() < dscale {
        let g = usize::try_from(position)
            .ok()
            .and_then(|p| groups.get(p))
            .copied()
            .unwrap_or(0);
        fraction.push_str(&format!("{g:04}"));
        position += 1;
    }
    fraction.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if fraction.is_empty() {
        format!("{sign}{integer}")
    } else {
        format!("{sign}{integer}.{fraction}")
    })
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// The SQL type a parameter of `pg_type` is cast to; None leaves a string
/// literal for the statement to coerce (text-like types).
fn cast_type(pg_type: &Type, text: &str) -> Option<String> {
    if let postgres_types::Kind::Array(element) = pg_type.kind() {
        let element = match *element {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => "TEXT".to_string(),
            // The widest type of each family: an int2[] parameter may be
            // bound to a bigint[] column.
            Type::INT2 | Type::INT4 | Type::INT8 => "BIGINT".to_string(),
            Type::NUMERIC => "DOUBLE PRECISION".to_string(),
            ref other => cast_type(other, "")?,
        };
        return Some(format!("{element}[]"));
    }
    Some(
        match *pg_type {
            Type::BOOL => "BOOLEAN",
            Type::INT2 => "SMALLINT",
            Type::INT4 | Type::OID => "INT",
            Type::INT8 => "BIGINT",
            Type::FLOAT4 => "REAL",
            Type::FLOAT8 => "DOUBLE PRECISION",
            Type::NUMERIC => return Some(numeric_type(text)),
            Type::DATE => "DATE",
            Type::TIMESTAMP => "TIMESTAMP",
            Type::TIMESTAMPTZ => "TIMESTAMPTZ",
            Type::TIME => "TIME",
            Type::INTERVAL => "INTERVAL",
            _ => return None,
        }
        .to_string(),
    )
}

/// A decimal type wide enough for the literal's fraction digits.
fn numeric_type(text: &str) -> String {
    let scale = text
        .split_once('.')
        .map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count())
        .unwrap_or(0)
        .min(37);
    format!("NUMERIC(38, {scale})")
}

/// A parameter sent in text format.
pub fn text_param(bytes: &[u8], pg_type: &Type) -> Result<Param> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::sql("22021", "invalid byte sequence for encoding \"UTF8\""))?;
    if *pg_type == Type::BYTEA {
        return basalt_query::pgtext::decode_bytea(text)
            .map(Param::Bytes)
            .ok_or_else(|| {
                Error::sql(
                    "22P02",
                    format!("invalid input syntax for type bytea: \"{text}\""),
                )
            });
    }
    Ok(Param::Text {
        text: text.to_string(),
        sql_type: cast_type(pg_type, text),
    })
}

/// A parameter sent in binary format, turned into its text form.
pub fn binary_param(bytes: &[u8], pg_type: &Type) -> Result<Param> {
    let bad = || {
        Error::sql(
            "22P03",
            format!("incorrect binary data format in bind parameter of type {pg_type}"),
        )
    };
    let fixed = |n: usize| -> Result<&[u8]> {
        if bytes.len() == n {
            Ok(bytes)
        } else {
            Err(bad())
        }
    };
    let be8 = |b: &[u8]| -> [u8; 8] { b.try_into().unwrap_or([0; 8]) };
    let be4 = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap_or([0; 4]) };
    let text = match *pg_type {
        Type::BOOL => if fixed(1)?[0] != 0 { "true" } else { "false" }.to_string(),
        Type::INT2 => i16::from_be_bytes([fixed(2)?[0], bytes[1]]).to_string(),
        Type::INT4 | Type::OID => i32::from_be_bytes(be4(fixed(4)?)).to_string(),
        Type::INT8 => i64::from_be_bytes(be8(fixed(8)?)).to_string(),
        Type::FLOAT4 => {
            basalt_query::pgtext::format_float(f64::from(f32::from_be_bytes(be4(fixed(4)?))))
        }
        Type::FLOAT8 => basalt_query::pgtext::format_float(f64::from_be_bytes(be8(fixed(8)?))),
        Type::NUMERIC => decode_numeric(bytes).ok_or_else(bad)?,
        Type::BYTEA => return Ok(Param::Bytes(bytes.to_vec())),
        Type::DATE => {
            let days = i32::from_be_bytes(be4(fixed(4)?)) + PG_EPOCH_DAYS;
            chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .ok_or_else(bad)?
                .format("%Y-%m-%d")
                .to_string()
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be8(fixed(8)?)).saturating_add(PG_EPOCH_MICROS);
            let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
            let zone = if *pg_type == Type::TIMESTAMPTZ {
                "+00:00"
            } else {
                ""
            };
            format!("{}{zone}", at.format("%Y-%m-%dT%H:%M:%S%.6f"))
        }
        Type::UUID => {
            let b = fixed(16)?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            )
        }
        Type::JSONB => std::str::from_utf8(bytes.get(1..).ok_or_else(bad)?)
            .map_err(|_| bad())?
            .to_string(),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            std::str::from_utf8(bytes).map_err(|_| bad())?.to_string()
        }
        _ => {
            return Err(Error::sql(
                "0A000",
                format!("binary format for parameters of type {pg_type} is not supported"),
            ))
        }
    };
    Ok(Param::Text {
        sql_type: cast_type(pg_type, &text),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_round_trip(value: i128, scale: i8) -> String {
        let mut out = BytesMut::new();
        encode_numeric(value, scale, &mut out);
        decode_numeric(&out).unwrap()
    }

    #[test]
    fn numeric_binary_round_trips() {
        assert_eq!(numeric_round_trip(12345, 2), "123.45");
        assert_eq!(numeric_round_trip(-5, 3), "-0.005");
        assert_eq!(numeric_round_trip(0, 2), "0.00");
        assert_eq!(numeric_round_trip(100_000_000, 0), "100000000");
        assert_eq!(numeric_round_trip(1_000_000_000_001, 4), "100000000.0001");
    }

    #[test]
    fn numeric_binary_matches_postgres_layout() {
        // 123.45 in Postgres: ndigits 2, weight 0, sign +, dscale 2, digits [123, 4500].
        let mut out = BytesMut::new();
        encode_numeric(12345, 2, &mut out);
        assert_eq!(&out[..], &[0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]);
    }

    #[test]
    fn binary_params_become_typed_text() {
        let p = binary_param(&42i64.to_be_bytes(), &Type::INT8).unwrap();
        assert_eq!(
            p,
            Param::Text {
                text: "42".into(),
                sql_type: Some("BIGINT".into())
            }
        );
        let p = binary_param(&0i64.to_be_bytes(), &Type::TIMESTAMPTZ).unwrap();
        assert!(
            matches!(p, Param::Text { ref text, .. } if text == "2000-01-01T00:00:00.000000+00:00")
        );
        assert_eq!(
            binary_param(&[1, 2], &Type::INT4).unwrap_err().sqlstate(),
            "22P03"
        );
        assert_eq!(
            text_param(b"\\x00ff", &Type::BYTEA).unwrap(),
            Param::Bytes(vec![0, 255])
        );
    }
}
