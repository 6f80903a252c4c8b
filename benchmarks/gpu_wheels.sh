#!/usr/bin/env bash
# Wheels a lent GPU machine may lack, for benchmarks/gpu_check.sh to install offline there.
#   bash benchmarks/gpu_wheels.sh            # writes runs/gpu-wheels (ignored; about 40 MB)
# Then carry runs/gpu-wheels with the repository. The machine's Python version is not known in
# advance, so Pillow is fetched for CPython 3.10 to 3.13; the rest are pure Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=runs/gpu-wheels
mkdir -p "$DEST"
for version in 3.10 3.11 3.12 3.13; do
  "$PY" -m pip download --quiet --only-binary=:all: --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DEST" pillow braceexpand pytest exceptiongroup tomli typing_extensions
done
du -sh "$DEST"
