//! Order-preserving key encoding (FORMAT.md, "Key encoding").
//!
//! Primary-key values are encoded so that comparing the bytes compares the
//! tuples: memtables, segments, bloom filters and key ranges all work on these
//! bytes and never need the key's types.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};

use crate::error::{Error, Result};

/// Key of a row in a table without a primary key: its hidden row id.
pub fn row_id_key(row_id: u64) -> [u8; 8] {
    row_id.to_be_bytes()
}

pub fn row_id_from_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Whether a column of this type can be part of a primary key.
pub fn is_key_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::FixedSizeBinary(_)
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time64(_)
            | DataType::Decimal128(_, _)
    )
}

/// Appends the encoding of row `row` of each key column to `out`.
pub fn encode_key(columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) -> Result<()> {
    for column in columns {
        if column.is_null(row) {
            return Err(Error::InvalidKey("primary key value is null".into()));
        }
        encode_value(column.as_ref(), row, out)?;
    }
    Ok(())
}

/// Encodes every row's key into one contiguous buffer plus end offsets.
pub fn encode_keys(columns: &[ArrayRef], num_rows: usize) -> Result<Vec<Vec<u8>>> {
    (0..num_rows)
        .map(|row| {
            let mut key = Vec::with_capacity(16);
            encode_key(columns, row, &mut key)?;
            Ok(key)
        })
        .collect()
}

fn signed_be<const N: usize>(bytes: [u8; N], out: &mut Vec<u8>) {
    let mut bytes = bytes;
    bytes[0] ^= 0x80;
    out.extend_from_slice(&bytes);
}

fn escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn float_bits(bits: u64, sign: u64) -> u64 {
    if bits & sign != 0 {
        !bits
    } else {
        bits | sign
    }
}

fn encode_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<()> {
    match array.data_type() {
        DataType::Boolean => out.push(array.as_boolean().value(row) as u8),
        DataType::Int8 => signed_be(
            array.as_primitive::<Int8Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Int16 => signed_be(
            array.as_primitive::<Int16Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Int32 => signed_be(
            array.as_primitive::<Int32Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Int64 => signed_be(
            array.as_primitive::<Int64Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Date32 => signed_be(
            array.as_primitive::<Date32Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Date64 => signed_be(
            array.as_primitive::<Date64Type>().value(row).to_be_bytes(),
            out,
        ),
        DataType::Time64(TimeUnit::Microsecond) => signed_be(
            array
                .as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_be_bytes(),
            out,
        ),
        DataType::Time64(_) => signed_be(
            array
                .as_primitive::<Time64NanosecondType>()
                .value(row)
                .to_be_bytes(),
            out,
        ),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            signed_be(v.to_be_bytes(), out)
        }
        DataType::Decimal128(_, _) => signed_be(
            array
                .as_primitive::<Decimal128Type>()
                .value(row)
                .to_be_bytes(),
            out,
        ),
        DataType::UInt8 => out.push(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => {
            out.extend_from_slice(&array.as_primitive::<UInt16Type>().value(row).to_be_bytes())
        }
        DataType::UInt32 => {
            out.extend_from_slice(&array.as_primitive::<UInt32Type>().value(row).to_be_bytes())
        }
        DataType::UInt64 => {
            out.extend_from_slice(&array.as_primitive::<UInt64Type>().value(row).to_be_bytes())
        }
        DataType::Float32 => {
            let bits = array.as_primitive::<Float32Type>().value(row).to_bits() as u64;
            out.extend_from_slice(&(float_bits(bits << 32, 1 << 63) >> 32).to_be_bytes()[4..]);
        }
        DataType::Float64 => {
            let bits = array.as_primitive::<Float64Type>().value(row).to_bits();
            out.extend_from_slice(&float_bits(bits, 1 << 63).to_be_bytes());
        }
        DataType::Utf8 => escaped(array.as_string::<i32>().value(row).as_bytes(), out),
        DataType::LargeUtf8 => escaped(array.as_string::<i64>().value(row).as_bytes(), out),
        DataType::Binary => escaped(array.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => escaped(array.as_binary::<i64>().value(row), out),
        DataType::FixedSizeBinary(_) => {
            out.extend_from_slice(array.as_fixed_size_binary().value(row))
        }
        other => return Err(Error::InvalidKey(format!("type {other} cannot be a key"))),
    }
    Ok(())
}

/// The first position in `range` at which `holds` is false (`holds` must be
/// true on a prefix of it), by binary search: for searches over sorted keys
/// that are reached by position rather than held in a slice.
pub fn partition_point(range: std::ops::Range<usize>, holds: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::*;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    fn keys_of(columns: Vec<ArrayRef>) -> Vec<Vec<u8>> {
        let n = columns[0].len();
        encode_keys(&columns, n).unwrap()
    }

    fn assert_order_preserved<T: PartialOrd + std::fmt::Debug>(values: &[T], keys: &[Vec<u8>]) {
        for i in 0..values.len() {
            for j in 0..values.len() {
                let by_value = values[i].partial_cmp(&values[j]).unwrap();
                assert_eq!(
                    keys[i].cmp(&keys[j]),
                    by_value,
                    "{:?} vs {:?}",
                    values[i],
                    values[j]
                );
            }
        }
    }

    #[test]
    fn integers_keep_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut values: Vec<i64> = (0..200).map(|_| rng.gen()).collect();
        values.extend([i64::MIN, -1, 0, 1, i64::MAX]);
        let keys = keys_of(vec![Arc::new(Int64Array::from(values.clone()))]);
        assert_order_preserved(&values, &keys);
        let small: Vec<i32> = values.iter().map(|v| *v as i32).collect();
        let keys = keys_of(vec![Arc::new(Int32Array::from(small.clone()))]);
        assert_order_preserved(&small, &keys);
    }

    #[test]
    fn floats_keep_order() {
        let values = vec![
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.5,
            1.0,
            1e300,
            f64::INFINITY,
        ];
        let keys = keys_of(vec![Arc::new(Float64Array::from(values.clone()))]);
        assert_order_preserved(&values, &keys);
        let values32: Vec<f32> = values
            .iter()
            .map(|v| *v as f32)
            .filter(|v| *v != 0.0 || v.is_sign_positive())
            .collect();
        let keys = keys_of(vec![Arc::new(Float32Array::from(values32.clone()))]);
        assert_order_preserved(&values32, &keys);
    }

    #[test]
    fn strings_and_tuples_keep_order() {
        let a = vec!["", "a", "a\0", "a\0b", "ab", "b", "\u{ff}"];
        let keys = keys_of(vec![Arc::new(StringArray::from(a.clone()))]);
        assert_order_preserved(&a, &keys);
        let pairs = [("a", 2i32), ("a", 10), ("ab", -5), ("b", 0)];
        let keys = keys_of(vec![
            Arc::new(StringArray::from(
                pairs.iter().map(|p| p.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                pairs.iter().map(|p| p.1).collect::<Vec<_>>(),
            )),
        ]);
        assert_order_preserved(&pairs, &keys);
    }

    #[test]
    fn null_key_is_refused() {
        let col: ArrayRef = Arc::new(Int32Array::from(vec![None]));
        assert!(matches!(encode_keys(&[col], 1), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn row_ids_round_trip() {
        assert_eq!(row_id_from_key(&row_id_key(42)), Some(42));
        assert!(row_id_key(1) < row_id_key(256));
    }
}
