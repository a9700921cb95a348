#!/usr/bin/env bash
# Measures appends while one replica of four is down (docs/performance.md,
# session 11): starts a fresh 4-replica cluster on 127.0.0.1, commits a
# first append, kills replica 3 with SIGKILL, then runs `bftlog bench`
# against the other three. Extra arguments go to the bench.
#
#   docs/perf/dead-replica.sh [--rate 5000 --seconds 10 ...]
#
# Environment: BFTLOG=path/to/bftlog (default: build target/release/bftlog),
# BASE_PORT (default 22000; replicas use BASE_PORT..BASE_PORT+3).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${BFTLOG:-}" ]; then
  cargo build --release --bin bftlog
  BFTLOG=target/release/bftlog
fi
port=${BASE_PORT:-22000}
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
"$BFTLOG" init --dir "$dir" --origin example.com/dead-replica --base-port "$port" >/dev/null
for i in 0 1 2 3; do
  RUST_LOG=warn "$BFTLOG" serve --config "$dir/replica-$i.toml" 2>"$dir/replica-$i.log" &
  pids+=($!)
done
# One short run to see the cluster commit with all four.
"$BFTLOG" bench --cluster "$dir/cluster.toml" --rate 2000 --seconds 1 >/dev/null
kill -9 "${pids[3]}"
wait "${pids[3]}" 2>/dev/null || true
sleep 0.5
if [ $# -eq 0 ]; then
  set -- --rate 5000 --seconds 10
fi
"$BFTLOG" bench --cluster "$dir/cluster.toml" "$@"
