//! Optimizers and learning-rate schedules (`torch.optim`).
//!
//! An optimizer holds the parameters (cheap handles to the model's own
//! tensors) and their state (momentum, moments), one entry per parameter.
//! [`step`](Optimizer::step) updates every parameter that has a gradient,
//! in place under [`no_grad`](crate::no_grad): a warm step allocates no new
//! parameter buffer, and the model sees the new values through its own
//! handles. The formulas, defaults and order of operations are PyTorch's,
//! so a trajectory matches PyTorch's step for step (`tests/optim.rs`).
//!
//! ```
//! use tapegrad::optim::{Adam, Optimizer, StepLr};
//! use tapegrad::prelude::*;
//!
//! // minimise Σ (w - 3)²
//! let w = Tensor::<f64>::zeros(&[2]).set_requires_grad(true);
//! let mut opt = Adam::new(vec![w.clone()], 0.1);
//! let mut schedule = StepLr::new(&opt, 100, 0.5);
//! for _ in 0..300 {
//!     opt.zero_grad();
//!     let loss = ((&w - 3.0) * (&w - 3.0)).sum();
//!     loss.backward();
//!     opt.step();
//!     schedule.step(&mut opt); // once per epoch, after opt.step()
//! }
//! assert!(w.to_vec().iter().all(|v| (v - 3.0).abs() < 1e-3));
//! assert_eq!(opt.lr(), 0.1 * 0.125);
//! ```

mod adam;
mod adamw;
mod lr_scheduler;
mod sgd;

pub use adam::Adam;
pub use adamw::AdamW;
pub use lr_scheduler::{CosineAnnealingLr, StepLr};
pub use sgd::Sgd;

use crate::{Float, Tensor};

/// What every optimizer does: update its parameters from their gradients,
/// clear the gradients, and expose its learning rate to a schedule.
///
/// Object safe: `Box<dyn Optimizer<T>>` holds any of them.
///
/// ```
/// use tapegrad::optim::{Adam, Optimizer, Sgd};
/// use tapegrad::prelude::*;
///
/// let w = Tensor::<f32>::ones(&[3]).set_requires_grad(true);
/// let mut opts: Vec<Box<dyn Optimizer<f32>>> = vec![
///     Box::new(Sgd::new(vec![w.clone()], 0.1)),
///     Box::new(Adam::new(vec![w.clone()], 0.1)),
/// ];
/// for opt in &mut opts {
///     (&w * &w).sum().backward();
///     opt.step();
///     opt.zero_grad();
///     assert!(w.grad().is_none());
/// }
/// assert!(w.to_vec()[0] < 1.0);
/// ```
pub trait Optimizer<T: Float = f32>: Send {
    /// Updates every parameter that has a gradient, in place; a parameter
    /// whose gradient is `None` is skipped and its state left as it was.
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    /// let idle = Tensor::from_vec(vec![5.0f64], &[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone(), idle.clone()], 0.1);
    /// (&w * &w).sum().backward(); // dw = 2w; idle gets no gradient
    /// opt.step();
    /// assert_eq!(w.to_vec(), vec![0.8, 1.6]); // w - 0.1 · 2w
    /// assert_eq!(idle.to_vec(), vec![5.0]);
    /// ```
    fn step(&mut self);

    /// Sets every parameter's gradient back to `None` (PyTorch's
    /// `zero_grad(set_to_none=True)`).
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.1);
    /// w.sum().backward();
    /// assert!(w.grad().is_some());
    /// opt.zero_grad();
    /// assert!(w.grad().is_none());
    /// ```
    fn zero_grad(&mut self);

    /// The learning rate the next [`step`](Optimizer::step) uses.
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// let opt = Adam::new(vec![tapegrad::Tensor::<f32>::zeros(&[1]).set_requires_grad(true)], 1e-3);
    /// assert_eq!(opt.lr(), 1e-3);
    /// ```
    fn lr(&self) -> T;

    /// Sets the learning rate (what a schedule does).
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.1);
    /// opt.set_lr(0.5);
    /// assert_eq!(opt.lr(), 0.5);
    /// (&w * 2.0).sum().backward();
    /// opt.step();
    /// assert_eq!(w.item(), 0.0); // 1 - 0.5 · 2
    /// ```
    fn set_lr(&mut self, lr: T);
}

/// Every parameter's gradient back to `None`.
fn zero_grads<T: Float>(params: &[Tensor<T>]) {
    params.iter().for_each(Tensor::zero_grad);
}

/// **Panics**, naming `op`, if a parameter is not a leaf (as PyTorch's
/// "can't optimize a non-leaf Tensor"): a non-leaf gets no `.grad`, so the
/// optimizer would skip it for ever.
#[track_caller]
fn check_leaves<T: Float>(op: &str, params: &[Tensor<T>]) {
    for (i, p) in params.iter().enumerate() {
        assert!(
            p.is_leaf(),
            "{op}: parameter {i} (shape {:?}) is not a leaf: it was made by {}, so it gets no gradient; \
             pass the leaf tensors themselves (a module's `parameters()`), or `detach()` it and call \
             `set_requires_grad(true)` on the copy",
            p.shape(),
            p.grad_fn_name().unwrap_or_default()
        );
    }
}

/// **Panics**, naming `what` of `op`, unless `v ≥ 0` (NaN included).
#[track_caller]
fn check_non_negative<T: Float>(op: &str, what: &str, v: T) {
    assert!(v >= T::zero(), "{op}: invalid {what}: {v} (must be >= 0)");
}
