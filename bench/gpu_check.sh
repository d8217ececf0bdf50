#!/usr/bin/env bash
# Every GPU check in one go, for a fresh CUDA machine with no network (about 10 minutes on one H100):
# the wheels handed over in WHEELS_DIR (torchao, bitsandbytes, onnxruntime-gpu, ...) are installed without
# an index into a private folder put first on PYTHONPATH, the project is used from this checkout, then
# `pytest -m gpu` and bench/scale.py run. Everything they print, and scale.{json,md}, lands in OUT_DIR.
#
#   bench/gpu_check.sh [WHEELS_DIR] [OUT_DIR]          (defaults: wheels, gpu-check)
#   SCALE_ARGS="--layers 2 --steps 2" bench/gpu_check.sh   # a shorter bench (the default is the full 7B shape)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=$(realpath -m "${1:-wheels}")
OUT=$(realpath -m "${2:-gpu-check}")
PY=${PYTHON:-python3}
SITE="$OUT/site"
mkdir -p "$OUT" "$SITE"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
  log "installing ${#wheels[@]} wheel(s) from $WHEELS"
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "${wheels[@]}" >"$OUT/pip.log" 2>&1 \
    || log "pip failed: see pip.log"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# onnxruntime-gpu finds CUDA and cuDNN in the nvidia wheels that came with torch
NV=$("$PY" -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]) + '/nvidia')" 2>/dev/null)
for d in "$NV"/cu*/lib "$NV"/cudnn/lib; do [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" - <<'EOF'
import importlib
for name in ("torch", "transformers", "onnxruntime", "torchao", "bitsandbytes", "peft", "triton"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as e:
        print(name, "unavailable:", type(e).__name__, e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers())
EOF
} >"$OUT/device.txt" 2>&1
log "device: $(head -2 "$OUT/device.txt" | tail -1)"

log "pytest -m gpu"
timeout "${PYTEST_TIMEOUT:-240}" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests >"$OUT/pytest_gpu.log" 2>&1
log "pytest exit $? : $(tail -1 "$OUT/pytest_gpu.log")"

log "bench/scale.py ${SCALE_ARGS:-}"
# shellcheck disable=SC2086
timeout "${SCALE_TIMEOUT:-330}" "$PY" bench/scale.py --out "$OUT" ${SCALE_ARGS:-} >"$OUT/scale.log" 2>&1
log "scale exit $? (scale.md, scale.json, scale.log)"
