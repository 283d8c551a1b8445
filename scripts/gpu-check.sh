#!/usr/bin/env bash
# GPU check: serve the MLP on the CUDA execution provider, check its outputs against the CPU
# build, and print CPU vs GPU throughput at batch 1 and 64 (V2 binary, sluice-loadtest).
#
#   scripts/gpu-check.sh [seconds-per-run]
#
# Needs an NVIDIA GPU and driver, and the GPU build of ONNX Runtime: the `onnxruntime-gpu` wheel
# plus NVIDIA's CUDA 13 / cuDNN 9 wheels from PyPI, which `scripts/fetch-onnxruntime.sh --gpu`
# installs under .ort/gpu (sluice preloads the CUDA libraries from there). Builds the release
# binaries if they are missing. Exit code 1 when the GPU outputs differ from the CPU ones by more
# than 1e-3 (absolute) or when the CUDA provider cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
step() { printf '\n==> %s\n' "$*"; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || {
  echo "no nvidia-smi: this machine has no NVIDIA driver" >&2; exit 1; }

step "ONNX Runtime: CPU and GPU builds"
scripts/fetch-onnxruntime.sh
scripts/fetch-onnxruntime.sh --gpu
[ -x target/release/sluice ] && [ -x target/release/sluice-loadtest ] ||
  cargo build --release -p sluice --bin sluice -p sluice-loadtest

tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
serve() { # name provider ortlib
  cat > "$tmp/$1.toml" <<EOF
[server]
data_dir = "$tmp/data-$1"
[runtime]
model_repository = "$PWD/models"
[[models]]
name = "mlp"
versions = [1]
provider = "$2"
batching = { enabled = true, max_batch_size = 64, max_queue_delay_us = 0 }
EOF
  target/release/sluice serve --config "$tmp/$1.toml" --ort-lib "$3" --http 127.0.0.1:0 --grpc 127.0.0.1:0 \
    --admin 127.0.0.1:0 --ports-file "$tmp/$1.ports" > "$tmp/$1.log" 2>&1 &
  for _ in $(seq 1 240); do [ -s "$tmp/$1.ports" ] && break; sleep 0.5; done
  [ -s "$tmp/$1.ports" ] || { echo "the $1 gateway did not start:" >&2; cat "$tmp/$1.log" >&2; exit 1; }
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$tmp/$1.ports"
}

step "serve the MLP on CPU and on CUDA"
cpu_port="$(serve cpu cpu "$PWD/.ort/lib/libonnxruntime.so")"
gpu_port="$(serve gpu cuda "$PWD/.ort/gpu/lib/libonnxruntime.so")"

step "outputs: GPU vs CPU on the same 64 seeded rows"
python3 - "$cpu_port" "$gpu_port" <<'EOF'
import json, random, sys, urllib.request
cpu, gpu = sys.argv[1:3]
rng = random.Random(7)
rows = [[rng.gauss(0, 1) for _ in range(64)] for _ in range(64)]
body = json.dumps({"inputs": [{"name": "input", "shape": [64, 64], "datatype": "FP32",
                               "data": [x for r in rows for x in r]}]}).encode()
def infer(port):
    meta = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/mlp"))
    b = body.replace(b'"input"', json.dumps(meta["inputs"][0]["name"]).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/mlp/infer", data=b,
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["outputs"][0]["data"]
a, b = infer(cpu), infer(gpu)
worst = max(abs(x - y) for x, y in zip(a, b))
print(f"{len(a)} output values, max |gpu - cpu| = {worst:.3g}")
sys.exit(0 if worst <= 1e-3 else 1)
EOF

step "throughput: CPU vs GPU, V2 binary, batch 1 and 64"
printf '%-6s %-6s %12s %12s %10s\n' device batch "req/s" "rows/s" "p50 ms"
for batch in 1 64; do
  for dev in cpu gpu; do
    port="$cpu_port"; [ "$dev" = gpu ] && port="$gpu_port"
    target/release/sluice-loadtest --target v2-binary --url "http://127.0.0.1:$port" --model mlp \
      --rows "$batch" -c 16 --duration "${secs}s" --warmup 2s --output json > "$tmp/$dev-$batch.json"
    python3 -c "
import json,sys; r=json.load(open(sys.argv[1]))['overall']
print(f\"{sys.argv[2]:<6} {sys.argv[3]:<6} {r['throughput']['requests_per_s']:12,.0f} {r['throughput']['rows_per_s']:12,.0f} {r['latency_ms']['p50']:10.2f}\")
" "$tmp/$dev-$batch.json" "$dev" "$batch"
  done
done
