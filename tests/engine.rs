//! The engine: backward, backward_with, grad, accumulation, retain_graph,
//! leaves and non-leaves, broadcasting gradients, detach, Send + Sync.

mod common;

use common::{assert_close, to_f64};
use tapegrad::prelude::*;

// ------------------------------------------------------------------ backward

/// y = Σ (x² + 5x), dy/dx = 2x + 5, for any element type.
fn check_backward_on_scalar<T: Float>() {
    let xs = [1.0, -2.0, 0.5];
    let x = Tensor::<T>::from_vec(xs.iter().map(|&v| T::of(v)).collect(), &[3]).set_requires_grad(true);
    let y = (&x * &x + &x * T::of(5.0)).sum();
    assert_eq!(y.shape(), &[] as &[usize]);
    // forward: Σ x² + 5 Σ x = (1 + 4 + 0.25) + 5 (1 - 2 + 0.5) = 5.25 - 2.5
    assert_close(&to_f64(&y), &[2.75], 1e-6);
    y.backward();
    let expected: Vec<f64> = xs.iter().map(|&v| 2.0 * v + 5.0).collect();
    assert_close(&to_f64(&x.grad().expect("x gets a gradient")), &expected, 1e-6);
}

#[test]
fn backward_on_scalar_f32() {
    check_backward_on_scalar::<f32>();
}

#[test]
fn backward_on_scalar_f64() {
    check_backward_on_scalar::<f64>();
}

#[test]
fn backward_on_one_element_non_0d_tensor() {
    // y = 3x for x of shape [1, 1]: one element, so an implicit gradient exists
    let x = Tensor::from_vec(vec![2.0f32], &[1, 1]).set_requires_grad(true);
    let y = &x * 3.0;
    y.backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0]);
    assert_eq!(x.grad().unwrap().shape(), &[1, 1]);
}

#[test]
fn backward_with_explicit_grad_on_non_scalar() {
    // y = x², dy/dx = 2x; with upstream v the gradient is v ⊙ 2x
    let x = Tensor::from_vec(vec![1.0f64, 2.0, -3.0, 0.5], &[2, 2]).set_requires_grad(true);
    let v = Tensor::from_vec(vec![1.0, 0.5, 2.0, -1.0], &[2, 2]);
    let y = &x * &x;
    y.backward_with(&v);
    let g = x.grad().unwrap();
    assert_eq!(g.shape(), &[2, 2]);
    assert_close(&g.to_vec(), &[2.0, 2.0, -12.0, -1.0], 1e-12);
}

#[test]
fn backward_opts_with_grad_field_equals_backward_with() {
    // y = 2x + 1, upstream v: grad = 2v
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).set_requires_grad(true);
    let y = &x * 2.0 + 1.0;
    y.backward_opts(BackwardOptions {
        grad: Some(Tensor::from_vec(vec![1.0, -1.0, 0.5], &[3])),
        ..Default::default()
    });
    assert_close(&x.grad().unwrap().to_vec(), &[2.0, -2.0, 1.0], 1e-12);
}

#[test]
#[should_panic(expected = "backward_with")]
fn backward_of_non_scalar_panics_naming_backward_with() {
    let x = Tensor::<f32>::ones(&[3]).set_requires_grad(true);
    let y = &x * 2.0;
    y.backward();
}

#[test]
fn grads_accumulate_across_backwards_and_zero_grad_resets_to_none() {
    // y = Σ x³, dy/dx = 3x²
    let x = Tensor::from_vec(vec![1.0f64, -2.0], &[2]).set_requires_grad(true);
    assert!(x.grad().is_none(), "no gradient before any backward");
    let y = x.powf(3.0).sum();
    y.backward_opts(BackwardOptions {
        retain_graph: true,
        ..Default::default()
    });
    assert_close(&x.grad().unwrap().to_vec(), &[3.0, 12.0], 1e-12);
    y.backward();
    assert_close(&x.grad().unwrap().to_vec(), &[6.0, 24.0], 1e-12);
    // a fresh graph adds to it too: z = Σ x, dz/dx = 1
    x.sum().backward();
    assert_close(&x.grad().unwrap().to_vec(), &[7.0, 25.0], 1e-12);
    x.zero_grad();
    assert!(x.grad().is_none());
    // and after zero_grad the next backward starts from nothing
    x.sum().backward();
    assert_close(&x.grad().unwrap().to_vec(), &[1.0, 1.0], 1e-12);
}

#[test]
#[should_panic(expected = "retain_graph")]
fn second_backward_through_exp_panics_naming_retain_graph() {
    // exp saves its output; the first backward frees it
    let x = Tensor::from_vec(vec![0.5f32, 1.0], &[2]).set_requires_grad(true);
    let y = x.exp().sum();
    y.backward();
    y.backward();
}

#[test]
#[should_panic(expected = "retain_graph")]
fn second_backward_through_mul_panics_naming_retain_graph() {
    // mul saves its inputs; the first backward frees them
    let x = Tensor::from_vec(vec![0.5f64, 1.0], &[2]).set_requires_grad(true);
    let w = Tensor::from_vec(vec![2.0f64, 3.0], &[2]).set_requires_grad(true);
    let y = (&x * &w).sum();
    y.backward();
    y.backward();
}

#[test]
#[should_panic(expected = "retain_graph")]
fn grad_without_retain_graph_frees_the_graph_for_a_later_backward() {
    // y = Σ exp(x): grad() frees the saved output too, unless retain_graph
    let x = Tensor::from_vec(vec![0.5f64], &[1]).set_requires_grad(true);
    let y = x.exp().sum();
    let _ = tapegrad::grad(&[y.clone()], &[x.clone()], GradOptions::default());
    y.backward();
}

#[test]
fn retain_graph_allows_a_second_backward_and_doubles_the_grad() {
    // y = Σ exp(x) ⊙ w: dy/dx = exp(x) w, dy/dw = exp(x)
    let xs = [0.0f64, 1.0];
    let x = Tensor::from_vec(xs.to_vec(), &[2]).set_requires_grad(true);
    let w = Tensor::from_vec(vec![2.0, -1.0], &[2]).set_requires_grad(true);
    let y = (x.exp() * &w).sum();
    y.backward_opts(BackwardOptions {
        retain_graph: true,
        ..Default::default()
    });
    let gx1 = [2.0 * xs[0].exp(), -xs[1].exp()];
    let gw1 = [xs[0].exp(), xs[1].exp()];
    assert_close(&x.grad().unwrap().to_vec(), &gx1, 1e-12);
    assert_close(&w.grad().unwrap().to_vec(), &gw1, 1e-12);
    y.backward();
    assert_close(&x.grad().unwrap().to_vec(), &[2.0 * gx1[0], 2.0 * gx1[1]], 1e-12);
    assert_close(&w.grad().unwrap().to_vec(), &[2.0 * gw1[0], 2.0 * gw1[1]], 1e-12);
}

#[test]
#[should_panic(expected = "does not require grad")]
fn backward_on_tensor_without_grad_panics() {
    let x = Tensor::<f32>::ones(&[1]);
    (&x * 2.0).backward();
}

#[test]
#[should_panic(expected = "shape")]
fn backward_with_wrong_grad_shape_panics() {
    let x = Tensor::<f32>::ones(&[3]).set_requires_grad(true);
    let y = &x * 2.0;
    y.backward_with(&Tensor::ones(&[2]));
}

// --------------------------------------------------------------------- grad

#[test]
fn grad_leaves_every_grad_untouched_and_returns_none_for_unused_inputs() {
    // y = Σ x ⊙ w, dy/dx = w, dy/dw = x; z is not used
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    let w = Tensor::from_vec(vec![3.0f64, -4.0], &[2]).set_requires_grad(true);
    let z = Tensor::from_vec(vec![5.0f64], &[1]).set_requires_grad(true);
    let y = (&x * &w).sum();
    let gs = tapegrad::grad(&[y], &[x.clone(), z.clone(), w.clone()], GradOptions::default());
    assert_eq!(gs.len(), 3);
    assert_close(
        &gs[0].as_ref().expect("y depends on x").to_vec(),
        &[3.0, -4.0],
        1e-12,
    );
    assert!(gs[1].is_none(), "y does not depend on z");
    assert_close(
        &gs[2].as_ref().expect("y depends on w").to_vec(),
        &[1.0, 2.0],
        1e-12,
    );
    assert!(x.grad().is_none() && w.grad().is_none() && z.grad().is_none());
}

#[test]
fn grad_leaves_an_existing_grad_unchanged() {
    // y = Σ 2x: backward puts 2 into x.grad; grad() then must not add to it
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    (&x * 2.0).sum().backward();
    let y = (&x * 3.0).sum();
    let g = tapegrad::grad(&[y], &[x.clone()], GradOptions::default());
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![3.0, 3.0]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 2.0]);
}

#[test]
fn grad_with_respect_to_a_non_leaf_intermediate() {
    // h = exp(x), y = Σ 3h²: dy/dh = 6h, dy/dx = 6h · exp(x) = 6 exp(2x)
    let xs = [0.0f64, 0.5];
    let x = Tensor::from_vec(xs.to_vec(), &[2]).set_requires_grad(true);
    let h = x.exp();
    let y = (&h * &h * 3.0).sum();
    let gs = tapegrad::grad(&[y], &[h.clone(), x.clone()], GradOptions::default());
    let dh: Vec<f64> = xs.iter().map(|v| 6.0 * v.exp()).collect();
    let dx: Vec<f64> = xs.iter().map(|v| 6.0 * (2.0 * v).exp()).collect();
    assert_close(&gs[0].as_ref().unwrap().to_vec(), &dh, 1e-12);
    assert_close(&gs[1].as_ref().unwrap().to_vec(), &dx, 1e-12);
    assert!(x.grad().is_none());
}

#[test]
fn grad_of_non_leaf_sums_every_path_into_it() {
    // h = 2x, y = Σ (h ⊙ h + h): dy/dh = 2h + 1
    let x = Tensor::from_vec(vec![1.0f64, -1.0], &[2]).set_requires_grad(true);
    let h = &x * 2.0;
    let y = (&h * &h + &h).sum();
    let g = tapegrad::grad(&[y], &[h.clone()], GradOptions::default());
    assert_close(&g[0].as_ref().unwrap().to_vec(), &[5.0, -3.0], 1e-12);
}

#[test]
fn grad_with_grad_outputs() {
    // y = x ⊙ w (shape [3]), upstream v: dx = v ⊙ w, dw = v ⊙ x
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).set_requires_grad(true);
    let w = Tensor::from_vec(vec![-1.0f64, 0.5, 2.0], &[3]).set_requires_grad(true);
    let y = &x * &w;
    let v = Tensor::from_vec(vec![1.0, 2.0, -1.0], &[3]);
    let gs = tapegrad::grad(
        &[y],
        &[x.clone(), w.clone()],
        GradOptions {
            grad_outputs: Some(vec![v]),
            ..Default::default()
        },
    );
    assert_close(&gs[0].as_ref().unwrap().to_vec(), &[-1.0, 1.0, -2.0], 1e-12);
    assert_close(&gs[1].as_ref().unwrap().to_vec(), &[1.0, 4.0, -3.0], 1e-12);
}

#[test]
fn grad_of_several_outputs_sums_their_gradients() {
    // y1 = Σ x², y2 = Σ 3x, with grad_outputs 1 and 2: 2x + 2·3
    let x = Tensor::from_vec(vec![1.0f64, -2.0], &[2]).set_requires_grad(true);
    let y1 = (&x * &x).sum();
    let y2 = (&x * 3.0).sum();
    let gs = tapegrad::grad(
        &[y1, y2],
        &[x.clone()],
        GradOptions {
            grad_outputs: Some(vec![Tensor::scalar(1.0), Tensor::scalar(2.0)]),
            ..Default::default()
        },
    );
    assert_close(&gs[0].as_ref().unwrap().to_vec(), &[8.0, 2.0], 1e-12);
}

// -------------------------------------------------------------- graph shapes

#[test]
fn leaf_used_twice_gets_the_sum_of_both_uses() {
    // y = Σ x ⊙ x, dy/dx = 2x
    let x = Tensor::from_vec(vec![1.5f32, -2.0, 3.0], &[3]).set_requires_grad(true);
    (&x * &x).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, -4.0, 6.0]);
}

#[test]
fn diamond_graph_gets_the_total_gradient() {
    // u = 3x; y = Σ (tanh(u) + exp(u)):
    // dy/dx = 3 (1 - tanh²(3x)) + 3 exp(3x)
    let xs = [0.1f64, -0.2, 0.3];
    let x = Tensor::from_vec(xs.to_vec(), &[3]).set_requires_grad(true);
    let u = &x * 3.0;
    let y = (u.tanh() + u.exp()).sum();
    y.backward();
    let expected: Vec<f64> = xs
        .iter()
        .map(|&v| 3.0 * (1.0 - (3.0 * v).tanh().powi(2)) + 3.0 * (3.0 * v).exp())
        .collect();
    assert_close(&x.grad().unwrap().to_vec(), &expected, 1e-12);
}

#[test]
fn deep_diamond_with_repeated_shared_subexpressions() {
    // a = x; repeat 10 times: a = a + a  =>  a = 2^10 x, da/dx = 1024
    let x = Tensor::from_vec(vec![1.0f64], &[1]).set_requires_grad(true);
    let mut a = x.clone();
    for _ in 0..10 {
        a = &a + &a;
    }
    assert_eq!(a.item(), 1024.0);
    a.backward();
    assert_eq!(x.grad().unwrap().item(), 1024.0);
}

// ------------------------------------------------------------- broadcasting

#[test]
fn broadcast_add_and_mul_grads_sum_back_to_shapes_3x1_and_4() {
    // a: [3, 1], b: [4]; (a + b) is [3, 4]
    let av = [1.0f64, 2.0, 3.0];
    let bv = [10.0f64, 20.0, 30.0, 40.0];
    let a = Tensor::from_vec(av.to_vec(), &[3, 1]).set_requires_grad(true);
    let b = Tensor::from_vec(bv.to_vec(), &[4]).set_requires_grad(true);
    let s = &a + &b;
    assert_eq!(s.shape(), &[3, 4]);
    // y = Σ_ij (a_i + b_j): dy/da_i = 4, dy/db_j = 3
    s.sum().backward();
    assert_eq!(a.grad().unwrap().shape(), &[3, 1]);
    assert_eq!(b.grad().unwrap().shape(), &[4]);
    assert_eq!(a.grad().unwrap().to_vec(), vec![4.0; 3]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![3.0; 4]);

    // y = Σ_ij a_i b_j: dy/da_i = Σ_j b_j = 100, dy/db_j = Σ_i a_i = 6
    a.zero_grad();
    b.zero_grad();
    (&a * &b).sum().backward();
    assert_eq!(a.grad().unwrap().shape(), &[3, 1]);
    assert_eq!(b.grad().unwrap().shape(), &[4]);
    assert_eq!(a.grad().unwrap().to_vec(), vec![100.0; 3]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![6.0; 4]);
}

#[test]
fn broadcast_mul_grads_sum_back_to_shapes_2x3_and_3() {
    // m: [2, 3], v: [3]; y = Σ_ij m_ij v_j ⊙ c_ij (c = weights, to see each slot)
    let m = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).set_requires_grad(true);
    let v = Tensor::from_vec(vec![1.0f64, -1.0, 2.0], &[3]).set_requires_grad(true);
    let c = Tensor::from_vec(vec![1.0f64, 1.0, 1.0, 2.0, 2.0, 2.0], &[2, 3]);
    (&m * &v * &c).sum().backward();
    // dy/dm_ij = v_j c_ij
    assert_eq!(m.grad().unwrap().shape(), &[2, 3]);
    assert_close(
        &m.grad().unwrap().to_vec(),
        &[1.0, -1.0, 2.0, 2.0, -2.0, 4.0],
        1e-12,
    );
    // dy/dv_j = Σ_i m_ij c_ij = m_0j + 2 m_1j
    assert_eq!(v.grad().unwrap().shape(), &[3]);
    assert_close(&v.grad().unwrap().to_vec(), &[9.0, 12.0, 15.0], 1e-12);
}

#[test]
fn broadcast_scalar_shape_grad_sums_to_shape_empty() {
    // s: [], m: [2, 2]; y = Σ s m_ij + Σ (m_ij - s): dy/ds = Σ m - 4, dy/dm = s + 1
    let s = Tensor::scalar(3.0f64).set_requires_grad(true);
    let m = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2]).set_requires_grad(true);
    let p = &s * &m;
    assert_eq!(p.shape(), &[2, 2]);
    (p.sum() + (&m - &s).sum()).backward();
    let gs = s.grad().unwrap();
    assert_eq!(gs.shape(), &[] as &[usize]);
    assert_eq!(gs.item(), 6.0);
    assert_eq!(m.grad().unwrap().shape(), &[2, 2]);
    assert_eq!(m.grad().unwrap().to_vec(), vec![4.0; 4]);
}

#[test]
fn broadcast_on_both_sides_sums_both_back() {
    // a: [2, 1, 3], b: [4, 1] -> [2, 4, 3]; y = Σ a_i0k b_j0
    // dy/da_i0k = Σ_j b_j, dy/db_j0 = Σ_ik a_i0k
    let a = Tensor::from_vec((1..=6).map(f64::from).collect(), &[2, 1, 3]).set_requires_grad(true);
    let b = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4, 1]).set_requires_grad(true);
    let p = &a * &b;
    assert_eq!(p.shape(), &[2, 4, 3]);
    p.sum().backward();
    assert_eq!(a.grad().unwrap().shape(), &[2, 1, 3]);
    assert_eq!(a.grad().unwrap().to_vec(), vec![10.0; 6]);
    assert_eq!(b.grad().unwrap().shape(), &[4, 1]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![21.0; 4]);
}

// --------------------------------------------------- leaves and non-leaves

#[test]
fn requires_grad_propagates_through_ops() {
    let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let c = Tensor::<f32>::ones(&[2]);
    assert!(x.requires_grad());
    assert!(!c.requires_grad());
    assert!(
        !Tensor::<f32>::zeros(&[1]).requires_grad(),
        "constructors make no-grad leaves"
    );
    let y = &x * &c;
    assert!(y.requires_grad());
    let z = (&c + 1.0).exp();
    assert!(!z.requires_grad());
    let w = (&z * &y).sum();
    assert!(w.requires_grad(), "one input that requires grad is enough");
}

#[test]
fn non_leaf_grad_is_none_after_backward() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    let h = &x * 2.0;
    let y = (&h * &h).sum();
    y.backward();
    assert!(h.grad().is_none(), "non-leaves do not keep .grad");
    assert!(y.grad().is_none());
    assert!(x.grad().is_some());
}

#[test]
fn grad_fn_name_names_the_op_and_is_none_for_leaves() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).set_requires_grad(true);
    let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).set_requires_grad(true);
    assert_eq!(a.grad_fn_name(), None);
    assert_eq!(Tensor::<f32>::ones(&[1]).grad_fn_name(), None);
    assert_eq!((&a * &b).grad_fn_name().as_deref(), Some("MulBackward"));
    assert_eq!((&a * 2.0).grad_fn_name().as_deref(), Some("MulBackward"));
    assert_eq!((&a + &b).grad_fn_name().as_deref(), Some("AddBackward"));
    assert_eq!((&a - &b).grad_fn_name().as_deref(), Some("SubBackward"));
    assert_eq!((&a / &b.exp()).grad_fn_name().as_deref(), Some("DivBackward"));
    assert_eq!(a.matmul(&b).grad_fn_name().as_deref(), Some("MmBackward"));
    assert_eq!(a.sum().grad_fn_name().as_deref(), Some("SumBackward"));
    assert_eq!(a.exp().grad_fn_name().as_deref(), Some("ExpBackward"));
    assert_eq!(a.ln().grad_fn_name().as_deref(), Some("LogBackward"));
    assert_eq!(a.tanh().grad_fn_name().as_deref(), Some("TanhBackward"));
    assert_eq!(a.relu().grad_fn_name().as_deref(), Some("ReluBackward"));
    assert_eq!(a.powf(2.0).grad_fn_name().as_deref(), Some("PowBackward"));
    assert_eq!((-&a).grad_fn_name().as_deref(), Some("NegBackward"));
    // a tensor that needs no grad has no grad_fn, even when made by an op
    let c = Tensor::<f32>::ones(&[2, 2]);
    assert_eq!((&c * &c).grad_fn_name(), None);
}

#[test]
fn detach_gives_a_leaf_without_grad_and_blocks_gradient_flow() {
    // y = 3x; d = detach(y); z = Σ d ⊙ x: dz/dx = d = 3x (no path through d)
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    let y = &x * 3.0;
    let d = y.detach();
    assert!(d.is_leaf());
    assert!(!d.requires_grad());
    assert_eq!(d.grad_fn_name(), None);
    assert_eq!(d.to_vec(), y.to_vec(), "detach keeps the data");
    (&d * &x).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 6.0]);
    assert!(d.grad().is_none());
}

#[test]
fn is_leaf_rules() {
    let x = Tensor::<f64>::ones(&[2]).set_requires_grad(true);
    let c = Tensor::<f64>::ones(&[2]);
    assert!(x.is_leaf(), "a leaf that requires grad is a leaf");
    assert!(c.is_leaf(), "a constructor makes a leaf");
    // an op on tensors that need no grad makes a leaf
    let k = (&c * 2.0).exp();
    assert!(k.is_leaf() && !k.requires_grad());
    // an op on a tensor that requires grad makes a non-leaf
    let y = &x * 2.0;
    assert!(!y.is_leaf() && y.requires_grad());
    // an op under no_grad makes a leaf, even from a tensor that requires grad
    let n = tapegrad::no_grad(|| &x * 2.0);
    assert!(n.is_leaf() && !n.requires_grad() && n.grad_fn_name().is_none());
    // detach makes a leaf
    assert!(y.detach().is_leaf());
    // a no-grad leaf can be made to require grad, and stays a leaf
    let k2 = k.set_requires_grad(true);
    assert!(k2.is_leaf() && k2.requires_grad());
}

#[test]
#[should_panic(expected = "set_requires_grad(false)")]
fn set_requires_grad_false_on_non_leaf_panics() {
    let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let y = &x * 2.0;
    y.set_requires_grad(false);
}

#[test]
fn set_requires_grad_false_on_leaf_turns_it_off() {
    let x = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let same = x.set_requires_grad(false);
    assert!(!x.requires_grad() && !same.requires_grad());
    let y = &x * 2.0;
    assert!(y.is_leaf() && !y.requires_grad());
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone_debug<T: Clone + std::fmt::Debug>() {}

#[test]
fn tensor_is_send_sync_clone_debug() {
    assert_send_sync::<Tensor<f32>>();
    assert_send_sync::<Tensor<f64>>();
    assert_send_sync::<Tensor>();
    assert_clone_debug::<Tensor<f32>>();
    assert_clone_debug::<Tensor<f64>>();
    // and it really moves: a graph built here backwards on another thread
    let x = Tensor::from_vec(vec![2.0f32], &[1]).set_requires_grad(true);
    let y = (&x * &x).sum(); // dy/dx = 2x
    std::thread::spawn(move || y.backward()).join().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0]);
    let dbg = format!("{x:?}");
    assert!(
        dbg.contains("[1]") && dbg.contains('2'),
        "Debug shows shape and data: {dbg}"
    );
}

#[test]
fn clone_shares_grad_and_requires_grad() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    let c = x.clone();
    c.set_requires_grad(true);
    assert!(
        x.requires_grad(),
        "requires_grad set on a clone is seen by the original"
    );
    // y = Σ 5x: the gradient reaches x and every clone of it
    (&x * 5.0).sum().backward();
    assert_eq!(c.grad().unwrap().to_vec(), vec![5.0, 5.0]);
    c.zero_grad();
    assert!(
        x.grad().is_none(),
        "zero_grad on a clone clears the original's grad"
    );
    // a backward through the clone accumulates into the same grad
    (&c * 2.0).sum().backward();
    (&x * 3.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![5.0, 5.0]);
}

#[test]
fn default_float_type_is_f32_in_type_position_and_f64_for_bare_literals() {
    let t: Tensor = Tensor::zeros(&[1]);
    let _: Tensor<f32> = t;
    let u = Tensor::from_vec(vec![1.0], &[1]);
    let _: Tensor<f64> = u;
}

#[test]
fn grad_values_in_f32_and_f64_agree() {
    // y = Σ tanh(x) ⊙ exp(x): dy/dx = (1 - tanh²) exp + tanh exp
    let xs = [-0.7, 0.2, 1.1];
    let x32 = Tensor::from_vec(xs.iter().map(|&v| v as f32).collect(), &[3]).set_requires_grad(true);
    let x64 = Tensor::from_vec(xs.to_vec(), &[3]).set_requires_grad(true);
    (x32.tanh() * x32.exp()).sum().backward();
    (x64.tanh() * x64.exp()).sum().backward();
    let expected: Vec<f64> = xs
        .iter()
        .map(|&v: &f64| (1.0 - v.tanh().powi(2)) * v.exp() + v.tanh() * v.exp())
        .collect();
    assert_close(&x64.grad().unwrap().to_vec(), &expected, 1e-12);
    assert_close(&to_f64(&x32.grad().unwrap()), &expected, 1e-5);
}
