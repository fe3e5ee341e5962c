//! Tests written for mutants that `cargo mutants` found surviving the tests
//! of their area (docs/reliability.md, Mutation testing): each names the
//! mutant it kills.

use tapegrad::prelude::*;

/// `src/autograd/held.rs`: `Held::dtype` replaced with `"xyzzy"` (only a
/// doc-test read the dtype of a saved value before).
#[test]
fn saved_residuals_name_the_element_type() {
    let dtype_of = |r: &tapegrad::SavedResidual| r.dtype;
    let x64 = Tensor::<f64>::ones(&[2]).set_requires_grad(true);
    let x32 = Tensor::<f32>::ones(&[2]).set_requires_grad(true);
    let r64: Vec<_> = tapegrad::saved_residuals(|xs| xs[0].exp(), &[x64])
        .iter()
        .map(dtype_of)
        .collect();
    let r32: Vec<_> = tapegrad::saved_residuals(|xs| xs[0].exp(), &[x32])
        .iter()
        .map(dtype_of)
        .collect();
    assert_eq!((r64, r32), (vec!["f64"], vec!["f32"]));
}

/// Keeps what it is given (a pack that holds the value as it is).
struct Keep;

impl SavedTensorsHooks<f64> for Keep {
    type Packed = Tensor<f64>;
    fn pack(&self, value: Tensor<f64>) -> Tensor<f64> {
        value
    }
    fn unpack(&self, packed: &Tensor<f64>) -> Tensor<f64> {
        packed.clone()
    }
}

/// `src/autograd/user_hooks.rs`: the label of a user's saved-tensors hook
/// replaced with `""` (the tape of `viz` names the hook that packed a value).
#[test]
fn the_tape_names_a_users_saved_tensors_hook() {
    let x = Tensor::<f64>::ones(&[3]).set_requires_grad(true).with_name("x");
    let y = tapegrad::saved_tensors_hooks(Keep, || x.exp().sum());
    let tape = tapegrad::viz::tape(&y);
    assert!(
        tape.contains("saved: output f64[3] packed by saved_tensors_hooks\n"),
        "{tape}"
    );
}

/// `src/checkpoint/mod.rs`: `mib` (the byte column of the printed tables)
/// replaced with `""`.
#[test]
fn a_saved_residual_prints_its_bytes_in_mib() {
    // exp of 512 × 512 f64 saves its output: 2 MiB, new to the graph
    let x = Tensor::<f64>::zeros(&[512, 512]).set_requires_grad(true);
    let line = tapegrad::saved_residuals(|xs| xs[0].exp(), &[x])[0].to_string();
    assert!(line.ends_with("2.000 MiB  2.000 MiB"), "{line}");
}

/// `src/checkpoint/planner.rs`: `checkpoint_planned` with its grad-mode
/// test negated (planned under `no_grad`, run plainly when recording).
#[test]
fn checkpoint_planned_checkpoints_when_recording_and_only_runs_under_no_grad() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let calls = Arc::new(AtomicUsize::new(0));
    let w = Tensor::<f64>::randn(&[8, 8]).set_requires_grad(true);
    let layers: Vec<tapegrad::Layer<f64>> = (0..6)
        .map(|_| {
            let (w, calls) = (w.clone(), calls.clone());
            Arc::new(move |h: &Tensor<f64>| {
                calls.fetch_add(1, Ordering::Relaxed);
                h.matmul(&w).tanh()
            }) as tapegrad::Layer<f64>
        })
        .collect();
    let x = Tensor::<f64>::randn(&[4, 8]);
    // a budget of 3 of the 6 activations: some layers must run again
    let before = tapegrad::recompute_counts();
    tapegrad::checkpoint_planned(&layers, 3 * 4 * 8 * 8, &x)
        .sum()
        .backward();
    assert!((tapegrad::recompute_counts() - before).reruns > 0);
    calls.store(0, Ordering::Relaxed);
    let _y = tapegrad::no_grad(|| tapegrad::checkpoint_planned(&layers, 3 * 4 * 8 * 8, &x));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        6,
        "one run of each layer, no dry run"
    );
}

/// `src/nn/transformer.rs`: the MLP's residual `h + mlp(ln2(h))` turned
/// into `h - mlp(ln2(h))` (the block's tests compared it only with itself:
/// packed, checkpointed).
#[test]
fn a_transformer_block_is_its_two_residual_branches() {
    use tapegrad::nn::{Module, TransformerBlock};
    let block = TransformerBlock::<f64>::new(8, 2, 16);
    let x = Tensor::<f64>::randn(&[2, 3, 8]);
    // x + attn(ln1(x)), then h + mlp(ln2(h)), from the block's own parts
    let h = &x + block.attn.forward(&block.ln1.forward(&x));
    let expect = &h + block.mlp.forward(&block.ln2.forward(&h));
    let (ours, expect) = (block.forward(&x).to_vec(), expect.to_vec());
    assert!(
        ours.iter().zip(&expect).all(|(a, b)| (a - b).abs() <= 1e-12),
        "{ours:?} vs {expect:?}"
    );
}
