//! `MultiheadAttention` and `TransformerBlock`: packed sequences against
//! each sequence alone, PyTorch's initialisation, checkpointed blocks, the
//! panics. Values against PyTorch's modules are in `tests/reference.rs`.

mod common;

use common::assert_close;
use tapegrad::nn::functional::AttentionKernel;
use tapegrad::nn::{Module, MultiheadAttention, TransformerBlock};
use tapegrad::prelude::*;

/// Where each sequence of `lengths`, packed back to back, starts (and the
/// last ends).
fn cu_of(lengths: &[usize]) -> Vec<usize> {
    std::iter::once(0)
        .chain(lengths.iter().scan(0, |end, &n| {
            *end += n;
            Some(*end)
        }))
        .collect()
}

/// A transformer block on packed sequences equals the block on each
/// sequence alone, with either kernel.
#[test]
fn transformer_block_packed_equals_each_sequence_alone() {
    tapegrad::manual_seed(6);
    let lengths = [5, 1, 9, 4];
    let cu = cu_of(&lengths);
    for kernel in [AttentionKernel::Composed, AttentionKernel::Tiled { block: 4 }] {
        let block = TransformerBlock::<f64>::new(8, 2, 12).causal(true).kernel(kernel);
        let x = Tensor::randn(&[cu[4], 8]);
        let packed = block.forward_packed(&x, &cu);
        for w in cu.windows(2) {
            let alone = block.forward(&x.narrow(0, w[0], w[1] - w[0]).unsqueeze(0));
            assert_close(
                &packed.narrow(0, w[0], w[1] - w[0]).to_vec(),
                &alone.to_vec(),
                1e-12,
            );
        }
    }
}

/// PyTorch's initialisation: in_proj_weight Xavier uniform, biases zero,
/// out_proj.weight within Linear's bound.
#[test]
fn multihead_attention_starts_as_pytorch() {
    tapegrad::manual_seed(7);
    let m = MultiheadAttention::<f64>::new(32, 4);
    let w = m.in_proj_weight.to_vec();
    let bound = (6.0f64 / (32.0 + 96.0)).sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound), "uses the whole range");
    assert_eq!(m.in_proj_bias.to_vec(), vec![0.0; 96]);
    assert_eq!(m.out_proj.bias.as_ref().unwrap().to_vec(), vec![0.0; 32]);
    assert!(m
        .out_proj
        .weight
        .to_vec()
        .iter()
        .all(|v| v.abs() <= 1.0 / 32f64.sqrt()));
    let shapes: Vec<Vec<usize>> = m.parameters().iter().map(|p| p.shape().to_vec()).collect();
    assert_eq!(shapes, [vec![96, 32], vec![96], vec![32, 32], vec![32]]);
    assert!(m.parameters().iter().all(|p| p.requires_grad() && p.is_leaf()));
}

#[test]
#[should_panic(expected = "MultiheadAttention: embed_dim (10) must be divisible by num_heads (3)")]
fn heads_that_do_not_divide_panic() {
    MultiheadAttention::<f32>::new(10, 3);
}

#[test]
#[should_panic(expected = "MultiheadAttention: expects input [.., 8] (embed_dim = 8), got shape [2, 3, 6]")]
fn multihead_attention_of_the_wrong_width_panics() {
    MultiheadAttention::<f32>::new(8, 2).forward(&Tensor::zeros(&[2, 3, 6]));
}

/// A checkpointed block (the tiled op re-run in backward, its log-sum-exp
/// recomputed) gives the same output and gradients as the plain one.
#[test]
fn checkpointed_block_gives_the_same_gradients() {
    tapegrad::manual_seed(8);
    let cu = vec![0, 6, 7, 15];
    let block = TransformerBlock::<f64>::new(8, 2, 16).causal(true);
    let x = Tensor::<f64>::randn(&[15, 8]).set_requires_grad(true);
    let grads = |checkpointed: bool| {
        block.parameters().iter().chain([&x]).for_each(Tensor::zero_grad);
        let y = match checkpointed {
            true => {
                let (b, cu) = (block.clone(), cu.clone());
                tapegrad::checkpoint(move |h| b.forward_packed(&h[0], &cu), &[x.clone()])
            }
            false => block.forward_packed(&x, &cu),
        };
        (y.sin().sum()).backward();
        let mut all = x.grad().unwrap().to_vec();
        all.extend(block.parameters().iter().flat_map(|p| p.grad().unwrap().to_vec()));
        (y.to_vec(), all)
    };
    let (plain, checkpointed) = (grads(false), grads(true));
    assert_close(&checkpointed.0, &plain.0, 1e-12);
    assert_close(&checkpointed.1, &plain.1, 1e-12);
}

/// Unbatched `[L, E]` input is the batched `[1, L, E]` one, as PyTorch's
/// `MultiheadAttention` and a block built on it.
#[test]
fn an_unbatched_sequence_is_a_batch_of_one() {
    tapegrad::manual_seed(9);
    let x = Tensor::<f64>::randn(&[5, 8]);
    let mha = MultiheadAttention::<f64>::new(8, 2);
    let block = TransformerBlock::<f64>::new(8, 2, 12);
    let batched = |m: &dyn Module<f64>| m.forward(&x.unsqueeze(0)).squeeze(0).to_vec();
    assert_close(&mha.forward(&x).to_vec(), &batched(&mha), 1e-12);
    assert_close(&block.forward(&x).to_vec(), &batched(&block), 1e-12);
}

/// A block lists its parameters by name, each once: attention's
/// projections, the two layer norms and the MLP.
#[test]
fn a_transformer_block_names_its_parameters() {
    let block = TransformerBlock::<f32>::new(8, 2, 12);
    let named = block.named_parameters();
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ln1.weight",
            "ln1.bias",
            "attn.in_proj_weight",
            "attn.in_proj_bias",
            "attn.out_proj.weight",
            "attn.out_proj.bias",
            "ln2.weight",
            "ln2.bias",
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
        ]
    );
    assert_eq!(block.parameters().len(), 12);
}
