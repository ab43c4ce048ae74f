#!/usr/bin/env bash
# Fuzzes the readers of what a user can hand codext. C readers with libFuzzer
# (clang -fsanitize=fuzzer,address,undefined):
#   json         csrc/io/json.c: the JSON reader (every safetensors header goes through it)
#   safetensors  csrc/io/safetensors.c: header + data validation, checksums, conversions
# Python entry points with atheris (pip install atheris), against the extension Python imports:
#   images       image and mask files through the loader's decoding and the C resizes
#   datacache    a dataset cache entry (meta.json + arrays) as codext.data.load reads it
#   rundir       run metadata: state and weights files, a run folder's cross-checks
#   cli          command lines, run in-process up to where work would start
# Harnesses, seed corpora (tools/make_fuzz_seeds.py, tools/make_pyfuzz_seeds.py) and
# regression cases: tests/fuzz/.
#
#   tools/fuzz.sh ci               replay seeds and regressions, then each C reader for
#                                  200k executions or 60 s and each Python reader for
#                                  200k executions or 12 s, whichever comes first
#   tools/fuzz.sh long [SECONDS] [RUNS]   each reader for SECONDS (default 3600) or RUNS
#                                  executions (default 10000000), whichever comes first
#   tools/fuzz.sh replay           only the seeds, regression cases and the working corpus
#                                  ($FUZZ_BUILD/corpus/<reader>, what earlier runs kept)
# Environment: FUZZ_READERS (default: all six), CLANG (default clang), FUZZ_BUILD (default
# build/fuzz; the working corpus, logs and any crash files go there), FUZZ_PYTHON (default
# python3), FUZZ_PY_SECONDS (the ci budget of a Python reader, default 12), FUZZ_PRELOAD
# (LD_PRELOAD for the Python harnesses only). The Python harnesses import codext as Python
# finds it (PYTHONPATH, else this tree). Under a sanitizer build (gcc's libasan in
# FUZZ_PRELOAD) atheris runs but is coverage-blind: libasan's weak __sanitizer_cov_*
# stubs take the calls meant for atheris' libFuzzer. So CI fuzzes the Python readers
# against the plain build and replays everything they kept under ASan + UBSan (.ci/run).
# Exits non-zero on any crash, hang (> 10 s for one input), leak (C readers), sanitizer
# report or broken invariant; the crashing input is saved as
# $FUZZ_BUILD/artifacts/<reader>/crash-* (add it to tests/fuzz/regressions/<reader>/ once fixed).
set -euo pipefail
shopt -s nullglob
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_BUILD=${FUZZ_BUILD:-$ROOT/build/fuzz}
mkdir -p "$FUZZ_BUILD"
export FUZZ_BUILD=$(cd "$FUZZ_BUILD" && pwd)  # absolute: the cli harness works in a scratch folder
MODE=${1:-ci}
PY_READERS=" images datacache rundir cli "
case "$MODE" in
  ci) SECONDS_EACH=60; PY_SECONDS=${FUZZ_PY_SECONDS:-12}; RUNS=200000 ;;
  long) SECONDS_EACH=${2:-3600}; PY_SECONDS=$SECONDS_EACH; RUNS=${3:-10000000} ;;
  replay) SECONDS_EACH=0; PY_SECONDS=0; RUNS=0 ;;
  *) echo "usage: tools/fuzz.sh ci | long [SECONDS] [RUNS] | replay" >&2; exit 2 ;;
esac

READERS=${FUZZ_READERS:-json safetensors images datacache rundir cli}
start=$(date +%s)
if [[ " $READERS " == *" json "* || " $READERS " == *" safetensors "* ]]; then
  "$ROOT/tests/fuzz/build.sh" "${CLANG:-clang}"
  echo "fuzz: build took $(( $(date +%s) - start )) s"
fi

status=0
for reader in $READERS; do
  if [[ "$PY_READERS" == *" $reader "* ]]; then
    # atheris: the harness is the program; no malloc hooks without a sanitizer runtime
    bin=("${FUZZ_PYTHON:-python3}" "$ROOT/tests/fuzz/fuzz_$reader.py")
    [ -n "${FUZZ_PRELOAD:-}" ] && bin=(env LD_PRELOAD="$FUZZ_PRELOAD" "${bin[@]}")
    COMMON=(-timeout=10 -rss_limit_mb=3072 -max_len=16384 -print_final_stats=1)
    budget=$PY_SECONDS
  else
    bin=("$FUZZ_BUILD/fuzz_$reader")
    COMMON=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=8192 -print_final_stats=1)
    budget=$SECONDS_EACH
  fi
  seeds="$ROOT/tests/fuzz/corpus/$reader"
  regressions="$ROOT/tests/fuzz/regressions/$reader"
  artifacts="$FUZZ_BUILD/artifacts/$reader/"
  work="$FUZZ_BUILD/corpus/$reader"
  mkdir -p "$artifacts" "$work"
  t0=$(date +%s)
  # 1. Every committed input once (seeds and regression cases), as plain runs; replay mode
  # adds the working corpus of earlier runs (CI replays it under the sanitizers).
  inputs=("$seeds"/*)
  inputs+=("$regressions"/*)
  [ "$MODE" = replay ] && inputs+=("$work"/*)
  if ! "${bin[@]}" "${COMMON[@]}" -artifact_prefix="$artifacts" "${inputs[@]}" > "$FUZZ_BUILD/replay_$reader.log" 2>&1; then
    echo "fuzz: $reader: a committed input fails; see $FUZZ_BUILD/replay_$reader.log" >&2
    tail -n 30 "$FUZZ_BUILD/replay_$reader.log" >&2
    status=1
    continue
  fi
  echo "fuzz: $reader: replayed ${#inputs[@]} inputs (committed$([ "$MODE" = replay ] && echo " and kept"))"
  [ "$MODE" = replay ] && continue
  # 2. Fuzzing: new inputs go to the working corpus, never into tests/.
  log="$FUZZ_BUILD/fuzz_$reader.$MODE.log"
  set +e
  dict=()
  [ -f "$ROOT/tests/fuzz/$reader.dict" ] && dict=(-dict="$ROOT/tests/fuzz/$reader.dict")
  "${bin[@]}" "${COMMON[@]}" "${dict[@]}" -artifact_prefix="$artifacts" \
    -max_total_time="$budget" -runs="$RUNS" "$work" "$seeds" > "$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $reader: $runs executions in $(( $(date +%s) - t0 )) s, exit $rc (log: $log)"
  if [ $rc -ne 0 ]; then
    grep -E -A 12 "ERROR|SUMMARY|broken promise|Uncaught Python exception|Test unit written" "$log" | head -n 40 >&2
    status=1
  fi
done
echo "fuzz: total $(( $(date +%s) - start )) s"
exit $status
