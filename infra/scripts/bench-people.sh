#!/usr/bin/env bash
# Person detection speed: Osprey's CenterNet (`osprey bench people`) against
# the TF.js runtime running the same graph (infra/scripts/tfjs-reference,
# @tensorflow/tfjs 4.22.0 from npm, WASM/XNNPACK backend, which tfjs runs
# single-threaded under Node), on the same frames, in the same run.
#
# Frames: 10 frames sampled at 5 fps from a 576p, a 720p and a 1080p clip of
# ../shared/data, decoded once by ffmpeg to raw RGB and given to both.
# Upstream (the `human` library) stretches every frame to 512×512; Osprey is
# timed at that input (same work) and at its default (aspect kept, long side
# 1024, for people down to ~50 px), at 1 and 2 threads (taskset).
#
# Usage: bench-people.sh            BACKENDS="wasm cpu" adds the pure-JS
#   backend (about 9 s a frame); THREADS="1 2" sets Osprey's thread counts.
set -euo pipefail
osprey="${OSPREY:-osprey}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data="${OSPREY_DATA:-$repo/../shared/data}"
models="${OSPREY_MODELS:-$repo/models}"
read -r -a threads <<<"${THREADS:-1 2}"
read -r -a backends <<<"${BACKENDS:-wasm}"
frames_per_clip=10

ref="$here/tfjs-reference"
if ! [ -d "$ref/node_modules/@tensorflow/tfjs-core" ]; then
  echo "installing the TF.js reference (npm ci in $ref)" >&2
  (cd "$ref" && npm ci --silent)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# label, clip, ffmpeg filter before sampling (demo5.mp4 is stored sideways
# without rotation metadata: turned upright, 720×1280).
clips=(
  "576p debian-opencv-doc/vtest.avi null"
  "720p All-in-One-Gait/history_Inputvideos/demo5.mp4 transpose=1"
  "1080p facenet-pytorch/examples/video.mp4 null"
)
printf '%-6s %-34s %8s %8s %8s\n' clip run threads fps people
for entry in "${clips[@]}"; do
  read -r label clip filter <<<"$entry"
  src="$data/$clip"
  size="$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$src")"
  w="${size%x*}" h="${size#*x}"
  [ "$filter" = null ] || { t="$w"; w="$h"; h="$t"; }
  raw="$work/$label.rgb"
  ffmpeg -v error -i "$src" -vf "$filter,fps=5" -frames:v "$frames_per_clip" -f rawvideo -pix_fmt rgb24 "$raw"
  n=$(($(stat -c %s "$raw") / (w * h * 3)))
  for t in "${threads[@]}"; do
    cpus="0-$((t - 1))"
    for mode in "--input 512 --stretch" ""; do
      name="osprey ${mode:-default (long side 1024)}"
      # shellcheck disable=SC2086
      line="$(taskset -c "$cpus" "$osprey" --threads "$t" bench people --models "$models" \
        --frames "$raw" --width "$w" --height "$h" $mode --json)"
      fps="$(jq -r .fps <<<"$line")" people="$(jq -r .people <<<"$line")"
      printf '%-6s %-34s %8s %8s %8s\n' "$label" "$name" "$t" "$fps" "$people"
    done
  done
  for b in "${backends[@]}"; do
    runs=$n
    [ "$b" = cpu ] && runs=2
    line="$(taskset -c 0 node "$ref/centernet_reference.mjs" --model "$models/centernet" --frames "$raw" \
      --width "$w" --height "$h" --bench "$runs" --backend "$b")"
    printf '%-6s %-34s %8s %8s %8s\n' "$label" "tfjs-$b 512×512" 1 "$(jq -r .fps <<<"$line")" -
  done
done
