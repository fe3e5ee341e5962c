//! Adam (`torch.optim.Adam`), with L2 weight decay and AMSGrad; AdamW
//! (src/optim/adamw.rs) is the same update with decoupled weight decay.

use super::{check_leaves, check_non_negative, zero_grads, Optimizer};
use crate::{Float, Tensor};

/// Adam (`torch.optim.Adam`): running averages of the gradient and of its
/// square, bias-corrected. Defaults as PyTorch: betas (0.9, 0.999), eps
/// 1e-8, no weight decay, no AMSGrad.
///
/// ```
/// use tapegrad::optim::{Adam, Optimizer};
/// use tapegrad::prelude::*;
///
/// // minimise Σ (w - 3)²
/// let w = Tensor::<f64>::zeros(&[2]).set_requires_grad(true);
/// let mut opt = Adam::new(vec![w.clone()], 0.05);
/// for _ in 0..500 {
///     opt.zero_grad();
///     ((&w - 3.0) * (&w - 3.0)).sum().backward();
///     opt.step();
/// }
/// assert!(w.to_vec().iter().all(|v| (v - 3.0).abs() < 1e-2));
/// ```
pub struct Adam<T: Float = f32> {
    params: Vec<Tensor<T>>,
    lr: T,
    beta1: T,
    beta2: T,
    eps: T,
    weight_decay: T,
    amsgrad: bool,
    /// AdamW's weight decay (θ shrinks by γλθ before the update) instead of
    /// an L2 term in the gradient.
    decoupled: bool,
    /// Each parameter's moments, made at its first step.
    state: Vec<Option<Moments<T>>>,
}

/// One parameter's Adam state.
struct Moments<T: Float> {
    /// This parameter's steps so far (skipped steps do not count).
    steps: i32,
    /// m: the running average of the gradient.
    avg: Tensor<T>,
    /// v: the running average of the squared gradient.
    avg_sq: Tensor<T>,
    /// The largest v so far, with AMSGrad.
    max_avg_sq: Option<Tensor<T>>,
}

impl<T: Float> Adam<T> {
    /// Adam over `params` with learning rate `lr` and PyTorch's defaults.
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// let w = tapegrad::Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    /// assert_eq!(Adam::new(vec![w], 1e-3).lr(), 1e-3);
    /// ```
    ///
    /// **Panics** if `lr` is negative or NaN, or if a parameter is not a
    /// leaf.
    #[track_caller]
    pub fn new(params: Vec<Tensor<T>>, lr: T) -> Self {
        Self::made_by("Adam::new", params, lr)
    }

    /// The optimizer's name in messages.
    fn name(&self) -> &'static str {
        if self.decoupled {
            "AdamW"
        } else {
            "Adam"
        }
    }

    /// `new`, for `op` (`Adam::new` or `AdamW::new`, named in panics).
    #[track_caller]
    pub(crate) fn made_by(op: &str, params: Vec<Tensor<T>>, lr: T) -> Self {
        check_non_negative(op, "learning rate", lr);
        check_leaves(op, &params);
        let state = (0..params.len()).map(|_| None).collect();
        Adam {
            params,
            lr,
            beta1: T::of(0.9),
            beta2: T::of(0.999),
            eps: T::of(1e-8),
            weight_decay: T::zero(),
            amsgrad: false,
            decoupled: false,
            state,
        }
    }

    /// The decay rates of the two running averages (default 0.9, 0.999).
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// use tapegrad::Tensor;
    /// // With β = 0 the averages are the last gradient and its square:
    /// // every step moves θ by lr against the gradient's sign.
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = Adam::new(vec![w.clone()], 0.5).betas(0.0, 0.0);
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     ((&w - 3.0) * (&w - 3.0)).sum().backward(); // -6, then -5
    ///     opt.step();
    /// }
    /// assert!((w.item() - 1.0).abs() < 1e-8); // with the defaults: 0.9956
    /// ```
    ///
    /// **Panics** unless both are in [0, 1).
    #[track_caller]
    pub fn betas(mut self, beta1: T, beta2: T) -> Self {
        for (i, b) in [beta1, beta2].into_iter().enumerate() {
            assert!(
                b >= T::zero() && b < T::one(),
                "{}: invalid beta parameter at index {i}: {b} (must be in [0, 1))",
                self.name()
            );
        }
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// The term added to the denominator for stability (default 1e-8).
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// use tapegrad::Tensor;
    /// // The first step is lr · g / (|g| + eps): with g = 1 and eps = 1, half of lr.
    /// let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    /// let mut opt = Adam::new(vec![w.clone()], 0.1).eps(1.0);
    /// w.sum().backward();
    /// opt.step();
    /// assert!((w.item() + 0.05).abs() < 1e-12);
    /// ```
    ///
    /// **Panics** if `eps` is negative or NaN.
    #[track_caller]
    pub fn eps(mut self, eps: T) -> Self {
        check_non_negative(self.name(), "epsilon value", eps);
        self.eps = eps;
        self
    }

    /// Weight decay λ (default 0): Adam adds λθ to the gradient (an L2
    /// penalty); [`AdamW`](super::AdamW) decays θ directly.
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// use tapegrad::Tensor;
    /// // A zero loss gradient: the step comes from λθ alone, normalised by
    /// // Adam to a step of lr.
    /// let w = Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = Adam::new(vec![w.clone()], 0.01).weight_decay(0.1);
    /// (&w * 0.0).sum().backward();
    /// opt.step();
    /// assert!((w.item() - 0.99).abs() < 1e-8);
    /// ```
    ///
    /// **Panics** if `weight_decay` is negative or NaN.
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: T) -> Self {
        check_non_negative(self.name(), "weight_decay value", weight_decay);
        self.weight_decay = weight_decay;
        self
    }

    /// AMSGrad (default off): divide by the largest second moment seen so
    /// far instead of the current one.
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer};
    /// use tapegrad::Tensor;
    /// // A large gradient, then a small one: the second moment falls, but
    /// // AMSGrad divides by the largest seen, so its second step is shorter.
    /// let run = |amsgrad: bool| {
    ///     let w = Tensor::<f64>::zeros(&[1]).set_requires_grad(true);
    ///     let mut opt = Adam::new(vec![w.clone()], 0.1).amsgrad(amsgrad);
    ///     for g in [100.0, 1.0] {
    ///         opt.zero_grad();
    ///         (&w * g).sum().backward();
    ///         opt.step();
    ///     }
    ///     w.item()
    /// };
    /// assert!(run(true) > run(false)); // both went down; AMSGrad less far
    /// ```
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// Switches to AdamW's decoupled weight decay.
    pub(super) fn decoupled(mut self) -> Self {
        self.decoupled = true;
        self
    }

    /// The step of Adam, or of AdamW when `decoupled`: each line of the
    /// algorithm is one fused pass over the parameter's elements, in place.
    pub(super) fn update(&mut self) {
        let step_op = if self.decoupled {
            "AdamW::step"
        } else {
            "Adam::step"
        };
        let one = T::one();
        let (lr, beta1, beta2, eps, wd) = (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay);
        let l2 = !self.decoupled && wd != T::zero();
        // g + λ θ with L2 weight decay, else g
        let decayed = move |g: T, theta: T| if l2 { g + wd * theta } else { g };
        crate::no_grad(|| {
            for (p, state) in self.params.iter().zip(&mut self.state) {
                let Some(g) = p.grad() else { continue };
                let s = state.get_or_insert_with(|| Moments {
                    steps: 0,
                    avg: Tensor::zeros(p.shape()),
                    avg_sq: Tensor::zeros(p.shape()),
                    max_avg_sq: None,
                });
                s.steps += 1;
                if self.decoupled && wd != T::zero() {
                    p.mul_scalar_(one - lr * wd);
                }
                // m ← β₁ m + (1 - β₁) g, as PyTorch computes it: a lerp
                // from m towards g by 1 - β₁
                s.avg.update_(step_op, [&g, p], |m, [g, theta]| {
                    lerp(m, decayed(g, theta), one - beta1)
                });
                // v ← β₂ v + (1 - β₂) g²
                s.avg_sq.update_(step_op, [&g, p], |v, [g, theta]| {
                    let g = decayed(g, theta);
                    v * beta2 + (one - beta2) * g * g
                });
                let v = match self.amsgrad {
                    true => {
                        let max = s.max_avg_sq.get_or_insert_with(|| Tensor::zeros(p.shape()));
                        // NaN propagates, as torch.maximum
                        max.update_(
                            step_op,
                            [&s.avg_sq],
                            |a, [b]| if b > a || b.is_nan() { b } else { a },
                        );
                        &*max
                    }
                    false => &s.avg_sq,
                };
                // The bias corrections are scalars in f64, as PyTorch's.
                let t = f64::from(s.steps);
                let step_size = T::of(lr.as_f64() / (1.0 - beta1.as_f64().powf(t)));
                let correction2_sqrt = T::of((1.0 - beta2.as_f64().powf(t)).sqrt());
                // θ ← θ - (γ / (1 - β₁ᵗ)) m / (√v / √(1 - β₂ᵗ) + ε)
                p.update_(step_op, [&s.avg, v], |theta, [m, v]| {
                    theta + -step_size * m / (v.sqrt() / correction2_sqrt + eps)
                });
            }
        });
    }
}

/// `a + w (b - a)`, computed as PyTorch's `lerp` (from the far end when
/// `w ≥ 0.5`, so that `w = 1` gives exactly `b`).
fn lerp<T: Float>(a: T, b: T, w: T) -> T {
    if w < T::of(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (T::one() - w)
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    /// One step of Adam, as the algorithm of PyTorch's `Adam` docs, for
    /// each parameter θ with a gradient g (t counts this parameter's steps;
    /// m, v and v_max start at zero):
    ///
    /// 1. with weight decay, g ← g + λ θ;
    /// 2. m ← β₁ m + (1 - β₁) g and v ← β₂ v + (1 - β₂) g²;
    /// 3. m̂ ← m / (1 - β₁ᵗ);
    /// 4. with AMSGrad, v_max ← max(v_max, v) and v̂ ← v_max / (1 - β₂ᵗ);
    ///    else v̂ ← v / (1 - β₂ᵗ);
    /// 5. θ ← θ - γ m̂ / (√v̂ + ε).
    ///
    /// The gradient itself is not modified.
    fn step(&mut self) {
        self.update();
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

#[cfg(test)]
mod tests {
    use super::lerp;

    #[test]
    fn lerp_at_one_half_rounds_as_pytorch() {
        // torch.lerp(a, b, 0.5) in float64 computes from the far end,
        // b - (b - a) · 0.5 = 0.5220987504731247; a + 0.5 (b - a) rounds to
        // 0.5220987504731249 here. Adam's m takes this path when β₁ = 0.5.
        let (a, b) = (-1.6274266723772841, 2.6716241733235337);
        assert_eq!(lerp(a, b, 0.5f64), 0.5220987504731247);
    }

    #[test]
    fn lerp_takes_the_near_end_below_one_half_as_pytorch() {
        // torch.lerp in float64 at weights where the two formulas round
        // differently: a + w (b - a) below 0.5 (-1.1975215878072023 at 0.1,
        // the far end's formula gives ...025), b - (b - a)(1 - w) from 0.5
        // (2.241719088753452 at 0.9, the near end's gives ...4524). Adam's
        // m takes w = 1 - β₁, 0.1 by default.
        let (a, b) = (-1.6274266723772841, 2.6716241733235337);
        assert_eq!(lerp(a, b, 0.1f64), -1.1975215878072023);
        assert_eq!(lerp(a, b, 0.9f64), 2.241719088753452);
    }
}
