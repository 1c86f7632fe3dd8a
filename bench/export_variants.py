"""Accuracy and CPU speed of the fp32, fp16 and int8 exports of a checkpoint.

    python -m bench.export_variants --checkpoint runs/default/last.pt [--scenes 200] [--runs 5]

Exports the checkpoint with `scene-export --fp16 --int8`, scores each file in ONNX
Runtime (CPU) on a held-out procedural test split (a seed never used for training
or calibration), and times single-image inference at the training resolution
(median of ``runs`` repetitions of 20 images after warm-up). Baselines in the same
run: the fp32 file for the ratios, and the PyTorch model for reference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from torch.utils.data import DataLoader

from model_export.cli import main as export_main
from scene_contract.model import INPUT_NAME, OUTPUT_NAMES
from training.checkpoint import model_from_checkpoint
from training.data.procedural import ProceduralScenes
from training.dataset import TaskDataset
from training.metrics import SceneMetrics
from training.model import to_model_input

KEYS = ("semantic_miou", "instance_mean_error_px", "inverse_depth_mean_error", "depth_delta1")


def score(session: ort.InferenceSession, scenes: ProceduralScenes) -> dict[str, Any]:
    metrics = SceneMetrics()
    for batch in DataLoader(TaskDataset(scenes), batch_size=8):
        images = (batch["image"].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        semantic, _, offsets, inverse_depth = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        outputs = {
            "semantic": torch.from_numpy(semantic),
            "instance_offsets": torch.from_numpy(offsets),
            "inverse_depth": torch.from_numpy(inverse_depth),
        }
        metrics.update(outputs, batch)
    return dict(metrics.compute())


def time_per_image(run: Any, image: Any, runs: int, repeats: int = 20) -> float:
    for _ in range(3):
        run(image)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(repeats):
            run(image)
        timings.append((time.perf_counter() - start) / repeats)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model, state = model_from_checkpoint(args.checkpoint)
    height, width = state["config"].data.height, state["config"].data.width
    scenes = ProceduralScenes(split="test", seed=4242, count=args.scenes, height=height, width=width)
    image = scenes[0].image[None]

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        assert export_main(["--checkpoint", str(args.checkpoint), "--out", str(out), "--fp16", "--int8"]) == 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        results = {}
        for variant, path in (
            ("fp32", out),
            ("fp16", out.with_suffix(".fp16.onnx")),
            ("int8", out.with_suffix(".int8.onnx")),
        ):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            seconds = time_per_image(lambda x, s=session: s.run(None, {INPUT_NAME: x}), image, args.runs)
            results[variant] = {
                "seconds": seconds,
                "size_mib": path.stat().st_size / 2**20,
                **score(session, scenes),
            }

    torch.set_num_threads(args.threads)
    tensor = to_model_input(torch.from_numpy(image))
    with torch.no_grad():
        torch_seconds = time_per_image(lambda x: model(x), tensor, args.runs)

    print(
        f"checkpoint {args.checkpoint} (step {state['step']}), {args.scenes} test scenes at "
        f"{height}x{width}, {args.threads} threads, median of {args.runs} runs"
    )
    print(f"PyTorch fp32 reference: {torch_seconds * 1e3:.1f} ms/image")
    header = "| variant | MiB | ms/image | speed vs fp32 | mIoU % | instance err px | inv. depth err | δ1 % |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    base = results["fp32"]["seconds"]
    for variant, r in results.items():
        print(
            f"| {variant} | {r['size_mib']:.1f} | {r['seconds'] * 1e3:.1f} | {base / r['seconds']:.2f}x | "
            f"{r['semantic_miou']:.2f} | {r['instance_mean_error_px']:.3f} | "
            f"{r['inverse_depth_mean_error']:.4f} | {r['depth_delta1']:.2f} |"
        )


if __name__ == "__main__":
    main()
