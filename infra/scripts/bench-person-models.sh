#!/usr/bin/env bash
# `osprey bench person-model` against PyTorch (CPU) running our own
# definitions of the same networks (person_models_torch_bench.py), with the
# same weights on the same real inputs, in the same run, on the same machine.
#
# Weights: the seed fixtures' full-size OSNet x1.0, OSNet-AIN x1.0 and
# GaitBase weights (shared/fixtures/seed-models/*.weights.f16.safetensors,
# the published names), read by both sides (Osprey through the ordinary
# checkpoint loader). CLIP3DReID and BigGait publish no weights and the
# fixtures hold only reduced configurations: for them the PyTorch side
# writes seeded random full-size weights in the published layout (BatchNorm
# statistics calibrated on the bench inputs) into the run's temporary
# folder, and both sides read that file. They serve timing and parity only,
# never accuracy. SapiensID likewise (its fixture is a reduced
# configuration): 1.6 GB of float32, mostly the head's 4096 x 77824 matrix.
#
# Inputs: body models get the 26 Market-1501 person crops of the appearance
# reference (written once as PNG, so both sides decode the same pixels)
# repeated to BATCH; GaitBase gets four real silhouette sequences
# (All-in-One-Gait's gallery tracks, 59 frames of 192x192 each); BigGait
# gets three real RGB person-crop sequences (WALKER_FRAMES consecutive
# frames of All-in-One-Gait's demo1-3 walking clips, the walker boxed by
# CenterNet in the TF.js runtime, written once as PNG). Gait models: one
# forward per sequence. Both sides start from decoded pixels and do their
# model's whole preprocessing (PIL bilinear resize; OpenGait's pretreatment,
# or pretreatment_rgb for BigGait).
#
# SapiensID reads keypoints as well as the crop. PyTorch has no detector
# here, so Osprey prepares the inputs once (`--save-inputs`: the 384x384
# white-padded square of each distinct crop and its 22 keypoints from MoveNet
# Thunder and MTCNN) and both sides run the network on exactly those; the
# PyTorch side also reports how far Osprey's square image is from upstream's
# torchvision test transform of the same crop. Timed on both sides: the
# network on the prepared batch (host-side box arithmetic included) plus the
# unit normalisation. Osprey also times preparing the inputs in each pass and
# reports it apart (prepare_crops_per_s) and with the network
# (end_to_end_embeddings_per_s).
#
# For each model: PyTorch first checks its definitions against the upstream
# reference fixtures and writes its embeddings of the inputs; every Osprey
# run fails unless all its embeddings have cosine > 0.9999 with PyTorch's
# (and, for gait, the same frames were kept). Then both sides are timed at
# each thread count, each pinned with `taskset` to as many cores as threads.
# Prints both JSON lines per run and the tables of embeddings/s.
#
# Pillow: torchreid resizes with Pillow's bilinear filter, which Osprey
# reproduces byte for byte, in Pillow 13's pass order by default (Pillow 13
# shrinks tall crops vertically first: ±1 on 10-16 % of the bytes of 17 of
# the 26 crops here against Pillow 12) or in the earlier releases' with
# OSPREY_PILLOW=12. The Osprey side is told the PyTorch side's Pillow major
# version, so both resize alike.
#
# Usage: bench-person-models.sh [ITERS] [MODEL...]
#   defaults: 5, osnet-x1_0 osnet-ain-x1_0 gaitbase (clip3dreid, biggait and
#   sapiensid are 10-100x heavier: name them); BATCH=32 sets the body crops per pass,
#   THREADS="1 2" the thread counts, WALKER_FRAMES=25 BigGait's frames per
#   sequence, SEED=15 the random weights' seed. PyTorch comes from the venv
#   at $OSPREY_BENCH_VENV (default ~/.cache/osprey/bench-venv, created on
#   first use from PyPI: torch torchvision numpy safetensors
#   opencv-python-headless). BigGait's crops need node and
#   infra/scripts/tfjs-reference/node_modules (npm ci there) and CenterNet
#   in $OSPREY_MODELS (default ./models).
set -euo pipefail
osprey="${OSPREY:-osprey}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${OSPREY_BENCH_VENV:-$HOME/.cache/osprey/bench-venv}"
fixtures="${OSPREY_SEED_FIXTURES:-$repo/../shared/fixtures/seed-models}"
data="${OSPREY_DATA:-$repo/../shared/data}"
models="${OSPREY_MODELS:-$repo/models}"
walker_frames="${WALKER_FRAMES:-25}"
seed="${SEED:-15}"
iters="${1:-5}"
shift $(($# < 1 ? $# : 1))
(($# == 0)) && set -- osnet-x1_0 osnet-ain-x1_0 gaitbase
batch="${BATCH:-32}"
read -r -a threads <<<"${THREADS:-1 2}"

[ -d "$fixtures" ] || { echo "no seed fixtures at $fixtures (set OSPREY_SEED_FIXTURES)" >&2; exit 1; }
python="$venv/bin/python"
if ! [ -x "$python" ] || ! "$python" -c 'import torch, torchvision, numpy, safetensors, cv2' 2>/dev/null; then
  echo "preparing the PyTorch venv at $venv (from PyPI)" >&2
  [ -x "$python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch torchvision numpy safetensors \
    opencv-python-headless==4.10.0.84
fi
OSPREY_PILLOW="$("$python" -c 'import PIL; print(PIL.__version__)')"
export OSPREY_PILLOW
echo "PyTorch side: Pillow $OSPREY_PILLOW (Osprey resizes as it does)" >&2
torch_bench=("$python" "$here/person_models_torch_bench.py")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
echo "== crops, and the PyTorch definitions against the upstream reference fixtures" >&2
"${torch_bench[@]}" --write-crops "$data" "$work/crops" --self-check "$fixtures" --threads "$(nproc)" >"$work/setup.json"
echo "PyTorch self-check: $(cat "$work/setup.json")" >&2
crops=("$work"/crops/*.png)
sils="$data/All-in-One-Gait/OpenGait/demo/output/GaitSilhouette/gallery"
sequences=("$sils"/001/undefined "$sils"/002/undefined "$sils"/003/undefined "$sils"/004/undefined)

if [[ " $* " == *" biggait "* ]]; then
  echo "== BigGait's RGB crop sequences (CenterNet boxes, TF.js)" >&2
  "${torch_bench[@]}" --write-walkers "$data" "$work/walkers" --walker-frames "$walker_frames" \
    --models-dir "$models" --threads "$(nproc)" >/dev/null
fi

for model in "$@"; do
  case "$model" in
    osnet-x1_0) weights="$fixtures/osnet_x1_0.weights.f16.safetensors" inputs=("${crops[@]}") ;;
    osnet-ain-x1_0) weights="$fixtures/osnet_ain_x1_0.weights.f16.safetensors" inputs=("${crops[@]}") ;;
    gaitbase) weights="$fixtures/gaitbase.weights.f16.safetensors" inputs=("${sequences[@]}") ;;
    clip3dreid) weights="$work/clip3dreid.random.safetensors" inputs=("${crops[@]}") ;;
    biggait) weights="$work/biggait.random.safetensors" inputs=("$work"/walkers/*) ;;
    sapiensid) weights="$work/sapiensid.random.safetensors" inputs=("${crops[@]}") ;;
    *) echo "no PyTorch definition of $model here (osnet-x1_0, osnet-ain-x1_0, clip3dreid, sapiensid, gaitbase, biggait)" >&2; exit 2 ;;
  esac
  if ! [ -f "$weights" ]; then
    echo "== $model: seeded random full-size weights (seed $seed; timing and parity only)" >&2
    "${torch_bench[@]}" --model "$model" --make-weights "$weights" --seed "$seed" --inputs "${inputs[@]}" \
      --threads "$(nproc)" >&2
  fi
  torch_inputs=(--inputs "${inputs[@]}") check_inputs=()
  if [ "$model" = sapiensid ]; then
    echo "== $model: inputs prepared by Osprey (square images, MoveNet + MTCNN keypoints)" >&2
    "$osprey" --threads "$(nproc)" bench person-model --model "$model" --batch "$batch" \
      --save-inputs "$work/$model.inputs.safetensors" --inputs "${inputs[@]}" >&2
    torch_inputs=(--prepared "$work/$model.inputs.safetensors")
    check_inputs=(--inputs "${inputs[@]}") # upstream's test transform of the crops, against Osprey's squares
  fi
  reference="$work/$model.reference.safetensors"
  echo "== $model: reference embeddings from PyTorch" >&2
  "${torch_bench[@]}" --model "$model" --weights "$weights" --batch "$batch" --iters 1 --threads "$(nproc)" \
    --save-reference "$reference" "${torch_inputs[@]}" "${check_inputs[@]}" >"$work/$model.reference.json"
  echo "PyTorch reference run: $(cat "$work/$model.reference.json")" >&2
  for t in "${threads[@]}"; do
    cpus="0-$((t - 1))"
    ref=$(OMP_NUM_THREADS=$t taskset -c "$cpus" "${torch_bench[@]}" --model "$model" --weights "$weights" \
      --batch "$batch" --iters "$iters" --threads "$t" "${torch_inputs[@]}")
    ours=$(taskset -c "$cpus" "$osprey" --threads "$t" bench person-model --model "$model" --weights "$weights" \
      --reference "$reference" --batch "$batch" --iters "$iters" --json --inputs "${inputs[@]}")
    echo "threads=$t pytorch: $ref"
    echo "threads=$t osprey:  $ours"
    printf '%s\n%s\n' "$ref" "$ours" >>"$results"
  done
done

"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
pairs = list(zip(rows[0::2], rows[1::2]))
print(f"\nbest of {rows[0]['iters']} passes after one warm-up (median in brackets); PyTorch {rows[0]['torch']}")
print("distinct: the largest cosine between PyTorch's embeddings of different inputs (what parity is measured against)")
body = [(r, o) for r, o in pairs if o["modality"] == "body"]
gait = [(r, o) for r, o in pairs if o["modality"] == "gait"]
if body:
    print(f"\nbody: batch of {body[0][1]['batch']} crops\n")
    print("| model | threads | Osprey embeddings/s (median) | PyTorch embeddings/s (median) | ratio Osprey/PyTorch | parity min cosine | distinct |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ref, ours in body:
        print(f"| {ours['model']} | {ours['threads']} | {ours['embeddings_per_s']:.2f} ({ours['median_embeddings_per_s']:.2f}) "
              f"| {ref['embeddings_per_s']:.2f} ({ref['median_embeddings_per_s']:.2f}) "
              f"| {ours['embeddings_per_s'] / ref['embeddings_per_s']:.2f} | {ours['parity']['min_cosine']:.6f} "
              f"| {ref['distinct_max_cosine']:.3f} |")
    prepared = [o for _, o in body if "prepare_crops_per_s" in o]
    if prepared:
        print("\nSapiensID, Osprey only: preparing its inputs (white square pad + resize, MoveNet Thunder and MTCNN"
              " keypoints) in the same passes\n")
        print("| model | threads | prepare crops/s | end-to-end embeddings/s (median) |")
        print("| --- | --- | --- | --- |")
        for o in prepared:
            print(f"| {o['model']} | {o['threads']} | {o['prepare_crops_per_s']:.2f} "
                  f"| {o['end_to_end_embeddings_per_s']:.2f} ({o['median_end_to_end_embeddings_per_s']:.2f}) |")
if gait:
    print()
    for m in dict.fromkeys(o["model"] for _, o in gait):
        g = next(o for _, o in gait if o["model"] == m)
        print(f"{m}: {g['batch']} sequences, {g['frames']} frames ({g['frames_kept']} kept by the pretreatment)")
    print("\n| model | threads | Osprey sequences/s (frames/s) | PyTorch sequences/s (frames/s) | ratio Osprey/PyTorch | parity min cosine | distinct |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ref, ours in gait:
        print(f"| {ours['model']} | {ours['threads']} | {ours['embeddings_per_s']:.3f} ({ours['frames_per_s']:.1f}) "
              f"| {ref['embeddings_per_s']:.3f} ({ref['frames_per_s']:.1f}) "
              f"| {ours['embeddings_per_s'] / ref['embeddings_per_s']:.2f} | {ours['parity']['min_cosine']:.6f} "
              f"| {ref['distinct_max_cosine']:.3f} |")
PY
