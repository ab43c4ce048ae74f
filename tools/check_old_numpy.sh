#!/usr/bin/env bash
# Checks that `pip install --no-build-isolation .` works where users build against an older
# NumPy than the one pyproject.toml asks pip for (Debian 12 ships NumPy 1.24): it builds the
# CPU-only extension against NumPy 1.24 headers and runs a little of it with that NumPy.
#
#   tools/check_old_numpy.sh              # NumPy 1.24 (the default)
#   NUMPY_SPEC='numpy==1.23.*' tools/check_old_numpy.sh
#   PYTHON=python3.12 tools/check_old_numpy.sh
#
# Everything happens in a temporary directory (venv, a copy of the sources, the install
# target), removed on exit: the worktree and the calling Python are left as they were.
# Needs pip to reach PyPI (or a local wheel directory through PIP_FIND_LINKS) for NumPy.
# If NumPy is older than setup.py accepts, the build must stop at once with a message naming
# the NumPy it needs; EXPECT=refuse checks that instead (e.g. with NUMPY_SPEC='numpy<1.24').
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
NUMPY_SPEC=${NUMPY_SPEC:-numpy==1.24.*}
EXPECT=${EXPECT:-build}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/codext-oldnumpy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

step() { echo "check_old_numpy: $* ($((SECONDS - start)) s)" >&2; }

step "venv with $NUMPY_SPEC"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "$NUMPY_SPEC" "setuptools>=61" wheel

step "copying the sources"
mkdir "$WORK/src"
# Tracked files and new ones not ignored, as they are on disk (build outputs stay behind).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"

step "pip install --no-build-isolation (CPU only)"
log="$WORK/build.log"
set +e
(cd "$WORK/src" && CODEXT_CUDA=0 "$VPY" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps --target "$WORK/target" . ) >"$log" 2>&1
rc=$?
set -e

if [ "$EXPECT" = refuse ]; then
    if [ $rc -eq 0 ]; then
        echo "check_old_numpy: FAIL: the build succeeded against $NUMPY_SPEC but was expected to refuse" >&2
        exit 1
    fi
    if ! grep -q "codext build: NumPy .* is too old" "$log"; then
        echo "check_old_numpy: FAIL: the build failed without the clear NumPy message:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    grep "codext build: NumPy" "$log" | head -n 1 >&2
    step "OK: refused with a clear message"
    exit 0
fi

if [ $rc -ne 0 ]; then
    echo "check_old_numpy: FAIL: the build against $NUMPY_SPEC failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
fi

step "importing and running it"
(cd "$WORK" && PYTHONPATH="$WORK/target" "$VPY" - <<'EOF'
import numpy as np
import codext
from codext import metrics

info = codext.build_info()
assert not info["cuda"], info
pred = np.zeros((1, 16, 16), np.uint8)
gt = np.zeros((1, 16, 16), np.uint8)
pred[0, 4:12, 4:12] = 255
gt[0, 4:12, 4:12] = 255
scores = metrics.evaluate(list(pred), list(gt))
assert abs(scores["mae"]) < 1e-12 and abs(scores["iou"] - 1.0) < 1e-12, scores
print(f"check_old_numpy: NumPy {np.__version__}, built for {info['numpy_target_api']}, "
      f"codext from {codext.__file__.rsplit('/', 2)[-2]}/, metrics ok")
EOF
)
step "OK"
