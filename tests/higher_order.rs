//! Higher-order gradients: create_graph through grad() and backward_opts,
//! Hessian-vector products, gradcheck of a gradient, and second derivatives
//! through each op.

mod common;

use common::{assert_close, check_op, leaf};
use tapegrad::prelude::*;

fn create_graph() -> GradOptions<f64> {
    GradOptions {
        create_graph: true,
        ..Default::default()
    }
}

/// d out / d x with create_graph (the result is differentiable again).
fn d(out: &Tensor<f64>, x: &Tensor<f64>) -> Tensor<f64> {
    tapegrad::grad(std::slice::from_ref(out), std::slice::from_ref(x), create_graph())[0]
        .clone()
        .expect("the output depends on x")
}

/// d out / d x, without create_graph.
fn d_plain(out: &Tensor<f64>, x: &Tensor<f64>) -> Tensor<f64> {
    tapegrad::grad(
        std::slice::from_ref(out),
        std::slice::from_ref(x),
        GradOptions::default(),
    )[0]
    .clone()
    .expect("the output depends on x")
}

#[test]
fn second_derivative_of_cube_via_grad_twice() {
    // y = Σ x³, dy/dx = 3x², d²y/dx² = 6x
    let xs = [2.0, -1.0, 0.5];
    let x = leaf(&xs, &[3]);
    let y = x.powf(3.0).sum();
    let dy = d(&y, &x);
    assert!(
        dy.requires_grad(),
        "create_graph makes the gradient differentiable"
    );
    assert_close(&dy.to_vec(), &xs.map(|v| 3.0 * v * v), 1e-12);
    let d2y = d_plain(&dy.sum(), &x);
    assert_close(&d2y.to_vec(), &xs.map(|v| 6.0 * v), 1e-12);
    assert!(x.grad().is_none(), "grad() leaves .grad alone");
}

#[test]
fn second_derivative_of_cube_written_as_products() {
    // y = Σ x ⊙ x ⊙ x, d²y/dx² = 6x
    let xs = [1.5, -0.5];
    let x = leaf(&xs, &[2]);
    let y = (&x * &x * &x).sum();
    let d2y = d_plain(&d(&y, &x).sum(), &x);
    assert_close(&d2y.to_vec(), &xs.map(|v| 6.0 * v), 1e-12);
}

#[test]
fn second_derivative_of_cube_via_backward_create_graph_then_grad() {
    // y = Σ x³: backward(create_graph) puts 3x² into x.grad, differentiable;
    // d/dx Σ (x.grad) = 6x
    let xs = [2.0, -1.0];
    let x = leaf(&xs, &[2]);
    x.powf(3.0).sum().backward_opts(BackwardOptions {
        create_graph: true,
        ..Default::default()
    });
    let g = x.grad().expect("backward filled x.grad");
    assert!(g.requires_grad(), "under create_graph .grad has a graph");
    assert_close(&g.to_vec(), &xs.map(|v| 3.0 * v * v), 1e-12);
    let d2y = d_plain(&g.sum(), &x);
    assert_close(&d2y.to_vec(), &xs.map(|v| 6.0 * v), 1e-12);
    // grad() did not touch x.grad
    assert_close(&x.grad().unwrap().to_vec(), &xs.map(|v| 3.0 * v * v), 1e-12);
}

#[test]
fn third_derivative_of_fourth_power() {
    // y = x⁴: y' = 4x³, y'' = 12x², y''' = 24x
    let x = leaf(&[1.5], &[1]);
    let y = x.powf(4.0).sum();
    let d1 = d(&y, &x);
    let d2 = d(&d1.sum(), &x);
    let d3 = d_plain(&d2.sum(), &x);
    assert_close(&d1.to_vec(), &[4.0 * 1.5f64.powi(3)], 1e-12);
    assert_close(&d2.to_vec(), &[12.0 * 1.5f64.powi(2)], 1e-12);
    assert_close(&d3.to_vec(), &[24.0 * 1.5], 1e-12);
}

#[test]
fn mixed_partial_derivative() {
    // f = Σ x² y³: ∂f/∂x = 2x y³, ∂²f/∂y∂x = 6x y²
    let (xv, yv) = ([1.0, -2.0], [0.5, 3.0]);
    let x = leaf(&xv, &[2]);
    let y = leaf(&yv, &[2]);
    let f = (&x * &x * y.powf(3.0)).sum();
    let fx = d(&f, &x);
    assert_close(&fx.to_vec(), &[2.0 * 1.0 * 0.125, 2.0 * -2.0 * 27.0], 1e-12);
    let fxy = d_plain(&fx.sum(), &y);
    assert_close(&fxy.to_vec(), &[6.0 * 1.0 * 0.25, 6.0 * -2.0 * 9.0], 1e-12);
}

#[test]
fn hessian_vector_product_matches_analytic_hessian() {
    // f(x) = Σ_i Σ_j x_i² x_j = (Σ x_i²)(Σ x_j) = S2 S1
    // ∂f/∂x_k   = 2 x_k S1 + S2
    // ∂²f/∂x_k∂x_l = 2 δ_kl S1 + 2 x_k + 2 x_l
    // H v computed as ∇(∇f · v)
    let xs = [1.0, -2.0, 0.5, 3.0];
    let vs = [0.3, 1.0, -1.5, 2.0];
    let n = xs.len();
    let x = leaf(&xs, &[n]);
    let v = Tensor::from_vec(vs.to_vec(), &[n]);
    let f = (&x * &x).sum() * x.sum();

    let s1: f64 = xs.iter().sum();
    let s2: f64 = xs.iter().map(|a| a * a).sum();
    let g = d(&f, &x);
    let g_expected: Vec<f64> = xs.iter().map(|&a| 2.0 * a * s1 + s2).collect();
    assert_close(&g.to_vec(), &g_expected, 1e-12);

    let hv = d_plain(&(&g * &v).sum(), &x);
    let hess = |k: usize, l: usize| {
        let delta = if k == l { 1.0 } else { 0.0 };
        2.0 * delta * s1 + 2.0 * xs[k] + 2.0 * xs[l]
    };
    let hv_expected: Vec<f64> = (0..n).map(|k| (0..n).map(|l| hess(k, l) * vs[l]).sum()).collect();
    assert_close(&hv.to_vec(), &hv_expected, 1e-12);
}

#[test]
fn full_hessian_by_rows_via_grad_outputs() {
    // Same f = S2 S1: row k of H is ∇(∂f/∂x_k), obtained with grad_outputs e_k.
    let xs = [0.5, -1.0, 2.0];
    let n = xs.len();
    let x = leaf(&xs, &[n]);
    let f = (&x * &x).sum() * x.sum();
    let g = d(&f, &x);
    let s1: f64 = xs.iter().sum();
    for k in 0..n {
        let mut e = vec![0.0; n];
        e[k] = 1.0;
        let row = tapegrad::grad(
            &[g.clone()],
            &[x.clone()],
            GradOptions {
                grad_outputs: Some(vec![Tensor::from_vec(e, &[n])]),
                retain_graph: true,
                create_graph: false,
            },
        )[0]
        .clone()
        .unwrap();
        let expected: Vec<f64> = (0..n)
            .map(|l| 2.0 * if k == l { s1 } else { 0.0 } + 2.0 * xs[k] + 2.0 * xs[l])
            .collect();
        assert_close(&row.to_vec(), &expected, 1e-12);
    }
}

#[test]
fn gradcheck_of_a_gradient() {
    // g(x) = ∇ Σ (tanh(x) ⊙ x²), computed with create_graph; gradcheck
    // compares its Jacobian (the Hessian) with finite differences of g.
    let x = leaf(&[0.3, -0.8, 1.2], &[3]);
    check_op(
        |xs| {
            let y = (xs[0].tanh() * &xs[0] * &xs[0]).sum();
            tapegrad::grad(&[y], &[xs[0].clone()], create_graph())[0]
                .clone()
                .expect("y depends on x")
        },
        &[x],
    );
}

#[test]
fn gradcheck_of_a_gradient_of_two_inputs() {
    // g(a, b) = ∂/∂a Σ (a ⊙ b)² ⊙ exp(b) = 2 a b² exp(b); its Jacobian w.r.t.
    // a and b (second derivatives) against finite differences
    let a = leaf(&[0.3, -0.8], &[2]);
    let b = leaf(&[1.1, 0.4], &[2]);
    check_op(
        |xs| {
            let y = ((&xs[0] * &xs[1]).powf(2.0) * xs[1].exp()).sum();
            tapegrad::grad(&[y], &[xs[0].clone()], create_graph())[0]
                .clone()
                .expect("y depends on a")
        },
        &[a, b],
    );
}

#[test]
fn gradcheck_of_a_layer_norm_gradient() {
    // g(x, u) = ∂/∂x Σ u ⊙ layer_norm(x): its Jacobian in x and u runs both
    // halves of layer_norm's double backward. eps = 0.5, far from 0, so
    // that the eps in the second derivative counts.
    let x = leaf(&[0.3, -0.8, 1.2, 0.1, -0.4, 0.9, 2.0, -1.5], &[2, 4]);
    let u = leaf(&[1.1, 0.4, -0.7, 0.2, 0.5, -1.3, 0.8, 0.6], &[2, 4]);
    check_op(
        |xs| {
            let y = (xs[0].layer_norm(&[4], None, None, 0.5) * &xs[1]).sum();
            tapegrad::grad(&[y], &[xs[0].clone()], create_graph())[0]
                .clone()
                .expect("y depends on x")
        },
        &[x, u],
    );
}

// ------------------------------------------------ create_graph through ops

#[test]
fn create_graph_through_matmul() {
    // f(x) = xᵀ A x (x: [n, 1]): ∇f = (A + Aᵀ) x, H = A + Aᵀ, so ∇(∇f · v) = (A + Aᵀ) v
    let av = [1.0, 2.0, 0.0, -1.0, 3.0, 0.5, 4.0, -2.0, 1.0];
    let xs = [1.0, -1.0, 2.0];
    let vs = [0.5, 2.0, -1.0];
    let a = Tensor::from_vec(av.to_vec(), &[3, 3]);
    let x = leaf(&xs, &[3, 1]);
    let v = Tensor::from_vec(vs.to_vec(), &[3, 1]);
    let f = x.t().matmul(&a.matmul(&x)).sum();
    let sym = |i: usize, j: usize| av[i * 3 + j] + av[j * 3 + i];
    let g = d(&f, &x);
    let g_expected: Vec<f64> = (0..3).map(|i| (0..3).map(|j| sym(i, j) * xs[j]).sum()).collect();
    assert_close(&g.to_vec(), &g_expected, 1e-12);
    let hv = d_plain(&(&g * &v).sum(), &x);
    let hv_expected: Vec<f64> = (0..3).map(|i| (0..3).map(|j| sym(i, j) * vs[j]).sum()).collect();
    assert_close(&hv.to_vec(), &hv_expected, 1e-12);
}

/// Row-major [m, k] @ [k, n], by loops.
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    (0..m * n)
        .map(|ij| (0..k).map(|l| a[ij / n * k + l] * b[l * n + ij % n]).sum())
        .collect()
}

/// Row-major transpose of an [r, c] matrix.
fn tr(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..r * c).map(|ji| a[(ji % r) * c + ji / r]).collect()
}

#[test]
fn create_graph_through_matmul_of_two_parameters() {
    // f(A, B) = Σ (A B)² with P = A B: ∂f/∂A = 2 P Bᵀ.
    // u = Σ (∂f/∂A ⊙ V) = 2 Σ_ik V_ik Σ_j P_ij B_kj, so
    // ∂u/∂B = 2 Aᵀ V B + 2 Vᵀ P and ∂u/∂A = 2 V B Bᵀ.
    let av = [1.0, 2.0, -1.0, 0.5, 0.0, 3.0]; // [2, 3]
    let bv = [0.5, -1.0, 2.0, 1.0, 0.0, 1.5]; // [3, 2]
    let vv = [1.0, -1.0, 0.5, 2.0, 0.0, -0.5]; // [2, 3]
    let a = leaf(&av, &[2, 3]);
    let b = leaf(&bv, &[3, 2]);
    let v = Tensor::from_vec(vv.to_vec(), &[2, 3]);
    let p = a.matmul(&b);
    let f = (&p * &p).sum();
    let fa = d(&f, &a);
    let pv = mm(&av, &bv, 2, 3, 2);
    let fa_expected: Vec<f64> = mm(&pv, &tr(&bv, 3, 2), 2, 2, 3).iter().map(|x| 2.0 * x).collect();
    assert_close(&fa.to_vec(), &fa_expected, 1e-12);

    let u = (&fa * &v).sum();
    let gs = tapegrad::grad(&[u], &[a.clone(), b.clone()], GradOptions::default());
    let ua_expected: Vec<f64> = mm(&mm(&vv, &bv, 2, 3, 2), &tr(&bv, 3, 2), 2, 2, 3)
        .iter()
        .map(|x| 2.0 * x)
        .collect();
    let atvb = mm(&mm(&tr(&av, 2, 3), &vv, 3, 2, 3), &bv, 3, 3, 2);
    let vtp = mm(&tr(&vv, 2, 3), &pv, 3, 2, 2);
    let ub_expected: Vec<f64> = atvb.iter().zip(&vtp).map(|(x, y)| 2.0 * x + 2.0 * y).collect();
    assert_close(&gs[0].as_ref().unwrap().to_vec(), &ua_expected, 1e-12);
    assert_close(&gs[1].as_ref().unwrap().to_vec(), &ub_expected, 1e-12);
}

#[test]
fn create_graph_through_tanh() {
    // y = tanh(x): y' = 1 - tanh², y'' = -2 tanh (1 - tanh²)
    let xs = [-0.5, 0.2, 1.3];
    let x = leaf(&xs, &[3]);
    let d1 = d(&x.tanh().sum(), &x);
    assert_close(&d1.to_vec(), &xs.map(|v: f64| 1.0 - v.tanh().powi(2)), 1e-12);
    let d2 = d_plain(&d1.sum(), &x);
    assert_close(
        &d2.to_vec(),
        &xs.map(|v: f64| -2.0 * v.tanh() * (1.0 - v.tanh().powi(2))),
        1e-12,
    );
}

#[test]
fn create_graph_through_exp() {
    // y = exp(2x): y' = 2 exp(2x), y'' = 4 exp(2x)
    let xs = [-0.5, 0.0, 0.7];
    let x = leaf(&xs, &[3]);
    let d1 = d(&(&x * 2.0).exp().sum(), &x);
    assert_close(&d1.to_vec(), &xs.map(|v: f64| 2.0 * (2.0 * v).exp()), 1e-12);
    let d2 = d_plain(&d1.sum(), &x);
    assert_close(&d2.to_vec(), &xs.map(|v: f64| 4.0 * (2.0 * v).exp()), 1e-12);
}

#[test]
fn create_graph_through_ln() {
    // y = ln(x): y' = 1/x, y'' = -1/x²
    let xs = [0.5, 1.0, 4.0];
    let x = leaf(&xs, &[3]);
    let d1 = d(&x.ln().sum(), &x);
    assert_close(&d1.to_vec(), &xs.map(|v| 1.0 / v), 1e-12);
    let d2 = d_plain(&d1.sum(), &x);
    assert_close(&d2.to_vec(), &xs.map(|v| -1.0 / (v * v)), 1e-12);
}

#[test]
fn create_graph_through_powf() {
    // y = x^p: y' = p x^(p-1), y'' = p (p-1) x^(p-2)
    let xs = [0.5, 1.5, 3.0];
    for p in [0.5, 2.0, 3.0, -1.0, 2.5] {
        let x = leaf(&xs, &[3]);
        let d1 = d(&x.powf(p).sum(), &x);
        assert_close(&d1.to_vec(), &xs.map(|v: f64| p * v.powf(p - 1.0)), 1e-12);
        let d2 = d_plain(&d1.sum(), &x);
        assert_close(
            &d2.to_vec(),
            &xs.map(|v: f64| p * (p - 1.0) * v.powf(p - 2.0)),
            1e-12,
        );
    }
}

#[test]
fn create_graph_through_div() {
    // f = Σ a / b: ∂f/∂b = -a/b², ∂²f/∂b² = 2a/b³, ∂²f/∂a∂b = -1/b²
    let (av, bv) = ([1.0, -2.0], [0.5, 4.0]);
    let a = leaf(&av, &[2]);
    let b = leaf(&bv, &[2]);
    let f = (&a / &b).sum();
    let fb = d(&f, &b);
    assert_close(&fb.to_vec(), &[-1.0 / 0.25, 2.0 / 16.0], 1e-12);
    let gs = tapegrad::grad(&[fb.sum()], &[a.clone(), b.clone()], GradOptions::default());
    assert_close(
        &gs[0].as_ref().unwrap().to_vec(),
        &[-1.0 / 0.25, -1.0 / 16.0],
        1e-12,
    );
    assert_close(
        &gs[1].as_ref().unwrap().to_vec(),
        &[2.0 / 0.125, -4.0 / 64.0],
        1e-12,
    );
}

#[test]
fn create_graph_through_scalar_reciprocal() {
    // y = 1/x: y' = -1/x², y'' = 2/x³
    let xs = [0.5, -2.0];
    let x = leaf(&xs, &[2]);
    let d1 = d(&(1.0 / &x).sum(), &x);
    assert_close(&d1.to_vec(), &xs.map(|v| -1.0 / (v * v)), 1e-12);
    let d2 = d_plain(&d1.sum(), &x);
    assert_close(&d2.to_vec(), &xs.map(|v| 2.0 / (v * v * v)), 1e-12);
}

#[test]
fn create_graph_through_relu() {
    // y = Σ relu(x)³: y' = 3 relu(x)² [x > 0], y'' = 6 relu(x) [x > 0]
    let xs = [-1.0, 0.5, 2.0, -0.3];
    let relu = |v: f64| v.max(0.0);
    let x = leaf(&xs, &[4]);
    let d1 = d(&x.relu().powf(3.0).sum(), &x);
    assert_close(&d1.to_vec(), &xs.map(|v| 3.0 * relu(v).powi(2)), 1e-12);
    let d2 = d_plain(&d1.sum(), &x);
    assert_close(&d2.to_vec(), &xs.map(|v| 6.0 * relu(v)), 1e-12);
}

#[test]
fn second_derivative_of_plain_relu_is_zero_not_an_error() {
    // y = Σ relu(x): y' = [x > 0], y'' = 0. As in PyTorch (whose relu
    // gradient, threshold_backward(grad, result), depends on the saved
    // result), the create_graph gradient requires grad and differentiates
    // to zeros.
    let x = leaf(&[-1.0, 0.5, 2.0], &[3]);
    let d1 = d(&x.relu().sum(), &x);
    assert_eq!(d1.to_vec(), vec![0.0, 1.0, 1.0]);
    assert!(
        d1.requires_grad(),
        "the relu gradient under create_graph is differentiable"
    );
    let d2 = d_plain(&d1.sum(), &x);
    assert_eq!(d2.to_vec(), vec![0.0, 0.0, 0.0]);
}

#[test]
fn create_graph_through_broadcasting_and_reductions() {
    // f(x, w) = Σ_ij (x_i w_j)² with x: [2, 1], w: [3]
    // ∂f/∂x_i = 2 x_i Σ_j w_j², ∂²f/∂x_i∂w_j = 4 x_i w_j
    let (xv, wv) = ([1.0, -2.0], [0.5, 1.0, -1.5]);
    let x = leaf(&xv, &[2, 1]);
    let w = leaf(&wv, &[3]);
    let p = &x * &w;
    let f = (&p * &p).mean() * 6.0; // mean over 6 elements, times 6 = sum
    let fx = d(&f, &x);
    let sw2: f64 = wv.iter().map(|v| v * v).sum();
    assert_eq!(fx.shape(), &[2, 1]);
    assert_close(&fx.to_vec(), &xv.map(|v| 2.0 * v * sw2), 1e-12);
    // ∂/∂w_j Σ_i ∂f/∂x_i = Σ_i 4 x_i w_j
    let fxw = d_plain(&fx.sum(), &w);
    let sx: f64 = xv.iter().sum();
    assert_close(&fxw.to_vec(), &wv.map(|v| 4.0 * sx * v), 1e-12);
}

#[test]
fn create_graph_gradient_stored_in_grad_does_not_leak_into_next_backward() {
    // backward(create_graph) then a plain backward of the same kind: the sums
    // are right (3x² + 3x² = 6x²) and the graph in .grad still differentiates.
    let xs = [1.0, 2.0];
    let x = leaf(&xs, &[2]);
    x.powf(3.0).sum().backward_opts(BackwardOptions {
        create_graph: true,
        ..Default::default()
    });
    x.powf(3.0).sum().backward_opts(BackwardOptions {
        create_graph: true,
        ..Default::default()
    });
    let g = x.grad().unwrap();
    assert_close(&g.to_vec(), &xs.map(|v| 6.0 * v * v), 1e-12);
    let d2 = d_plain(&g.sum(), &x);
    assert_close(&d2.to_vec(), &xs.map(|v| 12.0 * v), 1e-12);
}
