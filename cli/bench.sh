#!/usr/bin/env bash
# aitbc-cli benchmark: wall time from CLI start to commit of `marketplace --action bid` (a signed,
# escrowed transaction: keystore unlock, nonce and fee lookup, submit, wait for the block) over
# RUNS runs on a local devnet, then the built-in stress test. Figures go to docs/PERFORMANCE.md.
#
#   cargo build --release --workspace --bins
#   cli/bench.sh                      # RUNS=100 VALIDATORS=4 BLOCK_MS=500 by default
set -euo pipefail

BIN=${BIN:-${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release}
RUNS=${RUNS:-100}
VALIDATORS=${VALIDATORS:-4}
BLOCK_MS=${BLOCK_MS:-500}
CLI="$BIN/aitbc-cli"
[ -x "$CLI" ] || { echo "no $CLI: run \`cargo build --release --workspace --bins\` first" >&2; exit 1; }

AITBC_HOME=$(mktemp -d)
export AITBC_HOME AITBC_PASSWORD=bench-password
NET="$AITBC_HOME/net"
cleanup() {
  local rc=$?
  "$CLI" devnet down --dir "$NET" >/dev/null 2>&1 || true
  if [ "$rc" -eq 0 ]; then rm -rf "$AITBC_HOME"; else echo "bench failed; devnet logs kept in $NET" >&2; fi
}
trap cleanup EXIT

"$CLI" devnet up --detach --validators "$VALIDATORS" --agents 1 --block-time-ms "$BLOCK_MS" --dir "$NET" >/dev/null
"$CLI" create --name provider >/dev/null
"$CLI" create --name customer >/dev/null
"$CLI" send --from genesis-ops --to provider --amount 100 >/dev/null
"$CLI" send --from genesis-ops --to customer --amount 100000 >/dev/null
SERVICE=$("$CLI" marketplace --action create --name "Bench Service" --type ai-inference --price 1 --wallet provider \
  | grep service_id | cut -d" " -f2)

LAT=$(mktemp)
for _ in $(seq 1 "$RUNS"); do
  start=$(date +%s%N)
  "$CLI" marketplace --action bid --service-id "$SERVICE" --amount 1 --wallet customer | grep -q "^block: "
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 )) >> "$LAT"
done
sort -n "$LAT" | awk -v runs="$RUNS" -v bt="$BLOCK_MS" -v v="$VALIDATORS" '
  { a[NR] = $1; sum += $1 }
  END {
    p50 = a[int((NR * 50 + 99) / 100)]; p99 = a[int((NR * 99 + 99) / 100)]
    printf "bid CLI start -> commit over %d runs (%d validators, %d ms blocks): p50 %d ms, p99 %d ms, mean %.0f ms, max %d ms (p99 target < %d ms)\n",
      runs, v, bt, p50, p99, sum / NR, a[NR], 2 * bt
  }'
rm -f "$LAT"
echo "stress-test --transactions 1000 --concurrent 50:"
"$CLI" marketplace --action stress-test --transactions 1000 --concurrent 50 --wallet genesis-ops
