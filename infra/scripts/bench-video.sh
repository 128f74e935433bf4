#!/usr/bin/env bash
# `osprey bench video` against face_recognition's video approach (dlib-bin's
# HOG detector + ResNet encoder per frame, frames piped from ffmpeg) on the
# same clip, in the same run, on every core. Prints both JSON lines and the
# ratios for decoding, every frame, and frames sampled at 5 fps.
# Usage: bench-video.sh [VIDEO] [MAX_FRAMES]
# DETECT=cascade benchmarks `--detect cascade` (default: osprey's default)
# and COMPARE=1 adds the sampled pass with `--detect every-frame` and how
# many of its faces and tracks the strategy found.
set -euo pipefail
osprey="${OSPREY:-osprey}"
python="${OSPREY_PYTHON:-$HOME/.cache/osprey/venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data="${OSPREY_DATA:-$repo/../shared/data}"
video="${1:-$data/facenet-pytorch/examples/video.mp4}"
max_frames="${2:-}"
limit=()
[ -n "$max_frames" ] && limit=(--max-frames "$max_frames")
ref=$("$python" "$here/facerec_video_bench.py" --json "${limit[@]}" "$video")
extra=()
[ -n "${DETECT:-}" ] && extra+=(--detect "$DETECT")
[ -n "${COMPARE:-}" ] && extra+=(--compare)
ours=$("$osprey" bench video --json "${limit[@]}" "${extra[@]}" "$video")
echo "face_recognition: $ref"
echo "osprey:           $ours"
"$python" - "$ref" "$ours" <<'PY'
import json, sys
r, o = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for mode in ("decode", "full", "sampled"):
    a, b = o["modes"][mode], r["modes"][mode]
    faces = f"; faces found {a.get('faces')} vs {b.get('faces')}" if mode != "decode" else ""
    print(f"{mode:8} frames/s osprey {a['frames_per_s']:.2f} vs face_recognition {b['frames_per_s']:.2f} "
          f"(ratio {a['frames_per_s'] / b['frames_per_s']:.2f}){faces}")
print(f"osprey detect: {o.get('detect')}")
if o.get("against_every_frame"):
    print(f"against every-frame (sampled): {o['against_every_frame']}")
PY
