/// Engine settings; [`Options::default`] is what a database opens with.
#[derive(Debug, Clone)]
pub struct Options {
    /// A table's memtable is frozen and flushed to a segment past this many bytes.
    pub flush_threshold_bytes: usize,
    /// Acknowledge a commit only after its WAL record is fsynced.
    pub synchronous_commit: bool,
    /// Without `synchronous_commit`, how often the WAL is synced anyway, so
    /// that a crash loses at most about this much; `None` never syncs on a
    /// timer (PostgreSQL's `wal_writer_delay`).
    pub wal_writer_delay: Option<std::time::Duration>,
    /// Level-0 segments of a table that start a compaction.
    pub l0_compaction_trigger: usize,
    /// Level-0 segments of a table past which writers wait for compaction.
    pub l0_stall_limit: usize,
    /// Frozen memtables awaiting flush past which writers wait.
    pub max_immutable_memtables: usize,
    /// Rows per segment row group.
    pub row_group_rows: usize,
    /// Rows per compacted segment.
    pub segment_max_rows: usize,
    /// Decoded column chunks kept in memory for reads.
    pub cache_bytes: u64,
    /// WAL files past which every memtable holding old records is flushed.
    pub max_wal_files: usize,
    /// Run flushes and compactions on a background thread.
    pub background_work: bool,
    /// Bytes of rows one transaction may buffer before it commits. A commit
    /// is one WAL record, which may not exceed 1 GiB, so this is capped
    /// there; a transaction past it fails at once (53200) rather than
    /// holding everything until its commit fails.
    pub max_transaction_bytes: usize,
    /// The manifest log is rewritten as one snapshot past this size.
    pub manifest_rewrite_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flush_threshold_bytes: 64 << 20,
            synchronous_commit: true,
            wal_writer_delay: Some(std::time::Duration::from_millis(200)),
            l0_compaction_trigger: 4,
            l0_stall_limit: 20,
            max_immutable_memtables: 4,
            row_group_rows: 64 * 1024,
            segment_max_rows: 1 << 20,
            cache_bytes: 512 << 20,
            max_wal_files: 8,
            background_work: true,
            manifest_rewrite_bytes: 8 << 20,
            max_transaction_bytes: basalt_formats::frame::MAX_FRAME_LEN,
        }
    }
}

impl Options {
    /// The settings with limits that could never be met raised to ones that
    /// can: a writer waiting for fewer than one pending flush, or for fewer
    /// level-0 segments than compaction starts at, would wait forever.
    pub(crate) fn normalized(mut self) -> Options {
        self.max_immutable_memtables = self.max_immutable_memtables.max(1);
        self.l0_stall_limit = self.l0_stall_limit.max(1);
        self.l0_compaction_trigger = self.l0_compaction_trigger.clamp(1, self.l0_stall_limit);
        self.row_group_rows = self.row_group_rows.max(1);
        self.segment_max_rows = self.segment_max_rows.max(1);
        self.max_transaction_bytes = self
            .max_transaction_bytes
            .min(basalt_formats::frame::MAX_FRAME_LEN);
        self
    }
}
