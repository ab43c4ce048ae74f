#!/usr/bin/env bash
# Prints the path of a Python interpreter that can import torch, timm, py_sod_metrics
# (pysodmetrics 1.6.2) and safetensors: the reference side of our fixtures and benchmarks.
# Nothing else in the project needs it (building and testing codext need only NumPy,
# pytest and Pillow).
#
#   PY=$(tools/reference-python.sh) && OMP_NUM_THREADS=2 PYTHONPATH=. $PY tools/make_reference.py
#
# How: a venv that sees the system's site-packages, on a Debian/Ubuntu machine. torch and
# torchvision come from the distribution's CPU-only packages (python3-torch: a few hundred
# MB, instead of the several-GB CUDA wheels from PyPI), together with the libraries timm and
# pysodmetrics import (SciPy, OpenCV, scikit-image, PyYAML). timm, pysodmetrics and
# safetensors then come from PyPI with --no-deps, so pip never pulls a second torch.
# The first call installs (needs root for apt-get, and network); later calls only check
# and print. Set OMP_NUM_THREADS when running it: Debian's torch otherwise uses one thread.
#
# Environment:
#   CODEXT_REFERENCE_VENV   where the venv lives (default: ~/.cache/codext-reference)
#   CODEXT_REFERENCE_SYSTEM_PYTHON   the system interpreter with the Debian packages
#                           (default: /usr/bin/python3)
set -euo pipefail

venv=${CODEXT_REFERENCE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/codext-reference}
system_python=${CODEXT_REFERENCE_SYSTEM_PYTHON:-/usr/bin/python3}
debian_packages=(python3-torch python3-torchvision python3-venv python3-scipy python3-opencv
                 python3-skimage python3-sklearn python3-yaml libopenblas0-pthread)
pypi_packages=(timm pysodmetrics==1.6.2 safetensors)

say() { echo "reference-python: $*" >&2; }

usable() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c 'import torch, timm, py_sod_metrics, safetensors' >/dev/null 2>&1
}

if usable; then
    echo "$venv/bin/python"
    exit 0
fi

if ! "$system_python" -c 'import torch' >/dev/null 2>&1; then
    say "installing Debian's CPU torch and friends: ${debian_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get install -y -q --no-install-recommends "${debian_packages[@]}" >&2; }
    if ! apt_install; then
        apt-get update -q >&2 || true
        apt_install || {
            say "apt-get failed; install these packages (as root) and run again: ${debian_packages[*]}"
            exit 1
        }
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$system_python" -m venv --system-site-packages "$venv" >&2
fi
say "pip install --no-deps ${pypi_packages[*]}"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${pypi_packages[@]}" >&2

if ! usable; then
    say "$venv/bin/python still cannot import torch, timm, py_sod_metrics and safetensors:"
    "$venv/bin/python" -c 'import torch, timm, py_sod_metrics, safetensors' >&2 || true
    exit 1
fi
echo "$venv/bin/python"
