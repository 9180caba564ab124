//! Write-ahead log files: `wal/NNNNNN.wal`, each a header and a log of synced
//! frames holding WAL records (FORMAT.md, "WAL file"). Committers append under
//! the commit lock and then share fsyncs: one committer at a time syncs,
//! covering every record appended before it started, while the others sleep
//! until it is done.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_formats::frame::{encode_synced_frame, LogEnd, SYNCED_FRAME_HEADER_LEN};
use basalt_formats::wal::{encode_wal_file_header, read_wal_file_contents, WAL_FILE_HEADER_LEN};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, IoContext, Result};

pub(crate) fn wal_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.wal"))
}

pub(crate) fn list_wal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            files.push((number, path));
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| {
            crate::fault::check(crate::fault::FileOp::Sync, dir)?;
            f.sync_all()
        })
        .at(dir)
}

struct Active {
    /// Shared so a sync can run without holding the append lock.
    file: Arc<File>,
    number: u64,
    path: Arc<Path>,
    /// Bytes appended (a logical position across files: never reset).
    appended: u64,
    /// The logical position at which this file's first frame starts.
    base: u64,
    last_seq: u64,
}

impl Active {
    /// The file offset of logical position `position` (at or after `base`).
    fn offset_of(&self, position: u64) -> u64 {
        WAL_FILE_HEADER_LEN as u64 + position.saturating_sub(self.base)
    }
}

/// A new WAL file holding only its header, not yet synced.
fn start_wal_file(path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .at(path)?;
    crate::fault::check(crate::fault::FileOp::Write, path)
        .and_then(|()| file.write_all(&encode_wal_file_header()))
        .at(path)?;
    Ok(file)
}

/// Creates a WAL file holding only its header, synced with its directory.
fn create_wal_file(dir: &Path, path: &Path) -> Result<File> {
    let file = start_wal_file(path)?;
    crate::fault::check(crate::fault::FileOp::Sync, path)
        .and_then(|()| file.sync_all())
        .at(path)?;
    sync_dir(dir)?;
    Ok(file)
}

/// A WAL file written full of zeros and synced ahead of use. Overwriting
/// blocks that already exist lets a commit's fdatasync skip the file-system
/// journal (no size or allocation change), which otherwise also flushes
/// whatever the background is writing.
struct Spare {
    number: u64,
    path: PathBuf,
    file: File,
}

/// Which part of the log is durable, and whether a sync is under way.
#[derive(Default)]
struct SyncState {
    /// Logical position everything before which is on disk.
    synced: u64,
    syncing: bool,
    /// A failed fsync, sticky: Linux may drop the unwritten pages and let a
    /// later fsync succeed, so no later commit may count as durable.
    failed: Option<String>,
}

/// Positions asynchronous committers wait for, with the wakers to call
/// once they are synced.
#[derive(Default)]
struct Waiters {
    /// Position, the commit's sequence, and its waker.
    waiting: Vec<(u64, u64, Waker)>,
    stop: bool,
}

/// Closed WAL files: number, path and the highest sequence they hold.
pub(crate) type ClosedWal = (u64, PathBuf, u64);

pub(crate) struct Wal {
    dir: PathBuf,
    active: Mutex<Active>,
    sync: Mutex<SyncState>,
    /// Signalled when a sync ends.
    sync_ended: Condvar,
    /// Commits awaiting their sync asynchronously ([`Wal::poll_synced`]).
    waiters: Mutex<Waiters>,
    /// Signalled when a waiter arrives or the syncer should stop.
    waiters_changed: Condvar,
    closed: Mutex<Vec<ClosedWal>>,
    syncs: AtomicU64,
    /// `SyncState::synced`, readable without the sync lock: each frame records
    /// how much of its file was durable when it was appended.
    durable: AtomicU64,
    spare: Mutex<Option<Spare>>,
    preallocate_bytes: u64,
}

impl Wal {
    pub fn create(
        dir: &Path,
        number: u64,
        closed: Vec<ClosedWal>,
        preallocate_bytes: u64,
    ) -> Result<Wal> {
        let path = wal_path(dir, number);
        let file = create_wal_file(dir, &path)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            active: Mutex::new(Active {
                file: Arc::new(file),
                number,
                path: path.into(),
                appended: 0,
                base: 0,
                last_seq: 0,
            }),
            sync: Mutex::new(SyncState::default()),
            sync_ended: Condvar::new(),
            waiters: Mutex::new(Waiters::default()),
            waiters_changed: Condvar::new(),
            closed: Mutex::new(closed),
            syncs: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            spare: Mutex::new(None),
            preallocate_bytes,
        })
    }

    /// Appends one record; returns the position to sync up to. A failed
    /// write leaves the position where it was, so the next record overwrites
    /// the partial one instead of following it.
    pub fn append(&self, payload: &[u8], seq: u64) -> Result<u64> {
        let mut frame = Vec::with_capacity(payload.len() + SYNCED_FRAME_HEADER_LEN);
        let mut active = self.active.lock();
        let durable = self.durable.load(Ordering::SeqCst).min(active.appended);
        encode_synced_frame(payload, active.offset_of(durable), &mut frame);
        // Positioned writes, not O_APPEND: a prepared file is overwritten.
        let offset = active.offset_of(active.appended);
        crate::fault::check(crate::fault::FileOp::Write, &active.path)
            .and_then(|()| active.file.write_all_at(&frame, offset))
            .at(&active.path)?;
        active.appended += frame.len() as u64;
        active.last_seq = seq;
        Ok(active.appended)
    }

    /// Records that everything before `position` is durable.
    fn mark_synced(&self, state: &mut SyncState, position: u64) {
        state.synced = state.synced.max(position);
        self.durable.fetch_max(state.synced, Ordering::SeqCst);
    }

    /// Makes everything up to `position` durable. Concurrent callers share
    /// fsyncs: one syncs while the rest sleep (spinning on a lock held
    /// through an fsync cost more CPU than the fsync), and a caller whose
    /// record the finished sync covered returns without one of its own.
    pub fn sync_to(&self, position: u64) -> Result<()> {
        let mut state = self.sync.lock();
        while state.synced < position && state.syncing {
            self.sync_ended.wait(&mut state);
        }
        if state.synced >= position {
            return Ok(());
        }
        if let Some(failure) = &state.failed {
            return Err(Error::Poisoned(failure.clone()));
        }
        state.syncing = true;
        drop(state);
        let outcome = self.sync_active();
        let mut state = self.sync.lock();
        state.syncing = false;
        match &outcome {
            Ok(appended) => self.mark_synced(&mut state, *appended),
            Err(e) => state.failed = Some(e.to_string()),
        }
        drop(state);
        self.sync_ended.notify_all();
        outcome.map(drop)
    }

    /// Ready once everything up to `position` is durable; until then the
    /// waker is called when a sync covers it. The syncs are made by
    /// [`Wal::run_syncer`], a thread of the caller's, so that an async
    /// committer never blocks its thread on the disk and many commits share
    /// one fsync.
    pub fn poll_synced(&self, position: u64, seq: u64, cx: &mut Context<'_>) -> Poll<Result<()>> {
        {
            let state = self.sync.lock();
            if state.synced >= position {
                return Poll::Ready(Ok(()));
            }
            if let Some(failure) = &state.failed {
                return Poll::Ready(Err(Error::Poisoned(failure.clone())));
            }
        }
        let mut waiters = self.waiters.lock();
        if waiters.stop {
            // The database is closing and no syncer will come: a commit made
            // through a transaction outliving it syncs for itself.
            drop(waiters);
            return Poll::Ready(self.sync_to(position));
        }
        // A sync finishing between the check and this push is harmless: the
        // syncer's next round finds the position covered and wakes us.
        waiters.waiting.push((position, seq, cx.waker().clone()));
        drop(waiters);
        self.waiters_changed.notify_one();
        Poll::Pending
    }

    /// Syncs for [`Wal::poll_synced`]'s waiters until [`Wal::stop_syncer`],
    /// each round covering every position waiting when it began. After each
    /// sync it calls `synced_through` with the highest sequence it made
    /// durable, before waking anyone: commits become visible without their
    /// committer having to run again (a writer spinning on a conflict with
    /// one may be what keeps it from running).
    pub fn run_syncer(&self, synced_through: impl Fn(u64)) {
        loop {
            let target = {
                let mut waiters = self.waiters.lock();
                while waiters.waiting.is_empty() && !waiters.stop {
                    self.waiters_changed.wait(&mut waiters);
                }
                match waiters.waiting.iter().map(|(position, ..)| *position).max() {
                    Some(target) => target,
                    None => return,
                }
            };
            // A failure stays in the sync state, where the woken see it.
            let failed = self.sync_to(target).is_err();
            let synced = self.sync.lock().synced;
            let ready: Vec<(u64, u64, Waker)> = {
                let mut waiters = self.waiters.lock();
                let (ready, waiting) = std::mem::take(&mut waiters.waiting)
                    .into_iter()
                    .partition(|(position, ..)| failed || *position <= synced);
                waiters.waiting = waiting;
                ready
            };
            if let Some(seq) = ready
                .iter()
                .map(|(_, seq, _)| *seq)
                .max()
                .filter(|_| !failed)
            {
                synced_through(seq);
            }
            ready.into_iter().for_each(|(.., waker)| waker.wake());
        }
    }

    /// Ends [`Wal::run_syncer`] once nobody waits.
    pub fn stop_syncer(&self) {
        self.waiters.lock().stop = true;
        self.waiters_changed.notify_all();
    }

    /// Syncs the active file; returns the position it made durable.
    fn sync_active(&self) -> Result<u64> {
        let (file, path, appended) = {
            let active = self.active.lock();
            (active.file.clone(), active.path.clone(), active.appended)
        };
        crate::fault::check(crate::fault::FileOp::Sync, &path)
            .and_then(|()| file.sync_data())
            .at(&path)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(appended)
    }

    /// The logical position after the last appended record.
    pub fn appended(&self) -> u64 {
        self.active.lock().appended
    }

    /// How many times the log has been fsynced for commits.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Writes the next WAL file ahead of time, unless one is ready already.
    /// `number` is asked for only when a file is made. Preallocation is an
    /// optimisation and never the reason a write fails: it is skipped when
    /// free space is short, and a file that could not be filled is removed.
    pub fn prepare_spare(&self, number: impl FnOnce() -> u64) -> Result<()> {
        if self.preallocate_bytes == 0 || self.spare.lock().is_some() {
            return Ok(());
        }
        if !room_for(&self.dir, self.preallocate_bytes) {
            tracing::debug!(dir = %self.dir.display(), "too little free space to preallocate a WAL file");
            return Ok(());
        }
        let number = number();
        let path = wal_path(&self.dir, number);
        match self.fill_spare(&path) {
            Ok(file) => {
                *self.spare.lock() = Some(Spare { number, path, file });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "could not preallocate a WAL file; continuing without");
                let _ = fs::remove_file(&path);
                Ok(())
            }
        }
    }

    fn fill_spare(&self, path: &Path) -> Result<File> {
        let mut file = start_wal_file(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut written = WAL_FILE_HEADER_LEN as u64;
        while written < self.preallocate_bytes {
            let n = zeros.len().min((self.preallocate_bytes - written) as usize);
            crate::fault::check(crate::fault::FileOp::Write, path)
                .and_then(|()| file.write_all(&zeros[..n]))
                .at(path)?;
            written += n as u64;
        }
        crate::fault::check(crate::fault::FileOp::Sync, path)
            .and_then(|()| file.sync_all())
            .at(path)?;
        sync_dir(&self.dir)?;
        Ok(file)
    }

    /// Deletes the prepared file (on close; it holds nothing).
    pub fn discard_spare(&self) -> Result<()> {
        match self.spare.lock().take() {
            Some(spare) => fs::remove_file(&spare.path).at(&spare.path),
            None => Ok(()),
        }
    }

    /// Starts a new file (the prepared one if there is one, else a new file
    /// numbered `next_number`); the old one is synced and listed as closed.
    pub fn rotate(&self, next_number: u64) -> Result<()> {
        let (file, path, next_number) = match self.spare.lock().take() {
            Some(spare) => (spare.file, spare.path, spare.number),
            None => {
                let path = wal_path(&self.dir, next_number);
                let file = create_wal_file(&self.dir, &path)?;
                (file, path, next_number)
            }
        };
        let mut state = self.sync.lock();
        while state.syncing {
            self.sync_ended.wait(&mut state);
        }
        let mut active = self.active.lock();
        let synced = crate::fault::check(crate::fault::FileOp::Sync, &active.path)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = synced.at(&active.path) {
            // As in sync_to: after a failed fsync nothing more may count as durable.
            state.failed = Some(e.to_string());
            return Err(e);
        }
        let appended = active.appended;
        self.mark_synced(&mut state, appended);
        active.base = appended;
        let old_path = std::mem::replace(&mut active.path, path.into());
        let old_number = std::mem::replace(&mut active.number, next_number);
        active.file = Arc::new(file);
        let last_seq = active.last_seq;
        self.closed
            .lock()
            .push((old_number, old_path.to_path_buf(), last_seq));
        Ok(())
    }

    /// The highest sequence in any closed file.
    pub fn closed_max_seq(&self) -> Option<u64> {
        self.closed.lock().iter().map(|c| c.2).max()
    }

    pub fn closed_files(&self) -> usize {
        self.closed.lock().len()
    }

    /// Deletes closed files whose records are all at or below `flushed_seq`.
    pub fn remove_flushed(&self, flushed_seq: u64) -> Result<()> {
        let mut closed = self.closed.lock();
        let mut kept = Vec::new();
        for (number, path, last_seq) in closed.drain(..) {
            if last_seq <= flushed_seq {
                fs::remove_file(&path).at(&path)?;
            } else {
                kept.push((number, path, last_seq));
            }
        }
        *closed = kept;
        Ok(())
    }
}

/// Whether the file system holding `dir` has room for `bytes` with plenty to
/// spare for the data itself.
fn room_for(dir: &Path, bytes: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(stats) => stats.f_bavail.saturating_mul(stats.f_frsize) >= bytes.saturating_mul(4),
        Err(_) => true,
    }
}

/// Reads the records of one WAL file (either format version), each with the
/// file offset of its payload. A damaged frame that no later frame shows was
/// acknowledged is a torn tail: when `cut_torn_tail`, the file is truncated
/// there. Damage to acknowledged records is corruption.
pub(crate) fn read_wal_file(path: &Path, cut_torn_tail: bool) -> Result<Vec<(u64, Vec<u8>)>> {
    let data = fs::read(path).at(path)?;
    let contents = read_wal_file_contents(&data).map_err(|e| Error::in_file(path, 0, e))?;
    match contents.end {
        LogEnd::Clean => {}
        LogEnd::TornTail { offset, reason } if cut_torn_tail => {
            tracing::warn!(
                file = %path.display(),
                offset,
                %reason,
                records_kept = contents.records.len(),
                "cutting torn WAL tail: the damaged record was never acknowledged"
            );
            let file = OpenOptions::new().write(true).open(path).at(path)?;
            file.set_len(offset as u64).at(path)?;
            file.sync_all().at(path)?;
        }
        LogEnd::TornTail { offset, reason } | LogEnd::Corrupt { offset, reason } => {
            return Err(Error::Corruption {
                file: path.to_path_buf(),
                offset: offset as u64,
                reason,
            });
        }
    }
    let payload_offset = contents.payload_offset as u64;
    Ok(contents
        .records
        .into_iter()
        .map(|(at, payload)| (at as u64 + payload_offset, payload.to_vec()))
        .collect())
}

/// The sequence of a WAL file's first record, read from its first bytes
/// only; `None` for a file without a readable first record.
pub(crate) fn first_record_seq(path: &Path) -> Result<Option<u64>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(64);
    File::open(path)
        .at(path)?
        .take(64)
        .read_to_end(&mut head)
        .at(path)?;
    let frame_at = if head.starts_with(&basalt_formats::wal::WAL_MAGIC) {
        WAL_FILE_HEADER_LEN
    } else {
        0
    };
    let payload_at = frame_at
        + if frame_at == 0 {
            basalt_formats::frame::FRAME_HEADER_LEN
        } else {
            SYNCED_FRAME_HEADER_LEN
        };
    let has_frame = head
        .get(frame_at..payload_at)
        .is_some_and(|header| header.iter().any(|b| *b != 0));
    Ok(head
        .get(payload_at..payload_at + 8)
        .filter(|_| has_frame)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(dir: &Path) -> Wal {
        Wal::create(dir, 1, Vec::new(), 0).unwrap()
    }

    #[test]
    fn a_covered_position_needs_no_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal(dir.path());
        let first = wal.append(b"one", 1).unwrap();
        let second = wal.append(b"two", 2).unwrap();
        wal.sync_to(second).unwrap();
        assert_eq!(wal.sync_count(), 1);
        wal.sync_to(first).unwrap();
        wal.sync_to(second).unwrap();
        assert_eq!(
            wal.sync_count(),
            1,
            "both records were covered by the first sync"
        );
        let third = wal.append(b"three", 3).unwrap();
        wal.sync_to(third).unwrap();
        assert_eq!(wal.sync_count(), 2);
    }

    #[test]
    fn concurrent_committers_are_all_synced_in_at_most_one_sync_each() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(wal(dir.path()));
        let (threads, commits) = (8, 50);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let wal = wal.clone();
                scope.spawn(move || {
                    for c in 0..commits {
                        let seq = (t * commits + c + 1) as u64;
                        let position = wal.append(&seq.to_le_bytes(), seq).unwrap();
                        wal.sync_to(position).unwrap();
                        assert!(wal.sync.lock().synced >= position);
                    }
                });
            }
        });
        let syncs = wal.sync_count();
        assert!((1..=(threads * commits) as u64).contains(&syncs));
        let records = read_wal_file(&wal_path(dir.path(), 1), false).unwrap();
        assert_eq!(records.len(), threads * commits);
    }

    /// Parks the thread until `wal` reports `position` synced.
    fn wait_synced(wal: &Wal, position: u64, seq: u64) -> Result<()> {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            match wal.poll_synced(position, seq, &mut cx) {
                Poll::Ready(outcome) => return outcome,
                Poll::Pending => std::thread::park(),
            }
        }
    }

    #[test]
    fn async_waiters_are_woken_once_synced_and_the_syncer_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(wal(dir.path()));
        let (threads, commits) = (8, 50);
        std::thread::scope(|scope| {
            let syncer = scope.spawn(|| wal.run_syncer(|_| {}));
            let committers: Vec<_> = (0..threads)
                .map(|t| {
                    let wal = wal.clone();
                    scope.spawn(move || {
                        for c in 0..commits {
                            let seq = (t * commits + c + 1) as u64;
                            let position = wal.append(&seq.to_le_bytes(), seq).unwrap();
                            wait_synced(&wal, position, seq).unwrap();
                            assert!(wal.sync.lock().synced >= position);
                        }
                    })
                })
                .collect();
            committers.into_iter().for_each(|c| c.join().unwrap());
            wal.stop_syncer();
            syncer.join().unwrap();
        });
        // With the syncer gone, a late committer syncs for itself.
        let last = (threads * commits + 1) as u64;
        let position = wal.append(&last.to_le_bytes(), last).unwrap();
        wait_synced(&wal, position, last).unwrap();
        assert!(wal.sync.lock().synced >= position);
        assert!((1..=(threads * commits + 1) as u64).contains(&wal.sync_count()));
        let records = read_wal_file(&wal_path(dir.path(), 1), false).unwrap();
        assert_eq!(records.len(), threads * commits + 1);
    }

    #[test]
    fn rotation_waits_for_a_running_sync_and_keeps_positions() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(wal(dir.path()));
        std::thread::scope(|scope| {
            let syncer = wal.clone();
            scope.spawn(move || {
                for seq in 1..=200u64 {
                    let position = syncer.append(b"row", seq).unwrap();
                    syncer.sync_to(position).unwrap();
                }
            });
            for number in 2..=5 {
                wal.rotate(number).unwrap();
            }
        });
        let records: usize = list_wal_files(dir.path())
            .unwrap()
            .iter()
            .map(|(_, path)| read_wal_file(path, false).unwrap().len())
            .sum();
        assert_eq!(records, 200);
        assert_eq!(wal.closed_files(), 4);
    }
}
