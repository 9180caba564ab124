//! Writing a file so that it appears whole or not at all: bytes go to a
//! temporary name beside it, are synced, and the rename to the final name
//! is synced with the directory. Segments, vector indexes and the
//! manifest's CURRENT pointer are all written this way.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fault::{self, FileOp};
use crate::wal::sync_dir;

/// A file being written under its temporary name. Dropped before
/// [`PendingFile::install`], its temporary file is removed.
pub(crate) struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    installed: bool,
}

impl PendingFile {
    /// Starts `path`, written as `path` with `.tmp` added to its name, and
    /// the buffered writer for its bytes.
    pub(crate) fn create(path: &Path) -> Result<(PendingFile, BufWriter<File>)> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fault::check(FileOp::Write, &tmp).at(&tmp)?;
        let file = File::create(&tmp).at(&tmp)?;
        let pending = PendingFile {
            path: path.to_path_buf(),
            tmp,
            installed: false,
        };
        Ok((pending, BufWriter::with_capacity(1 << 20, file)))
    }

    /// Where the bytes are while they are written, for error messages.
    pub(crate) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the bytes and gives them the final name, durably.
    pub(crate) fn install(mut self, out: BufWriter<File>) -> Result<PathBuf> {
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        fault::check(FileOp::Sync, &self.tmp)
            .and_then(|()| file.sync_all())
            .at(&self.tmp)?;
        fs::rename(&self.tmp, &self.path).at(&self.path)?;
        self.installed = true;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(self.path.clone())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_appears_only_when_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.bseg");
        let (pending, mut out) = PendingFile::create(&path).unwrap();
        out.write_all(b"bytes").unwrap();
        assert!(!path.exists());
        assert!(pending.tmp().exists());
        assert_eq!(pending.install(out).unwrap(), path);
        assert_eq!(fs::read(&path).unwrap(), b"bytes");
        assert!(!dir.path().join("000001.bseg.tmp").exists());

        let (pending, out) = PendingFile::create(&dir.path().join("abandoned")).unwrap();
        let tmp = pending.tmp().to_path_buf();
        drop(out);
        drop(pending);
        assert!(!tmp.exists(), "an abandoned file leaves nothing behind");
    }
}
