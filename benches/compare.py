"""Runs the workloads in tapegrad and in PyTorch and prints them side by
side with the ratio and the target of each figure.

Run: python3 benches/compare.py [--torch /path/to/venv/bin/python] [W1 ...]
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# figure -> (how the ratio tapegrad/torch must compare, bound, what it means)
TARGETS = {
    ("W1", "us_per_op"): ("<=", 1 / 40, "≤ 1/40 of PyTorch"),
    ("W2", "ms_per_step"): ("<=", 0.9, "≤ 0.9× PyTorch"),
    ("W3", "forward_gflops"): (">=", 1.0, "≥ 1.0× PyTorch"),
    ("W3", "fwd_bwd_ms"): ("<=", 1.0, "≤ 1.0× PyTorch"),
    ("W5", "seconds"): ("<=", 1 / 45, "≤ 1/45 of PyTorch"),
}


def parse(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("W"):
            out[(parts[0], parts[1])] = float(parts[2])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", default=sys.executable, help="a Python with torch installed")
    ap.add_argument("workloads", nargs="*")
    args = ap.parse_args()
    ours = parse(
        subprocess.run(
            ["cargo", "bench", "--bench", "workloads", "--", *args.workloads],
            cwd=os.path.dirname(HERE), capture_output=True, text=True, check=True,
        ).stdout
    )
    theirs = parse(
        subprocess.run(
            [args.torch, os.path.join(HERE, "pytorch_ref.py"), *args.workloads],
            capture_output=True, text=True, check=True,
        ).stdout
    )
    print(f"{'figure':<28}{'tapegrad':>12}{'PyTorch':>12}{'ratio':>9}  target")
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        ratio = a / b if a is not None and b else None
        target = TARGETS.get(key)
        verdict = ""
        if target and ratio is not None:
            op, bound, text = target
            met = ratio <= bound if op == "<=" else ratio >= bound
            verdict = f"{text}: {'met' if met else 'NOT met'}"
        if key == ("W4", "sqrt_segments_ms") and a and ours.get(("W4", "plain_ms")):
            r = a / ours[("W4", "plain_ms")]
            verdict = f"√n/plain = {r:.2f} (≤ 1.3: {'met' if r <= 1.3 else 'NOT met'})"
        fmt = lambda v: "-" if v is None else f"{v:.4g}"
        print(f"{key[0] + ' ' + key[1]:<28}{fmt(a):>12}{fmt(b):>12}{fmt(ratio):>9}  {verdict}")


if __name__ == "__main__":
    main()
