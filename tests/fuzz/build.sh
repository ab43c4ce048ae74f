#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ (clang with -fsanitize=fuzzer,address,undefined)
# into $FUZZ_BUILD (default: build/fuzz). Usage: tests/fuzz/build.sh [clang]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CC=${1:-${CLANG:-clang}}
OUT=${FUZZ_BUILD:-$ROOT/build/fuzz}
mkdir -p "$OUT"
FLAGS=(-std=c11 -g -O2 -D_GNU_SOURCE -I"$ROOT/csrc" -Wall -Wextra -Werror -pthread
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -fno-wrapv)
IO=("$ROOT/csrc/io/json.c")
ST=("$ROOT/csrc/io/json.c" "$ROOT/csrc/io/safetensors.c" "$ROOT/csrc/io/safetensors_read.c" "$ROOT/csrc/io/crc32c.c" "$ROOT/csrc/core/error.c")
"$CC" "${FLAGS[@]}" "$ROOT/tests/fuzz/fuzz_json.c" "${IO[@]}" -o "$OUT/fuzz_json"
"$CC" "${FLAGS[@]}" "$ROOT/tests/fuzz/fuzz_safetensors.c" "${ST[@]}" -o "$OUT/fuzz_safetensors"
echo "built $OUT/fuzz_json $OUT/fuzz_safetensors"
