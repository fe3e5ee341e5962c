//! Helpers for training loops: `clip_grad_norm`.

use crate::{no_grad, Float, Tensor};

/// Scales the gradients of `params` together so that their total 2-norm is
/// at most `max_norm` (`torch.nn.utils.clip_grad_norm_`), and returns the
/// total norm before clipping.
///
/// The total is `√(Σ ‖grad‖²)` over the parameters that have a gradient
/// (the others are skipped). When it exceeds `max_norm`, every gradient is
/// multiplied in place by `max_norm / (total + 1e-6)`, as PyTorch; a NaN
/// or infinite total makes the gradients NaN, as PyTorch with its default
/// `error_if_nonfinite=False`.
///
/// ```
/// use tapegrad::prelude::*;
///
/// let w = Tensor::from_vec(vec![1.0f64, 1.0], &[2]).set_requires_grad(true);
/// (&w * &Tensor::from_vec(vec![3.0, 4.0], &[2])).sum().backward(); // grad [3, 4]
/// let total = tapegrad::nn::clip_grad_norm(&[w.clone()], 1.0);
/// assert_eq!(total, 5.0);
/// let g = w.grad().unwrap().to_vec();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
#[track_caller]
pub fn clip_grad_norm<T: Float>(params: &[Tensor<T>], max_norm: T) -> T {
    let grads: Vec<Tensor<T>> = params.iter().filter_map(Tensor::grad).collect();
    let squares: f64 = grads
        .iter()
        .map(|g| {
            let g = g.data();
            match g.as_slice() {
                Some(s) => s.iter().map(|v| v.as_f64() * v.as_f64()).sum(),
                None => g.view().iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>(),
            }
        })
        .sum();
    let total = T::of(squares.sqrt());
    // PyTorch multiplies by min(coef, 1): by 1 (nothing to do) unless the
    // total is larger, or NaN.
    let coef = max_norm / (total + T::of(1e-6));
    if coef < T::one() || coef.is_nan() {
        let coef = Tensor::scalar(coef);
        no_grad(|| grads.iter().for_each(|g| g.mul_(&coef)));
    }
    total
}
