#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU: builds codext with CUDA for the GPU's
# architecture (printing ptxas's resource report of the kernels), runs the GPU tests, then
# the backbone and training-step benchmarks.
# Runs from any directory; the whole script stays under 8 minutes (each step has its
# own timeout). Exit status: the first failing step's.
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
section() { printf '\n======== %s ========\n' "$*"; }
fail() { echo "FAILED: $*"; [ "$status" -ne 0 ] || status=1; }

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

section "build (CODEXT_TEST_BUILD=1 CODEXT_CUDA=1 CODEXT_CUDA_ARCHS=$archs)"
start=$(date +%s)
rm -rf build codext/_C*.so codext/_testing*.so codext/libcodext_cuda.so && mkdir -p build
# the test build: tests/gpu runs the op-test runner of codext._testing
if CODEXT_TEST_BUILD=1 CODEXT_CUDA=1 CODEXT_CUDA_ARCHS="$archs" \
    CODEXT_CUDA_RESOURCE_REPORT=build/ptxas_resources.txt \
    timeout 300 "$PY" setup.py build_ext --inplace > build/device_check_build.log 2>&1; then
    grep "codext build" build/device_check_build.log
    echo "built in $(( $(date +%s) - start )) s"
else
    tail -40 build/device_check_build.log
    echo "FAILED: the build (log: build/device_check_build.log)"; exit 1
fi

section "kernel resources (ptxas, $archs)"
# registers, spills, stack and static shared memory of every kernel for this GPU; no
# spills in hot kernels, shared memory within T4's 48 KiB (docs/cuda-build.md)
"$PY" tools/ptxas_usage.py build/ptxas_resources.txt || fail "kernel resources"

section "build info and loader"
"$PY" - <<'EOF' || fail "build info"
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

section "pytest tests/gpu"
timeout 420 "$PY" -m pytest tests/gpu -q -rs -p no:cacheprovider || fail "tests/gpu"

section "pytest tests/test_build.py (CODEXT_EXPECT_CUDA=1)"
CODEXT_EXPECT_CUDA=1 timeout 60 "$PY" -m pytest tests/test_build.py -q -rs -p no:cacheprovider || fail "tests/test_build.py"

if [ "${CODEXT_SANITIZE:-0}" = "1" ]; then
    section "compute-sanitizer memcheck (small cases)"
    if command -v compute-sanitizer >/dev/null; then
        timeout 240 compute-sanitizer --tool memcheck --error-exitcode 97 \
            "$PY" -m pytest tests/gpu -q -x -p no:cacheprovider -k "not big and not many_rows" \
            || fail "compute-sanitizer"
    else
        echo "compute-sanitizer not found: skipped"
    fi
fi

section "bench/backbone.py --device cuda"
if [ -f bench/backbone.py ]; then
    timeout 120 "$PY" bench/backbone.py --device cuda || fail "bench/backbone.py"
else
    echo "bench/backbone.py does not exist yet: skipped"
fi

section "bench/train_step.py (a whole training step: GPU fp32 and amp, the PyTorch twin)"
# the twin needs torch and timm: with them in this Python it runs beside codext, else not
twin=()
"$PY" -c "import torch, timm" 2>/dev/null && twin=(--twin) || echo "no torch + timm here: the twin is not timed"
timeout 240 "$PY" bench/train_step.py --backbone edgenext_small --img-size 256 --batch 16 \
    --steps 3 --epochs 2 --device cuda "${twin[@]}" || fail "bench/train_step.py"

section "result"
[ "$status" -eq 0 ] && echo "device check passed" || echo "device check FAILED"
exit "$status"
