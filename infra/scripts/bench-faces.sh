#!/usr/bin/env bash
# `osprey bench faces` against dlib itself (dlib-bin + face_recognition's
# models, the same .dat files) on the same images, in the same run, on one
# thread and on every core. Prints both JSON lines and the ratios.
# Usage: bench-faces.sh [UPSAMPLE] [REPEAT] [IMAGES...]
set -euo pipefail
osprey="${OSPREY:-osprey}"
python="${OSPREY_PYTHON:-$HOME/.cache/osprey/venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
models="${OSPREY_MODELS:-$repo/models}"
upsample="${1:-0}" repeat="${2:-1}"
shift $(( $# < 2 ? $# : 2 ))
if (($# == 0)); then
  data="${OSPREY_DATA:-$repo/../shared/data}"
  # Six photos, 0.3-1.2 MP, 1 to 3 faces each: dlib needs about a minute per pass.
  set -- "$data"/face_recognition/examples/knn_examples/test/* "$data"/face_recognition/examples/two_people.jpg
fi
cores="$(nproc)"
for threads in 1 "$cores"; do
  cpus="0-$((threads - 1))"
  # dlib's own BLAS/OpenMP threads, if any, get the same budget.
  ref=$(OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads taskset -c "$cpus" \
    "$python" "$here/dlib_bench.py" --models "$models" --upsample "$upsample" --repeat "$repeat" "$@")
  ours=$(taskset -c "$cpus" "$osprey" --threads "$threads" bench faces --models "$models" --upsample "$upsample" \
    --repeat "$repeat" --json "$@")
  echo "threads=$threads dlib:   $ref"
  echo "threads=$threads osprey: $ours"
  "$python" - "$ref" "$ours" "$threads" <<'PY'
import json, sys
r, o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"threads={t}: faces/s osprey {o['faces_per_s']:.2f} vs dlib {r['faces_per_s']:.2f} "
      f"(ratio {o['faces_per_s'] / r['faces_per_s']:.2f}); descriptors/s {o['descriptors_per_s']:.1f} vs "
      f"{r['descriptors_per_s']:.1f} (ratio {o['descriptors_per_s'] / r['descriptors_per_s']:.2f}); "
      f"faces found {o['faces']} vs {r['faces']}")
PY
done
