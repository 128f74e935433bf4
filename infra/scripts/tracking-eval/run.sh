#!/usr/bin/env bash
# Person tracking against hand-written ground truth: Osprey's body tracks
# (read back with SQL from the observations table) and a classic OpenCV HOG +
# SORT baseline, on the same frames, scored with py-motmetrics.
#
# Usage: infra/scripts/tracking-eval/run.sh [--skip-baseline]
# Env:   CARGO_TARGET_DIR (osprey at $CARGO_TARGET_DIR/release/osprey, or OSPREY_BIN),
#        OSPREY_MODELS (default: <repo>/models), TRACKING_EVAL_VENV
#        (default: ~/.cache/osprey/tracking-eval-venv), KEEP_TMP=1 keeps the work dir.
#
# Mirrors the acceptance check of issue 14: `osprey run enroll --modalities
# face,body`, then `osprey run search --modalities body --sample-fps all` on
# the clip; person tracks = observations JOIN templates WHERE modality =
# 'body'; MOTA/IDF1 for people >= 50 px tall.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
data="$(cd "$repo/../shared/data" 2>/dev/null && pwd)" || { echo "error: ../shared/data not found next to the repo" >&2; exit 1; }

skip_baseline=0
for arg in "$@"; do
  case "$arg" in
    --skip-baseline) skip_baseline=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg" >&2; exit 2 ;;
  esac
done

video="$data/debian-opencv-doc/vtest.avi"
gt="$here/vtest_gt.txt"
frames=150   # the annotated stretch: decoded frames 0..149 (15 s at 10 fps)
osprey="${OSPREY_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/osprey/target}/release/osprey}"
export OSPREY_MODELS="${OSPREY_MODELS:-$repo/models}"
venv="${TRACKING_EVAL_VENV:-$HOME/.cache/osprey/tracking-eval-venv}"

for f in "$video" "$gt"; do [[ -f "$f" ]] || { echo "error: missing $f" >&2; exit 1; }; done
[[ -x "$osprey" ]] || { echo "error: no osprey binary at $osprey (cargo build --release -p osprey-cli, or set OSPREY_BIN)" >&2; exit 1; }
command -v ffmpeg >/dev/null || { echo "error: ffmpeg is needed to cut the clip" >&2; exit 1; }

# The Python side: a venv with the pinned requirements (created once).
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
  echo "== venv $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
py="$venv/bin/python"

# The committed ground truth must be what the committed keyframes give, and
# the scorer must give a perfect score to the ground truth itself.
"$py" "$here/build_gt.py" "$here/vtest_keyframes.txt" "${TMPDIR:-/tmp}/vtest_gt.check.$$" --frames "$frames" >/dev/null
cmp -s "$gt" "${TMPDIR:-/tmp}/vtest_gt.check.$$" || { rm -f "${TMPDIR:-/tmp}/vtest_gt.check.$$"; echo "error: vtest_gt.txt is not build_gt.py's output for vtest_keyframes.txt" >&2; exit 1; }
rm -f "${TMPDIR:-/tmp}/vtest_gt.check.$$"
"$py" "$here/score.py" "$gt" "gt=$gt" --frames "$frames" | grep -Eq '^gt +[0-9]+ +100\.0 .* 100\.0 +0 +0 +0 ' \
  || { echo "error: the scorer does not give the ground truth a perfect score" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/osprey-tracking-eval.XXXXXX")"
if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "== work dir kept: $work"; else trap 'rm -rf "$work"' EXIT; fi

# The annotated stretch as its own file, so decoded frame numbers line up
# with the ground truth (stream copy of the first $frames frames; frame 0 is
# a keyframe, so the decoded frames are the original's).
clip="$work/vtest_${frames}.avi"
ffmpeg -v error -y -i "$video" -frames:v "$frames" -c copy "$clip"
n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$clip")
[[ "$n" == "$frames" ]] || { echo "error: the cut clip has $n frames, expected $frames" >&2; exit 1; }

# A small gallery, enrolled as the acceptance does: Market-1501 samples of
# two people (crops of one, a full camera frame of another, so the body
# index has two subjects and calibrates its threshold).
root="$work/root"
mkdir -p "$work/subjects/market-0001" "$work/subjects/market-c1s1-002301"
cp "$data"/person_search_demo/query/0001_*.jpg "$work/subjects/market-0001/"
cp "$data/person_search_demo/data/samples/c1s1_002301.jpg" "$work/subjects/market-c1s1-002301/"
echo "== osprey run enroll --modalities face,body"
"$osprey" run enroll --root "$root" --gallery people --subjects-from-dirs "$work/subjects" --modalities face,body >"$work/enroll.log" 2>&1 \
  || { cat "$work/enroll.log" >&2; echo "error: enrolment failed" >&2; exit 1; }
tail -n 2 "$work/enroll.log"

echo "== osprey run search --modalities body --sample-fps all ($frames frames)"
t0=$(date +%s.%N)
"$osprey" run search --root "$root" --gallery people --modalities body --sample-fps all \
  --job-id tracking-eval --format json "$clip" >"$work/search.json" 2>"$work/search.log" \
  || { cat "$work/search.log" >&2; echo "error: search failed" >&2; exit 1; }
t1=$(date +%s.%N)
osprey_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "osprey search: ${osprey_s}s wall for $frames frames"

# Person tracks back out of SQL: one row per (track, frame) observation; the
# track's template becomes an integer MOT id.
"$osprey" sql --root "$root" --format csv \
  "SELECT o.frame, dense_rank() OVER (ORDER BY t.template_id) AS id,
          o.bbox.x AS x, o.bbox.y AS y, o.bbox.w AS w, o.bbox.h AS h
     FROM observations o JOIN templates t ON o.template_id = t.template_id
    WHERE t.modality = 'body' AND t.job_id = 'tracking-eval'
    ORDER BY o.frame, id" >"$work/osprey_sql.csv"
tail -n +2 "$work/osprey_sql.csv" | awk -F, 'NF == 6 { printf "%d,%d,%.1f,%.1f,%.1f,%.1f,1,-1,-1,-1\n", $1, $2, $3, $4, $5, $6 }' >"$work/osprey.txt"
echo "osprey: $(cut -d, -f2 "$work/osprey.txt" | sort -u | wc -l) body tracks, $(wc -l <"$work/osprey.txt") observations"
[[ -s "$work/osprey.txt" ]] || { echo "error: no body observations came back from SQL" >&2; exit 1; }

preds=("osprey=$work/osprey.txt")
if [[ "$skip_baseline" == 0 ]]; then
  echo "== baseline: OpenCV HOG + SORT on the same clip"
  t0=$(date +%s.%N)
  "$py" "$here/hog_sort.py" "$clip" "$work/hog_sort.txt"
  t1=$(date +%s.%N)
  echo "hog+sort: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s wall"
  preds+=("hog_sort=$work/hog_sort.txt")
fi

echo "== scores (py-motmetrics)"
"$py" "$here/score.py" "$gt" "${preds[@]}" --frames "$frames" --min-height 50 --iou 0.5 --csv "$work/scores.csv"
if [[ -n "${TRACKING_EVAL_OUT:-}" ]]; then
  mkdir -p "$TRACKING_EVAL_OUT"
  cp "$work"/{osprey.txt,scores.csv,search.json} "$TRACKING_EVAL_OUT"/
  if [[ -f "$work/hog_sort.txt" ]]; then cp "$work/hog_sort.txt" "$TRACKING_EVAL_OUT"/; fi
  echo "== tracks and scores copied to $TRACKING_EVAL_OUT"
fi

# The acceptance criterion: Osprey beats the baseline on MOTA and on IDF1.
if [[ "$skip_baseline" == 0 ]]; then
  "$py" - "$work/scores.csv" <<'PY'
import sys
import pandas as pd
t = pd.read_csv(sys.argv[1], index_col=0)
o, b = t.loc["osprey"], t.loc["hog_sort"]
ok = o["MOTA"] > b["MOTA"] and o["IDF1"] > b["IDF1"]
print(f"{'PASS' if ok else 'FAIL'}: osprey MOTA {100 * o['MOTA']:.1f} vs {100 * b['MOTA']:.1f}, "
      f"IDF1 {100 * o['IDF1']:.1f} vs {100 * b['IDF1']:.1f} (HOG + SORT)")
sys.exit(0 if ok else 1)
PY
fi
