#!/usr/bin/env bash
# Runs the Sluice gateway on the bundled demo models and config (sluice.toml):
# HTTP :8000, gRPC :8001, admin/metrics 127.0.0.1:8002; inference tables under data/.
# Installs what it needs first (the ONNX Runtime library from PyPI; a build of the gateway and of
# sluice-loadtest, which the README's tour uses).
# SLUICE_PROFILE=release builds an optimised binary (much longer first build).
# Extra arguments go to `sluice serve`, e.g. scripts/run-demo.sh --http 127.0.0.1:9000
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${SLUICE_PROFILE:-dev}"
scripts/fetch-onnxruntime.sh
cargo build --locked -p sluice -p sluice-loadtest --profile "$profile"
dir=debug
[ "$profile" = dev ] || dir="$profile"
exec "target/$dir/sluice" serve --config sluice.toml "$@"
