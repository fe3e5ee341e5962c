//! Empty tensors and non-finite values through reductions and elementwise
//! ops, values and gradients, against PyTorch (issue 9, class 5).
//!
//! The expected values were printed by PyTorch 2.15.0+cu132 on the CPU, in
//! float64 and float32 (`/root/torchenv`, the version that wrote
//! `tests/ref/ops_ref.txt`), e.g. for the sweep:
//!
//! ```python
//! x = torch.tensor([-inf, inf, nan, 0.0, -0.0, -1.0], dtype=dt, requires_grad=True)
//! y = torch.exp(x); y.backward(torch.ones_like(y)); print(y.tolist(), x.grad.tolist())
//! ```
//!
//! "Equal" here means: both NaN, or equal with the same sign (so -0.0 is
//! not 0.0), or, for finite values away from 0, within 1e-6 relative (and
//! within 1e-6 of a 0 that is rounding in ours).

mod common;

use common::panic_message;

use std::f64::consts::{FRAC_2_SQRT_PI, LN_2};
use tapegrad::prelude::*;

const INF: f64 = f64::INFINITY;
const NAN: f64 = f64::NAN;

/// Whether `ours` is PyTorch's `torch` in the sense of the module docs.
fn same(ours: f64, torch: f64) -> bool {
    if torch.is_nan() || ours.is_nan() {
        return torch.is_nan() && ours.is_nan();
    }
    if ours == 0.0 || torch == 0.0 || torch.is_infinite() {
        let signed_equal = ours == torch && ours.is_sign_negative() == torch.is_sign_negative();
        // A nonzero result where PyTorch's is 0 is rounding (softmax' sums
        // to 0), if it is tiny.
        return signed_equal || (torch == 0.0 && ours.abs() <= 1e-6);
    }
    (ours - torch).abs() <= 1e-6 * torch.abs()
}

/// Asserts `ours` equals `torch` elementwise ([`same`]), naming `what`.
#[track_caller]
fn assert_same<T: Float>(what: &str, ours: &[T], torch: &[f64]) {
    let ours: Vec<f64> = ours.iter().map(|v| v.as_f64()).collect();
    assert!(
        ours.len() == torch.len() && ours.iter().zip(torch).all(|(&o, &t)| same(o, t)),
        "{what} ({}): ours {ours:?}, PyTorch {torch:?}",
        T::DTYPE
    );
}

/// `f` of `xs` and the gradient of its sum, in `T`.
fn value_and_grad<T: Float>(
    xs: &[f64],
    shape: &[usize],
    f: impl Fn(&Tensor<T>) -> Tensor<T>,
) -> (Vec<T>, Vec<T>) {
    let x = Tensor::from_vec(xs.iter().map(|&v| T::of(v)).collect(), shape).set_requires_grad(true);
    let y = f(&x);
    y.sum().backward();
    (y.to_vec(), x.grad().expect("x requires grad").to_vec())
}

// ----------------------------------------------------------- empty tensors

fn empty_reductions<T: Float>() {
    // torch.zeros(0).sum() is 0.0, not -0.0; so is a sum of -0.0s.
    let s = Tensor::<T>::zeros(&[0]).sum().item();
    assert!(
        s == T::zero() && s.is_sign_positive(),
        "sum of nothing is {s:?} ({})",
        T::DTYPE
    );
    let s = Tensor::<T>::from_vec(vec![-T::zero(); 3], &[3]).sum().item();
    assert!(s.is_sign_positive(), "sum of -0s is {s:?} ({})", T::DTYPE);
    // torch.zeros(3, 0).sum(1) = [0, 0, 0]; .mean(1), .var(1) = [nan, nan,
    // nan]; .logsumexp(1) = [-inf, -inf, -inf]; torch.zeros(0).mean() = nan.
    let e = Tensor::<T>::zeros(&[3, 0]);
    assert_same(
        "sum_dim over an empty dim",
        &e.sum_dim(1, false).to_vec(),
        &[0.0; 3],
    );
    assert_same(
        "sum_dim over an empty dim, kept",
        &e.sum_dim(1, true).to_vec(),
        &[0.0; 3],
    );
    assert_same(
        "mean of nothing",
        &[Tensor::<T>::zeros(&[0]).mean().item()],
        &[NAN],
    );
    assert_same(
        "mean_dim over an empty dim",
        &e.mean_dim(1, false).to_vec(),
        &[NAN; 3],
    );
    assert_same(
        "var_dim over an empty dim",
        &e.var_dim(1, false).to_vec(),
        &[NAN; 3],
    );
    assert_same(
        "var_dim over a dim of 1",
        &Tensor::<T>::ones(&[3, 1]).var_dim(1, false).to_vec(),
        &[NAN; 3],
    );
    assert_same(
        "logsumexp_dim over an empty dim",
        &e.logsumexp_dim(1, false).to_vec(),
        &[-INF; 3],
    );
    // Reducing the other dimension gives an empty result.
    assert_eq!(e.var_dim(0, false).shape(), &[0]);
    assert_eq!(e.softmax(1).shape(), &[3, 0]);
    assert_eq!(Tensor::<T>::zeros(&[0, 3]).softmax(1).shape(), &[0, 3]);
    // torch.zeros(3, 0).max(1) raises "Expected reduction dim 1 to have
    // non-zero size"; so do max_dim and min_dim, naming the shape.
    let msg = panic_message(|| drop(e.max_dim(1, false)));
    assert!(msg.contains("max_dim") && msg.contains("[3, 0]"), "{msg}");
    let msg = panic_message(|| drop(e.min_dim(1, true)));
    assert!(msg.contains("min_dim") && msg.contains("[3, 0]"), "{msg}");
}

#[test]
fn reductions_of_empty_tensors_are_pytorchs() {
    empty_reductions::<f32>();
    empty_reductions::<f64>();
}

// ------------------------------------------------- non-finite elementwise

/// The sweep's inputs.
const SPECIAL: [f64; 6] = [-INF, INF, NAN, 0.0, -0.0, -1.0];

/// (op, PyTorch's values at [`SPECIAL`], its gradients there), float64.
/// (Where PyTorch printed ln 2 and 2/√π, digit for digit, the `std`
/// constants stand for them.)
#[allow(clippy::type_complexity)]
fn sweep<T: Float>() -> Vec<(&'static str, fn(&Tensor<T>) -> Tensor<T>, [f64; 6], [f64; 6])> {
    let e1 = (-1f64).exp();
    vec![
        (
            "exp",
            |x| x.exp(),
            [0.0, INF, NAN, 1.0, 1.0, e1],
            [0.0, INF, NAN, 1.0, 1.0, e1],
        ),
        (
            "ln",
            |x| x.ln(),
            [NAN, INF, NAN, -INF, -INF, NAN],
            [-0.0, 0.0, NAN, INF, -INF, -1.0],
        ),
        (
            "sqrt",
            |x| x.sqrt(),
            [NAN, INF, NAN, 0.0, -0.0, NAN],
            [NAN, 0.0, NAN, INF, -INF, NAN],
        ),
        (
            "tanh",
            |x| x.tanh(),
            [-1.0, 1.0, NAN, 0.0, -0.0, -0.7615941559557649],
            [0.0, 0.0, NAN, 1.0, 1.0, 0.41997434161402614],
        ),
        (
            "sigmoid",
            |x| x.sigmoid(),
            [0.0, 1.0, NAN, 0.5, 0.5, 0.2689414213699951],
            [0.0, 0.0, NAN, 0.25, 0.25, 0.19661193324148185],
        ),
        (
            "softplus",
            |x| x.softplus(),
            [0.0, INF, NAN, LN_2, LN_2, 0.31326168751822286],
            [0.0, 1.0, NAN, 0.5, 0.5, 0.2689414213699951],
        ),
        // relu(-0.0) is -0.0, and the gradient at NaN is 1 (threshold_backward
        // passes it where x <= 0 is false).
        (
            "relu",
            |x| x.relu(),
            [0.0, INF, NAN, 0.0, -0.0, 0.0],
            [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        ),
        (
            "leaky_relu",
            |x| x.leaky_relu(T::of(0.1)),
            [-INF, INF, NAN, 0.0, -0.0, -0.1],
            [0.1, 1.0, 0.1, 0.1, 0.1, 0.1],
        ),
        (
            "erf",
            |x| x.erf(),
            [-1.0, 1.0, NAN, 0.0, -0.0, -0.8427007929497149],
            [0.0, 0.0, NAN, FRAC_2_SQRT_PI, FRAC_2_SQRT_PI, 0.4151074974205947],
        ),
        (
            "log1p",
            |x| x.log1p(),
            [NAN, INF, NAN, 0.0, -0.0, -INF],
            [-0.0, 0.0, NAN, 1.0, 1.0, INF],
        ),
        // abs' at NaN is 0 (sgn(NaN) = 0).
        (
            "abs",
            |x| x.abs(),
            [INF, INF, NAN, 0.0, 0.0, 1.0],
            [-1.0, 1.0, 0.0, 0.0, 0.0, -1.0],
        ),
        (
            "sin",
            |x| x.sin(),
            [NAN, NAN, NAN, 0.0, -0.0, -0.8414709848078965],
            [NAN, NAN, NAN, 1.0, 1.0, 0.5403023058681398],
        ),
        (
            "cos",
            |x| x.cos(),
            [NAN, NAN, NAN, 1.0, 1.0, 0.5403023058681398],
            [NAN, NAN, NAN, -0.0, 0.0, 0.8414709848078965],
        ),
        (
            "powf(2)",
            |x| x.powf(T::of(2.0)),
            [INF, INF, NAN, 0.0, 0.0, 1.0],
            [-INF, INF, NAN, 0.0, -0.0, -2.0],
        ),
        // Bounds away from the inputs: at a bound itself see the report.
        (
            "clamp(-2, 2)",
            |x| x.clamp(T::of(-2.0), T::of(2.0)),
            [-2.0, 2.0, NAN, 0.0, -0.0, -1.0],
            [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        ),
        // PyTorch's gelu is x Φ(x) computed as is: -inf · 0 is NaN, and so
        // is its gradient at ±inf (Φ(x) + x φ(x) with x φ(x) = ±inf · 0),
        // in float64 and in float32's scalar path (its vectorised float32
        // path also gives gelu(+inf) = NaN).
        (
            "gelu",
            |x| x.gelu(),
            [NAN, INF, NAN, 0.0, -0.0, -0.15865525393145702],
            [NAN, NAN, NAN, 0.5, 0.5, -0.08331547058768635],
        ),
    ]
}

fn elementwise_sweep<T: Float>() {
    for (op, f, values, grads) in sweep::<T>() {
        let (y, g) = value_and_grad::<T>(&SPECIAL, &[6], f);
        assert_same(&format!("{op} at {SPECIAL:?}"), &y, &values);
        assert_same(&format!("{op}' at {SPECIAL:?}"), &g, &grads);
    }
}

#[test]
fn elementwise_ops_at_infinities_nan_and_signed_zeros_are_pytorchs() {
    elementwise_sweep::<f32>();
    elementwise_sweep::<f64>();
}

fn clamp_nan_bounds<T: Float>() {
    // torch.clamp(x, nan, 1.0), (-1.0, nan), (nan, nan): every element NaN,
    // every gradient 0; no error.
    let xs = [-2.0, 0.5, 2.0, NAN, -INF, INF, 1.0];
    for (min, max) in [(NAN, 1.0), (-1.0, NAN), (NAN, NAN)] {
        let (y, g) = value_and_grad::<T>(&xs, &[7], |x| x.clamp(T::of(min), T::of(max)));
        assert_same(&format!("clamp({min}, {max})"), &y, &[NAN; 7]);
        assert_same(&format!("clamp'({min}, {max})"), &g, &[0.0; 7]);
    }
    // min > max still panics (PyTorch sets every element to max), saying so.
    let x = Tensor::<T>::zeros(&[2]);
    let msg = panic_message(|| drop(x.clamp(T::of(2.0), T::one())));
    assert!(msg.contains("clamp: min 2 is greater than max 1"), "{msg}");
}

#[test]
fn clamp_with_a_nan_bound_is_nan_as_pytorch() {
    clamp_nan_bounds::<f32>();
    clamp_nan_bounds::<f64>();
}

// ------------------------------------------------ non-finite reductions

/// Rows of `[6, 3]` holding infinities and NaN.
const ROWS: [f64; 18] = [
    INF, 1.0, 2.0, // a +inf
    -INF, 1.0, 2.0, // a -inf
    -INF, -INF, -INF, // only -inf
    INF, INF, 1.0, // two +inf
    NAN, 1.0, 2.0, // a NaN
    INF, -INF, 0.0, // both
];

fn reductions_with_infinities<T: Float>() {
    // torch.softmax(x, 1): a row with +inf or with only -inf is all NaN
    // (x - max is NaN there).
    let s1 = 0.2689414213699951;
    let s2 = 0.7310585786300049;
    let mut softmax = [NAN; 18];
    softmax[3..6].copy_from_slice(&[0.0, s1, s2]);
    let (y, g) = value_and_grad::<T>(&ROWS, &[6, 3], |x| x.softmax(1));
    assert_same("softmax", &y, &softmax);
    let mut softmax_grad = [NAN; 18];
    softmax_grad[3..6].copy_from_slice(&[0.0, 0.0, 0.0]);
    assert_same("softmax'", &g, &softmax_grad);
    // torch.var(x, 1) is NaN on every row, and its gradient is
    // 2 (x - mean) / (n - 1): ±inf beside an infinity, not NaN.
    let (y, g) = value_and_grad::<T>(&ROWS, &[6, 3], |x| x.var_dim(1, false));
    assert_same("var_dim", &y, &[NAN; 6]);
    let var_grad = [
        NAN, -INF, -INF, NAN, INF, INF, NAN, NAN, NAN, NAN, NAN, -INF, NAN, NAN, NAN, NAN, NAN, NAN,
    ];
    assert_same("var_dim'", &g, &var_grad);
    // torch.logsumexp(x, 1) (the infinite max is replaced by 0, as ours).
    let lse = [INF, 2.313261687518223, -INF, INF, NAN, INF];
    let (y, g) = value_and_grad::<T>(&ROWS, &[6, 3], |x| x.logsumexp_dim(1, false));
    assert_same("logsumexp_dim", &y, &lse);
    let lse_grad = [
        NAN, 0.0, 0.0, 0.0, s1, s2, NAN, NAN, NAN, NAN, NAN, 0.0, NAN, NAN, NAN, NAN, 0.0, 0.0,
    ];
    assert_same("logsumexp_dim'", &g, &lse_grad);
}

#[test]
fn reductions_of_rows_with_infinities_are_pytorchs() {
    reductions_with_infinities::<f32>();
    reductions_with_infinities::<f64>();
}

#[test]
fn var_dim_gradient_is_pytorchs_formula_also_to_second_order() {
    // var = Σ (x - x̄)² / (n - 1): d var/dx = 2 (x - x̄) / (n - 1), and
    // d²var/dx_i dx_j = 2 (δ_ij - 1/n) / (n - 1), so the gradient of
    // Σ_i d var/dx_i is 0 (the rows of the Hessian sum to 0).
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 4.0, -1.0], &[4]).set_requires_grad(true);
    let v = x.var_dim(0, false);
    assert_eq!(v.grad_fn_name().as_deref(), Some("VarBackward"));
    let opts = GradOptions {
        create_graph: true,
        ..GradOptions::default()
    };
    let g = tapegrad::grad(&[v], std::slice::from_ref(&x), opts)[0]
        .clone()
        .unwrap();
    // mean 1.5: 2 (x - 1.5) / 3
    let expected = [-1.0 / 3.0, 1.0 / 3.0, 5.0 / 3.0, -5.0 / 3.0];
    assert!(
        g.to_vec()
            .iter()
            .zip(expected)
            .all(|(a, b)| (a - b).abs() < 1e-15),
        "{g:?}"
    );
    let gg = tapegrad::grad(&[g.sum()], &[x], GradOptions::default())[0]
        .clone()
        .unwrap();
    assert!(gg.to_vec().iter().all(|v| v.abs() < 1e-15), "{gg:?}");
}

// ------------------------------------------------------------------ matmul

#[test]
fn matmul_of_incompatible_batches_names_both_shapes() {
    // The issue's case, and one with more batch dimensions.
    for (a, b) in [(vec![2, 3, 4], vec![5, 4, 6]), (vec![7, 2, 3, 4], vec![3, 4, 6])] {
        let (x, y) = (Tensor::<f32>::zeros(&a), Tensor::<f32>::zeros(&b));
        let msg = panic_message(|| drop(x.matmul(&y)));
        assert!(
            msg.starts_with("matmul:") && msg.contains(&format!("{a:?}")) && msg.contains(&format!("{b:?}")),
            "{msg}"
        );
    }
}

/// softplus is `x` above its threshold of 20 and `log1p(exp(x))` at and
/// below it, as PyTorch's (whose backward is 1 above and `σ(x)` at 20):
/// at 1000, `exp` alone would overflow.
#[test]
fn softplus_switches_to_x_strictly_above_twenty() {
    let x = Tensor::from_vec(vec![20.0f64, 30.0, 1000.0], &[3]).set_requires_grad(true);
    let y = x.softplus();
    y.sum().backward();
    // torch.nn.functional.softplus in float64, and its gradient
    let torch_y: [f64; 3] = [20.000000002061153, 30.0, 1000.0];
    let torch_g: [f64; 3] = [0.9999999979388464, 1.0, 1.0];
    let (y, g) = (y.to_vec(), x.grad().unwrap().to_vec());
    for i in 0..3 {
        assert!(
            (y[i] - torch_y[i]).abs() <= 1e-15 * torch_y[i],
            "softplus({}) = {}",
            [20, 30, 1000][i],
            y[i]
        );
        assert!(
            (g[i] - torch_g[i]).abs() <= 1e-15,
            "softplus'({}) = {}",
            [20, 30, 1000][i],
            g[i]
        );
    }
}
