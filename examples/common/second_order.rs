//! Every sample's gradient and Hessian diagonal entry of a separable loss,
//! from its forward alone, and the losses that `examples/boosting.rs`
//! boosts with. `tests/boosting_grads.rs` includes this file by path and
//! checks it against the closed forms.
//!
//! A separable loss is a sum of per-sample terms, L(f) = Σᵢ l(yᵢ, fᵢ): sample
//! i's term depends on its own prediction fᵢ only. Then:
//!
//! - the gradient gᵢ = ∂L/∂fᵢ = l'(yᵢ, fᵢ) is one backward of L;
//! - the Hessian ∂²L/∂fᵢ∂fⱼ is diagonal (term i has no fⱼ for j ≠ i), so
//!   the sum of the gradient's entries, S(f) = Σⱼ gⱼ(f), has
//!   ∂S/∂fᵢ = Σⱼ ∂gⱼ/∂fᵢ = ∂gᵢ/∂fᵢ = l''(yᵢ, fᵢ): one backward of S gives
//!   all n diagonal entries at once.
//!
//! That second backward needs g as a function of f, not just its values:
//! the first backward runs with `create_graph: true`, which records the
//! backward itself, so g carries a graph back to f. For a loss that couples
//! the samples the same two passes still run, but give each row's sum of
//! the Hessian (H·1, a Hessian-vector product), not its diagonal; the full
//! Hessian would take one backward per sample.

use tapegrad::{GradOptions, Tensor};

/// A per-sample loss: predictions and targets (both `[n]`) to the `[n]`
/// losses l(yᵢ, fᵢ), written with tensor ops.
pub type Loss = dyn Fn(&Tensor<f64>, &Tensor<f64>) -> Tensor<f64>;

/// Each sample's gradient and Hessian diagonal entry of a loss
/// L(f) = Σᵢ l(yᵢ, fᵢ) at some predictions f.
pub struct Derivatives {
    /// gᵢ = ∂L/∂fᵢ.
    pub grad: Vec<f64>,
    /// hᵢ = ∂²L/∂fᵢ² (for a separable loss; see the module's comment).
    pub hess: Vec<f64>,
}

/// The derivatives of Σᵢ `loss(f, y)`ᵢ with respect to the predictions `f`,
/// where `loss` maps predictions and targets (both `[n]`) to the `[n]`
/// per-sample losses with tensor ops: two backward passes, the first with
/// `create_graph` (the module's comment says why this gives the Hessian's
/// diagonal when sample i's loss depends on fᵢ alone).
///
/// **Panics** if `f` and `y` differ in length, if `loss` does not return
/// one loss per sample, or if it does not depend on `f`.
pub fn derivatives(f: &[f64], y: &[f64], loss: &Loss) -> Derivatives {
    let n = f.len();
    assert_eq!(y.len(), n, "derivatives: {n} predictions but {} targets", y.len());
    let f = Tensor::from_vec(f.to_vec(), &[n]).set_requires_grad(true);
    let y = Tensor::from_vec(y.to_vec(), &[n]);
    let per_sample = loss(&f, &y);
    assert_eq!(
        per_sample.shape(),
        &[n],
        "derivatives: the loss has shape {:?}, expected one loss per sample [{n}]",
        per_sample.shape()
    );
    let total = per_sample.sum();
    assert!(
        total.requires_grad(),
        "derivatives: the loss does not depend on the predictions"
    );
    let with_graph = GradOptions {
        create_graph: true,
        ..Default::default()
    };
    let g = tapegrad::grad(&[total], &[f.clone()], with_graph)[0]
        .clone()
        .expect("the loss requires grad, and f is all it has that does");
    // A gradient without a graph does not depend on f (the loss is linear
    // in f, or piecewise linear like |f − y|): h = 0.
    let h = g
        .requires_grad()
        .then(|| tapegrad::grad(&[g.sum()], &[f.clone()], GradOptions::default())[0].clone())
        .flatten();
    Derivatives {
        grad: g.to_vec(),
        hess: h.map_or_else(|| vec![0.0; n], |h| h.to_vec()),
    }
}

/// Squared error, l(y, f) = ½ (f − y)²: g = f − y, h = 1.
pub fn squared(f: &Tensor<f64>, y: &Tensor<f64>) -> Tensor<f64> {
    let r = f - y;
    &r * &r * 0.5
}

/// Logistic loss of the logit f against a label y ∈ {0, 1}, the negative
/// log-likelihood −y ln p − (1 − y) ln(1 − p) with p = σ(f), written as
/// l(y, f) = ln(1 + eᶠ) − y f: g = p − y, h = p (1 − p).
pub fn logistic(f: &Tensor<f64>, y: &Tensor<f64>) -> Tensor<f64> {
    f.softplus() - y * f
}

/// The pseudo-Huber loss with scale `delta`, a smooth Huber loss:
/// l(y, f) = δ² (√(1 + ((f − y)/δ)²) − 1), quadratic for residuals well below
/// δ and linear (slope δ) well above, so that outliers pull less than under
/// the squared error. Only its forward is written here: tapegrad derives g
/// and h.
pub fn pseudo_huber(delta: f64) -> impl Fn(&Tensor<f64>, &Tensor<f64>) -> Tensor<f64> {
    move |f, y| {
        let r = (f - y) / delta;
        ((&r * &r + 1.0).sqrt() - 1.0) * (delta * delta)
    }
}
