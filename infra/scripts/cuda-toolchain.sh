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
# and the libraries the binary links against (cudarc, candle's CUDA layer,
# links them rather than loading them): NVRTC, cuBLAS, cuRAND of that release.
PACKAGES=(nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt nvidia-nvvm nvidia-cuda-cccl nvidia-cuda-nvrtc)
LIBRARIES=("nvidia-cublas==$CUDA_RELEASE.*" "nvidia-curand==10.4.0.*")
CACHE="${OSPREY_CACHE:-$HOME/.cache/osprey}"
VENV="$CACHE/cuda/venv"

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV" >&2
fi
installed=$("$VENV/bin/pip" show "${PACKAGES[@]}" 2>/dev/null | grep -c "^Version: $CUDA_RELEASE\." || true)
if [[ "$installed" != "${#PACKAGES[@]}" ]] || ! "$VENV/bin/pip" show nvidia-cublas nvidia-curand >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q "${PACKAGES[@]/%/==$CUDA_RELEASE.*}" "${LIBRARIES[@]}" >&2
fi
ROOT="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
if [[ ! -x "$ROOT/bin/nvcc" ]]; then
  echo "cuda-toolchain: no nvcc under $ROOT" >&2
  exit 1
fi
# For the linker: the wheels' libraries under their unversioned names, and a
# link-only stub of the driver's libcuda (NVIDIA ships the driver library
# with the driver, and its stub in the toolkit, not on PyPI): every driver
# function cuda.h declares, doing nothing. At run time the driver's own
# libcuda.so.1 is loaded instead; the stub is never shipped or loaded.
lib="$ROOT/lib"
for so in libcudart.so.13 libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13; do
  [[ -e "$lib/${so%%.so*}.so" ]] || ln -s "$so" "$lib/${so%%.so*}.so"
done
if [[ ! -e "$lib/libcuda.so" ]]; then
  stub="$(mktemp -d)"
  { printf '#include <cuda.h>\n' | cc -E -P -I"$ROOT/include" - | tr '\n' ' ' \
      | grep -oE "CUresult +cu[A-Za-z0-9_]+ *\(" | sed -E 's/CUresult +//; s/ *\($//'
    # (cudaProfiler.h, not in the wheels)
    printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
  } | sort -u | awk '{print "void " $1 "(void) {}"}' > "$stub/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$stub/cuda_stub.c"
  rm -rf "$stub"
fi

if [[ "${1:-}" == "--env" ]]; then
  # candle-kernels compiles its kernels to PTX for this compute capability
  # (8.0: A100 and newer; PTX is compiled onward for newer GPUs when loaded).
  echo "export PATH=\"$ROOT/bin:\$PATH\" CUDA_ROOT=\"$ROOT\" CUDA_PATH=\"$ROOT\" CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-80}\""
else
  echo "$ROOT"
fi
