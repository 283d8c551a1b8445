#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library that the gateway loads at run time (ort `load-dynamic`).
#
# ort 2.0.0-rc.15 targets ONNX Runtime 1.31; the library is taken out of the PyPI wheel of that
# version (the only registry reachable here ships it), checked against a pinned sha256, and put
# at .ort/lib/libonnxruntime.so, where `sluice` looks by default. Idempotent: does nothing when the
# checked library is already in place.
#
#   scripts/fetch-onnxruntime.sh          CPU build  (onnxruntime wheel)
#   scripts/fetch-onnxruntime.sh --gpu    CUDA build (onnxruntime-gpu wheel + NVIDIA CUDA 13 wheels)
#                                         into .ort/gpu/; run sluice with --ort-lib .ort/gpu/lib/libonnxruntime.so
set -euo pipefail
ORT_VERSION=1.31.1
CPU_SO_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
root="$(cd "$(dirname "$0")/.." && pwd)"
flavour=cpu
[ "${1:-}" = "--gpu" ] && flavour=gpu
PY="${PYTHON:-python3}"

extract() { # wheel dest: copy onnxruntime/capi/lib*.so* out of a wheel
  "$PY" - "$1" "$2" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1:3]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        b = os.path.basename(n)
        if n.startswith("onnxruntime/capi/lib") and ".so" in b:
            p = os.path.join(dest, b)
            with open(p + ".part", "wb") as f:
                f.write(z.read(n))
            os.chmod(p + ".part", 0o755)
            os.replace(p + ".part", p)
PY
}

if [ "$flavour" = cpu ]; then
  dest="$root/.ort/lib"
  so="$dest/libonnxruntime.so.$ORT_VERSION"
  if [ -f "$so" ] && echo "$CPU_SO_SHA256  $so" | sha256sum --check --status; then
    exit 0
  fi
  mkdir -p "$dest"; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 "onnxruntime==$ORT_VERSION" -d "$tmp"
  extract "$tmp"/onnxruntime-*.whl "$dest"
  if ! echo "$CPU_SO_SHA256  $so" | sha256sum --check --status; then
    echo "fetch-onnxruntime: sha256 mismatch for $so (expected $CPU_SO_SHA256)" >&2
    rm -f "$so"; exit 1
  fi
else
  dest="$root/.ort/gpu/lib"
  mkdir -p "$dest"; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 "onnxruntime-gpu==$ORT_VERSION" -d "$tmp"
  extract "$tmp"/onnxruntime_gpu-*.whl "$dest"
  # CUDA 13 + cuDNN 9 user-space libraries (the wheel's [cuda,cudnn] extras); the driver comes from the host.
  "$PY" -m pip install --quiet --no-deps --target "$root/.ort/gpu/nvidia-site" \
    "nvidia-cuda-runtime~=13.0" "nvidia-cuda-nvrtc~=13.0" "nvidia-cufft~=12.0" "nvidia-curand~=10.0" \
    "nvidia-cublas~=13.0" "nvidia-nvjitlink~=13.0" "nvidia-cudnn-cu13~=9.0"
  echo "CUDA libraries: $root/.ort/gpu/nvidia-site/nvidia/cu13/lib and .../nvidia/cudnn/lib (sluice preloads them)"
fi
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so.1"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
echo "ONNX Runtime $ORT_VERSION ($flavour): $dest/libonnxruntime.so"
