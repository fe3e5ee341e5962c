//! Property tests of every op over random shapes and values, with the
//! crate's own strategies (`tapegrad::testing`): gradients against finite
//! differences (gradcheck, f64), f32 forwards against f64, and broadcasting
//! against NumPy's rule.
//!
//! Values are drawn where the op is smooth: positive bases for ln, sqrt,
//! powf and pow, denominators away from 0, values at least 0.05 away from
//! the kinks of abs, relu, leaky_relu, clamp and softplus, and no ties for
//! maximum, minimum, max_dim and min_dim. The choices made at kinks, ties and
//! zero bases of pow have tests of their own near the end, and so do tensors
//! with a dimension of size 0.

use proptest::collection::vec;
use proptest::prelude::*;
use std::ops::Range;
use tapegrad::ndarray::{ArrayD, IxDyn};
use tapegrad::prelude::*;
use tapegrad::testing::{
    assert_gradcheck, broadcast_pair, matmul_pair, shape, shape_with, tensor_f64, tensor_of_shape, MAX_NUMEL,
};

/// Cases per property: enough to meet every form of an op, few enough for
/// the whole file to run in seconds.
const CASES: u32 = 32;

// ------------------------------------------------------------------ helpers

/// Shapes of 1 to 3 dimensions (for ops that take a dimension).
fn nd_shape() -> impl Strategy<Value = Vec<usize>> + Clone {
    shape_with(1..=3, 1..=4, MAX_NUMEL)
}

/// `f` of every element of `t`, as a new leaf.
fn map_values(t: &Tensor<f64>, f: impl Fn(f64) -> f64) -> Tensor<f64> {
    Tensor::from_vec(t.to_vec().into_iter().map(f).collect(), t.shape())
}

/// `v`, or `kink ± margin` if it is closer than `margin` to `kink`.
fn away(v: f64, kink: f64, margin: f64) -> f64 {
    if (v - kink).abs() >= margin {
        v
    } else if v >= kink {
        kink + margin
    } else {
        kink - margin
    }
}

/// A pair of tensors of broadcast-compatible shapes, values in the ranges.
fn broadcast_tensors(ra: Range<f64>, rb: Range<f64>) -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    broadcast_pair(3, 4)
        .prop_flat_map(move |(a, b)| (tensor_of_shape(&a, ra.clone()), tensor_of_shape(&b, rb.clone())))
}

/// A tensor, one of its dimensions, and a keepdim flag.
fn with_dim(
    shape: impl Strategy<Value = Vec<usize>>,
    range: Range<f64>,
) -> impl Strategy<Value = (Tensor<f64>, usize, bool)> {
    shape.prop_flat_map(move |s| (tensor_of_shape(&s, range.clone()), 0..s.len(), any::<bool>()))
}

/// A tensor of shape `s` whose values are distinct, at least 0.25 apart.
fn distinct_of_shape(s: &[usize]) -> impl Strategy<Value = Tensor<f64>> {
    let n: usize = s.iter().product();
    let grid: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 0.25).collect();
    let s = s.to_vec();
    (Just(grid).prop_shuffle(), -0.1..0.1f64)
        .prop_map(move |(v, shift)| Tensor::from_vec(v.into_iter().map(|x| x + shift).collect(), &s))
}

/// NumPy's broadcasting rule, written out independently of the crate:
/// right-align, pad with 1s, and in each dimension the sizes must agree or
/// one of them be 1.
fn numpy_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let pad = |s: &[usize]| {
        std::iter::repeat_n(1, n - s.len())
            .chain(s.iter().copied())
            .collect::<Vec<_>>()
    };
    pad(a)
        .into_iter()
        .zip(pad(b))
        .map(|(x, y)| match (x, y) {
            _ if x == y => Some(x),
            (1, _) => Some(y),
            (_, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `torch.matmul`'s result shape, written out independently of the crate.
fn torch_matmul_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    match (a.len(), b.len()) {
        (1, 1) => vec![],
        (1, _) => {
            let mut s = b.to_vec();
            s.remove(s.len() - 2);
            s
        }
        (_, 1) => a[..a.len() - 1].to_vec(),
        _ => {
            let mut s = numpy_broadcast(&a[..a.len() - 2], &b[..b.len() - 2]).expect("batch dims broadcast");
            s.extend([a[a.len() - 2], b[b.len() - 1]]);
            s
        }
    }
}

/// The f32 cast of `x`, and that cast widened back to f64 (so that both
/// start from the same numbers).
fn cast(x: &Tensor<f64>) -> (Tensor<f64>, Tensor<f32>) {
    let narrow: Vec<f32> = x.to_vec().into_iter().map(|v| v as f32).collect();
    let wide = narrow.iter().map(|&v| v as f64).collect();
    (
        Tensor::from_vec(wide, x.shape()),
        Tensor::from_vec(narrow, x.shape()),
    )
}

/// Fails unless the f32 results agree with the f64 ones to 1e-4, relative
/// to max(|f64 value|, 1).
fn check_agree(what: &str, wide: &Tensor<f64>, narrow: &Tensor<f32>) -> Result<(), TestCaseError> {
    prop_assert_eq!(wide.shape(), narrow.shape(), "{}: shapes differ", what);
    for (i, (a, b)) in wide.to_vec().into_iter().zip(narrow.to_vec()).enumerate() {
        let err = (a - b as f64).abs();
        prop_assert!(
            err <= 1e-4 * a.abs().max(1.0),
            "{}: element {} is {} in f64 but {} in f32",
            what,
            i,
            a,
            b
        );
    }
    Ok(())
}

/// Evaluates `$body` once with each `$x` bound to the f64 widening of its
/// f32 cast and once with the f32 cast itself, and checks they agree.
macro_rules! assert_f32_agrees {
    (($($x:ident),+) => $body:expr) => {{
        let wide = { $(let $x = &cast(&$x).0;)+ $body };
        let narrow = { $(let $x = &cast(&$x).1;)+ $body };
        check_agree(stringify!($body), &wide, &narrow)?;
    }};
}

// ------------------------------------------------------------------- binary

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn add_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        assert_gradcheck(|p| &p[0] + &p[1], &[a, b])?;
    }

    #[test]
    fn sub_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        assert_gradcheck(|p| &p[0] - &p[1], &[a, b])?;
    }

    #[test]
    fn mul_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        assert_gradcheck(|p| &p[0] * &p[1], &[a, b])?;
    }

    #[test]
    fn div_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        let b = map_values(&b, |v| away(v, 0.0, 0.5)); // |denominator| >= 0.5
        assert_gradcheck(|p| &p[0] / &p[1], &[a, b])?;
    }

    #[test]
    fn pow_gradient((a, b) in broadcast_tensors(0.2..3.0, -2.0..2.0)) {
        assert_gradcheck(|p| p[0].pow(&p[1]), &[a, b])?;
    }

    #[test]
    fn maximum_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        // a on the grid 0.1 ℤ + 0.05, b on 0.1 ℤ: never closer than 0.05
        let a = map_values(&a, |v| (v * 10.0).round() / 10.0 + 0.05);
        let b = map_values(&b, |v| (v * 10.0).round() / 10.0);
        assert_gradcheck(|p| p[0].maximum(&p[1]), &[a, b])?;
    }

    #[test]
    fn minimum_gradient((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        let a = map_values(&a, |v| (v * 10.0).round() / 10.0 + 0.05);
        let b = map_values(&b, |v| (v * 10.0).round() / 10.0);
        assert_gradcheck(|p| p[0].minimum(&p[1]), &[a, b])?;
    }

    #[test]
    fn add_scalar_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| &p[0] + s, &[x])?;
    }

    #[test]
    fn sub_scalar_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| &p[0] - s, &[x])?;
    }

    #[test]
    fn mul_scalar_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| &p[0] * s, &[x])?;
    }

    #[test]
    fn div_scalar_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        let s = away(s, 0.0, 0.5);
        assert_gradcheck(|p| &p[0] / s, &[x])?;
    }

    #[test]
    fn scalar_add_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| s + &p[0], &[x])?;
    }

    #[test]
    fn scalar_sub_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| s - &p[0], &[x])?;
    }

    #[test]
    fn scalar_mul_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        assert_gradcheck(|p| s * &p[0], &[x])?;
    }

    #[test]
    fn scalar_div_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), s in -3.0..3.0f64) {
        let x = map_values(&x, |v| away(v, 0.0, 0.5)); // |denominator| >= 0.5
        assert_gradcheck(|p| s / &p[0], &[x])?;
    }

    #[test]
    fn neg_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        assert_gradcheck(|p| -&p[0], &[x])?;
    }
}

// -------------------------------------------------------------- elementwise

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn exp_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].exp(), &[x])?;
    }

    #[test]
    fn ln_gradient(x in tensor_f64(shape(3, 4), 0.1..3.0)) {
        assert_gradcheck(|p| p[0].ln(), &[x])?;
    }

    #[test]
    fn log1p_gradient(x in tensor_f64(shape(3, 4), -0.9..3.0)) {
        assert_gradcheck(|p| p[0].log1p(), &[x])?;
    }

    #[test]
    fn sqrt_gradient(x in tensor_f64(shape(3, 4), 0.1..3.0)) {
        assert_gradcheck(|p| p[0].sqrt(), &[x])?;
    }

    #[test]
    fn powf_gradient(x in tensor_f64(shape(3, 4), 0.2..3.0), e in -2.5..2.5f64) {
        assert_gradcheck(|p| p[0].powf(e), &[x])?;
    }

    #[test]
    fn powf_integer_exponent_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), e in 0..4i32) {
        // An integer exponent is defined for any base; x⁰ has gradient 0.
        assert_gradcheck(|p| p[0].powf(e as f64), &[x])?;
    }

    #[test]
    fn abs_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        let x = map_values(&x, |v| away(v, 0.0, 0.05));
        assert_gradcheck(|p| p[0].abs(), &[x])?;
    }

    #[test]
    fn relu_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        let x = map_values(&x, |v| away(v, 0.0, 0.05));
        assert_gradcheck(|p| p[0].relu(), &[x])?;
    }

    #[test]
    fn leaky_relu_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), slope in -0.5..0.5f64) {
        let x = map_values(&x, |v| away(v, 0.0, 0.05));
        assert_gradcheck(|p| p[0].leaky_relu(slope), &[x])?;
    }

    #[test]
    fn clamp_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0), min in -1.5..0.5f64, width in 0.2..2.0f64) {
        let max = min + width;
        let x = map_values(&x, |v| away(away(v, min, 0.05), max, 0.05));
        assert_gradcheck(|p| p[0].clamp(min, max), &[x])?;
    }

    #[test]
    fn sin_gradient(x in tensor_f64(shape(3, 4), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].sin(), &[x])?;
    }

    #[test]
    fn cos_gradient(x in tensor_f64(shape(3, 4), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].cos(), &[x])?;
    }

    #[test]
    fn tanh_gradient(x in tensor_f64(shape(3, 4), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].tanh(), &[x])?;
    }

    #[test]
    fn sigmoid_gradient(x in tensor_f64(shape(3, 4), -5.0..5.0)) {
        assert_gradcheck(|p| p[0].sigmoid(), &[x])?;
    }

    #[test]
    fn erf_gradient(x in tensor_f64(shape(3, 4), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].erf(), &[x])?;
    }

    #[test]
    fn gelu_gradient(x in tensor_f64(shape(3, 4), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].gelu(), &[x])?;
    }

    #[test]
    fn softplus_gradient(x in tensor_f64(shape(3, 4), -25.0..25.0)) {
        // across the threshold 20 where it switches to x (kept 0.05 away)
        let x = map_values(&x, |v| away(v, 20.0, 0.05));
        assert_gradcheck(|p| p[0].softplus(), &[x])?;
    }
}

// ------------------------------------------------------------------- matmul

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn matmul_gradient(
        (a, b) in matmul_pair(2, 3)
            .prop_flat_map(|(a, b)| (tensor_of_shape(&a, -1.0..1.0), tensor_of_shape(&b, -1.0..1.0)))
    ) {
        assert_gradcheck(|p| p[0].matmul(&p[1]), &[a, b])?;
    }

    #[test]
    fn matmul_shape_is_torchs((a, b) in matmul_pair(3, 4)) {
        prop_assert!(a.iter().product::<usize>() <= MAX_NUMEL && b.iter().product::<usize>() <= MAX_NUMEL);
        let out = Tensor::<f64>::ones(&a).matmul(&Tensor::ones(&b));
        let expected = torch_matmul_shape(&a, &b);
        prop_assert_eq!(out.shape(), expected.as_slice());
        // every element is a dot product of ones over the inner dimension
        let k = a[a.len() - 1] as f64;
        prop_assert!(out.to_vec().iter().all(|&v| v == k));
    }
}

// --------------------------------------------------------------- reductions

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn sum_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].sum(), &[x])?;
    }

    #[test]
    fn mean_gradient(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].mean(), &[x])?;
    }

    #[test]
    fn sum_dim_gradient((x, dim, keep) in with_dim(nd_shape(), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].sum_dim(dim, keep), &[x])?;
    }

    #[test]
    fn mean_dim_gradient((x, dim, keep) in with_dim(nd_shape(), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].mean_dim(dim, keep), &[x])?;
    }

    #[test]
    fn var_dim_gradient((x, dim, keep) in with_dim(shape_with(1..=3, 2..=4, MAX_NUMEL), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].var_dim(dim, keep), &[x])?;
    }

    #[test]
    fn logsumexp_dim_gradient((x, dim, keep) in with_dim(nd_shape(), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].logsumexp_dim(dim, keep), &[x])?;
    }

    #[test]
    fn max_dim_gradient(
        (x, dim, keep) in nd_shape().prop_flat_map(|s| (distinct_of_shape(&s), 0..s.len(), any::<bool>()))
    ) {
        assert_gradcheck(|p| p[0].max_dim(dim, keep), &[x])?;
    }

    #[test]
    fn min_dim_gradient(
        (x, dim, keep) in nd_shape().prop_flat_map(|s| (distinct_of_shape(&s), 0..s.len(), any::<bool>()))
    ) {
        assert_gradcheck(|p| p[0].min_dim(dim, keep), &[x])?;
    }
}

// -------------------------------------------------------------------- shape

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn reshape_gradient(
        (x, to) in shape(3, 4)
            .prop_flat_map(|s| {
                let n = s.len();
                (tensor_of_shape(&s, -2.0..2.0), Just(s).prop_shuffle(), vec(any::<bool>(), n), any::<bool>())
            })
            .prop_map(|(x, dims, merge, lead_one)| {
                // the dimensions shuffled, some neighbours merged, maybe a 1 in front
                let mut to: Vec<usize> = Vec::new();
                for (d, m) in dims.into_iter().zip(merge) {
                    match to.last_mut() {
                        Some(last) if m => *last *= d,
                        _ => to.push(d),
                    }
                }
                if lead_one {
                    to.insert(0, 1);
                }
                (x, to)
            })
    ) {
        assert_gradcheck(|p| p[0].reshape(&to), &[x])?;
    }

    #[test]
    fn transpose_gradient(
        (x, d0, d1) in nd_shape().prop_flat_map(|s| (tensor_of_shape(&s, -2.0..2.0), 0..s.len(), 0..s.len()))
    ) {
        assert_gradcheck(|p| p[0].transpose(d0, d1), &[x])?;
    }

    #[test]
    fn t_gradient(x in tensor_f64(shape_with(0..=2, 1..=4, MAX_NUMEL), -2.0..2.0)) {
        assert_gradcheck(|p| p[0].t(), &[x])?;
    }

    #[test]
    fn permute_gradient(
        (x, order) in shape(3, 4).prop_flat_map(|s| {
            let n = s.len();
            (tensor_of_shape(&s, -2.0..2.0), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        assert_gradcheck(|p| p[0].permute(&order), &[x])?;
    }

    #[test]
    fn unsqueeze_gradient(
        (x, dim) in shape(3, 4).prop_flat_map(|s| (tensor_of_shape(&s, -2.0..2.0), 0..=s.len()))
    ) {
        assert_gradcheck(|p| p[0].unsqueeze(dim), &[x])?;
    }

    #[test]
    fn squeeze_gradient(
        (x, dim) in (nd_shape(), any::<bool>())
            .prop_flat_map(|(s, one)| (Just(s.clone()), 0..s.len(), Just(one)))
            .prop_flat_map(|(mut s, dim, one)| {
                if one {
                    s[dim] = 1; // half the cases squeeze a dimension, the others are no-ops
                }
                (tensor_of_shape(&s, -2.0..2.0), Just(dim))
            })
    ) {
        let expected = if x.shape()[dim] == 1 { x.ndim() - 1 } else { x.ndim() };
        prop_assert_eq!(x.squeeze(dim).ndim(), expected);
        assert_gradcheck(|p| p[0].squeeze(dim), &[x])?;
    }

    #[test]
    fn narrow_gradient(
        (x, dim, start, len) in nd_shape()
            .prop_flat_map(|s| (tensor_of_shape(&s, -2.0..2.0), 0..s.len()))
            .prop_flat_map(|(x, dim)| {
                let size = x.shape()[dim];
                (Just(x), Just(dim), 0..size)
            })
            .prop_flat_map(|(x, dim, start)| {
                let size = x.shape()[dim];
                (Just(x), Just(dim), Just(start), 1..=size - start)
            })
    ) {
        assert_gradcheck(|p| p[0].narrow(dim, start, len), &[x])?;
    }

    #[test]
    fn broadcast_to_gradient(
        (x, to) in broadcast_pair(3, 4).prop_flat_map(|(a, b)| {
            let to = numpy_broadcast(&a, &b).expect("a broadcast pair");
            (tensor_of_shape(&a, -2.0..2.0), Just(to))
        })
    ) {
        assert_gradcheck(|p| p[0].broadcast_to(&to), &[x])?;
    }

    #[test]
    fn cat_gradient(
        (parts, dim) in (shape_with(1..=3, 1..=3, 12), 1..=3usize)
            .prop_flat_map(|(s, k)| (Just(s.clone()), 0..s.len(), vec(1..=3usize, k)))
            .prop_flat_map(|(s, dim, sizes)| {
                let parts: Vec<_> = sizes
                    .into_iter()
                    .map(|n| {
                        let mut s = s.clone();
                        s[dim] = n;
                        tensor_of_shape(&s, -2.0..2.0)
                    })
                    .collect();
                (parts, Just(dim))
            })
    ) {
        assert_gradcheck(|p| Tensor::cat(p, dim), &parts)?;
    }

    #[test]
    fn stack_gradient(
        (parts, dim) in (shape_with(0..=2, 1..=3, 12), 1..=3usize)
            .prop_flat_map(|(s, k)| (vec(tensor_of_shape(&s, -2.0..2.0), k), 0..=s.len()))
    ) {
        assert_gradcheck(|p| Tensor::stack(p, dim), &parts)?;
    }
}

// ----------------------------------------------------------------- indexing

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn index_select_gradient(
        (x, dim, index) in nd_shape()
            .prop_flat_map(|s| (Just(s.clone()), 0..s.len()))
            .prop_flat_map(|(s, dim)| (tensor_of_shape(&s, -2.0..2.0), Just(dim), vec(0..s[dim], 1..=5)))
    ) {
        // repeated indices sum their gradients
        assert_gradcheck(|p| p[0].index_select(dim, &index), &[x])?;
    }

    #[test]
    fn gather_gradient(
        (x, dim, index) in nd_shape()
            .prop_flat_map(|s| {
                let n = s.len();
                (Just(s.clone()), 0..n, s.iter().map(|&d| 1..=d).collect::<Vec<_>>(), 1..=4usize)
            })
            .prop_flat_map(|(s, dim, mut ishape, along)| {
                ishape[dim] = along; // any length along dim, at most the input's elsewhere
                let n: usize = ishape.iter().product();
                (tensor_of_shape(&s, -2.0..2.0), Just(dim), Just(ishape), vec(0..s[dim], n))
            })
            .prop_map(|(x, dim, ishape, values)| {
                (x, dim, ArrayD::from_shape_vec(IxDyn(&ishape), values).expect("numel"))
            })
    ) {
        assert_gradcheck(|p| p[0].gather(dim, &index), &[x])?;
    }
}

// ------------------------------------------------------------------------ nn

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn softmax_gradient((x, dim, _) in with_dim(nd_shape(), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].softmax(dim), &[x])?;
    }

    #[test]
    fn log_softmax_gradient((x, dim, _) in with_dim(nd_shape(), -3.0..3.0)) {
        assert_gradcheck(|p| p[0].log_softmax(dim), &[x])?;
    }

    #[test]
    fn dropout_gradient(
        x in tensor_f64(shape(3, 4), -2.0..2.0),
        prob in prop_oneof![Just(0.0), Just(1.0), 0.0..1.0f64],
        train in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // Seeded inside the function: every evaluation gradcheck makes
        // (the backward's and each finite difference's) draws the same mask.
        assert_gradcheck(
            |p| {
                tapegrad::manual_seed(seed);
                p[0].dropout(prob, train)
            },
            &[x],
        )?;
    }
}

/// The seed in `dropout_gradient` is what makes it pass: without it each
/// evaluation draws another mask and gradcheck sees a jump.
#[test]
fn dropout_gradcheck_fails_without_a_fixed_seed() {
    let x = Tensor::from_vec((1..=16).map(|i| i as f64 / 8.0).collect(), &[16]);
    let unseeded = assert_gradcheck(|p| p[0].dropout(0.5, true), std::slice::from_ref(&x));
    assert!(
        unseeded.is_err(),
        "gradcheck passed with a fresh mask per evaluation"
    );
    let seeded = assert_gradcheck(
        |p| {
            tapegrad::manual_seed(3);
            p[0].dropout(0.5, true)
        },
        &[x],
    );
    assert!(seeded.is_ok(), "{seeded:?}");
}

// ------------------------------------------------------------------- losses

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn mse_loss_gradient(
        (a, b) in shape(3, 4)
            .prop_flat_map(|s| (tensor_of_shape(&s, -2.0..2.0), tensor_of_shape(&s, -2.0..2.0)))
    ) {
        // both the input and the target get a gradient
        assert_gradcheck(|p| p[0].mse_loss(&p[1]), &[a, b])?;
    }

    #[test]
    fn cross_entropy_gradient(
        (logits, targets) in (1..=4usize, 1..=5usize)
            .prop_flat_map(|(n, c)| (tensor_of_shape(&[n, c], -3.0..3.0), vec(0..c, n)))
    ) {
        assert_gradcheck(|p| p[0].cross_entropy(&targets), &[logits])?;
    }

    #[test]
    fn nll_loss_gradient(
        (logp, targets) in (1..=4usize, 1..=5usize)
            .prop_flat_map(|(n, c)| (tensor_of_shape(&[n, c], -3.0..0.0), vec(0..c, n)))
    ) {
        assert_gradcheck(|p| p[0].nll_loss(&targets), &[logp])?;
    }

    #[test]
    fn binary_cross_entropy_with_logits_gradient(
        (x, t) in shape(3, 4)
            .prop_flat_map(|s| (tensor_of_shape(&s, -4.0..4.0), tensor_of_shape(&s, 0.0..1.0)))
    ) {
        // both the logits and the target get a gradient
        assert_gradcheck(|p| p[0].binary_cross_entropy_with_logits(&p[1]), &[x, t])?;
    }
}

// ------------------------------------------------------- f32 agrees with f64

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn f32_elementwise_agrees_with_f64(x in tensor_f64(shape(3, 4), -2.0..2.0)) {
        assert_f32_agrees!((x) => -x);
        assert_f32_agrees!((x) => x.exp());
        assert_f32_agrees!((x) => (x.abs() + 0.1).ln());
        assert_f32_agrees!((x) => (x * 0.45).log1p());
        assert_f32_agrees!((x) => (x.abs() + 0.1).sqrt());
        assert_f32_agrees!((x) => (x.abs() + 0.1).powf(1.7));
        assert_f32_agrees!((x) => x.abs());
        assert_f32_agrees!((x) => x.relu());
        assert_f32_agrees!((x) => x.leaky_relu(0.1));
        assert_f32_agrees!((x) => x.clamp(-0.5, 1.0));
        assert_f32_agrees!((x) => x.sin());
        assert_f32_agrees!((x) => x.cos());
        assert_f32_agrees!((x) => x.tanh());
        assert_f32_agrees!((x) => x.sigmoid());
        assert_f32_agrees!((x) => x.erf());
        assert_f32_agrees!((x) => x.gelu());
        assert_f32_agrees!((x) => (x * 12.0).softplus());
        assert_f32_agrees!((x) => 1.5 - x * 2.0 + 0.25);
        assert_f32_agrees!((x) => x / 3.0);
    }

    #[test]
    fn f32_binary_agrees_with_f64((a, b) in broadcast_tensors(-2.0..2.0, 0.5..2.0)) {
        assert_f32_agrees!((a, b) => a + b);
        assert_f32_agrees!((a, b) => a - b);
        assert_f32_agrees!((a, b) => a * b);
        assert_f32_agrees!((a, b) => a / b);
        assert_f32_agrees!((a, b) => b.pow(a));
        assert_f32_agrees!((a, b) => a.maximum(b));
        assert_f32_agrees!((a, b) => a.minimum(b));
    }

    #[test]
    fn f32_matmul_agrees_with_f64(
        (a, b) in matmul_pair(2, 4)
            .prop_flat_map(|(a, b)| (tensor_of_shape(&a, -2.0..2.0), tensor_of_shape(&b, -2.0..2.0)))
    ) {
        assert_f32_agrees!((a, b) => a.matmul(b));
    }

    #[test]
    fn f32_reductions_agree_with_f64(
        (x, dim, keep) in with_dim(shape_with(1..=3, 2..=4, MAX_NUMEL), -3.0..3.0)
    ) {
        assert_f32_agrees!((x) => x.sum());
        assert_f32_agrees!((x) => x.mean());
        assert_f32_agrees!((x) => x.sum_dim(dim, keep));
        assert_f32_agrees!((x) => x.mean_dim(dim, keep));
        assert_f32_agrees!((x) => x.var_dim(dim, keep));
        assert_f32_agrees!((x) => x.max_dim(dim, keep));
        assert_f32_agrees!((x) => x.min_dim(dim, keep));
        assert_f32_agrees!((x) => x.logsumexp_dim(dim, keep));
        assert_f32_agrees!((x) => x.softmax(dim));
        assert_f32_agrees!((x) => x.log_softmax(dim));
    }

    #[test]
    fn f32_losses_agree_with_f64(
        (x, t, targets) in (1..=4usize, 1..=5usize).prop_flat_map(|(n, c)| {
            (tensor_of_shape(&[n, c], -3.0..3.0), tensor_of_shape(&[n, c], 0.0..1.0), vec(0..c, n))
        })
    ) {
        assert_f32_agrees!((x, t) => x.mse_loss(t));
        assert_f32_agrees!((x, t) => x.binary_cross_entropy_with_logits(t));
        assert_f32_agrees!((x) => x.cross_entropy(&targets));
        assert_f32_agrees!((x) => x.log_softmax(1).nll_loss(&targets));
    }
}

// ------------------------------------------------------------- broadcasting

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn broadcast_result_shape_is_numpys((a, b) in broadcast_pair(4, 4)) {
        let expected = numpy_broadcast(&a, &b);
        prop_assert!(expected.is_some(), "the strategy drew {:?} and {:?}, which do not broadcast", a, b);
        let expected = expected.unwrap();
        let (x, y) = (Tensor::<f64>::ones(&a), Tensor::<f64>::ones(&b));
        for (op, out) in [
            ("+", &x + &y),
            ("-", &x - &y),
            ("*", &x * &y),
            ("/", &x / &y),
            ("pow", x.pow(&y)),
            ("maximum", x.maximum(&y)),
            ("minimum", x.minimum(&y)),
            ("+ swapped", &y + &x),
        ] {
            prop_assert_eq!(out.shape(), expected.as_slice(), "{} of {:?} and {:?}", op, a, b);
        }
    }

    #[test]
    fn broadcast_values_match_ndarray((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        // ndarray's own broadcasting as the reference
        let out = numpy_broadcast(a.shape(), b.shape()).expect("a broadcast pair");
        let (va, vb) = (a.to_array(), b.to_array());
        let (va, vb) = (va.broadcast(IxDyn(&out)).unwrap(), vb.broadcast(IxDyn(&out)).unwrap());
        prop_assert_eq!((&a + &b).to_array(), &va + &vb);
        prop_assert_eq!((&a * &b).to_array(), &va * &vb);
        prop_assert_eq!(a.broadcast_to(&out).to_array(), va.to_owned());
    }

    #[test]
    fn broadcast_gradient_has_the_input_shape((a, b) in broadcast_tensors(-2.0..2.0, -2.0..2.0)) {
        let (a, b) = (a.set_requires_grad(true), b.set_requires_grad(true));
        let out = &a + &b;
        out.sum().backward();
        let (ga, gb) = (a.grad().unwrap(), b.grad().unwrap());
        prop_assert_eq!(ga.shape(), a.shape());
        prop_assert_eq!(gb.shape(), b.shape());
        // d Σ(a + b) / d a_i = how many output elements a_i was repeated into
        let repeats = (out.numel() / a.numel()) as f64;
        prop_assert!(ga.to_vec().iter().all(|&g| g == repeats), "{:?} vs {}", ga, repeats);

        for (op, out) in [
            ("*", &a * &b),
            ("-", &a - &b),
            ("maximum", a.maximum(&b)),
        ] {
            let grads = tapegrad::grad(&[out.sum()], &[a.clone(), b.clone()], GradOptions::default());
            let (ga, gb) = (grads[0].as_ref().unwrap(), grads[1].as_ref().unwrap());
            prop_assert_eq!(ga.shape(), a.shape(), "{}", op);
            prop_assert_eq!(gb.shape(), b.shape(), "{}", op);
        }
    }
}

// ------------------------------------------------ choices at kinks and ties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn gradients_at_kinks_are_pytorchs(s in shape(3, 4)) {
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        let grad_of = |y: Tensor<f64>| {
            tapegrad::grad(&[y.sum()], std::slice::from_ref(&x), GradOptions::default())[0]
                .as_ref()
                .unwrap()
                .to_vec()
        };
        let all = |v: Vec<f64>, g: f64| v.iter().all(|&x| x == g);
        prop_assert!(all(grad_of(x.relu()), 0.0), "relu'(0) = 0");
        prop_assert!(all(grad_of(x.abs()), 0.0), "abs'(0) = 0");
        prop_assert!(all(grad_of(x.leaky_relu(0.1)), 0.1), "leaky_relu'(0) = slope");
        // PyTorch 2.15's clamp with scalar bounds (and hardtanh) passes no
        // gradient at a bound (tests/ref/nonfinite_ref.txt, case nf_clamp)
        prop_assert!(all(grad_of(x.clamp(0.0, 1.0)), 0.0), "clamp' = 0 at the lower bound");
        prop_assert!(all(grad_of(x.clamp(-1.0, 0.0)), 0.0), "clamp' = 0 at the upper bound");
        prop_assert!(all(grad_of(x.maximum(&x.detach())), 0.5), "maximum' = 1/2 at ties");
        prop_assert!(all(grad_of(x.minimum(&x.detach())), 0.5), "minimum' = 1/2 at ties");
    }

    #[test]
    fn max_dim_at_ties_sends_the_gradient_to_the_first((s, dim, keep) in nd_shape()
        .prop_flat_map(|s| (Just(s.clone()), 0..s.len(), any::<bool>())))
    {
        let x = Tensor::<f64>::full(&s, 1.5).set_requires_grad(true);
        for y in [x.max_dim(dim, keep), x.min_dim(dim, keep)] {
            let g = tapegrad::grad(&[y.sum()], std::slice::from_ref(&x), GradOptions::default())[0]
                .clone()
                .unwrap();
            let one_hot = |at: usize| if at == 0 { 1.0 } else { 0.0 };
            let expected = g.to_array().indexed_iter().all(|(at, &v)| v == one_hot(at[dim]));
            prop_assert!(expected, "gradient {:?} of shape {:?} along {}", g.to_vec(), s, dim);
        }
    }
}

/// `d (a^b) / d a` where b = 0, and `d (a^b) / d b` where a = 0 and b >= 0:
/// both are 0 (a⁰ = 1 for every a, 0ᵇ = 0 for every b > 0), and PyTorch
/// returns 0 for both (its `pow_backward_self` masks `exponent == 0`, its
/// `pow_backward_exponent` masks `self == 0 & exponent >= 0`).
fn pow_at_zero_case() -> impl Strategy<Value = (Tensor<f64>, Tensor<f64>)> {
    // bases often exactly 0, exponents often exactly 0 (else in [0.5, 2))
    shape(3, 4).prop_flat_map(|s| {
        let n: usize = s.iter().product();
        let (sa, sb) = (s.clone(), s);
        (
            vec(prop_oneof![Just(0.0), -2.0..2.0f64], n).prop_map(move |v| Tensor::from_vec(v, &sa)),
            vec(prop_oneof![Just(0.0), 0.5..2.0f64], n).prop_map(move |v| Tensor::from_vec(v, &sb)),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn pow_gradients_at_a_zero_base_or_exponent_are_pytorchs((a, b) in pow_at_zero_case()) {
        let (a, b) = (a.set_requires_grad(true), b.set_requires_grad(true));
        let grads = tapegrad::grad(&[a.pow(&b).sum()], &[a.clone(), b.clone()], GradOptions::default());
        let (ga, gb) = (grads[0].as_ref().unwrap().to_vec(), grads[1].as_ref().unwrap().to_vec());
        let (va, vb) = (a.to_vec(), b.to_vec());
        for (i, ((&x, &e), (&da, &db))) in va.iter().zip(&vb).zip(ga.iter().zip(&gb)).enumerate() {
            if e == 0.0 {
                prop_assert_eq!(da, 0.0, "d(a^b)/da at a = {}, b = 0 (element {})", x, i);
            }
            if x == 0.0 {
                prop_assert_eq!(db, 0.0, "d(a^b)/db at a = 0, b = {} (element {})", e, i);
            }
        }
    }
}

// ------------------------------------------------------------ empty tensors

/// Shapes of 1 to 3 dimensions, one of them of size 0.
fn empty_shape() -> impl Strategy<Value = Vec<usize>> {
    shape_with(1..=3, 1..=3, MAX_NUMEL)
        .prop_flat_map(|s| (Just(s.clone()), 0..s.len()))
        .prop_map(|(mut s, d)| {
            s[d] = 0;
            s
        })
}

/// The shape of d Σy / dx.
fn grad_shape(y: &Tensor<f64>, x: &Tensor<f64>) -> Vec<usize> {
    let g = tapegrad::grad(&[y.sum()], std::slice::from_ref(x), GradOptions::default());
    g[0].as_ref().expect("y depends on x").shape().to_vec()
}

/// `s` without dimension `dim`.
fn without(s: &[usize], dim: usize) -> Vec<usize> {
    s.iter()
        .enumerate()
        .filter(|&(i, _)| i != dim)
        .map(|(_, &d)| d)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    // PyTorch accepts tensors with a dimension of size 0 everywhere a
    // non-empty one of that shape is accepted (reductions without an
    // identity, max/min along the empty dimension, excepted).

    #[test]
    fn empty_tensors_through_elementwise_and_binary_ops(s in empty_shape()) {
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        let last = Tensor::ones(&s[s.len() - 1..]);
        for (op, y) in [
            ("exp", x.exp()),
            ("relu", x.relu()),
            ("abs", x.abs()),
            ("clamp", x.clamp(-1.0, 1.0)),
            ("x * x", &x * &x),
            ("x + last", &x + &last),
            ("x / last", &x / &last),
            ("maximum", x.maximum(&last)),
            ("pow", (&x + 1.0).pow(&last)),
            ("dropout", x.dropout(0.5, true)),
        ] {
            prop_assert_eq!(y.shape(), s.as_slice(), "{}", op);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "{}", op);
        }
    }

    #[test]
    fn empty_tensors_through_reductions(
        (s, dim) in empty_shape().prop_flat_map(|s| (Just(s.clone()), 0..s.len()))
    ) {
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        prop_assert_eq!(x.sum().item(), 0.0);
        prop_assert!(x.mean().item().is_nan(), "the mean of nothing is NaN");
        for (op, y) in [
            ("sum_dim", x.sum_dim(dim, false)),
            ("mean_dim", x.mean_dim(dim, false)),
            ("var_dim", x.var_dim(dim, false)),
        ] {
            prop_assert_eq!(y.shape().to_vec(), without(&s, dim), "{}", op);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "{}", op);
        }
        if s[dim] > 0 {
            let y = x.max_dim(dim, true);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "max_dim");
        }
    }

    #[test]
    fn empty_tensors_through_softmax_and_logsumexp(
        (s, dim) in empty_shape().prop_flat_map(|s| (Just(s.clone()), 0..s.len()))
    ) {
        // torch.logsumexp over an empty dimension is ln 0 = -inf; softmax of
        // an empty tensor is empty.
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        let lse = x.logsumexp_dim(dim, false);
        prop_assert_eq!(lse.shape().to_vec(), without(&s, dim));
        prop_assert!(lse.to_vec().iter().all(|&v| v == f64::NEG_INFINITY), "{:?}", lse);
        for (op, y) in [("softmax", x.softmax(dim)), ("log_softmax", x.log_softmax(dim))] {
            prop_assert_eq!(y.shape(), s.as_slice(), "{}", op);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "{}", op);
        }
    }

    #[test]
    fn empty_tensors_through_shape_ops(
        (s, dim) in empty_shape().prop_flat_map(|s| (Just(s.clone()), 0..s.len()))
    ) {
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        let n = s.len();
        let mut lead = vec![2];
        lead.extend(&s);
        let reversed: Vec<usize> = (0..n).rev().collect();
        // (for at most 3 dimensions, swapping the first and last reverses)
        let s_reversed: Vec<usize> = s.iter().rev().copied().collect();
        let mut doubled = s.clone();
        doubled[dim] *= 2;
        for (op, y, shape) in [
            ("reshape", x.reshape(&[0]), vec![0]),
            ("transpose", x.transpose(0, n - 1), s_reversed.clone()),
            ("permute", x.permute(&reversed), s_reversed),
            ("unsqueeze", x.unsqueeze(n), [s.as_slice(), &[1]].concat()),
            ("broadcast_to", x.broadcast_to(&lead), lead.clone()),
            ("cat", Tensor::cat(&[x.clone(), x.clone()], dim), doubled),
            ("stack", Tensor::stack(&[x.clone(), x.clone()], 0), lead.clone()),
        ] {
            prop_assert_eq!(y.shape(), shape.as_slice(), "{}", op);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "{}", op);
        }
        if s[dim] > 0 {
            let y = x.index_select(dim, &[0, 0]);
            prop_assert_eq!(grad_shape(&y, &x), s.clone(), "index_select");
        }
    }

    #[test]
    fn empty_tensors_through_narrow(
        (s, dim, start, len) in shape_with(2..=3, 2..=3, MAX_NUMEL)
            .prop_flat_map(|s| (Just(s.clone()), 0..s.len(), 1..s.len()))
            .prop_flat_map(|(mut s, empty, shift)| {
                // narrow a dimension of size >= 2 of a tensor that another
                // dimension makes empty, from an offset > 0
                let dim = (empty + shift) % s.len();
                s[empty] = 0;
                let size = s[dim];
                (Just(s), Just(dim), 1..size)
            })
            .prop_flat_map(|(s, dim, start)| {
                let rest = s[dim] - start;
                (Just(s), Just(dim), Just(start), 1..=rest)
            })
    ) {
        // torch.empty(2, 0, 3).narrow(2, 1, 2) has shape [2, 0, 2]
        let x = Tensor::<f64>::zeros(&s).set_requires_grad(true);
        let y = x.narrow(dim, start, len);
        let mut expected = s.clone();
        expected[dim] = len;
        prop_assert_eq!(y.shape(), expected.as_slice());
        prop_assert_eq!(grad_shape(&y, &x), s.clone());
    }

    #[test]
    fn empty_matmul_operands((m, k, n) in (0..=3usize, 0..=3usize, 0..=3usize)) {
        // an empty inner dimension gives zeros, as torch.matmul does
        let a = Tensor::<f64>::ones(&[m, k]).set_requires_grad(true);
        let b = Tensor::<f64>::ones(&[k, n]).set_requires_grad(true);
        let y = a.matmul(&b);
        prop_assert_eq!(y.shape(), &[m, n]);
        prop_assert!(y.to_vec().iter().all(|&v| v == k as f64));
        let grads = tapegrad::grad(&[y.sum()], &[a, b], GradOptions::default());
        prop_assert_eq!(grads[0].as_ref().unwrap().shape(), &[m, k]);
        prop_assert_eq!(grads[1].as_ref().unwrap().shape(), &[k, n]);
    }
}
