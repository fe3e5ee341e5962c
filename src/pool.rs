//! A process-wide cache of freed large element buffers, handed to the next
//! buffer of the same length.
//!
//! A training loop frees and makes the same buffers every step. Given back
//! to the system allocator, a large buffer goes back to the kernel (glibc
//! returns big blocks with `munmap` or by trimming the heap), and the next
//! step pays a page fault and a page clear for every 4 KiB of it again: a
//! quarter of W2's time, more than its elementwise ops. So buffers of at
//! least [`MIN_BYTES`] are kept here when they drop, up to a limit for the
//! whole process ([`DEFAULT_LIMIT`] unless [`set_limit`] says otherwise),
//! and reused only for the exact same length (a tensor's buffer is never
//! larger than it needs; `memory::saved_bytes` stays exact).
//!
//! **The cache never lifts the heap above what the program itself held.**
//! It counts the bytes of the live buffers of [`MIN_BYTES`] or more and
//! their high-water mark since it was last emptied: the most those buffers
//! took at once, which is what the heap held for them at its peak without a
//! cache. Before it allocates a buffer it cannot serve, and whenever the
//! live bytes grow, it frees its oldest buffers until live and cached bytes
//! fit under that mark together. A step that frees activations and then
//! makes gradients of another length thus gets the activations' memory back
//! for the gradients instead of holding both. The price: a loop whose
//! buffers change lengths within a step frees and allocates the difference
//! every step (W2: four buffers, 3 MiB, which glibc serves from its free
//! lists without page faults). Not counted: allocations that do not go
//! through the cache (matrixmultiply's packing buffer inside a product, up
//! to 1 MiB in f32 and 2 MiB in f64 per thread, and buffers under 64 KiB);
//! when one of them comes while the cache holds memory, the heap can pass
//! its mark by that allocation.
//!
//! One cache behind a mutex rather than one per thread: a buffer freed by
//! one thread serves the next of its length in any thread, the limit and the
//! high-water mark hold for the process however many threads free buffers,
//! and [`crate::memory::empty_cache`] reaches all of it. The lock is taken
//! once per buffer of 64 KiB or more, whose elements take microseconds to
//! write; it is held for a scan of the cached buffers and never while memory
//! is freed.

use crate::sync;
use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Smaller buffers go straight back to the allocator (its own caches serve
/// them well; and they page-fault little).
pub(crate) const MIN_BYTES: usize = 64 << 10;

/// The limit of cached bytes unless [`set_limit`] changes it.
pub(crate) const DEFAULT_LIMIT: usize = 256 << 20;

/// At most this many bytes are cached; a buffer that would go over is freed.
static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

static CACHE: Mutex<Cache> = Mutex::new(Cache::new());

/// The cached bytes, readable without the lock (set as the lock is released).
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the live buffers of at least [`MIN_BYTES`] (made and not yet
/// given back).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The high-water mark of [`LIVE`] since the cache was last emptied.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// A cached allocation of one of the element types.
enum Kept {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Kept {
    /// `v`'s allocation as a cache entry (`None` for types never cached).
    fn wrap<T: 'static>(mut v: Vec<T>) -> Option<Kept> {
        v.clear();
        let mut v = Some(v);
        let slot: &mut dyn Any = &mut v;
        if let Some(v) = slot.downcast_mut::<Option<Vec<f32>>>() {
            return v.take().map(Kept::F32);
        }
        slot.downcast_mut::<Option<Vec<f64>>>()?.take().map(Kept::F64)
    }

    /// Whether this is an allocation of exactly `n` elements of `T`.
    fn fits<T: 'static>(&self, n: usize) -> bool {
        let (ty, len) = match self {
            Kept::F32(v) => (TypeId::of::<f32>(), v.capacity()),
            Kept::F64(v) => (TypeId::of::<f64>(), v.capacity()),
        };
        ty == TypeId::of::<T>() && len == n
    }

    /// The allocation as the `Vec<T>` it is ([`fits`](Kept::fits)).
    fn unwrap<T: 'static>(self) -> Vec<T> {
        let mut out: Option<Vec<T>> = None;
        let slot: &mut dyn Any = &mut out;
        let typed = match self {
            Kept::F32(v) => slot.downcast_mut().map(|out| *out = Some(v)),
            Kept::F64(v) => slot.downcast_mut().map(|out| *out = Some(v)),
        };
        typed.and(out).expect("a Vec<T>: checked by `fits`")
    }

    fn bytes(&self) -> usize {
        match self {
            Kept::F32(v) => v.capacity() * 4,
            Kept::F64(v) => v.capacity() * 8,
        }
    }
}

/// The cached buffers, oldest first, and their bytes.
#[derive(Default)]
struct Cache {
    kept: VecDeque<Kept>,
    bytes: usize,
}

impl Cache {
    const fn new() -> Self {
        Cache {
            kept: VecDeque::new(),
            bytes: 0,
        }
    }

    /// A cached buffer of exactly `n` elements of `T`, taken out.
    fn take<T: 'static>(&mut self, n: usize) -> Option<Vec<T>> {
        let i = self.kept.iter().position(|k| k.fits::<T>(n))?;
        let kept = self.kept.remove(i).expect("found");
        self.bytes -= kept.bytes();
        Some(kept.unwrap())
    }

    /// Keeps `kept` if that stays within `limit` bytes; else hands it back
    /// (to be freed).
    fn keep(&mut self, kept: Kept, limit: usize) -> Option<Kept> {
        if self.bytes + kept.bytes() > limit {
            return Some(kept);
        }
        self.bytes += kept.bytes();
        self.kept.push_back(kept);
        None
    }

    /// The oldest cached buffer, taken out.
    fn pop_oldest(&mut self) -> Option<Kept> {
        let kept = self.kept.pop_front()?;
        self.bytes -= kept.bytes();
        Some(kept)
    }
}

/// The locked cache, which publishes its size in [`CACHED`] when unlocked.
struct Locked(MutexGuard<'static, Cache>);

impl Drop for Locked {
    fn drop(&mut self) {
        CACHED.store(self.0.bytes, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Locked {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        &self.0
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Cache {
        &mut self.0
    }
}

/// The cache, whichever thread panicked while holding it.
fn lock() -> Locked {
    Locked(sync::lock(&CACHE))
}

/// An empty `Vec` with room for exactly `n` elements: a cached one if there
/// is one of that capacity. If not, cached buffers are freed first as far as
/// the new one would lift the heap over its high-water mark.
///
/// **Panics** if the memory cannot be had, naming its size (where a `Vec`
/// would abort the process).
#[track_caller]
pub(crate) fn take<T: 'static>(n: usize) -> Vec<T> {
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    if bytes >= MIN_BYTES {
        if let Some(v) = lock().take(n) {
            return v;
        }
        let live = LIVE.load(Ordering::Relaxed).saturating_add(bytes);
        shrink_to(HIGH.load(Ordering::Relaxed).saturating_sub(live));
    }
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        out_of_memory::<T>(n);
    }
    v
}

/// The panic of an allocation of `n` elements of `T` that failed.
#[cold]
#[track_caller]
fn out_of_memory<T>(n: usize) -> ! {
    let bytes = n as u128 * std::mem::size_of::<T>() as u128;
    let ty = std::any::type_name::<T>();
    panic!("cannot allocate {bytes} bytes ({n} elements of {ty}): out of memory")
}

/// Takes `v`'s allocation for later reuse, or frees it (small, of a type
/// not cached, or over the limit).
pub(crate) fn give<T: 'static>(v: Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
    let Some(kept) = Kept::wrap(v) else { return };
    let refused = lock().keep(kept, LIMIT.load(Ordering::Relaxed));
    drop(refused); // freed, if it was, outside the lock
}

/// Frees the oldest cached buffers until at most `bytes` remain.
fn shrink_to(bytes: usize) {
    loop {
        let mut cache = lock();
        if cache.bytes <= bytes {
            return;
        }
        let oldest = cache.pop_oldest();
        drop(cache);
        drop(oldest); // outside the lock
    }
}

/// Counts a buffer of `bytes` as made (given back by [`give`] when it
/// drops).
pub(crate) fn made(bytes: usize) {
    if bytes >= MIN_BYTES {
        grow(bytes);
    }
}

/// Counts `bytes` more as live, and frees the oldest cached buffers that no
/// longer fit under the high-water mark.
fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    let high = HIGH.fetch_max(live, Ordering::Relaxed).max(live);
    if CACHED.load(Ordering::Relaxed) > high - live {
        shrink_to(high - live);
    }
}

/// Frees every cached buffer.
pub(crate) fn clear() {
    shrink_to(0);
    HIGH.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// The bytes cached.
pub(crate) fn cached_bytes() -> usize {
    CACHED.load(Ordering::Relaxed)
}

/// Caches at most `bytes` from now on, freeing the oldest buffers over it.
pub(crate) fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    shrink_to(bytes);
}

/// The current limit of cached bytes.
pub(crate) fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    //! The cache's bookkeeping, on caches of their own (the process-wide
    //! one is shared by the tests running beside these: tests/pool.rs
    //! checks it).
    use super::*;

    fn kept<T: 'static>(n: usize) -> Kept {
        Kept::wrap(Vec::<T>::with_capacity(n)).expect("an element type")
    }

    #[test]
    fn a_kept_buffer_is_taken_again_for_the_same_length_and_type_only() {
        let mut cache = Cache::new();
        let n = MIN_BYTES / 4;
        let v: Vec<f32> = Vec::with_capacity(n);
        let ptr = v.as_ptr();
        assert!(cache.keep(Kept::wrap(v).unwrap(), usize::MAX).is_none());
        assert_eq!(cache.bytes, n * 4);
        assert!(cache.take::<f32>(n + 1).is_none(), "another length");
        assert!(cache.take::<f64>(n).is_none(), "another type");
        assert_eq!(cache.bytes, n * 4);
        let again = cache.take::<f32>(n).expect("the same length and type");
        assert_eq!((again.as_ptr(), again.len(), again.capacity()), (ptr, 0, n));
        assert_eq!((cache.bytes, cache.kept.len()), (0, 0));
    }

    #[test]
    fn the_limit_refuses_buffers_and_the_oldest_go_first() {
        let mut cache = Cache::new();
        let n = MIN_BYTES / 8;
        assert!(cache.keep(kept::<f64>(n), 2 * MIN_BYTES).is_none());
        assert!(cache.keep(kept::<f32>(2 * n), 2 * MIN_BYTES).is_none());
        let refused = cache.keep(kept::<f32>(2 * n), 2 * MIN_BYTES);
        assert_eq!(refused.map(|k| k.bytes()), Some(MIN_BYTES), "over the limit");
        assert_eq!(cache.bytes, 2 * MIN_BYTES);
        assert!(matches!(cache.pop_oldest(), Some(Kept::F64(_))));
        assert!(matches!(cache.pop_oldest(), Some(Kept::F32(_))));
        assert!(cache.pop_oldest().is_none());
        assert_eq!(cache.bytes, 0);
        assert!(
            Kept::wrap(Vec::<u8>::with_capacity(MIN_BYTES)).is_none(),
            "not an element type"
        );
    }
}
