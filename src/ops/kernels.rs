//! Loops over elements. Contiguous operands of equal shape run on plain
//! slices (ndarray's `IxDyn` iteration costs several times more per element
//! on small tensors); everything else goes through ndarray's `Zip`.

use crate::autograd::node::should_record;
use crate::layout::{broadcast_shape, dims};
use crate::ops::parallel;
use crate::pool;
use crate::storage::{collect_data, filled, Value};
use crate::Float;
use crate::Tensor;
use ndarray::{ArrayView2, ArrayViewMutD, IxDyn, Zip};
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

/// `f` of every element, into a fresh buffer: row-major, or in the memory
/// order of elements that lie back to back in another order.
#[track_caller]
pub(crate) fn map<T: Float>(x: &Value<T>, f: impl Fn(T) -> T) -> Value<T> {
    if let Some(s) = x.as_slice() {
        return Value::from_vec(collect_data(s.len(), s.iter().map(|&v| f(v))), &x.shape);
    }
    let view = x.view();
    if view.as_slice_memory_order().is_some() {
        // As many elements as `x`'s own: ndarray maps them in memory order.
        return Value::from_array(view.map(|&v| f(v)));
    }
    // Strided or broadcast: a broadcast view may stand for more elements
    // than memory can hold, and the pool's buffer panics then where
    // ndarray's would abort.
    let mut data = filled(T::zero(), x.numel());
    let dst = ArrayViewMutD::from_shape(IxDyn(&x.shape), &mut data).expect("numel elements");
    Zip::from(dst).and(&view).for_each(|d, &v| *d = f(v));
    Value::from_vec(data, &x.shape)
}

/// `f` of every pair of elements of `a` and `b`, broadcasting them as NumPy
/// does (`a` and `b` may be one tensor: [`Tensor::read_pair`] reads them).
///
/// **Panics** (naming `op` and both shapes) if they do not broadcast.
#[track_caller]
pub(crate) fn zip_map<T: Float>(op: &str, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) -> Value<T> {
    // Checked here, not only in the closure below, so that a mismatch
    // points at the user's line: `#[track_caller]` does not reach into a
    // closure. (A tensor's shape never changes.)
    if a.shape() != b.shape() {
        broadcast_shape(op, a.shape(), b.shape());
    }
    Tensor::read_pair(a, b, |a, b| zip_values(op, a, b, f))
}

/// [`zip_map`] on the operands' data.
#[track_caller]
fn zip_values<T: Float>(op: &str, a: &Value<T>, b: &Value<T>, f: impl Fn(T, T) -> T) -> Value<T> {
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

/// For an op that consumes `a` and is not recorded: `f` of every element,
/// written over `a`'s own elements when no one else can see them and `a` is
/// a leaf that needs no gradient; the result is `a` itself, with no
/// allocation. `Err(a)`, untouched, otherwise.
#[track_caller]
pub(crate) fn map_reusing_leaf<T: Float>(
    mut a: Tensor<T>,
    f: impl Fn(T) -> T,
) -> Result<Tensor<T>, Tensor<T>> {
    match !should_record(&[&a]) && a.is_bare_leaf() && map_in_place(&mut a, f) {
        true => Ok(a),
        false => Err(a),
    }
}

/// As [`map_reusing_leaf`] for `f(a, b)` elementwise, when `b` broadcasts to `a`'s
/// shape.
#[track_caller]
pub(crate) fn zip_reusing_leaf<T: Float>(
    mut a: Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>, Tensor<T>> {
    match !should_record(&[&a, b]) && a.is_bare_leaf() && zip_in_place(&mut a, b, f) {
        true => Ok(a),
        false => Err(a),
    }
}

/// `f(a, b)` elementwise for an op that consumes `a` and records itself.
/// `Ok`: the result, when no op is recorded and `a` could be written over
/// ([`zip_reusing_leaf`]). `Err`: `a` back with the output for the op to record,
/// written over `a`'s buffer when the op does not save `a` (`saves_a`) and
/// no one else sees it ([`zip_reusing_buffer`]), else in a fresh one.
#[track_caller]
pub(crate) fn zip_reusing_operand<T: Float>(
    op: &str,
    a: Tensor<T>,
    b: &Tensor<T>,
    saves_a: bool,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>, (Tensor<T>, Value<T>)> {
    let mut a = match zip_reusing_leaf(a, b, &f) {
        Ok(done) => return Ok(done),
        Err(a) => a,
    };
    let out = if saves_a {
        None
    } else {
        zip_reusing_buffer(&mut a, b, &f)
    };
    let out = match out {
        Some(out) => out,
        None => zip_map(op, &a, b, &f),
    };
    Err((a, out))
}

/// For an op that consumes `a` and does not save it: `f` of every element,
/// written over `a`'s own elements when no one else can see them; the op's
/// output, over the same buffer. `None`, `a` untouched, otherwise.
#[track_caller]
pub(crate) fn map_reusing_buffer<T: Float>(a: &mut Tensor<T>, f: impl Fn(T) -> T) -> Option<Value<T>> {
    let recorded = should_record(&[a]);
    map_in_place(a, f).then(|| reused_as_output(a, recorded))
}

/// As [`map_reusing_buffer`] for `f(a, b)` elementwise, when `b` broadcasts to `a`'s
/// shape.
#[track_caller]
pub(crate) fn zip_reusing_buffer<T: Float>(
    a: &mut Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Option<Value<T>> {
    let recorded = should_record(&[a, b]);
    zip_in_place(a, b, f).then(|| reused_as_output(a, recorded))
}

/// `a`'s data, now an op's output: graph memory if the op is recorded (as
/// `record` marks a buffer an op made).
#[track_caller]
fn reused_as_output<T: Float>(a: &Tensor<T>, recorded: bool) -> Value<T> {
    let out = a.value();
    if recorded {
        out.buf.countable.store(true, Ordering::Relaxed);
    }
    out
}

/// Writes `f` of every element over `a`'s elements, if no one else can see
/// them ([`Tensor::unshared_elements`]).
#[track_caller]
fn map_in_place<T: Float>(a: &mut Tensor<T>, f: impl Fn(T) -> T) -> bool {
    let Some(elems) = a.unshared_elements() else {
        return false;
    };
    elems.iter_mut().for_each(|x| *x = f(*x));
    true
}

/// Writes `f(a, b)` elementwise over `a`'s elements, if no one else can see
/// them and `b` broadcasts to `a`'s shape.
#[track_caller]
fn zip_in_place<T: Float>(a: &mut Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) -> bool {
    let shape = dims(a.shape());
    let b = b.data();
    let same = if b.shape == shape { b.as_slice() } else { None };
    if same.is_none() && b.view().broadcast(IxDyn(&shape)).is_none() {
        return false;
    }
    let Some(elems) = a.unshared_elements() else {
        return false;
    };
    match same {
        Some(ys) => elems.iter_mut().zip(ys).for_each(|(x, &y)| *x = f(*x, y)),
        None => {
            let xs = ArrayViewMutD::from_shape(IxDyn(&shape), elems).expect("whole buffer");
            let bv = b.view();
            let ys = bv.broadcast(IxDyn(&shape)).expect("checked above");
            Zip::from(xs).and(&ys).for_each(|x, &y| *x = f(*x, y));
        }
    }
    true
}

/// `c = a @ b` for 2-D views of any strides (no transposed copies), written
/// row-major at `c` without reading it (no zero fill needed). The kernel
/// is matrixmultiply's; a product of at least [`PARALLEL_MKN`] multiply-adds
/// is split along the longer side of `c` over the cores ([`parallel`]).
///
/// # Safety
/// `c` must have room for `a.nrows() * b.ncols()` elements.
#[track_caller]
pub(crate) unsafe fn gemm_into<T: Float>(a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>, c: *mut T) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let (sa, sb) = (a.strides(), b.strides());
    let (a, b) = (Ptr(a.as_ptr().cast_mut()), Ptr(b.as_ptr().cast_mut()));
    let c = Ptr(c);
    // One block of `c`: rows `i0..i0 + rows`, columns `j0..j0 + cols`.
    let block = move |i0: usize, rows: usize, j0: usize, cols: usize| {
        let (a, b, c) = (&a, &b, &c);
        // SAFETY: the views' strides keep every element inside their
        // buffers, and the block's offsets stay inside them; `c` is fresh
        // memory of m × n elements (the caller's promise), and blocks are
        // disjoint.
        unsafe {
            T::gemm(
                rows,
                k,
                cols,
                a.0.offset(i0 as isize * sa[0]),
                [sa[0], sa[1]],
                b.0.offset(j0 as isize * sb[1]),
                [sb[0], sb[1]],
                c.0.add(i0 * n + j0),
                [n as isize, 1],
            )
        }
    };
    let threads = parallel::threads().min(m.max(n) / 8).max(1);
    if threads == 1 || m * k * n < PARALLEL_MKN {
        return block(0, m, 0, n);
    }
    // Parts of whole 8-wide panels (the kernels' width), the longer side cut.
    let long = m.max(n);
    let step = long.div_ceil(threads).div_ceil(8) * 8;
    let parts = (0..long)
        .step_by(step)
        .map(|start| {
            let len = step.min(long - start);
            Box::new(move || match m >= n {
                true => block(start, len, 0, n),
                false => block(0, m, start, len),
            }) as parallel::Part<'_>
        })
        .collect();
    parallel::run(parts);
}

/// Products smaller than this many multiply-adds (about 50 µs on one core)
/// run on one thread: handing half to another costs more than it saves.
pub(crate) const PARALLEL_MKN: usize = 1 << 22;

/// A raw pointer that a part of a split kernel may carry to another thread
/// (each part touches its own elements only).
#[derive(Clone, Copy)]
pub(crate) struct Ptr<T>(pub(crate) *mut T);
// SAFETY: see `gemm_into`: parts read shared inputs and write disjoint
// blocks, so a part on another thread aliases no other part's writes.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as for `Send`: shared between parts, the pointer is only offset
// to each part's own block.
unsafe impl<T> Sync for Ptr<T> {}
