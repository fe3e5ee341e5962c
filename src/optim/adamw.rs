//! AdamW (`torch.optim.AdamW`): Adam with decoupled weight decay.

use super::{Adam, Optimizer};
use crate::{Float, Tensor};

/// AdamW (`torch.optim.AdamW`): Adam whose weight decay shrinks the
/// parameters directly (θ ← θ - γλθ) instead of entering the gradient.
/// Defaults as PyTorch: betas (0.9, 0.999), eps 1e-8, weight decay 0.01,
/// no AMSGrad.
///
/// ```
/// use tapegrad::optim::{AdamW, Optimizer};
/// use tapegrad::prelude::*;
///
/// // with no gradient signal, only the decay acts: w ← w (1 - γλ)
/// let w = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
/// let mut opt = AdamW::new(vec![w.clone()], 0.1);
/// (&w * 0.0).sum().backward(); // a zero gradient
/// opt.step();
/// assert!((w.item() - (1.0 - 0.1 * 0.01)).abs() < 1e-12);
/// ```
pub struct AdamW<T: Float = f32>(Adam<T>);

impl<T: Float> AdamW<T> {
    /// AdamW over `params` with learning rate `lr` and PyTorch's defaults
    /// (weight decay 0.01).
    ///
    /// ```
    /// use tapegrad::optim::{AdamW, Optimizer};
    /// let w = tapegrad::Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// assert_eq!(AdamW::new(vec![w], 1e-3).lr(), 1e-3);
    /// ```
    ///
    /// **Panics** if `lr` is negative or NaN, or if a parameter is not a
    /// leaf.
    #[track_caller]
    pub fn new(params: Vec<Tensor<T>>, lr: T) -> Self {
        AdamW(
            Adam::made_by("AdamW::new", params, lr)
                .decoupled()
                .weight_decay(T::of(0.01)),
        )
    }

    /// The decay rates of the two running averages (default 0.9, 0.999).
    ///
    /// ```
    /// use tapegrad::optim::{AdamW, Optimizer};
    /// use tapegrad::Tensor;
    /// // With β = 0 (and no decay), every step moves θ by lr against the
    /// // gradient's sign, as for Adam.
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = AdamW::new(vec![w.clone()], 0.5).betas(0.0, 0.0).weight_decay(0.0);
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     ((&w - 3.0) * (&w - 3.0)).sum().backward();
    ///     opt.step();
    /// }
    /// assert!((w.item() - 1.0).abs() < 1e-8);
    /// ```
    ///
    /// **Panics** unless both are in [0, 1).
    #[track_caller]
    pub fn betas(self, beta1: T, beta2: T) -> Self {
        AdamW(self.0.betas(beta1, beta2))
    }

    /// The term added to the denominator for stability (default 1e-8).
    ///
    /// ```
    /// use tapegrad::optim::{AdamW, Optimizer};
    /// use tapegrad::Tensor;
    /// // θ (1 - γλ) - γ g / (|g| + eps), with g = 1 and eps = 1.
    /// let w = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = AdamW::new(vec![w.clone()], 0.1).eps(1.0);
    /// w.sum().backward();
    /// opt.step();
    /// assert!((w.item() - (1.0 * (1.0 - 0.1 * 0.01) - 0.05)).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** if `eps` is negative or NaN.
    #[track_caller]
    pub fn eps(self, eps: T) -> Self {
        AdamW(self.0.eps(eps))
    }

    /// The decoupled weight decay λ (default 0.01).
    ///
    /// ```
    /// use tapegrad::optim::{Adam, AdamW, Optimizer};
    /// use tapegrad::Tensor;
    /// // A zero loss gradient: AdamW shrinks θ by γλθ; Adam's λθ term is
    /// // normalised into a full step of γ.
    /// let step = |mut opt: Box<dyn Optimizer<f64>>, w: &Tensor<f64>| {
    ///     (w * 0.0).sum().backward();
    ///     opt.step();
    ///     w.item()
    /// };
    /// let w1 = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let w2 = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let decoupled = step(Box::new(AdamW::new(vec![w1.clone()], 0.01).weight_decay(0.1)), &w1);
    /// let l2 = step(Box::new(Adam::new(vec![w2.clone()], 0.01).weight_decay(0.1)), &w2);
    /// assert!((decoupled - 0.999).abs() < 1e-12);
    /// assert!((l2 - 0.99).abs() < 1e-8);
    /// ```
    ///
    /// **Panics** if `weight_decay` is negative or NaN.
    #[track_caller]
    pub fn weight_decay(self, weight_decay: T) -> Self {
        AdamW(self.0.weight_decay(weight_decay))
    }

    /// AMSGrad (default off), as [`Adam::amsgrad`].
    ///
    /// ```
    /// use tapegrad::optim::{Adam, AdamW, Optimizer};
    /// use tapegrad::Tensor;
    /// // Without decay, AdamW with AMSGrad is Adam with AMSGrad.
    /// let run = |mut opt: Box<dyn Optimizer<f64>>, w: &Tensor<f64>| {
    ///     for g in [100.0, 1.0] {
    ///         opt.zero_grad();
    ///         (w * g).sum().backward();
    ///         opt.step();
    ///     }
    ///     w.item()
    /// };
    /// let w1 = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let w2 = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let adamw = run(Box::new(AdamW::new(vec![w1.clone()], 0.1).weight_decay(0.0).amsgrad(true)), &w1);
    /// let adam = run(Box::new(Adam::new(vec![w2.clone()], 0.1).amsgrad(true)), &w2);
    /// assert_eq!(adamw, adam);
    /// ```
    pub fn amsgrad(self, amsgrad: bool) -> Self {
        AdamW(self.0.amsgrad(amsgrad))
    }
}

impl<T: Float> Optimizer<T> for AdamW<T> {
    /// One step of AdamW, as the algorithm of PyTorch's `AdamW` docs, for
    /// each parameter θ with a gradient g (t counts this parameter's steps;
    /// m, v and v_max start at zero):
    ///
    /// 1. θ ← θ - γ λ θ (the decay acts on θ, not on g);
    /// 2. m ← β₁ m + (1 - β₁) g and v ← β₂ v + (1 - β₂) g²;
    /// 3. m̂ ← m / (1 - β₁ᵗ);
    /// 4. with AMSGrad, v_max ← max(v_max, v) and v̂ ← v_max / (1 - β₂ᵗ);
    ///    else v̂ ← v / (1 - β₂ᵗ);
    /// 5. θ ← θ - γ m̂ / (√v̂ + ε).
    fn step(&mut self) {
        self.0.update();
    }

    fn zero_grad(&mut self) {
        self.0.zero_grad();
    }

    fn lr(&self) -> T {
        self.0.lr()
    }

    fn set_lr(&mut self, lr: T) {
        self.0.set_lr(lr);
    }
}
