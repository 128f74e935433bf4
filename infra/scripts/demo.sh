#!/usr/bin/env bash
# The embedded-default demo: a local root, no servers. Until the face models
# land it enrols a generated gallery (clustered unit vectors standing in for
# face embeddings), searches probes of enrolled and unenrolled "people", and
# shows the open-set answers through the CLI and SQL.
set -euo pipefail
osprey="${OSPREY:-osprey}"
out="${OSPREY_DEMO_DIR:-$PWD/out/demo}"
root="$out/root"
rm -rf "$out"
mkdir -p "$out"

echo "== generating 2,000 enrolled subjects × 5 templates (128-d) and 1,000 probes"
"$osprey" bench gen --n 10000 --dim 128 --clusters 2000 --spread 0.35 --seed 1 \
  --out "$out/gallery.npy" --subjects-out "$out/gallery-subjects.txt"
# The first 2,000 cluster centres are the gallery's (same centre seed): about
# half of these probes are enrolled people, the rest are strangers.
"$osprey" bench gen --n 1000 --dim 128 --clusters 4000 --spread 0.35 --seed 2 \
  --out "$out/probes.npy" --subjects-out "$out/probe-truth.txt"

echo "== importing the gallery into $root"
"$osprey" gallery import --root "$root" --gallery demo --input "$out/gallery.npy" \
  --subjects "$out/gallery-subjects.txt" --model demo-vectors-128 --fpir 0.01
"$osprey" gallery list --root "$root"

echo "== searching 1,000 probes (first 10 shown)"
"$osprey" search --root "$root" --gallery demo --input "$out/probes.npy" --top-k 3 --job-id demo-search \
  --format csv >"$out/top1.csv"
head -11 "$out/top1.csv" | column -s, -t

echo "== scoring against the truth"
# A probe is "enrolled" when its true subject has templates in the gallery.
paste -d, <(tail -n +2 "$out/top1.csv") "$out/probe-truth.txt" | awk -F, '
  NR == FNR { gallery[$1] = 1; next }
  { enrolled = ($NF in gallery); d = $7; s = $4 }
  enrolled && d == "match" && s == $NF { tp++ }
  enrolled && (d != "match" || s != $NF) { fn++ }
  !enrolled && d == "match" { fp++ }
  !enrolled && d != "match" { tn++ }
  END { printf "enrolled probes: %d matched correctly, %d missed; strangers: %d rejected as unknown, %d false matches\n", tp, fn, tn, fp }' "$out/gallery-subjects.txt" -

echo "== SQL over the root"
"$osprey" sql --root "$root" "SELECT decision, count(*) AS probes, round(avg(score), 3) AS mean_score FROM results WHERE rank = 1 GROUP BY decision ORDER BY decision"
"$osprey" sql --root "$root" "SELECT name, index_factory, num_subjects, num_templates, threshold FROM galleries"

cat <<NEXT

Try next:
  $osprey sql --root $root "SELECT subject_id, count(*) FROM templates WHERE gallery = 'demo' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
  $osprey gallery show --root $root --gallery demo
  $osprey gallery delete-subject --root $root --gallery demo --subject subject-00001
NEXT
