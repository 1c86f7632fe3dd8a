"""The GPU measurements in one go (what `bench/gpu.sh` runs): model and service on CUDA and TensorRT.

    python -m bench.gpu --out results.json [--deadline-s 420]
    python -m bench.gpu --out results.json --dry-run     # on the CPU, tiny, to check the script works
    python -m bench.gpu --out results.json --model my/model.onnx   # your own scene-export file

1. Environment: onnxruntime's version and available providers, torch if present.
2. Models: the bundled ``models/default/model.onnx`` (or ``--model FILE``) as the fp32
   file and an fp16 copy made from it (without torch: fp32 alone); a dry run exports a
   freshly built smoke-config model instead.
3. Model benchmark: for each provider (CUDA, TensorRT; TensorRT's fp16 is its own
   ``trt_fp16_enable`` on the fp32 file) and precision, batch 1, 8 and 32 at the card's
   input size (and at twice its sides when the graph takes any size), through IO
   binding with input and outputs on the device (copies
   excluded), median ms per run of a few runs after warm-up. Each session's
   ``get_providers()[0]`` is recorded, and a provider that fell back to the CPU is
   reported as such, not timed as a GPU.
4. Service benchmark: ``scene-serve`` on the GPU (fp32 file, CUDA then CPU)
   against the naive server on CUDA, at 1 and 16 clients (`bench.load`'s load
   generator), with the provider each server's model really ran on.

Order: CUDA, the service, then TensorRT (its engine builds are what may run out of
time). Every step checks ``--deadline-s`` first and is recorded as skipped when time
is short, and the results file is rewritten after every row, so a run cut short
still leaves what it measured. ``--dry-run`` does the same on the
CPU provider with batch 1 and 2, small images, 1 and 2 clients.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench import peer
from bench.load import have_hey, load_with_hey, load_with_httpx
from scene_contract.model import INPUT_NAME, OUTPUT_NAMES
from service import runtime
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "torch": None,
    }
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        info["nvidia_smi"] = f"unavailable: {error}"
    if importlib.util.find_spec("torch") is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.cuda.is_available()
    return info


def model_shapes(model: Path, dry_run: bool) -> list[tuple[int, int, int]]:
    """(batch, height, width) to time: batches 1, 8 and 32 at the card's input size, and at
    twice its sides when the graph takes any size (a dry run: 1 and 2 at 64x128)."""
    if dry_run:
        return [(1, 64, 128), (2, 64, 128)]
    import onnx

    from scene_contract.card import ModelCard
    from scene_contract.model import METADATA_KEY

    metadata = onnx.load(str(model), load_external_data=False).metadata_props
    card = ModelCard.from_json(next((p.value for p in metadata if p.key == METADATA_KEY), None))
    sizes = [(card.input.height, card.input.width)]
    if not card.input.fixed_size:
        sizes.append((2 * card.input.height, 2 * card.input.width))
    return [(batch, height, width) for height, width in sizes for batch in (1, 8, 32)]


def export_models(folder: Path, dry_run: bool, model: Path | None = None) -> dict[str, Path]:
    """fp32 and fp16 files: ``model`` (default: the bundled model) and an fp16 copy of it; a
    dry run without ``model`` exports a freshly built smoke-config model instead. Without
    torch, the fp32 file alone (fp16 skipped)."""
    have_torch = importlib.util.find_spec("torch") is not None
    if model is not None or not have_torch or not dry_run:
        paths = {"fp32": model or REPO / "models/default/model.onnx"}
        if have_torch:
            from model_export.export import convert_fp16

            paths["fp16"] = folder / "model.fp16.onnx"
            convert_fp16(paths["fp32"], paths["fp16"])
        return paths
    import torch

    from model_export.export import convert_fp16, export_fp32
    from training.config import load_config
    from training.model import build_model

    config = load_config(REPO / "configs/smoke.yaml")
    torch.manual_seed(0)
    fresh = build_model(config.model).eval()
    paths = {"fp32": folder / "model.onnx", "fp16": folder / "model.fp16.onnx"}
    export_fp32(fresh, paths["fp32"], config.data.height, config.data.width)
    convert_fp16(paths["fp32"], paths["fp16"])
    # The service needs a model card: the bundled model's stands in (same classes; the
    # service resizes to its 128x256, which the dry run's smaller model also accepts).
    import onnx

    from scene_contract.model import METADATA_KEY

    bundled = onnx.load(str(REPO / "models/default/model.onnx"), load_external_data=False)
    card = next(p.value for p in bundled.metadata_props if p.key == METADATA_KEY)
    for path in paths.values():
        exported = onnx.load(str(path))
        entry = exported.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, card
        onnx.save(exported, str(path))
    return paths


def provider_options(provider: str, precision: str, cache: Path) -> list[Any]:
    """What ORT is handed for ``provider``: the options scene-serve gives it from the same
    settings (SCENE_TRT_FP16, SCENE_TRT_ENGINE_CACHE_DIR, the cuDNN search), with the
    providers after it as fallbacks."""
    settings = Settings(trt_fp16=precision == "fp16", trt_engine_cache_dir=cache)
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return list(runtime.provider_options(order[order.index(provider) :], settings, device_id=0))


def time_model(
    path: Path,
    provider: str,
    precision: str,
    shapes: list[tuple[int, int, int]],
    runs: int,
    clock: Clock,
    rows: list[dict[str, Any]],
    save: Callable[[], None],
) -> None:
    """Median ms per IO-bound run for each (batch, height, width), device-resident input and
    outputs, appended to ``rows``; ``save`` is called after each, so a run cut short keeps them."""
    with tempfile.TemporaryDirectory() as cache:
        session = ort.InferenceSession(
            str(path), providers=provider_options(provider, precision, Path(cache))
        )
        used = session.get_providers()[0]
        device = "cuda" if used in GPU_PROVIDERS else "cpu"
        for batch, height, width in shapes:
            row: dict[str, Any] = {
                "provider": provider,
                "precision": precision,
                "batch": batch,
                "size": f"{height}x{width}",
                "provider_used": used,
            }
            rows.append(row)
            save()
            if used != provider:
                row["status"] = f"fell back to {used}; not timed"
                continue
            if clock.left() < 30:
                row["status"] = "skipped: time budget"
                continue
            images = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
            binding = session.io_binding()
            binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(images, device, 0))
            for name in OUTPUT_NAMES:
                binding.bind_output(name, device)
            started = time.perf_counter()
            session.run_with_iobinding(binding)  # the first run builds TensorRT's engine for the shape
            row["first_run_s"] = round(time.perf_counter() - started, 2)
            for _ in range(2):
                session.run_with_iobinding(binding)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                session.run_with_iobinding(binding)
                binding.synchronize_outputs()
                times.append((time.perf_counter() - started) * 1000)
            ms = statistics.median(times)
            row |= {"status": "ok", "ms_per_run": round(ms, 3), "images_per_s": round(batch / ms * 1000, 1)}
            save()


def service(models: dict[str, Path], dry_run: bool, clock: Clock) -> list[dict[str, Any]]:
    """scene-serve and the naive server on the GPU at 1 and 16 clients, PNGs at the model's input size."""
    providers = "CPUExecutionProvider" if dry_run else "CUDAExecutionProvider,CPUExecutionProvider"
    size = peer.model_input_size(models["fp32"])
    payload = peer.payloads(smoke=True, requests=8 if dry_run else 400, jpeg_requests=0, model_size=size)[0]
    rows: list[dict[str, Any]] = []
    for name in peer.SERVERS:
        with peer.server(name, models["fp32"], 0, providers=providers) as base:
            used = peer.provider_in_use(name, base, payload)
            load = load_with_hey if have_hey() else load_with_httpx
            load(base + "/predict", payload, 2, 8)
            for clients in (1, 2) if dry_run else (1, 16):
                row: dict[str, Any] = {"server": name, "clients": clients, "provider_used": used}
                rows.append(row)
                if clock.left() < 20:
                    row["status"] = "skipped: time budget"
                    continue
                result = load(base + "/predict", payload, clients, max(payload.requests, 4 * clients))
                row |= {"status": "ok", **vars(result)}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results file (JSON)")
    parser.add_argument("--deadline-s", type=float, default=420, help="stop starting new steps after this")
    parser.add_argument("--dry-run", action="store_true", help="CPU provider, tiny sizes")
    parser.add_argument(
        "--model",
        type=Path,
        help="a scene-export fp32 file to measure (its fp16 copy is made here) instead of a fresh export",
    )
    args = parser.parse_args(argv)
    clock = Clock(args.deadline_s)
    results: dict[str, Any] = {"dry_run": args.dry_run, "environment": environment(), "errors": []}
    providers = ["CPUExecutionProvider"] if args.dry_run else list(GPU_PROVIDERS)
    shapes: list[tuple[int, int, int]] = []
    missing = [p for p in providers if p not in ort.get_available_providers()]
    results["gpu_seen"] = not args.dry_run and not missing
    results["model"] = []

    def save() -> None:
        results["gpu_used"] = any(r.get("provider_used") in GPU_PROVIDERS for r in results["model"])
        args.out.write_text(json.dumps(results, indent=2))

    def time_provider(provider: str, models: dict[str, Path]) -> None:
        if provider in missing:
            results["errors"].append(f"{provider} is not in this onnxruntime build")
            return
        # TensorRT makes its own fp16 engine from the fp32 file.
        for precision in ("fp32", "fp16") if provider == "TensorrtExecutionProvider" else tuple(models):
            path = models["fp32" if provider == "TensorrtExecutionProvider" else precision]
            runs = 3 if args.dry_run else 20
            time_model(path, provider, precision, shapes, runs, clock, results["model"], save)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            models = export_models(Path(tmp), args.dry_run, args.model)
            results["models"] = {k: str(v) for k, v in models.items()}
            shapes.extend(model_shapes(models["fp32"], args.dry_run))
            # TensorRT last: its engine builds are what may run out of time.
            for provider in providers[:1]:
                time_provider(provider, models)
            results["service"] = service(models, args.dry_run, clock)
            save()
            for provider in providers[1:]:
                time_provider(provider, models)
        except Exception:
            results["errors"].append(traceback.format_exc())
    save()
    gpu_used = bool(results["gpu_used"])
    print(json.dumps(results, indent=2))
    return 0 if not results["errors"] and (args.dry_run or gpu_used) else 1


if __name__ == "__main__":
    sys.exit(main())
