//! A per-thread cache of freed large element buffers, handed to the next
//! buffer of the same length.
//!
//! A training loop frees and makes the same buffers every step. Given back
//! to the system allocator, a large buffer goes back to the kernel (glibc
//! returns big blocks with `munmap` or by trimming the heap), and the next
//! step pays a page fault and a page clear for every 4 KiB of it again: a
//! quarter of W2's time, more than its elementwise ops. So buffers of at
//! least [`MIN_BYTES`] are kept here when they drop, up to [`MAX_BYTES`] per
//! thread, and reused only for the exact same length (a tensor's buffer is
//! never larger than it needs; `memory::saved_bytes` stays exact).
//! [`crate::memory::empty_cache`] gives the memory back.

use std::any::Any;
use std::cell::RefCell;

/// Smaller buffers go straight back to the allocator (its own caches serve
/// them well; and they page-fault little).
pub(crate) const MIN_BYTES: usize = 64 << 10;

/// At most this many bytes are kept per thread; a buffer that would go over
/// is freed.
pub(crate) const MAX_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pools {
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f64>>,
    bytes: usize,
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::default();
}

/// The list of cached buffers of `T` (`None` for types never cached).
fn list<T: 'static>(pools: &mut Pools) -> Option<&mut Vec<Vec<T>>> {
    let f32s: &mut dyn Any = &mut pools.f32;
    if let Some(list) = f32s.downcast_mut() {
        return Some(list);
    }
    let f64s: &mut dyn Any = &mut pools.f64;
    f64s.downcast_mut()
}

/// An empty `Vec` with room for exactly `n` elements: a cached one if this
/// thread has one of that capacity.
pub(crate) fn take<T: 'static>(n: usize) -> Vec<T> {
    if n * std::mem::size_of::<T>() >= MIN_BYTES {
        let cached = POOLS.try_with(|p| {
            let mut pools = p.borrow_mut();
            let list = list::<T>(&mut pools)?;
            let i = list.iter().position(|v| v.capacity() == n)?;
            let v = list.swap_remove(i);
            pools.bytes -= n * std::mem::size_of::<T>();
            Some(v)
        });
        if let Ok(Some(v)) = cached {
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Takes `v`'s allocation for later reuse, or frees it (small, over the
/// limit, or during thread exit).
pub(crate) fn give<T: 'static>(mut v: Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < MIN_BYTES {
        return;
    }
    v.clear();
    // `try_with` fails while the thread's locals are being destroyed: `v`
    // is then simply freed.
    let _ = POOLS.try_with(|p| {
        let mut pools = p.borrow_mut();
        if pools.bytes + bytes <= MAX_BYTES {
            if let Some(list) = list::<T>(&mut pools) {
                list.push(v);
                pools.bytes += bytes;
            }
        }
    });
}

/// Frees this thread's cached buffers.
pub(crate) fn clear() {
    let _ = POOLS.try_with(|p| *p.borrow_mut() = Pools::default());
}

/// The bytes this thread keeps cached.
pub(crate) fn cached_bytes() -> usize {
    POOLS.try_with(|p| p.borrow().bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_for_the_same_length_only() {
        clear();
        let n = MIN_BYTES / 4;
        let v: Vec<f32> = Vec::with_capacity(n);
        let ptr = v.as_ptr();
        give(v);
        assert_eq!(cached_bytes(), n * 4);
        let longer = take::<f32>(n + 1);
        let wider = take::<f64>(n);
        assert_eq!(cached_bytes(), n * 4, "neither the length nor the type matches");
        drop((longer, wider));
        let again = take::<f32>(n);
        assert_eq!((again.as_ptr(), again.len(), again.capacity()), (ptr, 0, n));
        assert_eq!(cached_bytes(), 0);
    }

    #[test]
    fn small_buffers_and_buffers_over_the_limit_are_freed() {
        clear();
        give(Vec::<f64>::with_capacity(16));
        assert_eq!(cached_bytes(), 0);
        for _ in 0..MAX_BYTES / MIN_BYTES + 3 {
            give(Vec::<u8>::with_capacity(MIN_BYTES)); // not an element type
            give(Vec::<f32>::with_capacity(MIN_BYTES / 4));
        }
        assert_eq!(cached_bytes(), MAX_BYTES);
        clear();
        assert_eq!(cached_bytes(), 0);
    }
}
