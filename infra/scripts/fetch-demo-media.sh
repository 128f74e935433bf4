#!/usr/bin/env bash
# Fetches the demo's media from package registries, idempotently, and lays it
# out as the demo uses it. Nothing comes from a model hub or a web page:
#   * PyPI face_recognition 1.3.0 (sdist): labelled test photos of Barack
#     Obama and Joe Biden (tests/test_images/);
#   * PyPI insightface 2.1 (wheel): a group photo of six people (t1.jpg) and
#     a photo of Tom Hanks (insightface/data/images/);
#   * Debian opencv-doc: OpenCV's pedestrian sample video (vtest.avi).
# Every archive and the video are checked against the sha256 below. The demo's clip
# is made with the ffmpeg CLI from the pedestrian video and two photos.
#
# Usage: infra/scripts/fetch-demo-media.sh DEST
#   DEST/gallery/<subject>/…   photos to enrol, one folder per subject
#   DEST/probes/…              photos and a clip to search
#   OSPREY_CACHE               cache folder (default ~/.cache/osprey)
set -euo pipefail

dest="${1:?usage: fetch-demo-media.sh DEST}"
cache="${OSPREY_CACHE:-$HOME/.cache/osprey}"
downloads="$cache/downloads"
mkdir -p "$downloads"

log() { printf '[demo-media] %s\n' "$*" >&2; }
die() { printf '[demo-media] error: %s\n' "$*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
check() { # FILE SHA256
  local got
  got="$(sha256_of "$1")"
  [ "$got" = "$2" ] || die "$1 has sha256 $got, expected $2"
}

fr_sdist="$downloads/face_recognition-1.3.0.tar.gz"
fr_sha256=5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec
if_wheel="$downloads/insightface-2.1-py3-none-any.whl"
if_sha256=dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399
vtest="$downloads/opencv-doc-vtest.avi"
vtest_sha256=45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
# (The photos are checked through the archives that carry them.)
photo_names=(obama.jpg obama2.jpg obama3.jpg obama_partial_face.jpg biden.jpg t1.jpg Tom_Hanks_54745.png)

# A pip of our own (as fetch-models.sh): a fresh Debian may have no system
# pip, or one that refuses to run outside a venv.
pip_download() {
  local pip_venv="$cache/pip-venv"
  if [ ! -x "$pip_venv/bin/pip" ]; then
    log "creating a venv for pip at $pip_venv"
    python3 -m venv "$pip_venv"
  fi
  "$pip_venv/bin/pip" download -q --disable-pip-version-check --no-deps "$@" -d "$downloads"
}

if [ ! -f "$fr_sdist" ] || [ "$(sha256_of "$fr_sdist")" != "$fr_sha256" ]; then
  log "downloading face_recognition==1.3.0 (sdist) from PyPI"
  pip_download --no-binary :all: face_recognition==1.3.0
fi
check "$fr_sdist" "$fr_sha256"
if [ ! -f "$if_wheel" ] || [ "$(sha256_of "$if_wheel")" != "$if_sha256" ]; then
  log "downloading insightface==2.1 (wheel) from PyPI"
  pip_download --only-binary :all: insightface==2.1
fi
check "$if_wheel" "$if_sha256"
if [ ! -f "$vtest" ] || [ "$(sha256_of "$vtest")" != "$vtest_sha256" ]; then
  log "downloading opencv-doc from Debian (about 95 MB) for its pedestrian video"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # `apt-get download` needs no root; the package is unpacked, not installed
  # (slim images leave /usr/share/doc out of installs).
  if ! (cd "$tmp" && apt-get download -q opencv-doc >/dev/null 2>"$tmp/apt.log"); then
    # Package lists may be missing (fresh images ship without them).
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download -q opencv-doc >/dev/null 2>"$tmp/apt.log") ||
      die "apt-get download opencv-doc failed: $(cat "$tmp/apt.log")"
  fi
  dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb |
    tar -xO ./usr/share/doc/opencv-doc/examples/data/vtest.avi >"$vtest.part"
  mv "$vtest.part" "$vtest"
fi
check "$vtest" "$vtest_sha256"

rm -rf "$dest"
mkdir -p "$dest/gallery/obama" "$dest/gallery/biden" "$dest/probes"
photos="$(mktemp -d)"
tar -xzf "$fr_sdist" -C "$photos" --strip-components=3 \
  face_recognition-1.3.0/tests/test_images/{obama.jpg,obama2.jpg,obama3.jpg,obama_partial_face.jpg,biden.jpg}
python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in ("t1.jpg", "Tom_Hanks_54745.png"):
    open(sys.argv[2] + "/" + name, "wb").write(z.read("insightface/data/images/" + name))' "$if_wheel" "$photos"
for name in "${photo_names[@]}"; do
  [ -s "$photos/$name" ] || die "$name is missing from the packages"
done

cp "$photos/obama.jpg" "$dest/gallery/obama/"
cp "$photos/biden.jpg" "$dest/gallery/biden/"
cp "$photos/obama3.jpg" "$photos/obama_partial_face.jpg" "$photos/t1.jpg" "$photos/Tom_Hanks_54745.png" "$dest/probes/"

# The clip: 4 s of pedestrians (faces far too small to recognise), a cut to
# Obama (obama2.jpg, not enrolled) for 3 s, a cut to Tom Hanks (not
# enrolled) for 3 s; 768x576 at 10 fps, H.264.
log "making the demo clip with ffmpeg"
ffmpeg -nostdin -loglevel error -y \
  -t 4 -i "$vtest" \
  -loop 1 -t 3 -framerate 10 -i "$photos/obama2.jpg" \
  -loop 1 -t 3 -framerate 10 -i "$photos/Tom_Hanks_54745.png" \
  -filter_complex "\
[0:v]fps=10,scale=768:576,setsar=1,format=yuv420p[a];\
[1:v]scale=768:576:force_original_aspect_ratio=decrease,pad=768:576:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p[b];\
[2:v]scale=-2:288,pad=768:576:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p[c];\
[a][b][c]concat=n=3:v=1:a=0[v]" \
  -map "[v]" -c:v libx264 -preset veryfast -crf 23 -r 10 "$dest/probes/street-clip.mp4"
rm -rf "$photos"
log "demo media in $dest"
