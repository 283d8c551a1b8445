#!/usr/bin/env bash
# Runs the Sluice gateway on the bundled demo models and config (sluice.toml):
# HTTP :8000, gRPC :8001, admin/metrics 127.0.0.1:8002. Installs what it needs first
# (the ONNX Runtime library from PyPI; a release build of the gateway). Extra arguments go to
# `sluice serve`, e.g. scripts/run-demo.sh --http 127.0.0.1:9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-onnxruntime.sh
cargo build --release --locked -p sluice
exec target/release/sluice serve --config sluice.toml "$@"
