//! A seeded generator for unit tests that want varied but repeatable data.

/// Xorshift64: the same sequence on every run.
pub(crate) fn xorshift() -> impl FnMut() -> u64 {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
