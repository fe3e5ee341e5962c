//! Helpers shared by the integration tests (`mod common;` in each file that
//! uses them).

#![allow(dead_code)] // each test crate uses its own subset

use tapegrad::prelude::*;

/// Gradient-checks `f` at `inputs` (f64, default [`GradcheckOptions`]):
/// backward against central finite differences, for every input that
/// requires grad. Panics with the [`GradcheckError`]'s Display on failure.
///
/// Also panics if no input requires grad, so that a test cannot pass by
/// checking nothing.
pub fn check_op<F>(f: F, inputs: &[Tensor<f64>])
where
    F: Fn(&[Tensor<f64>]) -> Tensor<f64>,
{
    assert!(
        inputs.iter().any(Tensor::requires_grad),
        "check_op: no input requires grad, gradcheck would check nothing"
    );
    if let Err(e) = tapegrad::gradcheck(f, inputs, GradcheckOptions::default()) {
        panic!("{e}");
    }
}

/// Asserts that `a` and `b` have the same length and agree elementwise
/// within `tol` (absolute, plus `tol` relative to `|b|`).
#[track_caller]
pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "assert_close: lengths differ: {a:?} vs {b:?}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "assert_close: element {i} differs: {x} vs {y} (tol {tol})\n  left:  {a:?}\n  right: {b:?}"
        );
    }
}

/// A leaf of `f64`s that requires grad.
pub fn leaf(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).set_requires_grad(true)
}

/// `t.to_vec()` widened to `f64` (for comparing `f32` tensors).
pub fn to_f64<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.to_vec().into_iter().map(Float::as_f64).collect()
}
