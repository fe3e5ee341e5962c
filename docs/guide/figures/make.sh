#!/usr/bin/env bash
# Draws the guide's figures from the code's own output. The chapters'
# doc-tests write the DOT of their graphs (`tapegrad::viz::dot`) to
# target/guide/NAME.dot and check it against docs/guide/figures/NAME.dot;
# this script runs them, copies each DOT here and renders it with
# Graphviz's `dot` as NAME.svg, then runs the doc-tests again, which now
# agree with the figures.
#
# Run from anywhere: docs/guide/figures/make.sh (needs Graphviz: apt-get
# install graphviz).
set -euo pipefail
cd "$(dirname "$0")/../../.."
rm -rf target/guide
# A doc-test whose graph changed writes its new DOT, then fails its check
# against the old figure: that failure is expected here.
cargo test --doc Guide >/dev/null 2>&1 || true
shopt -s nullglob
written=(target/guide/*.dot)
if [ ${#written[@]} -eq 0 ]; then
    echo "no DOT written to target/guide/: does \`cargo test --doc Guide\` compile?" >&2
    exit 1
fi
for src in "${written[@]}"; do
    name=$(basename "$src" .dot)
    cp "$src" "docs/guide/figures/$name.dot"
    dot -Tsvg "$src" -o "docs/guide/figures/$name.svg"
    echo "docs/guide/figures/$name.svg"
done
cargo test --doc Guide
