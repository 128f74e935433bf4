#!/usr/bin/env bash
# `osprey bench search` against raw FAISS (faiss-cpu) on the same files and
# thread count, in the same run. Prints both JSON lines and the QPS ratio.
# Usage: bench-search.sh [N] [DIM] [INDEX] [NPROBE] [K] [THREADS] [RERANK]
# RERANK > 0 re-ranks that many candidates by exact score on both sides
# (Osprey from vectors mapped from local disk, FAISS with IndexRefineFlat).
# CLUSTERS (default N/20) sets how many centres the vectors are drawn around.
set -euo pipefail
osprey="${OSPREY:-osprey}"
python="${OSPREY_PYTHON:-$HOME/.cache/osprey/venv/bin/python}"
n="${1:-200000}" dim="${2:-128}" index="${3:-IVF1024,Flat}" nprobe="${4:-16}" k="${5:-10}" threads="${6:-2}"
rerank="${7:-0}" clusters="${CLUSTERS:-$((n / 20))}"
dir="${OSPREY_BENCH_DIR:-$PWD/out/bench}"
mkdir -p "$dir"
g="$dir/gallery-$n-$dim-$clusters.npy" q="$dir/queries-$dim-$clusters.npy"
[ -f "$g" ] || "$osprey" bench gen --n "$n" --dim "$dim" --clusters "$clusters" --spread 0.5 --seed 1 --out "$g"
[ -f "$q" ] || "$osprey" bench gen --n 10000 --dim "$dim" --clusters "$clusters" --spread 0.5 --seed 2 --out "$q"
here="$(cd "$(dirname "$0")" && pwd)"
# Alternate the two so that background load hits both alike; keep each one's best.
refs=() ours=()
for _ in 1 2; do
  refs+=("$("$python" "$here/faiss_bench.py" --gallery-file "$g" --query-file "$q" --index "$index" --nprobe "$nprobe" --k "$k" --threads "$threads" --rerank "$rerank")")
  ours+=("$("$osprey" bench search --gallery-file "$g" --query-file "$q" --index "$index" --nprobe "$nprobe" --k "$k" --threads "$threads" --rerank "$rerank" --json)")
done
best() { "$python" -c 'import json, sys; print(json.dumps(max((json.loads(l) for l in sys.argv[1:]), key=lambda r: r["qps"])))' "$@"; }
ref=$(best "${refs[@]}")
ours=$(best "${ours[@]}")
echo "faiss-cpu: $ref"
echo "osprey:    $ours"
"$python" - "$ref" "$ours" <<'PY'
import json, sys
r, o = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"qps ratio osprey/faiss-cpu = {o['qps'] / r['qps']:.3f}; recall@k osprey {o['recall_at_k']:.4f} vs {r['recall_at_k']:.4f}")
PY
