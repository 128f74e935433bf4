#!/usr/bin/env bash
# The demo: real faces from package registries through the embedded server.
#   1. fetches the demo media (infra/scripts/fetch-demo-media.sh): photos of
#      Obama and Biden to enrol; other photos of Obama, a group photo of six
#      strangers, Tom Hanks, and a street clip (pedestrians, then Obama, then
#      Tom Hanks) to search;
#   2. starts `osprey serve` (coordinator + in-process worker, local root) in
#      the background, with fresh API keys;
#   3. enrols a gallery (faces and bodies) and runs a search job through the
#      CLI over REST, and prints who was found where (match / unknown, score,
#      time range), the street clip's pedestrians as person tracks;
#   4. shows a REST image search and SQL over the results, then leaves the
#      server running for the commands it prints (stop it: `make demo-stop`).
#
# Usage: infra/scripts/demo.sh [stop]
#   OSPREY            the osprey binary (default: `osprey` on PATH)
#   OSPREY_DEMO_DIR   where everything goes (default ./out/demo)
#   OSPREY_DEMO_PORT  the server's port on 127.0.0.1 (default 8765)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
osprey="$(command -v "${OSPREY:-osprey}" || true)"
out="${OSPREY_DEMO_DIR:-$PWD/out/demo}"
port="${OSPREY_DEMO_PORT:-8765}"
root="$out/root"

stop_server() {
  if [ -f "$out/server.pid" ]; then
    local pid
    pid="$(cat "$out/server.pid")"
    if kill "$pid" 2>/dev/null; then
      # SIGTERM: the server finishes what is in flight, then exits.
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "stopped the demo server (pid $pid)"
    fi
    rm -f "$out/server.pid"
  fi
}

if [ "${1:-}" = stop ]; then
  stop_server
  exit 0
fi
[ -x "$osprey" ] || { echo "demo.sh: no osprey binary (set OSPREY=path/to/osprey)" >&2; exit 2; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

stop_server
rm -rf "$root"
mkdir -p "$out"

step "1. demo media from package registries (PyPI face_recognition 1.3.0 and insightface 2.1, Debian opencv-doc)"
"$here/infra/scripts/fetch-demo-media.sh" "$root/media"
(cd "$root/media" && find . -type f | sort | sed 's|^\./|   |')

step "2. the embedded server: coordinator + worker over $root"
key() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
admin_key="$(key)" operator_key="$(key)" reader_key="$(key)"
cat >"$out/env" <<ENV
# The demo server: \`source $out/env\`, then try the commands the demo printed.
export OSPREY_SERVER=http://127.0.0.1:$port
export OSPREY_API_KEY=$operator_key
export ADMIN_KEY=$admin_key OPERATOR_KEY=$operator_key READER_KEY=$reader_key
export PATH="$(dirname "$osprey"):\$PATH"
ENV
chmod 600 "$out/env"
# The server runs detached (own session, no terminal), so the demo can end
# and leave it for the commands it prints.
OSPREY_API_KEYS="admin:$admin_key,operator:$operator_key,reader:$reader_key" \
  setsid "$osprey" serve --root "$root" --listen "127.0.0.1:$port" --workers 1 \
  </dev/null >"$out/server.log" 2>&1 &
echo $! >"$out/server.pid"
for i in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  if ! kill -0 "$(cat "$out/server.pid")" 2>/dev/null; then
    echo "the server did not start:" >&2
    cat "$out/server.log" >&2
    exit 1
  fi
  [ "$i" -lt 300 ] || { echo "the server did not answer on port $port in 30 s" >&2; exit 1; }
  sleep 0.1
done
echo "serving http://127.0.0.1:$port (pid $(cat "$out/server.pid"), log $out/server.log)"
# shellcheck disable=SC1091
source "$out/env"

step "3. enrol faces and bodies: one folder per subject under media/gallery/"
show osprey gallery create --gallery people
show osprey job submit enroll media/gallery/ --gallery people --modalities face,body --watch
show osprey gallery show --gallery people

step "4. search faces and bodies: photos and the street clip (2 frames/s), open-set"
echo "$ osprey job submit search media/probes/ --gallery people --modalities face,body --sample-fps 2"
job="$(osprey job submit search media/probes/ --gallery people --modalities face,body --sample-fps 2 2>/dev/null)"
echo "$job"
echo "export DEMO_SEARCH_JOB=$job" >>"$out/env"
show osprey job watch "$job"
echo
echo "Who was found, and where (one row per face or person in a photo, or per face or person track in the clip;"
echo "a \`fused (quality)\` row decides for one person from their face and body together, each weighted by its quality):"
show osprey job results "$job"
echo
echo "The pedestrians in the street clip are far too small for faces; they come back as person tracks:"
show osprey sql "SELECT t.track_id, t.t_start_ms, t.t_end_ms, t.num_frames, round(t.quality, 2) AS quality, t.thumbnail_uri
  FROM templates t WHERE t.job_id = '$job' AND t.modality = 'body' AND t.media_uri LIKE '%street-clip.mp4' ORDER BY 2, 1"

step "5. the same gallery through REST and SQL"
show osprey search --gallery people "$root/media/probes/obama3.jpg"
echo "Decisions by kind (face and body scores are cosine similarities; fused ones are quality-weighted means of log-likelihood ratios):"
show osprey sql "SELECT CASE WHEN r.fusion IS NOT NULL THEN 'fused (' || r.fusion || ')' ELSE t.modality END AS kind, r.decision,
  count(*) AS probes, round(min(r.score), 3) AS min_score, round(max(r.score), 3) AS max_score
  FROM results r JOIN templates t ON t.template_id = r.probe_template_id
  WHERE r.job_id = '$job' AND r.rank = 1 GROUP BY 1, 2 ORDER BY 1, 2"

cat <<NEXT

The demo server is still running. Try next (in this shell):

  source $out/env
  osprey job results $job --format json | head -30
  osprey sql "SELECT t.media_uri, t.t_start_ms, t.t_end_ms, r.subject_id, r.score
    FROM results r JOIN templates t ON r.probe_template_id = t.template_id
    WHERE r.rank = 1 AND r.decision = 'match' ORDER BY 1, 2"
  curl -s -H "Authorization: Bearer \$READER_KEY" -F gallery=people -F image=@$root/media/probes/obama_partial_face.jpg \$OSPREY_SERVER/v1/search
  curl -s -H "Authorization: Bearer \$ADMIN_KEY" -H 'content-type: application/json' \$OSPREY_SERVER/v1/sql \\
    -d '{"query": "SELECT at, key_id, source, probe, decision, top_subject_id FROM audit ORDER BY at DESC LIMIT 5"}'
  osprey gallery delete-subject --gallery people --subject biden

Stop the server with: make demo-stop  (or: kill \$(cat $out/server.pid))
NEXT
