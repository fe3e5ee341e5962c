#!/usr/bin/env python3
"""Reference values for tapegrad's ops, computed with PyTorch in float64.

Run from the repository root (PyTorch is needed here only, never by the tests):

    python tests/ref/make_ref.py            # writes tests/ref/ops_ref.txt

For every case below it draws the inputs with torch's generator (seed 0),
computes the op's output and the vector-Jacobian product with a random
upstream gradient of the output's shape (torch.autograd.grad), and writes all
of it to ops_ref.txt. tests/reference.rs runs the same op in tapegrad on the
same inputs and compares, in f64 and in f32.

Every input and upstream value is rounded to the nearest f32 before use, so
the f32 run sees exactly the same numbers as the f64 run (the comparison then
measures the f32 arithmetic only, not the rounding of the inputs).

Integer arguments (dims, class targets, indices) are written into the lambdas
here and mirrored in the table of tests/reference.rs; the data file holds only
the tensors. Case names are the keys: keep the two in step.

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
import torch.nn.functional as F

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


# ------------------------------------------------------------ output

def fmt_shape(shape):
    return "[" + ",".join(str(s) for s in shape) + "]"


def fmt_data(t):
    return " ".join(repr(float(v)) for v in t.detach().reshape(-1).tolist())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "ops_ref.txt")
    names = [name for name, _, _ in CASES]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"

    lines = [
        "# Reference values for tapegrad's ops, made by tests/ref/make_ref.py",
        "# (PyTorch, float64, torch.manual_seed(0)); see tests/ref/README.md. Do not edit.",
        f"torch {torch.__version__}",
    ]
    for name, inputs, fn in CASES:
        tensors = [t.clone().requires_grad_(r) for t, r in inputs]
        out = fn(*tensors)
        assert out.dtype == DT, name
        upstream = randn(*out.shape)
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
                assert torch.isfinite(g).all(), f"{name}: non-finite gradient"
                lines.append(f"grad {i} {fmt_shape(g.shape)} {fmt_data(g)}".rstrip())
        assert torch.isfinite(out).all(), f"{name}: non-finite output"
        lines.append("end")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
