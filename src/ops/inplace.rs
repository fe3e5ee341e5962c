//! In-place ops, for optimizers (DESIGN.md §9): each writes into the
//! tensor's own buffer when no one else shares it, into a fresh one
//! otherwise (so views and saved values keep the old data), and bumps the
//! version, which backward checks.

use crate::ops::broadcast::check_broadcasts_to;
use crate::storage::Value;
use crate::{Float, Tensor};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl<T: Float> Tensor<T> {
    /// Writes `f(self, other)` into this tensor: into its own buffer when
    /// the buffer is not shared, into a fresh one otherwise (so views and
    /// saved values keep the old data). Bumps the version.
    fn write_in_place(&self, op: &str, other: Option<&Tensor<T>>, f: impl Fn(T, T) -> T) {
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
                !other.is_some_and(|o| o.requires_grad()),
                "{op}: the operand requires grad, but in-place operations are not recorded; use \
                 the out-of-place op, or run it under tapegrad::no_grad"
            );
        }
        let other = other.map(|o| {
            let v = o.value();
            check_broadcasts_to(op, &v.shape, self.shape());
            v
        });
        let mut data = self.data_mut();
        let contiguous = data.is_contiguous() && data.numel() == data.buf.data.len();
        let in_place = contiguous && Arc::get_mut(&mut data.buf).is_some();
        if in_place {
            let buf = Arc::get_mut(&mut data.buf).expect("checked unique");
            let mut dst =
                ndarray::ArrayViewMutD::from_shape(ndarray::IxDyn(&self.inner.shape), &mut buf.data[..])
                    .expect("contiguous buffer");
            match &other {
                Some(o) => {
                    let src = o.view();
                    let src = src.broadcast(dst.raw_dim()).expect("checked broadcast");
                    ndarray::Zip::from(&mut dst)
                        .and(&src)
                        .for_each(|d, &s| *d = f(*d, s));
                }
                None => dst.map_inplace(|d| *d = f(*d, T::zero())),
            }
        } else {
            let old = data.view();
            let new = match &other {
                Some(o) => {
                    let src = o.view();
                    let src = src.broadcast(old.raw_dim()).expect("checked broadcast");
                    ndarray::Zip::from(&old).and(&src).map_collect(|&d, &s| f(d, s))
                }
                None => old.map(|&d| f(d, T::zero())),
            };
            let countable = data.buf.countable.load(Ordering::Relaxed);
            let fresh = Value::from_array(new);
            fresh.buf.countable.store(countable, Ordering::Relaxed);
            *data = fresh;
        }
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
    /// [`no_grad`](crate::no_grad), on a tensor with history, and when
    /// `other` does not broadcast to `self`'s shape.
    pub fn add_(&self, other: &Tensor<T>) {
        self.write_in_place("add_", Some(other), |a, b| a + b);
    }

    /// `self -= other` in place; see [`add_`](Tensor::add_).
    pub fn sub_(&self, other: &Tensor<T>) {
        self.write_in_place("sub_", Some(other), |a, b| a - b);
    }

    /// `self *= other` in place; see [`add_`](Tensor::add_).
    pub fn mul_(&self, other: &Tensor<T>) {
        self.write_in_place("mul_", Some(other), |a, b| a * b);
    }

    /// Copies `src` (broadcast to `self`'s shape) into `self`; see
    /// [`add_`](Tensor::add_).
    pub fn copy_(&self, src: &Tensor<T>) {
        self.write_in_place("copy_", Some(src), |_, b| b);
    }

    /// Sets every element to `v`; see [`add_`](Tensor::add_).
    pub fn fill_(&self, v: T) {
        self.write_in_place("fill_", None, |_, _| v);
    }
}
