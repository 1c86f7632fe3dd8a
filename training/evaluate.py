"""`scene-eval`: a checkpoint's metrics on a held-out split, and a picture of its predictions."""

from __future__ import annotations

import argparse
import json
import sys
from copy import deepcopy as copy_module
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import CheckpointError, model_from_checkpoint, weighting_from_checkpoint
from training.data.camvid import CamVidScenes
from training.data.classes import CLASSES, IGNORE_INDEX
from training.data.procedural import SPLITS
from training.data.sample import DataConfigError
from training.dataset import SceneSource, TaskDataset, build_scenes
from training.grids import camvid_prediction_grid, prediction_grid
from training.metrics import SceneMetrics
from training.real_frames import evaluate_camvid, evaluate_real_depth
from training.realdepth import (
    MeasuredFrame,
    read_measured_frames,
)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    scenes: SceneSource,
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` over every scene of ``scenes`` (see `SceneMetrics` for definitions)."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    # Its own generator: evaluating mid-run must not draw from the global RNG that
    # dropout uses, or a resumed run would no longer match an uninterrupted one.
    loader = DataLoader(
        TaskDataset(scenes), batch_size=batch_size, num_workers=workers, generator=torch.Generator()
    )
    metrics = SceneMetrics()
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, file=sys.stderr):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(batch["image"])
        metrics.update({k: v.float() for k, v in outputs.items()}, batch)
    model.train(was_training)
    return dict(metrics.compute())


class BatchStatistics(nn.Module):
    """A copy of ``model`` whose batch norms normalise with each batch's own statistics, in
    eval mode as well (and never update their running ones); every other layer is as in
    ``model``.

    Scored beside the model itself, it tells whether the running statistics fit the
    weights: a large gap means they do not (the failure docs/study.md describes for some
    runs with large learned depth weights), however good the training losses were.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy_module(model)
        for module in self._norms():
            module.momentum = 0.0
        self.eval()

    def _norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> BatchStatistics:
        super().train(mode)
        for module in self._norms():
            module.train(True)  # batch statistics whatever the mode; momentum 0 keeps the running ones
        return self

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = self.model(images)
        return outputs


@torch.no_grad()
def baseline_metrics(
    train_scenes: SceneSource, scenes: SceneSource, *, batch_size: int = 8
) -> dict[str, Any]:
    """Metrics of trivial constant predictions, the floor a model must clear.

    From ``train_scenes``: the majority class over labelled pixels, and the median
    inverse depth over valid pixels (sky counts, at 0), the constant with the smallest
    mean absolute error, which is the metric. On ``scenes`` every pixel is predicted as
    that class, with zero instance offsets and that inverse depth.
    """
    counts = torch.zeros(256, dtype=torch.float64)
    inverse_depths = []
    for batch in DataLoader(TaskDataset(train_scenes), batch_size=batch_size):
        labels = batch["semantic"][batch["semantic"] != IGNORE_INDEX]
        counts += torch.bincount(labels.flatten(), minlength=256).double()
        inverse_depths.append(batch["inverse_depth"][batch["depth_mask"]].numpy())
    majority = int(counts.argmax().item())
    measured = np.concatenate(inverse_depths)
    median_inverse = float(np.median(measured)) if measured.size else 0.0
    metrics = SceneMetrics()
    for batch in DataLoader(TaskDataset(scenes), batch_size=batch_size):
        n, _, h, w = batch["image"].shape
        constant = {
            "semantic": torch.full((n, h, w), majority, dtype=torch.long),
            "instance_offsets": torch.zeros(n, 2, h, w),
            "inverse_depth": torch.full((n, 1, h, w), median_inverse),
        }
        metrics.update(constant, batch)
    return {
        "majority_class": CLASSES[majority].name,
        "median_inverse_depth": median_inverse,
        "train_scenes": len(train_scenes),
        **metrics.compute(),
    }


@dataclass(frozen=True)
class _Inputs:
    """What `main` evaluates, opened from the command line before any work starts."""

    model: nn.Module
    state: dict[str, Any]
    scenes: SceneSource
    dataset_info: dict[str, Any]
    camvid: CamVidScenes | None
    measured: list[MeasuredFrame] | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scene-eval",
        description="Evaluate a scene-train checkpoint on held-out scenes: semantic mIoU, instance offset "
        "error, inverse-depth error and more, as JSON, plus a PNG grid of predictions against ground truth.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint from scene-train")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON file to write")
    parser.add_argument("--grid", type=Path, help="prediction grid PNG (default: next to --out)")
    parser.add_argument("--count", type=int, default=500, help="procedural scenes to evaluate (default 500)")
    parser.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="procedural seed (default 1000, never a training seed by default)",
    )
    parser.add_argument("--split", choices=SPLITS, default="test", help="procedural split (default test)")
    parser.add_argument(
        "--cityscapes", type=Path, help="evaluate on this Cityscapes root's val split instead"
    )
    parser.add_argument(
        "--camvid",
        type=Path,
        help="also score this CamVid root's val split in CamVid's 11 classes (mIoU, per-class IoU)",
    )
    parser.add_argument(
        "--camvid-grid",
        type=Path,
        help="PNG of the model's predictions on CamVid val frames (predictions only; with --camvid)",
    )
    parser.add_argument(
        "--camvid-sizes",
        nargs="+",
        type=_size,
        default=[],
        metavar="WxH",
        help="also score CamVid val fed in at these sizes (e.g. 800x400 960x480; with --camvid)",
    )
    parser.add_argument(
        "--realdepth",
        type=Path,
        help="also score depth on the real photos with measured depth under this folder "
        "(cityscapes_tiny/, kitti/): median-scaled AbsRel, delta<1.25, rank correlation, beside a "
        "constant depth",
    )
    parser.add_argument(
        "--batchnorm-check",
        action="store_true",
        help="also score the procedural scenes with batch norms on each batch's own statistics: a large "
        "gap to the model's own scores means its running statistics do not fit its weights",
    )
    parser.add_argument(
        "--baseline-scenes",
        type=int,
        default=200,
        help="training scenes for the trivial baselines' constants (procedural only; 0 = skip; default 200)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    return parser


def _size(text: str) -> tuple[int, int]:
    """``WxH`` → ``(height, width)``, both positive."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 800x400, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be positive")
    return height, width


def _open_inputs(args: argparse.Namespace) -> _Inputs:
    """The checkpoint's model and the scenes to score it on; raises on a bad argument or file."""
    if args.count <= 0 or args.batch_size <= 0 or args.baseline_scenes < 0:
        raise DataConfigError("--count and --batch-size must be positive, --baseline-scenes >= 0")
    model, state = model_from_checkpoint(args.checkpoint)
    config = state["config"]
    h, w = config.data.height, config.data.width
    if args.cityscapes:
        data = replace(config.data, source="cityscapes", root=str(args.cityscapes))
        scenes = build_scenes(data, "val")
        dataset_info: dict[str, Any] = {
            "source": "cityscapes",
            "root": str(args.cityscapes),
            "split": "val",
        }
    else:
        # Held-out splits have val_count procedural scenes: here, --count of them.
        data = replace(config.data, source="procedural", seed=args.seed, val_count=args.count)
        scenes = build_scenes(data, args.split)
        dataset_info = {
            "source": "procedural",
            "split": args.split,
            "seed": args.seed,
            "count": args.count,
        }
    camvid = CamVidScenes(args.camvid, split="val", height=h, width=w) if args.camvid else None
    if (args.camvid_grid or args.camvid_sizes) and camvid is None:
        raise DataConfigError("--camvid-grid and --camvid-sizes need --camvid ROOT")
    measured = read_measured_frames(args.realdepth) if args.realdepth else None
    return _Inputs(model, state, scenes, dataset_info | {"height": h, "width": w}, camvid, measured)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        inputs = _open_inputs(args)
    except (CheckpointError, DataConfigError) as error:
        print(f"scene-eval: error: {error}", file=sys.stderr)
        return 2
    report = _report(args, inputs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    grid_path = args.grid or args.out.with_suffix(".png")
    prediction_grid(inputs.model, inputs.scenes).save(grid_path)
    _print_summary(report, args.out, grid_path)
    return 0


def _report(args: argparse.Namespace, inputs: _Inputs) -> dict[str, Any]:
    """Every score asked for, as `main` writes it to ``--out`` (and draws the CamVid grid)."""
    model, scenes, state = inputs.model, inputs.scenes, inputs.state
    config = state["config"]
    h, w = config.data.height, config.data.width
    sigma = weighting_from_checkpoint(state).sigma()
    metrics = evaluate(model, scenes, batch_size=args.batch_size, workers=args.workers, progress=True)
    report = {
        "checkpoint": str(args.checkpoint),
        "step": state["step"],
        "dataset": inputs.dataset_info,
        "sigma": sigma,
        **metrics,
    }
    if inputs.camvid is not None:
        report["camvid"] = {"root": str(args.camvid), "split": "val"} | evaluate_camvid(
            model, inputs.camvid, batch_size=args.batch_size, progress=True
        )
        for height, width in args.camvid_sizes:
            resized = CamVidScenes(args.camvid, split="val", height=height, width=width)
            scores = evaluate_camvid(model, resized, batch_size=args.batch_size, progress=True)
            report["camvid"].setdefault("at_sizes", {})[f"{width}x{height}"] = scores
        if args.camvid_grid:
            args.camvid_grid.parent.mkdir(parents=True, exist_ok=True)
            camvid_prediction_grid(model, inputs.camvid).save(args.camvid_grid)
    if args.batchnorm_check:
        batch = evaluate(BatchStatistics(model), scenes, batch_size=args.batch_size, workers=args.workers)
        keys = ("semantic_miou", "instance_mean_error_px", "inverse_depth_mean_error")
        report["batchnorm_check"] = {
            "running_statistics": {k: metrics[k] for k in keys},
            "batch_statistics": {k: batch[k] for k in keys},
        }
    if inputs.measured is not None:
        report["realdepth"] = {"root": str(args.realdepth)} | evaluate_real_depth(
            model, inputs.measured, h, w
        )
    if not args.cityscapes and args.baseline_scenes:
        # The training split and seed of the checkpoint, so the constants are what a
        # model could have learned without looking at an image.
        data = replace(config.data, source="procedural", train_count=args.baseline_scenes)
        train_scenes = build_scenes(data, "train")
        report["baselines"] = baseline_metrics(train_scenes, scenes, batch_size=args.batch_size)
    return report


def _print_summary(report: dict[str, Any], out: Path, grid_path: Path) -> None:
    """One line per part of ``report``, for the person who ran `scene-eval`."""
    print(
        f"mIoU {report['semantic_miou']:.1f}% ({report['semantic_miou_labelled']:.1f}% over the labelled "
        f"classes)  instance error {report['instance_mean_error_px']:.2f} px  "
        f"inverse-depth error {report['inverse_depth_mean_error']:.4f} 1/m  -> {out}, {grid_path}"
    )
    if "camvid" in report:
        scores = report["camvid"]
        per_class = "  ".join(
            f"{k} {v:.1f}" for k, v in scores["camvid_iou_per_class"].items() if v is not None
        )
        print(f"CamVid val ({scores['frames']} frames): mIoU {scores['camvid_miou']:.1f}%  [{per_class}]")
        for size, at_size in scores.get("at_sizes", {}).items():
            pole = at_size["camvid_iou_per_class"]["pole"]
            pole_text = "unlabelled" if pole is None else f"{pole:.1f}"
            print(f"  fed in at {size}: mIoU {at_size['camvid_miou']:.1f}%, pole {pole_text}")
    if "batchnorm_check" in report:
        running, batch = (
            report["batchnorm_check"]["running_statistics"],
            report["batchnorm_check"]["batch_statistics"],
        )
        print(
            "batch norm check, running / batch statistics: "
            + "  ".join(f"{k} {running[k]:.4g} / {batch[k]:.4g}" for k in running)
        )
    if "realdepth" in report:
        real = report["realdepth"]
        model_scores, flat = real["model"], real["constant_depth"]
        print(
            f"real depth ({real['frames']} frames): AbsRel {model_scores['abs_rel']:.3f} "
            f"(constant {flat['abs_rel']:.3f})  delta<1.25 {model_scores['delta1']:.3f} "
            f"(constant {flat['delta1']:.3f})  rank correlation {model_scores['spearman']:.3f}"
        )
    if "baselines" in report:
        base = report["baselines"]
        print(
            f"trivial baselines: mIoU {base['semantic_miou']:.1f}%  "
            f"instance error {base['instance_mean_error_px']:.2f} px  "
            f"inverse-depth error {base['inverse_depth_mean_error']:.4f} 1/m"
        )


if __name__ == "__main__":
    sys.exit(main())
