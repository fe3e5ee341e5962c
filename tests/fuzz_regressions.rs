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
    assert_eq!(
        msg,
        "mse_loss: input shape [6] and target shape [2] differ (reshape one to the other's shape)"
    );
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

/// Fuzz seed 2002329034 (run 2): attention over a single key is `v`
/// whatever the scores, so `loss = Σ w · x²` here and its gradient is
/// `2 w x`. Written out: the composed kernel gave it; the tiled one
/// (block 1) added 4.2 to the first element (7.64 against 3.44), with
/// queries near 1e15 (`exp(x⁶)`): its `D = rowsum(dO ∘ O)` differed from
/// the key's `dP` by rounding, which the chain back to x multiplied up.
/// Fixed in src/ops/flash.rs (dS is exactly 0 where p is 1);
/// `tests/attention.rs` has the case of two keys.
#[test]
fn tiled_attention_single_key_huge_queries() {
    use tapegrad::nn::functional::{scaled_dot_product_attention, AttentionKernel, AttentionOptions};
    let data = vec![-1.8047655217987257, -0.9038244306101246, -1.703843798208176];
    let w = Tensor::from_vec(
        vec![-0.9520555924707517, -0.6191609449307385, 0.07560653130146022],
        &[1, 3],
    );
    let want: Vec<f64> = data.iter().zip(w.to_vec()).map(|(x, w)| 2.0 * w * x).collect();
    for kernel in [AttentionKernel::Composed, AttentionKernel::Tiled { block: 1 }] {
        let x = Tensor::from_vec(data.clone(), &[1, 3]).set_requires_grad(true);
        let (square, sig) = (x.powf(2.0), x.sigmoid());
        let q = &square.powf(3.0).exp() + &sig;
        let opts = AttentionOptions {
            causal: true,
            kernel,
            ..Default::default()
        };
        let out = scaled_dot_product_attention(&q, &sig, &square, &opts);
        (&out * &w).sum().backward();
        let got = x.grad().unwrap().to_vec();
        common::assert_close(&got, &want, 1e-9);
    }
}
