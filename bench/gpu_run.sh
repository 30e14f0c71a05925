#!/usr/bin/env bash
# Run ON THE GPU MACHINE, as one device call that carries .gpu (made by bench/gpu_prepare.sh):
#   bash bench/gpu_run.sh
# It installs the carried wheels, runs the `gpu` tests, then the full-size fp16 benchmark, and
# writes the logs under $OUT (gpu_tests.log, gpu_bench.md, nvidia-smi.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/musetalk-gpu-out}
DEVICE=${DEVICE:-cuda:0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUSETALK_GPU_INPUTS="$PWD/.gpu"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
# The device has no install of the project: its sources come from this checkout.
export PYTHONPATH=/tmp/site:$PWD/service
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
# Only the `gpu` tests: the device lacks pytest-asyncio, kmock, PyAV and MediaPipe, which the rest need.
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu tests/unit/test_musetalk_face.py 2>&1 | tee "$OUT/gpu_tests.log"
tests=${PIPESTATUS[0]}
# One run: the per-step rows, then N = 1, 4, 16, 32 concurrent 720p streams batched across streams.
python3 -m bench.musetalk_bench --size full --device "$DEVICE" --inputs .gpu --streams 1,4,16,32 --clip lp_s18.mp4 \
  ${MUSETALK_BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu_bench.md"
bench=${PIPESTATUS[0]}
echo "gpu tests exit $tests, bench exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
