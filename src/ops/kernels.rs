//! Loops over elements. Contiguous operands of equal shape run on plain
//! slices (ndarray's `IxDyn` iteration costs several times more per element
//! on small tensors); everything else goes through ndarray's `Zip`.

use crate::ops::broadcast::broadcast_shape;
use crate::pool;
use crate::storage::{collect_data, Value};
use crate::Float;
use ndarray::{ArrayView2, ArrayViewMutD, IxDyn, Zip};
use std::mem::MaybeUninit;

/// `f` of every element, into a fresh row-major buffer.
pub(crate) fn map<T: Float>(x: &Value<T>, f: impl Fn(T) -> T) -> Value<T> {
    match x.as_slice() {
        Some(s) => Value::from_vec(collect_data(s.len(), s.iter().map(|&v| f(v))), &x.shape),
        None => Value::from_array(x.view().map(|&v| f(v))),
    }
}

/// `f` of every pair of elements, broadcasting `a` and `b` as NumPy does.
///
/// **Panics** (naming `op` and both shapes) if they do not broadcast.
pub(crate) fn zip_map<T: Float>(op: &str, a: &Value<T>, b: &Value<T>, f: impl Fn(T, T) -> T) -> Value<T> {
    if a.shape == b.shape {
        if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
            let data = collect_data(x.len(), x.iter().zip(y).map(|(&x, &y)| f(x, y)));
            return Value::from_vec(data, &a.shape);
        }
    }
    let shape = broadcast_shape(op, &a.shape, &b.shape);
    let (va, vb) = (a.view(), b.view());
    let va = va.broadcast(IxDyn(&shape)).expect("shape checked");
    let vb = vb.broadcast(IxDyn(&shape)).expect("shape checked");
    let n = shape.iter().product();
    let mut out = pool::take::<T>(n);
    {
        // SAFETY: `out` has capacity for `n` elements; seen as uninitialised
        // slots, every one is written below before `set_len`.
        let slots = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<T>>(), n) };
        let dst = ArrayViewMutD::from_shape(IxDyn(&shape), slots).expect("n elements");
        Zip::from(dst).and(&va).and(&vb).for_each(|d, &x, &y| {
            d.write(f(x, y));
        });
    }
    // SAFETY: the Zip above wrote all `n` elements.
    unsafe { out.set_len(n) };
    Value::from_vec(out, &shape)
}

/// `c = a @ b` for 2-D views of any strides (no transposed copies), written
/// row-major at `c` without reading it (no zero fill needed). The kernel
/// is matrixmultiply's, on both cores for large products.
///
/// # Safety
/// `c` must have room for `a.nrows() * b.ncols()` elements.
pub(crate) unsafe fn gemm_into<T: Float>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: *mut T) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let (sa, sb) = (a.strides(), b.strides());
    // SAFETY: the views' strides keep every element inside their buffers;
    // `c` is fresh memory of m × n elements (the caller's promise).
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.as_ptr(),
            [sa[0], sa[1]],
            b.as_ptr(),
            [sb[0], sb[1]],
            c,
            [n as isize, 1],
        )
    }
}
