#!/usr/bin/env bash
# CUDA compile check for zcfast (called by .ci/run; usable on its own: `bash .ci/cuda_compile_check.sh`).
#
# When nvcc is present, compiles every csrc/cuda/*.cu for real: builds the whole extension with
# ZCFAST_FORCE_CUDA=1 against a CUDA build of torch (kept in its own venv, outside the repo, and
# reused), into a scratch build folder (the repo's in-place CPU build is untouched), then loads the
# result and checks that CUDA kernels are registered. No GPU is needed. A compile failure exits
# non-zero. Without nvcc it prints a message and exits 0.
#
# Environment (all optional):
#   ZCFAST_CUDA_HOME     CUDA toolkit folder whose bin/ holds nvcc   (default /usr/local/cuda-13.0,
#                        else derived from the nvcc on PATH)
#   ZCFAST_CUDA_VENV     venv holding the CUDA torch                 (default /tmp/zcfast-cuda-venv)
#   ZCFAST_CUDA_TORCH    torch pin for that venv                     (default torch==2.14.1)
#   ZCFAST_CUDA_ARCH     TORCH_CUDA_ARCH_LIST for the check          (default 9.0)
#   ZCFAST_CUDA_BUILD    scratch build folder                        (default a fresh mktemp -d)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CUDA_DIR=${ZCFAST_CUDA_HOME:-/usr/local/cuda-13.0}
if [ ! -x "$CUDA_DIR/bin/nvcc" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    # nvcc may be a wrapper script: ask it where its toolkit is.
    CUDA_DIR=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)
    if [ -z "$CUDA_DIR" ] || [ ! -x "$CUDA_DIR/bin/nvcc" ]; then
      echo "cuda_compile_check: nvcc is on PATH but its toolkit folder was not found; set ZCFAST_CUDA_HOME" >&2
      exit 1
    fi
  else
    echo "cuda_compile_check: nvcc not found: skipping the CUDA compile check (CPU-only machine)"
    exit 0
  fi
fi
echo "cuda_compile_check: toolkit $CUDA_DIR ($("$CUDA_DIR/bin/nvcc" --version | tail -n1))"

VENV=${ZCFAST_CUDA_VENV:-/tmp/zcfast-cuda-venv}
TORCH_PIN=${ZCFAST_CUDA_TORCH:-torch==2.14.1}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
READY="$VENV/.zcfast-ready-$(echo "$TORCH_PIN" | tr -c 'A-Za-z0-9._=-' '_')"
if [ ! -f "$READY" ]; then
  echo "cuda_compile_check: setting up $VENV with $TORCH_PIN (CUDA build, ~5.5 GB, once)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN" ninja setuptools wheel numpy
  "$VENV/bin/python" - <<'PYEOF'
import torch
assert torch.version.cuda is not None, f"{torch.__version__} is not a CUDA build of torch"
print(f"cuda_compile_check: torch {torch.__version__} (CUDA {torch.version.cuda})")
PYEOF
  touch "$READY"
fi

BUILD=${ZCFAST_CUDA_BUILD:-$(mktemp -d /tmp/zcfast-cuda-build.XXXXXX)}
mkdir -p "$BUILD"
echo "cuda_compile_check: building into $BUILD"
cd "$ROOT"
export PATH="$VENV/bin:$CUDA_DIR/bin:$PATH"
start=$(date +%s)
if ! CUDA_HOME="$CUDA_DIR" TORCH_CUDA_ARCH_LIST="${ZCFAST_CUDA_ARCH:-9.0}" ZCFAST_FORCE_CUDA=1 \
     MAX_JOBS="${MAX_JOBS:-2}" "$VENV/bin/python" setup.py -q build_ext \
     --build-temp "$BUILD/temp" --build-lib "$BUILD/lib" > "$BUILD/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD/build.log" | head -n 40 >&2 || true
  echo "cuda_compile_check: FAILED: the CUDA build did not compile (full log: $BUILD/build.log)" >&2
  exit 1
fi
echo "cuda_compile_check: compiled in $(( $(date +%s) - start )) s"

SO=$(ls "$BUILD"/lib/zcfast/_C*.so)
"$VENV/bin/python" - "$SO" <<'PYEOF'
import sys
import torch
torch.ops.load_library(sys.argv[1])
version = torch.ops.zcfast.cuda_version()
assert version > 0, f"cuda_version() = {version}: the CUDA kernels were not built"
for op in ("saliency_reduce", "fisher_reduce", "jacob_cov_score", "hamming_kernel_", "moments_update_",
           "zico_reduce", "sign_pack", "distinct_rows", "sign_pattern_count", "sign_sum", "channel_spectra",
           "box_sum"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"zcfast::{op}", key), (op, key)
print(f"cuda_compile_check: OK: loads without a GPU, CUDA {version}, CPU and CUDA kernels registered")
PYEOF
if [ -z "${ZCFAST_CUDA_BUILD:-}" ]; then rm -rf "$BUILD"; fi
