//! [Proptest](https://docs.rs/proptest/1) strategies for shapes and
//! tensors, and a gradient-check helper that turns a gradient property test
//! into three lines (feature `proptest`).
//!
//! ```
//! use proptest::prelude::*;
//! use tapegrad::testing::{assert_gradcheck, shape, tensor_f64};
//!
//! proptest! {
//!     # /*
//!     #[test]
//!     # */
//!     fn tanh_of_square_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
//!         assert_gradcheck(|x| (&x[0] * &x[0]).tanh(), &[x])?;
//!     }
//! }
//! # fn main() { tanh_of_square_gradient(); }
//! ```
//!
//! What is here:
//! - shapes: [`shape`], [`shape_with`];
//! - pairs of shapes that an op accepts together: [`broadcast_pair`]
//!   (NumPy broadcasting) and [`matmul_pair`] (`matmul`'s rules, 1-D
//!   operands and broadcast batch dimensions included);
//! - tensors with values in a range: [`tensor`] (generic over
//!   [`Float`]), [`tensor_f64`], [`tensor_f32`], and
//!   [`tensor_of_shape`] for a shape already drawn;
//! - gradient checks that report a [`TestCaseError`]: [`assert_gradcheck`],
//!   [`assert_gradcheck_with`].
//!
//! Tensors stay small ([`MAX_NUMEL`] elements at most) so that a
//! [`gradcheck`], which costs one backward per output
//! element and two forwards per input element, stays fast. Sizes start at 1
//! unless asked otherwise ([`shape_with`]). When a case fails, proptest
//! shrinks it (towards fewer and smaller dimensions) and prints the smallest
//! failing input it found.

use crate::{gradcheck, Float, GradcheckOptions, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::ops::{Range, RangeInclusive};

/// The largest number of elements of a shape drawn by [`shape`],
/// [`broadcast_pair`] or [`matmul_pair`] (each operand of a pair included),
/// so of a tensor drawn on one of them.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
/// let mut runner = TestRunner::deterministic();
/// let s = tapegrad::testing::shape(6, 10).new_tree(&mut runner).unwrap().current();
/// assert!(s.iter().product::<usize>() <= tapegrad::testing::MAX_NUMEL);
/// ```
pub const MAX_NUMEL: usize = 24;

/// Reduces the sizes of `dims`, the last ones first but none below
/// `min_size` (nor below 1), until their product is at most `budget`; if the
/// smallest sizes still hold too many elements, drops the last dimensions,
/// keeping at least `min_dims`. A 0 size stays (the tensor is empty).
fn cap_numel(dims: &mut Vec<usize>, budget: usize, min_size: usize, min_dims: usize) {
    let floor = min_size.max(1);
    let mut numel = 1usize;
    for d in dims.iter_mut() {
        if numel == 0 {
            return;
        }
        *d = (*d).min((budget / numel).max(floor));
        numel = numel.saturating_mul(*d);
    }
    while numel > budget && dims.len() > min_dims {
        let last = dims.pop().expect("more than min_dims dimensions");
        numel /= last;
    }
}

/// Shapes of `0..=max_dims` dimensions, each of size `1..=max_size`, with at
/// most [`MAX_NUMEL`] elements (sizes are reduced, the last dimensions first,
/// to fit). Shape `[]` (a scalar) is included.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::shape;
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn shapes_are_small(s in shape(3, 4)) {
///         prop_assert!(s.len() <= 3 && s.iter().all(|&d| (1..=4).contains(&d)));
///         prop_assert!(s.iter().product::<usize>() <= tapegrad::testing::MAX_NUMEL);
///     }
/// }
/// # fn main() { shapes_are_small(); }
/// ```
///
/// **Panics** if `max_size` is 0.
#[track_caller]
pub fn shape(max_dims: usize, max_size: usize) -> impl Strategy<Value = Vec<usize>> + Clone {
    shape_with(0..=max_dims, 1..=max_size, MAX_NUMEL)
}

/// Shapes with a number of dimensions in `ndims`, sizes in `sizes` (which may
/// include 0, for empty tensors) and at most `max_numel` elements: sizes are
/// reduced to fit, the last dimensions first, but never below the range;
/// where even the smallest sizes hold too many elements, the last dimensions
/// are dropped, down to the smallest number in `ndims` (and only then may a
/// shape exceed `max_numel`).
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::shape_with;
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn matrices_or_more(s in shape_with(2..=4, 2..=3, 24)) {
///         prop_assert!((2..=4).contains(&s.len()));
///         prop_assert!(s.iter().product::<usize>() <= 24);
///     }
/// }
/// # fn main() { matrices_or_more(); }
/// ```
///
/// **Panics** if `ndims` or `sizes` is empty.
#[track_caller]
pub fn shape_with(
    ndims: RangeInclusive<usize>,
    sizes: RangeInclusive<usize>,
    max_numel: usize,
) -> impl Strategy<Value = Vec<usize>> + Clone {
    assert!(
        !ndims.is_empty(),
        "shape_with: the range of ndims {ndims:?} is empty"
    );
    assert!(
        !sizes.is_empty(),
        "shape_with: the range of sizes {sizes:?} is empty"
    );
    let (min_dims, min_size) = (*ndims.start(), *sizes.start());
    vec(sizes, ndims).prop_map(move |mut dims| {
        cap_numel(&mut dims, max_numel, min_size, min_dims);
        dims
    })
}

/// The random choices behind a broadcast pair: the shape both operands
/// broadcast to, which dimensions each operand has as size 1, and how many
/// leading dimensions each one lacks.
type RawPair = (Vec<usize>, Vec<bool>, Vec<bool>, usize, usize);

fn raw_pair(max_dims: usize, max_size: usize) -> impl Strategy<Value = RawPair> + Clone {
    let ones = || vec(prop::bool::weighted(0.3), max_dims);
    // Mostly at least one dimension: pairs of scalars say little.
    let ndims = prop_oneof![1 => Just(0), 9 => 1..=max_dims.max(1)].prop_map(move |n| n.min(max_dims));
    let size = 1..=max_size.max(1);
    (
        ndims.prop_flat_map(move |n| vec(size.clone(), n)),
        ones(),
        ones(),
        prop_oneof![3 => Just(0usize), 1 => 0..=max_dims],
        prop_oneof![3 => Just(0usize), 1 => 0..=max_dims],
    )
}

/// A broadcast pair from its random choices, the common shape holding at
/// most `budget` elements.
fn pair_from_raw(
    (mut out, ones_a, ones_b, drop_a, drop_b): RawPair,
    budget: usize,
) -> (Vec<usize>, Vec<usize>) {
    cap_numel(&mut out, budget, 1, 0);
    let operand = |ones: &[bool], drop: usize| -> Vec<usize> {
        let drop = drop.min(out.len());
        (drop..out.len())
            .map(|i| if ones[i] { 1 } else { out[i] })
            .collect()
    };
    (operand(&ones_a, drop_a), operand(&ones_b, drop_b))
}

/// Pairs of shapes that broadcast together (as NumPy does), of at most
/// `max_dims` dimensions of size at most `max_size`: either operand may lack
/// leading dimensions or have size 1 where the other does not. Equal shapes
/// are among them; so are pairs where both have size 1 in a dimension.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::{testing::broadcast_pair, Tensor};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn add_broadcasts((a, b) in broadcast_pair(3, 4)) {
///         let sum = Tensor::<f64>::zeros(&a) + Tensor::zeros(&b);
///         prop_assert_eq!(sum.ndim(), a.len().max(b.len()));
///     }
/// }
/// # fn main() { add_broadcasts(); }
/// ```
pub fn broadcast_pair(
    max_dims: usize,
    max_size: usize,
) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> + Clone {
    raw_pair(max_dims, max_size).prop_map(|raw| pair_from_raw(raw, MAX_NUMEL))
}

/// Pairs of shapes `(a, b)` that `a.matmul(&b)` accepts, in all of PyTorch's
/// forms: 1-D × 1-D (a dot product), 1-D × 2-D, 2-D × 1-D, 2-D × 2-D, and
/// batched operands (up to `max_batch_dims` batch dimensions, broadcasting
/// against each other as in [`broadcast_pair`]) against batched, 2-D or 1-D
/// ones. Matrix sizes are at most `max_size`, and each operand has at most
/// [`MAX_NUMEL`] elements.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::{testing::matmul_pair, Tensor};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn matmul_accepts((a, b) in matmul_pair(2, 3)) {
///         let _ = Tensor::<f64>::ones(&a).matmul(&Tensor::ones(&b)); // does not panic
///     }
/// }
/// # fn main() { matmul_accepts(); }
/// ```
pub fn matmul_pair(
    max_batch_dims: usize,
    max_size: usize,
) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> + Clone {
    let size = 1..=max_size.max(1);
    // 0: a vector, 1: a matrix, 2: a batch of matrices.
    let kind = || prop_oneof![1 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8)];
    (
        (size.clone(), size.clone(), size),
        kind(),
        kind(),
        raw_pair(max_batch_dims, max_size),
    )
        .prop_map(|((m, k, n), kind_a, kind_b, raw)| {
            let mut km = vec![k, m];
            cap_numel(&mut km, MAX_NUMEL, 1, 2);
            let (k, m) = (km[0], km[1]);
            let n = n.min(MAX_NUMEL / k);
            let (batch_a, batch_b) = pair_from_raw(raw, MAX_NUMEL / (m * k).max(k * n));
            // A vector operand is always of length k (the inner dimension).
            let operand = |kind: u8, batch: Vec<usize>, rows: usize, cols: usize| match kind {
                0 => vec![k],
                1 => vec![rows, cols],
                _ => batch.into_iter().chain([rows, cols]).collect(),
            };
            (operand(kind_a, batch_a, m, k), operand(kind_b, batch_b, k, n))
        })
}

/// Tensors whose shape `shape` draws and whose values lie in `range`
/// (half-open, as proptest's ranges), for `f32` or `f64`. The tensor is a
/// leaf that does not require grad.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::{testing::{shape, tensor}, Tensor};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn exp_is_positive(x in tensor::<f32>(shape(2, 3), -5.0..5.0)) {
///         prop_assert!(x.exp().to_vec().iter().all(|&v| v > 0.0));
///     }
/// }
/// # fn main() { exp_is_positive(); }
/// ```
///
/// **Panics** if `range` is empty.
#[track_caller]
pub fn tensor<T: Float>(
    shape: impl Strategy<Value = Vec<usize>>,
    range: Range<T>,
) -> impl Strategy<Value = Tensor<T>> {
    assert!(
        range.start < range.end,
        "tensor: the range of values {range:?} is empty"
    );
    shape.prop_flat_map(move |s| tensor_of_shape(&s, range.clone()))
}

/// Tensors of the given shape with values in `range` (half-open): for a
/// shape drawn earlier, as with `prop_flat_map` over a pair of shapes.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::{broadcast_pair, tensor_of_shape};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn mul_commutes(
///         (a, b) in broadcast_pair(3, 3).prop_flat_map(|(a, b)| {
///             (tensor_of_shape::<f64>(&a, -1.0..1.0), tensor_of_shape::<f64>(&b, -1.0..1.0))
///         })
///     ) {
///         prop_assert_eq!((&a * &b).to_vec(), (&b * &a).to_vec());
///     }
/// }
/// # fn main() { mul_commutes(); }
/// ```
///
/// **Panics** if `range` is empty.
#[track_caller]
pub fn tensor_of_shape<T: Float>(
    shape: &[usize],
    range: Range<T>,
) -> impl Strategy<Value = Tensor<T>> + Clone {
    assert!(
        range.start < range.end,
        "tensor_of_shape: the range of values {range:?} is empty"
    );
    let shape = shape.to_vec();
    let (start, end) = (range.start, range.end);
    // Drawn as f64 and rounded: an f32 that rounds up to `end` becomes
    // `start`, so the range stays half-open.
    let values = vec(start.as_f64()..end.as_f64(), shape.iter().product::<usize>());
    values.prop_map(move |v| {
        let v = v
            .into_iter()
            .map(|x| {
                let x = T::of(x);
                if x < end {
                    x
                } else {
                    start
                }
            })
            .collect();
        Tensor::from_vec(v, &shape)
    })
}

/// [`tensor`] for `f64`, the type [`gradcheck`] works in.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::{shape, tensor_f64};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn values_in_range(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
///         prop_assert!(x.to_vec().iter().all(|v| (-2.0..2.0).contains(v)));
///     }
/// }
/// # fn main() { values_in_range(); }
/// ```
///
/// **Panics** if `range` is empty.
pub fn tensor_f64(
    shape: impl Strategy<Value = Vec<usize>>,
    range: Range<f64>,
) -> impl Strategy<Value = Tensor<f64>> {
    tensor(shape, range)
}

/// [`tensor`] for `f32`.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::{shape, tensor_f32};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn relu_is_nonnegative(x in tensor_f32(shape(3, 4), -2.0..2.0)) {
///         prop_assert!(x.relu().to_vec().iter().all(|&v| v >= 0.0));
///     }
/// }
/// # fn main() { relu_is_nonnegative(); }
/// ```
///
/// **Panics** if `range` is empty.
pub fn tensor_f32(
    shape: impl Strategy<Value = Vec<usize>>,
    range: Range<f32>,
) -> impl Strategy<Value = Tensor<f32>> {
    tensor(shape, range)
}

/// [`gradcheck`]s `f` at `inputs` with the default
/// [`GradcheckOptions`], as a proptest assertion: a mismatch becomes a
/// [`TestCaseError::fail`] with the [`GradcheckError`](crate::GradcheckError)'s
/// message, so proptest shrinks the input and reports it.
///
/// Every input is checked: the helper makes a fresh leaf that requires grad
/// of each (the caller's tensors are left as they are). To hold a tensor
/// fixed, capture it in `f` instead of passing it.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::testing::{assert_gradcheck, shape, tensor_f64};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn sigmoid_times_sin(
///         x in tensor_f64(shape(2, 4), -3.0..3.0),
///         w in tensor_f64(shape(0, 1), -3.0..3.0), // a scalar
///     ) {
///         assert_gradcheck(|p| p[0].sigmoid() * p[1].sin(), &[x, w])?;
///     }
/// }
/// # fn main() { sigmoid_times_sin(); }
/// ```
///
/// A wrong gradient fails the case:
///
/// ```
/// use tapegrad::Tensor;
/// let x = Tensor::from_vec(vec![0.5f64, 2.0], &[2]);
/// // x · detach(x) is x², but its backward sees one factor only: x, not 2x
/// let err = tapegrad::testing::assert_gradcheck(|p| &p[0] * p[0].detach(), &[x]).unwrap_err();
/// // Case failed: gradcheck: Jacobian mismatch for input 0, output element 0,
/// // input element 0: analytic 0.5 vs numeric 0.9999999999871223 (the function
/// // under test records: MulBackward)
/// assert!(err.to_string().contains("analytic 0.5 vs numeric 0.99999"));
/// assert!(err.to_string().contains("the function under test records: MulBackward"));
/// ```
pub fn assert_gradcheck<F>(f: F, inputs: &[Tensor<f64>]) -> Result<(), TestCaseError>
where
    F: Fn(&[Tensor<f64>]) -> Tensor<f64>,
{
    assert_gradcheck_with(f, inputs, GradcheckOptions::default())
}

/// [`assert_gradcheck`] with the given tolerances and step.
///
/// ```
/// use proptest::prelude::*;
/// use tapegrad::prelude::*;
/// use tapegrad::testing::{assert_gradcheck_with, shape, tensor_f64};
///
/// proptest! {
///     # /*
///     #[test]
///     # */
///     fn steep_exp(x in tensor_f64(shape(1, 3), 5.0..8.0)) {
///         let opts = GradcheckOptions { eps: 1e-7, atol: 1e-4, rtol: 1e-3 };
///         assert_gradcheck_with(|x| x[0].exp(), &[x], opts)?;
///     }
/// }
/// # fn main() { steep_exp(); }
/// ```
pub fn assert_gradcheck_with<F>(
    f: F,
    inputs: &[Tensor<f64>],
    opts: GradcheckOptions,
) -> Result<(), TestCaseError>
where
    F: Fn(&[Tensor<f64>]) -> Tensor<f64>,
{
    if inputs.is_empty() {
        return Err(TestCaseError::fail(
            "assert_gradcheck: no inputs, gradcheck would check nothing",
        ));
    }
    let leaves: Vec<Tensor<f64>> = inputs
        .iter()
        .map(|x| x.detach().set_requires_grad(true))
        .collect();
    gradcheck(&f, &leaves, opts).map_err(|e| {
        // Name the function under test by the ops it records.
        let ops = crate::viz::op_names(&f(&leaves)).join(", ");
        TestCaseError::fail(format!("{e} (the function under test records: {ops})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_numel_reduces_the_last_dimensions_first() {
        let capped = |mut d: Vec<usize>, min_size, min_dims| {
            cap_numel(&mut d, 24, min_size, min_dims);
            d
        };
        assert_eq!(capped(vec![4, 4, 4], 1, 0), [4, 4, 1]);
        assert_eq!(capped(vec![3, 3, 3], 1, 0), [3, 3, 2]);
        assert_eq!(capped(vec![0, 9, 9], 1, 0), [0, 9, 9]);
        // not below the smallest size: a dimension is dropped instead
        assert_eq!(capped(vec![4, 4, 4], 2, 0), [4, 4]);
        assert_eq!(capped(vec![4, 4, 4], 2, 3), [4, 4, 2]);
        assert_eq!(capped(vec![3, 3, 3], 3, 3), [3, 3, 3]);
    }
}
