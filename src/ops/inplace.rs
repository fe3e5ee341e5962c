//! In-place ops, for optimizers (DESIGN.md §9): each writes into the
//! tensor's own buffer when no one else shares it, into a fresh one
//! otherwise (so views and saved values keep the old data), and bumps the
//! version, which backward checks. Each is one pass over the elements with
//! no temporary: `addcmul_` is `x + value · a · b` per element, not three
//! ops.

use crate::layout::check_broadcasts_to;
use crate::storage::{collect_data, Value};
use crate::{Float, Tensor};
use ndarray::IxDyn;
use std::array;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl<T: Float> Tensor<T> {
    /// Writes `f(x, [o₁, …, o_N])` over every element `x` of this tensor,
    /// the operands broadcast to its shape, in one pass: into its own buffer
    /// when the buffer is whole, row-major and not shared, into a fresh one
    /// otherwise (so views and saved values keep the old data; an operand
    /// that is this tensor shares its buffer, so it is read from the old
    /// one). Bumps the version.
    ///
    /// **Panics**, naming `op`, as [`add_`](Tensor::add_) documents.
    #[track_caller]
    pub(crate) fn update_<const N: usize>(
        &self,
        op: &str,
        operands: [&Tensor<T>; N],
        f: impl Fn(T, [T; N]) -> T,
    ) {
        if crate::is_grad_enabled() {
            assert!(
                !(self.is_leaf() && self.requires_grad()),
                "{op}: a leaf tensor that requires grad is being used in an in-place operation; \
                 wrap the update in tapegrad::no_grad (as an optimizer step does)"
            );
            assert!(
                self.is_leaf(),
                "{op}: in-place operations on a tensor with history ({}) are not supported; use \
                 the out-of-place op",
                self.grad_fn_name().unwrap_or_default()
            );
            assert!(
                !operands.iter().any(|o| o.requires_grad()),
                "{op}: the operand requires grad, but in-place operations are not recorded; use \
                 the out-of-place op, or run it under tapegrad::no_grad"
            );
        }
        // The operands' data is taken (and their locks released) before this
        // tensor's write lock: a writer holds no other lock while it waits.
        // Checked before the closure below, which `#[track_caller]` does
        // not reach into (a tensor's shape never changes).
        for o in operands {
            check_broadcasts_to(op, o.shape(), self.shape());
        }
        let operands = operands.map(Tensor::value);
        let mut data = self.data_mut();
        let whole = data.is_contiguous() && data.numel() == data.buf.data.len();
        if !whole || Arc::get_mut(&mut data.buf).is_none() {
            // Shared or strided: the old elements, row-major, into a fresh
            // buffer that inherits the accounting flag.
            let countable = data.buf.countable.load(Ordering::Relaxed);
            let fresh = Value::from_vec(
                collect_data(data.numel(), data.view().iter().copied()),
                &data.shape,
            );
            fresh.buf.countable.store(countable, Ordering::Relaxed);
            *data = fresh;
        }
        let buf = Arc::get_mut(&mut data.buf).expect("an unshared buffer (fresh if it was shared)");
        apply(&mut buf.data, &self.inner.shape, &operands, f);
        self.inner.version.fetch_add(1, Ordering::AcqRel);
    }

    /// `self += other` in place (`other` broadcasts to `self`'s shape).
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let w = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// tapegrad::no_grad(|| w.add_(&Tensor::full(&[2], 0.5)));
    /// assert_eq!(w.to_vec(), vec![1.5, 1.5]);
    /// ```
    ///
    /// **Panics** on a leaf that requires grad unless under
    /// [`no_grad`](crate::no_grad), on a tensor with history, when `other`
    /// requires grad (outside `no_grad`), and when `other` does not
    /// broadcast to `self`'s shape.
    #[track_caller]
    pub fn add_(&self, other: &Tensor<T>) {
        self.update_("add_", [other], |x, [o]| x + o);
    }

    /// `self -= other` in place; see [`add_`](Tensor::add_).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// w.sub_(&Tensor::from_vec(vec![1.0, 2.0], &[2])); // broadcast over the rows
    /// assert_eq!(w.to_vec(), vec![0.0, 0.0, 2.0, 2.0]);
    /// ```
    ///
    /// **Panics** as [`add_`](Tensor::add_).
    #[track_caller]
    pub fn sub_(&self, other: &Tensor<T>) {
        self.update_("sub_", [other], |x, [o]| x - o);
    }

    /// `self *= other` in place; see [`add_`](Tensor::add_).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    /// let view = w.reshape(&[2, 1]); // shares w's data
    /// w.mul_(&Tensor::scalar(3.0));
    /// assert_eq!(w.to_vec(), vec![3.0, 6.0]);
    /// assert_eq!(view.to_vec(), vec![1.0, 2.0]); // a shared buffer is not written
    /// ```
    ///
    /// **Panics** as [`add_`](Tensor::add_).
    #[track_caller]
    pub fn mul_(&self, other: &Tensor<T>) {
        self.update_("mul_", [other], |x, [o]| x * o);
    }

    /// Copies `src` (broadcast to `self`'s shape) into `self`; see
    /// [`add_`](Tensor::add_).
    ///
    /// ```
    /// use tapegrad::{no_grad, Tensor};
    /// let w = Tensor::<f64>::zeros(&[2, 2]).set_requires_grad(true);
    /// no_grad(|| w.copy_(&Tensor::from_vec(vec![0.5, -0.5], &[2])));
    /// assert_eq!(w.to_vec(), vec![0.5, -0.5, 0.5, -0.5]);
    /// assert!(w.requires_grad()); // still a leaf that requires grad
    /// ```
    ///
    /// **Panics** as [`add_`](Tensor::add_).
    #[track_caller]
    pub fn copy_(&self, src: &Tensor<T>) {
        self.update_("copy_", [src], |_, [s]| s);
    }

    /// Sets every element to `v`; see [`add_`](Tensor::add_).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// t.fill_(0.0);
    /// assert_eq!(t.to_vec(), vec![0.0, 0.0, 0.0]);
    /// ```
    ///
    /// **Panics** as [`add_scalar_`](Tensor::add_scalar_).
    #[track_caller]
    pub fn fill_(&self, v: T) {
        self.update_("fill_", [], |_, []| v);
    }

    /// `self += v` in place, for every element (`torch.Tensor.add_` with a
    /// number).
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    /// tapegrad::no_grad(|| w.add_scalar_(0.5));
    /// assert_eq!(w.to_vec(), vec![1.5, 2.5]);
    /// ```
    ///
    /// **Panics** on a leaf that requires grad unless under
    /// [`no_grad`](crate::no_grad), and on a tensor with history (as
    /// [`add_`](Tensor::add_)).
    #[track_caller]
    pub fn add_scalar_(&self, v: T) {
        self.update_("add_scalar_", [], |x, []| x + v);
    }

    /// `self *= v` in place, for every element (`torch.Tensor.mul_` with a
    /// number).
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let m = Tensor::from_vec(vec![1.0f32, -2.0], &[2]);
    /// m.mul_scalar_(0.5);
    /// assert_eq!(m.to_vec(), vec![0.5, -1.0]);
    /// ```
    ///
    /// **Panics** as [`add_scalar_`](Tensor::add_scalar_).
    #[track_caller]
    pub fn mul_scalar_(&self, v: T) {
        self.update_("mul_scalar_", [], |x, []| x * v);
    }

    /// `self += value · a · b` elementwise, in place and in one pass
    /// (`torch.Tensor.addcmul_`); `a` and `b` broadcast to `self`'s shape.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// // Adam's second moment: v = β₂ v + (1 - β₂) g²
    /// let v = Tensor::from_vec(vec![1.0f64, 1.0], &[2]);
    /// let g = Tensor::from_vec(vec![2.0, -3.0], &[2]);
    /// v.mul_scalar_(0.5);
    /// v.addcmul_(&g, &g, 0.5);
    /// assert_eq!(v.to_vec(), vec![2.5, 5.0]);
    /// ```
    ///
    /// **Panics** as [`add_`](Tensor::add_), for either operand.
    #[track_caller]
    pub fn addcmul_(&self, a: &Tensor<T>, b: &Tensor<T>, value: T) {
        self.update_("addcmul_", [a, b], |x, [a, b]| x + value * a * b);
    }

    /// `self += value · a / b` elementwise, in place and in one pass
    /// (`torch.Tensor.addcdiv_`); `a` and `b` broadcast to `self`'s shape.
    ///
    /// ```
    /// use tapegrad::prelude::*;
    /// let p = Tensor::from_vec(vec![1.0f64, 1.0], &[2]);
    /// p.addcdiv_(&Tensor::from_vec(vec![1.0, 3.0], &[2]), &Tensor::full(&[2], 2.0), -0.5);
    /// assert_eq!(p.to_vec(), vec![0.75, 0.25]);
    /// ```
    ///
    /// **Panics** as [`add_`](Tensor::add_), for either operand.
    #[track_caller]
    pub fn addcdiv_(&self, a: &Tensor<T>, b: &Tensor<T>, value: T) {
        self.update_("addcdiv_", [a, b], |x, [a, b]| x + value * a / b);
    }
}

/// `dst[i] = f(dst[i], [operand₁[i], …])` over the row-major elements of
/// `shape`, the operands broadcast to it: on plain slices when every
/// operand is row-major of that shape (the loop an optimizer runs), through
/// ndarray's strided iterators otherwise.
#[track_caller]
fn apply<T: Float, const N: usize>(
    dst: &mut [T],
    shape: &[usize],
    operands: &[Value<T>; N],
    f: impl Fn(T, [T; N]) -> T,
) {
    let n = dst.len();
    let slices: [Option<&[T]>; N] = array::from_fn(|k| {
        let o = &operands[k];
        if o.shape[..] == *shape {
            o.as_slice()
        } else {
            None
        }
    });
    if slices.iter().all(Option::is_some) {
        // Cut to `n` so that the compiler sees every index in bounds.
        let slices: [&[T]; N] = array::from_fn(|k| &slices[k].expect("checked")[..n]);
        for (i, x) in dst.iter_mut().enumerate() {
            *x = f(*x, array::from_fn(|k| slices[k][i]));
        }
        return;
    }
    let views = operands.each_ref().map(Value::view);
    let shape = IxDyn(shape);
    let broadcast = views
        .each_ref()
        .map(|v| v.broadcast(shape.clone()).expect("checked broadcast"));
    let mut iters = broadcast.each_ref().map(|v| v.iter());
    for x in dst {
        *x = f(
            *x,
            iters
                .each_mut()
                .map(|it| *it.next().expect("as many elements as dst")),
        );
    }
}
