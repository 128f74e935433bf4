#!/usr/bin/env bash
# A real-media enrol job through the services (a coordinator and a worker
# process) into a large existing gallery: 2 photos each of 39 subjects of the
# AT&T (ORL) faces, 78 tasks, into gallery `big` of a copy of ROOT, with a
# commit due after every task (`enrol_commit_templates = 1`; one snapshot per
# task before background commits, which now coalesce the tasks staged meanwhile)
# or the defaults (`grouped`). Prints the job's time, the snapshots written,
# their total seconds (and of those, the seconds background commits held the
# gallery's lock) and the job-end calibration's (from the coordinator's log).
# Usage: OSPREY=target/release/osprey infra/scripts/bench-enrol.sh per-task|grouped ROOT [DATA_DIR]
# ROOT holds gallery `big` of dlib-resnet-v1 templates, e.g. made with
#   osprey bench gen --n 1000000 --dim 128 --clusters 100000 --out g.npy --subjects-out g.txt
#   osprey gallery import --root ROOT --gallery big --input g.npy --subjects g.txt --model dlib-resnet-v1
set -euo pipefail
mode="$1"
root="$(cd "$2" && pwd)"
data="${3:-../shared/data}/att_faces_orl"
osprey="${OSPREY:-osprey}"
key="bench-operator-key-0123"
run="$(mktemp -d)"
cp -r "$root/." "$run/"
for s in $(seq 2 40); do
  mkdir -p "$run/media/orl/s$s"
  cp "$data/s$s/1.pgm" "$data/s$s/2.pgm" "$run/media/orl/s$s/"
done
if [ "$mode" = per-task ]; then echo "enrol_commit_templates = 1" >"$run/osprey.toml"; else : >"$run/osprey.toml"; fi
port=$((18000 + RANDOM % 1000))
export OSPREY_LOG=info
OSPREY_CONFIG="$run/osprey.toml" OSPREY_API_KEYS="operator:$key" "$osprey" coordinator --root "$run" \
  --listen "127.0.0.1:$port" 2>"$run/coordinator.log" &
cpid=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
OSPREY_API_KEY="$key" "$osprey" worker --coordinator "http://127.0.0.1:$port" --worker-id w1 2>"$run/worker.log" &
wpid=$!
start=$(date +%s.%N)
job="$(curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "http://127.0.0.1:$port/v1/jobs" \
  -d '{"kind":"enroll","gallery":"big","inputs":["media/orl/"],"subjects_from":"dirs"}' | jq -r .job_id)"
while :; do
  status="$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs/$job")"
  case "$(echo "$status" | jq -r .state)" in queued|running) sleep 0.2 ;; *) break ;; esac
done
end=$(date +%s.%N)
gallery="$(curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/galleries/big")"
kill "$wpid" "$cpid"; wait "$wpid" "$cpid" 2>/dev/null || true
log="$(sed 's/\x1b\[[0-9;]*m//g' "$run/coordinator.log")"
snapshots="$(echo "$log" | grep -c 'snapshot of' || true)"
snapshot_s="$(echo "$log" | grep -o 'batches in [0-9.]* s' | awk '{s += $3} END {printf "%.1f", s}')"
locked_s="$(echo "$log" | grep -o 'locked for [0-9.]* s' | awk '{s += $3} END {printf "%.1f", s}')"
calibration_s="$(echo "$log" | grep -o 'calibrated for FPIR [0-9.]* in [0-9.]* s' | awk '{s += $6} END {printf "%.1f", s}')"
echo "{\"mode\": \"$mode\", \"state\": $(echo "$status" | jq .state), \"tasks\": $(echo "$status" | jq .tasks.done), \"seconds\": $(awk "BEGIN{printf \"%.1f\", $end - $start}"), \"snapshots\": $snapshots, \"snapshot_seconds\": $snapshot_s, \"snapshot_seconds_gallery_locked\": $locked_s, \"calibration_seconds\": $calibration_s, \"gallery_templates\": $(echo "$gallery" | jq .templates)}"
rm -rf "$run"
