#!/usr/bin/env bash
# Run HERE, before a GPU run: fills .gpu/ (git-ignored) with what the device machine lacks.
# The device image has torch, transformers, safetensors, huggingface-hub and OpenCV, but no
# diffusers, PyAV or MediaPipe (see /work/.library/device/KINDS.md): diffusers travels as a
# Python 3.12 wheel, and the clip's frames, landmarks and speech travel decoded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels
diffusers=$("$PY" -c 'import diffusers; print(diffusers.__version__)')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels "diffusers==$diffusers" importlib_metadata zipp
"$PY" -m bench.gpu_inputs .gpu
du -sh .gpu
