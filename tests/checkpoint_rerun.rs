//! What a checkpoint's re-run may and may not do: a re-run that computes
//! other ops than the forward is refused.
//!
//! Gradients are compared bitwise with the same function run plain.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tapegrad::prelude::*;

/// The message of the panic `f` must raise.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    match err.downcast::<String>() {
        Ok(s) => *s,
        Err(err) => err.downcast_ref::<&str>().expect("a string panic").to_string(),
    }
}

/// A leaf that requires grad, of random values.
fn param(shape: &[usize]) -> Tensor<f64> {
    Tensor::randn(shape).set_requires_grad(true)
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
