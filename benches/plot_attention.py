"""Draws W8 (attention) from a `compare.py W8 --json PATH` run: bytes saved
for backward and forward+backward time against L, log-log, for tapegrad's
tiled and composed kernels and PyTorch's SDPA (medians over the rounds).

Run: python3 benches/plot_attention.py PATH.json docs/attention.svg
"""
import json
import math
import statistics
import sys
from xml.sax.saxutils import escape

SERIES = [  # label, side, metric prefix, colour, dashes (PyTorch's saved bytes lie on tiled's)
    ("tapegrad tiled", "ours", "", "#2e8b3e", "none"),
    ("tapegrad composed", "ours", "composed_", "#cc3333", "none"),
    ("PyTorch SDPA", "torch", "", "#3b6fb6", "6 4"),
]
PANELS = [("saved for backward (MiB)", "saved_mib_L"), ("forward+backward (ms)", "fwd_bwd_ms_L")]


def medians(rounds):
    """{(side, figure): median} over the rounds."""
    keys = {(side, fig) for r in rounds for side in r for fig in r[side]}
    return {k: statistics.median(r[k[0]][k[1]] for r in rounds if k[1] in r[k[0]]) for k in keys}


def panel(x0, y0, w, h, title, points, lengths):
    """One log-log chart: `points` {label: [(L, value)]}."""
    values = [v for pts in points.values() for _, v in pts]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    lx = (math.log(min(lengths)), math.log(max(lengths)))

    def px(length):
        return x0 + w * (math.log(length) - lx[0]) / (lx[1] - lx[0])

    def py(v):
        return y0 + h - h * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))

    out = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    decade = lo
    while decade <= hi * 1.0001:
        out.append(f'<line x1="{x0}" y1="{py(decade):.1f}" x2="{x0 + w}" y2="{py(decade):.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{py(decade) + 4:.1f}" text-anchor="end" font-size="11">{decade:g}</text>')
        decade *= 10
    for length in lengths:
        out.append(f'<text x="{px(length):.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{length}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" font-size="12">L = S (log)</text>')
    for label, _, _, colour, dashes in SERIES:
        pts = points.get(label, [])
        if pts:
            path = " ".join(f"{px(length):.1f},{py(v):.1f}" for length, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5" '
                       f'stroke-dasharray="{dashes}"/>')
            out += [f'<circle cx="{px(length):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}"/>' for length, v in pts]
    return out


def main():
    with open(sys.argv[1]) as f:
        saved = json.load(f)
    med = medians(saved["rounds"])
    lengths = sorted({int(fig.rsplit("_L", 1)[1]) for (_, fig) in med if "_L" in fig and fig.startswith("W8 ")})
    width, height = 860, 420
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           '<text x="16" y="26" font-size="17" font-weight="bold">W8: attention, 4 heads of 64, f32, batch 1</text>',
           f'<text x="16" y="44" font-size="12" fill="#555">median of {len(saved["rounds"])} rounds; '
           f'{escape(saved["machine"]["cpu"])}, {saved["machine"]["cores"]} cores; torch {saved["machine"]["torch"]}</text>']
    for i, (title, metric) in enumerate(PANELS):
        points = {label: [(length, med[(side, f"W8 {prefix}{metric}{length}")]) for length in lengths
                          if (side, f"W8 {prefix}{metric}{length}") in med]
                  for label, side, prefix, _, _ in SERIES}
        out += panel(80 + i * 410, 80, 330, 250, title, points, lengths)
    for i, (label, _, _, colour, _) in enumerate(SERIES):
        x = 80 + i * 200
        out += [f'<rect x="{x}" y="{height - 26}" width="14" height="14" fill="{colour}"/>',
                f'<text x="{x + 20}" y="{height - 14}">{escape(label)}</text>']
    out.append("</svg>")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
