#!/usr/bin/env bash
# Runs the `bftlog bench` series behind docs/performance.md and writes one
# JSON report per line to docs/perf/results.jsonl (then: python3
# docs/perf/plot.py). Takes about 3 minutes on the 2-core reference machine.
#
#   docs/perf/sweep.sh [SECONDS]      # seconds per point, default 10
#
# Each point starts its own fresh local cluster of `bftlog serve` processes.
# Environment: BENCH_BEFORE_POINT="cmd" runs cmd before each point and
# BENCH_AFTER_POINT="cmd" after it (used here to pause a fuzzer sharing the
# machine, so that every figure is measured on an otherwise idle machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
cargo build --release --bin bftlog
bftlog=target/release/bftlog
out=docs/perf/results.jsonl
: >"$out"
point() {
  local series=$1
  shift
  ${BENCH_BEFORE_POINT:-true}
  "$bftlog" bench --json --seconds "$secs" "$@" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["series"]=sys.argv[1]; r["args"]=sys.argv[2:]; print(json.dumps(r))' "$series" "$@" >>"$out"
  ${BENCH_AFTER_POINT:-true}
  tail -n 1 "$out" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["series"], r["args"], "%.0f entries/s" % r.get("entries_per_second", 0), "p50 %.1f ms p99 %.1f ms" % (r["latency_ms"]["p50"], r["latency_ms"]["p99"]) if "latency_ms" in r else "")'
}
# Throughput against concurrent clients (closed loop, 256 entries of 256 B).
for clients in 1 4 16 64 128; do
  point clients --clients "$clients"
done
# The cost of BFT: the same load on one replica.
point single --replicas 1 --clients 64
# Latency at a fixed offered load (open loop, 16-entry appends).
for rate in 2000 6000 12500 20000 25000; do
  point rate --rate "$rate" --clients 64 --batch 16
done
echo "wrote $out"
