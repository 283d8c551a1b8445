#!/usr/bin/env bash
# Samples the gateway's request path with `perf` (Debian's linux-perf) while sluice-loadtest
# drives it: /predict, V2 binary and gRPC, at concurrency 1 and 16, fraud_classifier v1 behind
# an endpoint without logging or shadow (the bench-overhead.py gateway); route `predict-logged`
# is /predict to the same model behind an endpoint with an inference table (the cost of
# logging). ROUTES="predict grpc" and CLIENTS="16" pick runs (default: the three routes at 1 and
# 16 clients). For each run it writes
#   target/profile/<route>-c<N>.threads.txt   samples by thread (tokio workers, ORT workers...)
#   target/profile/<route>-c<N>.dso.txt       samples by binary (the gateway, ONNX Runtime, libc, kernel)
#   target/profile/<route>-c<N>.self.txt      symbols by self time (where the CPU goes)
# and prints the top of each. Only the gateway process is sampled, at 999 Hz. With
# CALL_GRAPH=1 the samples carry DWARF call graphs (release builds keep line tables; there are
# no frame pointers) and each run also writes
#   target/profile/<route>-c<N>.children.txt  symbols by inclusive time (which calls cost most)
#   target/profile/<route>-c<N>.folded        folded stacks (inferno-flamegraph / flamegraph.pl
#                                             turn them into an SVG flame graph)
# (slow: perf takes minutes to unwind each run on this machine).
#
#     cargo build --release -p sluice -p sluice-loadtest --bins
#     scripts/profile-hot-path.sh [seconds per run, default 8]
# SLUICE_BIN picks another gateway binary (e.g. an earlier build, to profile before a change).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
out=target/profile
mkdir -p "$out"
bin="${SLUICE_BIN:-target/release/sluice}"
for f in "$bin" target/release/sluice-loadtest; do
  [ -x "$f" ] || { echo "missing $f: cargo build --release -p sluice -p sluice-loadtest --bins" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 2; }

tmp="$(mktemp -d)"
cat > "$tmp/sluice.toml" <<EOF
[server]
data_dir = "$tmp/data"
[runtime]
model_repository = "$PWD/models"
[[models]]
name = "fraud_classifier"
versions = [1]
[[endpoints]]
name = "fraud"
served_entities = [{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }]
[[endpoints]]
name = "fraud_logged"
served_entities = [{ name = "champion", entity_name = "fraud_classifier", entity_version = "1" }]
inference_table = { enabled = true }
EOF
"$bin" serve --config "$tmp/sluice.toml" --ort-lib .ort/lib/libonnxruntime.so \
  --http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 --ports-file "$tmp/ports.json" \
  > "$tmp/sluice.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 120); do [ -s "$tmp/ports.json" ] && break; sleep 0.5; done
port() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/ports.json" "$1"; }
http="http://127.0.0.1:$(port http)"
grpc="http://127.0.0.1:$(port grpc)"
payload=tests/fixtures/inputs/fraud_classifier.json

for route in ${ROUTES:-predict v2-binary grpc}; do
  case $route in
    predict) args=(--target predict --url "$http" --endpoint fraud) ;;
    predict-logged) args=(--target predict --url "$http" --endpoint fraud_logged) ;;
    v2-binary) args=(--target v2-binary --url "$http" --model fraud) ;;
    grpc) args=(--target grpc --url "$grpc" --model fraud) ;;
    *) echo "unknown route $route (predict, predict-logged, v2-binary, grpc)" >&2; exit 2 ;;
  esac
  for c in ${CLIENTS:-1 16}; do
    name="$out/$route-c$c"
    # warm up, then sample the gateway for the measured part of the run
    target/release/sluice-loadtest "${args[@]}" --payload "$payload" -c "$c" --duration 2s --warmup 0s --output json > /dev/null
    target/release/sluice-loadtest "${args[@]}" --payload "$payload" -c "$c" --duration "$((secs + 1))s" \
      --warmup 1s --output json > "$name.load.json" &
    load=$!
    sleep 1
    if [ "${CALL_GRAPH:-0}" = 1 ]; then
      perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$name.data" -- sleep "$secs" 2>/dev/null
    else
      perf record -q -F 999 -p "$pid" -o "$name.data" -- sleep "$secs" 2>/dev/null
    fi
    wait $load
    perf report -i "$name.data" --no-children --sort comm --stdio 2>/dev/null | grep -v '^$' > "$name.threads.txt" || true
    perf report -i "$name.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^$' > "$name.dso.txt" || true
    perf report -i "$name.data" --no-children --sort symbol --percent-limit 0.01 --stdio 2>/dev/null \
      | grep -v '^$' | sed 's/ *$//' > "$name.self.txt" || true
    if [ "${CALL_GRAPH:-0}" = 1 ]; then
      perf report -i "$name.data" --children --sort symbol --percent-limit 2 --stdio -g none 2>/dev/null \
        | grep -v '^$' | sed 's/ *$//' > "$name.children.txt" || true
      perf script -i "$name.data" 2>/dev/null | scripts/stackcollapse-perf.py > "$name.folded" || true
    fi
    rm -f "$name.data"
    rps="$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['overall']; print(f\"{r['throughput']['requests_per_s']:.0f} req/s, p50 {r['latency_ms']['p50']*1000:.0f} us\")" "$name.load.json")"
    printf '\n== %s, %s clients: %s\n-- by thread\n' "$route" "$c" "$rps"
    grep -E '^ +[0-9]' "$name.threads.txt" | sed -n 1,6p
    printf -- '-- by symbol (self time, top 25)\n'
    grep -E '^ +[0-9]' "$name.self.txt" | sed -n 1,25p
  done
done
