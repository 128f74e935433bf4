#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU: the `cuda` build's
# models on the GPU against the same binary on the CPU (OSPREY_DEVICE picks),
# in the same run: parity of face and body templates, then embeddings/s and
# video frames/s on both.
#
#   make build-cuda    # here or on the GPU machine (needs crates.io and PyPI)
#   OSPREY=~/.cache/osprey/target-cuda/release/osprey infra/scripts/gpu-check.sh [OUT_DIR]
#
# Needs: OSPREY_MODELS (dlib's models and the appearance model:
# infra/scripts/fetch-models.sh), ../shared/data (OSPREY_DATA), python3 with
# numpy and pyarrow (OSPREY_PYTHON), and on the GPU machine CUDA 13's cuBLAS,
# cuRAND and NVRTC on the library path (see cuda-toolchain.sh). Writes
# gpu-check.txt (everything printed) into OUT_DIR (default: $OUT, else .).
# GPU_DEVICE=cpu runs the whole script CPU against CPU (to check the script
# itself on a machine without a GPU).
set -euo pipefail
gpu="${GPU_DEVICE:-cuda}"
# The CUDA 13 libraries the cuda build links (cuBLAS, cuRAND, NVRTC, cudart),
# from the toolchain's wheels when they are here; libcuda.so.1 comes with the
# driver. (Without libcuda.so.1 the cuda build does not start at all.)
if [[ "$gpu" != cpu && -d "${OSPREY_CACHE:-$HOME/.cache/osprey}/cuda/venv" ]]; then
  export LD_LIBRARY_PATH="$("$(dirname "$0")/cuda-toolchain.sh")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
osprey="${OSPREY:-$HOME/.cache/osprey/target-cuda/release/osprey}"
python="${OSPREY_PYTHON:-$HOME/.cache/osprey/venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data="${OSPREY_DATA:-$repo/../shared/data}"
out="${1:-${OUT:-.}}"
mkdir -p "$out"
log="$out/gpu-check.txt"
exec > >(tee "$log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not found"
nproc
"$osprey" --version

echo "== the GPU is usable"
if ! OSPREY_DEVICE=$gpu "$osprey" embed --all-faces --out "$out/probe.parquet" "$data/face_recognition/examples/obama.jpg"; then
  echo "FAIL: OSPREY_DEVICE=$gpu could not run the face models (see above); stopping"
  exit 1
fi

# (Every image with a face: a failure row's null embedding is a null
# fixed-size list, which pyarrow cannot read back from Parquet, apache/arrow#35692.)
faces=("$data"/face_recognition/examples/*.jpg)
for f in "$data"/dlib/examples/faces/*.jpg; do [[ "$f" == */dogs.jpg ]] || faces+=("$f"); done
crops=("$data"/person_search_demo/query/*.jpg)
echo "== parity: ${#faces[@]} face images, ${#crops[@]} person crops, CPU then GPU"
for dev in cpu "$gpu"; do
  OSPREY_DEVICE=$dev "$osprey" embed --all-faces --out "$out/faces-$dev.parquet" "${faces[@]}" 2>/dev/null
  OSPREY_DEVICE=$dev "$osprey" embed --modality body --crops "$data/person_search_demo/query" \
    --out "$out/bodies-$dev.parquet" 2>/dev/null
done
"$python" - "$out" "$gpu" <<'PY'
import sys, numpy as np, pyarrow.parquet as pq
out, gpu = sys.argv[1], sys.argv[2]
for kind in ("faces", "bodies"):
    a, b = (pq.read_table(f"{out}/{kind}-{d}.parquet", columns=["template_id", "embedding"]) for d in ("cpu", gpu))
    a, b = ({i: e for i, e in zip(t.column(0).to_pylist(), t.column(1).to_pylist())} for t in (a, b))
    if sorted(a) != sorted(b):
        print(f"{kind}: FAIL: CPU found {len(a)} templates, GPU {len(b)} (or other ones)")
        continue
    x, y = (np.array([t[k] for k in sorted(a)], dtype=np.float64) for t in (a, b))
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    print(f"{kind}: {len(a)} templates, least CPU/GPU cosine {cos.min():.6f} "
          f"({'ok' if cos.min() > 0.9999 else 'FAIL'}: parity wants > 0.9999)")
PY

echo "== speed: face pipeline and video, CPU then GPU, same binary"
clip="$data/facenet-pytorch/examples/video.mp4"
for dev in cpu "$gpu"; do
  echo "-- OSPREY_DEVICE=$dev"
  OSPREY_DEVICE=$dev "$osprey" bench faces --json "${faces[@]}" | tee "$out/faces-speed-$dev.json"
  OSPREY_DEVICE=$dev "$osprey" bench video --json --modes decode,sampled "$clip" | tee "$out/video-speed-$dev.json"
done
"$python" - "$out" "$gpu" <<'PY'
import json, sys
out, gpu = sys.argv[1], sys.argv[2]
load = lambda name, dev: json.load(open(f"{out}/{name}-speed-{dev}.json"))
f = {d: load("faces", d) for d in ("cpu", gpu)}
v = {d: load("video", d)["modes"]["sampled"] for d in ("cpu", gpu)}
print(f"faces/s (whole images: detect, landmarks, embed): {gpu} {f[gpu]['faces_per_s']:.2f} vs cpu "
      f"{f['cpu']['faces_per_s']:.2f} ({f[gpu]['faces_per_s'] / f['cpu']['faces_per_s']:.2f}x)")
print(f"descriptors/s (aligned chips): {gpu} {f[gpu]['descriptors_per_s']:.1f} vs cpu "
      f"{f['cpu']['descriptors_per_s']:.1f} ({f[gpu]['descriptors_per_s'] / f['cpu']['descriptors_per_s']:.2f}x)")
print(f"video frames/s (1080p, 5 fps sampled): {gpu} {v[gpu]['frames_per_s']:.2f} vs cpu "
      f"{v['cpu']['frames_per_s']:.2f} ({v[gpu]['frames_per_s'] / v['cpu']['frames_per_s']:.2f}x); "
      f"faces {v[gpu]['faces']} vs {v['cpu']['faces']}, tracks {v[gpu]['tracks']} vs {v['cpu']['tracks']}")
PY
echo "== done: $log"
