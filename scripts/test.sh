#!/usr/bin/env bash
# Runs the whole Sluice test suite on a fresh machine (Rust toolchain and python3/pip present):
# installs what it needs (ONNX Runtime library, a Python venv with the test clients), then
# formatting and lint checks, Rust unit/integration/black-box tests, and the Python
# conformance suite (Triton's tritonclient and onnxruntime-in-Python references).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "ONNX Runtime library"
scripts/fetch-onnxruntime.sh

step "Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test (unit, in-process integration, black-box)"
SLUICE_REQUIRE_ORT=1 cargo test --locked --workspace

step "conformance: tritonclient + onnxruntime references against the sluice binary"
# `cargo test` above built target/debug/sluice (the black-box tests run it), with the same
# features; a separate `cargo build` would resolve features without dev-dependencies and rebuild.
set +e
SLUICE_BIN="$PWD/target/debug/sluice" .venv/bin/python -m pytest -q tests/conformance
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "conformance suite collected no tests" >&2
  exit 1
fi
exit "$rc"
