//! When a call releases the GIL: only for inputs large enough to repay the round trip.

use pyo3::prelude::*;

/// Inputs at least this long are worked on with the GIL released.
pub const DETACH_THRESHOLD: usize = 64 * 1024;

/// Runs `f` without the GIL when `len` makes the work worth a GIL round trip.
pub fn maybe_detach<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_THRESHOLD {
        py.detach(f)
    } else {
        f()
    }
}
