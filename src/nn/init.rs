//! PyTorch's default initialisations, drawn from the crate's generator
//! (so [`manual_seed`](crate::manual_seed) reproduces a model).

use crate::{rng, Float, Tensor};

/// A parameter (a leaf that requires grad) of `shape`, uniform in
/// `[-1/√fan_in, 1/√fan_in]`: PyTorch's default for the weights of
/// `Linear` and `Conv2d` (`kaiming_uniform_` with `a = √5`, whose bound
/// `√3 · √(2 / (1 + a²)) / √fan_in` is `1/√fan_in`) and for their biases.
/// With `fan_in = 0` the bound is 0 (PyTorch leaves such tensors empty).
#[track_caller]
pub(crate) fn uniform_fan_in<T: Float>(shape: &[usize], fan_in: usize) -> Tensor<T> {
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    };
    uniform(shape, bound)
}

/// A parameter of shape `[fan_out, fan_in]`, uniform in `[-b, b]` with
/// `b = √(6 / (fan_in + fan_out))`: PyTorch's `xavier_uniform_` (gain 1),
/// its initialisation of `MultiheadAttention`'s `in_proj_weight`.
pub(crate) fn xavier_uniform<T: Float>(shape: [usize; 2]) -> Tensor<T> {
    let fans = shape[0] + shape[1];
    let bound = if fans > 0 { (6.0 / fans as f64).sqrt() } else { 0.0 };
    uniform(&shape, bound)
}

/// A parameter of `shape`, uniform in `[-bound, bound]`.
fn uniform<T: Float>(shape: &[usize], bound: f64) -> Tensor<T> {
    let n = shape.iter().product();
    let values = rng::uniform::<f64>(n)
        .into_iter()
        .map(|u| T::of(bound * (2.0 * u - 1.0)))
        .collect();
    Tensor::from_vec(values, shape).set_requires_grad(true)
}
