#!/usr/bin/env bash
# Batched-scoring throughput on a GPU (target: >= 300 NB201 architectures/s for the gradient
# proxies grad_norm, snip, fisher, jacob_cov at batch 64, i.e. a million per hour).
#
# One command, under 5 minutes on an H200 (build ~1-3 min with nvcc, checks + timing ~1 min):
#
#     bash bench/gpu_throughput.sh
#
# Steps: (1) build the extension with its CUDA kernels (skipped when ZCFAST_SKIP_BUILD=1 or
# when zcfast.ops already has CUDA); (2) the CUDA correctness tests of tests/test_batched.py
# (batched scores on the GPU equal score_arch on the CPU); (3) bench/bench_throughput.py on the
# GPU: synflow, the gradient proxies and all six, batched at several K against one
# architecture at a time (plain PyTorch and score_arch), after checking equal results; it records
# the CUDA peak memory of each K. Results: bench/results/throughput.<device>.{json,md}, also
# copied to $OUT when that is set (the device runner's output folder).
#
# Environment overrides (the CPU test in tests/test_batched.py uses them at toy size):
#   ZCFAST_BENCH_DEVICE   device for the benchmark (default cuda)
#   ZCFAST_BENCH_ARGS     arguments for bench_throughput.py (default: the full GPU run below)
#   ZCFAST_SKIP_BUILD=1   do not build; ZCFAST_SKIP_TESTS=1 do not run the CUDA tests
#   PYTHON                interpreter (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${ZCFAST_BENCH_DEVICE:-cuda}"
ARGS="${ZCFAST_BENCH_ARGS:---k 8,32,64 --n-synflow 1024 --n-grad 1024 --n-all 256 --n-single 32 --repeats 2}"
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }

echo "== gpu_throughput: $(date -u) on $(hostname), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" - "$DEVICE" <<'EOF'
import sys, torch
dev = sys.argv[1]
print(f"torch {torch.__version__}, CUDA runtime {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_throughput: this torch cannot see a GPU; nothing to measure")
EOF

has_cuda_ops() {
  "$PY" -c "import zcfast.ops as o, sys; sys.exit(0 if o.has_cuda() else 1)" 2>/dev/null
}
if [ "${ZCFAST_SKIP_BUILD:-0}" != "1" ] && [[ "$DEVICE" == cuda* ]] && ! has_cuda_ops; then
  echo "== build (CUDA kernels) [$(elapsed)]"
  ZCFAST_FORCE_CUDA=1 MAX_JOBS="$(nproc)" timeout 240 "$PY" setup.py build_ext --inplace >/tmp/zcfast_build.log 2>&1 \
    || { tail -40 /tmp/zcfast_build.log; echo "gpu_throughput: CUDA build failed"; exit 1; }
  has_cuda_ops || { echo "gpu_throughput: built, but zcfast.ops.has_cuda() is false"; exit 1; }
fi

if [ "${ZCFAST_SKIP_TESTS:-0}" != "1" ] && [[ "$DEVICE" == cuda* ]]; then
  echo "== CUDA correctness (tests/test_batched.py -m cuda) [$(elapsed)]"
  timeout 120 "$PY" -m pytest tests/test_batched.py -q -m cuda -p no:cacheprovider
fi

echo "== throughput on $DEVICE [$(elapsed)]"
# shellcheck disable=SC2086
timeout 300 "$PY" bench/bench_throughput.py --device "$DEVICE" $ARGS

dev_type="${DEVICE%%:*}"
if [ -n "${OUT:-}" ]; then
  cp "bench/results/throughput.${dev_type}.json" "bench/results/throughput.${dev_type}.md" "$OUT/"
fi
echo "== done in $(elapsed)"
