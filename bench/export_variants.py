"""Accuracy and CPU speed of the fp32, fp16 and int8 exports of a checkpoint.

    python -m bench.export_variants --checkpoint runs/default/last.pt [--scenes 200] [--runs 5]
                                    [--threads 1 2] [--camvid ROOT] [--json out.json]

Exports the checkpoint with `scene-export --fp16 --int8` and, for each file in ONNX
Runtime (CPU provider):

- times single-image inference at the training resolution at each ``--threads``
  setting: median of ``runs`` repetitions of 20 images after warm-up, wall time and
  the process's CPU time per image. One thread is what each of the service's
  per-core streams uses under load, so its CPU time is the model's cost per request;
- scores a held-out procedural test split (seed 4242: never used for training,
  calibration or verification);
- with ``--camvid ROOT`` (default: ``SCENE_CAMVID_ROOT`` when set), scores CamVid val
  in CamVid's 11 classes the way the service answers: each frame resized to the
  model's input, the labels the file returns enlarged to the frame's full size
  nearest-neighbour. (``scene-eval --camvid`` enlarges logits bilinearly instead, so
  its figure is slightly higher; this one compares files with each other.)

Baselines in the same run: the fp32 file for the ratios, and the PyTorch model at
the first thread setting for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model_export.cli import main as export_main
from scene_contract.model import INPUT_NAME, OUTPUT_NAMES
from training.checkpoint import model_from_checkpoint
from training.data.camvid import CAMVID_CLASSES, CAMVID_VOID, CamVidScenes, train_id_to_camvid
from training.data.procedural import ProceduralScenes
from training.data.sample import resize_nearest
from training.dataset import TaskDataset
from training.metrics import SceneMetrics
from training.model import to_model_input

VARIANTS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def score_procedural(model: ort.InferenceSession, scenes: ProceduralScenes) -> dict[str, Any]:
    """mIoU, instance and depth errors of ``model`` on ``scenes`` (`SceneMetrics`)."""
    metrics = SceneMetrics()
    for batch in DataLoader(TaskDataset(scenes), batch_size=8):
        images = (batch["image"].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        semantic, _, offsets, inverse_depth = model.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        outputs = {
            "semantic": torch.from_numpy(semantic),
            "instance_offsets": torch.from_numpy(offsets),
            "inverse_depth": torch.from_numpy(inverse_depth),
        }
        metrics.update(outputs, batch)
    return {key: value for key, value in metrics.compute().items() if isinstance(value, float)}


def score_camvid(model: ort.InferenceSession, frames: CamVidScenes) -> dict[str, Any]:
    """mIoU (percent) over CamVid's 11 classes, at each frame's full size, void excluded."""
    to_camvid = train_id_to_camvid()
    classes = len(CAMVID_CLASSES)
    confusion = np.zeros(classes * classes, dtype=np.int64)
    for index in range(len(frames)):
        image = frames[index].image
        labels = model.run([OUTPUT_NAMES[0]], {INPUT_NAME: image[None]})[0][0]
        truth = frames.camvid_labels(index)
        predicted = to_camvid[resize_nearest(labels, *truth.shape)]
        valid = truth != CAMVID_VOID
        pairs = truth[valid].astype(np.int64) * classes + predicted[valid]
        confusion += np.bincount(pairs, minlength=classes * classes)
    matrix = confusion.reshape(classes, classes)
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan) * 100
    return {"camvid_miou": float(np.nanmean(iou)), "frames": len(frames)}


def time_per_image(
    run: Callable[[Any], object], image: Any, runs: int, repeats: int = 20
) -> dict[str, float]:
    """Median wall and process-CPU milliseconds per call of ``run(image)`` over ``runs`` rounds."""
    for _ in range(3):
        run(image)
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            run(image)
        wall.append((time.perf_counter() - started) / repeats * 1e3)
        cpu.append((time.process_time() - cpu_started) / repeats * 1e3)
    return {"wall_ms": statistics.median(wall), "cpu_ms": statistics.median(cpu)}


def measure(
    files: dict[str, Path],
    image: npt.NDArray[np.uint8],
    scenes: ProceduralScenes,
    camvid: CamVidScenes | None,
    threads: Sequence[int],
    runs: int,
) -> dict[str, dict[str, Any]]:
    """Speed at each thread count, then scores, for each file; ``image`` is ``uint8 [1, H, W, 3]``."""
    results: dict[str, dict[str, Any]] = {}
    for variant, path in tqdm(files.items(), desc="variants", unit="file", file=sys.stderr):
        row: dict[str, Any] = {"size_mib": path.stat().st_size / 2**20, "speed": {}}
        for count in threads:
            timed = session(path, count)

            def run(x: npt.NDArray[np.uint8], timed: ort.InferenceSession = timed) -> object:
                return timed.run(None, {INPUT_NAME: x})

            row["speed"][count] = time_per_image(run, image, runs)
        model = session(path, max(threads))
        row |= score_procedural(model, scenes)
        if camvid is not None:
            row |= score_camvid(model, camvid)
        results[variant] = row
    return results


def table(results: dict[str, dict[str, Any]], threads: Sequence[int]) -> str:
    """The results as a Markdown table, speeds also as ratios to the fp32 file."""
    camvid = all("camvid_miou" in r for r in results.values())
    header = ["variant", "MiB"]
    for count in threads:
        header += [f"ms/image {count}t (CPU ms)", f"vs fp32 {count}t"]
    header += ["mIoU %", "instance err px", "inv. depth err", "δ1 %"] + (["CamVid mIoU %"] if camvid else [])
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    base = results["fp32"]["speed"]
    for variant, row in results.items():
        cells = [variant, f"{row['size_mib']:.1f}"]
        for count in threads:
            speed = row["speed"][count]
            cells += [
                f"{speed['wall_ms']:.1f} ({speed['cpu_ms']:.1f})",
                f"{base[count]['wall_ms'] / speed['wall_ms']:.2f}x",
            ]
        cells += [
            f"{row['semantic_miou']:.2f}",
            f"{row['instance_mean_error_px']:.3f}",
            f"{row['inverse_depth_mean_error']:.4f}",
            f"{row['depth_delta1']:.2f}",
        ] + ([f"{row['camvid_miou']:.2f}"] if camvid else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=200, help="procedural test scenes to score")
    parser.add_argument("--runs", type=int, default=5, help="timing rounds of 20 images; medians reported")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="ORT intra-op thread counts")
    parser.add_argument(
        "--camvid",
        type=Path,
        default=os.environ.get("SCENE_CAMVID_ROOT") or None,
        help="CamVid root to score val on (default: SCENE_CAMVID_ROOT when set)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.scenes <= 0 or args.runs <= 0 or min(args.threads) <= 0:
        parser.error("--scenes, --runs and --threads must be positive")
    model, state = model_from_checkpoint(args.checkpoint)
    height, width = state["config"].data.height, state["config"].data.width
    scenes = ProceduralScenes(split="test", seed=4242, count=args.scenes, height=height, width=width)
    camvid = CamVidScenes(args.camvid, split="val", height=height, width=width) if args.camvid else None
    image = scenes[0].image[None]

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / VARIANTS["fp32"]
        if export_main(["--checkpoint", str(args.checkpoint), "--out", str(out), "--fp16", "--int8"]) != 0:
            print("export_variants: the export failed (see above)", file=sys.stderr)
            return 1
        files = {variant: Path(tmp) / name for variant, name in VARIANTS.items()}
        results = measure(files, image, scenes, camvid, args.threads, args.runs)

    torch.set_num_threads(args.threads[0])
    tensor = to_model_input(torch.from_numpy(image))
    with torch.no_grad():
        reference = time_per_image(lambda x: model(x), tensor, args.runs)

    print(
        f"checkpoint {args.checkpoint} (step {state['step']}), {args.scenes} test scenes at "
        f"{height}x{width}, threads {args.threads}, median of {args.runs} runs"
        + (f", CamVid val {len(camvid)} frames" if camvid else "")
    )
    print(f"PyTorch fp32 reference ({args.threads[0]} threads): {reference['wall_ms']:.1f} ms/image")
    print(table(results, args.threads))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "pytorch": reference}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
