//! The manifest log: `MANIFEST-NNNNNN` files of framed edit batches, the live
//! one named by `CURRENT` (FORMAT.md, "Manifest"). Rewritten whole when it grows.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use basalt_formats::frame::{encode_frame, read_log, LogEnd, FRAME_HEADER_LEN};
use basalt_formats::manifest::{decode_edits, encode_edits, Edit, CURRENT_FILE};

use crate::durable_file::PendingFile;
use crate::error::{Error, IoContext, Result};

pub(crate) struct ManifestLog {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    size: u64,
}

fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// The live manifest as read at open.
pub(crate) struct ReadManifest {
    pub number: u64,
    pub edits: Vec<Edit>,
    /// An unacknowledged last batch was cut off: files it would have
    /// recorded may exist and must not be deleted as orphans.
    pub tail_cut: bool,
}

/// Reads every edit of the live manifest, or `None` for a new database.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<ReadManifest>> {
    let current = dir.join(CURRENT_FILE);
    let name = match fs::read_to_string(&current) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&current, e)),
    };
    let name = name.trim();
    let number = name
        .strip_prefix("MANIFEST-")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| Error::Corruption {
            file: current.clone(),
            offset: 0,
            reason: format!("CURRENT names {name:?}, not a manifest"),
        })?;
    let path = dir.join(name);
    let data = fs::read(&path).at(&path)?;
    let (records, end) = read_log(&data);
    let mut tail_cut = false;
    match end {
        LogEnd::Clean => {}
        // A last batch whose write was cut short was never acknowledged: its
        // work is redone. A manifest must start with a whole snapshot, and a
        // whole frame that fails its checksum is damage, not a torn write.
        LogEnd::TornTail { offset, reason } if offset > 0 && is_torn_write(&data, offset) => {
            tracing::warn!(file = %path.display(), offset, %reason, "ignoring the manifest's torn last batch");
            tail_cut = true;
        }
        LogEnd::TornTail { offset, reason } | LogEnd::Corrupt { offset, reason } => {
            return Err(Error::Corruption {
                file: path,
                offset: offset as u64,
                reason,
            });
        }
    }
    let mut edits = Vec::new();
    for (at, payload) in records {
        let base = (at + FRAME_HEADER_LEN) as u64;
        let decoded = decode_edits(payload).map_err(|e| Error::corrupt_in(&path, base, e))?;
        edits.extend(decoded);
    }
    Ok(Some(ReadManifest {
        number,
        edits,
        tail_cut,
    }))
}

/// Whether the damaged last frame at `offset` looks like an append that a
/// crash cut short: the file ends inside it, or its end is still zero fill
/// from a page boundary on. A frame complete to its length whose checksum
/// fails, or whose length field alone is damaged (the bytes to the end of
/// the file match the stored checksum), is damage to an acknowledged batch.
fn is_torn_write(data: &[u8], offset: usize) -> bool {
    const PAGE: usize = 4096;
    let rest = &data[offset..];
    if rest.len() < FRAME_HEADER_LEN {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let stored_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let available = &rest[FRAME_HEADER_LEN..];
    if len > available.len() {
        return crc32fast::hash(available) != stored_crc;
    }
    let frame_end = offset + FRAME_HEADER_LEN + len;
    let first_page = (offset + FRAME_HEADER_LEN).div_ceil(PAGE) * PAGE;
    first_page < frame_end && data[first_page..frame_end].iter().all(|b| *b == 0)
}

impl ManifestLog {
    /// Writes a new manifest holding `snapshot` and points CURRENT at it.
    pub fn create(dir: &Path, number: u64, snapshot: &[Edit]) -> Result<ManifestLog> {
        let path = dir.join(manifest_name(number));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        let mut log = ManifestLog {
            dir: dir.to_path_buf(),
            file,
            path,
            size: 0,
        };
        log.append(snapshot)?;
        let (current, mut out) = PendingFile::create(&dir.join(CURRENT_FILE))?;
        out.write_all(format!("{}\n", manifest_name(number)).as_bytes())
            .at(current.tmp())?;
        current.install(out)?;
        Ok(log)
    }

    /// Appends one atomic batch of edits and fsyncs it.
    pub fn append(&mut self, edits: &[Edit]) -> Result<()> {
        let payload = encode_edits(edits)?;
        let mut frame = Vec::new();
        encode_frame(&payload, &mut frame);
        crate::fault::check(crate::fault::FileOp::Write, &self.path)
            .and_then(|()| self.file.write_all(&frame))
            .at(&self.path)?;
        crate::fault::check(crate::fault::FileOp::Sync, &self.path)
            .and_then(|()| self.file.sync_data())
            .at(&self.path)?;
        self.size += frame.len() as u64;
        Ok(())
    }

    pub fn needs_rewrite(&self, limit_bytes: u64) -> bool {
        self.size > limit_bytes
    }

    /// Replaces this log by a fresh one holding only `snapshot`.
    pub fn rewrite(&mut self, number: u64, snapshot: &[Edit]) -> Result<()> {
        let fresh = ManifestLog::create(&self.dir, number, snapshot)?;
        let old = std::mem::replace(self, fresh);
        fs::remove_file(&old.path).at(&old.path)?;
        Ok(())
    }
}
