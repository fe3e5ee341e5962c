#!/usr/bin/env python3
"""Safetensors fixtures for tests/weights.rs, made with PyTorch, and a check
that the files tapegrad writes load in PyTorch.

Run from the repository root (PyTorch and safetensors are needed here only,
never by the tests):

    python tests/ref/make_weights_ref.py           # writes the fixtures below, then checks
    python tests/ref/make_weights_ref.py --check   # only checks tapegrad's files

Written into tests/ref/weights/:

- torch_f32.safetensors, torch_f16.safetensors, torch_bf16.safetensors: the
  state_dict of nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
  (seed 0), keys "0.weight", "0.bias", "2.weight", "2.bias", in float32 and
  converted to float16 and bfloat16;
- special_f16.safetensors, special_bf16.safetensors: "values", a spread of
  bit patterns of the type (every exponent, zeros, subnormals, the largest
  finite, infinities, NaN, both signs), and "expected", the same values
  converted to float64 by PyTorch;

and tests/ref/weights_ref.txt: a fixed input x [5, 4] and, for each of the
three model files, PyTorch's output of the model holding that file's
weights, computed in float64 (the weights converted exactly).

The check: tapegrad_f32.safetensors and tapegrad_f64.safetensors, written by
tapegrad (`cargo test --test weights -- --ignored write_tapegrad_fixtures`),
must load with safetensors.torch.load_file, hold float32 / float64 tensors
of the model's names and shapes whose values are the formula below (also in
tests/weights.rs), and load into the PyTorch model with
load_state_dict(strict=True). The script prints one line per file and exits
with status 1 if any check fails.

weights_ref.txt format (tokens separated by single spaces; floats are
Python repr):

    torch VERSION
    input [5,4] V V V ...
    output NAME [5,3] V V V ...     NAME: f32, f16 or bf16
"""

import os
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "weights")
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias"]
SHAPES = {"0.weight": [8, 4], "0.bias": [8], "2.weight": [3, 8], "2.bias": [3]}


def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def fmt(t):
    return " ".join(repr(float(v)) for v in t.reshape(-1).tolist())


def shape(t):
    return "[" + ",".join(map(str, t.shape)) + "]"


def formula(i, n):
    """The value of element k of tensor number i (in NAMES) of tapegrad's
    fixture files: ((7k + 5i) mod 13 - 6) / 10."""
    return [((7 * k + 5 * i) % 13 - 6) / 10 for k in range(n)]


def special_bits(kind):
    if kind == "f16":
        mantissas, exponents, shift = [0, 1, 2, 0x155, 0x200, 0x3FE, 0x3FF], range(32), 10
    else:
        mantissas, exponents, shift = [0, 1, 0x2A, 0x40, 0x7F], range(256), 7
    bits = [(e << shift) | m for e in exponents for m in mantissas]
    bits += [b | 0x8000 for b in bits[:: max(1, len(bits) // 64)]]  # some negatives
    bits += [0x8000]  # -0
    # as signed int16, for torch's view of the bits
    return torch.tensor([b - 0x10000 if b >= 0x8000 else b for b in bits], dtype=torch.int16)


def generate():
    os.makedirs(DIR, exist_ok=True)
    torch.manual_seed(0)
    m = model()
    x = torch.randn(5, 4, dtype=torch.float64)
    lines = ["# Written by tests/ref/make_weights_ref.py", f"torch {torch.__version__}", f"input {shape(x)} {fmt(x)}"]
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        state = {k: v.detach().to(dtype).contiguous() for k, v in m.state_dict().items()}
        assert list(state) == NAMES
        save_file(state, os.path.join(DIR, f"torch_{name}.safetensors"))
        m64 = model().double()
        m64.load_state_dict({k: v.double() for k, v in state.items()})
        with torch.no_grad():
            out = m64(x)
        lines.append(f"output {name} {shape(out)} {fmt(out)}")
    with open(os.path.join(HERE, "weights_ref.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16)]:
        values = special_bits(name).view(dtype)
        save_file({"values": values, "expected": values.double()}, os.path.join(DIR, f"special_{name}.safetensors"))
    print(f"wrote the fixtures in {DIR} and {os.path.join(HERE, 'weights_ref.txt')}")


def check():
    ok = True
    for name, dtype in [("f32", torch.float32), ("f64", torch.float64)]:
        path = os.path.join(DIR, f"tapegrad_{name}.safetensors")
        try:
            state = load_file(path)
            problems = []
            if sorted(state) != sorted(NAMES):
                problems.append(f"names {sorted(state)}")
            for i, key in enumerate(NAMES):
                t = state.get(key)
                if t is None:
                    continue
                if t.dtype != dtype or list(t.shape) != SHAPES[key]:
                    problems.append(f"{key}: {t.dtype} {list(t.shape)}")
                    continue
                want = torch.tensor(formula(i, t.numel()), dtype=dtype).reshape(t.shape)
                if not torch.equal(t, want):
                    problems.append(f"{key}: values differ from the formula")
            m = model().to(dtype)
            m.load_state_dict(state, strict=True)
        except Exception as e:  # a file that does not load at all
            problems = [f"{type(e).__name__}: {e}"]
        print(f"{os.path.relpath(path)}: {'OK, loads in PyTorch' if not problems else 'FAILED: ' + '; '.join(problems)}")
        ok = ok and not problems
    return ok


if __name__ == "__main__":
    if "--check" not in sys.argv:
        generate()
    sys.exit(0 if check() else 1)
