//! Learning-rate schedules (`torch.optim.lr_scheduler`): each sets the
//! optimizer's learning rate once per epoch, called after `opt.step()`.
//! Both use PyTorch's recursive form (its schedulers' `get_lr`): the next
//! rate is computed from the optimizer's current one, so a rate set by hand
//! between epochs carries on.

use super::Optimizer;
use crate::Float;

/// Multiplies the learning rate by `gamma` every `step_size` epochs
/// (`torch.optim.lr_scheduler.StepLR`).
///
/// ```
/// use tapegrad::optim::{Optimizer, Sgd, StepLr};
/// let w = tapegrad::Tensor::<f64>::ones(&[1]).set_requires_grad(true);
/// let mut opt = Sgd::new(vec![w], 1.0);
/// let mut schedule = StepLr::new(&opt, 2, 0.5);
/// let mut lrs = vec![];
/// for _epoch in 0..5 {
///     // ... train: opt.step() for each batch ...
///     schedule.step(&mut opt);
///     lrs.push(opt.lr());
/// }
/// assert_eq!(lrs, vec![1.0, 0.5, 0.5, 0.25, 0.25]);
/// ```
#[derive(Debug, Clone)]
pub struct StepLr<T: Float = f32> {
    step_size: usize,
    gamma: T,
    epoch: usize,
}

impl<T: Float> StepLr<T> {
    /// A schedule for `opt` that multiplies its learning rate by `gamma`
    /// after every `step_size` calls of [`step`](StepLr::step).
    ///
    /// ```
    /// use tapegrad::optim::{Adam, Optimizer, StepLr};
    /// let w = tapegrad::Tensor::<f32>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = Adam::new(vec![w], 1e-3);
    /// let mut schedule = StepLr::new(&opt, 30, 0.1);
    /// for _epoch in 0..29 {
    ///     schedule.step(&mut opt);
    /// }
    /// assert_eq!(opt.lr(), 1e-3);
    /// schedule.step(&mut opt); // the 30th
    /// assert!((opt.lr() - 1e-4).abs() < 1e-9);
    /// ```
    ///
    /// **Panics** if `step_size` is 0.
    #[track_caller]
    pub fn new<O: Optimizer<T> + ?Sized>(opt: &O, step_size: usize, gamma: T) -> Self {
        // The recursive form reads the rate at each step, not here.
        let _ = opt;
        assert!(step_size > 0, "StepLr::new: step_size must be at least 1, got 0");
        StepLr {
            step_size,
            gamma,
            epoch: 0,
        }
    }

    /// Ends an epoch: at every multiple of `step_size`, the learning rate
    /// becomes `lr · gamma`. Call it after `opt.step()`, as in PyTorch.
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd, StepLr};
    /// let w = tapegrad::Tensor::<f32>::ones(&[1]).set_requires_grad(true);
    /// let mut opt: Box<dyn Optimizer<f32>> = Box::new(Sgd::new(vec![w], 0.5));
    /// let mut schedule = StepLr::new(&*opt, 1, 0.5);
    /// schedule.step(&mut *opt);
    /// assert_eq!(opt.lr(), 0.25);
    /// ```
    pub fn step<O: Optimizer<T> + ?Sized>(&mut self, opt: &mut O) {
        self.epoch += 1;
        if self.epoch.is_multiple_of(self.step_size) {
            opt.set_lr(opt.lr() * self.gamma);
        }
    }
}

/// Anneals the learning rate from its initial value down to `eta_min` along
/// a half cosine over `t_max` epochs, then back up over the next `t_max`,
/// and so on (`torch.optim.lr_scheduler.CosineAnnealingLR`):
/// η_e = η_min + (η₀ - η_min)(1 + cos(π e / T_max)) / 2.
///
/// ```
/// use tapegrad::optim::{CosineAnnealingLr, Optimizer, Sgd};
/// let w = tapegrad::Tensor::<f64>::ones(&[1]).set_requires_grad(true);
/// let mut opt = Sgd::new(vec![w], 1.0);
/// let mut schedule = CosineAnnealingLr::new(&opt, 4, 0.0);
/// let mut lrs = vec![];
/// for _epoch in 0..8 {
///     schedule.step(&mut opt);
///     lrs.push(opt.lr());
/// }
/// let expected = [0.8536, 0.5, 0.1464, 0.0, 0.1464, 0.5, 0.8536, 1.0];
/// assert!(lrs.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-4));
/// ```
#[derive(Debug, Clone)]
pub struct CosineAnnealingLr<T: Float = f32> {
    t_max: usize,
    eta_min: T,
    base_lr: T,
    epoch: usize,
}

impl<T: Float> CosineAnnealingLr<T> {
    /// A schedule for `opt` from its current learning rate down to
    /// `eta_min` in `t_max` epochs.
    ///
    /// ```
    /// use tapegrad::optim::{Adam, CosineAnnealingLr, Optimizer};
    /// let w = tapegrad::Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = Adam::new(vec![w], 1e-3);
    /// let mut schedule = CosineAnnealingLr::new(&opt, 100, 1e-5);
    /// for _epoch in 0..100 {
    ///     schedule.step(&mut opt);
    /// }
    /// assert!((opt.lr() - 1e-5).abs() < 1e-12); // at eta_min after t_max epochs
    /// ```
    ///
    /// **Panics** if `t_max` is 0.
    #[track_caller]
    pub fn new<O: Optimizer<T> + ?Sized>(opt: &O, t_max: usize, eta_min: T) -> Self {
        assert!(
            t_max > 0,
            "CosineAnnealingLr::new: t_max must be at least 1, got 0"
        );
        CosineAnnealingLr {
            t_max,
            eta_min,
            base_lr: opt.lr(),
            epoch: 0,
        }
    }

    /// Ends an epoch e (counted from 1), setting the learning rate from the
    /// current one η as PyTorch's recursive form does (in `f64`):
    /// - where the cosine restarts, (e - 1 - T_max) a multiple of 2 T_max:
    ///   η + (η₀ - η_min)(1 - cos(π / T_max)) / 2;
    /// - elsewhere: η_min + (η - η_min)(1 + cos(π e / T_max)) / (1 + cos(π (e - 1) / T_max)).
    ///
    /// Call it after `opt.step()`, as in PyTorch.
    ///
    /// ```
    /// use tapegrad::optim::{CosineAnnealingLr, Optimizer, Sgd};
    /// let w = tapegrad::Tensor::<f64>::ones(&[1]).set_requires_grad(true);
    /// let mut opt = Sgd::new(vec![w], 1.0);
    /// let mut schedule = CosineAnnealingLr::new(&opt, 2, 0.0);
    /// schedule.step(&mut opt);
    /// assert!((opt.lr() - 0.5).abs() < 1e-12);
    /// ```
    pub fn step<O: Optimizer<T> + ?Sized>(&mut self, opt: &mut O) {
        use std::f64::consts::PI;
        self.epoch += 1;
        let (e, t_max) = (self.epoch as f64, self.t_max as f64);
        let (lr, base, eta_min) = (opt.lr().as_f64(), self.base_lr.as_f64(), self.eta_min.as_f64());
        let restart = (self.epoch as i128 - 1 - self.t_max as i128).rem_euclid(2 * self.t_max as i128) == 0;
        let next = if restart {
            lr + (base - eta_min) * (1.0 - (PI / t_max).cos()) / 2.0
        } else {
            (1.0 + (PI * e / t_max).cos()) / (1.0 + (PI * (e - 1.0) / t_max).cos()) * (lr - eta_min) + eta_min
        };
        opt.set_lr(T::of(next));
    }
}
