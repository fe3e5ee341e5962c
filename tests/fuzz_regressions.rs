//! The failures tests/fuzz.rs found, each written out as a plain test (the
//! fuzzer's seeds change meaning when its generator changes; these do not).
//! Each failed before its fix.

mod common;

use common::panic_message;
use tapegrad::prelude::*;

/// Fuzz seed 120 (first generator): `mse_loss` of mismatched shapes
/// panicked through `assert_eq!`, whose message starts with "assertion
/// `left == right` failed" and carries `left:`/`right:` lines, instead of
/// naming the op.
#[test]
fn mse_loss_shape_mismatch_names_the_op() {
    let a = Tensor::<f64>::zeros(&[6]).set_requires_grad(true);
    let b = Tensor::<f64>::zeros(&[2]);
    let msg = panic_message(|| {
        a.mse_loss(&b);
    });
    assert_eq!(msg, "mse_loss: input shape [6] and target shape [2] differ");
}

/// The same `assert_eq!` in the class check of `nll_loss` and
/// `cross_entropy` (found reading the fix above).
#[test]
fn nll_loss_target_count_names_the_op() {
    let logp = Tensor::<f64>::zeros(&[2, 3]);
    let msg = panic_message(|| {
        logp.nll_loss(&[0]);
    });
    assert_eq!(msg, "nll_loss: 1 targets for a batch of 2 (input shape [2, 3])");
}
