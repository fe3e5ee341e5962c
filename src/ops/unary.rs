//! Elementwise functions of one tensor. Each rule saves the cheaper of input
//! and output (`exp`, `tanh`, `sigmoid`, `sqrt` and `relu` need only their
//! output). Derivatives that are piecewise constant (`relu`, `abs`, `clamp`,
//! `leaky_relu`) go through [`Tensor::mul_step`], whose own derivative in
//! the input is 0, as it should be.

use crate::autograd::node::{record, Role};
use crate::layout::dims;
use crate::ops::kernels::{map, zip_reusing_operand};
use crate::{Float, Tensor};
use smallvec::smallvec;

/// A piecewise-constant function (the derivative of a piecewise-linear
/// op), as a type parameter rather than a `dyn Fn` so that `mul_step`'s loop
/// inlines it and vectorises (a call per element made relu's backward 5% of
/// W2). `None` where the gradient is blocked: there the result is 0 even
/// for a NaN or infinite incoming gradient, as PyTorch's backward selects a
/// zero there rather than multiply by one (`threshold_backward`,
/// `clamp_backward`); `Some(0)` multiplies (abs at 0: NaN · 0 is NaN).
pub(crate) trait Step<T>: Fn(T) -> Option<T> + Clone + Send + Sync + 'static {}
impl<T, S: Fn(T) -> Option<T> + Clone + Send + Sync + 'static> Step<T> for S {}

/// `1 / sqrt(2)`, `2 / sqrt(pi)` as `T`.
#[track_caller]
fn frac_1_sqrt_2<T: Float>() -> T {
    T::of(std::f64::consts::FRAC_1_SQRT_2)
}

impl<T: Float> Tensor<T> {
    /// `f` of every element, as a constant (never recorded): masks and
    /// other piecewise-constant factors of derivatives.
    #[track_caller]
    pub(crate) fn constant_map(&self, f: impl Fn(T) -> T) -> Tensor<T> {
        Tensor::from_value(map(&self.data(), f))
    }

    /// A recorded elementwise op: `f` forward, `rule` backward.
    #[track_caller]
    fn unary(
        &self,
        name: &'static str,
        f: impl Fn(T) -> T,
        save: Role,
        rule: impl Fn(Tensor<T>, &Tensor<T>) -> Tensor<T> + Send + Sync + 'static,
    ) -> Tensor<T> {
        let out = map(&self.data(), f);
        record(name, &[self], out, &[save], move |ctx, g| {
            smallvec![Some(rule(g, &ctx.only_saved()))]
        })
    }

    /// `self * step(x)` for a piecewise-constant `step`: the gradient of
    /// relu, abs, clamp and the like, with `self` the incoming gradient.
    /// Recorded, so that under `create_graph` the gradient is itself
    /// differentiable: by `step(x)` in `self`, and 0 in `x` (as PyTorch's
    /// `threshold_backward`). Consumes `self`, to write over it when it can
    /// ([`zip_reusing_leaf`]).
    #[track_caller]
    pub(crate) fn mul_step(self, x: &Tensor<T>, step: impl Step<T>) -> Tensor<T> {
        // Saves `x` only: the result may take over `self`'s buffer.
        let apply = |g: T, v: T| step(v).map_or(T::zero(), |s| g * s);
        let (g, out) = match zip_reusing_operand("mul_step", self, x, false, apply) {
            Ok(done) => return done,
            Err(rest) => rest,
        };
        let x_shape = dims(x.shape());
        record(
            "StepBackward",
            &[&g, x],
            out,
            &[Role::Input(1)],
            move |ctx, gg| {
                smallvec![
                    ctx.needs_grad(0)
                        .then(|| gg.mul_step(&ctx.input(1), step.clone())),
                    ctx.needs_grad(1).then(|| Tensor::zeros(&x_shape)),
                ]
            },
        )
    }

    /// eˣ, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64], &[1]).exp();
    /// assert_eq!(y.item(), 1.0);
    /// ```
    #[track_caller]
    pub fn exp(&self) -> Tensor<T> {
        // d exp(x) = exp(x) dx
        self.unary("ExpBackward", T::exp, Role::Output, |g, y| g * y)
    }

    /// The natural logarithm, elementwise (`torch.log`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![1.0f64], &[1]).ln();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    #[track_caller]
    pub fn ln(&self) -> Tensor<T> {
        // d ln(x) = dx / x
        self.unary("LogBackward", T::ln, Role::Input(0), |g, x| g / x)
    }

    /// ln(1 + x), accurate for small x (`torch.log1p`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![1e-10f64], &[1]).log1p();
    /// assert_eq!(y.item(), 1e-10 - 5e-21);
    /// ```
    #[track_caller]
    pub fn log1p(&self) -> Tensor<T> {
        // d ln(1 + x) = dx / (1 + x)
        self.unary("Log1PBackward", T::ln_1p, Role::Input(0), |g, x| {
            g / (x + T::one())
        })
    }

    /// The square root, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![9.0f32], &[1]).sqrt();
    /// assert_eq!(y.item(), 3.0);
    /// ```
    #[track_caller]
    pub fn sqrt(&self) -> Tensor<T> {
        // d √x = dx / (2 √x)
        self.unary("SqrtBackward", T::sqrt, Role::Output, |g, y| g / (y * T::of(2.0)))
    }

    /// |x|, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![-2.0f32, 3.0], &[2]).abs();
    /// assert_eq!(y.to_vec(), vec![2.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn abs(&self) -> Tensor<T> {
        // d |x| = sign(x) dx, with sign(0) = 0 and sign(NaN) = 0 (as
        // PyTorch's `sgn`)
        // (multiplied, also at 0, as PyTorch's `grad * sgn(x)`)
        let sign = |v: T| {
            Some(if v > T::zero() {
                T::one()
            } else if v < T::zero() {
                -T::one()
            } else {
                T::zero()
            })
        };
        self.unary("AbsBackward", T::abs, Role::Input(0), move |g, x| {
            g.mul_step(x, sign)
        })
    }

    /// sin(x), elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64], &[1]).sin();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    #[track_caller]
    pub fn sin(&self) -> Tensor<T> {
        // d sin(x) = cos(x) dx
        self.unary("SinBackward", T::sin, Role::Input(0), |g, x| g * x.cos())
    }

    /// cos(x), elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64], &[1]).cos();
    /// assert_eq!(y.item(), 1.0);
    /// ```
    #[track_caller]
    pub fn cos(&self) -> Tensor<T> {
        // d cos(x) = -sin(x) dx
        self.unary("CosBackward", T::cos, Role::Input(0), |g, x| -(g * x.sin()))
    }

    /// The hyperbolic tangent, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f32], &[1]).tanh();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    #[track_caller]
    pub fn tanh(&self) -> Tensor<T> {
        // d tanh(x) = (1 - tanh²(x)) dx
        self.unary("TanhBackward", T::tanh_op, Role::Output, tanh_backward)
    }

    /// The logistic function 1 / (1 + e⁻ˣ), elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f32], &[1]).sigmoid();
    /// assert_eq!(y.item(), 0.5);
    /// ```
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor<T> {
        // d σ(x) = σ(x) (1 - σ(x)) dx
        self.unary("SigmoidBackward", sigmoid, Role::Output, sigmoid_backward)
    }

    /// max(x, 0), elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![-1.0f32, 2.0], &[2]).relu();
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn relu(&self) -> Tensor<T> {
        // d relu(x) = [x > 0] dx (0 at x = 0); y > 0 iff x > 0. As
        // PyTorch's `clamp_min` and `threshold_backward`, relu(-0) = -0,
        // relu(NaN) = NaN, and the gradient passes where y is not <= 0, NaN
        // included.
        let f = |x: T| if x < T::zero() { T::zero() } else { x };
        let passes = |v: T| if v <= T::zero() { None } else { Some(T::one()) };
        self.unary("ReluBackward", f, Role::Output, move |g, y| g.mul_step(y, passes))
    }

    /// x for x > 0, `slope * x` otherwise (`F.leaky_relu`; PyTorch's
    /// default slope is 0.01).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![-1.0f64, 2.0], &[2]).leaky_relu(0.1);
    /// assert_eq!(y.to_vec(), vec![-0.1, 2.0]);
    /// ```
    #[track_caller]
    pub fn leaky_relu(&self, slope: T) -> Tensor<T> {
        // d leaky_relu(x) = (x > 0 ? 1 : slope) dx
        let f = move |x: T| if x > T::zero() { x } else { x * slope };
        let slopes = move |v: T| Some(if v > T::zero() { T::one() } else { slope });
        self.unary("LeakyReluBackward", f, Role::Input(0), move |g, x| {
            g.mul_step(x, slopes)
        })
    }

    /// x clamped to [min, max], elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![-2.0f32, 0.5, 2.0], &[3]).clamp(-1.0, 1.0);
    /// assert_eq!(y.to_vec(), vec![-1.0, 0.5, 1.0]);
    /// ```
    ///
    /// A NaN bound makes every element NaN, with gradient 0, as PyTorch.
    ///
    /// **Panics** if `min > max`.
    #[track_caller]
    pub fn clamp(&self, min: T, max: T) -> Tensor<T> {
        let nan_bound = min.is_nan() || max.is_nan();
        assert!(
            nan_bound || min <= max,
            "clamp: min {min} is greater than max {max}"
        );
        // d clamp(x) = [min < x < max] dx: 0 at the bounds themselves, as
        // PyTorch's clamp (2.15) with scalar bounds, and `hardtanh`
        // (NaN stays NaN, as PyTorch; the mask is 0 at a NaN x or bound.)
        let f = move |x: T| {
            if nan_bound {
                T::nan()
            } else if x < min {
                min
            } else if x > max {
                max
            } else {
                x
            }
        };
        let inside = move |v: T| (v > min && v < max).then_some(T::one());
        self.unary("ClampBackward", f, Role::Input(0), move |g, x| {
            g.mul_step(x, inside)
        })
    }

    /// xᵖ for a scalar exponent, elementwise (`torch.pow(x, p)`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![3.0f64], &[1]).powf(2.0);
    /// assert_eq!(y.item(), 9.0);
    /// ```
    #[track_caller]
    pub fn powf(&self, p: T) -> Tensor<T> {
        // d xᵖ = p xᵖ⁻¹ dx (0 for p = 0, also at x = 0). Exponents ±½ are
        // sqrt and 1/sqrt, as in PyTorch's kernel: x^½ of -inf is NaN and
        // of -0 is -0 (IEEE pow gives +inf and +0), so x^½'s gradient at -0
        // is -inf, through x^-½.
        let pow = move |x: T| {
            if p == T::of(0.5) {
                x.sqrt()
            } else if p == T::of(-0.5) {
                x.sqrt().recip()
            } else {
                x.powf(p)
            }
        };
        self.unary("PowBackward", pow, Role::Input(0), move |g, x| {
            if p == T::zero() {
                g * T::zero()
            } else {
                g * x.powf(p - T::one()) * p
            }
        })
    }

    /// The error function, elementwise (`torch.erf`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64], &[1]).erf();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    #[track_caller]
    pub fn erf(&self) -> Tensor<T> {
        // d erf(x) = 2/√π e^(-x²) dx
        let two_over_sqrt_pi = T::of(std::f64::consts::FRAC_2_SQRT_PI);
        self.unary("ErfBackward", Float::erf, Role::Input(0), move |g, x| {
            g * (-(x * x)).exp() * two_over_sqrt_pi
        })
    }

    /// The Gaussian error linear unit x Φ(x), with the exact erf form
    /// (PyTorch's default `approximate='none'`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64, 1.0], &[2]).gelu();
    /// assert!((y.to_vec()[1] - 0.8413447460685429).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn gelu(&self) -> Tensor<T> {
        // gelu(x) = x (1 + erf(x / √2)) / 2: a composite, so its gradient
        // (Φ(x) + x φ(x)) comes from erf's and mul's.
        let half = T::of(0.5);
        self * ((self * frac_1_sqrt_2::<T>()).erf() + T::one()) * half
    }

    /// ln(1 + eˣ), and x itself above 20 (`F.softplus` with PyTorch's
    /// defaults beta = 1, threshold = 20).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64, 30.0], &[2]).softplus();
    /// assert_eq!(y.to_vec(), vec![2f64.ln(), 30.0]);
    /// ```
    #[track_caller]
    pub fn softplus(&self) -> Tensor<T> {
        // d softplus(x) = σ(x) dx, and dx above the threshold
        let threshold = T::of(20.0);
        let f = move |x: T| if x > threshold { x } else { x.exp().ln_1p() };
        self.unary("SoftplusBackward", f, Role::Input(0), move |g, x| {
            let linear = x.constant_map(|v| if v > threshold { T::one() } else { T::zero() });
            let slope = x.sigmoid() * (-&linear + T::one()) + linear;
            g * slope
        })
    }
}

/// `g (1 - y²)`, the gradient of `y = tanh(x)`, in one pass (one buffer
/// instead of four: W1's backward is mostly this). Differentiable, for
/// `create_graph`: by `1 - y²` in `g` and `-2 g y` in `y`.
#[track_caller]
fn tanh_backward<T: Float>(g: Tensor<T>, y: &Tensor<T>) -> Tensor<T> {
    let (g, out) = match zip_reusing_operand("tanh_backward", g, y, true, |g, y| g * (T::one() - y * y)) {
        Ok(done) => return done,
        Err(rest) => rest,
    };
    let saves = [Role::Input(0), Role::Input(1)];
    record("TanhBackwardBackward", &[&g, y], out, &saves, |ctx, gg| {
        let y = ctx.input(1);
        smallvec![
            ctx.needs_grad(0).then(|| tanh_backward(gg.clone(), &y)),
            ctx.needs_grad(1).then(|| gg * ctx.input(0) * &y * T::of(-2.0)),
        ]
    })
}

/// `g y (1 - y)`, the gradient of `y = σ(x)`, in one pass. Differentiable:
/// by `y (1 - y)` in `g` and `g (1 - 2y)` in `y`.
#[track_caller]
fn sigmoid_backward<T: Float>(g: Tensor<T>, y: &Tensor<T>) -> Tensor<T> {
    let (g, out) = match zip_reusing_operand("sigmoid_backward", g, y, true, |g, y| g * y * (T::one() - y)) {
        Ok(done) => return done,
        Err(rest) => rest,
    };
    let saves = [Role::Input(0), Role::Input(1)];
    record("SigmoidBackwardBackward", &[&g, y], out, &saves, |ctx, gg| {
        let y = ctx.input(1);
        smallvec![
            ctx.needs_grad(0).then(|| sigmoid_backward(gg.clone(), &y)),
            ctx.needs_grad(1)
                .then(|| gg * ctx.input(0) * (&y * T::of(-2.0) + T::one())),
        ]
    })
}

/// The logistic function, without overflow for large |x|.
#[track_caller]
pub(crate) fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

#[cfg(test)]
mod tests {
    use super::sigmoid;

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(-1000.0f64), 0.0);
        assert_eq!(sigmoid(1000.0f64), 1.0);
        assert_eq!(sigmoid(0.0f32), 0.5);
    }
}
