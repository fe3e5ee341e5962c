//! Buffers and layouts: the data behind a tensor.
//!
//! A [`Buffer`] is the elements (inline up to 16, else on the heap from the
//! buffer pool), immutable once shared, behind an `Arc`, with its
//! saved-bytes bookkeeping; a [`Value`] is a buffer plus a strided layout (shape, strides, offset), so
//! that views (`t`, `narrow`, `broadcast_to`, ...) are a new `Value` over the
//! same buffer, made in O(1). Writes go into a buffer only while it is owned
//! uniquely (`Arc::get_mut`); otherwise the writer makes a fresh copy
//! (copy-on-write), which is why views and saved values are snapshots.

use crate::layout::{self, contiguous_strides, dims, Dims};
use crate::{pool, Float};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder, Zip};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

/// How many elements a buffer holds inline, in its own allocation: scalars
/// and small vectors (per-op overhead dominates there) then cost one
/// allocation instead of two.
pub(crate) const INLINE: usize = 16;

/// The elements of a buffer.
pub(crate) type Data<T> = SmallVec<[T; INLINE]>;

/// The elements `it` yields (exactly `n` of them) as buffer data: large ones
/// into a `Vec` (from the [`pool`]) whose `extend` loop vectorises, taken
/// over without a copy.
///
/// **Panics** if the memory cannot be had ([`pool::take`]).
#[track_caller]
pub(crate) fn collect_data<T: Copy + Default + 'static>(n: usize, it: impl Iterator<Item = T>) -> Data<T> {
    if n <= INLINE {
        // Through a plain array: SmallVec's own collect checks its length
        // at every element, which cost more than the op on W1's tensors.
        let mut buf = [T::default(); INLINE];
        let mut len = 0;
        for (slot, v) in buf.iter_mut().zip(it) {
            *slot = v;
            len += 1;
        }
        Data::from_buf_and_len(buf, len)
    } else {
        let mut v = pool::take(n);
        v.extend(it);
        Data::from_vec(v)
    }
}

/// One allocation of elements.
pub(crate) struct Buffer<T: 'static> {
    pub(crate) data: Data<T>,
    /// Set when a recorded op made this buffer (a non-leaf's data): only such
    /// buffers count in `memory::saved_bytes` (leaves are the user's memory).
    pub(crate) countable: AtomicBool,
    /// How many saved values of live graphs refer to this buffer.
    pub(crate) saved_refs: AtomicUsize,
}

impl<T: 'static> Buffer<T> {
    pub(crate) fn new(data: impl Into<Data<T>>) -> Arc<Self> {
        let data = data.into();
        if data.spilled() {
            pool::made(data.capacity() * std::mem::size_of::<T>());
        }
        Arc::new(Buffer {
            data,
            countable: AtomicBool::new(false),
            saved_refs: AtomicUsize::new(0),
        })
    }

    /// The whole allocation of the elements, in bytes (for inline ones, the
    /// elements held).
    pub(crate) fn bytes(&self) -> usize {
        let elems = if self.data.spilled() {
            self.data.capacity()
        } else {
            self.data.len()
        };
        elems * std::mem::size_of::<T>()
    }
}

impl<T: 'static> Drop for Buffer<T> {
    /// A large allocation goes to the [`pool`] for reuse.
    fn drop(&mut self) {
        if self.data.spilled() {
            pool::give(std::mem::take(&mut self.data).into_vec());
        }
    }
}

/// Buffer data of `n` copies of `v`.
///
/// **Panics** if the memory cannot be had ([`pool::take`]).
#[track_caller]
pub(crate) fn filled<T: Copy + 'static>(v: T, n: usize) -> Data<T> {
    if n <= INLINE {
        Data::from_elem(v, n)
    } else {
        let mut data = pool::take(n);
        data.resize(n, v);
        Data::from_vec(data)
    }
}

/// A buffer seen through a strided layout. Cheap to clone.
pub(crate) struct Value<T: 'static> {
    pub(crate) buf: Arc<Buffer<T>>,
    pub(crate) shape: Dims,
    pub(crate) strides: Dims,
    pub(crate) offset: usize,
}

impl<T: 'static> Clone for Value<T> {
    fn clone(&self) -> Self {
        // SmallVec's `clone` pushes the dims one at a time, which showed in
        // W1's profile.
        Value {
            buf: self.buf.clone(),
            shape: dims(&self.shape),
            strides: dims(&self.strides),
            offset: self.offset,
        }
    }
}

impl<T: Float> Value<T> {
    /// A fresh buffer holding `data` in row-major order.
    ///
    /// **Panics** if `data.len()` is not the product of `shape`.
    pub(crate) fn from_vec(data: impl Into<Data<T>>, shape: &[usize]) -> Self {
        let data = data.into();
        let n = layout::numel("from_vec", shape);
        // Internal: Tensor::from_vec checks the user's data before this.
        assert!(
            data.len() == n,
            "from_vec: {} elements cannot have shape {:?} ({} elements)",
            data.len(),
            shape,
            n
        );
        let v = Value {
            buf: Buffer::new(data),
            shape: dims(shape),
            strides: contiguous_strides(shape),
            offset: 0,
        };
        debug_assert!(fits(&v.shape, &v.strides, v.offset, v.buf.data.len()));
        v
    }

    /// Takes over an ndarray's allocation without copying, whatever its
    /// (non-negative) strides.
    pub(crate) fn from_array(a: ArrayD<T>) -> Self {
        let shape = dims(a.shape());
        if a.strides().iter().any(|&s| s < 0) {
            return Self::from_vec(collect_data(a.len(), a.iter().copied()), &shape);
        }
        let strides: Dims = a.strides().iter().map(|&s| s as usize).collect();
        let (data, offset) = a.into_raw_vec_and_offset();
        let v = Value {
            buf: Buffer::new(data),
            shape,
            strides,
            offset: offset.unwrap_or(0),
        };
        debug_assert!(fits(&v.shape, &v.strides, v.offset, v.buf.data.len()));
        v
    }

    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements lie row-major and back to back.
    pub(crate) fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d == 0 {
                return true;
            }
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The elements as a row-major slice, when the layout allows one.
    pub(crate) fn as_slice(&self) -> Option<&[T]> {
        if self.numel() == 0 {
            // A view of nothing may have an offset past the buffer's end.
            Some(&[])
        } else if self.is_contiguous() {
            Some(&self.buf.data[self.offset..self.offset + self.numel()])
        } else {
            None
        }
    }

    /// An ndarray view of the elements (zero-copy).
    pub(crate) fn view(&self) -> ArrayViewD<'_, T> {
        if self.numel() == 0 {
            return ArrayViewD::from_shape(IxDyn(&self.shape), &[]).expect("empty view");
        }
        let strides = IxDyn(&self.strides);
        // SAFETY: every index in `shape` lands inside `buf.data` (offset +
        // sum((d-1)*stride) < len): a layout is row-major over a buffer of
        // its length (`from_vec` checks it), ndarray's own (`from_array`), or
        // a view that `with_layout` checked; strides are non-negative; the
        // buffer outlives the borrow of `self`.
        unsafe {
            ArrayViewD::from_shape_ptr(
                IxDyn(&self.shape).strides(strides),
                self.buf.data.as_ptr().add(self.offset),
            )
        }
    }

    /// A one-element, 0-dimensional value.
    pub(crate) fn scalar(v: T) -> Self {
        Self::from_vec(filled(v, 1), &[])
    }

    /// A row-major copy of the elements.
    ///
    /// **Panics** if the memory cannot be had ([`pool::take`]).
    pub(crate) fn to_vec(&self) -> Vec<T> {
        let mut v = pool::take(self.numel());
        match self.as_slice() {
            Some(s) => v.extend_from_slice(s),
            None => {
                v.resize(self.numel(), T::zero());
                self.copy_into(&mut v);
            }
        }
        v
    }

    /// The same elements, row-major in a buffer of their own if they were not.
    pub(crate) fn contiguous(&self) -> Value<T> {
        if self.is_contiguous() {
            self.clone()
        } else {
            let mut data = filled(T::zero(), self.numel());
            self.copy_into(&mut data);
            Value::from_vec(data, &self.shape)
        }
    }

    /// Copies the elements, row-major, into `dst` (`numel` long) through
    /// ndarray's `Zip`, which runs the innermost axis as a tight loop: the
    /// element iterator cost about 25 ns per element of a broadcast view.
    fn copy_into(&self, dst: &mut [T]) {
        let dst = ArrayViewMutD::from_shape(IxDyn(&self.shape), dst).expect("numel elements");
        Zip::from(dst).and(&self.view()).for_each(|d, &s| *d = s);
    }

    /// The same buffer seen with another layout (a view).
    ///
    /// **Panics** if the layout reaches outside the buffer: [`Value::view`]'s
    /// unsafe read relies on every layout staying inside, and every view op
    /// builds its layout here.
    pub(crate) fn with_layout(&self, shape: Dims, strides: Dims, offset: usize) -> Value<T> {
        assert!(
            fits(&shape, &strides, offset, self.buf.data.len()),
            "internal error: a view of shape {shape:?}, strides {strides:?} and offset {offset} reaches outside its buffer of {} elements",
            self.buf.data.len()
        );
        Value {
            buf: self.buf.clone(),
            shape,
            strides,
            offset,
        }
    }
}

/// Whether every index of the layout lands inside a buffer of `len`
/// elements: the invariant `Value::view`'s unsafe read relies on.
fn fits(shape: &[usize], strides: &[usize], offset: usize, len: usize) -> bool {
    layout::end_of(shape, strides, offset).is_some_and(|end| end <= len.max(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "reaches outside its buffer of 6 elements")]
    fn a_view_reaching_past_its_buffer_is_refused() {
        let v = Value::<f32>::from_vec(vec![0.0; 6], &[2, 3]);
        let _ = v.with_layout(dims(&[2, 3]), dims(&[3, 1]), 1);
    }

    #[test]
    fn views_inside_their_buffer_and_empty_views_are_accepted() {
        let v = Value::<f32>::from_vec((0..6).map(|i| i as f32).collect::<Vec<_>>(), &[2, 3]);
        let t = v.with_layout(dims(&[3, 2]), dims(&[1, 3]), 0);
        assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(v.with_layout(dims(&[2, 0]), dims(&[3, 1]), 9).numel(), 0);
    }
}
