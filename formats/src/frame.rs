//! Length + crc32 record framing used by the WAL and the manifest
//! (FORMAT.md, "Record framing").
//!
//! ```text
//! +-----------+-----------+---------------------+
//! | len: u32  | crc: u32  | payload: len bytes  |
//! +-----------+-----------+---------------------+
//! ```
//! `crc` is crc32 (IEEE) of the payload. `len` is never 0.

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
pub enum Frame<'a> {
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

/// Reads the frame at `offset`.
pub fn read_frame(data: &[u8], offset: usize) -> Frame<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.is_empty() || rest.iter().all(|b| *b == 0) {
        return Frame::End;
    }
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
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        match read_frame(data, offset) {
            Frame::Record {
                offset: at,
                payload,
            } => {
                records.push((at, payload));
                offset = at + FRAME_HEADER_LEN + payload.len();
            }
            Frame::End => return (records, LogEnd::Clean),
            Frame::Damaged { offset, reason } => {
                let end = match next_valid_frame_after(data, offset) {
                    Some(_) => LogEnd::Corrupt { offset, reason },
                    None => LogEnd::TornTail { offset, reason },
                };
                return (records, end);
            }
        }
    }
}

/// The offset of the first valid frame starting strictly after `offset`, if any.
/// Distinguishes a torn tail (nothing valid follows the damage) from damage in
/// the middle of a log (acknowledged records follow it).
pub fn next_valid_frame_after(data: &[u8], offset: usize) -> Option<usize> {
    (offset + 1..data.len().saturating_sub(FRAME_HEADER_LEN))
        .find(|&candidate| matches!(read_frame(data, candidate), Frame::Record { .. }))
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
        assert_eq!(next_valid_frame_after(&data, second), Some(third));
    }
}
