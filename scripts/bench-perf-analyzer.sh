#!/usr/bin/env bash
# The gateway measured with Triton's own load client, perf_analyzer, with sluice-loadtest on the
# same model, transport and concurrency beside it. Not run in CI.
#
#   cargo build --release -p sluice -p sluice-loadtest --bins     (once)
#   scripts/bench-perf-analyzer.sh [--interval-ms 5000] [--concurrency 1,4,16] [--no-loadtest] [--json out.json]
#
# Sets up what it needs first (idempotent): Debian's libb64-0d (apt; sudo when not root), the venv
# .venv-bench with perf_analyzer and libcudart.so.12 (pins: scripts/requirements-perf-analyzer.txt),
# and the ONNX Runtime library (scripts/fetch-onnxruntime.sh). Then scripts/bench_perf_analyzer.py
# starts `${SLUICE_BIN:-target/release/sluice}` on free 127.0.0.1 ports (logging off, no shadow)
# and, for fraud_classifier v1 and mlp v1, 1 row per request from tests/fixtures/inputs, runs
# perf_analyzer over HTTP (binary tensors) and gRPC at each concurrency, each run under
# `flock /tmp/bench.lock`. Prints a Markdown table (infer/s, p50, p99) and the versions.
# About 5 minutes on the 2-core reference machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv-bench"

if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing libb64-0d (apt)" >&2
  $sudo apt-get install -y -qq libb64-0d >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq libb64-0d >/dev/null; }
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -r scripts/requirements-perf-analyzer.txt

scripts/fetch-onnxruntime.sh

cudart="$(echo "$venv"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)"
[ -f "$cudart/libcudart.so.12" ] || { echo "no libcudart.so.12 under $cudart" >&2; exit 1; }
export LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PERF_ANALYZER="$venv/bin/perf_analyzer"
# fails here, not mid-run, when a shared library is missing
if ! v="$("$PERF_ANALYZER" --version 2>&1)"; then echo "$v" >&2; exit 1; fi

exec python3 "$root/scripts/bench_perf_analyzer.py" "$@"
