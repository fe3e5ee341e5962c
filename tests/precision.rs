//! Reductions add up many elements without losing precision (issue 9,
//! class 4): every op that sums (`sum`, `mean`, `sum_dim`, `mean_dim`,
//! `var_dim`, `logsumexp_dim`, `softmax`, `mse_loss`, the gradient of a
//! broadcast) is compared in `f32` against the same numbers summed in
//! `f64`. A running `f32` total drifts by about one rounding per element
//! (`ones(2²⁵).sum()` stops at 2²⁴ = 16777216); summed pairwise, the error
//! grows as log n, and stays below 1e-6 relative here.

use ndarray::{ArrayD, Axis};
use tapegrad::prelude::*;

/// The bound on `f32` results, relative to the `f64` sum of the same
/// numbers (about 17 f32 roundings).
const F32_TOL: f64 = 1e-6;

/// Uniform `[0, 1)` draws (non-negative, so no cancellation makes the
/// relative error large for a good sum), from a fixed seed.
fn uniform(shape: &[usize], seed: u64) -> Tensor<f32> {
    tapegrad::manual_seed(seed);
    Tensor::rand(shape)
}

/// `t`'s elements as an `f64` array (exactly: every f32 is an f64).
fn widened(t: &Tensor<f32>) -> ArrayD<f64> {
    ArrayD::from_shape_vec(t.shape(), t.to_vec().into_iter().map(f64::from).collect()).unwrap()
}

/// Asserts that `ours` (f32) equals `reference` (f64) elementwise within
/// [`F32_TOL`] relative, naming `what` and the worst element.
#[track_caller]
fn assert_rel(what: &str, ours: &[f32], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&o, &r)) in ours.iter().zip(reference).enumerate() {
        let err = (f64::from(o) - r).abs() / r.abs();
        if err.is_nan() || err > worst {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= F32_TOL,
        "{what}: element {at} is {} against {} in f64, relative error {worst:e} > {F32_TOL:e}",
        ours[at],
        reference[at]
    );
}

#[test]
fn sum_and_mean_of_twenty_million_ones_are_exact() {
    // The reproducer: a running f32 total stops at 2²⁴.
    let x = Tensor::<f32>::ones(&[20_000_000]);
    assert_eq!(x.sum().item(), 20_000_000.0);
    assert_eq!(x.mean().item(), 1.0);
}

#[test]
fn sum_and_mean_of_a_long_vector_match_f64() {
    let x = uniform(&[(1 << 22) + 12_345], 1);
    let exact = widened(&x).sum();
    assert_rel("sum", &[x.sum().item()], &[exact]);
    assert_rel("mean", &[x.mean().item()], &[exact / x.numel() as f64]);
}

#[test]
fn sum_of_views_matches_f64() {
    // A broadcast view (stride 0), a transpose, a permutation and a
    // narrowed slice: none is a contiguous slice in row-major order.
    let x = Tensor::<f32>::full(&[1], 0.1).broadcast_to(&[20_000_000]);
    assert_rel(
        "sum of a broadcast",
        &[x.sum().item()],
        &[f64::from(0.1f32) * 2e7],
    );
    let x = Tensor::<f32>::full(&[3, 1], 0.1).broadcast_to(&[3, 5_000_000]);
    assert_rel(
        "sum of a 2-D broadcast",
        &[x.sum().item()],
        &[f64::from(0.1f32) * 1.5e7],
    );
    let x = Tensor::<f32>::full(&[1, 1], 0.1).broadcast_to(&[4000, 5000]);
    assert_rel(
        "sum of a scalar broadcast to 2-D",
        &[x.sum().item()],
        &[f64::from(0.1f32) * 2e7],
    );
    let m = uniform(&[2048, 1500], 2);
    let exact = widened(&m).sum();
    assert_rel("sum of a transpose", &[m.t().sum().item()], &[exact]);
    let p = uniform(&[64, 300, 200], 3);
    let exact = widened(&p).sum();
    assert_rel(
        "sum of a permutation",
        &[p.permute(&[2, 0, 1]).sum().item()],
        &[exact],
    );
    let n = m.narrow(1, 7, 1400);
    let exact = widened(&n).sum();
    assert_rel("sum of a narrowed slice", &[n.sum().item()], &[exact]);
    assert_rel(
        "mean of a narrowed slice",
        &[n.mean().item()],
        &[exact / n.numel() as f64],
    );
}

#[test]
fn sum_dim_and_mean_dim_along_each_axis_match_f64() {
    // The reduced axis is long (2²⁰) in turn first, middle and last, so
    // the sum runs along lanes (last), across rows (first) and both.
    for (shape, axis) in [
        (vec![1 << 20, 5], 0),
        (vec![3, 1 << 20], 1),
        (vec![3, 1 << 19, 2], 1),
        (vec![1 << 19, 2, 3], 0),
        (vec![2, 3, 1 << 19], 2),
    ] {
        let x = uniform(&shape, 4 + axis as u64);
        let exact = widened(&x).sum_axis(Axis(axis));
        let n = shape[axis] as f64;
        for keepdim in [false, true] {
            let what = format!("sum_dim({axis}, {keepdim}) of {shape:?}");
            let s = x.sum_dim(axis, keepdim);
            let mut kept = shape.clone();
            kept[axis] = 1;
            assert_eq!(
                s.shape(),
                if keepdim { &kept[..] } else { exact.shape() },
                "{what}"
            );
            assert_rel(&what, &s.to_vec(), exact.as_slice().unwrap());
            let what = format!("mean_dim({axis}, {keepdim}) of {shape:?}");
            let mean: Vec<f64> = exact.iter().map(|&v| v / n).collect();
            assert_rel(&what, &x.mean_dim(axis, keepdim).to_vec(), &mean);
        }
        // The same along a view: the transpose of the last two axes.
        let last = shape.len() - 1;
        let t = x.transpose(last - 1, last);
        let t_axis = match axis {
            a if a == last => last - 1,
            a if a == last - 1 => last,
            a => a,
        };
        let what = format!("sum_dim({t_axis}) of the transpose of {shape:?}");
        let exact_t = widened(&t).sum_axis(Axis(t_axis));
        assert_rel(
            &what,
            &t.sum_dim(t_axis, false).to_vec(),
            &exact_t.iter().copied().collect::<Vec<_>>(),
        );
    }
}

#[test]
fn gradients_summed_back_from_a_broadcast_match_f64() {
    // d Σ (x * r) / dx = r summed over the axes x was broadcast along: a
    // bias of [4] over 2²⁰ rows, a column [N, 1] (summed along rows), a
    // [1, 4, 1] over two axes, and a 0-d scalar over everything.
    for (x_shape, r_shape) in [
        (vec![4], vec![1 << 20, 4]),
        (vec![1 << 10, 1], vec![1 << 10, 1 << 10]),
        (vec![1, 4, 1], vec![1 << 10, 4, 1 << 10]),
        (vec![], vec![2048, 1024]),
    ] {
        let x = Tensor::<f32>::ones(&x_shape).set_requires_grad(true);
        let r = uniform(&r_shape, 9);
        (&x * &r).sum().backward();
        // The f64 reference: r summed down to x's shape.
        let mut exact = widened(&r);
        let lead = r_shape.len() - x_shape.len();
        for axis in (0..r_shape.len()).rev() {
            if axis < lead || x_shape[axis - lead] == 1 {
                exact = exact.sum_axis(Axis(axis));
                if axis >= lead {
                    exact = exact.insert_axis(Axis(axis));
                }
            }
        }
        let g = x.grad().unwrap();
        assert_eq!(g.shape(), &x_shape[..]);
        let what = format!("gradient of {x_shape:?} broadcast to {r_shape:?}");
        assert_rel(&what, &g.to_vec(), &exact.iter().copied().collect::<Vec<_>>());
    }
}

#[test]
fn mse_loss_of_a_long_vector_matches_f64() {
    let (pred, target) = (uniform(&[1 << 22], 10), uniform(&[1 << 22], 11));
    let (p, t) = (widened(&pred), widened(&target));
    let exact = (&p - &t).mapv(|d| d * d).mean().unwrap();
    assert_rel("mse_loss", &[pred.mse_loss(&target).item()], &[exact]);
}

#[test]
fn var_dim_logsumexp_and_softmax_along_a_long_axis_match_f64() {
    // var: values near 1000, so that a drifting sum of squares shows.
    let x = uniform(&[1 << 22], 12) + 1000.0;
    let w = widened(&x);
    let mean = w.mean().unwrap();
    let var = w.mapv(|v| (v - mean) * (v - mean)).sum() / (w.len() - 1) as f64;
    assert_rel("var_dim", &[x.var_dim(0, false).item()], &[var]);
    // logsumexp and softmax of 20 million zeros: ln n and 1/n.
    let n = 20_000_000;
    let z = Tensor::<f32>::zeros(&[n]);
    assert_rel(
        "logsumexp_dim",
        &[z.logsumexp_dim(0, false).item()],
        &[(n as f64).ln()],
    );
    let p = z.softmax(0).narrow(0, 0, 3).to_vec();
    assert_rel("softmax", &p, &[1.0 / n as f64; 3]);
}

#[test]
fn f64_sums_are_pairwise_too() {
    // 2²² copies of 0.1: n · 0.1 is exact in f64 (a power of two times
    // 0.1), and a running total misses it by about 1e-10 relative.
    let n = 1usize << 22;
    let exact = 0.1 * n as f64;
    let x = Tensor::<f64>::full(&[n], 0.1);
    let rel = |v: f64, r: f64| (v - r).abs() / r;
    assert!(
        rel(x.sum().item(), exact) < 1e-14,
        "sum {} vs {exact}",
        x.sum().item()
    );
    let cols = Tensor::<f64>::full(&[n / 4, 4], 0.1).sum_dim(0, false).to_vec();
    let exact_col = 0.1 * (n / 4) as f64;
    assert!(
        cols.iter().all(|&c| rel(c, exact_col) < 1e-14),
        "sum_dim(0) {cols:?} vs {exact_col}"
    );
    let rows = Tensor::<f64>::full(&[4, n / 4], 0.1).sum_dim(1, false).to_vec();
    assert!(
        rows.iter().all(|&c| rel(c, exact_col) < 1e-14),
        "sum_dim(1) {rows:?} vs {exact_col}"
    );
}
