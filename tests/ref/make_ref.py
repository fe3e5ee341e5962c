#!/usr/bin/env python3
"""Reference values for tapegrad's ops, computed with PyTorch in float64.

Run from the repository root (PyTorch is needed here only, never by the tests):

    python tests/ref/make_ref.py            # writes the five files below

ops_ref.txt   the ops of tapegrad (CASES, torch.manual_seed(0));
nn_ref.txt    the nn ops and layers (nn_cases(), torch.manual_seed(1)), in
              the same format: drawn after ops_ref.txt and from their own
              seed, so adding an nn case leaves ops_ref.txt as it was;
attention_ref.txt
              scaled_dot_product_attention and MultiheadAttention (each
              case twice, for the composed and the tiled kernel) and
              TransformerBlock against nn.TransformerEncoderLayer
              (attention_cases(), torch.manual_seed(2)); also writes
              weights/transformer_block.safetensors, which its last case
              loads;
nonfinite_ref.txt
              every op on NaN, +inf, -inf and -0.0 (nonfinite_cases(),
              torch.manual_seed(3) for the upstream gradients);
nn_state_dicts.txt
              the state_dict keys and shapes of a few nn.Sequential models
              (tests/nn.rs builds the same models and compares
              named_parameters()).

For every case below it draws the inputs with torch's generator (seed 0),
computes the op's output and the vector-Jacobian product with a random
upstream gradient of the output's shape (torch.autograd.grad), and writes all
of it to ops_ref.txt. tests/reference.rs runs the same op in tapegrad on the
same inputs and compares, in f64 and in f32.

Every input and upstream value is rounded to the nearest f32 before use, so
the f32 run sees exactly the same numbers as the f64 run (the comparison then
measures the f32 arithmetic only, not the rounding of the inputs).

Integer arguments (dims, class targets, indices, strides, paddings, kernel
sizes) are written into the lambdas here and mirrored in the table of
tests/reference.rs; the data file holds only the tensors. Case names are the
keys: keep the two in step. Embedding ids are inputs that require no grad,
holding whole numbers (as tapegrad's embedding reads them); the lambda turns
them into the integer tensor torch wants.

File format (one record per line, tokens separated by single spaces; floats
are Python repr, the shortest string that round-trips the f64 exactly):

    # comment
    torch VERSION
    case NAME
    input I [SHAPE] REQ V V V ...   REQ is 1 if the input requires grad, else 0
    upstream [SHAPE] V V V ...      the gradient fed to backward
    output [SHAPE] V V V ...
    grad I [SHAPE] V V V ...        one per input that requires grad
    end

SHAPE is comma-separated without spaces ([2,3]); [] is a 0-d tensor.
dropout is covered only where it is deterministic (train = false, p = 0): its
mask is random, and tapegrad's generator is not torch's.
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.manual_seed(0)
DT = torch.float64


def f32(t):
    """Rounds to the nearest f32 (kept as f64): see the module docstring."""
    return t.to(torch.float32).to(DT)


def randn(*shape, scale=1.0):
    return f32(torch.randn(shape, dtype=DT) * scale)


def uniform(lo, hi, *shape):
    return f32(torch.rand(shape, dtype=DT) * (hi - lo) + lo)


def away(lo, hi, *shape):
    """Values with lo <= |x| <= hi and a random sign: away from a kink at 0."""
    sign = torch.where(torch.rand(shape, dtype=DT) < 0.5, -1.0, 1.0).to(DT)
    return f32(sign * (torch.rand(shape, dtype=DT) * (hi - lo) + lo))


def distinct(*shape, spread=0.37):
    """Values that are pairwise at least `spread` - 0.1 apart, in random
    order: no ties for max / min (not even after rounding to f32)."""
    n = 1
    for s in shape:
        n *= s
    perm = torch.randperm(n).to(DT)
    vals = (perm - n / 2) * spread + torch.rand(n, dtype=DT) * 0.1
    return f32(vals.reshape(*shape))


def exact(values, shape):
    return f32(torch.tensor(values, dtype=DT).reshape(*shape))


CASES = []


def case(name, inputs, fn):
    """`inputs`: list of (tensor, requires_grad); `fn(*tensors)` the op."""
    CASES.append((name, inputs, fn))


def req(t):
    return (t, True)


def const(t):
    return (t, False)


# ------------------------------------------------------------ binary, broadcasting

for opname, op in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)]:
    case(f"{opname}_same", [req(randn(2, 3)), req(randn(2, 3))], op)
    case(f"{opname}_broadcast_row", [req(randn(2, 3)), req(randn(3))], op)
    case(f"{opname}_broadcast_outer", [req(randn(2, 1)), req(randn(1, 3))], op)
    case(f"{opname}_broadcast_3d", [req(randn(4, 1, 3)), req(randn(2, 1))], op)
    case(f"{opname}_broadcast_scalar_tensor", [req(randn()), req(randn(2, 3))], op)
    case(f"{opname}_broadcast_lhs_smaller", [req(randn(3, 1)), req(randn(2, 3, 4))], op)

case("div_same", [req(randn(2, 3)), req(away(0.5, 2.0, 2, 3))], torch.div)
case("div_broadcast_row", [req(randn(2, 3)), req(away(0.5, 2.0, 3))], torch.div)
case("div_broadcast_outer", [req(randn(2, 1)), req(away(0.5, 2.0, 1, 3))], torch.div)
case("div_broadcast_3d", [req(randn(4, 1, 3)), req(away(0.5, 2.0, 2, 1))], torch.div)
case("div_broadcast_scalar_tensor", [req(randn()), req(away(0.5, 2.0, 2, 3))], torch.div)
case("div_broadcast_lhs_smaller", [req(randn(3, 1)), req(away(0.5, 2.0, 2, 3, 4))], torch.div)

# one side a constant (requires no grad)
case("mul_const_rhs", [req(randn(2, 3)), const(randn(3))], torch.mul)
case("div_const_lhs", [const(randn(2, 3)), req(away(0.5, 2.0, 2, 3))], torch.div)
# the same tensor on both sides: gradients accumulate
case("mul_self", [req(randn(2, 3))], lambda x: x * x)
case("sub_self_chain", [req(randn(3, 2))], lambda x: (x - x.exp()) * x)

# tensor-scalar, scalar on the right and on the left
case("add_scalar", [req(randn(2, 3))], lambda x: x + 2.5)
case("sub_scalar", [req(randn(2, 3))], lambda x: x - 2.5)
case("mul_scalar", [req(randn(2, 3))], lambda x: x * 2.5)
case("div_scalar", [req(randn(2, 3))], lambda x: x / 2.5)
case("scalar_add", [req(randn(2, 3))], lambda x: 2.5 + x)
case("scalar_sub", [req(randn(2, 3))], lambda x: 2.5 - x)
case("scalar_mul", [req(randn(2, 3))], lambda x: 2.5 * x)
case("scalar_div", [req(away(0.5, 2.0, 2, 3))], lambda x: 2.5 / x)
case("neg", [req(randn(2, 3))], lambda x: -x)

case("maximum", [req(distinct(2, 3)), req(distinct(2, 3, spread=0.41))], torch.maximum)
case("minimum", [req(distinct(2, 3)), req(distinct(2, 3, spread=0.41))], torch.minimum)
case("maximum_broadcast", [req(distinct(2, 3)), req(distinct(3, spread=0.53))], torch.maximum)
case("minimum_broadcast", [req(distinct(4, 1)), req(distinct(1, 3, spread=0.53))], torch.minimum)
# exact ties: each side gets half the gradient, as PyTorch
case("maximum_ties", [req(exact([1.0, 2.0, -0.5, 3.0], [4])), req(exact([1.0, 1.5, -0.5, 4.0], [4]))],
     torch.maximum)
case("minimum_ties", [req(exact([1.0, 2.0, -0.5, 3.0], [4])), req(exact([1.0, 1.5, -0.5, 4.0], [4]))],
     torch.minimum)

case("pow_tensor", [req(uniform(0.5, 2.0, 2, 3)), req(uniform(-2.0, 3.0, 2, 3))], torch.pow)
case("pow_tensor_broadcast", [req(uniform(0.5, 2.0, 2, 3)), req(uniform(-2.0, 3.0, 3))], torch.pow)
case("pow_tensor_const_exponent", [req(uniform(0.5, 2.0, 2, 3)), const(uniform(-2.0, 3.0, 2, 3))], torch.pow)
# a zero base with a positive exponent: the exponent's gradient is 0 there
case("pow_tensor_zero_base", [req(exact([0.0, 0.5, 0.0, 1.5], [4])), req(exact([2.0, 1.5, 2.5, 3.0], [4]))],
     torch.pow)

# ------------------------------------------------------------ elementwise

case("exp", [req(randn(2, 3))], torch.exp)
case("ln", [req(uniform(0.1, 5.0, 2, 3))], torch.log)
case("log1p", [req(uniform(-0.9, 3.0, 2, 3))], torch.log1p)
case("log1p_tiny", [req(exact([1e-10, -1e-8, 3e-7, 1e-5], [4]))], torch.log1p)
case("sqrt", [req(uniform(0.1, 5.0, 2, 3))], torch.sqrt)
case("abs", [req(away(0.1, 2.0, 2, 3))], torch.abs)
case("sin", [req(randn(2, 3, scale=2.0))], torch.sin)
case("cos", [req(randn(2, 3, scale=2.0))], torch.cos)
case("tanh", [req(randn(2, 3, scale=2.0))], torch.tanh)
case("sigmoid", [req(randn(2, 3, scale=3.0))], torch.sigmoid)
case("sigmoid_extreme", [req(exact([-40.0, -20.0, 20.0, 40.0], [4]))], torch.sigmoid)
case("relu", [req(away(0.1, 2.0, 2, 3))], torch.relu)
case("leaky_relu", [req(away(0.1, 2.0, 2, 3))], lambda x: F.leaky_relu(x, 0.1))
case("leaky_relu_default", [req(away(0.1, 2.0, 2, 3))], lambda x: F.leaky_relu(x, 0.01))
case("clamp", [req(exact([-2.0, -1.2, -0.3, 0.4, 0.8, 1.7], [2, 3]))], lambda x: torch.clamp(x, -1.0, 0.5))
case("clamp_random", [req(randn(3, 4))], lambda x: torch.clamp(x, -0.5, 0.75))
case("powf_2", [req(randn(2, 3))], lambda x: torch.pow(x, 2.0))
case("powf_3", [req(randn(2, 3))], lambda x: torch.pow(x, 3.0))
case("powf_half", [req(uniform(0.1, 4.0, 2, 3))], lambda x: torch.pow(x, 0.5))
case("powf_neg", [req(uniform(0.5, 3.0, 2, 3))], lambda x: torch.pow(x, -1.5))
case("powf_frac", [req(uniform(0.1, 3.0, 2, 3))], lambda x: torch.pow(x, 2.7))
case("powf_zero", [req(randn(2, 3))], lambda x: torch.pow(x, 0.0))
case("erf", [req(randn(2, 3, scale=1.5))], torch.erf)
case("gelu", [req(randn(2, 4, scale=2.0))], lambda x: F.gelu(x, approximate="none"))
case("softplus", [req(randn(2, 3, scale=3.0))], F.softplus)
case("softplus_threshold", [req(exact([-30.0, -5.0, 19.5, 20.5, 25.0, 0.0], [6]))], F.softplus)

# ------------------------------------------------------------ matmul

case("matmul_2d", [req(randn(3, 4)), req(randn(4, 2))], torch.matmul)
case("matmul_1d_1d", [req(randn(4)), req(randn(4))], torch.matmul)
case("matmul_2d_1d", [req(randn(3, 4)), req(randn(4))], torch.matmul)
case("matmul_1d_2d", [req(randn(4)), req(randn(4, 2))], torch.matmul)
case("matmul_batched", [req(randn(2, 3, 4)), req(randn(2, 4, 5))], torch.matmul)
case("matmul_batched_2d", [req(randn(2, 3, 4)), req(randn(4, 5))], torch.matmul)
case("matmul_2d_batched", [req(randn(3, 4)), req(randn(2, 4, 5))], torch.matmul)
case("matmul_batched_1d", [req(randn(2, 3, 4)), req(randn(4))], torch.matmul)
case("matmul_1d_batched", [req(randn(4)), req(randn(2, 4, 3))], torch.matmul)
case("matmul_batched_broadcast", [req(randn(2, 1, 3, 4)), req(randn(5, 4, 2))], torch.matmul)
case("matmul_transposed", [req(randn(4, 3)), req(randn(2, 4))], lambda a, b: a.t() @ b.t())

# ------------------------------------------------------------ reductions

case("sum", [req(randn(2, 3))], torch.sum)
case("mean", [req(randn(2, 3))], torch.mean)
case("sum_3d", [req(randn(2, 3, 4))], torch.sum)
case("mean_3d", [req(randn(2, 3, 4))], torch.mean)
for fname, fn in [("sum", torch.sum), ("mean", torch.mean)]:
    case(f"{fname}_dim0", [req(randn(2, 3))], lambda x, fn=fn: fn(x, 0))
    case(f"{fname}_dim1", [req(randn(2, 3))], lambda x, fn=fn: fn(x, 1))
    case(f"{fname}_dim1_keep", [req(randn(2, 3))], lambda x, fn=fn: fn(x, 1, keepdim=True))
    case(f"{fname}_dim1_3d", [req(randn(2, 3, 4))], lambda x, fn=fn: fn(x, 1))
    case(f"{fname}_dim2_3d_keep", [req(randn(2, 3, 4))], lambda x, fn=fn: fn(x, 2, keepdim=True))
    case(f"{fname}_dim0_1d", [req(randn(5))], lambda x, fn=fn: fn(x, 0))

case("max_dim0", [req(distinct(3, 4))], lambda x: torch.max(x, 0).values)
case("max_dim1_keep", [req(distinct(3, 4))], lambda x: torch.max(x, 1, keepdim=True).values)
case("max_dim1_3d", [req(distinct(2, 3, 4))], lambda x: torch.max(x, 1).values)
case("min_dim0", [req(distinct(3, 4))], lambda x: torch.min(x, 0).values)
case("min_dim1_keep", [req(distinct(3, 4))], lambda x: torch.min(x, 1, keepdim=True).values)
case("min_dim2_3d", [req(distinct(2, 3, 4))], lambda x: torch.min(x, 2).values)

# the indices, checked through gather (the gradient then lands twice on each pick)
case("max_dim_with_indices", [req(distinct(3, 4))],
     lambda x: (lambda r: r.values + torch.gather(x, 1, r.indices))(torch.max(x, 1, keepdim=True)))
case("min_dim_with_indices", [req(distinct(3, 4))],
     lambda x: (lambda r: r.values + torch.gather(x, 0, r.indices))(torch.min(x, 0, keepdim=True)))
case("argmax_dim", [req(distinct(3, 4))], lambda x: torch.gather(x, 0, torch.argmax(x, 0, keepdim=True)))

case("logsumexp_dim1", [req(randn(3, 4))], lambda x: torch.logsumexp(x, 1))
case("logsumexp_dim0_keep", [req(randn(3, 4))], lambda x: torch.logsumexp(x, 0, keepdim=True))
case("logsumexp_dim1_3d_keep", [req(randn(2, 3, 4))], lambda x: torch.logsumexp(x, 1, keepdim=True))
case("logsumexp_large", [req(f32(1000.0 + randn(3, 4, scale=3.0)))], lambda x: torch.logsumexp(x, 1))
case("logsumexp_large_neg_keep", [req(f32(-1000.0 + randn(3, 4, scale=3.0)))],
     lambda x: torch.logsumexp(x, 0, keepdim=True))

case("var_dim0", [req(randn(4, 3))], lambda x: torch.var(x, 0, correction=1))
case("var_dim1_keep", [req(randn(3, 5))], lambda x: torch.var(x, 1, correction=1, keepdim=True))
case("var_dim1_3d", [req(randn(2, 4, 3))], lambda x: torch.var(x, 1, correction=1))
case("var_dim0_1d_offset", [req(f32(100.0 + randn(6)))], lambda x: torch.var(x, 0, correction=1))

# ------------------------------------------------------------ shape

case("reshape", [req(randn(2, 3, 4))], lambda x: x.reshape(4, 6))
case("reshape_flat", [req(randn(2, 3))], lambda x: x.reshape(6))
case("reshape_to_scalar", [req(randn(1, 1))], lambda x: x.reshape(()))
case("reshape_noncontiguous", [req(randn(3, 4))], lambda x: x.t().reshape(2, 6))
case("transpose", [req(randn(2, 3, 4))], lambda x: x.transpose(0, 2))
case("transpose_mid", [req(randn(2, 3, 4))], lambda x: x.transpose(1, 2))
case("t", [req(randn(2, 3))], lambda x: x.t())
case("t_1d", [req(randn(3))], lambda x: x.t())
case("permute", [req(randn(2, 3, 4))], lambda x: x.permute(2, 0, 1))
case("unsqueeze", [req(randn(2, 3))], lambda x: x.unsqueeze(1))
case("unsqueeze_end", [req(randn(2, 3))], lambda x: x.unsqueeze(2))
case("squeeze", [req(randn(2, 1, 3))], lambda x: x.squeeze(1))
case("squeeze_noop", [req(randn(2, 3))], lambda x: x.squeeze(0))
case("narrow", [req(randn(3, 5))], lambda x: x.narrow(1, 1, 3))
case("narrow_dim0", [req(randn(4, 2, 3))], lambda x: x.narrow(0, 2, 2))
case("broadcast_to", [req(randn(3))], lambda x: x.broadcast_to(2, 4, 3))
case("broadcast_to_ones", [req(randn(2, 1))], lambda x: x.broadcast_to(2, 3))
case("broadcast_to_mixed", [req(randn(1, 3, 1))], lambda x: x.broadcast_to(2, 4, 3, 5))
case("cat_dim0", [req(randn(2, 3)), req(randn(1, 3)), req(randn(3, 3))], lambda a, b, c: torch.cat([a, b, c], 0))
case("cat_dim1", [req(randn(2, 3)), req(randn(2, 1)), req(randn(2, 2))], lambda a, b, c: torch.cat([a, b, c], 1))
case("cat_mixed_req", [req(randn(2, 2)), const(randn(2, 3))], lambda a, b: torch.cat([a, b], 1))
case("stack_dim0", [req(randn(2, 3)), req(randn(2, 3))], lambda a, b: torch.stack([a, b], 0))
case("stack_dim1", [req(randn(2, 3)), req(randn(2, 3)), req(randn(2, 3))], lambda a, b, c: torch.stack([a, b, c], 1))
case("stack_dim_end", [req(randn(2, 3)), req(randn(2, 3))], lambda a, b: torch.stack([a, b], 2))
case("index_select_dim0", [req(randn(4, 3))],
     lambda x: torch.index_select(x, 0, torch.tensor([2, 0, 2, 3])))
case("index_select_dim1", [req(randn(2, 4))],
     lambda x: torch.index_select(x, 1, torch.tensor([3, 3, 1])))
case("gather_dim1", [req(randn(3, 4))],
     lambda x: torch.gather(x, 1, torch.tensor([[0, 3], [1, 1], [2, 0]])))
case("gather_dim0", [req(randn(3, 4))],
     lambda x: torch.gather(x, 0, torch.tensor([[2, 0, 1, 2], [2, 2, 0, 1]])))

# ------------------------------------------------------------ nn

case("softmax_dim1", [req(randn(3, 4))], lambda x: torch.softmax(x, 1))
case("softmax_dim0", [req(randn(3, 4))], lambda x: torch.softmax(x, 0))
case("softmax_3d_mid", [req(randn(2, 3, 4))], lambda x: torch.softmax(x, 1))
case("softmax_large", [req(exact([1000.0, 998.0, 1001.5, 995.25, -1000.0, -1003.0, -999.5, -1000.75], [2, 4]))],
     lambda x: torch.softmax(x, 1))
case("log_softmax_dim1", [req(randn(3, 4))], lambda x: torch.log_softmax(x, 1))
case("log_softmax_dim0", [req(randn(3, 4))], lambda x: torch.log_softmax(x, 0))
case("log_softmax_large", [req(exact([1000.0, 998.0, 1001.5, 995.25, -1000.0, -1003.0, -999.5, -1000.75], [2, 4]))],
     lambda x: torch.log_softmax(x, 1))

# dropout only where it is deterministic (see the module docstring)
case("dropout_eval", [req(randn(2, 3))], lambda x: F.dropout(x, 0.5, training=False))
case("dropout_p0", [req(randn(2, 3))], lambda x: F.dropout(x, 0.0, training=True))

# ------------------------------------------------------------ losses

case("mse_loss", [req(randn(3, 4)), req(randn(3, 4))], F.mse_loss)
case("mse_loss_const_target", [req(randn(5)), const(randn(5))], F.mse_loss)
case("cross_entropy", [req(randn(4, 5))], lambda x: F.cross_entropy(x, torch.tensor([1, 0, 4, 2])))
case("cross_entropy_large", [req(exact([1000.0, 990.0, 1002.0, -1000.0, -998.5, -1001.0], [2, 3]))],
     lambda x: F.cross_entropy(x, torch.tensor([0, 2])))
case("nll_loss", [req(randn(4, 3))], lambda x: F.nll_loss(x, torch.tensor([2, 0, 0, 1])))
case("nll_loss_of_log_softmax", [req(randn(3, 5))],
     lambda x: F.nll_loss(torch.log_softmax(x, 1), torch.tensor([4, 1, 1])))
case("bce_with_logits", [req(randn(3, 4, scale=2.0)), req(uniform(0.0, 1.0, 3, 4))],
     F.binary_cross_entropy_with_logits)
case("bce_with_logits_extreme", [req(exact([-40.0, -25.0, 30.0, 45.0], [4])), req(exact([0.25, 1.0, 0.0, 0.75], [4]))],
     F.binary_cross_entropy_with_logits)

# ------------------------------------------------------------ composites

case("mlp", [req(randn(4, 3)), req(randn(3, 5)), req(randn(5)), req(randn(5, 2))],
     lambda x, w1, b1, w2: torch.tanh(x @ w1 + b1) @ w2)
case("layer_norm_like", [req(randn(3, 6))],
     lambda x: (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, correction=1, keepdim=True) + 1e-5))


# ------------------------------------------------------------ nn ops and layers

def nn_cases():
    """The cases of nn_ref.txt, drawn when called (after ops_ref.txt's)."""
    cases = []

    def add(name, inputs, fn):
        cases.append((name, inputs, fn))

    def module(m, names):
        """`m` (made in float64) as a function of its input and of the
        parameters `names`, in that order: the layer's own forward."""
        m = m.to(DT)
        return lambda x, *params: functional_call(m, dict(zip(names, params)), (x,))

    def ids(values, shape):
        return const(exact(values, shape))

    # conv2d: (stride, padding) in the lambdas, mirrored in the Rust table
    add("conv2d", [req(randn(2, 3, 5, 5)), req(randn(4, 3, 3, 3, scale=0.5)), req(randn(4))],
        lambda x, w, b: F.conv2d(x, w, b))
    add("conv2d_stride2_pad1", [req(randn(2, 2, 6, 5)), req(randn(3, 2, 3, 3, scale=0.5)), req(randn(3))],
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1))
    add("conv2d_pad2_kernel2", [req(randn(1, 2, 4, 4)), req(randn(2, 2, 2, 2))],
        lambda x, w: F.conv2d(x, w, padding=2))
    add("conv2d_rect_kernel_stride3", [req(randn(2, 1, 7, 6)), req(randn(2, 1, 2, 3)), req(randn(2))],
        lambda x, w, b: F.conv2d(x, w, b, stride=3))
    add("conv2d_unbatched", [req(randn(3, 5, 4)), req(randn(2, 3, 3, 3, scale=0.5)), req(randn(2))],
        lambda x, w, b: F.conv2d(x, w, b, padding=1))
    add("conv2d_const_input", [const(randn(2, 1, 8, 8)), req(randn(4, 1, 3, 3)), req(randn(4))],
        lambda x, w, b: F.conv2d(x, w, b, padding=1))
    add("conv2d_const_weight", [req(randn(2, 3, 4, 4)), const(randn(2, 3, 3, 3)), const(randn(2))],
        lambda x, w, b: F.conv2d(x, w, b, padding=1))

    # max_pool2d: (kernel_size, stride) in the lambdas; distinct values, no ties
    add("max_pool2d", [req(distinct(2, 3, 4, 4))], lambda x: F.max_pool2d(x, 2, 2))
    add("max_pool2d_overlap", [req(distinct(1, 2, 5, 5))], lambda x: F.max_pool2d(x, 3, 1))
    add("max_pool2d_stride3", [req(distinct(1, 1, 7, 7))], lambda x: F.max_pool2d(x, 2, 3))
    add("max_pool2d_odd", [req(distinct(2, 1, 5, 5))], lambda x: F.max_pool2d(x, 2, 2))
    add("max_pool2d_unbatched", [req(distinct(2, 4, 6))], lambda x: F.max_pool2d(x, 2, 2))

    # layer_norm: normalized_shape and eps in the lambdas
    add("layer_norm", [req(randn(3, 5)), req(randn(5)), req(randn(5))],
        lambda x, w, b: F.layer_norm(x, [5], w, b, 1e-5))
    add("layer_norm_2d", [req(randn(2, 3, 4)), req(randn(3, 4)), req(randn(3, 4))],
        lambda x, w, b: F.layer_norm(x, [3, 4], w, b, 1e-5))
    add("layer_norm_no_affine", [req(randn(4, 6))], lambda x: F.layer_norm(x, [6], None, None, 1e-5))
    add("layer_norm_weight_only", [req(randn(3, 4)), req(randn(4))],
        lambda x, w: F.layer_norm(x, [4], w, None, 1e-5))
    add("layer_norm_large_eps", [req(randn(2, 4, scale=0.1))], lambda x: F.layer_norm(x, [4], None, None, 0.1))

    # embedding: whole-number ids (no grad) and the table
    add("embedding", [ids([1, 4, 1, 0, 2, 4], [2, 3]), req(randn(5, 4))],
        lambda i, w: F.embedding(i.long(), w))
    add("embedding_1d", [ids([3, 3, 0, 1], [4]), req(randn(4, 2))], lambda i, w: F.embedding(i.long(), w))

    # the layers themselves (torch.nn modules, their parameters given)
    add("gelu_module", [req(randn(2, 5, scale=2.0))], nn.GELU())
    add("dropout_eval_module", [req(randn(2, 3))], nn.Dropout(0.5).eval())
    add("linear_module", [req(randn(4, 3)), req(randn(2, 3)), req(randn(2))],
        module(nn.Linear(3, 2), ["weight", "bias"]))
    add("linear_module_3d", [req(randn(2, 3, 4)), req(randn(5, 4)), req(randn(5))],
        module(nn.Linear(4, 5), ["weight", "bias"]))
    add("linear_module_1d", [req(randn(3)), req(randn(2, 3)), req(randn(2))],
        module(nn.Linear(3, 2), ["weight", "bias"]))
    add("linear_no_bias_module", [req(randn(4, 3)), req(randn(2, 3))],
        module(nn.Linear(3, 2, bias=False), ["weight"]))
    add("conv2d_module", [req(randn(2, 2, 5, 5)), req(randn(3, 2, 3, 3, scale=0.5)), req(randn(3))],
        module(nn.Conv2d(2, 3, 3, stride=2, padding=1), ["weight", "bias"]))
    add("max_pool2d_module", [req(distinct(1, 2, 7, 7))], nn.MaxPool2d(3, stride=2))
    add("layer_norm_module", [req(randn(3, 4)), req(randn(4)), req(randn(4))],
        module(nn.LayerNorm([4]), ["weight", "bias"]))
    add("embedding_module", [ids([2, 0, 2, 1], [2, 2]), req(randn(3, 4))],
        lambda i, w: functional_call(nn.Embedding(3, 4).to(DT), {"weight": w}, (i.long(),)))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3))
    add("sequential_cnn", [req(randn(2, 1, 6, 6)), req(randn(2, 1, 3, 3, scale=0.5)), req(randn(2)),
                           req(randn(3, 18, scale=0.3)), req(randn(3))],
        module(cnn, ["0.weight", "0.bias", "4.weight", "4.bias"]))
    return cases


def attention_cases():
    """The cases of attention_ref.txt, drawn when called (after nn_ref.txt's,
    from seed 2). Each attention case is written twice, as NAME_composed
    and NAME_tiled, with the same inputs: tests/reference.rs runs the first
    with AttentionKernel::Composed and the second with Tiled { block: 2 }."""
    cases = []

    def add(name, inputs, fn):
        cases.append((name, inputs, fn))

    def sdpa(name, shapes, causal=False, scale=None):
        inputs = [req(randn(*s)) for s in shapes]
        fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        for kernel in ["composed", "tiled"]:
            add(f"{name}_{kernel}", inputs, fn)

    # causal and scale in the calls here, mirrored in the Rust table
    sdpa("sdpa_basic", [(2, 3, 4), (2, 5, 4), (2, 5, 3)])
    sdpa("sdpa_causal", [(2, 5, 4), (2, 5, 4), (2, 5, 4)], causal=True)
    sdpa("sdpa_causal_more_keys", [(1, 3, 2), (1, 6, 2), (1, 6, 3)], causal=True)
    sdpa("sdpa_causal_more_queries", [(6, 2), (3, 2), (3, 2)], causal=True)
    sdpa("sdpa_scale", [(2, 4, 3), (2, 5, 3), (2, 5, 2)], scale=0.3)
    sdpa("sdpa_broadcast", [(2, 3, 4, 2), (3, 5, 2), (1, 5, 2)])
    sdpa("sdpa_heads_causal_scale", [(2, 2, 7, 4), (2, 2, 7, 4), (2, 2, 7, 4)], causal=True, scale=0.5)

    # nn.MultiheadAttention(E, heads, batch_first=True) as m(x, x, x); the
    # causal form with the mask PyTorch asks for alongside is_causal
    def causal_mask(n):
        return torch.triu(torch.ones(n, n, dtype=torch.bool), 1)

    def mha(name, b, n, e, heads, causal):
        m = nn.MultiheadAttention(e, heads, batch_first=True).to(DT)
        names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
        inputs = [req(randn(b, n, e)), req(randn(3 * e, e, scale=0.5)), req(randn(3 * e)),
                  req(randn(e, e, scale=0.5)), req(randn(e))]
        mask = causal_mask(n) if causal else None

        def fn(x, *params):
            args = (x, x, x)
            kwargs = {"need_weights": False, "attn_mask": mask, "is_causal": causal}
            return functional_call(m, dict(zip(names, params)), args, kwargs)[0]
        for kernel in ["composed", "tiled"]:
            add(f"{name}_{kernel}", inputs, fn)

    mha("mha", 2, 5, 6, 2, False)
    mha("mha_causal", 2, 4, 4, 2, True)

    # TransformerBlock is nn.TransformerEncoderLayer(norm_first=True, gelu,
    # dropout 0); tapegrad's names on the left, PyTorch's on the right
    block_names = [("ln1.weight", "norm1.weight"), ("ln1.bias", "norm1.bias"),
                   ("attn.in_proj_weight", "self_attn.in_proj_weight"),
                   ("attn.in_proj_bias", "self_attn.in_proj_bias"),
                   ("attn.out_proj.weight", "self_attn.out_proj.weight"),
                   ("attn.out_proj.bias", "self_attn.out_proj.bias"),
                   ("ln2.weight", "norm2.weight"), ("ln2.bias", "norm2.bias"),
                   ("mlp.0.weight", "linear1.weight"), ("mlp.0.bias", "linear1.bias"),
                   ("mlp.2.weight", "linear2.weight"), ("mlp.2.bias", "linear2.bias")]

    def encoder_layer(e, heads, hidden):
        return nn.TransformerEncoderLayer(e, heads, hidden, dropout=0.0, activation="gelu",
                                          batch_first=True, norm_first=True)

    def block(name, b, n, e, heads, hidden, causal):
        layer = encoder_layer(e, heads, hidden).to(DT)
        shapes = {k: t.shape for k, t in layer.state_dict().items()}
        params = [req(randn(*shapes[theirs], scale=0.5)) for _, theirs in block_names]
        mask = causal_mask(n) if causal else None

        def fn(x, *ps):
            weights = dict(zip([theirs for _, theirs in block_names], ps))
            return functional_call(layer, weights, (x,), {"src_mask": mask, "is_causal": causal})
        add(name, [req(randn(b, n, e))] + params, fn)

    block("transformer_block", 2, 5, 4, 2, 8, False)
    block("transformer_block_causal", 1, 6, 4, 1, 6, True)

    # Weights by name: an encoder layer's state_dict under tapegrad's names,
    # saved as safetensors (f32); the case's input alone, and the output of
    # the layer holding those weights (computed in float64).
    layer = encoder_layer(8, 2, 16)
    saved = {ours: layer.state_dict()[theirs].contiguous() for ours, theirs in block_names}
    save_file(saved, os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "transformer_block.safetensors"))
    layer = layer.to(DT)
    mask = causal_mask(5)
    add("transformer_block_loaded", [req(randn(2, 5, 8))], lambda x: layer(x, src_mask=mask, is_causal=True))
    return cases


# ------------------------------------------------------------ non-finite values

NAN, INF = float("nan"), float("inf")
# every special value, with finite neighbours for the ops to mix them with
SPECIAL = [NAN, INF, -INF, -0.0, 0.0, 1.0, -1.0, 0.5]


def nonfinite_cases():
    """The cases of nonfinite_ref.txt: every op on inputs holding NaN, +inf,
    -inf and -0.0 (exact values; only the upstream gradients are drawn, from
    seed 3, after attention_ref.txt's). Written without the finiteness
    checks of the other files: NaN and infinities are the point."""
    cases = []

    def add(name, inputs, fn):
        cases.append((name, inputs, fn))

    def special(*extra):
        return exact(SPECIAL + list(extra), [len(SPECIAL) + len(extra)])

    # binary ops: every special value against every other (an 8 x 8 grid)
    n = len(SPECIAL)
    lhs = exact([a for a in SPECIAL for _ in SPECIAL], [n, n])
    rhs = exact([b for _ in SPECIAL for b in SPECIAL], [n, n])
    for opname, op in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div),
                       ("pow", torch.pow), ("maximum", torch.maximum), ("minimum", torch.minimum)]:
        add(f"nf_{opname}", [req(lhs), req(rhs)], op)
    # a row broadcast against the grid's columns (the gradient sums over rows)
    add("nf_mul_broadcast", [req(lhs), req(special())], torch.mul)
    add("nf_add_broadcast", [req(lhs), req(special())], torch.add)

    # tensor-scalar and unary
    for opname, fn in [("add_scalar", lambda x: x + 2.5), ("sub_scalar", lambda x: x - 2.5),
                       ("mul_scalar", lambda x: x * 2.5), ("div_scalar", lambda x: x / 2.5),
                       ("scalar_sub", lambda x: 2.5 - x), ("scalar_div", lambda x: 2.5 / x),
                       ("mul_zero_scalar", lambda x: x * 0.0), ("neg", lambda x: -x),
                       ("exp", torch.exp), ("ln", torch.log), ("log1p", torch.log1p),
                       ("sqrt", torch.sqrt), ("abs", torch.abs), ("sin", torch.sin), ("cos", torch.cos),
                       ("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("relu", torch.relu),
                       ("leaky_relu", lambda x: F.leaky_relu(x, 0.1)),
                       ("clamp", lambda x: torch.clamp(x, -1.0, 0.5)),
                       ("powf_2", lambda x: torch.pow(x, 2.0)), ("powf_3", lambda x: torch.pow(x, 3.0)),
                       ("powf_half", lambda x: torch.pow(x, 0.5)), ("powf_neg", lambda x: torch.pow(x, -1.5)),
                       ("powf_neg_int", lambda x: torch.pow(x, -2.0)), ("powf_frac", lambda x: torch.pow(x, 2.7)),
                       ("powf_zero", lambda x: torch.pow(x, 0.0)), ("powf_one", lambda x: torch.pow(x, 1.0)),
                       ("erf", torch.erf), ("gelu", lambda x: F.gelu(x, approximate="none")),
                       ("softplus", F.softplus), ("dropout_eval", lambda x: F.dropout(x, 0.5, training=False)),
                       ("dropout_p0", lambda x: F.dropout(x, 0.0, training=True))]:
        add(f"nf_{opname}", [req(special(-2.0, 25.0, -30.0))], fn)
    # a non-finite upstream gradient through the piecewise ops: where the
    # derivative is 0 PyTorch selects 0, it does not multiply NaN by 0
    for opname, fn in [("relu", torch.relu), ("clamp", lambda x: torch.clamp(x, -1.0, 0.5)),
                       ("abs", torch.abs), ("leaky_relu", lambda x: F.leaky_relu(x, 0.1)),
                       ("softplus", F.softplus), ("mul_zero_scalar", lambda x: x * 0.0)]:
        cases.append((f"nf_{opname}_nan_upstream", [req(exact([-2.0, -0.0, 0.0, 0.3, 1.0, 30.0], [6]))], fn,
                      exact([NAN, INF, NAN, -INF, NAN, INF], [6])))

    # matmul: an infinity times a zero is NaN, in the output and the gradients
    a = exact([NAN, 1.0, 0.0, INF, 0.0, 2.0, -INF, 1.0, -0.0, 1.0, 2.0, 3.0], [4, 3])
    b = exact([0.0, 1.0, 1.0, -0.0, 2.0, 0.5], [3, 2])
    add("nf_matmul", [req(a), req(b)], torch.matmul)
    add("nf_matmul_1d", [req(exact([INF, 1.0, 0.0], [3])), req(exact([0.0, 2.0, INF], [3]))], torch.matmul)

    # reductions: one row per kind of special value, reduced along it and across
    rows = exact([NAN, 1.0, 2.0, -1.0,
                  INF, 1.0, 2.0, -1.0,
                  -INF, 1.0, 2.0, -1.0,
                  INF, 1.0, -INF, -1.0,
                  -0.0, -0.0, -0.0, -0.0,
                  -INF, -INF, -INF, -INF,
                  INF, -0.0, 3.0, -5.0], [7, 4])
    add("nf_sum", [req(rows)], torch.sum)
    add("nf_mean", [req(rows)], torch.mean)
    for d in [0, 1]:
        add(f"nf_sum_dim{d}", [req(rows)], lambda x, d=d: torch.sum(x, d))
        add(f"nf_mean_dim{d}", [req(rows)], lambda x, d=d: torch.mean(x, d))
        add(f"nf_var_dim{d}", [req(rows)], lambda x, d=d: torch.var(x, d, correction=1))
        add(f"nf_logsumexp_dim{d}", [req(rows)], lambda x, d=d: torch.logsumexp(x, d))
        add(f"nf_softmax_dim{d}", [req(rows)], lambda x, d=d: torch.softmax(x, d))
        add(f"nf_log_softmax_dim{d}", [req(rows)], lambda x, d=d: torch.log_softmax(x, d))
    # max / min without ties in the selected value (PyTorch sends the whole
    # gradient to one index; which one at a tie is not specified)
    ext = exact([NAN, 1.0, 2.0, -1.0,
                 INF, 1.0, 2.0, -1.0,
                 -INF, 1.0, 2.0, -1.0,
                 INF, 1.0, -INF, -1.0,
                 -0.5, 1.0, NAN, 3.0], [5, 4])
    add("nf_max_dim1", [req(ext)], lambda x: torch.max(x, 1).values)
    add("nf_min_dim1", [req(ext)], lambda x: torch.min(x, 1).values)
    add("nf_max_dim_with_indices", [req(ext)],
        lambda x: (lambda r: r.values + torch.gather(x, 1, r.indices))(torch.max(x, 1, keepdim=True)))
    add("nf_argmax_dim", [req(ext)], lambda x: torch.gather(x, 1, torch.argmax(x, 1, keepdim=True)))

    # losses
    logits = exact([NAN, 1.0, 2.0,
                    INF, 1.0, 2.0,
                    -INF, 1.0, 2.0,
                    1.0, -INF, 0.5,
                    1.0, 2.0, 3.0], [5, 3])
    add("nf_cross_entropy", [req(logits)], lambda x: F.cross_entropy(x, torch.tensor([1, 0, 1, 1, 2])))
    add("nf_nll_loss", [req(logits)], lambda x: F.nll_loss(x, torch.tensor([1, 0, 2, 1, 0])))
    add("nf_mse_loss", [req(special()), req(exact([0.0, INF, 1.0, NAN, -0.0, 1.0, -INF, 0.5], [8]))],
        F.mse_loss)
    add("nf_bce_with_logits", [req(special(-INF, INF, 40.0)),
                               req(exact([0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 0.25, INF, 0.0, 1.0, 0.5], [11]))],
        F.binary_cross_entropy_with_logits)

    # shape and index ops carry the values through
    add("nf_reshape_t", [req(rows)], lambda x: x.t().reshape(2, 14))
    add("nf_cat", [req(special()), req(exact([INF, -0.0], [2]))], lambda a, b: torch.cat([a, b], 0))
    add("nf_stack", [req(special()), req(special())], lambda a, b: torch.stack([a, b], 1))
    add("nf_index_select", [req(rows)], lambda x: torch.index_select(x, 0, torch.tensor([0, 3, 0])))
    add("nf_gather", [req(rows)], lambda x: torch.gather(x, 1, torch.tensor([[0, 0]] * 7)))
    add("nf_broadcast_to", [req(special())], lambda x: x.broadcast_to(2, 8))

    # nn ops
    img = exact([NAN if i == 5 else INF if i == 14 else -INF if i == 27 else -0.0 if i == 30 else (i % 7) * 0.25 - 0.7
                 for i in range(2 * 1 * 6 * 6)], [2, 1, 6, 6])
    add("nf_conv2d", [req(img), req(randn(2, 1, 3, 3, scale=0.5)), req(randn(2))],
        lambda x, w, b: F.conv2d(x, w, b, padding=1))
    add("nf_max_pool2d", [req(img)], lambda x: F.max_pool2d(x, 2, 2))
    add("nf_layer_norm", [req(rows), req(randn(4)), req(randn(4))],
        lambda x, w, b: F.layer_norm(x, [4], w, b, 1e-5))
    add("nf_embedding", [const(exact([0, 2, 2, 1], [4])), req(exact([NAN, 1.0, INF, -INF, -0.0, 2.0], [3, 2]))],
        lambda i, w: F.embedding(i.long(), w))
    # attention with a NaN in one query row and an infinity in one key, by
    # PyTorch's math backend (its definition, softmax(q kᵀ / √E) v): the
    # fused CPU kernel chosen by default returns 0 for the NaN query's row
    # (with NaN gradients); see docs/ops.md
    def sdpa_math(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v)

    q = randn(1, 3, 2)
    q[0, 1, 0] = NAN
    k = randn(1, 4, 2)
    k[0, 2, 1] = INF
    v = randn(1, 4, 2)
    for kernel in ["composed", "tiled"]:
        add(f"nf_sdpa_{kernel}", [req(q), req(k), req(v)], sdpa_math)
    return cases


def state_dict_models():
    """Models whose state_dict keys tests/nn.rs compares with
    named_parameters() of the same model built in tapegrad."""
    return [
        ("mlp", nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2, bias=False))),
        ("cnn", nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(128, 10))),
        ("mixed", nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm([4]),
                                nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Tanh()),
                                nn.Linear(4, 3), nn.Sigmoid(), nn.LayerNorm([2, 3]))),
    ]


# ------------------------------------------------------------ output

def fmt_shape(shape):
    return "[" + ",".join(str(s) for s in shape) + "]"


def fmt_data(t):
    return " ".join(repr(float(v)) for v in t.detach().reshape(-1).tolist())


HEADER = "# {what}, made by tests/ref/make_ref.py\n# (PyTorch, float64, torch.manual_seed({seed})); see tests/ref/README.md. Do not edit."


def write_cases(path, cases, what, seed, finite=True):
    """Runs `cases` and writes them to `path` (the format of the docstring).
    A case is (name, inputs, fn), or (name, inputs, fn, upstream) to give
    the upstream gradient instead of drawing it. `finite`: assert that every
    output and gradient is finite (a NaN there would be a bad case)."""
    names = [name for name, *_ in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"

    lines = HEADER.format(what=what, seed=seed).split("\n") + [f"torch {torch.__version__}"]
    for name, inputs, fn, *given in cases:
        tensors = [t.clone().requires_grad_(r) for t, r in inputs]
        out = fn(*tensors)
        assert out.dtype == DT, name
        upstream = given[0] if given else randn(*out.shape)
        wrt = [t for t in tensors if t.requires_grad]
        assert wrt, f"{name}: no input requires grad"
        grads = torch.autograd.grad(out, wrt, upstream, allow_unused=True)
        lines.append(f"case {name}")
        for i, t in enumerate(tensors):
            lines.append(f"input {i} {fmt_shape(t.shape)} {int(t.requires_grad)} {fmt_data(t)}".rstrip())
        lines.append(f"upstream {fmt_shape(upstream.shape)} {fmt_data(upstream)}".rstrip())
        lines.append(f"output {fmt_shape(out.shape)} {fmt_data(out)}".rstrip())
        gi = iter(grads)
        for i, t in enumerate(tensors):
            if t.requires_grad:
                g = next(gi)
                if g is None:
                    g = torch.zeros_like(t)
                assert not finite or torch.isfinite(g).all(), f"{name}: non-finite gradient"
                lines.append(f"grad {i} {fmt_shape(g.shape)} {fmt_data(g)}".rstrip())
        assert not finite or torch.isfinite(out).all(), f"{name}: non-finite output"
        lines.append("end")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


def write_state_dicts(path):
    """One block per model: `model NAME`, a `KEY [SHAPE]` line per
    state_dict entry in order, `end`."""
    lines = [
        "# state_dict keys and shapes of torch.nn models, made by tests/ref/make_ref.py;",
        "# see tests/ref/README.md. Do not edit.",
        f"torch {torch.__version__}",
    ]
    for name, model in state_dict_models():
        lines.append(f"model {name}")
        lines += [f"{key} {fmt_shape(t.shape)}" for key, t in model.state_dict().items()]
        lines.append("end")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(state_dict_models())} models to {path}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "ops_ref.txt")
    write_cases(path, CASES, "Reference values for tapegrad's ops", 0)
    torch.manual_seed(1)
    write_cases(os.path.join(os.path.dirname(path), "nn_ref.txt"), nn_cases(),
                "Reference values for tapegrad's nn ops and layers", 1)
    write_state_dicts(os.path.join(os.path.dirname(path), "nn_state_dicts.txt"))
    torch.manual_seed(2)
    write_cases(os.path.join(os.path.dirname(path), "attention_ref.txt"), attention_cases(),
                "Reference values for tapegrad's attention and its modules", 2)
    torch.manual_seed(3)
    write_cases(os.path.join(os.path.dirname(path), "nonfinite_ref.txt"), nonfinite_cases(),
                "Reference values for tapegrad's ops on NaN, infinities and -0.0", 3, finite=False)


if __name__ == "__main__":
    main()
