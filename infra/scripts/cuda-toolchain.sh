#!/usr/bin/env bash
# CUDA's compiler (nvcc) and headers for the `cuda` build, from PyPI: no GPU
# and no system CUDA toolkit needed. NVIDIA's `nvidia-cuda-nvcc-cu12` wheels
# carry only ptxas; the CUDA 13 wheels (`nvidia-cuda-nvcc`,
# `nvidia-cuda-runtime`, ...) carry nvcc, its headers and libcudart. 13.0: the
# oldest CUDA 13 (the widest range of drivers), and cudarc 0.19 (candle's)
# knows CUDA up to 13.4.
#
#   infra/scripts/cuda-toolchain.sh          install (once) and print the root
#   eval "$(infra/scripts/cuda-toolchain.sh --env)"   and export PATH etc.
#
# cudarc loads the driver, cuBLAS, cuRAND and NVRTC at run time (dynamic
# loading), so the binary builds without them; the GPU machine needs an
# NVIDIA driver for CUDA 13 (580 or newer) and CUDA 13's cuBLAS, cuRAND and NVRTC
# libraries (pip: nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc, on
# LD_LIBRARY_PATH).
set -euo pipefail

# nvcc with the parts it runs (cicc in nvvm, the crt headers) and the
# headers kernels include (the runtime's, and CCCL's libcu++ for <nv/target>),
# all of one CUDA release: pip would otherwise pull the newest nvvm and crt.
CUDA_RELEASE="${OSPREY_CUDA_RELEASE:-13.0}"
PACKAGES=(nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt nvidia-nvvm nvidia-cuda-cccl)
CACHE="${OSPREY_CACHE:-$HOME/.cache/osprey}"
VENV="$CACHE/cuda/venv"

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV" >&2
fi
installed=$("$VENV/bin/pip" show "${PACKAGES[@]}" 2>/dev/null | grep -c "^Version: $CUDA_RELEASE\." || true)
if [[ "$installed" != "${#PACKAGES[@]}" ]]; then
  "$VENV/bin/pip" install -q "${PACKAGES[@]/%/==$CUDA_RELEASE.*}" >&2
fi
ROOT="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
if [[ ! -x "$ROOT/bin/nvcc" ]]; then
  echo "cuda-toolchain: no nvcc under $ROOT" >&2
  exit 1
fi
if [[ "${1:-}" == "--env" ]]; then
  # candle-kernels compiles its kernels to PTX for this compute capability
  # (8.0: A100 and newer; PTX is compiled onward for newer GPUs when loaded).
  echo "export PATH=\"$ROOT/bin:\$PATH\" CUDA_ROOT=\"$ROOT\" CUDA_PATH=\"$ROOT\" CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-80}\""
else
  echo "$ROOT"
fi
