#!/usr/bin/env bash
# Runs the whole Sluice test suite on a fresh machine (Rust toolchain and python3/pip present):
# installs what it needs (ONNX Runtime library, Chromium, a Python venv with the test clients), then
# formatting and lint checks, Rust unit/integration/black-box tests, and the Python
# conformance suite (Triton's tritonclient and onnxruntime-in-Python references, and the
# dashboard in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

# The opt-out that lets a machine without ONNX Runtime skip the tests needing it is for local
# runs only: here (and so in CI, which runs this script) every test runs.
if [ -n "${SLUICE_SKIP_ORT_TESTS+set}" ]; then
  echo "scripts/test.sh: SLUICE_SKIP_ORT_TESTS is set; the full suite does not skip the ONNX Runtime tests (unset it)" >&2
  exit 2
fi

step "machine: cores, memory, free disk"
nproc; free -h | sed -n 1,2p; df -h . | tail -1

step "ONNX Runtime library"
scripts/fetch-onnxruntime.sh

step "Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

step "MLflow test environment (.venv-mlflow: the tracking server and Model Registry of test_mlflow_registry.py)"
# its own venv: MLflow's pins (pyarrow) conflict with the test venv's
if [ ! -x .venv-mlflow/bin/python ]; then
  python3 -m venv .venv-mlflow
fi
.venv-mlflow/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements-mlflow.txt

step "Chromium (dashboard test), HAProxy (rolling-restart test), kubectl (manifests): Debian packages"
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
# kubectl renders the deployment manifests (test_deploy.py); Debian's is 1.20, which the
# manifests are written for as well as for current ones
command -v kubectl >/dev/null 2>&1 || missing="$missing kubernetes-client"
if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  fi
fi
chromium --version
# sed reads to the end: `head` closing the pipe early would kill haproxy with SIGPIPE (pipefail)
PATH="$PATH:/usr/sbin" haproxy -v | sed -n 1p

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "supply chain: cargo deny (deny.toml)"
scripts/supply-chain.sh

step "cargo test (unit, in-process integration, black-box)"
cargo test --locked --workspace

step "load gate: sluice-loadtest (loadtest/scenarios/ci.toml) against the demo, logging and shadow on"
# The demo config with its tables in a temporary directory and every listener on a free port.
# Generous SLOs (zero errors, the 90/10 split within 5 points), debug builds: a smoke test of
# the whole path under load, not a benchmark.
gate="$(mktemp -d)"
sed -e "s#data_dir = \"data\"#data_dir = \"$gate/data\"#" \
    -e "s#model_repository = \"models\"#model_repository = \"$PWD/models\"#" \
    -e "s#baseline = \"models/#baseline = \"$PWD/models/#" sluice.toml > "$gate/sluice.toml"
target/debug/sluice serve --config "$gate/sluice.toml" --ort-lib .ort/lib/libonnxruntime.so \
  --http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 --ports-file "$gate/ports.json" \
  > "$gate/sluice.log" 2>&1 &
gate_pid=$!
for _ in $(seq 1 120); do [ -s "$gate/ports.json" ] && break; sleep 0.5; done
port() { .venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$gate/ports.json" "$1"; }
http_port="$(port http)"; admin_port="$(port admin)"
set +e
target/debug/sluice-loadtest --scenario loadtest/scenarios/ci.toml --url "http://127.0.0.1:$http_port" \
  --expect-split-from-admin "http://127.0.0.1:$admin_port" --json "$gate/load.json"
load_rc=$?
set -e
metrics="$(.venv/bin/python -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$admin_port/metrics" || true)"
kill -TERM "$gate_pid"; wait "$gate_pid" || true
if [ "$load_rc" -ne 0 ]; then
  echo "load gate failed (sluice-loadtest exit $load_rc); gateway log: $gate/sluice.log" >&2
  exit 1
fi
# the run went through inference logging and 100% shadow mirroring
echo "$metrics" | grep -E '^sluice_log_rows_written_total\{table="fraud"\} [1-9]' \
  || { echo "load gate: nothing was logged to the fraud table" >&2; exit 1; }
echo "$metrics" | grep -E '^sluice_shadow_completed_total\{.*served_model="shadow".*\} [1-9]' \
  || { echo "load gate: the shadow model answered nothing" >&2; exit 1; }
rm -rf "$gate"

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
