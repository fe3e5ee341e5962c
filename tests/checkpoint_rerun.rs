//! What a checkpoint's re-run may and may not see: tensors the forward read
//! and that were changed in place since are refused (as a plain graph refuses
//! a saved value changed in place), a `requires_grad` changed since the
//! forward does not change the re-run's graph, a backward inside the
//! checkpointed function works (`grad` with `create_graph` too), and a
//! re-run that computes other ops than the forward is refused.
//!
//! Gradients are compared bitwise with the same function run plain.

mod common;

use common::panic_message;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tapegrad::prelude::*;

/// A leaf that requires grad, of random values.
fn param(shape: &[usize]) -> Tensor<f64> {
    Tensor::randn(shape).set_requires_grad(true)
}

/// `.grad()` of each tensor, as vectors (`None` where there is none), then
/// cleared.
fn take_grads(ts: &[&Tensor<f64>]) -> Vec<Option<Vec<f64>>> {
    ts.iter()
        .map(|t| {
            let g = t.grad().map(|g| g.to_vec());
            t.zero_grad();
            g
        })
        .collect()
}

type Fun = Arc<dyn Fn(&[Tensor<f64>]) -> Tensor<f64> + Send + Sync>;

/// `f(inputs)`, plain or under a checkpoint.
fn run(f: &Fun, inputs: &[Tensor<f64>], checkpointed: bool) -> Tensor<f64> {
    if checkpointed {
        let f = f.clone();
        tapegrad::checkpoint(move |xs| f(xs), inputs)
    } else {
        f(inputs)
    }
}

// ------------------------------------------ (a) changed in place since the forward

/// Runs `forward` (which builds a loss through a checkpoint), then `change`
/// under `no_grad`, and returns the message of the panic of the backward.
fn backward_after_change(forward: impl FnOnce() -> Tensor<f64>, change: impl FnOnce()) -> String {
    let loss = forward();
    tapegrad::no_grad(change);
    panic_message(|| loss.backward())
}

#[track_caller]
fn assert_refused(msg: &str) {
    assert!(
        msg.contains("checkpoint #") && msg.contains("modified by an inplace operation"),
        "{msg}"
    );
}

#[test]
fn a_captured_weight_changed_in_place_after_the_forward_is_refused_by_the_rerun() {
    // x needs no grad: no op saves w, so the plain graph would not notice;
    // the re-run would compute tanh(x @ w) with the new w.
    let w = param(&[3, 3]);
    let x = Tensor::<f64>::randn(&[2, 3]);
    let w2 = w.clone();
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| xs[0].matmul(&w2).tanh(), &[x.clone()]).sum(),
        || w.add_(&Tensor::full(&[3, 3], 0.5)),
    );
    assert_refused(&msg);
    assert!(msg.contains("[3, 3]"), "names the shape: {msg}");

    // x needs grad: MmBackward saved w, and the plain graph refuses it; the
    // checkpoint refuses it before its re-run computes with it.
    let w = param(&[3, 3]);
    let x = param(&[2, 3]);
    let w2 = w.clone();
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| xs[0].matmul(&w2).tanh(), &[x.clone()]).sum(),
        || w.mul_(&Tensor::full(&[3, 3], 2.0)),
    );
    assert_refused(&msg);
}

#[test]
fn a_captured_bias_that_no_op_saves_is_refused_too() {
    let (w, b) = (param(&[3, 3]), param(&[3]));
    let x = param(&[2, 3]);
    let (w2, b2) = (w.clone(), b.clone());
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| (xs[0].matmul(&w2) + &b2).tanh(), &[x.clone()]).sum(),
        || b.fill_(0.0),
    );
    assert_refused(&msg);
}

#[test]
fn a_captured_constant_read_by_unrecorded_ops_is_refused() {
    // c and d need no grad: `(&c * 2.0) + &d` is not recorded (and writes
    // over the temporary), yet the re-run reads d.
    let c = Tensor::<f64>::randn(&[3]);
    let d = Tensor::<f64>::randn(&[3]);
    let x = param(&[2, 3]);
    let (c2, d2) = (c.clone(), d.clone());
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| (&xs[0] * ((&c2 * 2.0) + &d2)).tanh(), &[x.clone()]).sum(),
        || d.add_(&Tensor::full(&[3], 1.0)),
    );
    assert_refused(&msg);
}

#[test]
fn a_captured_tensor_with_history_changed_in_place_is_refused() {
    let a = param(&[3]);
    let x = param(&[2, 3]);
    let scale = a.exp(); // made before the scope, captured
    let s2 = scale.clone();
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| (&xs[0] + &s2).tanh(), &[x.clone()]).sum(),
        || scale.mul_(&Tensor::full(&[3], 3.0)),
    );
    assert_refused(&msg);
}

#[test]
fn a_checkpoint_input_changed_in_place_is_refused() {
    let x = Tensor::<f64>::randn(&[2, 3]);
    let w = param(&[3, 3]);
    let w2 = w.clone();
    let msg = backward_after_change(
        || tapegrad::checkpoint(move |xs| xs[0].matmul(&w2).tanh(), &[x.clone()]).sum(),
        || x.add_(&Tensor::full(&[3], 1.0)),
    );
    assert_refused(&msg);
}

#[test]
fn a_constant_of_a_nested_checkpoint_is_refused_by_the_outer_rerun() {
    // Nothing inside the inner scope is recorded (x and c need no grad), so
    // no node of the inner frame is ever reached; the outer re-run runs the
    // inner function again, and would read the new c.
    let c = Tensor::<f64>::randn(&[3, 3]);
    let w = param(&[3, 3]);
    let x = Tensor::<f64>::randn(&[2, 3]);
    let (c2, w2) = (c.clone(), w.clone());
    let msg = backward_after_change(
        || {
            tapegrad::checkpoint(
                move |xs| {
                    let c3 = c2.clone();
                    let h = tapegrad::checkpoint(move |ys| ys[0].matmul(&c3).sin(), &[xs[0].clone()]);
                    h.matmul(&w2).tanh()
                },
                &[x.clone()],
            )
            .sum()
        },
        || c.fill_(1.0),
    );
    assert_refused(&msg);
}

#[test]
fn a_weight_of_a_save_dots_checkpoint_changed_in_place_is_refused() {
    let w = param(&[3, 3]);
    let x = param(&[2, 3]);
    let w2 = w.clone();
    let opts = CheckpointOptions {
        policy: CheckpointPolicy::SaveDots,
    };
    let msg = backward_after_change(
        || tapegrad::checkpoint_with(move |xs| xs[0].matmul(&w2).exp().sin(), &[x.clone()], opts).sum(),
        || w.add_(&Tensor::full(&[3, 3], 1.0)),
    );
    assert_refused(&msg);
}

#[test]
fn changes_before_the_forward_or_after_the_backward_are_fine() {
    // A training loop: step (in place) after each backward; each forward
    // reads the weight as it is then. Gradients equal the plain loop's.
    let w = param(&[3, 3]);
    let x = param(&[2, 3]);
    let f: Fun = {
        let w = w.clone();
        Arc::new(move |xs| (xs[0].matmul(&w) * 2.0).tanh().matmul(&w))
    };
    let train = |checkpointed: bool| {
        let w0 = w.detach();
        let mut grads = Vec::new();
        for _ in 0..3 {
            run(&f, &[x.clone()], checkpointed).powf(2.0).sum().backward();
            let gw = w.grad().unwrap();
            grads.push(take_grads(&[&x, &w]));
            tapegrad::no_grad(|| w.sub_(&(&gw * 0.1)));
        }
        tapegrad::no_grad(|| w.copy_(&w0));
        grads
    };
    assert_eq!(train(false), train(true));
}

#[test]
fn a_change_between_two_retained_backwards_is_refused() {
    let w = param(&[3, 3]);
    let x = param(&[2, 3]);
    let w2 = w.clone();
    let loss = tapegrad::checkpoint(move |xs| (xs[0].matmul(&w2)).sin(), &[x.clone()]).sum();
    loss.backward_opts(BackwardOptions {
        retain_graph: true,
        ..Default::default()
    });
    tapegrad::no_grad(|| w.add_(&Tensor::full(&[3, 3], 1.0)));
    assert_refused(&panic_message(|| loss.backward()));
}

// ------------------------------------------ (b) a backward inside the function

/// `x³ · w` summed, differentiated in `x` inside the function with
/// `create_graph`: the function returns `d/dx Σ (x³ w) = 3x² w`, scaled.
fn inner_grad(w: &Tensor<f64>, create_graph: bool) -> Fun {
    let w = w.clone();
    Arc::new(move |xs| {
        let y = (xs[0].powf(3.0) * &w).sum();
        let opts = GradOptions {
            create_graph,
            ..Default::default()
        };
        let g = tapegrad::grad(&[y], &[xs[0].clone()], opts)[0].clone().unwrap();
        (g * &xs[0]).tanh()
    })
}

#[test]
fn grad_with_create_graph_inside_a_checkpoint_gives_the_plain_gradients() {
    let x = param(&[2, 3]);
    let w = param(&[3]);
    let f = inner_grad(&w, true);
    let grads = |checkpointed: bool| {
        run(&f, &[x.clone()], checkpointed).sum().backward();
        take_grads(&[&x, &w])
    };
    let plain = grads(false);
    assert!(plain.iter().all(Option::is_some));
    assert_eq!(plain, grads(true));
}

#[test]
fn grad_without_create_graph_inside_a_checkpoint_gives_the_plain_gradients() {
    // The inner gradient is a constant here: only the tanh(g * x) path
    // carries gradient, to x.
    let x = param(&[2, 3]);
    let w = param(&[3]);
    let f = inner_grad(&w, false);
    let grads = |checkpointed: bool| {
        run(&f, &[x.clone()], checkpointed).sum().backward();
        take_grads(&[&x, &w])
    };
    let plain = grads(false);
    assert_eq!(plain, grads(true));
    assert!(plain[1].is_none());
}

#[test]
fn second_order_through_a_checkpoint_with_a_grad_inside() {
    // d²/dx², through an outer grad with create_graph, of a function that
    // itself takes a gradient with create_graph.
    let x = param(&[2, 3]);
    let w = param(&[3]);
    let f = inner_grad(&w, true);
    let second = |checkpointed: bool| {
        let y = run(&f, &[x.clone()], checkpointed).powf(2.0).sum();
        let opts = GradOptions {
            create_graph: true,
            ..Default::default()
        };
        let g = tapegrad::grad(&[y], &[x.clone(), w.clone()], opts);
        let s = g[0].clone().unwrap().sum() + g[1].clone().unwrap().sum();
        tapegrad::grad(&[s], &[x.clone(), w.clone()], GradOptions::default())
            .into_iter()
            .map(|g| g.map(|g| g.to_vec()))
            .collect::<Vec<_>>()
    };
    let plain = second(false);
    assert!(plain.iter().all(Option::is_some));
    assert_eq!(plain, second(true));
}

#[test]
fn a_grad_inside_nested_checkpoints_with_dropout_and_save_dots() {
    // The inner gradient goes through a nested checkpoint and dropout; the
    // random stream after the scope is the plain run's.
    let w = param(&[3, 3]);
    let x = param(&[4, 3]);
    let make = |checkpointed: bool, opts: CheckpointOptions| -> Fun {
        let w = w.clone();
        Arc::new(move |xs| {
            let w1 = w.clone();
            let inner = move |ys: &[Tensor<f64>]| ys[0].matmul(&w1).dropout(0.5, true).tanh();
            let h = if checkpointed {
                tapegrad::checkpoint_with(inner, &[xs[0].clone()], opts)
            } else {
                inner(&[xs[0].clone()])
            };
            let y = h.matmul(&w).powf(2.0).sum();
            let opts = GradOptions {
                create_graph: true,
                ..Default::default()
            };
            let g = tapegrad::grad(&[y], &[xs[0].clone(), w.clone()], opts);
            g[0].clone().unwrap().matmul(&g[1].clone().unwrap()).sin() + h
        })
    };
    let grads = |f: Fun, checkpointed: bool, opts: CheckpointOptions| {
        tapegrad::manual_seed(7);
        let f = f.clone();
        let y = if checkpointed {
            tapegrad::checkpoint_with(move |xs| f(xs), &[x.clone()], opts)
        } else {
            f(&[x.clone()])
        };
        let after = Tensor::<f64>::rand(&[2]).to_vec();
        y.sum().backward();
        (take_grads(&[&x, &w]), after)
    };
    let all = CheckpointOptions::default();
    let dots = CheckpointOptions {
        policy: CheckpointPolicy::SaveDots,
    };
    let plain = grads(make(false, all), false, all);
    assert!(plain.0.iter().all(Option::is_some));
    for opts in [all, dots] {
        assert_eq!(plain, grads(make(true, opts), true, opts), "{opts:?}");
        assert_eq!(plain, grads(make(false, opts), true, opts), "{opts:?}");
    }
}

#[test]
fn a_backward_inside_a_checkpoint_runs_the_function_once_more_per_backward_inside() {
    // The inner backward needs values the forward has already dropped: the
    // function runs again (up to where it is) to make them; then once more
    // in the outer backward.
    let runs = Arc::new(AtomicUsize::new(0));
    let x = param(&[3]);
    let counter = runs.clone();
    let y = tapegrad::checkpoint(
        move |xs| {
            counter.fetch_add(1, Ordering::SeqCst);
            let y = xs[0].exp().sin().sum();
            let opts = GradOptions {
                create_graph: true,
                ..Default::default()
            };
            tapegrad::grad(&[y], &[xs[0].clone()], opts)[0].clone().unwrap()
        },
        &[x.clone()],
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "forward, and a re-run for its inner backward"
    );
    y.sum().backward();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // d/dx (cos(eˣ) eˣ) = -sin(eˣ) e²ˣ + cos(eˣ) eˣ
    let want: Vec<f64> = x
        .to_vec()
        .iter()
        .map(|&v| -(v.exp()).sin() * (2.0 * v).exp() + v.exp().cos() * v.exp())
        .collect();
    let got = x.grad().unwrap().to_vec();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

// ------------------------------------------ (c) other ops in the re-run

#[test]
fn a_rerun_with_other_ops_of_the_same_shapes_is_refused() {
    let first = Arc::new(AtomicBool::new(true));
    let x = param(&[2, 3]);
    let seen = first.clone();
    let y = tapegrad::checkpoint(
        move |xs| match seen.swap(false, Ordering::SeqCst) {
            true => xs[0].exp(),
            false => xs[0].sin(),
        },
        &[x.clone()],
    );
    let msg = panic_message(|| y.sum().backward());
    assert!(
        msg.contains("checkpoint #") && msg.contains("saved value 0"),
        "{msg}"
    );
    assert!(
        msg.contains("ExpBackward") && msg.contains("SinBackward"),
        "{msg}"
    );
    assert!(msg.contains("in the forward but"), "{msg}");
}

#[test]
fn a_rerun_that_saves_another_role_of_the_same_op_is_refused() {
    // x * c saves c as input 1; c * x saves it as input 0: same op, dtype
    // and shape.
    let first = Arc::new(AtomicBool::new(true));
    let x = param(&[3]);
    let c = Tensor::<f64>::randn(&[3]);
    let seen = first.clone();
    let y = tapegrad::checkpoint(
        move |xs| match seen.swap(false, Ordering::SeqCst) {
            true => &xs[0] * &c,
            false => &c * &xs[0],
        },
        &[x.clone()],
    );
    let msg = panic_message(|| y.sum().backward());
    assert!(
        msg.contains("checkpoint #") && msg.contains("saved value 0"),
        "{msg}"
    );
    assert!(msg.contains("input 1") && msg.contains("input 0"), "{msg}");
}

// ------------------------------------------ (d) requires_grad changed since the forward

#[test]
fn a_weight_frozen_after_the_forward_gets_the_plain_gradient() {
    // The plain graph keeps its edge to w, and backward still sends w its
    // gradient; the checkpoint's re-run must record the same graph.
    let (w, b) = (param(&[3, 3]), param(&[3]));
    let x = Tensor::<f64>::randn(&[2, 3]);
    let f: Fun = {
        let (w, b) = (w.clone(), b.clone());
        Arc::new(move |xs| (xs[0].matmul(&w) + &b).tanh().matmul(&w))
    };
    let grads = |checkpointed: bool| {
        w.set_requires_grad(true);
        let loss = run(&f, &[x.clone()], checkpointed).powf(2.0).sum();
        w.set_requires_grad(false);
        loss.backward();
        assert!(!w.requires_grad(), "the flag is the user's again");
        take_grads(&[&w, &b])
    };
    let plain = grads(false);
    assert!(
        plain.iter().all(Option::is_some),
        "the plain graph sends w a gradient"
    );
    assert_eq!(plain, grads(true));
}

#[test]
fn a_constant_made_trainable_after_the_forward_gets_the_plain_gradient() {
    // The plain graph has no edge to c: c gets no gradient, x its own.
    let c = Tensor::<f64>::randn(&[3]);
    let x = param(&[2, 3]);
    let f: Fun = {
        let c = c.clone();
        Arc::new(move |xs| (&xs[0] * &c).sin() * &c)
    };
    let grads = |checkpointed: bool| {
        c.set_requires_grad(false);
        let loss = run(&f, &[x.clone()], checkpointed).sum();
        c.set_requires_grad(true);
        loss.backward();
        assert!(c.requires_grad());
        take_grads(&[&x, &c])
    };
    let plain = grads(false);
    assert!(plain[0].is_some() && plain[1].is_none());
    assert_eq!(plain, grads(true));
    c.set_requires_grad(false);
}

#[test]
fn flags_changed_after_the_forward_in_nested_checkpoints() {
    let (w1, w2) = (param(&[3, 3]), param(&[3, 3]));
    let x = param(&[2, 3]);
    let f: Fun = {
        let (w1, w2) = (w1.clone(), w2.clone());
        Arc::new(move |xs| {
            let w1 = w1.clone();
            let h = tapegrad::checkpoint(move |ys| ys[0].matmul(&w1).tanh(), &[xs[0].clone()]);
            h.matmul(&w2).sin()
        })
    };
    let grads = |checkpointed: bool| {
        w1.set_requires_grad(true);
        x.set_requires_grad(true);
        let loss = run(&f, &[x.clone()], checkpointed).sum();
        w1.set_requires_grad(false);
        x.set_requires_grad(false);
        loss.backward();
        take_grads(&[&x, &w1, &w2])
    };
    let plain = grads(false);
    assert!(plain.iter().all(Option::is_some));
    assert_eq!(plain, grads(true));
}

#[test]
fn the_users_flags_come_back_when_the_rerun_panics() {
    // w is frozen after the forward, then the re-run fails after setting
    // w's flag back: once refused for b changed in place (read after w),
    // once by the function itself.
    let (w, b) = (param(&[3, 3]), param(&[3]));
    let x = param(&[2, 3]);
    let first = Arc::new(AtomicBool::new(true));
    let forward = || {
        let (w, b, first) = (w.clone(), b.clone(), first.clone());
        first.store(true, Ordering::SeqCst);
        tapegrad::checkpoint(
            move |xs| {
                let y = (xs[0].matmul(&w) + &b).tanh();
                assert!(
                    first.swap(false, Ordering::SeqCst),
                    "the function refuses to run twice"
                );
                y
            },
            &[x.clone()],
        )
        .sum()
    };
    let loss = forward();
    w.set_requires_grad(false);
    tapegrad::no_grad(|| b.add_(&Tensor::full(&[3], 1.0)));
    assert_refused(&panic_message(|| loss.backward()));
    assert!(!w.requires_grad());

    w.set_requires_grad(true);
    let loss = forward();
    w.set_requires_grad(false);
    let msg = panic_message(|| loss.backward());
    assert!(msg.contains("refuses to run twice"), "{msg}");
    assert!(!w.requires_grad());
}
