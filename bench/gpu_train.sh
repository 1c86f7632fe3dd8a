#!/usr/bin/env bash
# The bundled model's recipe on a lent GPU, in one call of at most 8 minutes: train
# (configs/street_gpu.yaml, stopped early and checkpointed if time runs short), evaluate
# on CamVid val, the procedural test split and the real-depth frames, export to ONNX, and
# leave everything in $OUT: run/last.pt, run/log.csv, metrics.json, model.onnx and its card.
#
#   OUT=/some/folder bench/gpu_train.sh             # on a GPU machine (NVIDIA, CUDA 13)
#   OUT=/some/folder bench/gpu_train.sh --dry-run   # anywhere: every step on the CPU, tiny
#
# Locations (nothing is downloaded): CAMVID_ROOT (default shared/camvid), ESPNETV2_WEIGHTS
# (default shared/pretrained/espnetv2/espnetv2_s_2.0_city_1024x512.pth), REALDEPTH_ROOT
# (default shared/realdepth; skipped when absent). ESPNETV2_SHA256=null skips the checksum
# (for stand-in weights in a dry run). Python as in bench/gpu.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
log="$OUT/gpu-train.log"
say() { echo "[gpu_train.sh $(($(date +%s) - started))s] $*" | tee -a "$log"; }
# shellcheck source=bench/gpu_python.sh
source bench/gpu_python.sh

camvid=${CAMVID_ROOT:-shared/camvid}
weights=${ESPNETV2_WEIGHTS:-shared/pretrained/espnetv2/espnetv2_s_2.0_city_1024x512.pth}
realdepth=${REALDEPTH_ROOT:-shared/realdepth}
for path in "$camvid/train.txt" "$weights"; do
    [[ -f "$path" ]] || { say "missing $path (set CAMVID_ROOT / ESPNETV2_WEIGHTS)"; exit 2; }
done
overrides=(model.backbone_weights="$weights" data.camvid_root="$camvid" run_dir="$OUT/run")
[[ -n "${ESPNETV2_SHA256:-}" ]] && overrides+=(model.backbone_sha256="$ESPNETV2_SHA256")
eval_args=(--count 500)
minutes=5
if [[ "${1:-}" == "--dry-run" ]]; then
    overrides+=(device=cpu steps=2 batch_size=2 data.workers=0 data.height=64 data.width=128 data.val_count=2
        data.mix.camvid=1 data.mix.procedural=1)
    eval_args=(--count 2 --baseline-scenes 2)
    minutes=2
fi

python=$(pick_python)
say "python: $python"
nvidia-smi >>"$log" 2>&1 || say "nvidia-smi is not available"

say "training for at most $minutes minutes"
"$python" -m training --config configs/street_gpu.yaml "${overrides[@]}" max_minutes="$minutes" >>"$log" 2>&1 \
    || { say "training failed (see $log)"; exit 1; }
real=()
[[ -d "$realdepth" ]] && real=(--realdepth "$realdepth")
say "evaluating"
"$python" -m training.evaluate --checkpoint "$OUT/run/last.pt" "${eval_args[@]}" --camvid "$camvid" "${real[@]}" \
    --out "$OUT/metrics.json" >>"$log" 2>&1 || { say "evaluation failed (see $log)"; exit 1; }
say "exporting"
"$python" -m model_export.cli --checkpoint "$OUT/run/last.pt" --out "$OUT/model.onnx" --fp16-weights \
    --samples 0 --name scene-mtl-default --version 3 >>"$log" 2>&1 || { say "export failed (see $log)"; exit 1; }
rm -f "$OUT"/run/step_*.pt
say "done: $(du -sh "$OUT" | cut -f1) in $OUT"
