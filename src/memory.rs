//! Saved-activation accounting (process-wide).
//!
//! Every buffer carries an atomic count of the saved values that refer to
//! it; the process-wide counter moves by the buffer's whole allocation when
//! that count goes 0 -> 1 or 1 -> 0. So a buffer saved by several nodes (or
//! through several views) counts once, and no global map or lock is needed.
//! Buffers made as leaves (constructors, `from_vec`, `no_grad` results) are
//! never counted: they are the user's memory, not the graph's.

use crate::pool;
use crate::storage::Buffer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// assert_eq!(tapegrad::memory::saved_bytes(), before + 4000);
/// drop(y); // and the graph with it
/// assert_eq!(tapegrad::memory::saved_bytes(), before);
/// ```
///
/// The counter is process-wide: tests asserting on it must not run beside
/// other tests in one process.
pub fn saved_bytes() -> usize {
    SAVED.load(Ordering::Relaxed)
}

/// The high-water mark of [`saved_bytes`] since the last [`reset_peak`].
///
/// ```
/// use tapegrad::{memory, Tensor};
/// let x = Tensor::<f32>::ones(&[1000]).set_requires_grad(true);
/// memory::reset_peak();
/// let base = memory::saved_bytes();
/// let y = x.exp().exp(); // each exp saves its output: 2 × 4000 bytes
/// y.sum().backward(); // frees them
/// assert_eq!(memory::saved_bytes(), base);
/// assert_eq!(memory::peak_saved_bytes(), base + 8000);
/// ```
pub fn peak_saved_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at the current [`saved_bytes`].
///
/// ```
/// use tapegrad::{memory, Tensor};
/// let x = Tensor::<f32>::ones(&[1000]).set_requires_grad(true);
/// x.exp().sum().backward(); // saved 4000 bytes for a while
/// assert!(memory::peak_saved_bytes() >= 4000);
/// memory::reset_peak();
/// assert_eq!(memory::peak_saved_bytes(), memory::saved_bytes());
/// ```
pub fn reset_peak() {
    PEAK.store(SAVED.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Frees every large buffer kept for reuse, whichever thread freed it.
/// Tensors of 64 KiB and more keep their allocation when they drop, for the
/// next tensor of the same length in any thread, which spares a training
/// loop the page faults of fresh memory at every step; this gives it back
/// (like `torch.cuda.empty_cache`).
///
/// The cache holds at most [`cache_limit`] bytes for the whole process, and
/// never more than the live tensors of 64 KiB and more have fallen below
/// their high-water mark since the cache was last emptied: before a tensor
/// is allocated that no cached buffer fits, the oldest cached buffers are
/// freed as far as that takes. So the cache does not raise a program's peak
/// memory (up to allocations that do not go through it: a matrix product's
/// packing buffer, tensors under 64 KiB).
///
/// ```
/// let t = tapegrad::Tensor::<f32>::zeros(&[256, 256]); // 256 KiB
/// drop(t);
/// assert_eq!(tapegrad::memory::cached_bytes(), 256 * 256 * 4);
/// tapegrad::memory::empty_cache();
/// assert_eq!(tapegrad::memory::cached_bytes(), 0);
/// ```
pub fn empty_cache() {
    pool::clear();
}

/// The bytes of freed buffers kept for reuse, by all threads (see
/// [`empty_cache`]).
///
/// ```
/// use tapegrad::{memory, Tensor};
/// memory::empty_cache();
/// drop(Tensor::<f64>::zeros(&[128, 128])); // 128 KiB, kept for reuse
/// assert_eq!(memory::cached_bytes(), 128 * 128 * 8);
/// let t = Tensor::<f64>::ones(&[128, 128]); // of the same length: takes it back
/// assert_eq!(memory::cached_bytes(), 0);
/// # drop(t);
/// ```
pub fn cached_bytes() -> usize {
    pool::cached_bytes()
}

/// Keeps at most `bytes` of freed buffers for reuse from now on, in the
/// whole process, freeing the oldest ones over it; 0 turns the cache off.
/// The limit is 256 MiB unless set.
///
/// ```
/// tapegrad::memory::set_cache_limit(0);
/// drop(tapegrad::Tensor::<f32>::zeros(&[256, 256]));
/// assert_eq!(tapegrad::memory::cached_bytes(), 0);
/// tapegrad::memory::set_cache_limit(256 << 20);
/// ```
pub fn set_cache_limit(bytes: usize) {
    pool::set_limit(bytes);
}

/// The most bytes of freed buffers kept for reuse ([`set_cache_limit`]).
///
/// ```
/// use tapegrad::memory;
/// assert_eq!(memory::cache_limit(), 256 << 20); // the default
/// memory::set_cache_limit(1 << 20);
/// assert_eq!(memory::cache_limit(), 1 << 20);
/// ```
pub fn cache_limit() -> usize {
    pool::limit()
}

/// Counts `buf` as saved by one more value (the first counts its bytes).
pub(crate) fn count_saved<T: 'static>(buf: &Buffer<T>) {
    if buf.countable.load(Ordering::Relaxed) && buf.saved_refs.fetch_add(1, Ordering::AcqRel) == 0 {
        let now = SAVED.fetch_add(buf.bytes(), Ordering::Relaxed) + buf.bytes();
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// Undoes one [`count_saved`] (the last takes its bytes off).
pub(crate) fn uncount_saved<T: 'static>(buf: &Buffer<T>) {
    if buf.countable.load(Ordering::Relaxed) && buf.saved_refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        SAVED.fetch_sub(buf.bytes(), Ordering::Relaxed);
    }
}

/// A global allocator that counts the bytes live on the heap and their
/// high-water mark, on top of the system allocator: to see what a training
/// step really holds (activations, gradients, optimizer state) beside
/// [`saved_bytes`]. The counts are process-wide.
///
/// ```
/// use tapegrad::memory::CountingAllocator;
///
/// #[global_allocator]
/// static HEAP: CountingAllocator = CountingAllocator;
///
/// fn main() {
///     let before = CountingAllocator::live();
///     CountingAllocator::reset_peak();
///     let v = vec![0u8; 1 << 20];
///     assert!(CountingAllocator::peak() - before >= 1 << 20);
///     drop(v);
/// }
/// ```
pub struct CountingAllocator;

static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

impl CountingAllocator {
    /// Bytes allocated and not yet freed (0 unless this is the global
    /// allocator).
    ///
    /// ```
    /// # use tapegrad::memory::CountingAllocator;
    /// # #[global_allocator]
    /// # static HEAP: CountingAllocator = CountingAllocator;
    /// # fn main() {
    /// let before = CountingAllocator::live();
    /// let t = tapegrad::Tensor::<f64>::zeros(&[1000]);
    /// assert!(CountingAllocator::live() >= before + 8000);
    /// drop(t);
    /// # }
    /// ```
    pub fn live() -> usize {
        HEAP_LIVE.load(Ordering::Relaxed)
    }

    /// The high-water mark of [`live`](CountingAllocator::live) since the
    /// last [`reset_peak`](CountingAllocator::reset_peak).
    ///
    /// ```
    /// # use tapegrad::memory::CountingAllocator;
    /// # #[global_allocator]
    /// # static HEAP: CountingAllocator = CountingAllocator;
    /// # fn main() {
    /// CountingAllocator::reset_peak();
    /// let before = CountingAllocator::live();
    /// drop(vec![0u8; 1 << 20]);
    /// assert!(CountingAllocator::peak() >= before + (1 << 20)); // the vector was counted
    /// assert!(CountingAllocator::live() < before + (1 << 20)); // and freed
    /// # }
    /// ```
    pub fn peak() -> usize {
        HEAP_PEAK.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark at the current live bytes.
    ///
    /// ```
    /// # use tapegrad::memory::CountingAllocator;
    /// # #[global_allocator]
    /// # static HEAP: CountingAllocator = CountingAllocator;
    /// # fn main() {
    /// drop(vec![0u8; 1 << 20]);
    /// assert!(CountingAllocator::peak() >= 1 << 20);
    /// CountingAllocator::reset_peak();
    /// assert_eq!(CountingAllocator::peak(), CountingAllocator::live());
    /// # }
    /// ```
    pub fn reset_peak() {
        HEAP_PEAK.store(HEAP_LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Runs `f`, and returns its result and the heap's high-water mark
    /// during it above what was live when it started. The buffer cache is
    /// emptied first: cached buffers would serve `f` without showing on the
    /// heap (see [`empty_cache`]).
    ///
    /// ```
    /// # use tapegrad::memory::CountingAllocator;
    /// # #[global_allocator]
    /// # static HEAP: CountingAllocator = CountingAllocator;
    /// # fn main() {
    /// use tapegrad::Tensor;
    /// let (sum, peak) = CountingAllocator::peak_during(|| Tensor::<f32>::ones(&[1 << 20]).sum().item());
    /// assert_eq!(sum, (1 << 20) as f32);
    /// assert!(peak >= 4 << 20); // the 4 MiB of ones, freed since
    /// # }
    /// ```
    pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        empty_cache();
        let before = Self::live();
        Self::reset_peak();
        let out = f();
        (out, Self::peak() - before)
    }

    fn grew(by: usize) {
        let now = HEAP_LIVE.fetch_add(by, Ordering::Relaxed) + by;
        HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(by: usize) {
        HEAP_LIVE.fetch_sub(by, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only observe the sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::shrank(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            Self::grew(new_size - layout.size());
        } else {
            Self::shrank(layout.size() - new_size);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
