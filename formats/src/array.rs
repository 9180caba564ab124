//! Arrow array encoding: the payload of segment column chunks and WAL batches
//! (FORMAT.md, "Array payload").
//!
//! The payload keeps Arrow's own buffer layout, each buffer 16-byte aligned, so an
//! uncompressed payload inside a memory-mapped file decodes into Arrow arrays
//! that point straight at the mapping without copying.

use arrow_array::{make_array, ArrayRef};
use arrow_buffer::{Buffer, MutableBuffer};
use arrow_data::{transform::MutableArrayData, ArrayData, ArrayDataBuilder};
use arrow_schema::DataType;

use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};

/// Buffers inside a payload start at multiples of this (i128 needs 16).
pub const BUFFER_ALIGN: usize = 16;

/// Compression codec of a stored payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Lz4 = 1,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// Serializes an array into an uncompressed payload.
pub fn encode_array(array: &ArrayData) -> Result<Vec<u8>> {
    let mut scratch = ArrayScratch::default();
    encode_parts(array, &mut scratch)?;
    let mut out = Encoder::with_capacity(scratch.payload_len());
    scratch.write_payload(&mut out);
    Ok(out.into_inner())
}

/// Appends [`encode_array`]'s payload to `out` as a length-prefixed byte
/// string ([`Encoder::bytes`]), building it in `scratch`: a WAL record of
/// one-row batches made three buffers per column otherwise.
pub fn encode_array_into(
    array: &ArrayData,
    scratch: &mut ArrayScratch,
    out: &mut Encoder,
) -> Result<()> {
    encode_parts(array, scratch)?;
    out.u32(scratch.payload_len() as u32);
    scratch.write_payload(out);
    Ok(())
}

/// The metadata and buffer region of a payload being encoded, kept between
/// payloads for their allocations.
#[derive(Default)]
pub struct ArrayScratch {
    meta: Encoder,
    region: Encoder,
}

impl ArrayScratch {
    /// Zero bytes after the metadata, so the region starts aligned
    /// relative to the payload's start.
    fn padding(&self) -> usize {
        let head = 4 + self.meta.len();
        (BUFFER_ALIGN - head % BUFFER_ALIGN) % BUFFER_ALIGN
    }

    fn payload_len(&self) -> usize {
        4 + self.meta.len() + self.padding() + self.region.len()
    }

    fn write_payload(&self, out: &mut Encoder) {
        out.u32(self.meta.len() as u32);
        out.raw(&self.meta.buf);
        out.raw(&[0u8; BUFFER_ALIGN][..self.padding()]);
        out.raw(&self.region.buf);
    }
}

fn encode_parts(array: &ArrayData, scratch: &mut ArrayScratch) -> Result<()> {
    scratch.meta.buf.clear();
    scratch.region.buf.clear();
    if has_offsets(array) {
        encode_node(&normalized(array)?, &mut scratch.meta, &mut scratch.region);
    } else {
        encode_node(array, &mut scratch.meta, &mut scratch.region);
    }
    Ok(())
}

/// Decodes a payload produced by [`encode_array`]. `payload` must start at a
/// 16-byte aligned address (as it does in a segment or after decompression);
/// the returned array shares its memory.
pub fn decode_array(payload: &Buffer, data_type: &DataType) -> Result<ArrayRef> {
    let bytes = payload.as_slice();
    let mut d = Decoder::new(bytes);
    let meta_len = d.u32()? as usize;
    let meta = d.take(meta_len)?;
    d.skip_to_alignment(BUFFER_ALIGN)?;
    let region_start = d.position();
    let region = payload.slice(region_start);
    let mut meta_decoder = Decoder::new(meta);
    let data = decode_node(&mut meta_decoder, &region, data_type).map_err(|e| e.at_base(4))?;
    meta_decoder
        .expect_end("array metadata")
        .map_err(|e| e.at_base(4))?;
    Ok(make_array(data))
}

/// Compresses a payload when that saves at least an eighth of it.
pub fn compress(raw: Vec<u8>) -> (Codec, Vec<u8>) {
    if raw.len() < 256 {
        return (Codec::None, raw);
    }
    // A large payload whose middle does not compress is stored as it is
    // without compressing the whole (lz4 is most of a bulk load's work).
    const SAMPLE: usize = 32 << 10;
    if raw.len() >= 4 * SAMPLE {
        let start = raw.len() / 2 - SAMPLE / 2;
        let sample = &raw[start..start + SAMPLE];
        if lz4_flex::block::compress(sample).len() > SAMPLE - SAMPLE / 16 {
            return (Codec::None, raw);
        }
    }
    let compressed = lz4_flex::block::compress(&raw);
    if compressed.len() <= raw.len() - raw.len() / 8 {
        (Codec::Lz4, compressed)
    } else {
        (Codec::None, raw)
    }
}

/// Turns stored bytes back into an aligned payload buffer. For `Codec::None`
/// this is the input itself (zero copy).
pub fn decompress(codec: Codec, stored: Buffer, raw_len: usize) -> Result<Buffer> {
    match codec {
        Codec::None => {
            if stored.len() != raw_len {
                return Err(Error::corrupt(0, "uncompressed length mismatch"));
            }
            Ok(stored)
        }
        Codec::Lz4 => {
            let mut out = MutableBuffer::from_len_zeroed(raw_len);
            let written = lz4_flex::block::decompress_into(stored.as_slice(), out.as_slice_mut())
                .map_err(|e| Error::corrupt(0, format!("lz4: {e}")))?;
            if written != raw_len {
                return Err(Error::corrupt(0, "decompressed length mismatch"));
            }
            Ok(out.into())
        }
    }
}

/// Arrays with non-zero offsets anywhere in their tree, or whose offsets
/// reach only part of their values, are copied so the payload describes
/// buffers from their first byte and holds only the slice's own values.
fn normalized(data: &ArrayData) -> Result<ArrayData> {
    let mut copy = MutableArrayData::new(vec![data], false, data.len());
    copy.try_extend(0, 0, data.len())?;
    Ok(copy.freeze())
}

fn has_offsets(data: &ArrayData) -> bool {
    data.offset() != 0
        || data.nulls().is_some_and(|n| n.offset() != 0)
        || !offsets_span_all_values(data)
        || data.child_data().iter().any(has_offsets)
}

/// False for a slice of a variable-size array: slicing moves its offsets
/// but keeps the parent's whole values, which would otherwise be stored
/// (and compressed) again with every row group cut from one batch.
fn offsets_span_all_values(data: &ArrayData) -> bool {
    fn spans<T: Copy + TryInto<usize>>(offsets: &[T], values_len: usize) -> bool {
        match (offsets.first(), offsets.last()) {
            (Some(&first), Some(&last)) => {
                first.try_into().ok() == Some(0) && last.try_into().ok() == Some(values_len)
            }
            _ => true,
        }
    }
    let child_len = || data.child_data().first().map_or(0, ArrayData::len);
    match data.data_type() {
        DataType::Utf8 | DataType::Binary => spans(data.buffer::<i32>(0), data.buffers()[1].len()),
        DataType::LargeUtf8 | DataType::LargeBinary => {
            spans(data.buffer::<i64>(0), data.buffers()[1].len())
        }
        DataType::List(_) | DataType::Map(..) => spans(data.buffer::<i32>(0), child_len()),
        DataType::LargeList(_) => spans(data.buffer::<i64>(0), child_len()),
        _ => true,
    }
}

fn put_buffer(bytes: &[u8], meta: &mut Encoder, region: &mut Encoder) {
    meta.u64(region.len() as u64);
    meta.u64(bytes.len() as u64);
    region.raw(bytes);
    region.pad_to(BUFFER_ALIGN);
}

fn encode_node(data: &ArrayData, meta: &mut Encoder, region: &mut Encoder) {
    meta.u64(data.len() as u64);
    match data.nulls() {
        Some(nulls) if nulls.null_count() > 0 => {
            meta.u8(1);
            // A slice's bitmap may be its parent's; only its own bits go out.
            let bytes = nulls.buffer().as_slice();
            put_buffer(
                &bytes[..data.len().div_ceil(8).min(bytes.len())],
                meta,
                region,
            );
        }
        _ => meta.u8(0),
    }
    meta.u8(data.buffers().len() as u8);
    for buffer in data.buffers() {
        put_buffer(buffer.as_slice(), meta, region);
    }
    meta.u8(data.child_data().len() as u8);
    for child in data.child_data() {
        encode_node(child, meta, region);
    }
}

fn get_buffer(meta: &mut Decoder<'_>, region: &Buffer) -> Result<Buffer> {
    let at = meta.position();
    let offset = meta.u64()? as usize;
    let len = meta.u64()? as usize;
    if !offset.is_multiple_of(BUFFER_ALIGN)
        || offset.checked_add(len).is_none_or(|end| end > region.len())
    {
        return Err(Error::corrupt(at, "buffer reference outside the payload"));
    }
    Ok(region.slice_with_length(offset, len))
}

fn child_types(dt: &DataType) -> Vec<DataType> {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            vec![f.data_type().clone()]
        }
        DataType::Struct(fields) => fields.iter().map(|f| f.data_type().clone()).collect(),
        _ => vec![],
    }
}

fn decode_node(meta: &mut Decoder<'_>, region: &Buffer, dt: &DataType) -> Result<ArrayData> {
    let start = meta.position();
    let len = meta.u64()? as usize;
    let nulls = if meta.bool()? {
        let nulls = get_buffer(meta, region)?;
        if nulls.len().saturating_mul(8) < len {
            return Err(Error::corrupt(
                start,
                "validity bitmap shorter than the array",
            ));
        }
        Some(nulls)
    } else {
        None
    };
    let n_buffers = meta.u8()? as usize;
    let buffers = (0..n_buffers)
        .map(|_| get_buffer(meta, region))
        .collect::<Result<Vec<_>>>()?;
    let n_children = meta.u8()? as usize;
    let types = child_types(dt);
    if n_children != types.len() {
        return Err(Error::corrupt(
            start,
            format!(
                "{dt} needs {} children, payload has {n_children}",
                types.len()
            ),
        ));
    }
    let children = types
        .iter()
        .map(|t| decode_node(meta, region, t))
        .collect::<Result<Vec<_>>>()?;
    ArrayDataBuilder::new(dt.clone())
        .len(len)
        .null_bit_buffer(nulls)
        .buffers(buffers)
        .child_data(children)
        .build()
        .map_err(|e| Error::corrupt(start, format!("invalid {dt} array: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::builder::*;
    use arrow_array::types::Int32Type;
    use arrow_array::*;
    use arrow_schema::{Field, IntervalUnit, TimeUnit};
    use std::sync::Arc;

    /// One array of every supported type, with nulls, for round-trip tests.
    pub(crate) fn every_type_arrays() -> Vec<ArrayRef> {
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let mut list = ListBuilder::new(Int32Builder::new());
        list.append_value([Some(1), None, Some(3)]);
        list.append_null();
        list.append_value([]);
        let fsl = FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
            vec![
                Some(vec![Some(1), Some(2), Some(3)]),
                None,
                Some(vec![Some(4), None, Some(6)]),
            ],
            3,
        );
        let strukt = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-2.0)])) as ArrayRef,
        )]);
        let _ = item;
        vec![
            Arc::new(NullArray::new(3)),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(Int8Array::from(vec![Some(-1), None, Some(7)])),
            Arc::new(Int16Array::from(vec![Some(-300), None, Some(7)])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(i32::MAX)])),
            Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(i64::MAX)])),
            Arc::new(UInt8Array::from(vec![Some(0), None, Some(255)])),
            Arc::new(UInt16Array::from(vec![Some(0), None, Some(65535)])),
            Arc::new(UInt32Array::from(vec![Some(0), None, Some(u32::MAX)])),
            Arc::new(UInt64Array::from(vec![Some(0), None, Some(u64::MAX)])),
            Arc::new(Float32Array::from(vec![Some(1.25), None, Some(f32::NAN)])),
            Arc::new(Float64Array::from(vec![
                Some(-0.0),
                None,
                Some(f64::INFINITY),
            ])),
            Arc::new(StringArray::from(vec![Some("basalt"), None, Some("")])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                None,
                Some(b""),
            ])),
            Arc::new(Date32Array::from(vec![Some(19000), None, Some(-1)])),
            Arc::new(Date64Array::from(vec![Some(1), None, Some(-1)])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1),
                None,
                Some(-1),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1), None, Some(2)]).with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(list.finish()),
            Arc::new(fsl),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(arrow_buffer::IntervalMonthDayNano::new(1, 2, 3)),
                None,
                Some(arrow_buffer::IntervalMonthDayNano::new(-1, 0, 0)),
            ])),
            Arc::new(LargeStringArray::from(vec![Some("x"), None, Some("yz")])),
            Arc::new(LargeBinaryArray::from(vec![
                Some(&b"x"[..]),
                None,
                Some(b""),
            ])),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some([1u8; 16]), None, Some([2u8; 16])].into_iter(),
                    16,
                )
                .unwrap(),
            ),
            Arc::new(Time64NanosecondArray::from(vec![Some(1), None, Some(2)])),
            Arc::new(strukt),
            Arc::new(DurationSecondArray::from(vec![Some(1), None, Some(-2)])),
        ]
    }

    #[test]
    fn every_type_round_trips_plain_and_compressed() {
        for array in every_type_arrays() {
            let raw = encode_array(&array.to_data()).unwrap();
            let payload = Buffer::from_vec(raw.clone());
            let back = decode_array(&payload, array.data_type()).unwrap();
            assert_eq!(&back, &array, "{}", array.data_type());
            let compressed = lz4_flex::block::compress(&raw);
            let restored = decompress(Codec::Lz4, Buffer::from_vec(compressed), raw.len()).unwrap();
            assert_eq!(&decode_array(&restored, array.data_type()).unwrap(), &array);
        }
    }

    #[test]
    fn payloads_appended_with_shared_scratch_match_standalone_ones() {
        let mut scratch = ArrayScratch::default();
        let mut appended = Encoder::new();
        let mut expected = Encoder::new();
        // Largest first, so a scratch left uncleared would show.
        let mut arrays = every_type_arrays();
        arrays.insert(
            0,
            Arc::new(StringArray::from_iter_values(
                (0..500).map(|i| format!("{i}")),
            )),
        );
        arrays.push(arrays[0].slice(3, 7));
        for array in &arrays {
            encode_array_into(&array.to_data(), &mut scratch, &mut appended).unwrap();
            expected.bytes(&encode_array(&array.to_data()).unwrap());
        }
        assert_eq!(appended.buf, expected.buf);
    }

    #[test]
    fn sliced_arrays_round_trip() {
        let array: ArrayRef = Arc::new(StringArray::from(
            (0..100)
                .map(|i| (i % 3 != 0).then(|| format!("v{i}")))
                .collect::<Vec<_>>(),
        ));
        let slice = array.slice(17, 40);
        let raw = encode_array(&slice.to_data()).unwrap();
        let back = decode_array(&Buffer::from_vec(raw), &DataType::Utf8).unwrap();
        assert_eq!(&back, &slice);
        let _ = IntervalUnit::MonthDayNano;
        let _ = TimeUnit::Second;
    }

    #[test]
    fn a_leading_slice_stores_only_its_own_values() {
        let strings: ArrayRef = Arc::new(StringArray::from_iter(
            (0..10_000).map(|i| (i % 7 != 0).then(|| format!("a longer value {i}"))),
        ));
        let mut list = ListBuilder::new(Int32Builder::new());
        for i in 0..10_000 {
            list.append_value([Some(i), Some(i + 1)]);
        }
        let lists: ArrayRef = Arc::new(list.finish());
        for array in [strings, lists] {
            let whole = encode_array(&array.to_data()).unwrap().len();
            for slice in [array.slice(0, 100), array.slice(9_900, 100)] {
                let raw = encode_array(&slice.to_data()).unwrap();
                assert!(
                    raw.len() * 50 < whole,
                    "{}: {} of {whole}",
                    array.data_type(),
                    raw.len()
                );
                let back = decode_array(&Buffer::from_vec(raw), array.data_type()).unwrap();
                assert_eq!(&back, &slice);
            }
        }
        for array in every_type_arrays() {
            let slice = array.slice(0, array.len() - 1);
            let raw = encode_array(&slice.to_data()).unwrap();
            let back = decode_array(&Buffer::from_vec(raw), array.data_type()).unwrap();
            assert_eq!(&back, &slice, "{}", array.data_type());
        }
    }

    #[test]
    fn uncompressed_decode_shares_memory() {
        let array: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let payload = Buffer::from_vec(encode_array(&array.to_data()).unwrap());
        let back = decode_array(&payload, &DataType::Int64).unwrap();
        let values = back.to_data().buffers()[0].as_ptr() as usize;
        let base = payload.as_ptr() as usize;
        assert!(values >= base && values < base + payload.len());
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        for array in every_type_arrays() {
            let raw = encode_array(&array.to_data()).unwrap();
            for i in 0..raw.len().min(200) {
                let mut damaged = raw.clone();
                damaged[i] = damaged[i].wrapping_add(0x5b);
                let _ = decode_array(&Buffer::from_vec(damaged), array.data_type());
            }
            let _ = decode_array(
                &Buffer::from_vec(raw[..raw.len() / 2].to_vec()),
                array.data_type(),
            );
        }
    }

    #[test]
    fn compression_only_when_it_pays() {
        let repetitive = vec![7u8; 4096];
        assert_eq!(compress(repetitive).0, Codec::Lz4);
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.gen()).collect();
        assert_eq!(compress(noise).0, Codec::None);
        // Large payloads are judged by a sample from their middle.
        let large_noise: Vec<u8> = (0..1 << 20).map(|_| rng.gen()).collect();
        assert_eq!(compress(large_noise.clone()).0, Codec::None);
        let mut mostly_zero = vec![0u8; 1 << 20];
        mostly_zero[..1000].copy_from_slice(&large_noise[..1000]);
        let (codec, stored) = compress(mostly_zero);
        assert_eq!(codec, Codec::Lz4);
        assert!(stored.len() < 10_000);
    }
}
