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

    /// `c = a b` for an `m × k` matrix at `a` and a `k × n` matrix at `b`,
    /// with any element strides (row stride, column stride), written into
    /// `c` (which need not be initialised).
    ///
    /// # Safety
    /// Every element the strides reach must lie inside its allocation, and
    /// `c`'s `m × n` elements must not alias each other or `a` or `b`.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        a_strides: [isize; 2],
        b: *const Self,
        b_strides: [isize; 2],
        c: *mut Self,
        c_strides: [isize; 2],
    );
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
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        [rsa, csa]: [isize; 2],
        b: *const Self,
        [rsb, csb]: [isize; 2],
        c: *mut Self,
        [rsc, csc]: [isize; 2],
    ) {
        matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc);
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
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        [rsa, csa]: [isize; 2],
        b: *const Self,
        [rsb, csb]: [isize; 2],
        c: *mut Self,
        [rsc, csc]: [isize; 2],
    ) {
        matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc);
    }
}
