#!/usr/bin/env bash
# Builds codext as it ships (CPU only, without CODEXT_TEST_BUILD) into a temporary copy of
# the source tree and checks that its codext._C holds no test-only code and that
# codext._testing is absent (tests/test_build.py::test_shipped_build_has_no_test_code).
# Usage: tools/check_shipped.sh   (from anywhere; needs git, a C compiler and numpy)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# the tracked and new files of the tree, not its build outputs
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -xf - -C "$work"
rm -f "$work"/codext/*.so
(cd "$work" && env -u CODEXT_TEST_BUILD CODEXT_CUDA=0 python3 setup.py -q build_ext --inplace >"$work/build.log" 2>&1) || {
    cat "$work/build.log"
    echo "check_shipped: the shipped build failed" >&2
    exit 1
}
cd "$root"
CODEXT_SHIPPED_BUILD="$work" python3 -m pytest -q -p no:cacheprovider \
    tests/test_build.py::test_shipped_build_has_no_test_code
