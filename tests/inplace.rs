//! In-place ops: values, broadcasting, the no_grad rule, snapshots (clones
//! see writes, views do not), and the version check on saved values.

mod common;

use common::assert_close;
use tapegrad::prelude::*;

fn param(data: &[f32], shape: &[usize]) -> Tensor<f32> {
    Tensor::from_vec(data.to_vec(), shape).set_requires_grad(true)
}

#[test]
fn inplace_ops_under_no_grad_on_a_leaf_that_requires_grad() {
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    let o = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], &[3]);
    tapegrad::no_grad(|| w.add_(&o));
    assert_eq!(w.to_vec(), vec![1.5, 1.0, 5.0]);
    tapegrad::no_grad(|| w.sub_(&o));
    assert_eq!(w.to_vec(), vec![1.0, 2.0, 3.0]);
    tapegrad::no_grad(|| w.mul_(&o));
    assert_eq!(w.to_vec(), vec![0.5, -2.0, 6.0]);
    tapegrad::no_grad(|| w.copy_(&o));
    assert_eq!(w.to_vec(), vec![0.5, -1.0, 2.0]);
    tapegrad::no_grad(|| w.fill_(7.0));
    assert_eq!(w.to_vec(), vec![7.0, 7.0, 7.0]);
    // still a leaf that requires grad, with its shape
    assert!(w.is_leaf() && w.requires_grad());
    assert_eq!(w.shape(), &[3]);
    // and usable afterwards: y = Σ w², dy/dw = 2w
    (&w * &w).sum().backward();
    assert_eq!(w.grad().unwrap().to_vec(), vec![14.0, 14.0, 14.0]);
}

#[test]
fn inplace_ops_broadcast_other() {
    let w = param(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    tapegrad::no_grad(|| {
        // [3] -> [2, 3]
        w.add_(&Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3]));
        assert_eq!(w.to_vec(), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        // [2, 1] -> [2, 3]
        w.sub_(&Tensor::from_vec(vec![1.0, 4.0], &[2, 1]));
        assert_eq!(w.to_vec(), vec![10.0, 21.0, 32.0, 10.0, 21.0, 32.0]);
        // [] -> [2, 3]
        w.mul_(&Tensor::scalar(0.5));
        assert_eq!(w.to_vec(), vec![5.0, 10.5, 16.0, 5.0, 10.5, 16.0]);
        // [1, 3] -> [2, 3]
        w.copy_(&Tensor::from_vec(vec![-1.0, 0.0, 1.0], &[1, 3]));
        assert_eq!(w.to_vec(), vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
    });
    assert_eq!(w.shape(), &[2, 3]);
}

#[test]
#[should_panic(expected = "cannot be broadcast to")]
fn inplace_other_that_does_not_broadcast_panics() {
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    tapegrad::no_grad(|| w.add_(&Tensor::ones(&[2])));
}

#[test]
#[should_panic(expected = "cannot be broadcast to")]
fn inplace_does_not_grow_self_by_broadcasting() {
    // self's shape is fixed: [3] += [2, 3] would need self to become [2, 3]
    let w = param(&[1.0, 2.0, 3.0], &[3]);
    tapegrad::no_grad(|| w.add_(&Tensor::ones(&[2, 3])));
}

#[test]
#[should_panic(expected = "add_: a leaf tensor that requires grad")]
fn add_outside_no_grad_on_a_leaf_that_requires_grad_panics() {
    let w = param(&[1.0], &[1]);
    w.add_(&Tensor::ones(&[1]));
}

#[test]
fn every_inplace_op_outside_no_grad_on_a_grad_leaf_panics() {
    type InPlace = fn(&Tensor<f32>);
    let ops: [(&str, InPlace); 5] = [
        ("add_", |w| w.add_(&Tensor::ones(&[1]))),
        ("sub_", |w| w.sub_(&Tensor::ones(&[1]))),
        ("mul_", |w| w.mul_(&Tensor::ones(&[1]))),
        ("copy_", |w| w.copy_(&Tensor::ones(&[1]))),
        ("fill_", |w| w.fill_(0.0)),
    ];
    for (name, op) in ops {
        let w = param(&[3.0], &[1]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&w)));
        let err = r.expect_err(name);
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains(name), "the panic names {name}: {msg}");
        assert_eq!(w.to_vec(), vec![3.0], "{name} did not write before panicking");
    }
}

#[test]
fn inplace_on_a_leaf_that_needs_no_grad_is_allowed_with_grad_on() {
    let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    t.add_(&Tensor::from_vec(vec![1.0, 1.0], &[2]));
    t.fill_(4.0);
    assert_eq!(t.to_vec(), vec![4.0, 4.0]);
}

#[test]
#[should_panic(expected = "mul_")]
fn inplace_on_a_non_leaf_outside_no_grad_panics() {
    let x = param(&[1.0], &[1]);
    let y = &x * 2.0;
    y.mul_(&Tensor::ones(&[1]));
}

#[test]
fn clones_see_inplace_writes() {
    let w = param(&[1.0, 2.0], &[2]);
    let c = w.clone();
    tapegrad::no_grad(|| w.add_(&Tensor::ones(&[2])));
    assert_eq!(c.to_vec(), vec![2.0, 3.0]);
    tapegrad::no_grad(|| c.fill_(0.0));
    assert_eq!(w.to_vec(), vec![0.0, 0.0]);
}

#[test]
fn views_do_not_see_inplace_writes() {
    let w = param(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let t = w.t();
    let r = w.reshape(&[3, 2]);
    let d = w.detach();
    let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    let bv = b.broadcast_to(&[2, 3]);
    tapegrad::no_grad(|| {
        w.add_(&Tensor::full(&[2, 3], 100.0));
        b.fill_(0.0);
    });
    assert_eq!(w.to_vec(), vec![101.0, 102.0, 103.0, 104.0, 105.0, 106.0]);
    assert_eq!(t.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(r.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(d.to_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(bv.to_vec(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    assert_eq!(b.to_vec(), vec![0.0, 0.0, 0.0]);
}

#[test]
fn writes_into_a_view_do_not_reach_its_base() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let d = w.detach();
    d.add_(&Tensor::ones(&[2, 2]));
    assert_eq!(d.to_vec(), vec![2.0, 3.0, 4.0, 5.0]);
    assert_eq!(w.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
    // a non-contiguous (transposed) view written in place
    let t = w.t();
    t.add_(&Tensor::from_vec(vec![10.0, 20.0], &[2])); // t[i, j] += [10, 20][j]
    assert_eq!(t.to_vec(), vec![11.0, 23.0, 12.0, 24.0]);
    assert_eq!(w.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn inplace_write_after_forward_with_saved_input_makes_backward_panic() {
    // y = Σ x ⊙ w: mul saves w for dy/dx = w
    let x = param(&[1.0, 2.0], &[2]);
    let w = param(&[3.0, 4.0], &[2]);
    let y = (&x * &w).sum();
    tapegrad::no_grad(|| w.add_(&Tensor::ones(&[2])));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.backward()));
    let err = r.expect_err("backward must refuse a modified saved value");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("modified by an inplace operation"), "{msg}");
    assert!(msg.contains("MulBackward"), "the message names the node: {msg}");
}

#[test]
#[should_panic(expected = "modified by an inplace operation")]
fn inplace_write_to_input_saved_by_ln_makes_backward_panic() {
    // ln saves its input (d ln x = dx / x)
    let x = param(&[1.0, 2.0], &[2]);
    let y = x.ln().sum();
    tapegrad::no_grad(|| x.mul_(&Tensor::full(&[2], 2.0)));
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an inplace operation")]
fn inplace_write_to_a_no_grad_leaf_saved_by_mul_makes_backward_panic() {
    // w needs no grad, so it may be written with grad on; mul saved it
    let x = param(&[1.0, 2.0], &[2]);
    let w = Tensor::from_vec(vec![3.0f32, 4.0], &[2]);
    let y = (&x * &w).sum();
    w.fill_(0.0);
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an inplace operation")]
fn inplace_write_to_a_saved_output_makes_backward_panic() {
    // exp saves its output (d exp x = exp x dx); write into the output under no_grad
    let x = param(&[0.0, 1.0], &[2]);
    let e = x.exp();
    let y = e.sum();
    tapegrad::no_grad(|| e.mul_(&Tensor::full(&[2], 2.0)));
    y.backward();
}

#[test]
fn version_does_not_matter_for_ops_that_saved_nothing() {
    // y = Σ (x + w) + Σ 3x: add and mul-by-scalar save nothing
    // dy/dx = 1 + 3 = 4, dy/dw = 1
    let x = param(&[1.0, 2.0], &[2]);
    let w = param(&[3.0, 4.0], &[2]);
    let y = (&x + &w).sum() + (&x * 3.0).sum();
    tapegrad::no_grad(|| {
        x.add_(&Tensor::full(&[2], 10.0));
        w.fill_(-1.0);
    });
    y.backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 4.0]);
    assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, 1.0]);
}

#[test]
fn version_does_not_matter_for_a_tensor_the_op_did_not_save() {
    // exp saves its output, not its input: writing x after y = exp(x) is fine,
    // and the gradient uses the saved exp of the old x: dy/dx = exp(x_old)
    let x = Tensor::from_vec(vec![0.0f64, 1.0], &[2]).set_requires_grad(true);
    let y = x.exp().sum();
    tapegrad::no_grad(|| x.fill_(5.0));
    y.backward();
    assert_close(&x.grad().unwrap().to_vec(), &[1.0, 1.0f64.exp()], 1e-12);
}

#[test]
fn saved_values_are_snapshots_when_written_before_forward_only() {
    // writing before the forward is fine: y = Σ x ⊙ w with w already updated
    let x = param(&[1.0, 2.0], &[2]);
    let w = param(&[3.0, 4.0], &[2]);
    tapegrad::no_grad(|| w.add_(&Tensor::ones(&[2])));
    (&x * &w).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 5.0]); // dy/dx = w
    assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, 2.0]); // dy/dw = x
}

#[test]
fn sgd_step_loop_updates_parameter() {
    // minimise Σ (w - 3)² with SGD, lr 0.25: w ← w - 0.25 · 2 (w - 3) = 0.5 w + 1.5
    let w = param(&[0.0, 10.0], &[2]);
    for _ in 0..40 {
        let loss = ((&w - 3.0) * (&w - 3.0)).sum();
        loss.backward();
        let g = w.grad().unwrap();
        tapegrad::no_grad(|| w.sub_(&(&g * 0.25)));
        w.zero_grad();
    }
    for v in w.to_vec() {
        assert!((v - 3.0).abs() < 1e-5, "{v}");
    }
}

#[test]
fn grad_buffer_taken_by_user_is_not_mutated_by_a_later_backward() {
    // y = Σ 2x, dy/dx = 2. g1 is a view (detach) of x.grad after the first
    // backward; the second backward's accumulation into x.grad is an
    // in-place write that views do not see, so g1 keeps 2 while x.grad is 4.
    let x = param(&[1.0, 1.0], &[2]);
    (&x * 2.0).sum().backward();
    let g1 = x.grad().unwrap().detach();
    (&x * 2.0).sum().backward();
    assert_eq!(g1.to_vec(), vec![2.0, 2.0]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 4.0]);
}

// ------------------------------------------- operators writing over operands

fn data_ptr(t: &Tensor<f32>) -> *const f32 {
    t.with_array(|v| v.as_ptr())
}

#[test]
fn an_operator_writes_over_an_owned_operand_no_one_else_sees() {
    let a = Tensor::<f32>::zeros(&[1000]);
    let p = data_ptr(&a);
    let b = (a + 1.0) * 3.0;
    assert_eq!(data_ptr(&b), p, "no new buffer");
    assert_eq!(b.to_vec(), vec![3.0; 1000]);
    let c = -(b - &Tensor::full(&[1000], 1.0));
    assert_eq!(data_ptr(&c), p);
    assert_eq!(c.to_vec(), vec![-2.0; 1000]);
}

#[test]
fn an_operator_never_writes_over_data_another_handle_sees() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]);
    let clone = a.clone();
    let view = a.t();
    let detached = a.detach();
    let b = a * 10.0;
    let c = detached + 1.0;
    assert_eq!(b.to_vec(), vec![10.0, 20.0]);
    assert_eq!(c.to_vec(), vec![2.0, 3.0]);
    assert_eq!(clone.to_vec(), vec![1.0, 2.0]);
    assert_eq!(view.to_vec(), vec![1.0, 2.0]);
}

#[test]
fn a_leaf_that_requires_grad_is_not_overwritten_and_gets_its_gradient() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    let y = w.clone() * 3.0;
    assert_eq!(w.to_vec(), vec![1.0, 2.0]);
    y.sum().backward();
    assert_eq!(w.grad().unwrap().to_vec(), vec![3.0, 3.0]);
}

#[test]
fn a_gradient_handed_out_by_grad_is_not_overwritten_further_down() {
    // dy/dh is returned, and h's own backward (times 2) runs after: it must
    // not write its result over the returned gradient.
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).set_requires_grad(true);
    let h = &x * 2.0;
    let y = (&h * 3.0).sum();
    let grads = tapegrad::grad(&[y], &[h.clone(), x.clone()], Default::default());
    assert_eq!(grads[0].as_ref().unwrap().to_vec(), vec![3.0, 3.0]);
    assert_eq!(grads[1].as_ref().unwrap().to_vec(), vec![6.0, 6.0]);
}

#[test]
fn a_gradient_sent_down_two_edges_is_not_overwritten_by_either() {
    // AddBackward hands the same gradient to both inputs; each path then
    // scales it differently.
    let x = Tensor::from_vec(vec![1.0f32], &[1]).set_requires_grad(true);
    let y = (&x * 2.0) + (&x * 5.0).tanh() * 0.0 + (&x * 3.0);
    y.sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![5.0]);
}

#[test]
fn a_recorded_op_takes_over_an_owned_operand_it_does_not_save() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    let h = &x * 2.0; // a non-leaf, its buffer made by the op
    let p = data_ptr(&h);
    let y = h + 1.0; // AddBackward saves nothing: the buffer moves on
    assert_eq!(data_ptr(&y), p);
    assert_eq!(y.to_vec(), vec![3.0, 5.0]);
    (y * 3.0).sum().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![6.0, 6.0]);
}

#[test]
fn a_recorded_op_does_not_write_over_an_operand_it_saves() {
    // MulBackward saves `h` for w's gradient: h must keep its values.
    let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).set_requires_grad(true);
    let w = Tensor::from_vec(vec![5.0f32, 7.0], &[2]).set_requires_grad(true);
    let h = &x * 2.0;
    let p = data_ptr(&h);
    let y = h * &w;
    assert_ne!(data_ptr(&y), p);
    y.sum().backward();
    assert_eq!(w.grad().unwrap().to_vec(), vec![2.0, 4.0]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![10.0, 14.0]);
}
