#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60), one target
# at a time with a single libFuzzer job, then reports executions, coverage
# and findings per target. Exits 1 if any target found a crash, hang or OOM.
#
#   fuzz/run.sh [SECONDS] [TARGET...]       e.g. fuzz/run.sh 20 wire_decode policy_parse
#
# Works with only stable Rust and rustup: cargo-fuzz is installed if
# missing, and RUSTC_BOOTSTRAP=1 lets the stable compiler accept the -Z
# flags (sanitizer, coverage) that cargo-fuzz passes.
#
# Each run fuzzes a temporary copy of the checked-in corpus (fuzz/corpus/),
# so the seeds stay as they are. Environment:
#   FUZZ_RUNS=N     also stop each target after N executions (-runs=N)
#   FUZZ_MERGE=1    merge inputs that add coverage back into fuzz/corpus/
#   FUZZ_WORK=DIR   working corpora and logs in DIR (kept) instead of a temp dir
#   FUZZ_ARGS=...   extra libFuzzer flags for every target
# Crashes go to fuzz/artifacts/<target>/ (see fuzz/README.md to minimise one).
set -euo pipefail
cd "$(dirname "$0")"

ALL=(wire_decode note_parse_verify checkpoint_parse tlog_proof_verify policy_parse
  evidence_check merkle_proofs consensus_core consensus_sim witness_add_checkpoint tiles_parse)

secs=60
if [ $# -gt 0 ]; then
  case $1 in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
    *) secs=$1; shift ;;
  esac
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  if [ ! -f "fuzz_targets/$t.rs" ]; then
    echo "unknown target $t (targets: ${ALL[*]})" >&2
    exit 2
  fi
done

# Per-target libFuzzer limits: input size and what counts as a hang.
limits() {
  case $1 in
    consensus_core) echo "-max_len=4096 -timeout=60" ;;
    # A scenario is a few dozen bytes; full length from the start.
    consensus_sim) echo "-max_len=64 -len_control=0 -timeout=120" ;;
    merkle_proofs) echo "-max_len=2048 -timeout=30" ;;
    *) echo "-max_len=16384 -timeout=30" ;;
  esac
}

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

started=$(date +%s)
if [ ${#targets[@]} -eq ${#ALL[@]} ]; then
  cargo fuzz build
else
  for t in "${targets[@]}"; do cargo fuzz build "$t"; done
fi
built=$(date +%s)

work=${FUZZ_WORK:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/corpus" "$work/logs"

failed=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t" "$work/corpus/$t"
  [ -d "corpus/$t" ] && cp -R "corpus/$t/." "$work/corpus/$t/"
  # Findings: crash-, timeout-, oom- and leak- files (not slow-unit- notes).
  count() { ls "artifacts/$t" | grep -cv '^slow-unit-' || true; }
  before=$(count)
  log="$work/logs/$t.log"
  t0=$(date +%s)
  status=ok
  # shellcheck disable=SC2046 # the limits are separate words
  if ! cargo fuzz run "$t" "$work/corpus/$t" -- -max_total_time="$secs" \
    ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -print_final_stats=1 $(limits "$t") ${FUZZ_ARGS:-} \
    >"$log" 2>&1; then
    status=FAILED
    failed=1
  fi
  t1=$(date +%s)
  after=$(count)
  findings=$((after - before))
  [ "$findings" -eq 0 ] || { status=FAILED; failed=1; }
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line: "#N DONE cov: X ft: Y corp: Z/..." (or NEW/pulse).
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  rows+=("$(printf '%-18s %-7s %12s %8s %7s %7s %6s %6s %8s' "$t" "$status" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$((t1 - t0))" "$findings")")
  if [ "$status" != ok ]; then
    echo "--- $t failed; end of $log:" >&2
    tail -n 40 "$log" >&2
    ls "artifacts/$t" >&2
  fi
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ "$status" = ok ]; then
    mkdir -p "corpus/$t"
    # shellcheck disable=SC2046
    cargo fuzz run "$t" "corpus/$t" "$work/corpus/$t" -- -merge=1 $(limits "$t") \
      >"$work/logs/$t.merge.log" 2>&1
  fi
done

echo
echo "fuzz/run.sh: ${secs}s per target; build $((built - started))s, total $(($(date +%s) - started))s"
printf '%-18s %-7s %12s %8s %7s %7s %6s %6s %8s\n' target result executions exec/s cov ft corpus secs findings
printf '%s\n' "${rows[@]}"
[ -z "${FUZZ_WORK:-}" ] || echo "logs and working corpora: $work"
exit "$failed"
