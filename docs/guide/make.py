#!/usr/bin/env python3
"""Makes the guide's printed outputs and figures from the code's own output.

    docs/guide/make.py [CHAPTER...]           rewrite the outputs and the figures
    docs/guide/make.py --check [CHAPTER...]   only say what is out of date (exit 1 if any)

CHAPTER picks chapters by a part of their file name (`03`, `hooks`); all
of them by default.

Every ```rust block of a chapter is a doc-test (src/lib.rs includes each
chapter). A ```text block right after a ```rust block is that block's
output: this script runs every block once more and writes what it printed
into the text block. Doc-tests keep their output to themselves unless they
fail, so the blocks are run from a copy (target/guide/outputs.md, included
by src/lib.rs under `--cfg guide_outputs`) in which each ends with a panic:
the test harness then prints its stdout.

A block that draws a figure writes the DOT of its graph
(`tapegrad::viz::dot`) to target/guide/NAME.dot and checks it against
docs/guide/figures/NAME.dot; this script copies the DOT there and renders
it with Graphviz (`dot -Tsvg`, Debian's `graphviz`) as NAME.svg.

Finally the chapters' own doc-tests run (`cargo test --doc Guide`).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide"
FIGURES = GUIDE / "figures"
OUT = ROOT / "target" / "guide"
END = "guide-output-end"
FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(lines):
    """The fenced blocks of a chapter: (info, first line, last line) with
    the fences' line indices, in order."""
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            found.append((m.group(1), i, j))
            i = j + 1
        else:
            i += 1
    return found


def output_block(lines, found, k):
    """The index in `found` of the text block that shows block k's output
    (the next block, if it is text and only blank lines come between)."""
    if k + 1 < len(found) and found[k + 1][0] == "text":
        between = lines[found[k][2] + 1 : found[k + 1][1]]
        if all(not line.strip() for line in between):
            return k + 1
    return None


def run_blocks(chapters):
    """Runs every rust block, each ending in a panic; returns, per chapter,
    the stdout of each of its rust blocks, and the blocks that failed
    before their end."""
    probe, order = [], []
    for path, lines in chapters.items():
        for k, (info, start, end) in enumerate(blocks(lines)):
            if info == "rust":
                probe += ["```rust", *lines[start + 1 : end], f'panic!("{END}");', "```", ""]
                order.append((path, k))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "outputs.md").write_text("\n".join(probe))
    result = subprocess.run(
        ["cargo", "test", "--doc", "GuideOutputs"],
        cwd=ROOT,
        env={**os.environ, "RUSTDOCFLAGS": "--cfg guide_outputs"},
        capture_output=True,
        text=True,
    )
    sections = re.split(r"^---- src/lib.rs - GuideOutputs \(line (\d+)\) stdout ----$", result.stdout, flags=re.M)
    by_line = {}
    for line, body in zip(sections[1::2], sections[2::2]):
        body = body.split("\nfailures:\n")[0]
        out = re.search(r"^stdout:\n(.*?)(?=^stderr:\n|\Z)", body, re.S | re.M)
        err = re.search(r"^stderr:\n(.*)", body, re.S | re.M)
        by_line[int(line)] = (out.group(1) if out else "", err.group(1) if err else body)
    if len(by_line) != len(order):
        sys.exit(f"expected {len(order)} blocks to run, got {len(by_line)}:\n{result.stdout}\n{result.stderr}")
    printed, failed = {}, []
    for (path, k), line in zip(order, sorted(by_line)):
        out, err = by_line[line]
        printed.setdefault(path, {})[k] = out.rstrip("\n")
        if END not in err:
            failed.append(f"{path.name}, block at line {blocks(chapters[path])[k][1] + 1}:\n{err}")
    return printed, failed


def main():
    args = sys.argv[1:]
    check = "--check" in args
    picks = [a for a in args if a != "--check"]
    chapters = {
        p: p.read_text().split("\n")
        for p in sorted(GUIDE.glob("[0-9][0-9]-*.md"))
        if not picks or any(pick in p.name for pick in picks)
    }
    shutil.rmtree(OUT, ignore_errors=True)
    printed, failed = run_blocks(chapters)
    stale = []

    # Figures: a block whose graph changed has written the new DOT, then
    # failed its check against the old one; the figures are made first,
    # then the blocks run again.
    for dot in sorted(OUT.glob("*.dot")):
        figure = FIGURES / dot.name
        if not figure.exists() or figure.read_text() != dot.read_text():
            stale.append(str(figure.relative_to(ROOT)))
            if not check:
                shutil.copy(dot, figure)
                svg = figure.with_suffix(".svg")
                subprocess.run(["dot", "-Tsvg", str(figure), "-o", str(svg)], check=True)
                print(f"drew {svg.relative_to(ROOT)}")
    if failed and stale:
        if check:
            sys.exit("out of date (run docs/guide/make.py): " + ", ".join(stale))
        printed, failed = run_blocks(chapters)
    if failed:
        sys.exit("blocks that failed:\n\n" + "\n\n".join(failed))

    # Outputs.
    for path, lines in chapters.items():
        found = blocks(lines)
        new = list(lines)
        for k in sorted(printed.get(path, {}), reverse=True):
            shown = output_block(lines, found, k)
            out = printed[path][k]
            where = f"{path.name}: the block at line {found[k][1] + 1}"
            if shown is None and out:
                sys.exit(f"{where} prints, but no text block follows it")
            if shown is not None and not out:
                sys.exit(f"{where} prints nothing for the text block after it")
            if shown is not None:
                _, start, end = found[shown]
                new[start + 1 : end] = out.split("\n")
        if new != lines:
            stale.append(str(path.relative_to(ROOT)))
            if not check:
                path.write_text("\n".join(new))
                print(f"wrote the outputs of {path.relative_to(ROOT)}")
    if check:
        if stale:
            sys.exit("out of date (run docs/guide/make.py): " + ", ".join(stale))
        print("the guide's outputs and figures are up to date")
        return
    subprocess.run(["cargo", "test", "--doc", "Guide"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
