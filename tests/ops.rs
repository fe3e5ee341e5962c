//! Every op of the engine issue: forward values against hand-computed
//! numbers, gradients against finite differences (gradcheck in f64), and the
//! shape errors.

mod common;

use common::{assert_close, check_op, leaf};
use tapegrad::prelude::*;

/// A leaf of shape `shape` filled with deterministic, non-special values
/// (none at 0 or ±1), that requires grad.
fn arange_leaf(shape: &[usize], start: f64, step: f64) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    leaf(
        &(0..n).map(|i| start + step * i as f64).collect::<Vec<_>>(),
        shape,
    )
}

// ------------------------------------------------------------ binary: values

#[test]
fn binary_ops_forward_values_same_shape() {
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    let b = Tensor::from_vec(vec![2.0f64, -1.0, 0.5, 8.0], &[2, 2]);
    assert_eq!((&a + &b).to_vec(), vec![3.0, 1.0, 3.5, 12.0]);
    assert_eq!((&a - &b).to_vec(), vec![-1.0, 3.0, 2.5, -4.0]);
    assert_eq!((&a * &b).to_vec(), vec![2.0, -2.0, 1.5, 32.0]);
    assert_eq!((&a / &b).to_vec(), vec![0.5, -2.0, 6.0, 0.5]);
    assert_eq!((-&a).to_vec(), vec![-1.0, -2.0, -3.0, -4.0]);
    assert_eq!((&a + &b).shape(), &[2, 2]);
}

#[test]
fn binary_ops_all_owned_borrowed_pairs() {
    // 1 + 10, all four forms of each operator give the same result
    let a = Tensor::from_vec(vec![1.0f32], &[1]);
    let b = Tensor::from_vec(vec![10.0f32], &[1]);
    for r in [&a + &b, &a + b.clone(), a.clone() + &b, a.clone() + b.clone()] {
        assert_eq!(r.to_vec(), vec![11.0]);
    }
    for r in [&a - &b, &a - b.clone(), a.clone() - &b, a.clone() - b.clone()] {
        assert_eq!(r.to_vec(), vec![-9.0]);
    }
    for r in [&a * &b, &a * b.clone(), a.clone() * &b, a.clone() * b.clone()] {
        assert_eq!(r.to_vec(), vec![10.0]);
    }
    for r in [&a / &b, &a / b.clone(), a.clone() / &b, a.clone() / b.clone()] {
        assert_eq!(r.to_vec(), vec![0.1]);
    }
    assert_eq!((-a.clone()).to_vec(), vec![-1.0]);
}

#[test]
fn binary_ops_forward_values_with_broadcasting() {
    // [2, 3] op [3]: the row vector is repeated down the rows
    let m = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let v = Tensor::from_vec(vec![10.0f64, 20.0, 30.0], &[3]);
    let s = &m + &v;
    assert_eq!(s.shape(), &[2, 3]);
    assert_eq!(s.to_vec(), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    assert_eq!((&v - &m).to_vec(), vec![9.0, 18.0, 27.0, 6.0, 15.0, 24.0]);
    // [3, 1] * [4] -> [3, 4], an outer product
    let c = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3, 1]);
    let r = Tensor::from_vec(vec![1.0f64, 10.0, 100.0, 1000.0], &[4]);
    let o = &c * &r;
    assert_eq!(o.shape(), &[3, 4]);
    assert_eq!(
        o.to_vec(),
        vec![1.0, 10.0, 100.0, 1000.0, 2.0, 20.0, 200.0, 2000.0, 3.0, 30.0, 300.0, 3000.0]
    );
    // [] / [2, 2]
    let s0 = Tensor::scalar(12.0f64);
    let d = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    let q = &s0 / &d;
    assert_eq!(q.shape(), &[2, 2]);
    assert_eq!(q.to_vec(), vec![12.0, 6.0, 4.0, 3.0]);
}

#[test]
fn scalar_ops_forward_values_right_and_left() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 4.0], &[3]);
    assert_eq!((&x + 2.0).to_vec(), vec![3.0, 4.0, 6.0]);
    assert_eq!((&x - 2.0).to_vec(), vec![-1.0, 0.0, 2.0]);
    assert_eq!((&x * 2.0).to_vec(), vec![2.0, 4.0, 8.0]);
    assert_eq!((&x / 2.0).to_vec(), vec![0.5, 1.0, 2.0]);
    assert_eq!((2.0 + &x).to_vec(), vec![3.0, 4.0, 6.0]);
    assert_eq!((2.0 - &x).to_vec(), vec![1.0, 0.0, -2.0]);
    assert_eq!((2.0 * &x).to_vec(), vec![2.0, 4.0, 8.0]);
    assert_eq!((1.0 / &x).to_vec(), vec![1.0, 0.5, 0.25]);
    // owned forms, and chaining
    assert_eq!((x.clone() * 3.0 + 1.0).to_vec(), vec![4.0, 7.0, 13.0]);
    assert_eq!((8.0 / x.clone()).to_vec(), vec![8.0, 4.0, 2.0]);
    // f32 on the left too
    let y = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    assert_eq!((1.0f32 - &y).to_vec(), vec![0.0, -1.0]);
    assert_eq!((4.0f32 / y).to_vec(), vec![4.0, 2.0]);
}

// ------------------------------------------------------------ binary: grads

#[test]
fn gradcheck_binary_ops_same_shape() {
    let a = arange_leaf(&[2, 3], 0.3, 0.4);
    let b = arange_leaf(&[2, 3], -1.1, 0.45);
    check_op(|x| &x[0] + &x[1], &[a.clone(), b.clone()]);
    check_op(|x| &x[0] - &x[1], &[a.clone(), b.clone()]);
    check_op(|x| &x[0] * &x[1], &[a.clone(), b.clone()]);
    check_op(|x| &x[0] / &x[1], &[a, b]); // b has no element near 0
}

#[test]
fn gradcheck_binary_ops_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3], &[3]),
        (&[3, 1], &[4]),
        (&[], &[2, 2]),
        (&[2, 1, 3], &[4, 1]),
        (&[1, 3], &[2, 1]),
    ];
    for (sa, sb) in shapes {
        let a = arange_leaf(sa, 0.7, 0.3);
        let b = arange_leaf(sb, 1.3, 0.25);
        check_op(|x| &x[0] + &x[1], &[a.clone(), b.clone()]);
        check_op(|x| &x[0] - &x[1], &[a.clone(), b.clone()]);
        check_op(|x| &x[0] * &x[1], &[a.clone(), b.clone()]);
        check_op(|x| &x[0] / &x[1], &[a.clone(), b.clone()]);
        // and the other way round
        check_op(|x| &x[1] / &x[0], &[a.clone(), b.clone()]);
        check_op(|x| &x[1] - &x[0], &[a, b]);
    }
}

#[test]
fn gradcheck_binary_op_with_one_input_not_requiring_grad() {
    let a = arange_leaf(&[2, 3], 0.7, 0.3);
    let c = Tensor::from_vec(vec![2.0, -1.5, 0.5], &[3]);
    check_op(|x| &x[0] * &x[1], &[a.clone(), c.clone()]);
    check_op(|x| &x[1] / &x[0], &[a, c]);
}

#[test]
fn gradcheck_same_tensor_on_both_sides() {
    // x ⊙ x, x / x (= 1, gradient 0), x - x
    let a = arange_leaf(&[3], 0.5, 0.6);
    check_op(|x| &x[0] * &x[0], std::slice::from_ref(&a));
    check_op(|x| &x[0] / &x[0], std::slice::from_ref(&a));
    check_op(|x| &x[0] - &x[0], std::slice::from_ref(&a));
}

#[test]
fn gradcheck_scalar_ops_right() {
    let a = arange_leaf(&[2, 2], 0.5, 0.7);
    check_op(|x| &x[0] + 2.5, std::slice::from_ref(&a));
    check_op(|x| &x[0] - 2.5, std::slice::from_ref(&a));
    check_op(|x| &x[0] * 2.5, std::slice::from_ref(&a));
    check_op(|x| &x[0] / 2.5, std::slice::from_ref(&a));
    check_op(|x| x[0].clone() * -3.0 + 1.0, std::slice::from_ref(&a));
}

#[test]
fn gradcheck_scalar_ops_left() {
    let a = arange_leaf(&[2, 2], 0.5, 0.7); // positive, away from 0
    check_op(|x| 2.0 + &x[0], std::slice::from_ref(&a));
    check_op(|x| 2.0 - &x[0], std::slice::from_ref(&a));
    check_op(|x| 2.0 * &x[0], std::slice::from_ref(&a));
    check_op(|x| 1.0 / &x[0], std::slice::from_ref(&a));
    check_op(|x| -3.0 / x[0].clone(), std::slice::from_ref(&a));
}

#[test]
fn scalar_left_gradients_by_hand() {
    // y = Σ (2 - x) + Σ 1/x: dy/dx = -1 - 1/x²
    let x = leaf(&[0.5, 2.0], &[2]);
    ((2.0 - &x).sum() + (1.0 / &x).sum()).backward();
    assert_close(&x.grad().unwrap().to_vec(), &[-1.0 - 4.0, -1.0 - 0.25], 1e-12);
}

#[test]
fn gradcheck_neg() {
    let a = arange_leaf(&[3], -1.0, 0.7);
    check_op(|x| -&x[0], std::slice::from_ref(&a));
    check_op(|x| -(x[0].clone() * 2.0), std::slice::from_ref(&a));
}

// ------------------------------------------------------------------- unary

#[test]
fn unary_ops_forward_values() {
    let e = std::f64::consts::E;
    let x = Tensor::from_vec(vec![0.0f64, 1.0, -1.0], &[3]);
    assert_close(&x.exp().to_vec(), &[1.0, e, 1.0 / e], 1e-15);
    let p = Tensor::from_vec(vec![1.0f64, e, e * e], &[3]);
    assert_close(&p.ln().to_vec(), &[0.0, 1.0, 2.0], 1e-15);
    // tanh(1) = (e² - 1) / (e² + 1)
    assert_close(
        &x.tanh().to_vec(),
        &[0.0, (e * e - 1.0) / (e * e + 1.0), -(e * e - 1.0) / (e * e + 1.0)],
        1e-15,
    );
    let r = Tensor::from_vec(vec![-2.0f64, 0.0, 3.0, -0.5], &[2, 2]);
    assert_eq!(r.relu().to_vec(), vec![0.0, 0.0, 3.0, 0.0]);
    assert_eq!(r.relu().shape(), &[2, 2]);
    let q = Tensor::from_vec(vec![4.0f64, 9.0, 0.25], &[3]);
    assert_close(&q.powf(0.5).to_vec(), &[2.0, 3.0, 0.5], 1e-15);
    assert_close(&q.powf(2.0).to_vec(), &[16.0, 81.0, 0.0625], 1e-15);
    assert_close(&q.powf(3.0).to_vec(), &[64.0, 729.0, 0.015625], 1e-15);
    assert_eq!(q.powf(0.0).to_vec(), vec![1.0, 1.0, 1.0]);
    assert_close(&q.powf(-1.0).to_vec(), &[0.25, 1.0 / 9.0, 4.0], 1e-15);
}

#[test]
fn gradcheck_exp_ln_tanh() {
    let a = arange_leaf(&[2, 3], -1.2, 0.45);
    check_op(|x| x[0].exp(), std::slice::from_ref(&a));
    check_op(|x| x[0].tanh(), std::slice::from_ref(&a));
    let pos = arange_leaf(&[2, 3], 0.3, 0.5);
    check_op(|x| x[0].ln(), std::slice::from_ref(&pos));
}

#[test]
fn gradcheck_relu_away_from_zero() {
    let a = leaf(&[-1.5, -0.2, 0.3, 2.0, -0.7, 1.1], &[2, 3]);
    check_op(|x| x[0].relu(), std::slice::from_ref(&a));
    check_op(|x| (&x[0] * 3.0).relu() * &x[0], std::slice::from_ref(&a));
}

#[test]
fn relu_gradient_is_zero_at_zero_and_for_negatives() {
    // d relu/dx = [x > 0] (0 at x = 0, as PyTorch)
    let x = leaf(&[-1.0, 0.0, 2.0], &[3]);
    x.relu().sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.0, 1.0]);
}

#[test]
fn gradcheck_powf_exponents() {
    let pos = arange_leaf(&[2, 2], 0.4, 0.6);
    let mixed = leaf(&[-1.3, -0.4, 0.6, 1.7], &[2, 2]);
    check_op(|x| x[0].powf(0.5), std::slice::from_ref(&pos));
    check_op(|x| x[0].powf(1.5), std::slice::from_ref(&pos));
    check_op(|x| x[0].powf(-2.0), std::slice::from_ref(&pos));
    for p in [2.0, 3.0, 0.0, 1.0] {
        check_op(move |x| x[0].powf(p), std::slice::from_ref(&mixed));
    }
}

#[test]
fn powf_gradient_by_hand_including_zero_exponent() {
    // y = Σ x^p: dy/dx = p x^(p-1); for p = 0 the gradient is 0 everywhere,
    // also at x = 0 (as PyTorch: no 0 · ∞)
    let x = leaf(&[0.0, 2.0], &[2]);
    x.powf(0.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.0]);
    let x = leaf(&[0.0, 2.0, -3.0], &[3]);
    x.powf(3.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 12.0, 27.0]);
    let x = leaf(&[4.0], &[1]);
    x.powf(0.5).sum().backward();
    assert_close(&x.grad().unwrap().to_vec(), &[0.25], 1e-15); // 0.5 / √4
}

// ------------------------------------------------------------------ matmul

#[test]
fn matmul_forward_values_non_square() {
    // [2, 3] @ [3, 2]
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[2, 2]);
    // row 0: [1+0+3, 0+2+3], row 1: [4+0+6, 0+5+6]
    assert_eq!(c.to_vec(), vec![4.0, 5.0, 10.0, 11.0]);
    // [3, 2] @ [2, 3] -> [3, 3]
    let d = b.matmul(&a);
    assert_eq!(d.shape(), &[3, 3]);
    assert_eq!(d.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 5.0, 7.0, 9.0]);
    // [1, 3] @ [3, 1] -> [1, 1]: a dot product, 1·7 + 2·8 + 3·9
    let r = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[1, 3]);
    let col = Tensor::from_vec(vec![7.0f32, 8.0, 9.0], &[3, 1]);
    assert_eq!(r.matmul(&col).to_vec(), vec![50.0]);
}

#[test]
fn matmul_of_transposed_views_forward() {
    // Aᵀ @ A for A = [[1, 2], [3, 4], [5, 6]]: [[35, 44], [44, 56]]
    let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    assert_eq!(a.t().matmul(&a).to_vec(), vec![35.0, 44.0, 44.0, 56.0]);
    // A @ Aᵀ [3, 3]: row 0 = [5, 11, 17]
    let g = a.matmul(&a.t());
    assert_eq!(g.shape(), &[3, 3]);
    assert_eq!(&g.to_vec()[..3], &[5.0, 11.0, 17.0]);
}

#[test]
fn gradcheck_matmul_non_square() {
    let a = arange_leaf(&[2, 3], -0.9, 0.35);
    let b = arange_leaf(&[3, 4], 0.8, -0.15);
    check_op(|x| x[0].matmul(&x[1]), &[a.clone(), b.clone()]);
    // through transposed (strided) operands: (Bᵀ)[4, 3] @ (Aᵀ)[3, 2]
    check_op(|x| x[1].t().matmul(&x[0].t()), &[a.clone(), b.clone()]);
    // with one side constant
    check_op(|x| x[0].matmul(&x[1]), &[a.detach(), b]);
}

#[test]
fn matmul_gradients_by_hand() {
    // y = Σ A B: dy/dA = 1 Bᵀ (row sums of B, per row), dy/dB = Aᵀ 1 (column sums of A)
    let a = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    a.matmul(&b).sum().backward();
    assert_eq!(a.grad().unwrap().shape(), &[2, 3]);
    assert_eq!(a.grad().unwrap().to_vec(), vec![3.0, 7.0, 11.0, 3.0, 7.0, 11.0]);
    assert_eq!(b.grad().unwrap().shape(), &[3, 2]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![5.0, 5.0, 7.0, 7.0, 9.0, 9.0]);
}

// -------------------------------------------------------------- reductions

#[test]
fn sum_and_mean_forward_values() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let s = x.sum();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.item(), 21.0);
    let m = x.mean();
    assert_eq!(m.shape(), &[] as &[usize]);
    assert_eq!(m.item(), 3.5);
    // of a transposed view: same elements, same sum
    assert_eq!(x.t().sum().item(), 21.0);
    assert_eq!(Tensor::scalar(4.0f32).sum().item(), 4.0);
}

#[test]
fn gradcheck_sum_and_mean() {
    let a = arange_leaf(&[2, 3], -0.5, 0.3);
    check_op(|x| x[0].sum(), std::slice::from_ref(&a));
    check_op(|x| x[0].mean(), std::slice::from_ref(&a));
    check_op(|x| x[0].t().mean() * x[0].sum(), std::slice::from_ref(&a));
}

#[test]
fn mean_gradient_by_hand() {
    // y = mean(x) over 4 elements: dy/dx = 1/4
    let x = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    x.mean().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.25; 4]);
}

// ------------------------------------------------------------------- shape

#[test]
fn shape_ops_forward_values() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let t = x.t();
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(x.transpose(0, 1).to_vec(), t.to_vec());
    assert_eq!(x.transpose(1, 1).to_vec(), x.to_vec());
    let r = x.reshape(&[3, 2]);
    assert_eq!(r.shape(), &[3, 2]);
    assert_eq!(r.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // reshape of a transposed (non-contiguous) view reads row-major of the view
    assert_eq!(t.reshape(&[6]).to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let b = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3, 1]).broadcast_to(&[2, 3, 2]);
    assert_eq!(b.shape(), &[2, 3, 2]);
    assert_eq!(
        b.to_vec(),
        vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
    // t() of 0-D and 1-D tensors is the tensor itself
    let v = Tensor::from_vec(vec![1.0f64, 2.0], &[2]);
    assert_eq!(v.t().shape(), &[2]);
    assert_eq!(Tensor::scalar(1.0f64).t().shape(), &[] as &[usize]);
}

#[test]
fn transpose_3d_forward_values() {
    // x[i, j, k] = 100 i + 10 j + k, shape [2, 2, 3]; y = transpose(0, 2): y[k, j, i] = x[i, j, k]
    let data: Vec<f64> = (0..2)
        .flat_map(|i| (0..2).flat_map(move |j| (0..3).map(move |k| f64::from(100 * i + 10 * j + k))))
        .collect();
    let x = Tensor::from_vec(data, &[2, 2, 3]);
    let y = x.transpose(0, 2);
    assert_eq!(y.shape(), &[3, 2, 2]);
    let expected: Vec<f64> = (0..3)
        .flat_map(|k| (0..2).flat_map(move |j| (0..2).map(move |i| f64::from(100 * i + 10 * j + k))))
        .collect();
    assert_eq!(y.to_vec(), expected);
}

#[test]
fn gradcheck_shape_ops() {
    let a = arange_leaf(&[2, 3], -0.5, 0.3);
    // a weight so that each output element's gradient differs
    let w = |n: usize, shape: &[usize]| {
        Tensor::from_vec((0..n).map(|i| 1.0 + i as f64).collect::<Vec<_>>(), shape)
    };
    check_op(|x| x[0].t(), std::slice::from_ref(&a));
    check_op(|x| x[0].transpose(0, 1), std::slice::from_ref(&a));
    check_op(|x| x[0].reshape(&[3, 2]), std::slice::from_ref(&a));
    check_op(|x| x[0].reshape(&[6]) * w(6, &[6]), std::slice::from_ref(&a));
    check_op(|x| x[0].t().reshape(&[6]) * w(6, &[6]), std::slice::from_ref(&a));
    check_op(|x| x[0].broadcast_to(&[4, 2, 3]), std::slice::from_ref(&a));
    let c = arange_leaf(&[3, 1], 0.2, 0.5);
    check_op(
        |x| x[0].broadcast_to(&[2, 3, 4]) * w(24, &[2, 3, 4]),
        std::slice::from_ref(&c),
    );
    let d3 = arange_leaf(&[2, 3, 4], -1.0, 0.1);
    check_op(
        |x| x[0].transpose(0, 2) * w(24, &[4, 3, 2]),
        std::slice::from_ref(&d3),
    );
}

#[test]
fn broadcast_to_gradient_by_hand() {
    // y = Σ broadcast_to(x, [4, 3]) ⊙ c: dy/dx_j = Σ_i c_ij
    let x = leaf(&[1.0, 2.0, 3.0], &[3]);
    let c = Tensor::from_vec((0..12).map(f64::from).collect(), &[4, 3]);
    (x.broadcast_to(&[4, 3]) * &c).sum().backward();
    // column sums of [[0,1,2],[3,4,5],[6,7,8],[9,10,11]]
    assert_eq!(x.grad().unwrap().to_vec(), vec![18.0, 22.0, 26.0]);
    assert_eq!(x.grad().unwrap().shape(), &[3]);
}

#[test]
fn composite_expression_gradcheck() {
    // a small MLP-like expression mixing everything
    let x = arange_leaf(&[4, 3], -0.6, 0.11);
    let w = arange_leaf(&[3, 2], 0.4, -0.13);
    let b = arange_leaf(&[2], 0.05, 0.1);
    check_op(
        |p| {
            let h = (p[0].matmul(&p[1]) + &p[2]).tanh();
            let z = h.exp() * 0.5 - (1.0 / (h.relu() + 1.5)) + h.powf(2.0);
            (z.t().reshape(&[8]) * 2.0).mean()
        },
        &[x, w, b],
    );
}

// ------------------------------------------------------------- shape errors

#[test]
#[should_panic(expected = "mul: shapes [2, 3] and [4]")]
fn mul_shape_mismatch_panics_naming_op_and_shapes() {
    let _ = &Tensor::<f32>::ones(&[2, 3]) * &Tensor::<f32>::ones(&[4]);
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [2]")]
fn add_shape_mismatch_panics_naming_op_and_shapes() {
    let _ = &Tensor::<f32>::ones(&[2, 3]) + &Tensor::<f32>::ones(&[2]);
}

#[test]
#[should_panic(expected = "sub: shapes [3] and [2, 2]")]
fn sub_shape_mismatch_panics_naming_op_and_shapes() {
    let _ = &Tensor::<f64>::ones(&[3]) - &Tensor::<f64>::ones(&[2, 2]);
}

#[test]
#[should_panic(expected = "div: shapes [4, 1] and [3, 2]")]
fn div_shape_mismatch_panics_naming_op_and_shapes() {
    let _ = &Tensor::<f64>::ones(&[4, 1]) / &Tensor::<f64>::ones(&[3, 2]);
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3] and [4, 2]")]
fn matmul_inner_dim_mismatch_panics_naming_shapes() {
    let _ = Tensor::<f32>::ones(&[2, 3]).matmul(&Tensor::<f32>::ones(&[4, 2]));
}

#[test]
#[should_panic(expected = "broadcast_to: shape [3] cannot be broadcast to [2, 2]")]
fn broadcast_to_incompatible_shape_panics() {
    let _ = Tensor::<f32>::ones(&[3]).broadcast_to(&[2, 2]);
}

#[test]
#[should_panic(expected = "reshape: shape [2, 3] (6 elements) cannot become [4]")]
fn reshape_wrong_numel_panics() {
    let _ = Tensor::<f32>::ones(&[2, 3]).reshape(&[4]);
}

#[test]
#[should_panic(expected = "from_vec: 5 elements cannot have shape [2, 3]")]
fn from_vec_wrong_length_panics() {
    let _ = Tensor::from_vec(vec![1.0f32; 5], &[2, 3]);
}

#[test]
#[should_panic(
    expected = "item: only a tensor with one element can be converted to a scalar, but this one has shape [2, 2]"
)]
fn item_on_more_than_one_element_panics() {
    let _ = Tensor::<f32>::ones(&[2, 2]).item();
}

#[test]
fn item_on_one_element_tensors_of_any_rank() {
    assert_eq!(Tensor::scalar(2.5f32).item(), 2.5);
    assert_eq!(Tensor::from_vec(vec![-1.0f64], &[1, 1, 1]).item(), -1.0);
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]);
    assert_eq!(x.sum().item(), 10.0);
    // of a one-element broadcast view
    assert_eq!(Tensor::scalar(7.0f64).broadcast_to(&[1, 1]).item(), 7.0);
}

// [2, 0] @ [0, 3] = zeros [2, 3]: the product writes into an unfilled
// buffer, so an empty inner dimension must still write every element.
#[test]
fn matmul_with_an_empty_inner_dimension_is_zeros() {
    let a = Tensor::<f32>::zeros(&[2, 0]).set_requires_grad(true);
    let b = Tensor::<f32>::zeros(&[0, 3]).set_requires_grad(true);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(c.to_vec(), vec![0.0; 6]);
    c.sum().backward();
    assert_eq!(a.grad().unwrap().shape(), &[2, 0]);
    assert_eq!(b.grad().unwrap().shape(), &[0, 3]);
}

/// Products big enough to be split over threads (along the rows when the
/// result is tall, the columns when it is wide; sizes not multiples of the
/// parts), with plain and transposed operands, against a naive triple loop.
#[test]
fn large_matmuls_split_over_threads_match_a_naive_product() {
    let naive = |a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)| {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    };
    tapegrad::manual_seed(3);
    for (m, k, n) in [(301, 150, 97), (97, 150, 301), (257, 64, 259)] {
        let a = Tensor::<f64>::randn(&[m, k]);
        let b = Tensor::<f64>::randn(&[k, n]);
        let want = naive(&a.to_vec(), &b.to_vec(), (m, k, n));
        // The same matrices stored column-major, seen through `t()`.
        let col_major = |x: &Tensor<f64>| Tensor::from_vec(x.t().to_vec(), &[x.shape()[1], x.shape()[0]]).t();
        let through_views = col_major(&a).matmul(&col_major(&b));
        for c in [a.matmul(&b), through_views] {
            assert_eq!(c.shape(), &[m, n]);
            for (x, y) in c.to_vec().iter().zip(&want) {
                assert!((x - y).abs() <= 1e-12 * k as f64, "{m}x{k}x{n}: {x} vs {y}");
            }
        }
    }
}
