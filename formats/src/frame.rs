//! Length + crc32 record framing used by the WAL and the manifest
//! (FORMAT.md, "Record framing").
//!
//! ```text
//! +-----------+-----------+---------------------+
//! | len: u32  | crc: u32  | payload: len bytes  |
//! +-----------+-----------+---------------------+
//! ```
//! `crc` is crc32 (IEEE) of the payload. `len` is never 0.
//!
//! WAL files of format version 2 use [`SyncedFrame`]s instead, which carry a
//! header checksum and the file's durable length at append time, so that a
//! torn tail can be told from damage to acknowledged records in time linear
//! in the file's size (FORMAT.md, "Synced frames").

pub const FRAME_HEADER_LEN: usize = 8;
/// Upper bound on a single record; a larger length field is damage, not data.
pub const MAX_FRAME_LEN: usize = 1 << 30;

pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What one step of reading a framed log found.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    Record {
        offset: usize,
        payload: &'a [u8],
    },
    /// Clean end: no bytes left, or only zero padding.
    End,
    /// A frame that does not validate starts at `offset`.
    Damaged {
        offset: usize,
        reason: String,
    },
}

/// One past the last non-zero byte: a log ends cleanly at or after it. Found
/// once per file, so that a zero-filled tail costs one pass, not one per frame.
pub fn content_end(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1)
}

/// Reads the frame at `offset` of a log whose content ends at `end`
/// ([`content_end`]).
fn read_frame_before(data: &[u8], offset: usize, end: usize) -> Frame<'_> {
    if offset >= end {
        return Frame::End;
    }
    let rest = &data[offset..];
    if rest.len() < FRAME_HEADER_LEN {
        return damaged(offset, "truncated frame header");
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let stored_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 || len > MAX_FRAME_LEN {
        return damaged(offset, format!("implausible frame length {len}"));
    }
    if rest.len() - FRAME_HEADER_LEN < len {
        return damaged(offset, "truncated frame payload");
    }
    let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    let computed = crc32fast::hash(payload);
    if computed != stored_crc {
        return damaged(
            offset,
            format!(
                "frame checksum mismatch: stored {stored_crc:#010x}, computed {computed:#010x}"
            ),
        );
    }
    Frame::Record { offset, payload }
}

fn damaged(offset: usize, reason: impl Into<String>) -> Frame<'static> {
    Frame::Damaged {
        offset,
        reason: reason.into(),
    }
}

/// How a framed log ends.
#[derive(Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// End of data, or only zero bytes left.
    Clean,
    /// A damaged frame with no valid frame anywhere after it: a write that
    /// was never acknowledged.
    TornTail { offset: usize, reason: String },
    /// A damaged frame followed by valid ones: acknowledged records are lost.
    Corrupt { offset: usize, reason: String },
}

/// A framed log's records (offset and payload of each) up to the first
/// damaged frame, and how the log ends.
pub fn read_log(data: &[u8]) -> (Vec<(usize, &[u8])>, LogEnd) {
    let end = content_end(data);
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        match read_frame_before(data, offset, end) {
            Frame::Record {
                offset: at,
                payload,
            } => {
                records.push((at, payload));
                offset = at + FRAME_HEADER_LEN + payload.len();
            }
            Frame::End => return (records, LogEnd::Clean),
            Frame::Damaged { offset, reason } => {
                let verdict = match next_valid_frame_between(data, offset, end) {
                    Some(_) => LogEnd::Corrupt { offset, reason },
                    None => LogEnd::TornTail { offset, reason },
                };
                return (records, verdict);
            }
        }
    }
}

/// The offset of the first valid frame starting strictly after `offset`, if any.
/// Distinguishes a torn tail (nothing valid follows the damage) from damage in
/// the middle of a log (acknowledged records follow it). Candidates stop at
/// the content end `end`: a frame cannot start in the zero tail.
/// A candidate's payload is checksummed only when its length fits the file;
/// version 2 WAL files ([`read_synced_log`]) bound this scan by a header
/// checksum instead.
fn next_valid_frame_between(data: &[u8], offset: usize, end: usize) -> Option<usize> {
    (offset + 1..end).find(|&candidate| {
        matches!(
            read_frame_before(data, candidate, end),
            Frame::Record { .. }
        )
    })
}

/// Header of a synced frame: `len u32 | synced u64 | payload_crc u32 | header_crc u32`.
pub const SYNCED_FRAME_HEADER_LEN: usize = 20;

/// Appends a synced frame: `synced` is how many bytes of the file were known
/// durable when the frame was appended.
pub fn encode_synced_frame(payload: &[u8], synced: u64, out: &mut Vec<u8>) {
    out.reserve(SYNCED_FRAME_HEADER_LEN + payload.len());
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&synced.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..start + 16]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A synced frame that validates: its payload and the durable length it records.
struct SyncedFrame<'a> {
    payload: &'a [u8],
    synced: u64,
}

/// Checks only the header (O(1)): whether a synced frame may start at `offset`.
fn synced_header(data: &[u8], offset: usize) -> std::result::Result<(usize, u64, u32), String> {
    let Some(header) = data.get(offset..offset + SYNCED_FRAME_HEADER_LEN) else {
        return Err("truncated frame header".into());
    };
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let stored = field(16);
    let computed = crc32fast::hash(&header[..16]);
    if stored != computed {
        return Err(format!(
            "frame header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let len = field(0) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(format!("implausible frame length {len}"));
    }
    let mut synced = [0u8; 8];
    synced.copy_from_slice(&header[4..12]);
    Ok((len, u64::from_le_bytes(synced), field(12)))
}

fn read_synced_frame(data: &[u8], offset: usize) -> std::result::Result<SyncedFrame<'_>, String> {
    let (len, synced, payload_crc) = synced_header(data, offset)?;
    let start = offset + SYNCED_FRAME_HEADER_LEN;
    let Some(payload) = data.get(start..start + len) else {
        return Err("truncated frame payload".into());
    };
    let computed = crc32fast::hash(payload);
    if computed != payload_crc {
        return Err(format!(
            "frame checksum mismatch: stored {payload_crc:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(SyncedFrame { payload, synced })
}

/// Reads a log of synced frames starting at `start`, in time linear in the
/// data's length. Damage at offset D is a torn tail unless some valid frame
/// after it records a durable length beyond D: then D was acknowledged as
/// durable before that frame was written, and the log is corrupt. A frame
/// written after the damaged one but never synced (a power cut may persist
/// later pages and not earlier ones) does not make the damage corruption.
pub fn read_synced_log(data: &[u8], start: usize) -> (Vec<(usize, &[u8])>, LogEnd) {
    let end = content_end(data);
    let mut records = Vec::new();
    let mut offset = start;
    while offset < end {
        match read_synced_frame(data, offset) {
            Ok(frame) => {
                records.push((offset, frame.payload));
                offset += SYNCED_FRAME_HEADER_LEN + frame.payload.len();
            }
            Err(reason) => {
                let verdict = match acknowledged_after(data, offset, end) {
                    Some(_) => LogEnd::Corrupt { offset, reason },
                    None => LogEnd::TornTail { offset, reason },
                };
                return (records, verdict);
            }
        }
    }
    (records, LogEnd::Clean)
}

/// The offset of a valid frame after `damage` whose durable length covers
/// `damage`. A payload is checksummed only behind a valid header checksum,
/// and a valid frame is skipped whole, so the scan is linear.
fn acknowledged_after(data: &[u8], damage: usize, end: usize) -> Option<usize> {
    let mut candidate = damage + 1;
    while candidate < end {
        if synced_header(data, candidate).is_ok() {
            if let Ok(frame) = read_synced_frame(data, candidate) {
                if frame.synced > damage as u64 {
                    return Some(candidate);
                }
                candidate += SYNCED_FRAME_HEADER_LEN + frame.payload.len();
                continue;
            }
        }
        candidate += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode_frame(r, &mut out);
        }
        out
    }

    #[test]
    fn frames_round_trip() {
        let data = log(&[b"one", b"two", b"three"]);
        let (records, end) = read_log(&data);
        let payloads: Vec<_> = records.iter().map(|r| r.1).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(records[1].0, FRAME_HEADER_LEN + 3);
        assert_eq!(end, LogEnd::Clean);
    }

    #[test]
    fn zero_padding_is_a_clean_end() {
        let mut data = log(&[b"one"]);
        data.extend_from_slice(&[0; 100]);
        let (records, end) = read_log(&data);
        assert_eq!((records.len(), end), (1, LogEnd::Clean));
    }

    #[test]
    fn torn_tail_is_reported_at_its_offset() {
        let mut data = log(&[b"one", b"two"]);
        let second = FRAME_HEADER_LEN + 3;
        data.truncate(data.len() - 1);
        let (records, end) = read_log(&data);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(end, LogEnd::TornTail { offset, .. } if offset == second),
            "{end:?}"
        );
    }

    #[test]
    fn damage_in_the_middle_is_distinguished_from_a_torn_tail() {
        let mut data = log(&[b"first record", b"second record", b"third record"]);
        let second = FRAME_HEADER_LEN + 12;
        data[second + FRAME_HEADER_LEN + 2] ^= 0x40;
        let (records, end) = read_log(&data);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(&end, LogEnd::Corrupt { offset, reason } if *offset == second && reason.contains("checksum")),
            "{end:?}"
        );
        let third = second + FRAME_HEADER_LEN + 13;
        assert_eq!(
            next_valid_frame_between(&data, second, content_end(&data)),
            Some(third)
        );
    }

    fn synced_log(records: &[(&[u8], u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (payload, synced) in records {
            encode_synced_frame(payload, *synced, &mut out);
        }
        out
    }

    #[test]
    fn synced_frames_round_trip_and_end_at_zero_padding() {
        let mut data = synced_log(&[(b"one", 0), (b"two", 23)]);
        data.extend_from_slice(&[0; 1000]);
        let (records, end) = read_synced_log(&data, 0);
        let payloads: Vec<_> = records.iter().map(|r| r.1).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two"]);
        assert_eq!(records[1].0, SYNCED_FRAME_HEADER_LEN + 3);
        assert_eq!(end, LogEnd::Clean);
    }

    #[test]
    fn a_torn_record_in_a_zero_filled_file_is_a_torn_tail_found_in_linear_time() {
        let first = synced_log(&[(b"acknowledged", 0)]);
        let mut data = first.clone();
        encode_synced_frame(&vec![7u8; 1 << 20], first.len() as u64, &mut data);
        // The kernel wrote the record's first half; the rest of the
        // preallocated file is zeros, with stray bytes far in the tail.
        data.truncate(first.len() + (1 << 19));
        data.resize(8 << 20, 0);
        for at in [(3 << 20) + 3, (6 << 20) + 11, (8 << 20) - 1] {
            data[at] = 0x5a;
        }
        let (records, end) = read_synced_log(&data, 0);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(&end, LogEnd::TornTail { offset, .. } if *offset == first.len()),
            "{end:?}"
        );
    }

    #[test]
    fn damage_is_corruption_only_when_a_later_frame_says_it_was_durable() {
        let one = synced_log(&[(b"first record", 0)]);
        let second_at = one.len();
        let mut data = one.clone();
        encode_synced_frame(b"second record", 0, &mut data);
        let third_at = data.len();
        // Written after the second record's append, before any sync.
        encode_synced_frame(b"third record", second_at as u64, &mut data);
        let mut unsynced = data.clone();
        unsynced[second_at + SYNCED_FRAME_HEADER_LEN + 2] ^= 0x40;
        let (records, end) = read_synced_log(&unsynced, 0);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(&end, LogEnd::TornTail { offset, .. } if *offset == second_at),
            "{end:?}"
        );
        // A fourth frame appended after a sync covering the second record
        // proves the damaged record had been acknowledged.
        let mut acknowledged = data.clone();
        encode_synced_frame(b"fourth record", (third_at + 1) as u64, &mut acknowledged);
        acknowledged[second_at + SYNCED_FRAME_HEADER_LEN + 2] ^= 0x40;
        let (records, end) = read_synced_log(&acknowledged, 0);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(&end, LogEnd::Corrupt { offset, reason } if *offset == second_at && reason.contains("checksum")),
            "{end:?}"
        );
    }

    #[test]
    fn a_flipped_byte_in_a_synced_header_is_caught_by_the_header_checksum() {
        let mut data = synced_log(&[(b"first", 0), (b"second", 0)]);
        data[6] ^= 0x01; // inside `synced` of the first frame
        let (records, end) = read_synced_log(&data, 0);
        assert!(records.is_empty());
        assert!(
            matches!(&end, LogEnd::TornTail { offset: 0, reason } if reason.contains("header checksum")),
            "{end:?}"
        );
    }

    #[test]
    fn a_version_1_log_with_a_zero_tail_reads_in_linear_time() {
        let mut data = log(&[b"one"]);
        let first = data.len();
        encode_frame(&vec![9u8; 1 << 20], &mut data);
        data.truncate(first + (1 << 19));
        data.resize(8 << 20, 0);
        data[(8 << 20) - 5] = 1;
        let (records, end) = read_log(&data);
        assert_eq!(records.len(), 1);
        assert!(
            matches!(end, LogEnd::TornTail { offset, .. } if offset == first),
            "{end:?}"
        );
    }
}
