//! Elementwise functions of one tensor. Each rule saves the cheaper of input
//! and output: `exp` and `tanh` need only their output.

use crate::autograd::node::{record, Save};
use crate::ops::kernels::map;
use crate::{Float, Tensor};
use smallvec::smallvec;

impl<T: Float> Tensor<T> {
    /// eˣ, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f64], &[1]).exp();
    /// assert_eq!(y.item(), 1.0);
    /// ```
    pub fn exp(&self) -> Tensor<T> {
        // d exp(x) = exp(x) dx
        let out = map(&self.value(), T::exp);
        record("ExpBackward", &[self], out, &[Save::Output], |ctx, g| {
            smallvec![Some(g * ctx.output())]
        })
    }

    /// The natural logarithm, elementwise (`torch.log`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![1.0f64], &[1]).ln();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    pub fn ln(&self) -> Tensor<T> {
        // d ln(x) = dx / x
        let out = map(&self.value(), T::ln);
        record("LogBackward", &[self], out, &[Save::Input(0)], |ctx, g| {
            smallvec![Some(g / ctx.input(0))]
        })
    }

    /// The hyperbolic tangent, elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![0.0f32], &[1]).tanh();
    /// assert_eq!(y.item(), 0.0);
    /// ```
    pub fn tanh(&self) -> Tensor<T> {
        // d tanh(x) = (1 - tanh²(x)) dx
        let out = map(&self.value(), T::tanh);
        record("TanhBackward", &[self], out, &[Save::Output], |ctx, g| {
            let y = ctx.output();
            smallvec![Some(g * (Tensor::scalar(T::one()) - &y * &y))]
        })
    }

    /// max(x, 0), elementwise.
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![-1.0f32, 2.0], &[2]).relu();
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0]);
    /// ```
    pub fn relu(&self) -> Tensor<T> {
        // d relu(x) = [x > 0] dx (0 at x = 0, as PyTorch)
        let out = map(&self.value(), |x| if x > T::zero() { x } else { T::zero() });
        record("ReluBackward", &[self], out, &[Save::Output], |ctx, g| {
            smallvec![Some(g * ctx.output().positive_mask())]
        })
    }

    /// xᵖ for a scalar exponent, elementwise (`torch.pow(x, p)`).
    ///
    /// ```
    /// let y = tapegrad::Tensor::from_vec(vec![3.0f64], &[1]).powf(2.0);
    /// assert_eq!(y.item(), 9.0);
    /// ```
    pub fn powf(&self, p: T) -> Tensor<T> {
        // d xᵖ = p xᵖ⁻¹ dx
        let out = map(&self.value(), |x| x.powf(p));
        record("PowBackward", &[self], out, &[Save::Input(0)], move |ctx, g| {
            if p == T::zero() {
                return smallvec![Some(g * T::zero())];
            }
            smallvec![Some(g * ctx.input(0).powf(p - T::one()) * p)]
        })
    }

    /// 1 where the element is > 0, else 0: a constant (never recorded), for
    /// the derivative of `relu`, which is 0 almost everywhere.
    pub(crate) fn positive_mask(&self) -> Tensor<T> {
        let one = T::one();
        Tensor::from_value(map(
            &self.value(),
            |x| if x > T::zero() { one } else { T::zero() },
        ))
    }
}
