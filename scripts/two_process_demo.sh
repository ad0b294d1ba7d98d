#!/usr/bin/env bash
# Two `factmem grid demo` processes started together on one folder, then one process alone on
# another: every distinct stage is trained once, and both give the same results (issue 14).
# About 10 minutes on a 2-core CPU with the embedded model.   bash scripts/two_process_demo.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/two-process-demo}
S=(--only seed=0 --only "strategy=No Mixing" --only "strategy=Replay 0.1")
mkdir -p "$OUT"
.venv/bin/factmem grid demo "${S[@]}" --set output_dir="$OUT/two" > "$OUT/two-a.log" 2>&1 &
A=$!
.venv/bin/factmem grid demo "${S[@]}" --set output_dir="$OUT/two" > "$OUT/two-b.log" 2>&1 &
B=$!
wait $A && wait $B
.venv/bin/factmem grid demo "${S[@]}" --set output_dir="$OUT/one" > "$OUT/one.log" 2>&1
echo "stage trainings started by the two processes (one line per training):"
grep -H "stage [0-9]*: training on [0-9]" "$OUT/two-a.log" "$OUT/two-b.log" | cut -c1-160 || true
.venv/bin/factmem report "$OUT/two/demo" > /dev/null
.venv/bin/factmem report "$OUT/one/demo" > /dev/null
for table in "$OUT"/one/demo/report/table*.csv; do
    cmp -s "$table" "$OUT/two/demo/report/$(basename "$table")" && echo "report $(basename "$table"): same" \
        || echo "report $(basename "$table"): DIFFERENT"
done
.venv/bin/python scripts/compare_grids.py "$OUT/one/demo" "$OUT/two/demo"
