//! A chain of a million ops must run forward, backward and drop on a 2 MiB
//! stack (nothing recurses over the graph), and give the right gradient.
//! A stack overflow aborts the process, so each test runs in a child
//! process of its own: an overflow fails that test, not the whole run.

mod common;

use common::in_child_process;
use std::time::Duration;
use tapegrad::prelude::*;

const N: usize = 1_000_000;
const STACK: usize = 2 * 1024 * 1024;
/// A child still running after this is taken to hang.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `f` on a fresh thread with a 2 MiB stack; a stack overflow there
/// aborts the (child) process, a panic fails the test.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .name("small-stack".into())
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the chain test panicked")
}

#[test]
fn million_op_chain_forward_backward_and_drop_on_a_2mib_stack() {
    in_child_process(
        "million_op_chain_forward_backward_and_drop_on_a_2mib_stack",
        TIMEOUT,
        million_op_chain_forward_backward_and_drop_on_a_2mib_stack_in_child,
    );
}

fn million_op_chain_forward_backward_and_drop_on_a_2mib_stack_in_child() {
    // y = x · m^N with m = 1.000001 (rounded to f32), x = 1: dy/dx = m^N.
    // In exact arithmetic both are m^N (closed form, ≈ e^0.9537 ≈ 2.595). In
    // f32 each of the N products rounds, and the roundings are biased (the
    // increment y·(m-1) is a near-constant fraction of an ulp within a
    // binade), drifting ~0.2% from the closed form; so the closed form is
    // checked to 1%, and the exact f32 recurrence e_{k+1} = e_k · m (what
    // both the forward and the backward compute, g_{k+1} = g_k · m from
    // g_0 = 1) to 1e-6.
    let (value, grad) = on_small_stack(|| {
        let x = Tensor::from_vec(vec![1.0f32], &[1]).set_requires_grad(true);
        let mut y = x.clone();
        for _ in 0..N {
            y = &y * 1.000001f32;
        }
        assert!(!y.is_leaf() && y.requires_grad());
        let value = y.item();
        y.backward();
        let grad = x.grad().expect("x gets a gradient").item();
        drop(y); // the whole chain goes here
        (value, grad)
    });
    let m = 1.000001f32;
    let closed_form = f64::from(m).powi(N as i32);
    let mut recurrence = 1.0f32;
    for _ in 0..N {
        recurrence *= m;
    }
    let recurrence = f64::from(recurrence);
    for (what, got) in [("forward y", value), ("dy/dx", grad)] {
        let got = f64::from(got);
        assert!(
            (got - closed_form).abs() <= 1e-2 * closed_form,
            "{what} = {got}, closed form m^N = {closed_form}"
        );
        assert!(
            (got - recurrence).abs() <= 1e-6 * recurrence,
            "{what} = {got}, f32 recurrence = {recurrence}"
        );
    }
}

#[test]
fn million_op_chain_dropped_without_backward_on_a_2mib_stack() {
    in_child_process(
        "million_op_chain_dropped_without_backward_on_a_2mib_stack",
        TIMEOUT,
        million_op_chain_dropped_without_backward_on_a_2mib_stack_in_child,
    );
}

fn million_op_chain_dropped_without_backward_on_a_2mib_stack_in_child() {
    // no backward ran, so every node still holds its edges (and its saved
    // values: mul by a tensor saves the other operand); dropping the last
    // handle must unlink them without recursion.
    let v = on_small_stack(|| {
        let x = Tensor::from_vec(vec![1.0f32], &[1]).set_requires_grad(true);
        let w = Tensor::from_vec(vec![1.0f32], &[1]);
        let mut y = x.clone();
        for i in 0..N {
            y = if i % 2 == 0 { &y * &w } else { &y + 0.0 };
        }
        let v = y.item();
        drop(y);
        v
    });
    assert_eq!(v, 1.0); // 1 · 1^N + 0
}

#[test]
fn million_op_chain_with_grad_on_a_2mib_stack() {
    in_child_process(
        "million_op_chain_with_grad_on_a_2mib_stack",
        TIMEOUT,
        million_op_chain_with_grad_on_a_2mib_stack_in_child,
    );
}

fn million_op_chain_with_grad_on_a_2mib_stack_in_child() {
    // tapegrad::grad walks the same graph: dy/dx for y = x + N · 1e-6 is 1,
    // so any dropped or doubled path shows
    let g = on_small_stack(|| {
        let x = Tensor::from_vec(vec![0.0f32], &[1]).set_requires_grad(true);
        let mut y = x.clone();
        for _ in 0..N {
            y = &y + 1e-6f32;
        }
        let g = tapegrad::grad(&[y], &[x.clone()], GradOptions::default());
        g[0].as_ref().expect("y depends on x").item()
    });
    assert_eq!(g, 1.0);
}
