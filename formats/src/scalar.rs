//! Single values: zone-map bounds and predicate operands
//! (FORMAT.md, "Scalar").

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::*;
use arrow_schema::{DataType, TimeUnit};

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

/// A single non-null value in one of the physical families Basalt compares.
/// Dates, times and timestamps are `Int`; strings and binary are `Bytes`.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Boolean(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Decimal(i128),
    Bytes(Vec<u8>),
}

/// Zone-map bounds longer than this are not stored (a truncated max is no bound).
pub const MAX_STAT_BYTES: usize = 64;

impl Scalar {
    /// Compares two values of the same family; `None` across families or for NaN.
    pub fn partial_cmp_same(&self, other: &Scalar) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Boolean(a), Scalar::Boolean(b)) => Some(a.cmp(b)),
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            (Scalar::UInt(a), Scalar::UInt(b)) => Some(a.cmp(b)),
            (Scalar::Float(a), Scalar::Float(b)) => a.partial_cmp(b),
            (Scalar::Decimal(a), Scalar::Decimal(b)) => Some(a.cmp(b)),
            (Scalar::Bytes(a), Scalar::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    pub fn encode(&self, e: &mut Encoder) {
        match self {
            Scalar::Boolean(v) => {
                e.u8(1);
                e.u8(*v as u8);
            }
            Scalar::Int(v) => {
                e.u8(2);
                e.i64(*v);
            }
            Scalar::UInt(v) => {
                e.u8(3);
                e.u64(*v);
            }
            Scalar::Float(v) => {
                e.u8(4);
                e.u64(v.to_bits());
            }
            Scalar::Decimal(v) => {
                e.u8(5);
                e.i128(*v);
            }
            Scalar::Bytes(v) => {
                e.u8(6);
                e.bytes(v);
            }
        }
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<Scalar> {
        Ok(match d.u8()? {
            1 => Scalar::Boolean(d.bool()?),
            2 => Scalar::Int(d.i64()?),
            3 => Scalar::UInt(d.u64()?),
            4 => Scalar::Float(f64::from_bits(d.u64()?)),
            5 => Scalar::Decimal(d.i128()?),
            6 => Scalar::Bytes(d.bytes()?.to_vec()),
            other => return Err(d.error(format!("unknown scalar tag {other}"))),
        })
    }

    /// A one-element array of `data_type` holding this value, for comparison kernels.
    pub fn to_array(&self, data_type: &DataType) -> Result<ArrayRef> {
        let mismatch = || Error::UnsupportedType(format!("{self:?} as {data_type}"));
        let array: ArrayRef =
            match (self, data_type) {
                (Scalar::Boolean(v), DataType::Boolean) => Arc::new(BooleanArray::from(vec![*v])),
                (Scalar::Int(v), DataType::Int8) => {
                    Arc::new(Int8Array::from(vec![
                        i8::try_from(*v).map_err(|_| mismatch())?
                    ]))
                }
                (Scalar::Int(v), DataType::Int16) => Arc::new(Int16Array::from(vec![
                    i16::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::Int(v), DataType::Int32) => Arc::new(Int32Array::from(vec![
                    i32::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::Int(v), DataType::Int64) => Arc::new(Int64Array::from(vec![*v])),
                (Scalar::Int(v), DataType::Date32) => Arc::new(Date32Array::from(vec![
                    i32::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::Int(v), DataType::Date64) => Arc::new(Date64Array::from(vec![*v])),
                (Scalar::Int(v), DataType::Timestamp(unit, tz)) => {
                    let a: ArrayRef = match unit {
                        TimeUnit::Second => Arc::new(
                            TimestampSecondArray::from(vec![*v]).with_timezone_opt(tz.clone()),
                        ),
                        TimeUnit::Millisecond => Arc::new(
                            TimestampMillisecondArray::from(vec![*v]).with_timezone_opt(tz.clone()),
                        ),
                        TimeUnit::Microsecond => Arc::new(
                            TimestampMicrosecondArray::from(vec![*v]).with_timezone_opt(tz.clone()),
                        ),
                        TimeUnit::Nanosecond => Arc::new(
                            TimestampNanosecondArray::from(vec![*v]).with_timezone_opt(tz.clone()),
                        ),
                    };
                    a
                }
                (Scalar::UInt(v), DataType::UInt8) => Arc::new(UInt8Array::from(vec![
                    u8::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::UInt(v), DataType::UInt16) => Arc::new(UInt16Array::from(vec![
                    u16::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::UInt(v), DataType::UInt32) => Arc::new(UInt32Array::from(vec![
                    u32::try_from(*v).map_err(|_| mismatch())?,
                ])),
                (Scalar::UInt(v), DataType::UInt64) => Arc::new(UInt64Array::from(vec![*v])),
                (Scalar::Float(v), DataType::Float32) => {
                    Arc::new(Float32Array::from(vec![*v as f32]))
                }
                (Scalar::Float(v), DataType::Float64) => Arc::new(Float64Array::from(vec![*v])),
                (Scalar::Decimal(v), DataType::Decimal128(p, s)) => {
                    Arc::new(Decimal128Array::from(vec![*v]).with_precision_and_scale(*p, *s)?)
                }
                (Scalar::Bytes(v), DataType::Utf8) => Arc::new(StringArray::from(vec![
                    std::str::from_utf8(v).map_err(|_| mismatch())?,
                ])),
                (Scalar::Bytes(v), DataType::LargeUtf8) => Arc::new(LargeStringArray::from(vec![
                    std::str::from_utf8(v).map_err(|_| mismatch())?,
                ])),
                (Scalar::Bytes(v), DataType::Binary) => {
                    Arc::new(BinaryArray::from(vec![v.as_slice()]))
                }
                (Scalar::Bytes(v), DataType::LargeBinary) => {
                    Arc::new(LargeBinaryArray::from(vec![v.as_slice()]))
                }
                _ => return Err(mismatch()),
            };
        Ok(array)
    }
}

/// Minimum and maximum non-null value of an array, where its type has an order
/// Basalt keeps statistics for. NaN is ignored; bounds over
/// [`MAX_STAT_BYTES`] are left out.
pub fn min_max(array: &dyn Array) -> (Option<Scalar>, Option<Scalar>) {
    macro_rules! prim {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            let mut it = a.iter().flatten().map($conv);
            match it.next() {
                None => (None, None),
                Some(first) => {
                    let (lo, hi) = it.fold((first, first), |(lo, hi), v| {
                        (if v < lo { v } else { lo }, if v > hi { v } else { hi })
                    });
                    (Some(Scalar::$variant(lo)), Some(Scalar::$variant(hi)))
                }
            }
        }};
    }
    match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean();
            let (t, f) = (a.true_count(), a.false_count());
            let lo = if f > 0 {
                Some(false)
            } else if t > 0 {
                Some(true)
            } else {
                None
            };
            let hi = if t > 0 {
                Some(true)
            } else if f > 0 {
                Some(false)
            } else {
                None
            };
            (lo.map(Scalar::Boolean), hi.map(Scalar::Boolean))
        }
        DataType::Int8 => prim!(Int8Type, Int, |v| v as i64),
        DataType::Int16 => prim!(Int16Type, Int, |v| v as i64),
        DataType::Int32 => prim!(Int32Type, Int, |v| v as i64),
        DataType::Int64 => prim!(Int64Type, Int, |v| v),
        DataType::Date32 => prim!(Date32Type, Int, |v| v as i64),
        DataType::Date64 => prim!(Date64Type, Int, |v| v),
        DataType::Timestamp(TimeUnit::Second, _) => prim!(TimestampSecondType, Int, |v| v),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            prim!(TimestampMillisecondType, Int, |v| v)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            prim!(TimestampMicrosecondType, Int, |v| v)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => prim!(TimestampNanosecondType, Int, |v| v),
        DataType::UInt8 => prim!(UInt8Type, UInt, |v| v as u64),
        DataType::UInt16 => prim!(UInt16Type, UInt, |v| v as u64),
        DataType::UInt32 => prim!(UInt32Type, UInt, |v| v as u64),
        DataType::UInt64 => prim!(UInt64Type, UInt, |v| v),
        DataType::Decimal128(_, _) => prim!(Decimal128Type, Decimal, |v| v),
        DataType::Float32 => float_min_max(
            array
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .map(|v| v as f64),
        ),
        DataType::Float64 => float_min_max(array.as_primitive::<Float64Type>().iter().flatten()),
        DataType::Utf8 => {
            bytes_min_max(array.as_string::<i32>().iter().flatten().map(str::as_bytes))
        }
        DataType::LargeUtf8 => {
            bytes_min_max(array.as_string::<i64>().iter().flatten().map(str::as_bytes))
        }
        DataType::Binary => bytes_min_max(array.as_binary::<i32>().iter().flatten()),
        DataType::LargeBinary => bytes_min_max(array.as_binary::<i64>().iter().flatten()),
        _ => (None, None),
    }
}

fn float_min_max(values: impl Iterator<Item = f64>) -> (Option<Scalar>, Option<Scalar>) {
    let mut bounds: Option<(f64, f64)> = None;
    for v in values.filter(|v| !v.is_nan()) {
        bounds = Some(match bounds {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    match bounds {
        // -0.0 and 0.0 compare equal; widen so either sign is inside the bounds.
        Some((lo, hi)) => (
            Some(Scalar::Float(if lo == 0.0 { -0.0 } else { lo })),
            Some(Scalar::Float(if hi == 0.0 { 0.0 } else { hi })),
        ),
        None => (None, None),
    }
}

fn bytes_min_max<'a>(values: impl Iterator<Item = &'a [u8]>) -> (Option<Scalar>, Option<Scalar>) {
    let mut bounds: Option<(&[u8], &[u8])> = None;
    for v in values {
        bounds = Some(match bounds {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    match bounds {
        Some((lo, hi)) => {
            // A prefix of the minimum is still a lower bound; a prefix of the
            // maximum is not an upper bound, so a long maximum is dropped.
            let lo = &lo[..lo.len().min(MAX_STAT_BYTES)];
            let hi = (hi.len() <= MAX_STAT_BYTES).then(|| Scalar::Bytes(hi.to_vec()));
            (Some(Scalar::Bytes(lo.to_vec())), hi)
        }
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_round_trip() {
        for s in [
            Scalar::Boolean(true),
            Scalar::Int(-7),
            Scalar::UInt(7),
            Scalar::Float(2.5),
            Scalar::Decimal(-(1 << 90)),
            Scalar::Bytes(b"abc".to_vec()),
        ] {
            let mut e = Encoder::new();
            s.encode(&mut e);
            let bytes = e.into_inner();
            assert_eq!(Scalar::decode(&mut Decoder::new(&bytes)).unwrap(), s);
        }
    }

    #[test]
    fn min_max_of_common_types() {
        let a = Int32Array::from(vec![Some(5), None, Some(-3), Some(9)]);
        assert_eq!(min_max(&a), (Some(Scalar::Int(-3)), Some(Scalar::Int(9))));
        let f = Float64Array::from(vec![f64::NAN, 1.0, -2.0]);
        assert_eq!(
            min_max(&f),
            (Some(Scalar::Float(-2.0)), Some(Scalar::Float(1.0)))
        );
        let s = StringArray::from(vec!["pear", "apple", "zoo"]);
        assert_eq!(
            min_max(&s),
            (
                Some(Scalar::Bytes(b"apple".to_vec())),
                Some(Scalar::Bytes(b"zoo".to_vec()))
            )
        );
        let long = "x".repeat(100);
        let s = StringArray::from(vec![long.as_str()]);
        let (lo, hi) = min_max(&s);
        assert_eq!(lo, Some(Scalar::Bytes(vec![b'x'; MAX_STAT_BYTES])));
        assert_eq!(hi, None);
        let nulls = Int64Array::from(vec![None, None]);
        assert_eq!(min_max(&nulls), (None, None));
    }

    #[test]
    fn to_array_checks_range() {
        assert!(Scalar::Int(1 << 40).to_array(&DataType::Int32).is_err());
        assert_eq!(Scalar::Int(3).to_array(&DataType::Int16).unwrap().len(), 1);
    }
}
