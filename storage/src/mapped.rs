//! Immutable files read as Arrow buffers: mapped, or copied into anonymous
//! memory, with the mapping kept alive by the buffers sliced from it.

use std::fs::File;
use std::sync::Arc;

use arrow_buffer::Buffer;
use memmap2::Mmap;

/// `file` mapped read-only. Only for files that never change once renamed
/// into place (segments, indexes), in a directory this process has locked.
pub(crate) fn map_file(file: &File) -> std::io::Result<Buffer> {
    // SAFETY: the callers' files are immutable once renamed into place and
    // this process holds the directory lock, so the mapping does not change.
    let map = unsafe { Mmap::map(file) }?;
    Ok(buffer_over(Arc::new(map)))
}

/// A buffer over `map`, which it keeps alive.
pub(crate) fn buffer_over(map: Arc<Mmap>) -> Buffer {
    match std::ptr::NonNull::new(map.as_ptr() as *mut u8) {
        // SAFETY: the pointer and length describe the mapping, which the Arc keeps alive.
        Some(ptr) => unsafe { Buffer::from_custom_allocation(ptr, map.len(), map.clone()) },
        None => Buffer::from_vec(Vec::<u8>::new()),
    }
}
