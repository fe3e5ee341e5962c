"""Runs the workloads in tapegrad and in PyTorch and prints them side by
side with the ratio and the target of each figure.

Run: python3 benches/compare.py [--torch PYTHON] [--rounds N] [--json PATH]
                                [--svg PATH] [W1 ...]
     python3 benches/compare.py --from-json PATH [--svg PATH]

With --rounds N the two harnesses run N times, alternating, and every figure
is the median over the rounds; ratios and verdicts are ratios of medians.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIDES = ("ours", "torch")

# The targets, each a ratio where smaller is better: numerator / denominator,
# each a (side, figure) taken as the median over the rounds, must be ≤ bound.
# name, what the ratio is, numerator, denominator, bound, bound as text
TARGETS = [
    ("W1 µs per op", "tapegrad/PyTorch",
     ("ours", "W1 us_per_op"), ("torch", "W1 us_per_op"), 1 / 40, "1/40"),
    ("W2 ms per step", "tapegrad/PyTorch",
     ("ours", "W2 ms_per_step"), ("torch", "W2 ms_per_step"), 0.9, "0.9"),
    ("W3 forward GFLOP/s", "PyTorch/tapegrad",
     ("torch", "W3 forward_gflops"), ("ours", "W3 forward_gflops"), 1.0, "1"),
    ("W3 forward+backward ms", "tapegrad/PyTorch",
     ("ours", "W3 fwd_bwd_ms"), ("torch", "W3 fwd_bwd_ms"), 1.0, "1"),
    ("W4 √n-segment ms", "√n/plain (tapegrad)",
     ("ours", "W4 sqrt_segments_ms"), ("ours", "W4 plain_ms"), 1.3, "1.3"),
    ("W4 plain step's peak RSS", "tapegrad/PyTorch",
     ("ours", "W4 plain_peak_rss_mib"), ("torch", "W4 plain_peak_rss_mib"), 1.0, "1"),
    ("W4 √n-segment step's peak RSS", "tapegrad/PyTorch",
     ("ours", "W4 sqrt_segments_peak_rss_mib"), ("torch", "W4 sqrt_segments_peak_rss_mib"), 1.0, "1"),
    ("W5 seconds", "tapegrad/PyTorch",
     ("ours", "W5 seconds"), ("torch", "W5 seconds"), 1 / 45, "1/45"),
    ("W6 CNN ms per step", "tapegrad/PyTorch",
     ("ours", "W6 ms_per_step"), ("torch", "W6 ms_per_step"), 0.9, "0.9"),
    ("W7 Adam µs per step", "tapegrad/PyTorch (foreach)",
     ("ours", "W7 us_per_step"), ("torch", "W7 us_per_step"), 0.5, "0.5"),
    # W8 (benches/attention.rs, benches/pytorch_attention.py): tapegrad's
    # figures are its tiled kernel's, its composed one's are "composed_*"
    ("W8 attention ms at L=4096", "tapegrad/PyTorch SDPA",
     ("ours", "W8 fwd_bwd_ms_L4096"), ("torch", "W8 fwd_bwd_ms_L4096"), 1.0, "1"),
    ("W8 tiled/composed ms, L=1024", "tiled/composed (tapegrad)",
     ("ours", "W8 fwd_bwd_ms_L1024"), ("ours", "W8 composed_fwd_bwd_ms_L1024"), 1.5, "1.5"),
    ("W8 tiled/composed ms, L=4096", "tiled/composed (tapegrad)",
     ("ours", "W8 fwd_bwd_ms_L4096"), ("ours", "W8 composed_fwd_bwd_ms_L4096"), 1.0, "1"),
    ("W8 tiled saved MiB, L=4096", "tapegrad/PyTorch SDPA",
     ("ours", "W8 saved_mib_L4096"), ("torch", "W8 saved_mib_L4096"), 1.0, "1"),
]


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def parse(text):
    """{"W1 us_per_op": value, ...} from the lines `W1 us_per_op value`."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("W"):
            out[f"{parts[0]} {parts[1]}"] = float(parts[2])
    return out


def machine(torch_python):
    with open("/proc/cpuinfo") as f:
        cpus = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {
        "cpu": cpus[0] if cpus else "unknown",
        "cores": os.cpu_count(),
        "rustc": run(["rustc", "--version"], cwd=ROOT).strip(),
        "torch": run([torch_python, "-c", "import torch;print(torch.__version__)"]).strip(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def div(a, b):
    return a / b if a is not None and b else None


def summarise(rounds):
    """Per figure the medians of each side, their ratio and the ratio of each
    round; per target the ratio of medians, of each round, and the verdict."""
    med = {
        side: {
            fig: statistics.median(r[side][fig] for r in rounds if fig in r[side])
            for fig in {fig for r in rounds for fig in r[side]}
        }
        for side in SIDES
    }
    figures = {
        fig: {
            "ours": med["ours"].get(fig),
            "torch": med["torch"].get(fig),
            "ratio": div(med["ours"].get(fig), med["torch"].get(fig)),
            "round_ratios": [div(r["ours"].get(fig), r["torch"].get(fig)) for r in rounds],
        }
        for fig in sorted(set(med["ours"]) | set(med["torch"]))
    }
    targets = []
    for name, what, (ns, nf), (ds, df), bound, bound_text in TARGETS:
        score = div(med[ns].get(nf), med[ds].get(df))
        if score is not None:
            targets.append({
                "figure": nf, "name": name, "ratio_of": what, "score": score,
                "bound": bound, "bound_text": bound_text, "met": score <= bound,
                "round_scores": [div(r[ns].get(nf), r[ds].get(df)) for r in rounds],
            })
    return {"figures": figures, "targets": targets}


def fmt(v):
    return "-" if v is None else f"{v:.4g}"


def print_table(summary, n_rounds):
    verdicts = {}
    for t in summary["targets"]:  # a figure may be in several targets (W8's)
        text = f"{t['ratio_of']} {t['score']:.3g}, target ≤ {t['bound_text']}: " + ("met" if t["met"] else "NOT met")
        verdicts[t["figure"]] = "; ".join(filter(None, [verdicts.get(t["figure"]), text]))
    rounds = {
        fig: "/".join("-" if r is None else f"{r:.3g}" for r in f["round_ratios"])
        if n_rounds > 1 else ""
        for fig, f in summary["figures"].items()
    }
    width = max(map(len, rounds.values()), default=0)
    head = f"{'per round':<{width}}  " if width else ""
    print(f"{'figure':<28}{'tapegrad':>12}{'PyTorch':>12}{'ratio':>9}  {head}target")
    for fig, f in summary["figures"].items():
        per_round = f"{rounds[fig]:<{width}}  " if width else ""
        print(f"{fig:<28}{fmt(f['ours']):>12}{fmt(f['torch']):>12}{fmt(f['ratio']):>9}"
              f"  {per_round}{verdicts.get(fig, '')}".rstrip())


def svg(targets, about):
    """A bar per target: its ratio on a log scale, a tick at the bound."""
    if not targets:
        sys.exit("no targeted figure to chart")
    notes = [*about, "ratio, smaller is better (log scale); tick = target"]
    width, x0, x1, row = 800, 250, 770, 56
    top = 42 + 16 * len(notes)
    values = [v for t in targets for v in [t["bound"], t["score"], *t["round_scores"]] if v]
    lo = 10 ** math.floor(math.log10(min(values) / 1.3))
    hi = 10 ** math.ceil(math.log10(max(values) * 1.3))

    def x(v):
        return x0 + (x1 - x0) * math.log(v / lo) / math.log(hi / lo)

    def text(x, y, s, **attrs):
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
        return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(s)}</text>'

    bottom = top + row * len(targets)
    height = bottom + 64
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        text(16, 26, "tapegrad against its targets", font_size=18, font_weight="bold"),
        *(text(16, 46 + 16 * i, s, fill="#555", font_size=12) for i, s in enumerate(notes)),
    ]
    decade = lo
    while decade <= hi:
        for v in (decade, 2 * decade, 5 * decade):
            if v <= hi * 1.0001:
                dark = abs(v - 1) < 1e-9
                out.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{bottom}" '
                           f'stroke="{"#888" if dark else "#e4e4e4"}"/>')
                out.append(text(x(v), bottom + 16, f"{v:g}", text_anchor="middle", font_size=11))
        decade *= 10
    for i, t in enumerate(targets):
        y = top + i * row
        end, tick = x(t["score"]), x(t["bound"])
        colour = "#2e8b3e" if t["met"] else "#cc3333"
        label = f"{t['score']:.3g}" + (f" = 1/{1 / t['score']:.0f}" if t["score"] < 0.2 else "")
        out += [
            text(16, y + 24, t["name"], font_weight="bold"),
            text(16, y + 41, f"{t['ratio_of']} ≤ {t['bound_text']}", fill="#555", font_size=12),
            f'<rect x="{x0}" y="{y + 12}" width="{end - x0:.1f}" height="22" fill="{colour}"/>',
            f'<line x1="{tick:.1f}" y1="{y + 5}" x2="{tick:.1f}" y2="{y + 47}" '
            'stroke="black" stroke-width="3"/>',
            # on the bar left of the tick if it fits, else right of both
            text(min(end, tick) - 6, y + 28, label, text_anchor="end", fill="white",
                 font_weight="bold")
            if min(end, tick) - x0 > 90 else text(max(end, tick) + 6, y + 28, label),
        ]
        out += [f'<circle cx="{x(s):.1f}" cy="{y + 41}" r="2.5" fill="#333"/>'
                for s in t["round_scores"] if s]
    legend = bottom + 44
    out += [
        f'<rect x="{x0}" y="{legend - 11}" width="14" height="14" fill="#2e8b3e"/>',
        text(x0 + 20, legend, "met"),
        f'<rect x="{x0 + 70}" y="{legend - 11}" width="14" height="14" fill="#cc3333"/>',
        text(x0 + 90, legend, "not met"),
        f'<line x1="{x0 + 170}" y1="{legend - 13}" x2="{x0 + 170}" y2="{legend + 4}" '
        'stroke="black" stroke-width="3"/>',
        text(x0 + 180, legend, "target"),
        f'<circle cx="{x0 + 250}" cy="{legend - 4}" r="2.5" fill="#333"/>',
        text(x0 + 260, legend, "single rounds (bar: median)"),
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", default=sys.executable, help="a Python with torch installed")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each harness, alternating")
    ap.add_argument("--json", help="write the raw rounds, medians and verdicts here")
    ap.add_argument("--svg", help="draw the targets as a chart here")
    ap.add_argument("--from-json", help="report a saved --json instead of running")
    ap.add_argument("workloads", nargs="*")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        rounds, host = saved["rounds"], saved["machine"]
    else:
        host = machine(args.torch) if args.json else None
        rounds = []
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
            ours = run(["cargo", "bench", "--bench", "workloads", "--", *args.workloads], cwd=ROOT)
            theirs = run([args.torch, os.path.join(HERE, "pytorch_ref.py"), *args.workloads])
            if not args.workloads or "W8" in args.workloads:  # attention: harnesses of its own
                ours += run(["cargo", "bench", "--bench", "attention"], cwd=ROOT)
                theirs += run([args.torch, os.path.join(HERE, "pytorch_attention.py")])
            rounds.append({"ours": parse(ours), "torch": parse(theirs)})
    summary = summarise(rounds)
    about = [f"median of {len(rounds)} round{'s' * (len(rounds) > 1)}"]
    if host:
        about += [f"{host['date_utc']}; {host['cpu']}, {host['cores']} cores",
                  f"{host['rustc']}; torch {host['torch']}"]
        print("\n".join(about))
    print_table(summary, len(rounds))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": host, "rounds": rounds, **summary}, f, indent=1, ensure_ascii=False)
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(svg(summary["targets"], about))


if __name__ == "__main__":
    main()
