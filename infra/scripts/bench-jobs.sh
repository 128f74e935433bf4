#!/usr/bin/env bash
# Job throughput of `osprey serve` with 1 and then 2 in-process workers: the
# same search job (face_recognition's example photos and the Hamilton clip in
# 3-second segments at 2 fps) timed from submission to its end.
# Usage: OSPREY=target/release/osprey infra/scripts/bench-jobs.sh [DATA_DIR]
set -euo pipefail
osprey="${OSPREY:-osprey}"
data="${1:-../shared/data}/face_recognition/examples"
key="bench-operator-key-0123"
for workers in 1 2; do
  root="$(mktemp -d)"
  mkdir -p "$root/media/subjects/"{obama,biden,lin-manuel-miranda,alex-lacamoire} "$root/media/probes"
  cp "$data/obama.jpg" "$root/media/subjects/obama/"
  cp "$data/biden.jpg" "$root/media/subjects/biden/"
  cp "$data/lin-manuel-miranda.png" "$root/media/subjects/lin-manuel-miranda/"
  cp "$data/alex-lacamoire.png" "$root/media/subjects/alex-lacamoire/"
  cp "$data"/obama2.jpg "$data"/obama-480p.jpg "$data"/obama_small.jpg "$data"/two_people.jpg "$root/media/probes/"
  cp "$data/short_hamilton_clip.mp4" "$root/media/probes/"
  port=$((18000 + RANDOM % 1000))
  OSPREY_API_KEYS="operator:$key" "$osprey" serve --root "$root" --listen "127.0.0.1:$port" --workers "$workers" 2>"$root/serve.log" &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
  submit() {
    curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "http://127.0.0.1:$port/v1/jobs" -d "$1" | jq -r .job_id
  }
  wait_job() {
    while :; do
      state="$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs/$1" | jq -r .state)"
      case "$state" in queued|running) sleep 0.2 ;; *) echo "$state"; return ;; esac
    done
  }
  wait_job "$(submit '{"kind":"enroll","gallery":"people","inputs":["media/subjects/"],"subjects_from":"dirs"}')" >/dev/null
  start=$(date +%s.%N)
  job="$(submit '{"kind":"search","gallery":"people","inputs":["media/probes/"],"sample_fps":2,"segment_seconds":3}')"
  state="$(wait_job "$job")"
  end=$(date +%s.%N)
  status="$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs/$job")"
  echo "{\"workers\": $workers, \"state\": \"$state\", \"seconds\": $(awk "BEGIN{printf \"%.1f\", $end - $start}"), \"tasks\": $(echo "$status" | jq .tasks.total), \"frames\": $(echo "$status" | jq .frames)}"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$root"
done
