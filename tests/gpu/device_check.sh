#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU: builds codext with CUDA for the GPU's
# architecture (printing ptxas's resource report of the kernels), runs the GPU tests, then
# the training-step benchmark at the recipe's size (with the PyTorch twin when importable).
# Runs from any directory. The whole script stays under 8 minutes: every step's timeout
# is cut to what is left of a 470 s budget (CODEXT_CHECK_BUDGET), and a step with no time
# left is reported as such. A table of the steps (status, seconds) is printed last.
# Exit status: 0 when every step passed, else 1 (2: not a GPU machine).
#
#   bash tests/gpu/device_check.sh              # build + tests/gpu + tests/test_build.py + bench
#   CODEXT_SANITIZE=1 bash tests/gpu/device_check.sh   # also the GPU tests under
#                                               # compute-sanitizer memcheck (slow; small cases)
#   PYTHON=/path/to/python bash tests/gpu/device_check.sh
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
began=$(date +%s)
budget=${CODEXT_CHECK_BUDGET:-470}
summary=()
section() { printf '\n======== %s ========\n' "$*"; }
fail() { echo "FAILED: $*"; [ "$status" -ne 0 ] || status=1; }
# step NAME LIMIT COMMAND...: runs COMMAND under min(LIMIT, what the budget has left less
# RESERVE seconds kept for the steps after it), records "NAME | passed/FAILED/TIMED OUT/no
# time left | seconds" for the closing table
RESERVE=0
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( budget - ($(date +%s) - began) - 5 - RESERVE ))
    section "$name"
    if [ "$left" -lt 10 ]; then
        echo "no time left in the ${budget} s budget"; summary+=("$name|no time left|0"); fail "$name"; return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0; t0=$(date +%s)
    timeout "$limit" "$@"
    local rc=$? word=passed
    if [ $rc -eq 124 ]; then word="TIMED OUT (${limit} s)"; elif [ $rc -ne 0 ]; then word=FAILED; fi
    summary+=("$name|$word|$(( $(date +%s) - t0 ))")
    [ $rc -eq 0 ] || fail "$name"
}

section "GPU"
if ! command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi not found: this is not a GPU machine"; exit 2
fi
nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv
archs=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d ' .' | sort -u | paste -sd';')
[ -n "$archs" ] || { echo "could not read the compute capability"; exit 2; }
echo "architectures: $archs"

section "toolchain"
command -v nvcc && nvcc --version | tail -2
"$PY" -c "import sys, numpy, pytest; print(sys.version.split()[0], 'numpy', numpy.__version__, 'pytest', pytest.__version__)" \
    || { echo "$PY lacks numpy or pytest"; exit 2; }
"$PY" - <<'EOF'
import glob, os, site
# where setup.py looks: CUDNN_HOME / NCCL_HOME, the toolkit, pip's nvidia-* wheels, /usr
roots = [os.environ.get(k) for k in ("CUDNN_HOME", "NCCL_HOME")] + [os.environ.get("CUDA_HOME", "/usr/local/cuda")]
roots += [d for s in site.getsitepackages() for d in glob.glob(os.path.join(s, "nvidia", "*"))] + ["/usr", "/usr/local"]
for header in ("cudnn_version.h", "nccl.h"):
    hits = [p for r in roots if r for p in (os.path.join(r, "include", header),
            os.path.join(r, "include", "x86_64-linux-gnu", header)) if os.path.exists(p)]
    print(f"{header}: {hits or 'NOT FOUND (set CUDNN_HOME / NCCL_HOME)'}")
EOF

rm -rf build codext/_C*.so codext/_testing*.so codext/libcodext_cuda.so && mkdir -p build
# the test build: tests/gpu runs the op-test runner of codext._testing
build() {
    CODEXT_TEST_BUILD=1 CODEXT_CUDA=1 CODEXT_CUDA_ARCHS="$archs" \
        CODEXT_CUDA_RESOURCE_REPORT=build/ptxas_resources.txt \
        "$PY" setup.py build_ext --inplace > build/device_check_build.log 2>&1 \
        && grep "codext build" build/device_check_build.log \
        || { tail -40 build/device_check_build.log; false; }
}
export -f build; export PY archs
step "build (CUDA for $archs)" 240 bash -c build
if [ "$status" -ne 0 ]; then
    printf '\n%-44s %-22s %s\n' step result seconds
    for row in "${summary[@]}"; do IFS='|' read -r a b c <<<"$row"; printf '%-44s %-22s %s\n' "$a" "$b" "$c"; done
    exit 1
fi

# registers, spills, stack and static shared memory of every kernel for this GPU; no
# spills in hot kernels, shared memory within T4's 48 KiB (docs/cuda-build.md)
step "kernel resources (ptxas)" 30 "$PY" tools/ptxas_usage.py build/ptxas_resources.txt

read -r -d '' loader_check <<'EOF'
import codext
from codext import _C
print(codext.build_info())
if not hasattr(_C, "cuda_backend_available"):
    raise SystemExit("codext._C has no cuda_backend_available(): the GPU tests cannot run "
                     "(add the binding to csrc/python/module.c)")
ok, reason = _C.cuda_backend_available()
print(ok, reason)
if not ok:
    raise SystemExit("the CUDA backend is not usable here, so the GPU tests will all skip")
EOF
step "build info and loader" 60 "$PY" -c "$loader_check"

# the tests may not eat the benchmark's time: 160 s stay for it and the build test
RESERVE=160
step "pytest tests/gpu" 240 "$PY" -m pytest tests/gpu -q -rs -p no:cacheprovider --durations=10
RESERVE=130
step "pytest tests/test_build.py" 30 env CODEXT_EXPECT_CUDA=1 "$PY" -m pytest tests/test_build.py -q -rs -p no:cacheprovider

if [ "${CODEXT_SANITIZE:-0}" = "1" ]; then
    section "compute-sanitizer memcheck (small cases)"
    if command -v compute-sanitizer >/dev/null; then
        step "compute-sanitizer memcheck" 240 compute-sanitizer --tool memcheck --error-exitcode 97 \
            "$PY" -m pytest tests/gpu -q -x -p no:cacheprovider -k "not big and not many_rows"
    else
        echo "compute-sanitizer not found: skipped"
    fi
fi

RESERVE=0
# the issue's benchmark: the recipe's model and size, fp16 (a T4's way) and amp (bf16 from
# sm_80), and the PyTorch twin when torch and timm import here
twin=()
"$PY" -c "import torch, timm" 2>/dev/null && twin=(--twin --twin-compile) || echo "no torch + timm here: the twin is not timed"
step "bench/train_step.py (edgenext_base 352x352 batch 32)" 150 "$PY" bench/train_step.py \
    --backbone edgenext_base --decoder-dim 64 --experts 7 --img-size 352 --batch 32 \
    --steps 3 --epochs 2 --device cuda --precisions fp16,amp "${twin[@]}"

printf '\n%-56s %-22s %s\n' step result seconds
for row in "${summary[@]}"; do
    IFS='|' read -r a b c <<<"$row"
    printf '%-56s %-22s %s\n' "$a" "$b" "$c"
done
echo "total $(( $(date +%s) - began )) s of the ${budget} s budget on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%Y-%m-%d)"
[ "$status" -eq 0 ] && echo "device check passed" || echo "device check FAILED"
exit "$status"
