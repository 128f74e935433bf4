#!/usr/bin/env bash
# `osprey bench face-model` against PyTorch (CPU) running our own definitions
# of the same networks (face_models_torch_bench.py), with the same random
# weights on the same crops, in the same run, on the same machine.
#
# For each model: PyTorch writes its random weights (safetensors, the
# published names) and its embeddings of the benchmark batch; every Osprey
# run loads those weights and fails unless all its embeddings have cosine
# > 0.9999 with PyTorch's (the parity check). Then both sides are timed at
# each thread count, each pinned with `taskset` to as many cores as threads.
# Prints both JSON lines per run and a table of embeddings/s. Then MTCNN
# (`osprey bench mtcnn`) against facenet-pytorch's MTCNN (mtcnn_bench.py) on
# the same photos at the same thread counts.
#
# Usage: bench-face-models.sh [BATCH] [ITERS] [MODEL...]
#   defaults: 32, 5, adaface-ir101 vit-kprpe-base; THREADS="1 2" sets the
#   thread counts. PyTorch comes from a venv created on first use at
#   $OSPREY_BENCH_VENV (default ~/.cache/osprey/bench-venv): `pip install
#   torch numpy safetensors` from PyPI (the default torch wheel, large).
set -euo pipefail
osprey="${OSPREY:-osprey}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${OSPREY_BENCH_VENV:-$HOME/.cache/osprey/bench-venv}"
fixtures="${OSPREY_SEED_FIXTURES:-$repo/../shared/fixtures/seed-models}"
batch="${1:-32}" iters="${2:-5}"
shift $(($# < 2 ? $# : 2))
(($# == 0)) && set -- adaface-ir101 vit-kprpe-base
read -r -a threads <<<"${THREADS:-1 2}"

python="$venv/bin/python"
if ! [ -x "$python" ] || ! "$python" -c 'import torch, numpy, safetensors' 2>/dev/null; then
  echo "creating the PyTorch venv at $venv (torch numpy safetensors from PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch numpy safetensors
fi
torch_bench=("$python" "$here/face_models_torch_bench.py")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
check=()
# The PyTorch definitions against the upstream reference outputs, once.
[ -d "$fixtures" ] && check=(--self-check "$fixtures")

for model in "$@"; do
  weights="$work/$model.safetensors" reference="$work/$model.reference.safetensors"
  echo "== $model: weights and reference embeddings from PyTorch" >&2
  "${torch_bench[@]}" --model "$model" --batch "$batch" --iters 1 --threads "$(nproc)" "${check[@]}" \
    --save-weights "$weights" --save-reference "$reference" >"$work/setup.json"
  ((${#check[@]})) && echo "PyTorch self-check: $("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["self_check"])' "$work/setup.json")" >&2
  check=()
  for t in "${threads[@]}"; do
    cpus="0-$((t - 1))"
    ref=$(OMP_NUM_THREADS=$t taskset -c "$cpus" "${torch_bench[@]}" --model "$model" --batch "$batch" \
      --iters "$iters" --threads "$t")
    ours=$(taskset -c "$cpus" "$osprey" --threads "$t" bench face-model --model "$model" --weights "$weights" \
      --reference "$reference" --batch "$batch" --iters "$iters" --json)
    echo "threads=$t pytorch: $ref"
    echo "threads=$t osprey:  $ours"
    printf '%s\n%s\n' "$ref" "$ours" >>"$results"
  done
  rm -f "$weights" "$reference"
done

# MTCNN against facenet-pytorch's own, on the JPEG photos of the MTCNN
# reference (0.1-2.9 MP, 0 to 8 faces each).
data="${OSPREY_DATA:-$repo/../shared/data}"
photos=(insightface-pypi/insightface/data/images/t1.jpg face_recognition/examples/knn_examples/test/obama_and_biden.jpg
  face-api.js/examples/images/bbt1.jpg facenet-pytorch/data/multiface.jpg dlib/examples/faces/2008_002506.jpg
  dlib/examples/faces/dogs.jpg face_recognition/examples/obama-240p.jpg)
photos=("${photos[@]/#/$data/}")
"$python" -c 'import torchvision, facenet_pytorch' 2>/dev/null ||
  "$venv/bin/pip" install -q --disable-pip-version-check torchvision facenet-pytorch==2.6.0 --no-deps
mtcnn_results="$work/mtcnn.jsonl"
for t in "${threads[@]}"; do
  cpus="0-$((t - 1))"
  ref=$(OMP_NUM_THREADS=$t taskset -c "$cpus" "$python" "$here/mtcnn_bench.py" --threads "$t" --repeat "$iters" "${photos[@]}")
  ours=$(taskset -c "$cpus" "$osprey" --threads "$t" bench mtcnn --repeat "$iters" --json "${photos[@]}")
  echo "threads=$t facenet-pytorch: $ref"
  echo "threads=$t osprey:          $ours"
  printf '%s\n%s\n' "$ref" "$ours" >>"$mtcnn_results"
done

"$python" - "$mtcnn_results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
r0 = rows[0]
print(f"\nMTCNN on {r0['images']} photos ({r0['megapixels']:.1f} MP), best of the passes; "
      f"facenet-pytorch {r0['facenet_pytorch']}, torch {r0['torch']}\n")
print("| threads | Osprey images/s | facenet-pytorch images/s | ratio Osprey/facenet-pytorch | faces found (Osprey / facenet-pytorch) |")
print("| --- | --- | --- | --- | --- |")
for ref, ours in zip(rows[0::2], rows[1::2]):
    print(f"| {ours['threads']} | {ours['images_per_s']:.2f} | {ref['images_per_s']:.2f} "
          f"| {ours['images_per_s'] / ref['images_per_s']:.2f} | {ours['faces']} / {ref['faces']} |")
PY

"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
torch_version = next(r["torch"] for r in rows if r["impl"] == "pytorch")
print(f"\nbatch {rows[0]['batch']}, best of {rows[0]['iters']} after one warm-up; PyTorch {torch_version}\n")
print("| model | threads | Osprey embeddings/s (median) | PyTorch embeddings/s (median) | ratio Osprey/PyTorch | parity min cosine |")
print("| --- | --- | --- | --- | --- | --- |")
for ref, ours in zip(rows[0::2], rows[1::2]):
    print(f"| {ours['model']} | {ours['threads']} | {ours['embeddings_per_s']:.2f} ({ours['median_embeddings_per_s']:.2f}) "
          f"| {ref['embeddings_per_s']:.2f} ({ref['median_embeddings_per_s']:.2f}) "
          f"| {ours['embeddings_per_s'] / ref['embeddings_per_s']:.2f} | {ours['parity']['min_cosine']:.6f} |")
PY
