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
    ///
    /// ```
    /// use tapegrad::Float;
    /// assert_eq!((f32::DTYPE, f64::DTYPE), ("f32", "f64"));
    /// ```
    const DTYPE: &'static str;

    /// Converts an `f64` (rounding to nearest for `f32`): `T::of(0.5)`.
    ///
    /// ```
    /// use tapegrad::Float;
    /// assert_eq!(f32::of(0.1), 0.1f32);
    /// assert_eq!(f64::of(0.1), 0.1f64);
    /// ```
    fn of(v: f64) -> Self;

    /// Converts to `f64` (exact).
    ///
    /// ```
    /// use tapegrad::Float;
    /// assert_eq!(0.5f32.as_f64(), 0.5);
    /// assert_eq!(0.1f32.as_f64(), 0.1f32 as f64); // the f32 value, not 0.1
    /// ```
    fn as_f64(self) -> f64;

    /// The error function.
    ///
    /// ```
    /// use tapegrad::Float;
    /// assert_eq!(Float::erf(0.0f64), 0.0);
    /// assert!((Float::erf(1.0f64) - 0.8427007929497149).abs() < 1e-15);
    /// assert_eq!(Float::erf(-1.0f32), -Float::erf(1.0f32)); // odd
    /// ```
    fn erf(self) -> Self;

    /// tanh as the `tanh` op computes it: the standard library's for `f64`;
    /// for `f32` a rational approximation that the compiler vectorises
    /// (at most 4e-7 from the exact value, 7 ulp; libm's `tanhf` took 30%
    /// of W4's time).
    #[doc(hidden)]
    fn tanh_op(self) -> Self;

    /// exp as tiled attention computes it on its score tiles: the standard
    /// library's for `f64`; for `f32` a polynomial that the compiler
    /// vectorises (within 2 ulp; libm's `expf` took a fifth of the tiled
    /// kernel's time), exactly 0 below -87.3 (and for -∞).
    #[doc(hidden)]
    fn exp_op(self) -> Self;

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

/// The two implementations differ only in the functions they call.
macro_rules! impl_float {
    ($t:ty, $erf:path, $tanh:path, $exp:path, $gemm:path) => {
        impl Float for $t {
            const DTYPE: &'static str = stringify!($t);
            #[inline]
            fn of(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn tanh_op(self) -> Self {
                $tanh(self)
            }
            #[inline]
            fn exp_op(self) -> Self {
                $exp(self)
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
                // SAFETY: the caller's promise (see the trait).
                unsafe { $gemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
            }
        }
    };
}

impl_float!(f32, libm::erff, tanh_f32, exp_f32, matrixmultiply::sgemm);
impl_float!(f64, libm::erf, f64::tanh, f64::exp, matrixmultiply::dgemm);

/// tanh for `f32` as a 13/6 rational function of x on [-7.9, 7.9] (beyond,
/// tanh is 1 to within f32's precision), the approximation Eigen uses; x
/// itself below 4e-4 and ±1 above 9. Selects, not jumps, so a loop over it
/// vectorises.
#[inline]
fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const TINY: f32 = 4e-4;
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = p * x2 - 8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619e-4;
    p = p * x2 + 4.893_524_6e-3;
    p *= c;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    if x.abs() < TINY {
        x
    } else if x.abs() > 9.0 {
        // Exactly ±1, as the correctly rounded tanh is out there.
        1.0f32.copysign(x)
    } else {
        p / q
    }
}

/// exp for `f32`, Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2`,
/// `e^r` by a degree-7 polynomial, times `2^n` built in the exponent bits.
/// `n` is rounded by adding and subtracting 1.5 · 2²³ (no `round` call,
/// which SSE2 lacks), and the ends are selects, not jumps, so a loop over
/// it vectorises. 0 below -87.3 (where `2^n` would leave the normal range,
/// and for -∞); inputs above 88 are taken as 88.
#[inline]
fn exp_f32(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2²³
    let c = x.clamp(-87.3, 88.0);
    let t = c * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = c - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n sits in the low bits of t's mantissa, offset by 2²² (the 0.5 of 1.5 · 2²³)
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    match x {
        _ if x.is_nan() => x,
        _ if x < -87.3 => 0.0,
        _ => y * scale,
    }
}

#[cfg(test)]
mod tests {
    use super::{exp_f32, tanh_f32};

    #[test]
    fn f32_exp_is_within_2_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in -1_984_000..=1_000_000 {
            let x = i as f32 * 4.4e-5; // [-87.3, 44]
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            worst = worst.max((exp_f32(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "max error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn f32_tanh_is_within_4e_7_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 6e-5; // [-12, 12]
            worst = worst.max((tanh_f32(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(worst < 4e-7, "max error {worst:e}");
        assert_eq!(tanh_f32(1e-5), 1e-5);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }
}
