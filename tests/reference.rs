//! Every op against reference values computed by PyTorch (float64).
//!
//! `tests/ref/ops_ref.txt` (the ops), `tests/ref/nn_ref.txt` (the nn ops
//! and layers), `tests/ref/attention_ref.txt` (attention and its
//! modules) and `tests/ref/nonfinite_ref.txt` (every op on NaN, ±inf and
//! -0.0) hold, for each named case, the inputs, an upstream gradient,
//! and PyTorch's output and input gradients; they were written by
//! `tests/ref/make_ref.py` (see `tests/ref/README.md`). Here each
//! case runs through the tapegrad op of the same name (the table in [`run`]),
//! `backward_with` the upstream gradient, and the output and every input's
//! `.grad()` must match: within `1e-9 * max(1, |ref|)` in f64 and
//! `1e-4 * max(1, |ref|)` in f32. The inputs are f32-representable, so both
//! runs see the very same numbers. Where PyTorch gives NaN ours must be NaN,
//! and where it gives an infinity ours must be the same infinity.
//!
//! Integer arguments (dims, targets, indices) are not in the data file: they
//! are written in the table below, mirroring the Python cases.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tapegrad::ndarray::{arr2, ArrayD};
use tapegrad::nn::functional::{scaled_dot_product_attention, AttentionKernel, AttentionOptions};
use tapegrad::nn::{
    load_safetensors, Conv2d, Dropout, Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Module,
    MultiheadAttention, ReLU, Sequential, TransformerBlock, GELU,
};
use tapegrad::prelude::*;

const REFERENCE: &str = include_str!("ref/ops_ref.txt");
const NN_REFERENCE: &str = include_str!("ref/nn_ref.txt");
const ATTENTION_REFERENCE: &str = include_str!("ref/attention_ref.txt");
const NONFINITE_REFERENCE: &str = include_str!("ref/nonfinite_ref.txt");

const TOL_F64: f64 = 1e-9;
const TOL_F32: f64 = 1e-4;

// ------------------------------------------------------------ the data file

/// A tensor as written in the file: shape and row-major values.
#[derive(Debug, Clone)]
struct Data {
    shape: Vec<usize>,
    values: Vec<f64>,
}

#[derive(Debug)]
struct Case {
    name: String,
    /// Each input and whether it requires grad.
    inputs: Vec<(Data, bool)>,
    upstream: Data,
    output: Data,
    /// The gradient of each input that requires grad, by input index.
    grads: Vec<(usize, Data)>,
}

/// `[2,3]` (or `[]`) followed by the values.
fn parse_data<'a>(line: usize, mut tokens: impl Iterator<Item = &'a str>) -> Data {
    let shape = tokens
        .next()
        .unwrap_or_else(|| panic!("line {line}: missing shape"));
    let inner = shape
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("line {line}: bad shape {shape:?}"));
    let shape: Vec<usize> = if inner.is_empty() {
        vec![]
    } else {
        inner
            .split(',')
            .map(|d| d.parse().unwrap_or_else(|_| panic!("line {line}: bad dim {d:?}")))
            .collect()
    };
    let values: Vec<f64> = tokens
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("line {line}: bad number {v:?}"))
        })
        .collect();
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "line {line}: {} values for shape {shape:?}",
        values.len()
    );
    Data { shape, values }
}

fn parse_index(line: usize, token: Option<&str>) -> usize {
    token
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("line {line}: missing index"))
}

/// A case whose `end` line is still to come.
struct Partial {
    name: String,
    inputs: Vec<(Data, bool)>,
    upstream: Option<Data>,
    output: Option<Data>,
    grads: Vec<(usize, Data)>,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current: Option<Partial> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let mut tokens = raw.split_whitespace();
        let Some(kind) = tokens.next() else { continue };
        if kind.starts_with('#') || kind == "torch" {
            continue;
        }
        if kind == "case" {
            assert!(current.is_none(), "line {line}: case inside a case");
            let name = tokens
                .next()
                .unwrap_or_else(|| panic!("line {line}: case without a name"));
            current = Some(Partial {
                name: name.to_string(),
                inputs: vec![],
                upstream: None,
                output: None,
                grads: vec![],
            });
            continue;
        }
        let case = current
            .as_mut()
            .unwrap_or_else(|| panic!("line {line}: {kind:?} outside a case"));
        match kind {
            "input" => {
                let i = parse_index(line, tokens.next());
                assert_eq!(i, case.inputs.len(), "line {line}: inputs out of order");
                let shape = tokens
                    .next()
                    .unwrap_or_else(|| panic!("line {line}: missing shape"));
                let req = match tokens.next() {
                    Some("1") => true,
                    Some("0") => false,
                    other => panic!("line {line}: bad requires-grad flag {other:?}"),
                };
                case.inputs
                    .push((parse_data(line, std::iter::once(shape).chain(tokens)), req));
            }
            "upstream" => case.upstream = Some(parse_data(line, tokens)),
            "output" => case.output = Some(parse_data(line, tokens)),
            "grad" => {
                let i = parse_index(line, tokens.next());
                case.grads.push((i, parse_data(line, tokens)));
            }
            "end" => {
                let Partial {
                    name,
                    inputs,
                    upstream,
                    output,
                    grads,
                } = current.take().expect("in a case");
                cases.push(Case {
                    upstream: upstream.unwrap_or_else(|| panic!("case {name}: no upstream line")),
                    output: output.unwrap_or_else(|| panic!("case {name}: no output line")),
                    name,
                    inputs,
                    grads,
                });
            }
            other => panic!("line {line}: unknown record {other:?} in case {}", case.name),
        }
    }
    assert!(current.is_none(), "the file ends inside a case");
    cases
}

fn cases() -> Vec<Case> {
    let mut cases = parse(REFERENCE);
    assert!(cases.len() > 100, "only {} cases in ops_ref.txt", cases.len());
    let nn = parse(NN_REFERENCE);
    assert!(nn.len() > 20, "only {} cases in nn_ref.txt", nn.len());
    cases.extend(nn);
    let attention = parse(ATTENTION_REFERENCE);
    assert!(
        attention.len() >= 21,
        "only {} cases in attention_ref.txt",
        attention.len()
    );
    cases.extend(attention);
    let nonfinite = parse(NONFINITE_REFERENCE);
    assert!(
        nonfinite.len() >= 80,
        "only {} cases in nonfinite_ref.txt",
        nonfinite.len()
    );
    cases.extend(nonfinite);
    cases
}

// ------------------------------------------------------------ the op table

/// A scalar on the left of an operator: implemented concretely for f32 and
/// f64 only (the orphan rule), so reached here through this trait.
trait RefFloat: Float {
    fn radd(s: f64, x: &Tensor<Self>) -> Tensor<Self>;
    fn rsub(s: f64, x: &Tensor<Self>) -> Tensor<Self>;
    fn rmul(s: f64, x: &Tensor<Self>) -> Tensor<Self>;
    fn rdiv(s: f64, x: &Tensor<Self>) -> Tensor<Self>;
}

macro_rules! ref_float {
    ($t:ty) => {
        impl RefFloat for $t {
            fn radd(s: f64, x: &Tensor<$t>) -> Tensor<$t> {
                <$t>::of(s) + x
            }
            fn rsub(s: f64, x: &Tensor<$t>) -> Tensor<$t> {
                <$t>::of(s) - x
            }
            fn rmul(s: f64, x: &Tensor<$t>) -> Tensor<$t> {
                <$t>::of(s) * x
            }
            fn rdiv(s: f64, x: &Tensor<$t>) -> Tensor<$t> {
                <$t>::of(s) / x
            }
        }
    };
}

ref_float!(f32);
ref_float!(f64);

/// `scaled_dot_product_attention` on `x[0..3]`, the composed kernel or the
/// tiled one with block 2 (the `_composed` and `_tiled` twins of a case).
fn sdpa<T: Float>(x: &[Tensor<T>], tiled: bool, causal: bool, scale: Option<f64>) -> Tensor<T> {
    let kernel = match tiled {
        true => AttentionKernel::Tiled { block: 2 },
        false => AttentionKernel::Composed,
    };
    let opts = AttentionOptions {
        causal,
        scale,
        kernel,
    };
    scaled_dot_product_attention(&x[0], &x[1], &x[2], &opts)
}

/// `MultiheadAttention(e, heads)` on `x[0]`, its parameters `x[1..5]` in
/// PyTorch's order.
fn mha<T: Float>(
    x: &[Tensor<T>],
    e: usize,
    heads: usize,
    causal: bool,
    kernel: AttentionKernel,
) -> Tensor<T> {
    let mut m = MultiheadAttention::new(e, heads).causal(causal).kernel(kernel);
    (m.in_proj_weight, m.in_proj_bias) = (x[1].clone(), x[2].clone());
    m.out_proj = Linear {
        weight: x[3].clone(),
        bias: Some(x[4].clone()),
    };
    m.forward(&x[0])
}

/// `TransformerBlock(e, heads, hidden)` on `x[0]`, its parameters `x[1..]`
/// in the order of its `named_parameters`.
fn block<T: Float>(x: &[Tensor<T>], e: usize, heads: usize, hidden: usize, causal: bool) -> Tensor<T> {
    let mut b = TransformerBlock::new(e, heads, hidden).causal(causal);
    (b.ln1.weight, b.ln1.bias, b.ln2.weight, b.ln2.bias) =
        (x[1].clone(), x[2].clone(), x[7].clone(), x[8].clone());
    (b.attn.in_proj_weight, b.attn.in_proj_bias) = (x[3].clone(), x[4].clone());
    b.attn.out_proj = Linear {
        weight: x[5].clone(),
        bias: Some(x[6].clone()),
    };
    b.mlp = Sequential::new()
        .add(Linear {
            weight: x[9].clone(),
            bias: Some(x[10].clone()),
        })
        .add(GELU)
        .add(Linear {
            weight: x[11].clone(),
            bias: Some(x[12].clone()),
        });
    b.forward(&x[0])
}

fn idx2<const N: usize>(rows: &[[usize; N]]) -> ArrayD<usize> {
    arr2(rows).into_dyn()
}

/// Defines [`run`] (case name to tapegrad op) and [`TABLE_NAMES`] (every
/// name it knows) from one list, so that the two cannot drift apart.
macro_rules! op_table {
    ($x:ident, $s:ident; $($($name:literal)|+ => $body:expr,)*) => {
        const TABLE_NAMES: &[&str] = &[$($($name,)+)*];

        /// The tapegrad op of the reference case `name` on inputs `x`.
        ///
        /// **Panics** on a name it does not know.
        fn run<T: RefFloat>(name: &str, $x: &[Tensor<T>]) -> Tensor<T> {
            let $s = |v: f64| T::of(v);
            match name {
                $($($name)|+ => $body,)*
                other => panic!("no tapegrad entry for reference case {other:?}"),
            }
        }
    };
}

op_table! { x, s;
    // binary, broadcasting
    "add_same" | "add_broadcast_row" | "add_broadcast_outer" | "add_broadcast_3d"
        | "add_broadcast_scalar_tensor" | "add_broadcast_lhs_smaller" => &x[0] + &x[1],
    "sub_same" | "sub_broadcast_row" | "sub_broadcast_outer" | "sub_broadcast_3d"
        | "sub_broadcast_scalar_tensor" | "sub_broadcast_lhs_smaller" => &x[0] - &x[1],
    "mul_same" | "mul_broadcast_row" | "mul_broadcast_outer" | "mul_broadcast_3d"
        | "mul_broadcast_scalar_tensor" | "mul_broadcast_lhs_smaller" | "mul_const_rhs" => &x[0] * &x[1],
    "div_same" | "div_broadcast_row" | "div_broadcast_outer" | "div_broadcast_3d"
        | "div_broadcast_scalar_tensor" | "div_broadcast_lhs_smaller" | "div_const_lhs" => &x[0] / &x[1],
    "mul_self" => &x[0] * &x[0],
    "sub_self_chain" => (&x[0] - x[0].exp()) * &x[0],
    "add_scalar" => &x[0] + s(2.5),
    "sub_scalar" => &x[0] - s(2.5),
    "mul_scalar" => &x[0] * s(2.5),
    "div_scalar" => &x[0] / s(2.5),
    "scalar_add" => T::radd(2.5, &x[0]),
    "scalar_sub" => T::rsub(2.5, &x[0]),
    "scalar_mul" => T::rmul(2.5, &x[0]),
    "scalar_div" => T::rdiv(2.5, &x[0]),
    "neg" => -&x[0],
    "maximum" | "maximum_broadcast" | "maximum_ties" => x[0].maximum(&x[1]),
    "minimum" | "minimum_broadcast" | "minimum_ties" => x[0].minimum(&x[1]),
    "pow_tensor" | "pow_tensor_broadcast" | "pow_tensor_const_exponent" | "pow_tensor_zero_base" => {
        x[0].pow(&x[1])
    },

    // elementwise
    "exp" => x[0].exp(),
    "ln" => x[0].ln(),
    "log1p" | "log1p_tiny" => x[0].log1p(),
    "sqrt" => x[0].sqrt(),
    "abs" => x[0].abs(),
    "sin" => x[0].sin(),
    "cos" => x[0].cos(),
    "tanh" => x[0].tanh(),
    "sigmoid" | "sigmoid_extreme" => x[0].sigmoid(),
    "relu" => x[0].relu(),
    "leaky_relu" => x[0].leaky_relu(s(0.1)),
    "leaky_relu_default" => x[0].leaky_relu(s(0.01)),
    "clamp" => x[0].clamp(s(-1.0), s(0.5)),
    "clamp_random" => x[0].clamp(s(-0.5), s(0.75)),
    "powf_2" => x[0].powf(s(2.0)),
    "powf_3" => x[0].powf(s(3.0)),
    "powf_half" => x[0].powf(s(0.5)),
    "powf_neg" => x[0].powf(s(-1.5)),
    "powf_frac" => x[0].powf(s(2.7)),
    "powf_zero" => x[0].powf(s(0.0)),
    "erf" => x[0].erf(),
    "gelu" => x[0].gelu(),
    "softplus" | "softplus_threshold" => x[0].softplus(),

    // matmul
    "matmul_2d" | "matmul_1d_1d" | "matmul_2d_1d" | "matmul_1d_2d" | "matmul_batched"
        | "matmul_batched_2d" | "matmul_2d_batched" | "matmul_batched_1d" | "matmul_1d_batched"
        | "matmul_batched_broadcast" => x[0].matmul(&x[1]),
    "matmul_transposed" => x[0].t().matmul(&x[1].t()),

    // reductions
    "sum" | "sum_3d" => x[0].sum(),
    "mean" | "mean_3d" => x[0].mean(),
    "sum_dim0" | "sum_dim0_1d" => x[0].sum_dim(0, false),
    "sum_dim1" | "sum_dim1_3d" => x[0].sum_dim(1, false),
    "sum_dim1_keep" => x[0].sum_dim(1, true),
    "sum_dim2_3d_keep" => x[0].sum_dim(2, true),
    "mean_dim0" | "mean_dim0_1d" => x[0].mean_dim(0, false),
    "mean_dim1" | "mean_dim1_3d" => x[0].mean_dim(1, false),
    "mean_dim1_keep" => x[0].mean_dim(1, true),
    "mean_dim2_3d_keep" => x[0].mean_dim(2, true),
    "max_dim0" => x[0].max_dim(0, false),
    "max_dim1_keep" => x[0].max_dim(1, true),
    "max_dim1_3d" => x[0].max_dim(1, false),
    "min_dim0" => x[0].min_dim(0, false),
    "min_dim1_keep" => x[0].min_dim(1, true),
    "min_dim2_3d" => x[0].min_dim(2, false),
    "max_dim_with_indices" => {
        let (values, index) = x[0].max_dim_with_indices(1, true);
        values + x[0].gather(1, &index)
    },
    "min_dim_with_indices" => {
        let (values, index) = x[0].min_dim_with_indices(0, true);
        values + x[0].gather(0, &index)
    },
    "argmax_dim" => x[0].gather(0, &x[0].argmax_dim(0, true)),
    "logsumexp_dim1" | "logsumexp_large" => x[0].logsumexp_dim(1, false),
    "logsumexp_dim0_keep" | "logsumexp_large_neg_keep" => x[0].logsumexp_dim(0, true),
    "logsumexp_dim1_3d_keep" => x[0].logsumexp_dim(1, true),
    "var_dim0" | "var_dim0_1d_offset" => x[0].var_dim(0, false),
    "var_dim1_keep" => x[0].var_dim(1, true),
    "var_dim1_3d" => x[0].var_dim(1, false),

    // shape
    "reshape" => x[0].reshape(&[4, 6]),
    "reshape_flat" => x[0].reshape(&[6]),
    "reshape_to_scalar" => x[0].reshape(&[]),
    "reshape_noncontiguous" => x[0].t().reshape(&[2, 6]),
    "transpose" => x[0].transpose(0, 2),
    "transpose_mid" => x[0].transpose(1, 2),
    "t" | "t_1d" => x[0].t(),
    "permute" => x[0].permute(&[2, 0, 1]),
    "unsqueeze" => x[0].unsqueeze(1),
    "unsqueeze_end" => x[0].unsqueeze(2),
    "squeeze" => x[0].squeeze(1),
    "squeeze_noop" => x[0].squeeze(0),
    "narrow" => x[0].narrow(1, 1, 3),
    "narrow_dim0" => x[0].narrow(0, 2, 2),
    "broadcast_to" => x[0].broadcast_to(&[2, 4, 3]),
    "broadcast_to_ones" => x[0].broadcast_to(&[2, 3]),
    "broadcast_to_mixed" => x[0].broadcast_to(&[2, 4, 3, 5]),
    "cat_dim0" => Tensor::cat(x, 0),
    "cat_dim1" | "cat_mixed_req" => Tensor::cat(x, 1),
    "stack_dim0" => Tensor::stack(x, 0),
    "stack_dim1" => Tensor::stack(x, 1),
    "stack_dim_end" => Tensor::stack(x, 2),
    "index_select_dim0" => x[0].index_select(0, &[2, 0, 2, 3]),
    "index_select_dim1" => x[0].index_select(1, &[3, 3, 1]),
    "gather_dim1" => x[0].gather(1, &idx2(&[[0, 3], [1, 1], [2, 0]])),
    "gather_dim0" => x[0].gather(0, &idx2(&[[2, 0, 1, 2], [2, 2, 0, 1]])),

    // nn
    "softmax_dim1" | "softmax_large" | "softmax_3d_mid" => x[0].softmax(1),
    "softmax_dim0" => x[0].softmax(0),
    "log_softmax_dim1" | "log_softmax_large" => x[0].log_softmax(1),
    "log_softmax_dim0" => x[0].log_softmax(0),

    "dropout_eval" => x[0].dropout(s(0.5), false),
    "dropout_p0" => x[0].dropout(s(0.0), true),

    // losses
    "mse_loss" | "mse_loss_const_target" => x[0].mse_loss(&x[1]),
    "cross_entropy" => x[0].cross_entropy(&[1, 0, 4, 2]),
    "cross_entropy_large" => x[0].cross_entropy(&[0, 2]),
    "nll_loss" => x[0].nll_loss(&[2, 0, 0, 1]),
    "nll_loss_of_log_softmax" => x[0].log_softmax(1).nll_loss(&[4, 1, 1]),
    "bce_with_logits" | "bce_with_logits_extreme" => x[0].binary_cross_entropy_with_logits(&x[1]),

    // composites
    "mlp" => (x[0].matmul(&x[1]) + &x[2]).tanh().matmul(&x[3]),
    "layer_norm_like" => (&x[0] - x[0].mean_dim(1, true)) / (x[0].var_dim(1, true) + s(1e-5)).sqrt(),

    // nn ops (nn_ref.txt): stride, padding, kernel sizes as in make_ref.py
    "conv2d" => x[0].conv2d(&x[1], Some(&x[2]), 1, 0),
    "conv2d_stride2_pad1" => x[0].conv2d(&x[1], Some(&x[2]), 2, 1),
    "conv2d_pad2_kernel2" => x[0].conv2d(&x[1], None, 1, 2),
    "conv2d_rect_kernel_stride3" => x[0].conv2d(&x[1], Some(&x[2]), 3, 0),
    "conv2d_unbatched" | "conv2d_const_input" | "conv2d_const_weight" => x[0].conv2d(&x[1], Some(&x[2]), 1, 1),
    "max_pool2d" | "max_pool2d_odd" | "max_pool2d_unbatched" => x[0].max_pool2d(2, 2),
    "max_pool2d_overlap" => x[0].max_pool2d(3, 1),
    "max_pool2d_stride3" => x[0].max_pool2d(2, 3),
    "layer_norm" => x[0].layer_norm(&[5], Some(&x[1]), Some(&x[2]), s(1e-5)),
    "layer_norm_2d" => x[0].layer_norm(&[3, 4], Some(&x[1]), Some(&x[2]), s(1e-5)),
    "layer_norm_no_affine" => x[0].layer_norm(&[6], None, None, s(1e-5)),
    "layer_norm_weight_only" => x[0].layer_norm(&[4], Some(&x[1]), None, s(1e-5)),
    "layer_norm_large_eps" => x[0].layer_norm(&[4], None, None, s(0.1)),
    "embedding" | "embedding_1d" => x[0].embedding(&x[1]),

    // nn layers, their parameters set to the case's inputs
    "gelu_module" => GELU.forward(&x[0]),
    "dropout_eval_module" => {
        let drop = Dropout::new(s(0.5));
        drop.eval();
        drop.forward(&x[0])
    },
    "linear_module" | "linear_module_3d" | "linear_module_1d" => {
        Linear { weight: x[1].clone(), bias: Some(x[2].clone()) }.forward(&x[0])
    },
    "linear_no_bias_module" => Linear { weight: x[1].clone(), bias: None }.forward(&x[0]),
    "conv2d_module" => {
        let mut conv = Conv2d::new(2, 3, 3).stride(2).padding(1);
        (conv.weight, conv.bias) = (x[1].clone(), Some(x[2].clone()));
        conv.forward(&x[0])
    },
    "max_pool2d_module" => MaxPool2d::new(3).stride(2).forward(&x[0]),
    "layer_norm_module" => {
        let mut ln = LayerNorm::new(&[4]);
        (ln.weight, ln.bias) = (x[1].clone(), x[2].clone());
        ln.forward(&x[0])
    },
    "embedding_module" => Embedding { weight: x[1].clone() }.forward(&x[0]),
    "sequential_cnn" => {
        let mut conv = Conv2d::new(1, 2, 3).padding(1);
        (conv.weight, conv.bias) = (x[1].clone(), Some(x[2].clone()));
        let fc = Linear { weight: x[3].clone(), bias: Some(x[4].clone()) };
        let cnn = Sequential::new().add(conv).add(ReLU).add(MaxPool2d::new(2)).add(Flatten).add(fc);
        cnn.forward(&x[0])
    },

    // attention (attention_ref.txt): causal and scale as in make_ref.py
    "sdpa_basic_composed" | "sdpa_broadcast_composed" => sdpa(x, false, false, None),
    "sdpa_basic_tiled" | "sdpa_broadcast_tiled" => sdpa(x, true, false, None),
    "sdpa_causal_composed" | "sdpa_causal_more_keys_composed" | "sdpa_causal_more_queries_composed" => {
        sdpa(x, false, true, None)
    },
    "sdpa_causal_tiled" | "sdpa_causal_more_keys_tiled" | "sdpa_causal_more_queries_tiled" => {
        sdpa(x, true, true, None)
    },
    "sdpa_scale_composed" => sdpa(x, false, false, Some(0.3)),
    "sdpa_scale_tiled" => sdpa(x, true, false, Some(0.3)),
    "sdpa_heads_causal_scale_composed" => sdpa(x, false, true, Some(0.5)),
    "sdpa_heads_causal_scale_tiled" => sdpa(x, true, true, Some(0.5)),
    "mha_composed" => mha(x, 6, 2, false, AttentionKernel::Composed),
    "mha_tiled" => mha(x, 6, 2, false, AttentionKernel::Tiled { block: 2 }),
    "mha_causal_composed" => mha(x, 4, 2, true, AttentionKernel::Composed),
    "mha_causal_tiled" => mha(x, 4, 2, true, AttentionKernel::Tiled { block: 2 }),
    "transformer_block" => block(x, 4, 2, 8, false),
    "transformer_block_causal" => block(x, 4, 1, 6, true),
    // non-finite values (nonfinite_ref.txt): arguments as in make_ref.py
    "nf_add" | "nf_add_broadcast" => &x[0] + &x[1],
    "nf_sub" => &x[0] - &x[1],
    "nf_mul" | "nf_mul_broadcast" => &x[0] * &x[1],
    "nf_div" => &x[0] / &x[1],
    "nf_pow" => x[0].pow(&x[1]),
    "nf_maximum" => x[0].maximum(&x[1]),
    "nf_minimum" => x[0].minimum(&x[1]),
    "nf_add_scalar" => &x[0] + s(2.5),
    "nf_sub_scalar" => &x[0] - s(2.5),
    "nf_mul_scalar" => &x[0] * s(2.5),
    "nf_div_scalar" => &x[0] / s(2.5),
    "nf_scalar_sub" => T::rsub(2.5, &x[0]),
    "nf_scalar_div" => T::rdiv(2.5, &x[0]),
    "nf_mul_zero_scalar" | "nf_mul_zero_scalar_nan_upstream" => &x[0] * s(0.0),
    "nf_neg" => -&x[0],
    "nf_exp" => x[0].exp(),
    "nf_ln" => x[0].ln(),
    "nf_log1p" => x[0].log1p(),
    "nf_sqrt" => x[0].sqrt(),
    "nf_abs" | "nf_abs_nan_upstream" => x[0].abs(),
    "nf_sin" => x[0].sin(),
    "nf_cos" => x[0].cos(),
    "nf_tanh" => x[0].tanh(),
    "nf_sigmoid" => x[0].sigmoid(),
    "nf_relu" | "nf_relu_nan_upstream" => x[0].relu(),
    "nf_leaky_relu" | "nf_leaky_relu_nan_upstream" => x[0].leaky_relu(s(0.1)),
    "nf_clamp" | "nf_clamp_nan_upstream" => x[0].clamp(s(-1.0), s(0.5)),
    "nf_powf_2" => x[0].powf(s(2.0)),
    "nf_powf_3" => x[0].powf(s(3.0)),
    "nf_powf_half" => x[0].powf(s(0.5)),
    "nf_powf_neg" => x[0].powf(s(-1.5)),
    "nf_powf_neg_int" => x[0].powf(s(-2.0)),
    "nf_powf_frac" => x[0].powf(s(2.7)),
    "nf_powf_zero" => x[0].powf(s(0.0)),
    "nf_powf_one" => x[0].powf(s(1.0)),
    "nf_erf" => x[0].erf(),
    "nf_gelu" => x[0].gelu(),
    "nf_softplus" | "nf_softplus_nan_upstream" => x[0].softplus(),
    "nf_dropout_eval" => x[0].dropout(s(0.5), false),
    "nf_dropout_p0" => x[0].dropout(s(0.0), true),
    "nf_matmul" | "nf_matmul_1d" => x[0].matmul(&x[1]),
    "nf_sum" => x[0].sum(),
    "nf_mean" => x[0].mean(),
    "nf_sum_dim0" => x[0].sum_dim(0, false),
    "nf_sum_dim1" => x[0].sum_dim(1, false),
    "nf_mean_dim0" => x[0].mean_dim(0, false),
    "nf_mean_dim1" => x[0].mean_dim(1, false),
    "nf_var_dim0" => x[0].var_dim(0, false),
    "nf_var_dim1" => x[0].var_dim(1, false),
    "nf_logsumexp_dim0" => x[0].logsumexp_dim(0, false),
    "nf_logsumexp_dim1" => x[0].logsumexp_dim(1, false),
    "nf_softmax_dim0" => x[0].softmax(0),
    "nf_softmax_dim1" => x[0].softmax(1),
    "nf_log_softmax_dim0" => x[0].log_softmax(0),
    "nf_log_softmax_dim1" => x[0].log_softmax(1),
    "nf_max_dim1" => x[0].max_dim(1, false),
    "nf_min_dim1" => x[0].min_dim(1, false),
    "nf_max_dim_with_indices" => {
        let (values, index) = x[0].max_dim_with_indices(1, true);
        values + x[0].gather(1, &index)
    },
    "nf_argmax_dim" => x[0].gather(1, &x[0].argmax_dim(1, true)),
    "nf_cross_entropy" => x[0].cross_entropy(&[1, 0, 1, 1, 2]),
    "nf_nll_loss" => x[0].nll_loss(&[1, 0, 2, 1, 0]),
    "nf_mse_loss" => x[0].mse_loss(&x[1]),
    "nf_bce_with_logits" => x[0].binary_cross_entropy_with_logits(&x[1]),
    "nf_reshape_t" => x[0].t().reshape(&[2, 14]),
    "nf_cat" => Tensor::cat(x, 0),
    "nf_stack" => Tensor::stack(x, 1),
    "nf_index_select" => x[0].index_select(0, &[0, 3, 0]),
    "nf_gather" => x[0].gather(1, &ArrayD::from_elem(vec![7, 2], 0)),
    "nf_broadcast_to" => x[0].broadcast_to(&[2, 8]),
    "nf_conv2d" => x[0].conv2d(&x[1], Some(&x[2]), 1, 1),
    "nf_max_pool2d" => x[0].max_pool2d(2, 2),
    "nf_layer_norm" => x[0].layer_norm(&[4], Some(&x[1]), Some(&x[2]), s(1e-5)),
    "nf_embedding" => x[0].embedding(&x[1]),
    "nf_sdpa_composed" => sdpa(x, false, false, None),
    "nf_sdpa_tiled" => sdpa(x, true, false, None),

    "transformer_block_loaded" => {
        let block = TransformerBlock::new(8, 2, 16).causal(true);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ref/weights/transformer_block.safetensors");
        load_safetensors(&block, path).expect("the weights load by name");
        block.forward(&x[0])
    },
}

// ------------------------------------------------------------ comparing

fn tensor<T: Float>(d: &Data) -> Tensor<T> {
    Tensor::from_vec(d.values.iter().map(|&v| T::of(v)).collect(), &d.shape)
}

/// Appends to `out` a line for every element of `ours` farther than
/// `tol * max(1, |ref|)` from `theirs` (or one line if the shapes differ).
/// A NaN matches only a NaN, an infinity only the same infinity, and with
/// `signed_zeros` a zero only a zero of the same sign (outputs: relu(-0)
/// is -0; not gradients, where a zero's sign is that of an incidental
/// product with an upstream value).
fn compare<T: Float>(
    case: &str,
    what: &str,
    signed_zeros: bool,
    ours: &Tensor<T>,
    theirs: &Data,
    tol: f64,
    out: &mut Vec<String>,
) {
    if ours.shape() != theirs.shape.as_slice() {
        out.push(format!(
            "{case}: {what}: shape {:?}, torch {:?}",
            ours.shape(),
            theirs.shape
        ));
        return;
    }
    for (i, (o, &r)) in ours.to_vec().into_iter().zip(&theirs.values).enumerate() {
        let o = o.as_f64();
        let bound = tol * r.abs().max(1.0);
        let diff = (o - r).abs();
        let matches = match (r.is_nan(), r.is_infinite()) {
            (true, _) => o.is_nan(),
            (_, true) => o == r,
            _ => {
                let same_zero =
                    !signed_zeros || o != 0.0 || r != 0.0 || o.is_sign_negative() == r.is_sign_negative();
                diff <= bound && same_zero
            }
        };
        if !matches {
            out.push(format!(
                "{case}: {what}[{i}]: ours {o:e}, torch {r:e} (|diff| {diff:.3e} > {bound:.1e})"
            ));
        }
    }
}

/// Runs one case in `T`; its mismatches (or its panic) go to `out`.
fn check_case<T: RefFloat>(case: &Case, tol: f64, out: &mut Vec<String>) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut found = Vec::new();
        let inputs: Vec<Tensor<T>> = case
            .inputs
            .iter()
            .map(|(d, req)| tensor::<T>(d).set_requires_grad(*req))
            .collect();
        let output = run(&case.name, &inputs);
        compare(&case.name, "output", true, &output, &case.output, tol, &mut found);
        output.backward_with(&tensor(&case.upstream));
        for (i, x) in inputs.iter().enumerate() {
            match (case.grads.iter().find(|(j, _)| *j == i), x.grad()) {
                (Some((_, reference)), Some(g)) => compare(
                    &case.name,
                    &format!("grad {i}"),
                    false,
                    &g,
                    reference,
                    tol,
                    &mut found,
                ),
                (Some(_), None) => found.push(format!("{}: grad {i}: None, torch has one", case.name)),
                (None, Some(_)) => found.push(format!(
                    "{}: grad {i}: input {i} requires no grad but got one",
                    case.name
                )),
                (None, None) => {}
            }
        }
        found
    }));
    match result {
        Ok(found) => out.extend(found),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            out.push(format!("{}: panicked: {msg}", case.name));
        }
    }
}

fn check_all<T: RefFloat>(tol: f64) {
    let cases = cases();
    let mut mismatches = Vec::new();
    for case in &cases {
        check_case::<T>(case, tol, &mut mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches against PyTorch in {} ({} cases, tolerance {tol:e} * max(1, |ref|)):\n{}",
        mismatches.len(),
        T::DTYPE,
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn reference_values_f64() {
    check_all::<f64>(TOL_F64);
}

#[test]
fn reference_values_f32() {
    check_all::<f32>(TOL_F32);
}

/// No case is silently skipped: every case of the file has an entry in the
/// table, and the table has no entry the file lacks.
#[test]
fn every_case_has_a_table_entry_and_vice_versa() {
    let file: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    let file_set: BTreeSet<&str> = file.iter().map(String::as_str).collect();
    let table_set: BTreeSet<&str> = TABLE_NAMES.iter().copied().collect();
    assert_eq!(file_set.len(), file.len(), "duplicate case names in ops_ref.txt");
    assert_eq!(table_set.len(), TABLE_NAMES.len(), "duplicate names in the table");
    let missing: Vec<_> = file_set.difference(&table_set).collect();
    let extra: Vec<_> = table_set.difference(&file_set).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "cases without a table entry: {missing:?}; table entries without a case: {extra:?}"
    );
}

#[test]
#[should_panic(expected = "no tapegrad entry for reference case \"no_such_case\"")]
fn the_table_panics_on_an_unknown_case() {
    run::<f64>("no_such_case", &[]);
}
