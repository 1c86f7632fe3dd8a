#!/usr/bin/env bash
# The GPU measurements in one prepared run, within 8 minutes; results in $OUT/gpu-results.json
# and the log in $OUT/gpu-run.log.
#
#   OUT=/some/folder bench/gpu.sh            # on a GPU machine (NVIDIA, CUDA 13)
#   OUT=/some/folder bench/gpu.sh --dry-run  # anywhere: the same steps on the CPU, tiny
#   OUT=/some/folder bench/gpu.sh --model my/model.onnx   # a scene-export file, not a fresh export
#                                                         # (a relative path is from the repository root)
#
# Python: $PYTHON if set, else .venv/bin/python if it imports onnxruntime, else a fresh
# .venv-gpu with the train, serve and dev extras installed by pip (3 minutes at most). A
# machine without a package index keeps whatever it has, and the results say what was
# missing. Everything else is bench/gpu.py (see its docstring for what is measured), which
# gets the arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
log="$OUT/gpu-run.log"

say() { echo "[gpu.sh $(($(date +%s) - started))s] $*" | tee -a "$log"; }

# shellcheck source=bench/gpu_python.sh
source bench/gpu_python.sh

python=$(pick_python)
say "python: $python"
nvidia-smi >>"$log" 2>&1 || say "nvidia-smi is not available"
# Looked up, not imported (importing torch alone takes seconds): one line per missing module.
"$python" -c "
import importlib.util
for module in ('onnxruntime', 'torch', 'fastapi', 'uvicorn', 'httpx', 'onnx'):
    if importlib.util.find_spec(module) is None:
        print(module)
" | while read -r module; do say "missing python module: $module"; done
"$python" -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())" \
    2>&1 | tee -a "$log"

# What is left of the 8 minutes, less a margin for writing up.
left=$((480 - ($(date +%s) - started) - 30))
say "running bench/gpu.py with ${left}s left"
timeout $((left + 20)) "$python" -m bench.gpu --out "$OUT/gpu-results.json" --deadline-s "$left" "$@" \
    >>"$log" 2>&1
status=$?
say "bench/gpu.py exited with $status; results in $OUT/gpu-results.json"
exit $status
