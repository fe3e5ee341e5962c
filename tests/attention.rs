//! Attention: the tiled kernel against the composed one (values and
//! gradients, random shapes), gradient checks, higher derivatives, what the
//! graph saves, packed sequences, and the panics. Values against PyTorch
//! are in `tests/reference.rs` (`tests/ref/attention_ref.txt`); the modules
//! built on attention in `tests/transformer.rs`.

mod common;

use common::{assert_close, check_op, in_child_process};
use proptest::prelude::*;
use tapegrad::memory::saved_bytes;
use tapegrad::nn::functional::{
    pack_sequences, scaled_dot_product_attention, varlen_attention, AttentionKernel, AttentionOptions,
};
use tapegrad::prelude::*;

fn opts(kernel: AttentionKernel, causal: bool, scale: Option<f64>) -> AttentionOptions {
    AttentionOptions {
        causal,
        scale,
        kernel,
    }
}

/// A random leaf of `shape` that requires grad.
fn input(shape: &[usize]) -> Tensor<f64> {
    Tensor::randn(shape).set_requires_grad(true)
}

/// The output of attention on `qkv` and the gradients of q, k, v for the
/// upstream gradient `up`.
fn run(qkv: &[Tensor<f64>; 3], up: &Tensor<f64>, o: &AttentionOptions) -> Vec<Vec<f64>> {
    for x in qkv {
        x.zero_grad();
    }
    let out = scaled_dot_product_attention(&qkv[0], &qkv[1], &qkv[2], o);
    out.backward_with(up);
    let mut all = vec![out.to_vec()];
    all.extend(qkv.iter().map(|x| x.grad().expect("a gradient").to_vec()));
    all
}

/// A draw of an attention problem: batch dimensions of q and of k and v
/// (equal, or k's and v's with some dimensions 1 or missing, to broadcast),
/// lengths, features, block, causal, scale, seed.
#[derive(Debug, Clone)]
struct Case {
    q_batch: Vec<usize>,
    kv_batch: Vec<usize>,
    l: usize,
    s: usize,
    e: usize,
    ev: usize,
    block: usize,
    causal: bool,
    scale: Option<f64>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((1usize..=3, any::<bool>()), 0..=2),
        any::<bool>(),
        (1usize..=13, 1usize..=13, 1usize..=5, 1usize..=5),
        1usize..=6,
        any::<bool>(),
        prop::option::of(0.1f64..2.0),
        any::<u64>(),
    )
        .prop_map(|(batch, drop_lead, (l, s, e, ev), block, causal, scale, seed)| {
            let q_batch: Vec<usize> = batch.iter().map(|b| b.0).collect();
            let mut kv_batch: Vec<usize> = batch.iter().map(|&(b, keep)| if keep { b } else { 1 }).collect();
            if drop_lead && !kv_batch.is_empty() {
                kv_batch.remove(0);
            }
            Case {
                q_batch,
                kv_batch,
                l,
                s,
                e,
                ev,
                block,
                causal,
                scale,
                seed,
            }
        })
}

proptest! {
    /// Tiled equals Composed to 1e-10 in f64, output and the three
    /// gradients: lengths that are not multiples of the block, L ≠ S,
    /// causal or not, broadcast batch dimensions, any scale.
    #[test]
    fn tiled_equals_composed(c in case()) {
        tapegrad::manual_seed(c.seed);
        let shape = |batch: &[usize], rows, cols| [batch, &[rows, cols]].concat();
        let qkv = [
            input(&shape(&c.q_batch, c.l, c.e)),
            input(&shape(&c.kv_batch, c.s, c.e)),
            input(&shape(&c.kv_batch, c.s, c.ev)),
        ];
        let up = Tensor::randn(&shape(&c.q_batch, c.l, c.ev));
        let composed = run(&qkv, &up, &opts(AttentionKernel::Composed, c.causal, c.scale));
        let tiled = run(&qkv, &up, &opts(AttentionKernel::Tiled { block: c.block }, c.causal, c.scale));
        for (what, (a, b)) in ["output", "dq", "dk", "dv"].iter().zip(tiled.iter().zip(&composed)) {
            prop_assert_eq!(a.len(), b.len(), "{} length", what);
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                prop_assert!((x - y).abs() <= 1e-10 * (1.0 + y.abs()), "{}[{}]: tiled {} composed {}", what, i, x, y);
            }
        }
    }
}

/// Rows of tiles long enough for the 8-lane loops (the proptest's blocks
/// are at most 6 wide) and more than one tile of 128, and scales of every
/// sign: tiled equals composed, in f64 to 1e-10 and in f32 (its exponential
/// a polynomial) to 1e-5, outputs and gradients.
#[test]
fn tiled_equals_composed_on_long_rows() {
    fn compare<T: Float>(tol: f64) {
        tapegrad::manual_seed(9);
        for (l, s, block) in [(37, 64, 16), (64, 37, 64), (130, 130, 128), (200, 150, 64)] {
            for (causal, scale) in [
                (false, None),
                (true, None),
                (true, Some(-0.7)),
                (false, Some(0.0)),
            ] {
                let leaf = |shape: &[usize]| Tensor::<T>::randn(shape).set_requires_grad(true);
                let qkv = [leaf(&[2, l, 24]), leaf(&[2, s, 24]), leaf(&[2, s, 16])];
                let up = Tensor::<T>::randn(&[2, l, 16]);
                let run = |kernel| {
                    qkv.iter().for_each(Tensor::zero_grad);
                    let out =
                        scaled_dot_product_attention(&qkv[0], &qkv[1], &qkv[2], &opts(kernel, causal, scale));
                    out.backward_with(&up);
                    let mut all: Vec<f64> = out.to_vec().into_iter().map(Float::as_f64).collect();
                    for x in &qkv {
                        all.extend(x.grad().unwrap().to_vec().into_iter().map(Float::as_f64));
                    }
                    all
                };
                let (tiled, composed) = (
                    run(AttentionKernel::Tiled { block }),
                    run(AttentionKernel::Composed),
                );
                assert_close(&tiled, &composed, tol);
            }
        }
    }
    compare::<f64>(1e-10);
    compare::<f32>(1e-5);
}

/// A block far larger than the lengths is one tile (its buffers are sized
/// by the lengths, not by the block).
/// Scores so far apart that the softmax is one key exactly (the other's
/// exponential is 0): the output is that key's `v`, so the gradient of
/// `Σ w · out` back to x is `2 w x` and nothing comes through q and k.
/// With queries near 1e15 any rounding left in `dS` is multiplied up by
/// the chain (`d exp(x⁶)/dx`); the tiled backward's `D = rowsum(dO ∘ O)`
/// once differed from the dominant key's `dP` by that rounding (7.64 for
/// 3.44, `tests/fuzz_regressions.rs`). Blocks of 1 put the two keys in two
/// tiles, so the online softmax's correction is on the path too.
#[test]
fn a_one_key_softmax_passes_no_gradient_to_huge_queries() {
    let data = vec![-1.8047655217987257, -0.9038244306101246, -1.703843798208176];
    let w = Tensor::from_vec(
        vec![-0.9520555924707517, -0.6191609449307385, 0.07560653130146022],
        &[1, 3],
    );
    let want: Vec<f64> = data.iter().zip(w.to_vec()).map(|(x, w)| 2.0 * w * x).collect();
    for kernel in [
        AttentionKernel::Composed,
        AttentionKernel::Tiled { block: 1 },
        AttentionKernel::Tiled { block: 2 },
    ] {
        for first in [true, false] {
            let x = Tensor::from_vec(data.clone(), &[1, 3]).set_requires_grad(true);
            let (square, sig) = (x.powf(2.0), x.sigmoid());
            let q = &square.powf(3.0).exp() + &sig;
            // The dominant key (score q·σ(x), about 1e15) first or second;
            // the other scores half of it, 5e14 below.
            let (keys, values) = match first {
                true => (vec![sig.clone(), &sig * 0.5], vec![square.clone(), x.clone()]),
                false => (vec![&sig * 0.5, sig.clone()], vec![x.clone(), square.clone()]),
            };
            let (k, v) = (Tensor::cat(&keys, 0), Tensor::cat(&values, 0));
            let out = scaled_dot_product_attention(&q, &k, &v, &opts(kernel, false, None));
            (&out * &w).sum().backward();
            let got = x.grad().unwrap().to_vec();
            assert_close(&got, &want, 1e-9);
        }
    }
}

#[test]
fn a_huge_block_is_one_tile() {
    tapegrad::manual_seed(10);
    let qkv = [input(&[2, 5, 3]), input(&[2, 7, 3]), input(&[2, 7, 2])];
    let run =
        |kernel| scaled_dot_product_attention(&qkv[0], &qkv[1], &qkv[2], &opts(kernel, true, None)).to_vec();
    assert_close(
        &run(AttentionKernel::Tiled { block: usize::MAX }),
        &run(AttentionKernel::Composed),
        1e-12,
    );
}

#[test]
fn tiled_gradchecks() {
    tapegrad::manual_seed(1);
    // L ≠ S, neither a multiple of the block, more queries than keys and
    // more keys than queries (with the causal mask, too); broadcast batch.
    let cases: [(&[usize], &[usize], usize, usize); 4] = [
        (&[2], &[2], 5, 7),
        (&[2], &[2], 6, 4),
        (&[1, 2], &[2], 3, 5),
        (&[2, 3], &[1, 3], 4, 4),
    ];
    for (qb, kb, l, s) in cases {
        for causal in [false, true] {
            let inputs = [
                input(&[qb, &[l, 3]].concat()),
                input(&[kb, &[s, 3]].concat()),
                input(&[kb, &[s, 2]].concat()),
            ];
            let o = opts(AttentionKernel::Tiled { block: 2 }, causal, Some(0.7));
            check_op(|x| scaled_dot_product_attention(&x[0], &x[1], &x[2], &o), &inputs);
        }
    }
}

#[test]
fn composed_gradchecks() {
    tapegrad::manual_seed(2);
    let inputs = [input(&[2, 4, 3]), input(&[2, 5, 3]), input(&[2, 5, 2])];
    for causal in [false, true] {
        let o = opts(AttentionKernel::Composed, causal, None);
        check_op(|x| scaled_dot_product_attention(&x[0], &x[1], &x[2], &o), &inputs);
    }
}

/// Second derivatives (create_graph) of the tiled op equal the composed
/// op's, and its first derivative gradchecks as a function itself; with a
/// batch dimension and without (2-D q, k, v).
#[test]
fn tiled_second_derivatives() {
    tapegrad::manual_seed(3);
    for batch in [&[2][..], &[]] {
        let shape = |rest: &[usize]| [batch, rest].concat();
        let qkv = [
            input(&shape(&[5, 3])),
            input(&shape(&[4, 3])),
            input(&shape(&[4, 2])),
        ];
        let w = Tensor::randn(&shape(&[5, 2]));
        let r: Vec<Tensor<f64>> = qkv.iter().map(|x| Tensor::randn(x.shape())).collect();
        let second = |kernel| {
            let o = opts(kernel, true, None);
            let loss = (scaled_dot_product_attention(&qkv[0], &qkv[1], &qkv[2], &o) * &w).sum();
            let first = tapegrad::grad(
                &[loss],
                &qkv,
                GradOptions {
                    create_graph: true,
                    ..Default::default()
                },
            );
            let h = first
                .iter()
                .zip(&r)
                .map(|(g, r)| (g.as_ref().expect("a gradient") * r).sum())
                .reduce(|a, b| a + b)
                .expect("three terms");
            let again = tapegrad::grad(&[h], &qkv, GradOptions::default());
            again
                .into_iter()
                .flat_map(|g| g.expect("a second derivative").to_vec())
                .collect::<Vec<_>>()
        };
        assert_close(
            &second(AttentionKernel::Tiled { block: 2 }),
            &second(AttentionKernel::Composed),
            1e-10,
        );

        let o = opts(AttentionKernel::Tiled { block: 3 }, false, None);
        check_op(
            |x| {
                let loss = (scaled_dot_product_attention(&x[0], &x[1], &x[2], &o) * &w).sum();
                let opts = GradOptions {
                    create_graph: true,
                    ..Default::default()
                };
                tapegrad::grad(&[loss], &x[..1], opts)[0].clone().expect("dq")
            },
            &qkv,
        );
    }
}

/// The tiled op is one node; its backward records nothing (the gradients
/// are leaves) unless create_graph asks.
#[test]
fn tiled_is_one_node() {
    let qkv = [input(&[3, 4]), input(&[5, 4]), input(&[5, 4])];
    let out = scaled_dot_product_attention(
        &qkv[0],
        &qkv[1],
        &qkv[2],
        &opts(AttentionKernel::Tiled { block: 2 }, false, None),
    );
    assert_eq!(out.grad_fn_name().as_deref(), Some("FlashAttentionBackward"));
    out.sum().backward();
    assert!(qkv
        .iter()
        .all(|x| x.grad().is_some_and(|g| g.is_leaf() && !g.requires_grad())));
    let composed = scaled_dot_product_attention(
        &qkv[0],
        &qkv[1],
        &qkv[2],
        &opts(AttentionKernel::Composed, false, None),
    );
    assert_eq!(composed.grad_fn_name().as_deref(), Some("MmBackward"));
}

/// What each kernel's graph saves, in bytes (q, k, v made by a recorded op,
/// so that they count): the tiled op exactly q, k, v, the output and one
/// log-sum-exp per query row, for any length; the composed form grows with
/// L·S. Runs alone in a child process: the counter is process-wide.
#[test]
fn tiled_saves_linear_bytes() {
    in_child_process(
        "tiled_saves_linear_bytes",
        std::time::Duration::from_secs(120),
        || {
            let (heads, e) = (2, 8);
            let saved = |l: usize, kernel| {
                let x = Tensor::<f32>::randn(&[3, heads, l, e]).set_requires_grad(true);
                let qkv = &x * 1.0;
                let (q, k, v) = (qkv.narrow(0, 0, 1), qkv.narrow(0, 1, 1), qkv.narrow(0, 2, 1));
                drop(qkv);
                let before = saved_bytes();
                let out = scaled_dot_product_attention(&q, &k, &v, &opts(kernel, true, None));
                drop((q, k, v));
                let bytes = saved_bytes() - before;
                drop(out);
                bytes
            };
            for l in [64, 128, 256] {
                let f = 4; // bytes of an f32
                           // q, k and v share the buffer of `qkv` (counted once): 3 × heads × l × e;
                           // the output heads × l × e; the log-sum-exp heads × l.
                let want = f * (3 * heads * l * e + heads * l * e + heads * l);
                assert_eq!(
                    saved(l, AttentionKernel::Tiled { block: 32 }),
                    want,
                    "tiled, L = {l}"
                );
                let composed = saved(l, AttentionKernel::Composed);
                assert!(
                    composed >= f * 2 * heads * l * l,
                    "composed, L = {l}: {composed} bytes"
                );
            }
        },
    );
}

#[test]
#[should_panic(
    expected = "scaled_dot_product_attention: q [.., L, E], k [.., S, E] and v [.., S, Ev] do not fit: shapes [2, 3], [4, 2] and [5, 2]"
)]
fn mismatched_shapes_panic() {
    let o = AttentionOptions::default();
    scaled_dot_product_attention(
        &Tensor::<f32>::zeros(&[2, 3]),
        &Tensor::zeros(&[4, 2]),
        &Tensor::zeros(&[5, 2]),
        &o,
    );
}

#[test]
#[should_panic(
    expected = "scaled_dot_product_attention: the batch dimensions of q, k and v do not broadcast: shapes [2, 3, 4], [3, 5, 4] and [3, 5, 4]"
)]
fn batch_dims_that_do_not_broadcast_panic() {
    let o = AttentionOptions::default();
    scaled_dot_product_attention(
        &Tensor::<f32>::zeros(&[2, 3, 4]),
        &Tensor::zeros(&[3, 5, 4]),
        &Tensor::zeros(&[3, 5, 4]),
        &o,
    );
}

#[test]
#[should_panic(
    expected = "scaled_dot_product_attention: AttentionKernel::Tiled needs a block of at least 1, got 0"
)]
fn block_zero_panics() {
    let x = Tensor::<f32>::zeros(&[2, 2]);
    scaled_dot_product_attention(
        &x,
        &x,
        &x,
        &opts(AttentionKernel::Tiled { block: 0 }, false, None),
    );
}

#[test]
#[should_panic(expected = "scaled_dot_product_attention: q, k and v need at least 2 dimensions")]
fn one_dimensional_input_panics() {
    let x = Tensor::<f32>::zeros(&[2]);
    scaled_dot_product_attention(&x, &x, &x, &AttentionOptions::default());
}

// ------------------------------------------------------------ packed sequences

/// A draw of packed sequences: lengths (the first at least 1, others may be
/// 0), heads, features, block, causal, which kernel, seed.
#[derive(Debug, Clone)]
struct Packed {
    lengths: Vec<usize>,
    heads: usize,
    e: usize,
    ev: usize,
    block: usize,
    causal: bool,
    tiled: bool,
    seed: u64,
}

fn packed() -> impl Strategy<Value = Packed> {
    (
        1usize..=7,
        prop::collection::vec(0usize..=7, 0..=3),
        (1usize..=3, 1usize..=4, 1usize..=4, 1usize..=5),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(first, rest, (heads, e, ev, block), causal, tiled, seed)| Packed {
                lengths: std::iter::once(first).chain(rest).collect(),
                heads,
                e,
                ev,
                block,
                causal,
                tiled,
                seed,
            },
        )
}

fn cu_of(lengths: &[usize]) -> Vec<usize> {
    std::iter::once(0)
        .chain(lengths.iter().scan(0, |end, &n| {
            *end += n;
            Some(*end)
        }))
        .collect()
}

proptest! {
    /// varlen_attention equals attention on each sequence alone (as
    /// `[heads, n, E]`, the composed kernel), output and gradients, with
    /// either kernel; q is a strided view (heads first in memory).
    #[test]
    fn varlen_equals_each_sequence_alone(c in packed()) {
        tapegrad::manual_seed(c.seed);
        let cu = cu_of(&c.lengths);
        let t = *cu.last().unwrap();
        let q_heads_first = input(&[c.heads, t, c.e]);
        let (k, v) = (input(&[t, c.heads, c.e]), input(&[t, c.heads, c.ev]));
        let leaves = [q_heads_first.clone(), k.clone(), v.clone()];
        let up = Tensor::randn(&[t, c.heads, c.ev]);
        let kernel = match c.tiled {
            true => AttentionKernel::Tiled { block: c.block },
            false => AttentionKernel::Composed,
        };
        let q = q_heads_first.transpose(0, 1);
        let out = varlen_attention(&q, &k, &v, &cu, &opts(kernel, c.causal, None));
        out.backward_with(&up);
        let packed_grads: Vec<Vec<f64>> = leaves.iter().map(|x| x.grad().unwrap().to_vec()).collect();
        for x in &leaves {
            x.zero_grad();
        }
        let alone = opts(AttentionKernel::Composed, c.causal, None);
        for w in cu.windows(2).filter(|w| w[1] > w[0]) {
            let seq = |x: &Tensor<f64>| x.narrow(0, w[0], w[1] - w[0]).transpose(0, 1);
            let y = scaled_dot_product_attention(&seq(&q), &seq(&k), &seq(&v), &alone);
            let ours = seq(&out).to_vec();
            for (a, b) in ours.iter().zip(y.to_vec()) {
                prop_assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "output of {:?}: {} vs {}", w, a, b);
            }
            y.backward_with(&seq(&up));
        }
        for (x, packed) in leaves.iter().zip(&packed_grads) {
            let want = x.grad().unwrap().to_vec();
            for (a, b) in packed.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "gradient: {} vs {}", a, b);
            }
        }
    }

    /// pack_sequences: every sequence once, each batch within the budget,
    /// cu_seqlens its sequences' lengths, and no two batches that would
    /// fit in one (first-fit: a batch was opened only for a sequence that
    /// fitted in no earlier one).
    #[test]
    fn packing_covers_every_sequence_within_the_budget(
        lengths in prop::collection::vec(0usize..=20, 0..=30),
        extra in 0usize..=20,
    ) {
        let budget = lengths.iter().copied().max().unwrap_or(0) + extra;
        let batches = pack_sequences(&lengths, budget.max(1));
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.sequences.clone()).collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            prop_assert!(b.tokens() <= budget.max(1));
            let want: Vec<usize> = cu_of(&b.sequences.iter().map(|&i| lengths[i]).collect::<Vec<_>>());
            prop_assert_eq!(&b.cu_seqlens, &want);
        }
        for (i, a) in batches.iter().enumerate() {
            for b in &batches[i + 1..] {
                prop_assert!(a.tokens() + b.tokens() > budget.max(1), "{:?} and {:?} fit in one", a, b);
            }
        }
    }
}

#[test]
fn varlen_tiled_gradchecks() {
    tapegrad::manual_seed(4);
    let cu = [0, 3, 3, 8];
    let inputs = [input(&[8, 2, 3]), input(&[8, 2, 3]), input(&[8, 2, 2])];
    for causal in [false, true] {
        let o = opts(AttentionKernel::Tiled { block: 2 }, causal, None);
        check_op(|x| varlen_attention(&x[0], &x[1], &x[2], &cu, &o), &inputs);
    }
}

/// Packing round trip: the sequences come back, and gradients reach them
/// through `pack`.
#[test]
fn pack_then_unpack_gives_the_sequences_back() {
    tapegrad::manual_seed(5);
    let lengths = [4, 1, 6, 3, 0, 5];
    let seqs: Vec<Tensor<f64>> = lengths.iter().map(|&n| input(&[n, 2])).collect();
    for batch in pack_sequences(&lengths, 8) {
        let packed = batch.pack(&seqs);
        assert_eq!(packed.shape(), &[batch.tokens(), 2]);
        let back = batch.unpack(&(&packed * 2.0));
        for (&i, y) in batch.sequences.iter().zip(&back) {
            assert_eq!(y.to_vec(), (&seqs[i] * 2.0).to_vec());
            y.sum().backward();
        }
    }
    for (x, &n) in seqs.iter().zip(&lengths).filter(|(_, &n)| n > 0) {
        assert_eq!(x.grad().unwrap().to_vec(), vec![2.0; 2 * n]);
    }
}

#[test]
#[should_panic(expected = "pack_sequences: sequence 1 has 9 tokens, more than max_tokens = 8")]
fn a_sequence_longer_than_the_budget_panics() {
    pack_sequences(&[3, 9], 8);
}

#[test]
#[should_panic(expected = "varlen_attention: cu_seqlens must rise from 0 to total_tokens = 5, got [0, 3, 4]")]
fn cu_seqlens_short_of_the_tokens_panics() {
    let x = Tensor::<f32>::zeros(&[5, 1, 2]);
    varlen_attention(&x, &x, &x, &[0, 3, 4], &AttentionOptions::default());
}

#[test]
#[should_panic(
    expected = "varlen_attention: cu_seqlens must rise from 0 to total_tokens = 5, got [0, 4, 3, 5]"
)]
fn decreasing_cu_seqlens_panic() {
    let x = Tensor::<f32>::zeros(&[5, 1, 2]);
    varlen_attention(&x, &x, &x, &[0, 4, 3, 5], &AttentionOptions::default());
}

#[test]
#[should_panic(
    expected = "varlen_attention: q and k [total_tokens, heads, E] and v [total_tokens, heads, Ev] do not fit: shapes [5, 2, 3], [5, 1, 3] and [5, 1, 3]"
)]
fn varlen_heads_that_differ_panic() {
    let (q, k) = (Tensor::<f32>::zeros(&[5, 2, 3]), Tensor::<f32>::zeros(&[5, 1, 3]));
    varlen_attention(&q, &k, &k, &[0, 5], &AttentionOptions::default());
}
