//! Stochastic gradient descent, with momentum, dampening, Nesterov momentum
//! and weight decay (`torch.optim.SGD`).

use super::{check_leaves, check_non_negative, zero_grads, Optimizer};
use crate::{Float, Tensor};

/// Stochastic gradient descent (`torch.optim.SGD`): plain by default;
/// builders add momentum, dampening, Nesterov momentum and weight decay.
///
/// ```
/// use tapegrad::optim::{Optimizer, Sgd};
/// use tapegrad::prelude::*;
///
/// // minimise (w - 3)²: the gradient is 2 (w - 3)
/// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
/// let mut opt = Sgd::new(vec![w.clone()], 0.1).momentum(0.5);
/// for _ in 0..100 {
///     opt.zero_grad();
///     ((&w - 3.0) * (&w - 3.0)).sum().backward();
///     opt.step();
/// }
/// assert!((w.item() - 3.0).abs() < 1e-6);
/// ```
pub struct Sgd<T: Float = f32> {
    params: Vec<Tensor<T>>,
    lr: T,
    momentum: T,
    dampening: T,
    nesterov: bool,
    weight_decay: T,
    /// The momentum buffer of each parameter, made at its first step.
    buffers: Vec<Option<Tensor<T>>>,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD over `params` with learning rate `lr`: no momentum, no
    /// dampening, no weight decay (PyTorch's defaults).
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// let w = tapegrad::Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// let opt = Sgd::new(vec![w], 0.01);
    /// assert_eq!(opt.lr(), 0.01);
    /// ```
    ///
    /// **Panics** if `lr` is negative or NaN, or if a parameter is not a
    /// leaf.
    #[track_caller]
    pub fn new(params: Vec<Tensor<T>>, lr: T) -> Self {
        check_non_negative("Sgd::new", "learning rate", lr);
        check_leaves("Sgd::new", &params);
        let buffers = vec![None; params.len()];
        Sgd {
            params,
            lr,
            momentum: T::zero(),
            dampening: T::zero(),
            nesterov: false,
            weight_decay: T::zero(),
            buffers,
        }
    }

    /// Momentum factor μ (default 0: none).
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.1).momentum(0.9);
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     w.sum().backward(); // g = 1
    ///     opt.step();
    /// }
    /// // b = 1, then 0.9 · 1 + 1 = 1.9: w = -0.1 - 0.19
    /// assert!((w.item() + 0.29).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** if `momentum` is negative or NaN.
    #[track_caller]
    pub fn momentum(mut self, momentum: T) -> Self {
        check_non_negative("Sgd::momentum", "momentum value", momentum);
        self.momentum = momentum;
        self
    }

    /// Dampening τ of the momentum (default 0): the gradient enters the
    /// momentum buffer with weight 1 - τ.
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.1).momentum(0.9).dampening(0.5);
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     w.sum().backward(); // g = 1
    ///     opt.step();
    /// }
    /// // b = 1, then 0.9 · 1 + 0.5 · 1 = 1.4: w = -0.1 - 0.14
    /// assert!((w.item() + 0.24).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** in [`step`](Optimizer::step) with a non-zero dampening
    /// and Nesterov momentum.
    pub fn dampening(mut self, dampening: T) -> Self {
        self.dampening = dampening;
        self
    }

    /// Nesterov momentum (default off); needs a momentum and zero
    /// dampening, which [`step`](Optimizer::step) checks.
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.1).momentum(0.9).nesterov(true);
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     w.sum().backward(); // g = 1
    ///     opt.step();
    /// }
    /// // b = 1, then 1.9; steps of g + μ b: 1.9, then 2.71
    /// assert!((w.item() + 0.461).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** in [`step`](Optimizer::step) without a momentum or with a
    /// dampening.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Weight decay λ, an L2 penalty added to the gradient (default 0).
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// use tapegrad::Tensor;
    /// let w = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w.clone()], 0.5).weight_decay(0.1);
    /// (&w * 0.0).sum().backward(); // a zero loss gradient: g = λθ = 0.1
    /// opt.step();
    /// assert!((w.item() - 0.95).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** if `weight_decay` is negative or NaN.
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: T) -> Self {
        check_non_negative("Sgd::weight_decay", "weight_decay value", weight_decay);
        self.weight_decay = weight_decay;
        self
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    /// One step of SGD, as the algorithm of PyTorch's `SGD` docs, for each
    /// parameter θ with a gradient g (t counts this parameter's steps):
    ///
    /// 1. with weight decay, g ← g + λ θ;
    /// 2. with momentum: at the first step the buffer b is a copy of g,
    ///    after that b ← μ b + (1 - τ) g; then g ← g + μ b with Nesterov
    ///    momentum, else g ← b;
    /// 3. θ ← θ - γ g.
    ///
    /// Each line is one fused pass over the elements, in place; the
    /// gradient itself is not modified.
    ///
    /// **Panics** if Nesterov momentum is on without a momentum, or with a
    /// dampening (as PyTorch refuses it).
    #[track_caller]
    fn step(&mut self) {
        let (zero, one) = (T::zero(), T::one());
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        let damp = self.dampening;
        assert!(
            !self.nesterov || (mu > zero && damp == zero),
            "Sgd: Nesterov momentum requires a momentum and zero dampening (momentum {mu}, dampening {damp})"
        );
        // g + λ θ, or g itself without weight decay (so that an infinite
        // θ does not turn g into NaN)
        let decayed = move |g: T, theta: T| if wd == zero { g } else { g + wd * theta };
        crate::no_grad(|| {
            for (p, buf) in self.params.iter().zip(&mut self.buffers) {
                let Some(g) = p.grad() else { continue };
                if mu == zero {
                    p.update_("Sgd::step", [&g], |theta, [g]| theta - lr * decayed(g, theta));
                    continue;
                }
                let b = match buf {
                    Some(b) => {
                        b.update_("Sgd::step", [&g, p], |b, [g, theta]| {
                            mu * b + (one - damp) * decayed(g, theta)
                        });
                        b
                    }
                    None => {
                        let b = Tensor::zeros(p.shape());
                        b.update_("Sgd::step", [&g, p], |_, [g, theta]| decayed(g, theta));
                        buf.insert(b)
                    }
                };
                if self.nesterov {
                    p.update_("Sgd::step", [&g, b], |theta, [g, b]| {
                        theta - lr * (decayed(g, theta) + mu * b)
                    });
                } else {
                    p.update_("Sgd::step", [b], |theta, [b]| theta - lr * b);
                }
            }
        });
    }

    fn zero_grad(&mut self) {
        zero_grads(&self.params);
    }

    fn lr(&self) -> T {
        self.lr
    }

    fn set_lr(&mut self, lr: T) {
        self.lr = lr;
    }
}
