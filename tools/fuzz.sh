#!/usr/bin/env bash
# Fuzzes the C readers of user files with libFuzzer (clang -fsanitize=fuzzer,address,undefined):
#   fuzz_json         csrc/io/json.c: the JSON reader (every safetensors header goes through it)
#   fuzz_safetensors  csrc/io/safetensors.c: header + data validation, checksums, conversions
# Harnesses, seed corpora (tools/make_fuzz_seeds.py) and regression cases: tests/fuzz/.
#
#   tools/fuzz.sh ci               replay seeds and regressions, then each reader for
#                                  200k executions or 60 s, whichever comes first (~20 s)
#   tools/fuzz.sh long [SECONDS] [RUNS]   each reader for SECONDS (default 3600) or RUNS
#                                  executions (default 10000000), whichever comes first
#   tools/fuzz.sh replay           only the seeds and regression cases
# Environment: FUZZ_READERS (default "json safetensors"), CLANG (default clang),
# FUZZ_BUILD (default build/fuzz; the working corpus, logs and any crash files go there). Exits non-zero on any crash, hang (> 10 s for one
# input), leak, sanitizer report or broken invariant; the crashing input is saved as
# $FUZZ_BUILD/artifacts/<reader>/crash-* (add it to tests/fuzz/regressions/<reader>/ once fixed).
set -euo pipefail
shopt -s nullglob
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export FUZZ_BUILD=${FUZZ_BUILD:-$ROOT/build/fuzz}
MODE=${1:-ci}
case "$MODE" in
  ci) SECONDS_EACH=60; RUNS=200000 ;;
  long) SECONDS_EACH=${2:-3600}; RUNS=${3:-10000000} ;;
  replay) ;;
  *) echo "usage: tools/fuzz.sh ci | long [SECONDS] [RUNS] | replay" >&2; exit 2 ;;
esac

start=$(date +%s)
"$ROOT/tests/fuzz/build.sh" "${CLANG:-clang}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

COMMON=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=8192 -print_final_stats=1)
status=0
for reader in ${FUZZ_READERS:-json safetensors}; do
  bin="$FUZZ_BUILD/fuzz_$reader"
  seeds="$ROOT/tests/fuzz/corpus/$reader"
  regressions="$ROOT/tests/fuzz/regressions/$reader"
  artifacts="$FUZZ_BUILD/artifacts/$reader/"
  work="$FUZZ_BUILD/corpus/$reader"
  mkdir -p "$artifacts" "$work"
  t0=$(date +%s)
  # 1. Every committed input once (seeds and regression cases), as plain runs.
  inputs=("$seeds"/*)
  inputs+=("$regressions"/*)
  if ! "$bin" "${COMMON[@]}" -artifact_prefix="$artifacts" "${inputs[@]}" > "$FUZZ_BUILD/replay_$reader.log" 2>&1; then
    echo "fuzz: $reader: a committed input fails; see $FUZZ_BUILD/replay_$reader.log" >&2
    tail -n 30 "$FUZZ_BUILD/replay_$reader.log" >&2
    status=1
    continue
  fi
  echo "fuzz: $reader: replayed ${#inputs[@]} committed inputs"
  [ "$MODE" = replay ] && continue
  # 2. Fuzzing: new inputs go to the working corpus, never into tests/.
  log="$FUZZ_BUILD/fuzz_$reader.$MODE.log"
  set +e
  "$bin" "${COMMON[@]}" -dict="$ROOT/tests/fuzz/$reader.dict" -artifact_prefix="$artifacts" \
    -max_total_time="$SECONDS_EACH" -runs="$RUNS" "$work" "$seeds" > "$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $reader: $runs executions in $(( $(date +%s) - t0 )) s, exit $rc (log: $log)"
  if [ $rc -ne 0 ]; then
    grep -E "ERROR|SUMMARY|broken promise|Test unit written" "$log" | head -n 20 >&2
    status=1
  fi
done
echo "fuzz: total $(( $(date +%s) - start )) s"
exit $status
