//! Injected file failures, so that what the engine does when a write or
//! an fsync fails is tested rather than argued (redb's `StorageBackend`
//! idea, kept to a check before each write and sync). Every place storage
//! writes or syncs a file asks [`check`] first; with no rule installed that
//! is one relaxed atomic load.
//!
//! Rules are process-wide and match by directory, so tests that each use
//! their own database directory can run side by side.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// What a rule fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// Writing bytes (or creating the file that will hold them).
    Write,
    /// fsync / fdatasync of a file or a directory.
    Sync,
}

/// Failures to inject into the files of one database directory.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Files under this directory are affected.
    pub dir: PathBuf,
    pub op: FileOp,
    /// Only files whose name ends so (".wal", ".bseg", "MANIFEST-..."
    /// prefix via `name_contains`); every file when empty.
    pub name_contains: String,
    /// Matching operations let through before the first failure.
    pub skip: u32,
    /// Failures before the rule expires; `u32::MAX` lasts until cleared.
    pub times: u32,
    /// The OS error returned, e.g. `libc::ENOSPC` (28) or `EIO` (5).
    pub os_error: i32,
}

/// ENOSPC: the disk is full.
pub const DISK_FULL: i32 = 28;
/// EIO: the device failed.
pub const IO_ERROR: i32 = 5;

static ANY: AtomicBool = AtomicBool::new(false);
static RULES: Mutex<Vec<FaultRule>> = Mutex::new(Vec::new());

/// Installs a rule.
pub fn inject(rule: FaultRule) {
    RULES.lock().push(rule);
    ANY.store(true, Ordering::SeqCst);
}

/// Removes every rule for `dir`.
pub fn clear(dir: &Path) {
    let mut rules = RULES.lock();
    rules.retain(|r| !r.dir.starts_with(dir) && !dir.starts_with(&r.dir));
    ANY.store(!rules.is_empty(), Ordering::SeqCst);
}

/// The injected failure for `op` on `path`, if a rule asks for one.
pub(crate) fn check(op: FileOp, path: &Path) -> io::Result<()> {
    if !ANY.load(Ordering::Relaxed) {
        return Ok(());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut rules = RULES.lock();
    for rule in rules.iter_mut() {
        if rule.op != op || !path.starts_with(&rule.dir) || !name.contains(&rule.name_contains) {
            continue;
        }
        if rule.skip > 0 {
            rule.skip -= 1;
            continue;
        }
        if rule.times == 0 {
            continue;
        }
        if rule.times != u32::MAX {
            rule.times -= 1;
        }
        return Err(io::Error::from_raw_os_error(rule.os_error));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_directory_name_and_count() {
        let dir = PathBuf::from("/fault-test/db");
        inject(FaultRule {
            dir: dir.clone(),
            op: FileOp::Sync,
            name_contains: ".wal".into(),
            skip: 1,
            times: 2,
            os_error: IO_ERROR,
        });
        let wal = dir.join("000001.wal");
        assert!(check(FileOp::Write, &wal).is_ok());
        assert!(check(FileOp::Sync, &dir.join("000001.bseg")).is_ok());
        assert!(check(FileOp::Sync, Path::new("/elsewhere/000001.wal")).is_ok());
        assert!(check(FileOp::Sync, &wal).is_ok(), "skipped once");
        assert_eq!(
            check(FileOp::Sync, &wal).unwrap_err().raw_os_error(),
            Some(IO_ERROR)
        );
        assert!(check(FileOp::Sync, &wal).is_err());
        assert!(check(FileOp::Sync, &wal).is_ok(), "expired");
        clear(&dir);
    }
}
