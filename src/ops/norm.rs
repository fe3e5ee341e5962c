//! Normalisation: `layer_norm`.
//!
//! The normalisation itself is one fused op over the rows of a matrix
//! (`normalize_rows`), whose gradient is another (`normalize_rows_backward`),
//! itself differentiable with a rule in Tensor ops; the scale and shift are
//! ordinary broadcasting ops. Written as a composite (`mean_dim`, `-`,
//! `sqrt`, `/`), `LayerNorm(256)` on 128 rows took 1.25 ms forward and
//! backward, PyTorch 80 µs: most of it went to summing `mean_dim`'s
//! broadcast gradient into the input's, element by element. Fused: 86 µs,
//! PyTorch 119 µs, in one run on a loaded 2-core machine (`benches/nn.rs`,
//! `layer_norm`; `tests/nn_properties.rs` checks the fused op against the
//! composite to the third derivative).

use crate::autograd::node::{record, Role};
use crate::pool;
use crate::storage::Value;
use crate::{Float, Tensor};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// Layer normalisation over the trailing dimensions `normalized_shape`
    /// (`F.layer_norm`): each slice is shifted to mean 0 and scaled to
    /// variance 1 (the biased variance, divided by n, as PyTorch), with
    /// `eps` added to the variance, then multiplied by `weight` and shifted
    /// by `bias` (both of shape `normalized_shape`) when given:
    /// `y = (x - mean) / √(var + eps) · weight + bias`.
    ///
    /// Differentiable to any order (the normalisation's gradient is an op
    /// with a gradient of its own).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// let y = x.layer_norm(&[3], None, None, 0.0).to_vec();
    /// // each row has biased variance 2/3
    /// let r = 1.5f64.sqrt();
    /// for (got, want) in y.iter().zip([-r, 0.0, r, -r, 0.0, r]) {
    ///     assert!((got - want).abs() < 1e-12);
    /// }
    /// let (w, b) = (Tensor::full(&[3], 2.0), Tensor::full(&[3], 1.0));
    /// let y = x.layer_norm(&[3], Some(&w), Some(&b), 1e-5).to_vec();
    /// assert_eq!(y[4], 1.0); // 0 · 2 + 1
    /// ```
    ///
    /// **Panics** if `normalized_shape` is empty or not the end of the
    /// input's shape, or `weight` or `bias` does not have shape
    /// `normalized_shape`.
    #[track_caller]
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: T,
    ) -> Tensor<T> {
        let shape = self.shape();
        assert!(
            !normalized_shape.is_empty(),
            "layer_norm: normalized_shape must have at least one dimension, got [] (input of shape {shape:?})"
        );
        assert!(
            shape.ends_with(normalized_shape),
            "layer_norm: normalized_shape {normalized_shape:?} is not the end of the input's shape {shape:?}"
        );
        for (what, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t {
                assert!(
                    t.shape() == normalized_shape,
                    "layer_norm: {what} of shape {:?} does not match normalized_shape {normalized_shape:?}",
                    t.shape()
                );
            }
        }
        // One row per normalised slice.
        let lead = shape.len() - normalized_shape.len();
        let rows = self.reshape(&[shape[..lead].iter().product(), normalized_shape.iter().product()]);
        let y = rows.normalize_rows(eps).reshape(shape);
        let y = match weight {
            Some(w) => y * w,
            None => y,
        };
        match bias {
            Some(b) => y + b,
            None => y,
        }
    }

    /// `x̂ = (x - mean) / √(var + eps)` for each row of a matrix (biased
    /// variance). Saves its input: the gradient,
    /// [`normalize_rows_backward`](Tensor::normalize_rows_backward), is a
    /// function of the gradient and `x`.
    #[track_caller]
    fn normalize_rows(&self, eps: T) -> Tensor<T> {
        let x = self.data().contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut out = pool::take(xs.len());
        for_rows(xs, self.shape()[1], eps, |row, stats| {
            out.extend(row.iter().map(|&v| (v - stats.mean) * stats.rstd));
        });
        record(
            "LayerNormBackward",
            &[self],
            Value::from_vec(out, self.shape()),
            &[Role::Input(0)],
            move |ctx, g| smallvec![Some(g.normalize_rows_backward(&ctx.input(0), eps))],
        )
    }

    /// The gradient of [`normalize_rows`](Tensor::normalize_rows) at `x`
    /// for the output gradient `self` (`g`), per row:
    /// `r (g - mean(g) - x̂ mean(g x̂))` with `r = 1/√(var + eps)`.
    ///
    /// Differentiable: the map `g ↦ J g` is the Jacobian `J` of
    /// normalize_rows, which is symmetric, so the gradient in `g` is this op
    /// again (on the incoming `gg`); the gradient in `x` is, per row of `M`
    /// elements,
    /// `-(r/M) (⟨gg, J g⟩ x̂ + M mean(g x̂) J gg + ⟨gg, x̂⟩ J g)`.
    #[track_caller]
    fn normalize_rows_backward(&self, x: &Tensor<T>, eps: T) -> Tensor<T> {
        let width = x.shape()[1];
        let out = Tensor::read_pair(self, x, |g, x| {
            let (g, x) = (g.contiguous(), x.contiguous());
            let (gs, xs) = (
                g.as_slice().expect("contiguous"),
                x.as_slice().expect("contiguous"),
            );
            let mut out = pool::take(xs.len());
            let n = T::of(width as f64);
            let mut at = 0;
            for_rows(xs, width, eps, |row, stats| {
                let g = &gs[at..at + width];
                at += width;
                let xhat = |v: T| (v - stats.mean) * stats.rstd;
                let g_mean = sum_by(g, g, |g, _| g) / n;
                let gx_mean = sum_by(g, row, |g, v| g * xhat(v)) / n;
                out.extend(
                    g.iter()
                        .zip(row)
                        .map(|(&g, &v)| stats.rstd * (g - g_mean - xhat(v) * gx_mean)),
                );
            });
            Value::from_vec(out, x.shape.as_slice())
        });
        let saves = [Role::Input(0), Role::Input(1)];
        record(
            "LayerNormBackwardBackward",
            &[self, x],
            out,
            &saves,
            move |ctx, gg| {
                let (g, x) = (ctx.input(0), ctx.input(1));
                let j_gg = gg.normalize_rows_backward(&x, eps);
                let grad_x = ctx.needs_grad(1).then(|| {
                    let n = T::of(width as f64);
                    let xhat = x.normalize_rows(eps);
                    let centred = &x - x.mean_dim(1, true);
                    let rstd = ((&centred * &centred).mean_dim(1, true) + eps).powf(T::of(-0.5));
                    let j_g = g.normalize_rows_backward(&x, eps);
                    let a = (&gg * &j_g).sum_dim(1, true) * &xhat;
                    let b = (&g * &xhat).sum_dim(1, true) * &j_gg;
                    let c = (&gg * &xhat).sum_dim(1, true) * j_g;
                    -(rstd / n) * (a + b + c)
                });
                smallvec![ctx.needs_grad(0).then_some(j_gg), grad_x]
            },
        )
    }
}

/// The mean and `1/√(var + eps)` of one row.
struct RowStats<T> {
    mean: T,
    rstd: T,
}

/// Calls `f` with each row of the row-major matrix `xs` (rows of `width`)
/// and its statistics, in order.
#[track_caller]
fn for_rows<T: Float>(xs: &[T], width: usize, eps: T, mut f: impl FnMut(&[T], RowStats<T>)) {
    if width == 0 {
        return;
    }
    let n = T::of(width as f64);
    for row in xs.chunks_exact(width) {
        let mean = sum_by(row, row, |v, _| v) / n;
        let var = sum_by(row, row, |v, _| (v - mean) * (v - mean)) / n;
        f(
            row,
            RowStats {
                mean,
                rstd: (var + eps).sqrt().recip(),
            },
        );
    }
}

/// `Σ f(a[i], b[i])` in 8 running sums: one chain of dependent additions
/// costs an addition's latency per element, 8 independent ones vectorise
/// (LayerNorm(256) forward on 128 rows: 95 µs with one chain, 33 with 8).
#[track_caller]
fn sum_by<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + f(x, y));
    let mut acc = [T::zero(); 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = acc[l] + f(x[l], y[l]);
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}
