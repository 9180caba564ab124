//! Arrow schema encoding (FORMAT.md, "Schema").
//!
//! Basalt writes its own compact type descriptors rather than Arrow IPC
//! flatbuffers so that every byte is specified in FORMAT.md and decoding damaged
//! input returns an error instead of panicking.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

pub fn encode_schema(schema: &Schema, e: &mut Encoder) -> Result<()> {
    e.u32(schema.fields().len() as u32);
    for field in schema.fields() {
        encode_field(field, e)?;
    }
    encode_metadata(schema.metadata(), e);
    Ok(())
}

pub fn decode_schema(d: &mut Decoder<'_>) -> Result<SchemaRef> {
    let n = d.count(6)?;
    let fields = (0..n)
        .map(|_| decode_field(d))
        .collect::<Result<Vec<_>>>()?;
    let metadata = decode_metadata(d)?;
    Ok(Arc::new(Schema::new_with_metadata(fields, metadata)))
}

pub fn schema_to_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let mut e = Encoder::new();
    encode_schema(schema, &mut e)?;
    Ok(e.into_inner())
}

pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    let mut d = Decoder::new(bytes);
    let schema = decode_schema(&mut d)?;
    d.expect_end("schema")?;
    Ok(schema)
}

fn encode_field(field: &Field, e: &mut Encoder) -> Result<()> {
    e.str(field.name());
    e.u8(field.is_nullable() as u8);
    encode_type(field.data_type(), e)?;
    encode_metadata(field.metadata(), e);
    Ok(())
}

fn decode_field(d: &mut Decoder<'_>) -> Result<Field> {
    let name = d.str()?.to_string();
    let nullable = d.bool()?;
    let data_type = decode_type(d)?;
    let metadata = decode_metadata(d)?;
    Ok(Field::new(name, data_type, nullable).with_metadata(metadata))
}

fn encode_metadata(metadata: &HashMap<String, String>, e: &mut Encoder) {
    let mut entries: Vec<_> = metadata.iter().collect();
    entries.sort();
    e.u32(entries.len() as u32);
    for (k, v) in entries {
        e.str(k);
        e.str(v);
    }
}

fn decode_metadata(d: &mut Decoder<'_>) -> Result<HashMap<String, String>> {
    let n = d.count(8)?;
    (0..n)
        .map(|_| Ok((d.str()?.to_string(), d.str()?.to_string())))
        .collect()
}

fn time_unit_code(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn decode_time_unit(d: &mut Decoder<'_>) -> Result<TimeUnit> {
    Ok(match d.u8()? {
        0 => TimeUnit::Second,
        1 => TimeUnit::Millisecond,
        2 => TimeUnit::Microsecond,
        3 => TimeUnit::Nanosecond,
        other => return Err(d.error(format!("unknown time unit {other}"))),
    })
}

/// Type tags; FORMAT.md lists the same table.
pub fn encode_type(dt: &DataType, e: &mut Encoder) -> Result<()> {
    match dt {
        DataType::Null => e.u8(0),
        DataType::Boolean => e.u8(1),
        DataType::Int8 => e.u8(2),
        DataType::Int16 => e.u8(3),
        DataType::Int32 => e.u8(4),
        DataType::Int64 => e.u8(5),
        DataType::UInt8 => e.u8(6),
        DataType::UInt16 => e.u8(7),
        DataType::UInt32 => e.u8(8),
        DataType::UInt64 => e.u8(9),
        DataType::Float32 => e.u8(10),
        DataType::Float64 => e.u8(11),
        DataType::Utf8 => e.u8(12),
        DataType::Binary => e.u8(13),
        DataType::Date32 => e.u8(14),
        DataType::Timestamp(unit, tz) => {
            e.u8(15);
            e.u8(time_unit_code(unit));
            match tz {
                Some(tz) => {
                    e.u8(1);
                    e.str(tz);
                }
                None => e.u8(0),
            }
        }
        DataType::Decimal128(precision, scale) => {
            e.u8(16);
            e.u8(*precision);
            e.u8(*scale as u8);
        }
        DataType::List(field) => {
            e.u8(17);
            encode_field(field, e)?;
        }
        DataType::FixedSizeList(field, size) => {
            e.u8(18);
            e.u32(*size as u32);
            encode_field(field, e)?;
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => e.u8(19),
        DataType::LargeUtf8 => e.u8(20),
        DataType::LargeBinary => e.u8(21),
        DataType::FixedSizeBinary(size) => {
            e.u8(22);
            e.u32(*size as u32);
        }
        DataType::Time64(unit) => {
            e.u8(23);
            e.u8(time_unit_code(unit));
        }
        DataType::Struct(fields) => {
            e.u8(24);
            e.u32(fields.len() as u32);
            for f in fields {
                encode_field(f, e)?;
            }
        }
        DataType::Duration(unit) => {
            e.u8(25);
            e.u8(time_unit_code(unit));
        }
        DataType::Date64 => e.u8(26),
        other => return Err(Error::UnsupportedType(other.to_string())),
    }
    Ok(())
}

pub fn decode_type(d: &mut Decoder<'_>) -> Result<DataType> {
    let tag_offset = d.position();
    Ok(match d.u8()? {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int8,
        3 => DataType::Int16,
        4 => DataType::Int32,
        5 => DataType::Int64,
        6 => DataType::UInt8,
        7 => DataType::UInt16,
        8 => DataType::UInt32,
        9 => DataType::UInt64,
        10 => DataType::Float32,
        11 => DataType::Float64,
        12 => DataType::Utf8,
        13 => DataType::Binary,
        14 => DataType::Date32,
        15 => {
            let unit = decode_time_unit(d)?;
            let tz = if d.bool()? {
                Some(Arc::from(d.str()?))
            } else {
                None
            };
            DataType::Timestamp(unit, tz)
        }
        16 => DataType::Decimal128(d.u8()?, d.u8()? as i8),
        17 => DataType::List(Arc::new(decode_field(d)?)),
        18 => {
            let size = d.u32()? as i32;
            DataType::FixedSizeList(Arc::new(decode_field(d)?), size)
        }
        19 => DataType::Interval(IntervalUnit::MonthDayNano),
        20 => DataType::LargeUtf8,
        21 => DataType::LargeBinary,
        22 => DataType::FixedSizeBinary(d.u32()? as i32),
        23 => DataType::Time64(decode_time_unit(d)?),
        24 => {
            let n = d.count(6)?;
            let fields = (0..n)
                .map(|_| decode_field(d))
                .collect::<Result<Vec<_>>>()?;
            DataType::Struct(Fields::from(fields))
        }
        25 => DataType::Duration(decode_time_unit(d)?),
        26 => DataType::Date64,
        other => {
            return Err(Error::corrupt(
                tag_offset,
                format!("unknown type tag {other}"),
            ))
        }
    })
}

/// Whether Basalt can store a column of this type.
pub fn is_supported_type(dt: &DataType) -> bool {
    encode_type(dt, &mut Encoder::new()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn every_type_schema() -> Schema {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let mut md = HashMap::new();
        md.insert("basalt.column_id".to_string(), "7".to_string());
        Schema::new(vec![
            Field::new("null", DataType::Null, true),
            Field::new("b", DataType::Boolean, false),
            Field::new("i8", DataType::Int8, true),
            Field::new("i16", DataType::Int16, true),
            Field::new("i32", DataType::Int32, true).with_metadata(md),
            Field::new("i64", DataType::Int64, false),
            Field::new("u8", DataType::UInt8, true),
            Field::new("u16", DataType::UInt16, true),
            Field::new("u32", DataType::UInt32, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("d", DataType::Date32, true),
            Field::new("d64", DataType::Date64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "tstz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("dec", DataType::Decimal128(12, 2), true),
            Field::new("list", DataType::List(item.clone()), true),
            Field::new("vec", DataType::FixedSizeList(item, 3), true),
            Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
            Field::new("ls", DataType::LargeUtf8, true),
            Field::new("lb", DataType::LargeBinary, true),
            Field::new("uuid", DataType::FixedSizeBinary(16), true),
            Field::new("t", DataType::Time64(TimeUnit::Nanosecond), true),
            Field::new(
                "st",
                DataType::Struct(Fields::from(vec![Field::new("x", DataType::Float64, true)])),
                true,
            ),
            Field::new("dur", DataType::Duration(TimeUnit::Second), true),
        ])
    }

    #[test]
    fn every_type_round_trips() {
        let schema = every_type_schema();
        let bytes = schema_to_bytes(&schema).unwrap();
        assert_eq!(*schema_from_bytes(&bytes).unwrap(), schema);
    }

    #[test]
    fn damaged_schema_is_an_error_not_a_panic() {
        let bytes = schema_to_bytes(&every_type_schema()).unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xFF;
            let _ = schema_from_bytes(&damaged);
            let _ = schema_from_bytes(&bytes[..i]);
        }
    }

    #[test]
    fn unsupported_type_is_refused() {
        assert!(!is_supported_type(&DataType::Float16));
    }
}
