//! The element types a [`Tensor`](crate::Tensor) can hold: `f32` and `f64`.

use std::fmt::{Debug, Display};
use std::iter::Sum;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: `f32` or `f64` (sealed).
///
/// Generic code can use everything `num_traits::Float` offers:
///
/// ```
/// use tapegrad::prelude::*;
/// fn halve<T: Float>(x: &Tensor<T>) -> Tensor<T> {
///     x * (T::one() / (T::one() + T::one()))
/// }
/// assert_eq!(halve(&Tensor::<f32>::from_vec(vec![4.0], &[1])).to_vec(), vec![2.0]);
/// ```
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + 'static
    + Debug
    + Display
    + Default
    + Sum
    + sealed::Sealed
{
    /// The type's name, as used in messages (`"f32"`, `"f64"`).
    const DTYPE: &'static str;

    /// Converts an `f64` (rounding to nearest for `f32`): `T::of(0.5)`.
    fn of(v: f64) -> Self;

    /// Converts to `f64` (exact).
    fn as_f64(self) -> f64;

    /// The error function.
    fn erf(self) -> Self;
}

impl Float for f32 {
    const DTYPE: &'static str = "f32";
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl Float for f64 {
    const DTYPE: &'static str = "f64";
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
}
