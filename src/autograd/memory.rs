//! Saved-activation accounting (process-wide).
//!
//! Every buffer carries an atomic count of the saved values that refer to
//! it; the process-wide counter moves by the buffer's whole allocation when
//! that count goes 0 -> 1 or 1 -> 0. So a buffer saved by several nodes (or
//! through several views) counts once, and no global map or lock is needed.
//! Buffers made as leaves (constructors, `from_vec`, `no_grad` results) are
//! never counted: they are the user's memory, not the graph's.

use crate::storage::Buffer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static SAVED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the buffers that live graphs saved for backward, each buffer
/// once, leaves excluded.
///
/// ```
/// use tapegrad::prelude::*;
/// let before = tapegrad::memory::saved_bytes();
/// let x = Tensor::<f32>::ones(&[1000]).set_requires_grad(true);
/// let y = x.exp(); // saves its output: 4000 bytes
/// assert!(tapegrad::memory::saved_bytes() >= before);
/// drop(y);
/// ```
///
/// The counter is process-wide: tests asserting on it must not run beside
/// other tests in one process.
pub fn saved_bytes() -> usize {
    SAVED.load(Ordering::Relaxed)
}

/// The high-water mark of [`saved_bytes`] since the last [`reset_peak`].
pub fn peak_saved_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at the current [`saved_bytes`].
pub fn reset_peak() {
    PEAK.store(SAVED.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A reference from a saved value to a buffer, counted while it lives.
pub(crate) struct SavedBuf<T>(pub(crate) Arc<Buffer<T>>);

impl<T> SavedBuf<T> {
    pub(crate) fn new(buf: Arc<Buffer<T>>) -> Self {
        if buf.countable.load(Ordering::Relaxed) && buf.saved_refs.fetch_add(1, Ordering::AcqRel) == 0 {
            let now = SAVED.fetch_add(buf.bytes(), Ordering::Relaxed) + buf.bytes();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        SavedBuf(buf)
    }
}

impl<T> Drop for SavedBuf<T> {
    fn drop(&mut self) {
        let buf = &self.0;
        if buf.countable.load(Ordering::Relaxed) && buf.saved_refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            SAVED.fetch_sub(buf.bytes(), Ordering::Relaxed);
        }
    }
}
