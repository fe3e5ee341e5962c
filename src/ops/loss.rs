//! Loss functions. All reduce with the mean, PyTorch's default.

use crate::autograd::node::{record, Role};
use crate::ops::kernels::zip_map;
use crate::{Float, Tensor};
use ndarray::ArrayD;
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// The mean squared error, mean((self - target)²). The target gets a
    /// gradient too when it requires one.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let pred = Tensor::from_vec(vec![1.0f32, 3.0], &[2]);
    /// assert_eq!(pred.mse_loss(&Tensor::from_vec(vec![0.0, 1.0], &[2])).item(), 2.5);
    /// ```
    ///
    /// **Panics** if the shapes differ (PyTorch broadcasts them with a
    /// warning, which turns `[N, 1]` against `[N]` into an `[N, N]` loss).
    #[track_caller]
    pub fn mse_loss(&self, target: &Tensor<T>) -> Tensor<T> {
        // A plain assert: assert_eq! would put its `left:`/`right:` lines
        // before the message, which then no longer starts with the op.
        assert!(
            self.shape() == target.shape(),
            "mse_loss: input shape {:?} and target shape {:?} differ",
            self.shape(),
            target.shape()
        );
        let d = self - target;
        (&d * &d).mean()
    }

    /// The negative log-likelihood of class `targets[n]` under the
    /// log-probabilities `self` of shape `[N, C]`, averaged over N.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let logp = Tensor::from_vec(vec![-0.1f64, -2.0, -3.0, -0.5], &[2, 2]);
    /// assert_eq!(logp.nll_loss(&[0, 1]).item(), 0.3);
    /// ```
    ///
    /// **Panics** unless `self` is `[N, C]` with `targets.len() == N` and
    /// every target below C (naming the target and the class count).
    #[track_caller]
    pub fn nll_loss(&self, targets: &[usize]) -> Tensor<T> {
        let index = class_index("nll_loss", self.shape(), targets);
        -self.gather(1, &index).mean()
    }

    /// Cross-entropy of the logits `self` (`[N, C]`) against class indices,
    /// averaged over N: `nll_loss(log_softmax(self, 1))`, stable for large
    /// logits.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f64, 0.0], &[1, 2]);
    /// assert!((logits.cross_entropy(&[1]).item() - 2f64.ln()).abs() < 1e-15);
    /// ```
    ///
    /// **Panics** as [`nll_loss`](Tensor::nll_loss) does.
    #[track_caller]
    pub fn cross_entropy(&self, targets: &[usize]) -> Tensor<T> {
        class_index("cross_entropy", self.shape(), targets);
        self.log_softmax(1).nll_loss(targets)
    }

    /// Binary cross-entropy of the logits `self` against probabilities
    /// `target` (same shape), averaged: the stable form
    /// max(x, 0) - x t + ln(1 + e^-|x|).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![0.0f64], &[1]);
    /// let l = x.binary_cross_entropy_with_logits(&Tensor::from_vec(vec![1.0], &[1]));
    /// assert!((l.item() - 2f64.ln()).abs() < 1e-15);
    /// ```
    ///
    /// **Panics** if the shapes differ.
    #[track_caller]
    pub fn binary_cross_entropy_with_logits(&self, target: &Tensor<T>) -> Tensor<T> {
        assert_eq!(
            self.shape(),
            target.shape(),
            "binary_cross_entropy_with_logits: input shape {:?} and target shape {:?} differ",
            self.shape(),
            target.shape()
        );
        let zero = T::zero();
        let out = zip_map("binary_cross_entropy_with_logits", self, target, |x, t| {
            x.max(zero) - x * t + (-x.abs()).exp().ln_1p()
        });
        // d/dx = σ(x) - t, d/dt = -x
        let per_element = record(
            "BinaryCrossEntropyWithLogitsBackward",
            &[self, target],
            out,
            &[Role::Input(0), Role::Input(1)],
            |ctx, g| {
                let x = ctx.input(0);
                smallvec![
                    ctx.needs_grad(0).then(|| &g * (x.sigmoid() - ctx.input(1))),
                    ctx.needs_grad(1).then(|| -(g * &x)),
                ]
            },
        );
        per_element.mean()
    }
}

/// Checks `[N, C]` logits against N targets below C; the targets as a
/// `[N, 1]` index for `gather`.
#[track_caller]
fn class_index(op: &str, shape: &[usize], targets: &[usize]) -> ArrayD<usize> {
    assert!(
        shape.len() == 2,
        "{op}: expects input of shape [N, C], got {shape:?}"
    );
    let (n, c) = (shape[0], shape[1]);
    assert!(
        targets.len() == n,
        "{op}: {} targets for a batch of {n} (input shape {shape:?})",
        targets.len()
    );
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t >= c) {
        panic!("{op}: target {t} (at index {i}) is out of range for {c} classes");
    }
    ArrayD::from_shape_vec(vec![n, 1], targets.to_vec()).expect("n targets")
}
