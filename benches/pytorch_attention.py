"""W8 in PyTorch: forward+backward time and the bytes saved for backward of
F.scaled_dot_product_attention at L = S = 256, 1024, 4096 (batch 1, 4 heads,
head_dim 64, float32, not causal, CPU, 2 threads), as benches/attention.rs
measures tapegrad, printing the same lines `W8 <metric> <value>`.

q, k and v are views of one tensor made by an op (x * 1.0), as in a model;
the saved bytes are those of the distinct storages that autograd saves
during the SDPA call (saved_tensors_hooks), so q, k and v count once.

Run: python benches/pytorch_attention.py [256 1024 ...]   (needs torch)
"""
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_num_threads(2)
HEADS, HEAD_DIM = 4, 64


def step(x, up):
    """One forward and backward: (seconds, bytes saved by the SDPA call)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    t0 = time.perf_counter()
    qkv = x * 1.0
    q, k, v = qkv[0], qkv[1], qkv[2]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = F.scaled_dot_product_attention(q, k, v)
    out.backward(up)
    secs = time.perf_counter() - t0
    x.grad = None
    return secs, sum(storages.values())


def measure(length):
    x = torch.randn(3, 1, HEADS, length, HEAD_DIM, requires_grad=True)
    up = torch.randn(1, HEADS, length, HEAD_DIM)
    runs = 3 if length >= 4096 else 7 if length >= 1024 else 21
    step(x, up)
    results = [step(x, up) for _ in range(runs)]
    return statistics.median(s for s, _ in results), results[0][1]


def exponent(points):
    """The least-squares slope of ln y against ln x."""
    lx = [math.log(x) for x, _ in points]
    ly = [math.log(y) for _, y in points]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    cov = sum((a - mx) * (b - my) for a, b in zip(lx, ly))
    return cov / sum((a - mx) ** 2 for a in lx)


def main():
    lengths = [int(a) for a in sys.argv[1:] if a.isdigit()] or [256, 1024, 4096]
    saved, times = [], []
    for length in lengths:
        secs, nbytes = measure(length)
        print(f"W8 fwd_bwd_ms_L{length} {secs * 1e3:.3f}", flush=True)
        print(f"W8 saved_mib_L{length} {nbytes / 2**20:.3f}", flush=True)
        saved.append((length, nbytes))
        times.append((length, secs))
    if len(lengths) > 1:
        print(f"W8 saved_exponent {exponent(saved):.3f}")
        print(f"W8 time_exponent {exponent(times):.3f}")


if __name__ == "__main__":
    main()
